"""Bundles: `fed export`, `fed import` and `fed bundle show`, on SQLite and PostgreSQL.

An export from NCSA imported into IN2P3 must leave IN2P3 as a direct sync
would (compared with a sync into Princeton); every damaged or out-of-order
bundle must fail with one ``error:`` line and change nothing at IN2P3.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import traceback
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from conftest import Federation, populate_ncsa, repo_state

from federation.cli.main import cli
from federation.sync.selection import Selection

SKIP_FILES = ("registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm",
              ".federation-sync.lock")


# -- helpers -------------------------------------------------------------------


def fed(*args, code: int = 0) -> Result:
    """Run `fed ARGS` in-process: exit status ``code``, no exception escaping."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    shown = " ".join(str(a) for a in args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"fed {shown} raised:\n"
                             + "".join(traceback.format_exception(*result.exc_info)))
    assert result.exit_code == code, (f"fed {shown} exited {result.exit_code}, not {code}\n"
                                      f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    assert "Traceback" not in result.output
    return result


def fails(*args, match: str | list[str]) -> str:
    """A command that must fail with exactly one ``error: ...`` line containing ``match``."""
    lines = fed(*args, code=1).stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for text in [match] if isinstance(match, str) else match:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def sites(federation: Federation) -> list[str]:
    return ["--sites", str(federation.sites_dir)]


def export(federation: Federation, path: Path, since="0", *extra) -> Path:
    fed("export", "NCSA", "--since", since, "-o", path, *extra, *sites(federation))
    return path


def import_(federation: Federation, bundle: Path, *extra, dest: str = "IN2P3") -> Result:
    return fed("import", bundle, dest, *extra, *sites(federation))


def cursor(federation: Federation, site: str = "IN2P3",
           selection: Selection | None = None) -> int | None:
    with federation.butler(site) as b:
        found = b.registry.cursors.get("pull", "NCSA", (selection or Selection()).key)
    return None if found is None else found.last_seq


def observe(federation: Federation, site: str = "IN2P3") -> dict:
    """Everything an import could change: records, journal, cursors, retries, files."""
    root = federation.root / "repos" / site
    with federation.butler(site) as b:
        t = b.registry.db.tables
        with b.registry.db.reading() as conn:
            cursors = sorted(tuple(r) for r in conn.execute(
                sa.select(t.sync_cursor.c.peer, t.sync_cursor.c.selection_key,
                          t.sync_cursor.c.last_seq)))
            retries = conn.execute(sa.select(sa.func.count()).select_from(t.sync_retry)).scalar()
        return {"state": repo_state(b), "journal": b.registry.db.last_seq(),
                "cursors": cursors, "retries": retries,
                "files": sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                                if p.is_file() and p.name not in SKIP_FILES)}


def read_lines(bundle: Path) -> list[dict]:
    opener = gzip.open if bundle.name.endswith(".gz") else open
    with opener(bundle, "rb") as f:
        return [json.loads(line) for line in f]


def write_lines(bundle: Path, lines: list, *, fix_trailer: bool = True) -> Path:
    """Write lines (dicts, or raw strings written as they are) as a gzip bundle."""
    raw = [(x if isinstance(x, str) else json.dumps(x, separators=(",", ":"))) + "\n"
           for x in lines]
    if fix_trailer:
        body = [r for r, x in zip(raw, lines, strict=True)
                if not (isinstance(x, dict) and x.get("kind") == "end")]
        digest = hashlib.sha256("".join(body).encode()).hexdigest()
        raw = body + [json.dumps({"kind": "end", "lines": len(body), "sha256": digest}) + "\n"]
    with gzip.open(bundle, "wb") as f:
        f.write("".join(raw).encode())
    return bundle


def add_changes(federation: Federation, tag: int) -> None:
    """New datasets in a new NCSA run, a removal, an untagging and a new doc."""
    with federation.butler("NCSA", run=f"HSC/runs/w{tag}") as b:
        for detector in range(2):
            b.put(np.full(3, float(tag + detector)), "bias", instrument="HSC",
                  detector=detector)
        raws = b.query_datasets("raw", "HSC/raw/all", where=f"exposure = {903333 + tag}")
        b.registry.datasets.disassociate("HSC/raw/good", [r for r in raws
                                                          if r.data_id["detector"] == 1])
        b.remove([r for r in raws if r.data_id["detector"] == 3])
        b.registry.collections.set_doc("HSC/calib", f"calibrations, revision {tag}")


@pytest.fixture
def ncsa(federation: Federation) -> Federation:
    populate_ncsa(federation)
    return federation


# -- export and import -----------------------------------------------------------


@pytest.mark.parametrize("files", ["with-files", "source-root"])
def test_import_matches_direct_sync(ncsa: Federation, tmp_path: Path, files: str) -> None:
    bundle = tmp_path / "ncsa.jsonl.gz"
    if files == "with-files":
        export(ncsa, bundle, "snapshot", "--with-files", tmp_path / "files")
        files_from = tmp_path / "files"
    else:
        export(ncsa, bundle)
        files_from = ncsa.root / "repos" / "NCSA"
    out = import_(ncsa, bundle, "--files-from", files_from).stdout
    assert "files transferred: 20" in out and "cursor now at source journal entry" in out
    ncsa.sync("NCSA", "Princeton")
    with ncsa.butler("IN2P3") as imported, ncsa.butler("Princeton") as synced:
        assert repo_state(imported) == repo_state(synced)
        assert imported.verify() == synced.verify()
    with ncsa.butler("NCSA") as source:
        assert cursor(ncsa) == cursor(ncsa, "Princeton") == source.registry.db.last_seq()


def test_incremental_reimport_and_plain_jsonl(ncsa: Federation, tmp_path: Path) -> None:
    files = tmp_path / "files"
    first = export(ncsa, tmp_path / "first.jsonl.gz", "0", "--with-files", files)
    import_(ncsa, first, "--files-from", files)
    ncsa.sync("NCSA", "Princeton")
    since = cursor(ncsa)
    add_changes(ncsa, 1)

    second = export(ncsa, tmp_path / "second.jsonl", str(since), "--with-files", files)
    assert not second.read_bytes().startswith(b"\x1f\x8b")  # plain JSON lines when named so
    header = read_lines(second)[0]
    assert header["format"] == "federation-bundle" and header["version"] == 1
    assert header["from_seq"] == since and not header["snapshot"]
    assert any(line.get("kind") == "dataset_removal" for line in read_lines(second))
    out = import_(ncsa, second, "--files-from", files).stdout
    assert "files transferred: 2" in out
    ncsa.sync("NCSA", "Princeton")
    with ncsa.butler("IN2P3") as imported, ncsa.butler("Princeton") as synced:
        assert repo_state(imported) == repo_state(synced)
    assert cursor(ncsa) == cursor(ncsa, "Princeton") == header["to_seq"]

    before = observe(ncsa)
    for bundle in (second, first):  # again, and an older snapshot: nothing changes
        out = import_(ncsa, bundle, "--files-from", files).stdout
        assert "insert" not in out and "files transferred" not in out
        assert observe(ncsa) == before


def test_selection_and_no_files(ncsa: Federation, tmp_path: Path) -> None:
    bundle = export(ncsa, tmp_path / "bias.jsonl.gz", "0", "-t", "bias", "--no-files")
    assert not [line for line in read_lines(bundle) if line.get("kind") == "file"]
    import_(ncsa, bundle)  # records only: no --files-from needed
    selection = Selection.make(dataset_types=["bias"], files=False)
    assert cursor(ncsa, selection=selection) is not None and cursor(ncsa) is None
    with ncsa.butler("IN2P3") as b:
        assert {r.dataset_type.name for r in b.query_datasets(
            None, ["HSC/calib/gen/DM-1"], find_first=False)} == {"bias"}
        ids = [r.id for r in b.query_datasets("bias", "HSC/calib/gen/DM-1")]
        assert all(b.registry.datasets.file(i)[1] == "NCSA" for i in ids)  # held at NCSA


def test_dry_run_and_conflict_change_nothing(ncsa: Federation, tmp_path: Path) -> None:
    bundle = export(ncsa, tmp_path / "b.jsonl.gz", "0", "--with-files", tmp_path / "f")
    before = observe(ncsa)
    out = import_(ncsa, bundle, "--files-from", tmp_path / "f", "--dry-run").stdout
    assert "would apply" in out and "insert" in out
    assert observe(ncsa) == before
    with ncsa.butler("IN2P3", run="HSC/raw/all") as b:  # IN2P3 has its own raw slot
        from conftest import insert_hsc_records

        insert_hsc_records(b.registry)
        b.registry.register_dataset_type("raw", ["exposure", "detector"], "NumpyArray")
        b.put(np.zeros(2), "raw", instrument="HSC", exposure=903334, detector=0)
    before = observe(ncsa)
    fails("import", bundle, "IN2P3", "--files-from", tmp_path / "f", *sites(ncsa),
          match="conflict")
    assert observe(ncsa) == before


def test_bundle_show(ncsa: Federation, tmp_path: Path) -> None:
    bundle = export(ncsa, tmp_path / "b.jsonl.gz")
    out = fed("bundle", "show", bundle).stdout
    assert "version 1" in out and "snapshot of NCSA" in out and "integrity: ok" in out
    assert "manifest: 20 file(s)" in out
    summary = json.loads(fed("bundle", "show", bundle, "--json").stdout)
    assert summary["integrity"] == "ok" and summary["manifest"]["files"] == 20
    assert summary["header"]["source"] == "NCSA" and summary["records"]["dataset"] >= 20
    shown = fed("bundle", "show", bundle, "--records").stdout
    records = [json.loads(x) for x in shown.splitlines()]
    distinct = {json.dumps(r, sort_keys=True) for r in records}  # batches repeat context
    assert len(distinct) == sum(summary["records"].values()) < len(records)
    assert {r["kind"] for r in records} == set(summary["records"])
    lines = read_lines(bundle)
    damaged = write_lines(tmp_path / "bad.jsonl.gz", lines[:-1], fix_trailer=False)
    out = fed("bundle", "show", damaged, code=1).stdout
    assert "integrity: FAILED" in out and "no end trailer" in out
    fails("bundle", "show", tmp_path / "missing.jsonl.gz", match="no bundle")


# -- bad input writes nothing ------------------------------------------------------


def _corrupt(lines: list[dict], case: str) -> list:
    lines = [dict(x) for x in lines]
    if case == "tampered":
        record = next(x for x in lines if x.get("kind") == "dataset" and x["file"])
        record["file"] = dict(record["file"], checksum="0" * 32)
    elif case == "malformed":
        index = next(i for i, x in enumerate(lines) if x.get("kind") == "dataset")
        lines[index] = '{"kind": "dataset", "id": '
    elif case == "bad record":
        index = next(i for i, x in enumerate(lines) if x.get("kind") == "tag")
        lines[index] = {"kind": "tag", "collection": "HSC/raw/good"}
    elif case == "escape":
        record = next(x for x in lines if x.get("kind") == "dataset" and x["file"])
        record["file"] = dict(record["file"], path="../../etc/passwd")
        entry = next(x for x in lines if x.get("kind") == "file" and x["id"] == record["id"])
        entry["path"] = "../../etc/passwd"
    elif case == "newer":
        lines[0]["version"] = 2
    elif case == "no batch_end":
        lines = [x for x in lines if x.get("kind") != "batch_end"]
    return lines


CASES = {  # case: (trailer recomputed, error text)
    "tampered": (False, "does not match any dataset record"),  # caught before the trailer
    "malformed": (True, "not valid JSON"),
    "bad record": (True, "malformed tag record"),
    "escape": (True, "escapes the datastore root"),
    "newer": (True, ["version 2", "version 1"]),
    "no batch_end": (True, "no batch_end"),
}


def test_damaged_bundles_write_nothing(ncsa: Federation, tmp_path: Path) -> None:
    files = tmp_path / "files"
    good = export(ncsa, tmp_path / "good.jsonl.gz", "0", "--with-files", files)
    lines = read_lines(good)
    before = observe(ncsa)
    data = good.read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    for size in (len(data) - 9, len(data) // 2, 20):  # cut bytes anywhere
        cut.write_bytes(data[:size])
        fails("import", cut, "IN2P3", "--files-from", files, *sites(ncsa),
              match=["cut.jsonl.gz", "truncated"])
    plain = tmp_path / "cut.jsonl"
    plain.write_bytes(gzip.decompress(data)[:-40])
    fails("import", plain, "IN2P3", "--files-from", files, *sites(ncsa), match="cut short")
    for case, (fix, match) in CASES.items():
        bad = write_lines(tmp_path / f"{case}.jsonl.gz", _corrupt(lines, case), fix_trailer=fix)
        fails("import", bad, "IN2P3", "--files-from", files, *sites(ncsa), match=match)
        assert observe(ncsa) == before, case
    assert observe(ncsa) == before
    import_(ncsa, good, "--files-from", files)  # the intact bundle still imports


def test_site_and_files_errors_write_nothing(ncsa: Federation, tmp_path: Path) -> None:
    files = tmp_path / "files"
    bundle = export(ncsa, tmp_path / "b.jsonl.gz", "0", "--with-files", files)
    before = observe(ncsa)
    fails("import", bundle, "CERN", "--files-from", files, *sites(ncsa),
          match="unknown site 'CERN'")
    fails("import", bundle, "IN2P3", *sites(ncsa), match=["20 file(s)", "--files-from"])
    fails("import", bundle, "NCSA", "--files-from", files, *sites(ncsa), match="itself")
    missing = next(p for p in files.rglob("*") if p.is_file())
    missing.unlink()
    fails("import", bundle, "IN2P3", "--files-from", files, *sites(ncsa),
          match=["missing from --files-from", missing.relative_to(files).as_posix()])
    assert observe(ncsa) == before
    fails("export", "NCSA", "--since", "10000", "-o", tmp_path / "x.jsonl.gz", *sites(ncsa),
          match="beyond NCSA's journal")
    fails("export", "NCSA", "--since", "yesterday", "-o", tmp_path / "x.jsonl.gz",
          *sites(ncsa), match="--since")
    fails("export", "NCSA", "--since", "0", "--no-files", "--with-files", files,
          "-o", tmp_path / "x.jsonl.gz", *sites(ncsa), match="--no-files")
    assert not (tmp_path / "x.jsonl.gz").exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_gap_writes_nothing(ncsa: Federation, tmp_path: Path) -> None:
    files = tmp_path / "files"
    with ncsa.butler("NCSA") as b:
        head = b.registry.db.last_seq()
    add_changes(ncsa, 1)
    journal = export(ncsa, tmp_path / "j.jsonl.gz", str(head), "--with-files", files)
    before = observe(ncsa)
    fails("import", journal, "IN2P3", "--files-from", files, *sites(ncsa),
          match=["never synced NCSA", "--since 0"])
    snapshot = export(ncsa, tmp_path / "s.jsonl.gz", "0", "--with-files", files)
    assert observe(ncsa) == before
    import_(ncsa, snapshot, "--files-from", files)
    synced = cursor(ncsa)
    add_changes(ncsa, 2)
    first = export(ncsa, tmp_path / "1.jsonl.gz", str(synced), "--with-files", files)
    with ncsa.butler("NCSA") as b:
        middle = b.registry.db.last_seq()
    add_changes(ncsa, 3)
    second = export(ncsa, tmp_path / "2.jsonl.gz", str(middle), "--with-files", files)
    before = observe(ncsa)
    fails("import", second, "IN2P3", "--files-from", files, *sites(ncsa),
          match=[f"--since {synced}", f"entry {middle}"])
    assert observe(ncsa) == before
    import_(ncsa, first, "--files-from", files)
    import_(ncsa, second, "--files-from", files)
    ncsa.sync("NCSA", "Princeton")
    with ncsa.butler("IN2P3") as imported, ncsa.butler("Princeton") as direct:
        assert repo_state(imported) == repo_state(direct)
