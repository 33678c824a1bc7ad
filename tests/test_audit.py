"""`fed audit`: every kind of problem a repository's files can have, found and reported.

Missing, corrupt (size, xxh3-128, not a regular file), dark (staging, trash and the
repository's own files excluded), held elsewhere but held nowhere; quarantine, --since,
--sample, resuming an interrupted audit, JSON lines, exit codes, bad input. On SQLite
and PostgreSQL, with sites on this machine and sites reached over SFTP and HTTP (real
sshd and nginx). `fed repair` is tested in test_repair.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli import fails, fed, repo_files
from test_remote import puller_view, server_for

RAW = "HSC/raw/all"


def root(fed_, site: str) -> Path:
    return fed_.root / "repos" / site


def audit(fed_, site: str, *args, code: int = 0, sites: Path | None = None
          ) -> tuple[list[dict], dict]:
    """`fed audit SITE --json`: the problems (JSON lines) and the summary line."""
    out = fed("audit", site, "--sites", sites or fed_.sites_dir, "--json", *args,
              code=code).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["kind"] == "summary" and lines[-1]["ok"] == (code == 0)
    return lines[:-1], lines[-1]


def kinds(problems: list[dict]) -> list[tuple[str, str]]:
    return sorted((p["kind"], p["path"]) for p in problems)


def paths(fed_, site: str, dataset_type: str = "raw", where: str = "exposure = 903334"
          ) -> list[tuple[str, str]]:
    """(dataset id, datastore path) of a site's datasets, by path."""
    with fed_.butler(site) as b:
        refs = b.query_datasets(dataset_type, "*", where=where, find_first=False)
        return sorted(((str(r.id), b.registry.datasets.file(r.id)[0].path) for r in refs),
                      key=lambda x: x[1])


def corrupt(path: Path) -> None:
    """Same size, other bytes."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def log_of(fed_, site: str) -> list[tuple[str, str]]:
    with fed_.butler(site) as b:
        return [(e.operation, e.result) for e in b.registry.log.entries()]


def make_old(path: Path) -> None:
    os.utime(path, (time.time() - 3600, time.time() - 3600))


# -- what an audit finds ----------------------------------------------------------------------


def test_a_sound_repository_passes(ncsa):
    out = fed("audit", root(ncsa, "NCSA")).stdout
    assert "audit of NCSA: 20 files checked, 20 hashed" in out and "no problems" in out
    problems, summary = audit(ncsa, "NCSA")
    assert problems == [] and summary["files"] == summary["hashed"] == 20
    assert summary["walked"] == 20 and summary["bytes"] > 0
    assert log_of(ncsa, "NCSA")[-1] == ("audit", "ok")
    assert not (root(ncsa, "NCSA") / ".federation-audit").exists()


def test_every_kind_of_problem_is_reported(ncsa):
    r = root(ncsa, "NCSA")
    (gone_id, gone), (short_id, short), (flipped_id, flipped), (odd_id, odd) = \
        paths(ncsa, "NCSA")
    (r / gone).unlink()
    (r / short).write_bytes((r / short).read_bytes()[:-1])
    corrupt(r / flipped)
    (r / odd).unlink()
    (r / odd).mkdir()
    (r / RAW / "stray.fits").write_bytes(b"nobody's")
    (r / "elsewhere" / "deep").mkdir(parents=True)
    (r / "elsewhere" / "deep" / "orphan").write_bytes(b"x")
    # not dark: staging, the repository's own files, files in the trash
    (r / ".federation-staging").mkdir(exist_ok=True)
    (r / ".federation-staging" / "123.part").write_bytes(b"partial")
    (r / ".federation-verify").mkdir()
    (r / ".federation-verify" / "note.jsonl").write_text("{}")
    with ncsa.butler("NCSA") as b:
        (trashed,) = b.query_datasets("raw", RAW, where="exposure = 903335 AND detector = 0")
        b.registry.datasets.remove([trashed])  # the record goes, the file waits in the trash
        assert b.registry.datasets.trash()
    problems, summary = audit(ncsa, "NCSA", code=1)
    assert kinds(problems) == sorted([
        ("missing", gone), ("corrupt", short), ("corrupt", flipped), ("corrupt", odd),
        ("dark", f"{RAW}/stray.fits"), ("dark", "elsewhere/deep/orphan")])
    by_path = {p["path"]: p for p in problems}
    assert by_path[gone]["id"] == gone_id and by_path[gone]["dataset_type"] == "raw"
    assert by_path[gone]["data_id"] == {"instrument": "HSC", "exposure": 903334,
                                        "detector": 0}
    assert by_path[short]["detail"].startswith("size mismatch: the file has")
    assert by_path[flipped]["detail"].startswith("checksum mismatch: the file's xxh3-128 is")
    assert by_path[odd]["detail"] == "not a regular file (a directory)"
    assert by_path[f"{RAW}/stray.fits"]["size"] == 8 and "id" not in by_path[
        f"{RAW}/stray.fits"]
    assert (summary["missing"], summary["corrupt"], summary["dark"], summary["unheld"]) == \
        (1, 3, 2, 0)
    assert summary["files"] == 19
    text = fed("audit", "NCSA", "--sites", ncsa.sites_dir, code=1).stdout
    assert f"missing: raw@{{instrument='HSC', detector=0, exposure=903334}} [{RAW}] " \
           f"({gone}): no file at its path" in text
    assert f"dark: {RAW}/stray.fits: no record names it" in text
    assert "PROBLEMS: 1 missing, 3 corrupt, 2 dark, 0 unheld" in text
    assert log_of(ncsa, "NCSA")[-2:] == [("audit", "failed"), ("audit", "failed")]


def test_files_held_elsewhere_are_looked_for_there(ncsa):
    ncsa.sync("NCSA", "IN2P3", collections=[RAW], files=False)
    ncsa.sync("NCSA", "Princeton", collections=[RAW], where="exposure = 903335")
    problems, summary = audit(ncsa, "IN2P3")
    assert problems == [] and summary["held_elsewhere"] == 16 and summary["files"] == 0
    r = root(ncsa, "NCSA")
    (_, here_only), = paths(ncsa, "NCSA", where="exposure = 903334 AND detector = 2")
    (_, also_princeton), = paths(ncsa, "NCSA", where="exposure = 903335 AND detector = 2")
    (r / here_only).unlink()
    (r / also_princeton).unlink()  # Princeton still holds it: found there
    problems, summary = audit(ncsa, "IN2P3", code=1)
    assert kinds(problems) == [("unheld", here_only)]
    assert problems[0]["detail"].startswith("held at NCSA by its record, and no site holds it")
    assert "NCSA: its file is missing" in problems[0]["detail"]
    assert "Princeton: not held" in problems[0]["detail"]
    assert "laptop: not held" in problems[0]["detail"]
    # a holder the sites directory does not know holds nothing
    view = ncsa.root / "only-in2p3"
    view.mkdir()
    (view / "IN2P3.yaml").write_text((ncsa.sites_dir / "IN2P3.yaml").read_text())
    problems, _ = audit(ncsa, "IN2P3", code=1, sites=view)
    assert len(problems) == 16 and all(p["kind"] == "unheld" for p in problems)
    assert "NCSA: a site the sites directory does not define" in problems[0]["detail"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("transport", ["sftp", "http"])
def test_a_holder_over_the_network_is_asked_through_its_transport(ncsa, tmp_path, request,
                                                                  transport):
    ncsa.sync("NCSA", "IN2P3", collections=[RAW], files=False, where="exposure = 903334")
    view = puller_view(ncsa, tmp_path, "NCSA", transport, server_for(request, transport))
    assert audit(ncsa, "IN2P3", sites=view)[1]["held_elsewhere"] == 4
    (_, gone), (_, short), *_ = paths(ncsa, "NCSA")
    (root(ncsa, "NCSA") / gone).unlink()
    (root(ncsa, "NCSA") / short).write_bytes(b"short")
    problems, _ = audit(ncsa, "IN2P3", code=1, sites=view)
    assert kinds(problems) == sorted([("unheld", gone), ("unheld", short)])
    details = {p["path"]: p["detail"] for p in problems}
    assert "NCSA: not held" in details[gone]
    assert "NCSA: its file has 5 bytes, not" in details[short]


def test_an_outbox_the_definition_puts_under_the_root_is_not_dark(ncsa):
    import yaml

    definition = yaml.safe_load((ncsa.sites_dir / "NCSA.yaml").read_text())
    r = root(ncsa, "NCSA")
    definition["outbox"] = str(r / "published")
    (ncsa.sites_dir / "NCSA.yaml").write_text(yaml.safe_dump(definition))
    fed("publish", "NCSA", "--sites", ncsa.sites_dir)
    assert list((r / "published").glob("*.bundle"))
    assert audit(ncsa, "NCSA")[0] == []  # by site name
    assert audit(ncsa, r)[0] == []  # by path: the site whose root it is
    assert kinds(audit(ncsa, r, code=1, sites=ncsa.root / "none")[0])[0][0] == "dark"


# -- quarantine, --since, --sample ----------------------------------------------------------


def test_quarantine_moves_dark_files_and_never_deletes_them(ncsa):
    r = root(ncsa, "NCSA")
    (r / RAW / "stray.fits").write_bytes(b"old stray")
    (r / "deep" / "er").mkdir(parents=True)
    (r / "deep" / "er" / "orphan").write_bytes(b"orphan")
    (r / RAW / "fresh.fits").write_bytes(b"a write under way?")
    make_old(r / RAW / "stray.fits")
    make_old(r / "deep" / "er" / "orphan")
    problems, summary = audit(ncsa, "NCSA", "--quarantine", code=1)
    assert kinds(problems) == [("dark", f"{RAW}/fresh.fits"), ("dark", f"{RAW}/stray.fits"),
                               ("dark", "deep/er/orphan")]
    moved = summary["quarantined"]
    assert set(moved) == {f"{RAW}/stray.fits", "deep/er/orphan"}
    assert (r / moved["deep/er/orphan"]).read_bytes() == b"orphan"
    assert moved["deep/er/orphan"].startswith(".federation-quarantine/")
    assert (r / moved[f"{RAW}/stray.fits"]).read_bytes() == b"old stray"
    assert not (r / RAW / "stray.fits").exists() and not (r / "deep").exists()
    assert "write may be under way" in summary["left_in_place"][f"{RAW}/fresh.fits"]
    assert (r / RAW / "fresh.fits").exists()
    # quarantined files are no longer dark; the recent one still is
    problems, _ = audit(ncsa, "NCSA", code=1)
    assert kinds(problems) == [("dark", f"{RAW}/fresh.fits")]
    with ncsa.butler("NCSA") as b:
        assert b.verify().ok  # nothing recorded was touched


def test_since_last_checks_only_what_arrived_since_the_last_audit(ncsa):
    audit(ncsa, "NCSA")
    r = root(ncsa, "NCSA")
    (_, old), *_ = paths(ncsa, "NCSA")
    corrupt(r / old)
    with ncsa.butler("NCSA", run="HSC/runs/RC2/w_2026_47/DM-1") as b:
        b.registry.register_dataset_type("calexp", ["visit", "detector"], "NumpyArray")
        ref = b.put(np.arange(5), "calexp", instrument="HSC", visit=903334, detector=0)
        new = b.registry.datasets.file(ref.id)[0].path
    (r / new).write_bytes(b"broken")
    (r / "dark.bin").write_bytes(b"dark")
    problems, summary = audit(ncsa, "NCSA", "--since", "last", code=1)
    assert summary["files"] == 1 and summary["since"] is not None
    assert kinds(problems) == [("corrupt", new), ("dark", "dark.bin")]  # dark: always whole
    problems, summary = audit(ncsa, "NCSA", code=1)
    assert summary["files"] == 21 and ("corrupt", old) in kinds(problems)
    # LAST is per selection: a first audit of -c RAW checks all of it
    _, summary = audit(ncsa, "NCSA", "-c", RAW, "--since", "LAST", code=1)
    assert summary["files"] == 16 and "no earlier audit" in summary["note"]
    _, summary = audit(ncsa, "NCSA", "-c", RAW, "--since", "last", code=1)
    assert summary["files"] == 0
    _, summary = audit(ncsa, "NCSA", "--since", "1h", code=1)
    assert summary["files"] == 21


def test_a_sample_hashes_a_fraction_and_still_checks_presence_and_size(ncsa):
    r = root(ncsa, "NCSA")
    (_, gone), (_, short), *_ = paths(ncsa, "NCSA")
    (r / gone).unlink()
    (r / short).write_bytes(b"x")
    (r / "dark.bin").write_bytes(b"dark")
    problems, summary = audit(ncsa, "NCSA", "--sample", "1%", code=1)
    assert summary["files"] == 20 and summary["hashed"] < 19 and summary["sample"] == 0.01
    assert kinds(problems) == sorted([("missing", gone), ("corrupt", short),
                                      ("dark", "dark.bin")])
    _, summary = audit(ncsa, "NCSA", "--sample", "0.5", code=1)
    assert summary["files"] == 20


# -- resuming ---------------------------------------------------------------------------------


def test_an_interrupted_audit_resumes(ncsa, monkeypatch):
    """Ctrl-C after two chunks of 4 files: the next audit checks only the other 12, keeps
    what the first found (a corrupt file among the first 8) and says so; --restart checks
    everything again."""
    from federation.audit import scan as scanning
    from federation.faults import hooked
    from federation.operations.audit import AuditRequest
    from federation.operations.audit import audit as run

    with ncsa.butler("NCSA") as b:
        first = min(b.registry.datasets.file(r.id)[0].path
                    for r in b.query_datasets(None, "*", find_first=False))
    r = root(ncsa, "NCSA")
    corrupt(r / first)
    monkeypatch.setattr(scanning, "CHUNK", 4)
    calls = []

    def stop_after_two() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    request = AuditRequest(str(r))
    with hooked("audit files checked", stop_after_two), pytest.raises(KeyboardInterrupt):
        run(request)
    assert log_of(ncsa, "NCSA")[-1] == ("audit", "interrupted")
    assert list((r / ".federation-audit").glob("*.jsonl"))
    later = []
    with hooked("audit files checked", lambda: later.append(1)):
        found = run(request)
    assert len(later) == 3 and found.resumed == 8 and found.files == 20
    assert [(p.kind, p.path) for p in found.problems] == [("corrupt", first)]
    assert log_of(ncsa, "NCSA")[-1] == ("audit", "failed")
    assert not (r / ".federation-audit").exists()
    corrupt(r / first)
    _, summary = audit(ncsa, "NCSA", "--restart")
    assert summary["resumed"] == 0 and summary["files"] == 20


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "match"), [
    (["nowhere"], "unknown site 'nowhere'"),
    (["NCSA", "--sample", "0"], "--sample 0: give a fraction above 0 and at most 1"),
    (["NCSA", "--sample", "1.5"], "--sample 1.5"),
    (["NCSA", "--sample", "lots"], "--sample lots"),
    (["NCSA", "--since", "yesterday-ish"], "--since 'yesterday-ish'"),
    (["NCSA", "-c", "HSC/nothing*"], "nothing at NCSA matches -c 'HSC/nothing*'"),
    (["NCSA", "-t", "flat"], "flat"),
    (["./no/such/repo"], "is not a federation repository"),
])
def test_bad_input_is_one_line_and_writes_nothing(ncsa, args, match):
    before = repo_files(root(ncsa, "NCSA")), log_of(ncsa, "NCSA")
    fails("audit", "--sites", ncsa.sites_dir, *args, match=match)
    assert (repo_files(root(ncsa, "NCSA")), log_of(ncsa, "NCSA")) == before


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_site_over_the_network_is_audited_where_it_runs(ncsa, tmp_path, request):
    view = puller_view(ncsa, tmp_path, "NCSA", "http", server_for(request, "http"))
    fails("audit", "NCSA", "--sites", view, match="reached over http: audit and repair it "
                                                  "on the machine that holds its files")


def test_help_explains_each_kind():
    out = fed("audit", "--help").stdout
    for word in ("missing", "corrupt", "dark", "unheld", "--since", "LAST", "--sample",
                 "--quarantine", "--restart", "--json", "--jobs", "Exits 1", "resumes"):
        assert word in out, word
