"""`fed federate`: a federation defined only by `sites/` and `policies/` converges in one
pass from empty, keeps converging under `--watch` while NCSA ingests, survives a failing
site (retried with backoff), SIGTERM and kill -9, and logs every flow run.

NCSA and IN2P3 use the parametrized database (PostgreSQL: two PostgreSQL sites, two
SQLite); the longer scenarios run on one backend only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import HSC_RECORDS, insert_hsc_records, repo_state, write_policies
from test_cli import fails, fed

from federation import faults
from federation.operations.release import create as create_release
from federation.policy import retry_delay, state_lock

PROJECT = Path(__file__).resolve().parent.parent
FED = str(Path(sys.executable).parent / "fed")
PROCESSING = "HSC/runs/RC2/w_2026_47/DM-1"
IN2P3_RUN = "HSC/runs-in2p3/RC2/DM-9"
NCSA_RUNS = ("HSC/raw/all", "HSC/calib/gen/DM-1")
SQLITE = [pytest.param("sqlite")]
POSTGRES = [pytest.param("postgresql", marks=pytest.mark.postgres)]


def raws(to, **fields) -> dict:
    return {"from": "NCSA", "to": to, "collections": ["HSC/raw/*"]} | fields


def federate(fed_, folder: Path, *args, code: int = 0):
    return fed("federate", *args, "--policies", folder, "--sites", fed_.sites_dir,
               "--state", fed_.root / "state.json", code=code)


def state(fed_) -> dict:
    return json.loads((fed_.root / "state.json").read_text())["flows"]


def datasets(fed_, site: str, runs=None) -> dict:
    with fed_.butler(site) as b:
        found = repo_state(b)["datasets"]
    return {k: v for k, v in found.items() if runs is None or v[1] in runs}


def raw_count(fed_, site: str) -> int:
    return sum(v[0] == "raw" for v in datasets(fed_, site).values())


def test_once_converges_a_federation_from_empty(ncsa):
    """The shipped policies, as they are, over four sites of which only NCSA and IN2P3
    hold data: one pass carries every flow, along NCSA -> Princeton -> laptop too."""
    with ncsa.butler("NCSA", run=PROCESSING) as b:
        b.registry.register_dataset_type("calexp", ["visit", "detector"], "NumpyArray")
        for detector in range(4):
            b.put(np.full(3, detector), "calexp", instrument="HSC", visit=903334,
                  detector=detector)
    with ncsa.butler("IN2P3", run=IN2P3_RUN) as b:  # IN2P3's own processing
        insert_hsc_records(b.registry)
        b.registry.register_dataset_type("calexp", ["visit", "detector"], "NumpyArray")
        mine = [b.put(np.full(3, 7), "calexp", instrument="HSC", visit=903335, detector=d)
                for d in range(2)]
    create_release(ncsa.root / "repos" / "NCSA", "DR1", ["HSC/calib"])
    shipped = PROJECT / "policies"

    result = federate(ncsa, shipped, "--once", "--jobs", "4")
    assert "pass 1 at" in result.stdout and ": 9 ok" in result.stdout, result.stdout
    ncsa_data = datasets(ncsa, "NCSA", NCSA_RUNS + (PROCESSING,))
    assert datasets(ncsa, "IN2P3", NCSA_RUNS + (PROCESSING,)) == ncsa_data
    assert datasets(ncsa, "Princeton") == datasets(ncsa, "NCSA", NCSA_RUNS)
    laptop = datasets(ncsa, "laptop")
    assert sorted(v[0] for v in laptop.values()) == ["bias"] * 4 + ["raw"] * 4
    assert all(dict(v[2]).get("exposure") == 903334 for v in laptop.values() if v[0] == "raw")
    with ncsa.butler("NCSA") as b:
        ncsa_collections = repo_state(b)["collections"]
        assert [b.exists(ref).held_at for ref in mine] == ["IN2P3"] * 2  # records only
        assert {str(ref.id) for ref in b.registry.datasets.run_refs(IN2P3_RUN)} == \
            {str(ref.id) for ref in mine}
    for site in ("IN2P3", "Princeton", "laptop"):
        with ncsa.butler(site) as b:
            assert b.registry.releases.last_check("DR1", site).complete
            here = repo_state(b)["collections"]
            assert all(here[name] == ncsa_collections[name]
                       for name in ("HSC/calib", "HSC/defaults", "DR1"))
            assert b.verify().ok
    # every flow run is in the sync log of its destination, naming its policy and flow
    with ncsa.butler("IN2P3") as b:
        logged = [e for e in b.registry.log.entries() if e.operation == "federate"]
    assert {(e.selection["policy"], e.selection["flow"], e.result) for e in logged} == {
        ("replicas", "raw-calib", "ok"), ("processing", "ncsa-runs", "ok"),
        ("releases", "dr1", "ok")}
    assert all(e.message.startswith(f"policy {e.selection['policy']}, flow ") for e in logged)

    again = federate(ncsa, shipped, "--once")
    details = [line.split("  ")[-1] for line in again.stdout.splitlines()[3:]]
    assert len(details) == 9 and all(d.startswith("0 applied") for d in details), details
    assert ": 9 not due" in federate(ncsa, shipped).stdout  # intervals of 10 min and more


@pytest.mark.parametrize("backend", SQLITE, indirect=True)
def test_a_failing_flow_does_not_stop_the_others_and_is_retried_with_backoff(ncsa, tmp_path):
    folder = write_policies(tmp_path, raw=raws(["IN2P3", "laptop"]),
                      dr9={"from": "NCSA", "to": "IN2P3", "release": "DR9"})
    laptop, aside = ncsa.root / "repos" / "laptop", ncsa.root / "laptop-aside"
    laptop.rename(aside)  # the laptop is away

    result = federate(ncsa, folder, "--once", code=1)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: t/raw NCSA -> laptop: site laptop: no repository at {laptop} "
                      "(create it with 'fed site init laptop')"]
    assert "2 ok, 1 failed" in result.stdout
    assert "nothing to carry yet: NCSA has no release DR9" in result.stdout
    assert raw_count(ncsa, "IN2P3") == 16
    flows = state(ncsa)
    failed, good = flows["t/raw->laptop"], flows["t/raw->IN2P3"]
    assert failed["failures"] == 1 and "no repository" in failed["last_error"]
    assert failed["next_due"] == pytest.approx(failed["last_ended"] + retry_delay(3600, 1))
    assert good["failures"] == 0 and good["next_due"] == good["last_started"] + 3600
    with ncsa.butler("NCSA") as b:  # the laptop cannot log it: its source does
        (entry,) = [e for e in b.registry.log.entries() if e.operation == "federate"]
    assert (entry.destination, entry.result, entry.selection["flow"]) == ("laptop", "error",
                                                                          "raw")

    assert "3 not due" in federate(ncsa, folder).stdout  # the retry is not due yet
    federate(ncsa, folder, "--once", code=1)
    failed = state(ncsa)["t/raw->laptop"]
    assert failed["failures"] == 2
    assert failed["next_due"] == pytest.approx(failed["last_ended"] + retry_delay(3600, 2))

    aside.rename(laptop)  # back online
    federate(ncsa, folder, "--once")
    assert state(ncsa)["t/raw->laptop"]["failures"] == 0
    assert state(ncsa)["t/raw->laptop"]["last_error"].startswith("site laptop: no repository")
    assert raw_count(ncsa, "laptop") == 16


def add_exposure(fed_, exposure: int) -> None:
    """NCSA ingests a new exposure: its records and four raws."""
    record = dict(HSC_RECORDS["exposure"][0], exposure=exposure, obs_id=f"HSCA{exposure}")
    with fed_.butler("NCSA", run="HSC/raw/all") as b:
        b.registry.insert_dimension_records("exposure", [record])
        for detector in range(4):
            b.put(np.full(8, exposure + detector), "raw", instrument="HSC", exposure=exposure,
                  detector=detector, id_mode="deterministic")


def wait_for(condition, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"fed federate exited {proc.returncode}"
        assert time.monotonic() < deadline, "the federation did not converge in time"
        time.sleep(0.5)


@pytest.mark.parametrize("backend", POSTGRES, indirect=True)
def test_watch_keeps_converging_while_ncsa_ingests(ncsa, tmp_path):
    folder = write_policies(tmp_path, relay=raws("IN2P3", interval="1s"),
                      onward={"from": "IN2P3", "to": "Princeton",
                              "collections": ["HSC/raw/*"], "interval": "1s"})
    out, err = open(tmp_path / "out", "w+"), open(tmp_path / "err", "w+")
    proc = subprocess.Popen(
        [FED, "federate", "--watch", "--interval", "1", "--policies", str(folder),
         "--sites", str(ncsa.sites_dir), "--state", str(ncsa.root / "state.json")],
        stdout=out, stderr=err, env={k: v for k, v in os.environ.items()
                                     if k != "FED_FAULT_KILL_AT"})
    try:
        wait_for(lambda: raw_count(ncsa, "Princeton") == 16, 60, proc)
        for count, exposure in ((20, 903340), (24, 903341)):  # each needs a pass of its own
            add_exposure(ncsa, exposure)
            wait_for(lambda n=count: raw_count(ncsa, "Princeton") == n, 60, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.seek(0)
    err.seek(0)
    shown, said = out.read(), err.read()
    assert "SIGTERM: finishing the flows in progress" in said
    assert "pass 3 at" in shown and "failed" not in shown
    assert datasets(ncsa, "Princeton") == datasets(ncsa, "NCSA", ("HSC/raw/all",))


@pytest.mark.parametrize("backend", SQLITE, indirect=True)
def test_sigterm_finishes_the_flow_in_progress_and_starts_no_other(ncsa, tmp_path):
    folder = write_policies(tmp_path, relay=raws("IN2P3"),
                      onward={"from": "IN2P3", "to": "Princeton",
                              "collections": ["HSC/raw/*"]})
    sent = []

    def terminate() -> None:
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    with faults.hooked("sync planned", terminate):
        result = federate(ncsa, folder, "--once", "--jobs", "1")
    assert "SIGTERM: finishing the flows in progress" in result.stderr
    assert "1 ok, 1 stopped; stopped on request" in result.stdout
    assert raw_count(ncsa, "IN2P3") == 16 and raw_count(ncsa, "Princeton") == 0
    assert set(state(ncsa)) == {"t/relay->IN2P3"}  # the stopped flow is still due
    assert "1 ok, 1 not due" in federate(ncsa, folder).stdout
    assert raw_count(ncsa, "Princeton") == 16


@pytest.mark.parametrize("backend", SQLITE, indirect=True)
def test_kill_9_loses_nothing(ncsa, tmp_path):
    folder = write_policies(tmp_path, a=raws("IN2P3"), b=raws("Princeton"))
    args = [FED, "federate", "--once", "--jobs", "1", "--policies", str(folder), "--sites",
            str(ncsa.sites_dir), "--state", str(ncsa.root / "state.json")]
    env = dict(os.environ, FED_FAULT_KILL_AT="before commit")
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    federate(ncsa, folder, "--once")
    expected = datasets(ncsa, "NCSA", ("HSC/raw/all",))
    assert datasets(ncsa, "IN2P3") == datasets(ncsa, "Princeton") == expected
    for site in ("IN2P3", "Princeton"):
        with ncsa.butler(site) as b:
            assert b.verify().ok


@pytest.mark.parametrize("backend", SQLITE, indirect=True)
def test_a_flow_may_keep_deletions(ncsa, tmp_path):
    folder = write_policies(tmp_path, archive=raws("IN2P3", deletions="keep"),
                      replica=raws("Princeton"))
    federate(ncsa, folder, "--once")
    with ncsa.butler("NCSA") as b:
        gone = b.find_dataset("raw", instrument="HSC", exposure=903336, detector=0,
                              collections="HSC/raw/all")
        b.remove([gone])
    federate(ncsa, folder, "--once")
    with ncsa.butler("IN2P3") as b:
        assert b.registry.datasets.get(gone.id) is not None and b.exists(gone)
    with ncsa.butler("Princeton") as b:
        assert b.registry.datasets.get(gone.id) is None


@pytest.mark.parametrize("backend", SQLITE, indirect=True)
def test_one_federate_at_a_time_and_usage(ncsa, tmp_path):
    folder = write_policies(tmp_path, raw=raws("IN2P3"))
    with state_lock(ncsa.root / "state.json"):
        fails("federate", "--once", "--policies", folder, "--sites", ncsa.sites_dir,
              "--state", ncsa.root / "state.json", match="another fed federate is running")
    fails("federate", "--once", "--watch", "--policies", folder, "--sites", ncsa.sites_dir,
          match="--once and --watch exclude each other")
    result = fed("federate", "--interval", "5", "--policies", folder, code=2)
    assert "--interval goes with --watch" in result.stderr
    (ncsa.root / "state.json").write_text("[]")
    fails("federate", "--policies", folder, "--sites", ncsa.sites_dir, "--state",
          ncsa.root / "state.json", match="cannot read the federate state")
    assert raw_count(ncsa, "IN2P3") == 0
