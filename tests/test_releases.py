"""Data releases: frozen at their home site, identified by a Merkle root that an independent
script recomputes from the manifest, searched by name, never changed, compared by walking
only the subtrees that differ. On SQLite and PostgreSQL, through the `fed` command.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import repo_state
from test_cli import fails, fed

from federation.errors import RetractedReleaseWarning
from federation.merkle import build, diff, entry_hash
from federation.timespan import Timespan


def repo(fed_, site: str = "NCSA") -> Path:
    return fed_.root / "repos" / site


def independent_root(manifest: Path) -> str:
    """The release id from its manifest file alone, following the README's description
    (no code of this project)."""
    items = [hashlib.sha256(b"\x00" + line.encode()).digest()
             for line in manifest.read_text(encoding="utf-8").splitlines()]
    while True:
        nodes, chunk = [], []
        for item in items:
            chunk.append(item)
            if item[0] < 4 and len(chunk) >= 2:
                nodes.append(chunk)
                chunk = []
        if chunk or not nodes:
            nodes.append(chunk)
        items = [hashlib.sha256(b"\x01" + b"".join(c)).digest() for c in nodes]
        if len(items) == 1:
            return items[0].hex()


def test_a_release_freezes_its_collections_and_its_id_is_recomputable(ncsa, tmp_path):
    shown = fed("release", "create", repo(ncsa), "DR1", "-c", "HSC/defaults",
                "--doc", "First data release", "--json").stdout
    info = json.loads(shown)
    assert info["counts"] == {"bias": 4, "raw": 16} and info["entries"] == 20
    assert info["site"] == "NCSA" and info["doc"] == "First data release"
    manifest = tmp_path / "DR1.jsonl"
    text = fed("release", "show", repo(ncsa), "DR1", "--manifest", manifest).stdout
    assert info["root"] in text and "raw" in text and "bias" in text
    assert independent_root(manifest) == info["root"]
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [e["dataset_type"] for e in entries] == ["bias"] * 4 + ["raw"] * 16
    bias = entries[0]
    assert bias["validity"] and not bias["found"]  # a calibration, found by time
    raw = entries[4]
    assert raw["found"] and raw["run"] == "HSC/raw/all" and len(raw["checksum"]) == 32
    assert set(raw["data_id"]) == {"instrument", "exposure", "detector"}
    listed = fed("release", "list", repo(ncsa)).stdout
    assert "DR1" in listed and info["root"][:16] in listed


def test_a_release_is_searched_by_name_calibrations_by_time(ncsa):
    fed("release", "create", repo(ncsa), "DR1", "-c", "HSC/defaults",
        "--where", "exposure IN (903334, 903335)")
    with ncsa.butler("NCSA", collections="DR1") as b:
        raws = b.query_datasets("raw")
        assert len(raws) == 8 and {r.data_id["exposure"] for r in raws} == {903334, 903335}
        bias = b.find_dataset("bias", instrument="HSC", detector=2,
                              timespan=Timespan.from_values("2013-06-01", "2013-06-02"))
        assert bias is not None and bias.run == "HSC/calib/gen/DM-1"
        assert b.find_dataset("bias", instrument="HSC", detector=2,
                              timespan=Timespan.from_values("2015-06-01", "2015-06-02")) is None
        assert b.get("raw", instrument="HSC", exposure=903334, detector=1)[0] == 1


def test_nothing_changes_a_release(ncsa):
    fed("release", "create", repo(ncsa), "DR1", "-c", "HSC/defaults")
    with ncsa.butler("NCSA") as b:
        before = repo_state(b)
    r = repo(ncsa)
    fails("prune-datasets", r, "raw", "-c", "HSC/raw/all", "--where", "exposure = 903334",
          "--yes", match=["release 'DR1'", "never deleted"])
    fails("remove-runs", r, "HSC/raw/all", "--force", "--yes", match="release 'DR1'")
    fails("disassociate", r, "DR1/found", "-c", "DR1/found", "-t", "raw",
          match="release 'DR1'")
    fails("decertify", r, "DR1/calib", "bias", match="release 'DR1'")
    fails("collection-chain", r, "DR1", "HSC/raw/all", match="release 'DR1'")
    fails("remove-collections", r, "DR1*", "--force", "--yes", match="release 'DR1'")
    fails("release", "create", r, "DR1", "-c", "HSC/raw/all", match="exists already")
    fails("release", "retract", r, "DR1", "--reason", " ", match="reason")
    with ncsa.butler("NCSA") as b:
        assert repo_state(b) == before
    # The frozen collections' sources stay the owner's to change.
    fed("disassociate", r, "HSC/raw/good", "-c", "HSC/raw/good", "-t", "raw")


def test_a_retracted_release_warns_and_keeps_its_data(ncsa):
    fed("release", "create", repo(ncsa), "DR1", "-c", "HSC/raw/all")
    shown = fed("release", "retract", repo(ncsa), "DR1", "--reason", "bad flats").stdout
    assert "bad flats" in shown
    assert "RETRACTED" in fed("release", "show", repo(ncsa), "DR1").stdout
    fails("prune-datasets", repo(ncsa), "raw", "-c", "HSC/raw/all", "--yes",
          match="release 'DR1'")
    searched = fed("query-datasets", repo(ncsa), "raw", "-c", "DR1")
    assert "warning: release 'DR1' has been retracted: bad flats" in searched.stderr
    assert searched.stdout.count("HSC/raw/all") == 16
    with pytest.warns(RetractedReleaseWarning, match="bad flats"), \
            ncsa.butler("NCSA", collections="DR1") as b:
        assert len(b.query_datasets("raw")) == 16


def test_bad_release_requests_write_nothing(ncsa):
    with ncsa.butler("NCSA") as b:
        before = repo_state(b)
    r = repo(ncsa)
    fails("release", "create", r, "DR1", "-c", "HSC/nowhere", match="HSC/nowhere")
    fails("release", "create", r, "DR1", "-c", "HSC/raw/all", "--where", "exposure = 1",
          match="would be empty")
    fails("release", "create", r, "HSC/raw/all", "-c", "HSC/raw/all", match="exists already")
    fails("release", "create", r, "bad name", "-c", "HSC/raw/all", match="bad name")
    fails("release", "show", r, "DR9", match="no release 'DR9'")
    fails("release", "diff", f"{r}:DR1", "DR2", match="REPO:NAME")
    with ncsa.butler("NCSA") as b:
        assert repo_state(b) == before
        assert b.registry.releases.names() == []


def test_two_releases_are_compared_by_what_differs(ncsa):
    r = repo(ncsa)
    fed("release", "create", r, "DR1", "-c", "HSC/defaults", "--where", "exposure = 903334")
    with ncsa.butler("NCSA") as b:  # a narrower validity for one bias since DR1
        b.decertify("HSC/calib/DM-1", "bias", Timespan.from_values("2013-07-01", None),
                    data_ids=[{"instrument": "HSC", "detector": 0}])
    fed("release", "create", r, "DR2", "-c", "HSC/defaults",
        "--where", "exposure IN (903334, 903335)")
    out = fed("release", "diff", f"{r}:DR1", f"{r}:DR2", code=1).stdout
    assert out.count("\n+ raw") == 4 and "903335" in out
    assert "~ bias {detector=0, instrument=HSC}" in out and "validity" in out
    assert "4 added, 0 removed, 1 changed" in out
    back = json.loads(fed("release", "diff", f"{r}:DR2", f"{r}:DR1", "--json",
                          code=1).stdout)
    assert len(back["removed"]) == 4 and not back["added"] and len(back["changed"]) == 1
    same = fed("release", "diff", f"{r}:DR1", f"{r}:DR1").stdout
    assert "0 added, 0 removed, 0 changed (0 tree nodes read)" in same


def test_the_tree_diff_reads_only_the_nodes_that_differ():
    """50,000 entries, 10 changed: the walk reads a few nodes per change and level, and
    finds exactly the changed entries."""
    lines = [f'{{"n":{i}}}'.encode() for i in range(50_000)]
    changed = list(lines)
    for i in range(0, 50_000, 5_000):
        changed[i] = f'{{"n":{i},"v":2}}'.encode()
    root_a, nodes_a = build(entry_hash(x) for x in lines)
    root_b, nodes_b = build(entry_hash(x) for x in changed)
    by_hash_a = {n.hash: n for n in nodes_a}
    by_hash_b = {n.hash: n for n in nodes_b}
    found = diff(root_a, root_b, by_hash_a.__getitem__, by_hash_b.__getitem__)
    assert sorted(found.only_a) == sorted(entry_hash(lines[i]) for i in range(0, 50_000, 5_000))
    assert len(found.only_b) == 10
    assert found.nodes_visited < 10 * 2 * 5, found.nodes_visited
    assert len(nodes_a) > 700  # ... out of a tree of this many


def test_a_release_is_held_only_once_verified(ncsa):
    r = repo(ncsa)
    fed("release", "create", r, "DR1", "-c", "HSC/defaults")
    assert "verified  never here" in fed("release", "show", r, "DR1").stdout
    done = fed("release", "verify", r, "DR1", "--jobs", "2").stdout
    assert "DR1 complete here: 20 files" in done and "0 missing, 0 corrupt" in done
    shown = json.loads(fed("release", "show", r, "DR1", "--json").stdout)
    assert shown["check"]["complete"] and shown["check"]["root"] == shown["root"]

    with ncsa.butler("NCSA") as b:
        raw = b.find_dataset("raw", instrument="HSC", exposure=903335, detector=2,
                             collections="DR1")
        bias = b.find_dataset("bias", instrument="HSC", detector=3, collections="DR1",
                              timespan=Timespan.from_values("2013-06-01", "2013-06-02"))
        raw_path = b.datastore.path_of(b.registry.datasets.file(raw.id)[0])
        bias_path = b.datastore.path_of(b.registry.datasets.file(bias.id)[0])
        before = repo_state(b)
    raw_path.write_bytes(raw_path.read_bytes()[::-1])  # same size, other bytes
    bias_path.unlink()
    found = json.loads(fed("release", "verify", r, "DR1", "--json", code=1).stdout)
    assert not found["complete"] and (found["missing"], found["corrupt"]) == (1, 1)
    assert {(p["kind"], p["dataset"]) for p in found["problems"]} == \
        {("corrupt", str(raw.id)), ("missing", str(bias.id))}
    text = fed("release", "verify", r, "DR1", code=1).stdout
    assert "corrupt: raw {detector=2, exposure=903335, instrument=HSC}" in text
    assert "the manifest's" in text and "DR1 INCOMPLETE here" in text
    assert "INCOMPLETE (1 missing, 1 corrupt)" in fed("release", "show", r, "DR1").stdout
    logged = [e for e in json.loads(fed("log", "NCSA", "--sites", ncsa.sites_dir,
                                        "--json").stdout)[0]["entries"]
              if e["operation"] == "verify"]
    assert [e["result"] for e in logged] == ["ok", "failed", "failed"]
    with ncsa.butler("NCSA") as b:
        assert repo_state(b) == before  # verifying changes nothing but its own record


def test_release_status_over_the_sites_and_diffs_by_site(ncsa):
    sites = ["--sites", ncsa.sites_dir]
    fed("release", "create", repo(ncsa), "DR1", "-c", "HSC/raw/all")
    states = {s["site"]: s["state"] for s in json.loads(
        fed("release", "status", "DR1", *sites, "--json").stdout)}
    assert states == {"NCSA": "unverified", "IN2P3": "absent", "Princeton": "absent",
                      "laptop": "absent"}
    fed("release", "verify", repo(ncsa), "DR1")
    repo(ncsa, "laptop").rename(ncsa.root / "laptop-away")  # the laptop is away
    shown = fed("release", "status", "DR1", *sites).stdout
    rows = {line.split()[0]: line for line in shown.splitlines()[2:]}
    assert "verified" in rows["NCSA"] and "16 files" in rows["NCSA"]
    assert "unreachable" in rows["laptop"] and "no repository" in rows["laptop"]
    assert "absent" in rows["IN2P3"]
    same = fed("release", "diff", "NCSA:DR1", f"{repo(ncsa)}:DR1", *sites).stdout
    assert "0 added, 0 removed, 0 changed" in same
    fails("release", "diff", "Elsewhere:DR1", "NCSA:DR1", *sites, match="unknown site")
    fails("release", "diff", "IN2P3:DR1", "NCSA:DR1", *sites, match="no release 'DR1'")


def test_a_release_is_made_where_its_data_is_owned(ncsa):
    """A replica cannot freeze its owner's data: it could not then apply the owner's
    deletions, and its sync edge would stop."""
    ncsa.sync("NCSA", "IN2P3")
    fails("release", "create", repo(ncsa, "IN2P3"), "DR1", "-c", "HSC/raw/all",
          match=["owned by site 'NCSA'", "owns its data"])
    with ncsa.butler("IN2P3") as b:
        assert b.registry.releases.names() == []
        assert not b.registry.collections.exists("DR1")


def test_an_interrupted_verification_resumes(ncsa, monkeypatch):
    """Ctrl-C after two chunks of 4 files: the next verification checks only the other
    12 files, keeps what the first found (a corrupt file among the first 8), and says so;
    --restart checks everything again."""
    from federation.faults import hooked
    from federation.operations.release import verify
    from federation.release import verify as verifying

    r = repo(ncsa)
    fed("release", "create", r, "DR1", "-c", "HSC/defaults")
    with ncsa.butler("NCSA") as b:
        first_bias = b.find_dataset("bias", instrument="HSC", detector=0, collections="DR1",
                                    timespan=Timespan.from_values("2013-06-01", "2013-06-02"))
        path = b.datastore.path_of(b.registry.datasets.file(first_bias.id)[0])
    path.write_bytes(path.read_bytes()[::-1])  # the first entry in key order
    monkeypatch.setattr(verifying, "CHUNK", 4)
    calls = []

    def stop_after_two() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with hooked("release files verified", stop_after_two), pytest.raises(KeyboardInterrupt):
        verify(r, "DR1")
    later = []
    with hooked("release files verified", lambda: later.append(1)):
        found = verify(r, "DR1")
    assert len(later) == 3  # the last 12 files only
    assert found.resumed == 8 and found.check.files == 20
    assert not found.check.complete and found.check.corrupt == 1
    assert [p.entry.id for p in found.problems] == [first_bias.id]
    path.write_bytes(path.read_bytes()[::-1])
    again = json.loads(fed("release", "verify", r, "DR1", "--restart", "--json").stdout)
    assert again["complete"] and again["resumed"] == 0 and again["files"] == 20
    assert not list((r / ".federation-verify").glob("*"))
