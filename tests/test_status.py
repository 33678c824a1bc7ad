"""`fed status`: how far each destination is behind each source (journal entries and the
age of the oldest change it lacks) per flow and per pair, last success and error from
the federate state, files waiting to be retried, conflicts, the release matrix, and
sites out of reach shown as such within the timeout.

NCSA and IN2P3 use the parametrized database (SQLite or PostgreSQL).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import HSC_RECORDS, Federation, populate_ncsa, write_policies
from test_cli import fails, fed, usage_error

from federation.operations.release import create as create_release
from federation.operations.release import status as release_status
from federation.sync.remote.outbox import publish

SQLITE = [pytest.param("sqlite")]
POSTGRES = [pytest.param("postgresql", marks=pytest.mark.postgres)]
FED = str(Path(sys.executable).parent / "fed")
RAWS = ["HSC/raw/*"]


def places(fed_: Federation, folder: Path, sites: Path | None = None) -> list:
    return ["--sites", sites or fed_.sites_dir, "--policies", folder,
            "--state", fed_.root / "state.json"]


def status(fed_: Federation, folder: Path, *args, sites: Path | None = None) -> dict:
    return json.loads(fed("status", "--json", *places(fed_, folder, sites), *args).stdout)


def federate(fed_: Federation, folder: Path, code: int = 0):
    return fed("federate", "--once", *places(fed_, folder), code=code)


def flow(found: dict, key: str) -> dict:
    return next(f for f in found["flows"] if f["flow"] == key)


def pair(found: dict, source: str, destination: str) -> dict:
    return next(p for p in found["pairs"]
                if (p["source"], p["destination"]) == (source, destination))


def site(found: dict, name: str) -> dict:
    return next(s for s in found["sites"] if s["name"] == name)


def journal(fed_: Federation, name: str, after: int = 0) -> list:
    with fed_.butler(name) as b:
        return list(b.registry.db.entries(after=after))


def raw_changes(fed_: Federation, entries: list) -> list:
    """The journal entries a sync of HSC/raw/* (every dataset type) carries: the raw
    collections, their datasets and tags, the dataset types; not the records of
    dimensions, nor the calibrations."""
    with fed_.butler("NCSA") as b:
        def carried(entry) -> bool:
            change = entry.change
            if entry.kind == "dataset":
                return b.registry.datasets.get(uuid.UUID(change.id)).run.startswith("HSC/raw/")
            if entry.kind in ("collection", "associate"):
                name = getattr(change, "name", None) or change.collection
                return name.startswith("HSC/raw/")
            return entry.kind == "dataset_type"
        return [e for e in entries if carried(e)]


def add_exposure(fed_: Federation, exposure: int) -> None:
    """NCSA ingests a new exposure: its record and four raws."""
    record = dict(HSC_RECORDS["exposure"][0], exposure=exposure, obs_id=f"HSCA{exposure}")
    with fed_.butler("NCSA", run="HSC/raw/all") as b:
        b.registry.insert_dimension_records("exposure", [record])
        for detector in range(4):
            b.put(np.full(8, exposure + detector), "raw", instrument="HSC", exposure=exposure,
                  detector=detector, id_mode="deterministic")


def test_lag_in_entries_and_age_before_and_after_syncs(ncsa, tmp_path):
    folder = write_policies(tmp_path, raw={"from": "NCSA", "to": ["IN2P3", "Princeton"],
                                           "collections": RAWS})
    everything = journal(ncsa, "NCSA")
    head = everything[-1].seq
    entries = raw_changes(ncsa, everything)  # what the flows lack: not the whole journal
    assert 0 < len(entries) < len(everything)

    before = status(ncsa, folder)
    assert [s["name"] for s in before["sites"]] == ["IN2P3", "NCSA", "Princeton", "laptop"]
    assert all(s["reachable"] for s in before["sites"]) and site(before, "NCSA")["head"] == head
    for destination in ("IN2P3", "Princeton"):
        found = flow(before, f"t/raw->{destination}")
        assert found["lag"] | {"age_seconds": None} == {
            "entries": len(entries), "oldest": pytest.approx(entries[0].created_at),
            "cursor": None, "head": head, "note": "never synced", "age_seconds": None}
        assert found["lag"]["age_seconds"] == pytest.approx(
            before["generated"] - entries[0].created_at, abs=0.01)
        assert (found["standing"], found["lagging"], found["last_success"]) == \
            ("lagging", True, None)
        assert pair(before, "NCSA", destination)["lag"]["entries"] == len(entries)

    started = time.time()
    federate(ncsa, folder)
    after = status(ncsa, folder)
    found = flow(after, "t/raw->IN2P3")
    assert found["lag"]["entries"] == 0 and found["lag"]["cursor"] == head
    assert (found["standing"], found["lagging"], found["failures"]) == ("ok", False, 0)
    assert started <= found["last_success"] <= time.time() and found["last_error"] is None
    assert found["next_due"] == pytest.approx(found["last_run"] + 3600)
    assert (found["retries"], found["conflicts"]) == (0, 0)
    assert pair(after, "NCSA", "IN2P3")["last_result"] == "ok"

    add_exposure(ncsa, 903340)  # NCSA ingests after the pass: both flows fall behind
    new = raw_changes(ncsa, journal(ncsa, "NCSA", after=head))  # its record is not carried
    assert len(new) == 4
    lagging = status(ncsa, folder)
    for destination in ("IN2P3", "Princeton"):
        found = flow(lagging, f"t/raw->{destination}")
        assert found["lag"]["entries"] == len(new)
        assert found["lag"]["oldest"] == pytest.approx(new[0].created_at)
        assert found["standing"] == "lagging" and found["lagging"]
    text = fed("status", *places(ncsa, folder)).stdout
    line = next(li for li in text.splitlines() if li.startswith("t/raw") and "-> IN2P3" in li)
    assert "! lagging" in line and f" {len(new)} " in line, text

    federate(ncsa, folder)
    assert flow(status(ncsa, folder), "t/raw->IN2P3")["lag"]["entries"] == 0


def test_hand_run_syncs_are_pairs_too_and_echoes_do_not_count(ncsa, tmp_path):
    """A destination's own changes coming back through its source are not a lag."""
    folder = write_policies(tmp_path, raw={"from": "NCSA", "to": "IN2P3", "collections": RAWS})
    fed("sync", "NCSA", "laptop", "-c", "HSC/calib", "--sites", ncsa.sites_dir)
    with ncsa.butler("laptop", run="u/alice/notes") as b:
        b.registry.register_dataset_type("note", ["detector"], "NumpyArray")
        b.put(np.zeros(2), "note", instrument="HSC", detector=1)
    fed("sync", "laptop", "NCSA", "-c", "u/alice/*", "--sites", ncsa.sites_dir)
    found = status(ncsa, folder)
    hand = pair(found, "NCSA", "laptop")
    assert (hand["flows"], hand["selections"]) == ([], 1)
    # NCSA's journal now ends with the laptop's run and dataset, which are the laptop's
    # own (it skips them) and do not count, and the dataset type, registered at NCSA
    with ncsa.butler("NCSA") as b:
        kinds = [e.kind for e in b.registry.db.entries(after=hand["lag"]["cursor"])]
    assert kinds == ["dataset_type", "collection", "dataset"]
    assert hand["lag"]["entries"] == 1 and hand["lagging"]
    back = pair(found, "laptop", "NCSA")
    assert back["lag"]["entries"] == 0 and back["last_result"] == "ok"
    assert flow(found, "t/raw->IN2P3")["lag"]["note"] == "never synced"


def raw_ids(fed_: Federation, name: str) -> set[str]:
    with fed_.butler(name) as b:
        return {str(ref.id) for ref in b.query_datasets("raw", "*", find_first=False)}


@pytest.mark.parametrize("backend", POSTGRES, indirect=True)
def test_status_tells_the_truth_while_watch_converges(ncsa, tmp_path):
    """`fed federate --watch` runs while NCSA ingests; whenever `fed status` says every flow
    is done (nothing behind, no failure), every site holds what NCSA holds."""
    folder = write_policies(
        tmp_path, relay={"from": "NCSA", "to": "IN2P3", "collections": RAWS, "interval": "1s"},
        onward={"from": "IN2P3", "to": "Princeton", "collections": RAWS, "interval": "1s"})
    proc = subprocess.Popen([FED, "federate", "--watch", "--interval", "1",
                             *map(str, places(ncsa, folder))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if k != "FED_FAULT_KILL_AT"})
    try:
        for exposure, count in ((None, 16), (903340, 20), (903341, 24)):
            if exposure is not None:
                add_exposure(ncsa, exposure)
            expected = raw_ids(ncsa, "NCSA")
            deadline = time.monotonic() + 60
            while True:
                flows = status(ncsa, folder)["flows"]
                if all(f["lag"]["entries"] == 0 and not f["failures"] for f in flows):
                    break
                assert proc.poll() is None, f"fed federate exited: {proc.stderr.read()}"
                assert time.monotonic() < deadline, f"no convergence in time: {flows}"
                time.sleep(0.3)
            assert raw_ids(ncsa, "IN2P3") == raw_ids(ncsa, "Princeton") == expected
            assert len(expected) == count
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, proc.stderr.read()


@pytest.mark.parametrize("backend", SQLITE, indirect=True)
def test_last_error_retries_and_conflicts(ncsa, tmp_path):
    folder = write_policies(tmp_path, raw={"from": "NCSA", "to": "IN2P3", "collections": RAWS},
                            calib={"from": "NCSA", "to": "Princeton",
                                   "collections": ["HSC/calib", "HSC/calib/*"]})
    with ncsa.butler("NCSA") as b:  # one raw's file corrupted at the source
        ref = b.query_datasets("raw", "HSC/raw/all", where="exposure = 903335")[0]
        path = b.datastore.path_of(b.registry.datasets.file(ref.id)[0])
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    with ncsa.butler("Princeton") as b:  # the same instrument, defined otherwise
        b.registry.insert_dimension_records("instrument", [
            dict(HSC_RECORDS["instrument"][0], detector_max=999)])

    federate(ncsa, folder, code=1)
    found = status(ncsa, folder)
    raw = flow(found, "t/raw->IN2P3")
    assert (raw["standing"], raw["failures"], raw["retries"]) == ("failing", 1, 1)
    assert "did not arrive" in raw["last_error"] and raw["last_error_at"] is not None
    assert raw["lag"]["entries"] == 0  # the cursor moved on; the file waits as a retry
    calib = flow(found, "t/calib->Princeton")
    assert calib["standing"] == "failing" and calib["conflicts"] >= 1
    assert calib["conflict_message"].startswith("policy t, flow calib: ")
    assert calib["lag"]["entries"] > 0  # nothing was applied: the cursor did not move
    assert pair(found, "NCSA", "IN2P3")["retries"] == 1
    assert pair(found, "NCSA", "Princeton")["last_result"] == "conflict"
    text = fed("status", *places(ncsa, folder)).stdout
    assert "did not arrive" in text and "failing" in text

    path.write_bytes(original)  # repaired: the retry brings it
    federate(ncsa, folder, code=1)  # the conflict remains
    raw = flow(status(ncsa, folder), "t/raw->IN2P3")
    assert (raw["standing"], raw["failures"], raw["retries"]) == ("ok", 0, 0)
    assert "did not arrive" in raw["last_error"]  # the latest error is kept after a success


@pytest.mark.parametrize("backend", SQLITE, indirect=True)
def test_unreachable_sites_are_shown_within_the_timeout(ncsa, tmp_path):
    closed = _closed_port()
    silent = socket.socket()  # accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    sites = ncsa.sites_dir
    for name, port in (("Archive", closed), ("Mountain", silent.getsockname()[1])):
        (sites / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "transport": "http", "owns": [f"u/{name.lower()}"],
            "http": {"url": f"http://127.0.0.1:{port}/{name}/"}}))
    (ncsa.root / "repos" / "laptop").rename(ncsa.root / "laptop-away")
    folder = write_policies(tmp_path, raw={"from": "NCSA", "to": ["IN2P3", "laptop"],
                                           "collections": RAWS},
                            archive={"from": "Archive", "to": "Princeton",
                                     "collections": ["u/archive/*"]},
                            mountain={"from": "Mountain", "to": "IN2P3",
                                      "collections": ["u/mountain/*"]})
    try:
        started = time.monotonic()
        result = fed("status", "--timeout", "2", *places(ncsa, folder, sites))
        took = time.monotonic() - started
        found = status(ncsa, folder, "--timeout", "2", sites=sites)
    finally:
        silent.close()
    assert took < 7, f"fed status took {took:.1f} s with --timeout 2"
    reach = {s["name"]: (s["reachable"], s["error"]) for s in found["sites"]}
    assert reach["NCSA"] == reach["IN2P3"] == reach["Princeton"] == (True, "")
    assert not reach["laptop"][0] and "no repository at" in reach["laptop"][1]
    assert not reach["Archive"][0] and reach["Archive"][1]
    assert not reach["Mountain"][0] and reach["Mountain"][1]
    for key in ("t/raw->laptop", "t/archive->Princeton", "t/mountain->IN2P3"):
        shown = flow(found, key)
        assert shown["standing"] == "unreachable" and shown["lag"]["entries"] is None
        assert "unreachable" in shown["lag"]["note"]
    assert flow(found, "t/raw->IN2P3")["standing"] == "lagging"  # the rest is shown
    lines = result.stdout.splitlines()
    assert any(li.startswith("laptop") and "unreachable" in li
               and li.endswith(reach["laptop"][1]) for li in lines), result.stdout
    assert any(li.startswith("Archive") and "unreachable" in li for li in lines)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_release_matrix(ncsa, tmp_path):
    create_release(ncsa.root / "repos" / "NCSA", "DR1", ["HSC/calib"])
    folder = write_policies(tmp_path, dr1={"from": "NCSA", "to": "IN2P3", "release": "DR1"})
    federate(ncsa, folder)
    found = status(ncsa, folder)
    (release,) = found["releases"]
    states = {name: cell["state"] for name, cell in release["sites"].items()}
    assert states == {"NCSA": "unverified", "IN2P3": "verified", "Princeton": "absent",
                      "laptop": "absent"}
    assert states == {s.site: s.state for s in release_status("DR1", ncsa.sites_dir)}
    assert (release["home"], release["verified_at"]) == ("NCSA", ["IN2P3"])
    assert site(found, "IN2P3")["releases"] == ["DR1"]

    fed("release", "verify", ncsa.root / "repos" / "NCSA", "DR1")
    (ncsa.root / "repos" / "laptop").rename(ncsa.root / "laptop-away")
    text = fed("status", *places(ncsa, folder)).stdout
    row = next(li for li in text.splitlines() if li.startswith("DR1"))
    assert row.split() == ["DR1", "NCSA", "verified", "verified", "absent", "unreachable"]
    assert text.splitlines()[text.splitlines().index(row) - 2].split() == [
        "release", "home", "IN2P3", "NCSA", "Princeton", "laptop"]


def test_a_remote_source_through_its_outbox(tmp_path, web_server, monkeypatch):
    """NCSA reached over HTTP: its journal head is what it published; IN2P3's lag is what
    its mirror of NCSA's outbox lacks plus what the mirror holds but IN2P3 has not
    applied."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fed_ = Federation(tmp_path / "fed", {}, "http", web_server)
    populate_ncsa(fed_)
    sites = tmp_path / "mixed"
    shutil.copytree(fed_.sites_dir, sites)
    shutil.copy(fed_.remote_dir / "NCSA.yaml", sites / "NCSA.yaml")
    folder = write_policies(tmp_path, raw={"from": "NCSA", "to": "IN2P3", "collections": RAWS})
    head = publish(fed_.site("NCSA")).index.last_seq

    found = status(fed_, folder, sites=sites)
    assert (site(found, "NCSA")["registry"], site(found, "NCSA")["head"]) == ("published", head)
    assert flow(found, "t/raw->IN2P3")["lag"] | {"oldest": None} == {
        "entries": head, "oldest": None, "age_seconds": None, "cursor": None, "head": head,
        "note": "never synced"}

    fed_.sync("NCSA", "IN2P3", collections=RAWS)  # publishes, then pulls through the mirror
    assert flow(status(fed_, folder, sites=sites), "t/raw->IN2P3")["lag"]["entries"] == 0
    add_exposure(fed_, 903340)
    later = publish(fed_.site("NCSA")).index.last_seq
    lag = flow(status(fed_, folder, sites=sites), "t/raw->IN2P3")["lag"]
    assert (lag["entries"], lag["cursor"], lag["head"]) == (later - head, head, later)


def test_a_destination_reached_over_sftp(tmp_path, sshd_server, monkeypatch):
    """IN2P3 on another machine, pushed to over SFTP: NCSA keeps the cursor."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fed_ = Federation(tmp_path / "fed", {}, "sftp", sshd_server)
    populate_ncsa(fed_)
    sites = tmp_path / "mixed"
    shutil.copytree(fed_.sites_dir, sites)
    shutil.copy(fed_.remote_dir / "IN2P3.yaml", sites / "IN2P3.yaml")
    folder = write_policies(tmp_path, raw={"from": "NCSA", "to": "IN2P3", "collections": RAWS})
    head = journal(fed_, "NCSA")[-1].seq

    found = status(fed_, folder, sites=sites)
    in2p3 = site(found, "IN2P3")
    assert (in2p3["reachable"], in2p3["registry"]) == (True, "published")
    assert "has published nothing yet" in in2p3["note"]
    raw = flow(found, "t/raw->IN2P3")
    assert (raw["lag"]["entries"], raw["lag"]["note"], raw["retries"]) == \
        (len(raw_changes(fed_, journal(fed_, "NCSA"))), "never synced", None)

    fed("sync", "NCSA", "IN2P3", "-c", "HSC/raw/*", "--sites", sites)  # a push
    found = status(fed_, folder, sites=sites)
    raw = flow(found, "t/raw->IN2P3")
    assert (raw["lag"]["entries"], raw["lag"]["cursor"]) == (0, head)
    assert raw["last_success"] is not None and raw["standing"] == "ok"
    assert pair(found, "NCSA", "IN2P3")["last_result"] == "ok"


@pytest.mark.parametrize("backend", SQLITE, indirect=True)
def test_bad_input(ncsa, tmp_path):
    folder = write_policies(tmp_path, raw={"from": "NCSA", "to": "IN2P3", "collections": RAWS})
    fails("status", "--sites", tmp_path / "nowhere", "--policies", folder,
          match="no usable site definitions in")
    fails("status", "--sites", ncsa.sites_dir, "--policies", tmp_path / "nowhere",
          match="no policies directory")
    usage_error("status", "--timeout", "0", match="--timeout")
    fails("serve", "--host", "0.0.0.0", "--sites", ncsa.sites_dir, "--policies", folder,
          match="not a loopback address")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        fails("serve", "--port", taken.getsockname()[1], "--sites", ncsa.sites_dir,
              "--policies", folder, match="cannot listen on 127.0.0.1:")
    (folder / "broken.yaml").write_text("flows: [")  # a broken policy: reported, not fatal
    result = fed("status", *places(ncsa, folder))
    assert "t/raw" in result.stdout
    assert "warning: " in result.stderr and "broken.yaml: not valid YAML" in result.stderr
