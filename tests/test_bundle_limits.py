"""Bundles that are whole but not sane: oversized lines, names no registry could hold,
absolute paths, files that do not match. Checked before any file moves; one `error:`
line; on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from test_bundles import export, fails, observe, read_lines, sites, write_lines
from test_cli import fed

from federation.sync.bundle.format import MAX_LINE


def datastore_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(("registry.sqlite3", ".federation"))
            and ".federation" not in p.parts[0]}


def first_dataset(lines: list[dict]) -> dict:
    return next(x for x in lines if x.get("kind") == "dataset" and x["file"])


def test_an_oversized_line_is_refused_before_it_is_read_whole(ncsa, tmp_path):
    files = tmp_path / "files"
    lines = read_lines(export(ncsa, tmp_path / "b.jsonl.gz", "0", "--with-files", files))
    collection = next(x for x in lines if x.get("kind") == "collection")
    collection["doc"] = "x" * (MAX_LINE + 10)
    bad = write_lines(tmp_path / "big.jsonl.gz", lines)
    before = observe(ncsa)
    fails("import", bad, "IN2P3", "--files-from", files, *sites(ncsa),
          match=["line longer than", "bytes"])
    assert observe(ncsa) == before


def test_names_no_registry_could_hold_are_refused_before_any_file_moves(ncsa, tmp_path):
    files = tmp_path / "files"
    lines = read_lines(export(ncsa, tmp_path / "b.jsonl.gz", "0", "--with-files", files))
    for line in lines:
        if line.get("kind") == "dataset" and line["run"] == "HSC/raw/all":
            line["run"] = "../../evil"
    bad = write_lines(tmp_path / "evil.jsonl.gz", lines)
    root = ncsa.root / "repos" / "IN2P3"
    before, files_before = observe(ncsa), datastore_files(root)
    fails("import", bad, "IN2P3", "--files-from", files, *sites(ncsa),
          match=["invalid dataset", "'../../evil'"])
    assert observe(ncsa) == before and datastore_files(root) == files_before


def test_absolute_paths_are_refused_in_any_bundle(ncsa, tmp_path):
    lines = read_lines(export(ncsa, tmp_path / "b.jsonl.gz", "0", "--no-files"))
    first_dataset(lines)["file"]["path"] = "/etc/passwd"
    bad = write_lines(tmp_path / "abs.jsonl.gz", lines)
    before = observe(ncsa)
    fails("import", bad, "IN2P3", *sites(ncsa), match="escapes the datastore root")
    assert observe(ncsa) == before


def test_a_consistent_forgery_says_so_on_stderr(ncsa, tmp_path):
    """The record and its manifest entry agree with each other, not with the file: the
    file is left out and the command ends with one `error:` line."""
    files = tmp_path / "files"
    lines = read_lines(export(ncsa, tmp_path / "b.jsonl.gz", "0", "--with-files", files))
    forged = first_dataset(lines)
    forged["file"]["checksum"] = "0" * 32
    entry = next(x for x in lines if x.get("kind") == "file" and x["id"] == forged["id"])
    entry["checksum"] = "0" * 32
    bad = write_lines(tmp_path / "forged.jsonl.gz", lines)
    result = fed("import", bad, "IN2P3", "--files-from", files, *sites(ncsa), code=1)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "did not match their records" in errors[0], result.stderr
    assert forged["id"] in result.stdout and "does not match its record" in result.stdout
    with ncsa.butler("IN2P3") as b:
        check = b.verify()
        assert check.ok and check.checked == 19
