"""The `fed` command line, driven through click's CliRunner and as a real program.

Repository tests take ``db_url`` (conftest.py), so each runs on the embedded
SQLite registry and on PostgreSQL. User mistakes must give one ``error:`` line
on stderr (or click's usage error, exit 2), a non-zero exit, no traceback and
no change to the repository: :func:`snapshot` captures the journal head, the
datasets, the collections and every file under the repository root.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import xxhash
import yaml
from click.testing import CliRunner, Result
from conftest import HSC_RECORDS

from federation.cli.main import cli
from federation.config import RepoConfig
from federation.model import IdMode, make_dataset_id
from federation.registry.registry import Registry

FED = Path(sys.executable).parent / "fed"
RAW_RUN = "HSC/raw/all"
EXPOSURES = [903334, 903335, 903336, 903337]  # 903337 is HSC-I, the others HSC-R
DETECTORS = [0, 1]
REGISTRY_FILES = ("registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm")


# -- helpers -------------------------------------------------------------------


def fed(*args, code: int = 0, input: str | None = None) -> Result:
    """Run `fed ARGS` in-process; the exit status must be ``code`` and nothing may escape."""
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input)
    shown = " ".join(str(a) for a in args)
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    if escaped:
        raise AssertionError(f"fed {shown} raised:\n"
                             + "".join(traceback.format_exception(*result.exc_info)))
    assert result.exit_code == code, (
        f"fed {shown} exited {result.exit_code}, not {code}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    assert "Traceback" not in result.output
    return result


def fails(*args, match: str | list[str]) -> str:
    """Run a command that must fail with exactly one ``error: ...`` line naming ``match``."""
    result = fed(*args, code=1)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in [match] if isinstance(match, str) else match:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def usage_error(*args, match: str) -> str:
    """Run a command that click must refuse as bad usage (exit 2)."""
    result = fed(*args, code=2)
    assert "Error:" in result.stderr and match in result.stderr, result.stderr
    return result.stderr


def as_json(*args):
    """Run a command with --json and parse what it printed."""
    return json.loads(fed(*args, "--json").stdout)


def repo_files(repo: Path) -> list[str]:
    """Every file and symlink under the repository, except the SQLite registry itself."""
    return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name not in REGISTRY_FILES)


def last_seq(repo: Path) -> int:
    registry = Registry.open(RepoConfig.load(repo).db_url)
    try:
        return registry.db.last_seq()
    finally:
        registry.close()


def snapshot(repo: Path) -> tuple:
    """What a failed command must leave untouched."""
    return (last_seq(repo), as_json("query-datasets", repo, "--find-all"),
            as_json("query-collections", repo), repo_files(repo))


def uri_path(uri: str) -> Path:
    parsed = urlparse(uri)
    assert parsed.scheme == "file", uri
    return Path(unquote(parsed.path))


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_csv(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    return path


def write_raws(directory: Path, exposures=EXPOSURES, detectors=DETECTORS,
               name: str = "raws.csv") -> Path:
    """One small file per exposure x detector and a CSV table listing them."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [["file", "exposure", "detector"]]
    for exposure in exposures:
        for detector in detectors:
            file = f"HSCA{exposure}_{detector:03d}.dat"
            (directory / file).write_bytes(f"raw {exposure} {detector}\n".encode())
            rows.append([file, exposure, detector])
    return write_csv(directory / name, rows)


def raw_id(exposure: int, detector: int):
    """The UUID any site gives this raw when ingesting with --id-mode deterministic."""
    return str(make_dataset_id(IdMode.DETERMINISTIC, "raw", {
        "instrument": "HSC", "exposure": exposure, "detector": detector}))


@pytest.fixture
def repo(tmp_path: Path, db_url: str | None) -> Path:
    """An empty repository of site NCSA made by `fed create` (SQLite or PostgreSQL)."""
    root = tmp_path / "repo"
    args = ["create", root, "--site", "NCSA"] + (["--db", db_url] if db_url else [])
    assert "created repository" in fed(*args).stdout
    return root


@pytest.fixture
def hsc(repo: Path, tmp_path: Path) -> Path:
    """The repository with the HSC records, types raw and bias, and 8 raws in HSC/raw/all."""
    fed("insert-dimension-records", repo, write_yaml(tmp_path / "hsc.yaml", HSC_RECORDS))
    fed("register-dataset-type", repo, "raw", "Bytes", "exposure", "detector")
    fed("register-dataset-type", repo, "bias", "Bytes", "detector")
    table = write_raws(tmp_path / "incoming")
    out = fed("ingest-files", repo, "raw", RAW_RUN, table, "--data-id", "instrument=HSC",
              "--id-mode", "deterministic").stdout
    assert f"ingested 8 raw datasets into {RAW_RUN} (copy)" in out
    return repo


# -- help ----------------------------------------------------------------------

COMMANDS = {
    "create": ["REPO", "--db", "--site", "--universe", "--config"],
    "register-dataset-type": ["REPO", "NAME", "STORAGE_CLASS", "DIMENSIONS"],
    "insert-dimension-records": ["REPO", "FILE", "--dimension"],
    "register-collection": ["REPO", "NAME", "--type", "--doc"],
    "ingest-files": ["REPO", "DATASET_TYPE", "RUN", "TABLE", "--transfer", "--id-mode",
                     "--prefix", "--data-id"],
    "query-datasets": ["REPO", "DATASET_TYPES", "--collections", "--where", "--bind",
                       "--find-all", "--show-uri", "--json"],
    "query-collections": ["REPO", "PATTERNS", "--type", "--json"],
    "query-dimension-records": ["REPO", "DIMENSION", "--where", "--bind", "--json"],
    "query-dataset-types": ["REPO", "PATTERN", "--json"],
    "collection-chain": ["REPO", "PARENT", "CHILDREN", "--mode", "--doc"],
    "associate": ["REPO", "TAG", "--collections", "--dataset-type", "--where"],
    "certify-calibrations": ["REPO", "INPUT_RUN", "CALIBRATION_COLLECTION", "DATASET_TYPE",
                             "--begin-date", "--end-date", "--where"],
    "prune-datasets": ["REPO", "DATASET_TYPES", "--collections", "--where", "--dry-run",
                       "--yes"],
    "remove-runs": ["REPO", "PATTERNS", "--force", "--dry-run", "--yes"],
    "verify": ["REPO", "--collections", "--dataset-type", "--where", "--json"],
    "disassociate": ["REPO", "TAG", "--collections", "--dataset-type", "--where",
                     "datasets themselves stay"],
    "decertify": ["REPO", "COLLECTION", "DATASET_TYPE", "--begin-date", "--end-date", "--where",
                  "trimmed or split"],
    "remove-collections": ["REPO", "PATTERNS", "--force", "--dry-run", "--yes",
                           "fed remove-runs", "datasets stay"],
}


def test_help_lists_every_command():
    out = fed("--help").stdout
    assert "Usage:" in out and "--verbose" in out
    for name in COMMANDS:
        assert name in out
    assert fed("-h").stdout == out
    assert "version" in fed("--version").stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_mentions_its_arguments(command: str):
    out = fed(command, "--help").stdout
    assert out.startswith(f"Usage: cli {command} ") or f"{command} [OPTIONS]" in out
    for word in COMMANDS[command]:
        assert word in out, f"{word} missing from 'fed {command} --help'"


def test_missing_arguments_are_usage_errors():
    usage_error("create", match="Missing argument 'REPO'")
    usage_error("query-datasets", match="Missing argument 'REPO'")
    usage_error("no-such-command", match="No such command")


# -- create --------------------------------------------------------------------


def test_create_makes_an_empty_repository(repo: Path, db_url):
    assert (repo / "federation.yaml").is_file()
    assert (repo / "registry.sqlite3").exists() == (db_url is None)
    assert as_json("query-collections", repo) == []
    assert as_json("query-dataset-types", repo) == []
    assert as_json("query-datasets", repo) == []
    assert fed("query-collections", repo).stdout.strip() == "(none)"
    assert fed("verify", repo).stdout.strip() == "verified 0 files: 0 problems"


def test_create_on_existing_repository_is_refused(repo: Path, tmp_path: Path, db_url):
    before = snapshot(repo)
    config = (repo / "federation.yaml").read_text()
    fails("create", repo, match=[str(repo), "already a federation repository"])
    assert (repo / "federation.yaml").read_text() == config
    if db_url is not None:  # the same database behind another directory
        fails("create", tmp_path / "other", "--db", db_url,
              match="database already holds a federation registry")
        assert not (tmp_path / "other").exists()
    assert snapshot(repo) == before


def test_create_with_universe_and_config(tmp_path: Path, db_url):
    universe = write_yaml(tmp_path / "universe.yaml", {"version": 1, "dimensions": {
        "telescope": {"key": "string"},
        "camera": {"key": "int", "requires": ["telescope"], "metadata": {"label": "string"}},
    }})
    config = write_yaml(tmp_path / "config.yaml",
                        {"templates": {"image": "{run}/{telescope}/cam{camera}"}})
    root = tmp_path / "custom"
    fed("create", root, "--universe", universe, "--config", config, "--site", "RUBIN",
        *(["--db", db_url] if db_url else []))
    records = write_yaml(tmp_path / "cams.yaml", {"camera": [
        {"telescope": "T1", "camera": 7, "label": "seven"}]})
    assert "camera: 1 inserted" in fed("insert-dimension-records", root, records).stdout
    assert as_json("query-dimension-records", root, "telescope") == [{"telescope": "T1"}]
    fed("register-dataset-type", root, "image", "Bytes", "camera")
    (tmp_path / "img.dat").write_bytes(b"image")
    table = write_csv(tmp_path / "images.csv", [["file", "telescope", "camera"],
                                                ["img.dat", "T1", 7]])
    fed("ingest-files", root, "image", "night1", table)
    [ref] = as_json("query-datasets", root, "--show-uri")
    assert ref["data_id"] == {"telescope": "T1", "camera": 7}
    assert uri_path(ref["uri"]) == root / "night1" / "T1" / "cam7.dat"
    [coll] = as_json("query-collections", root)
    assert coll["owner_site"] == "RUBIN"
    fails("insert-dimension-records", root, write_yaml(tmp_path / "x.yaml", {"exposure": []}),
          match="unknown dimension 'exposure'")


BAD_UNIVERSES = {
    "not YAML": ("dimensions: [\n", "not valid YAML"),
    "no dimensions": ("version: 1\n", "must be a mapping with a 'dimensions' mapping"),
    "unknown reference": ("dimensions:\n  a: {requires: [b]}\n", "unknown dimension 'b'"),
    "bad key type": ("dimensions:\n  a: {key: float}\n", "key type must be one of"),
    "reserved name": ("dimensions:\n  run: {}\n", "'run' cannot be a dimension name"),
    "cycle": ("dimensions:\n  a: {requires: [b]}\n  b: {implies: [a]}\n", "cycle"),
    "not a mapping": ("dimensions:\n  a: 3\n", "must be a mapping"),
    "metadata list": ("dimensions:\n  a: {metadata: [x]}\n", "metadata"),
    "requires not a list": ("dimensions:\n  a: {requires: bb}\n  bb: {}\n", "requires"),
}


@pytest.mark.parametrize("case", sorted(BAD_UNIVERSES))
def test_create_with_bad_universe_writes_nothing(tmp_path: Path, case: str):
    text, message = BAD_UNIVERSES[case]
    universe = tmp_path / "universe.yaml"
    universe.write_text(text)
    fails("create", tmp_path / "repo", "--universe", universe, match=message)
    assert not (tmp_path / "repo").exists()


def test_create_with_bad_arguments_writes_nothing(tmp_path: Path, db_url):
    root = tmp_path / "repo"
    db = ["--db", db_url] if db_url else []
    fails("create", root, "--site", "bad site", *db, match="invalid site name 'bad site'")
    fails("create", root, "--db", "bogus://host/db", match="unsupported database 'bogus'")
    fails("create", root, "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none",
          match="cannot")
    bad_config = write_yaml(tmp_path / "config.yaml", {"templates": {"raw": "no-run-first"}})
    fails("create", root, "--config", bad_config, *db, match="must begin with '{run}'")
    extra = write_yaml(tmp_path / "extra.yaml", {"registry": {"db": "x"}})
    fails("create", root, "--config", extra, *db,
          match="may only hold a 'templates' mapping")
    usage_error("create", root, "--universe", tmp_path / "missing.yaml", match="does not exist")
    (tmp_path / "file").write_text("")
    usage_error("create", tmp_path / "file", match="is a file")
    assert not root.exists()
    fed("create", root, *db)  # the database was left empty too


NON_REPO_COMMANDS = [
    ["register-dataset-type", "{repo}", "raw", "Bytes", "detector"],
    ["register-collection", "{repo}", "tag"],
    ["ingest-files", "{repo}", "raw", "run", "{table}"],
    ["query-datasets", "{repo}"],
    ["query-collections", "{repo}"],
    ["query-dimension-records", "{repo}", "detector"],
    ["query-dataset-types", "{repo}"],
    ["collection-chain", "{repo}", "chain"],
    ["associate", "{repo}", "tag", "-c", "run"],
    ["certify-calibrations", "{repo}", "run", "calib", "bias"],
    ["prune-datasets", "{repo}", "-c", "run", "--yes"],
    ["remove-runs", "{repo}", "run", "--yes"],
    ["verify", "{repo}"],
    ["insert-dimension-records", "{repo}", "{records}"],
    ["disassociate", "{repo}", "tag", "-c", "run"],
    ["decertify", "{repo}", "calib", "bias"],
    ["remove-collections", "{repo}", "tag", "--yes"],
]


@pytest.mark.parametrize("missing", [True, False], ids=["missing", "plain-directory"])
def test_commands_on_a_non_repository(tmp_path: Path, missing: bool):
    target = tmp_path / "nothing"
    if not missing:
        target.mkdir()
    table = write_raws(tmp_path / "in", [903334], [0])
    records = write_yaml(tmp_path / "r.yaml", {"detector": [{"instrument": "HSC",
                                                             "detector": 0}]})
    for command in NON_REPO_COMMANDS:
        args = [a.format(repo=target, table=table, records=records) for a in command]
        line = fails(*args, match=[str(target), "is not a federation repository"])
        assert ("fed create" in line) == missing
    assert target.exists() != missing and list(tmp_path.glob("nothing/*")) == []
    # -v shows the traceback instead
    result = CliRunner().invoke(cli, ["-v", "query-datasets", str(target)])
    assert type(result.exception).__name__ == "ConfigError"


# -- dataset types -------------------------------------------------------------


def test_register_dataset_type(repo: Path):
    out = fed("register-dataset-type", repo, "calexp", "FitsImage", "visit", "detector").stdout
    assert out.strip() == "registered: calexp(instrument, detector, visit) -> FitsImage"
    out = fed("register-dataset-type", repo, "calexp", "FitsImage", "detector", "visit").stdout
    assert out.startswith("already registered: calexp(")
    fed("register-dataset-type", repo, "summary", "JSON", "visit")
    fed("register-dataset-type", repo, "skyconfig", "YAML")
    assert as_json("query-dataset-types", repo) == [
        {"name": "calexp", "storage_class": "FitsImage",
         "dimensions": ["instrument", "band", "physical_filter", "detector", "day_obs", "visit"]},
        {"name": "skyconfig", "storage_class": "YAML", "dimensions": []},
        {"name": "summary", "storage_class": "JSON",
         "dimensions": ["instrument", "band", "physical_filter", "day_obs", "visit"]},
    ]
    assert [t["name"] for t in as_json("query-dataset-types", repo, "s*")] == [
        "skyconfig", "summary"]
    assert as_json("query-dataset-types", repo, "nothing*") == []
    table = fed("query-dataset-types", repo, "calexp").stdout.splitlines()
    assert table[0].split() == ["name", "dimensions", "storage", "class"]
    assert table[2].split() == ["calexp", "instrument,", "detector,", "visit", "FitsImage"]


def test_register_dataset_type_errors_write_nothing(repo: Path):
    fed("register-dataset-type", repo, "raw", "Bytes", "exposure", "detector")
    before = snapshot(repo)
    fails("register-dataset-type", repo, "raw", "JSON", "exposure", "detector",
          match=["'raw' is already registered as raw(instrument, detector, exposure) -> Bytes",
                 "-> JSON"])
    fails("register-dataset-type", repo, "raw", "Bytes", "exposure",
          match="already registered")
    fails("register-dataset-type", repo, "flat", "Pixels", "detector",
          match=["unknown storage class 'Pixels'", "FitsImage"])
    fails("register-dataset-type", repo, "flat", "Bytes", "ccd",
          match="unknown dimension(s) ccd")
    fails("register-dataset-type", repo, "9lives", "Bytes", match="invalid dataset type name")
    usage_error("register-dataset-type", repo, "flat", match="Missing argument 'STORAGE_CLASS'")
    assert snapshot(repo) == before
    assert [t["name"] for t in as_json("query-dataset-types", repo)] == ["raw"]


# -- dimension records ---------------------------------------------------------


def test_insert_dimension_records_yaml_mapping_list_and_csv(repo: Path, tmp_path: Path):
    mapping = write_yaml(tmp_path / "hsc.yaml", HSC_RECORDS)
    out = fed("insert-dimension-records", repo, mapping).stdout.splitlines()
    assert out == ["instrument: 1 inserted, 0 already present",
                   "physical_filter: 2 inserted, 0 already present",
                   "detector: 4 inserted, 0 already present",
                   "day_obs: 1 inserted, 0 already present",
                   "exposure: 4 inserted, 0 already present",
                   "visit: 4 inserted, 0 already present"]
    seq = last_seq(repo)
    out = fed("insert-dimension-records", repo, mapping).stdout
    assert "exposure: 0 inserted, 4 already present" in out
    assert last_seq(repo) == seq  # identical records: nothing written

    listed = write_yaml(tmp_path / "more.yaml", [
        {"instrument": "HSC", "detector": 4, "full_name": "1_04", "purpose": "SCIENCE"},
        {"instrument": "HSC", "detector": 0, "full_name": "1_00", "purpose": "SCIENCE"}])
    out = fed("insert-dimension-records", repo, listed, "--dimension", "detector").stdout
    assert out.strip() == "detector: 1 inserted, 1 already present"

    (tmp_path / "more.csv").write_text(
        "# detectors added later\n"
        "instrument,detector,full_name,purpose\n"
        "HSC,5,1_05,FOCUS\n"
        "HSC, 6 ,1_06,\n")
    out = fed("insert-dimension-records", repo, tmp_path / "more.csv", "--dimension",
              "detector").stdout
    assert out.strip() == "detector: 2 inserted, 0 already present"

    detectors = as_json("query-dimension-records", repo, "detector")
    assert [d["detector"] for d in detectors] == [0, 1, 2, 3, 4, 5, 6]
    assert detectors[5] == {"instrument": "HSC", "detector": 5, "full_name": "1_05",
                            "purpose": "FOCUS"}
    assert detectors[6]["purpose"] is None
    assert as_json("query-dimension-records", repo, "detector", "--where",
                   "detector > 4 AND purpose = 'FOCUS'") == [detectors[5]]
    assert as_json("query-dimension-records", repo, "detector", "--where",
                   "full_name = :name", "--bind", "name=1_06") == [detectors[6]]
    assert as_json("query-dimension-records", repo, "band") == [{"band": "i"}, {"band": "r"}]

    exposures = as_json("query-dimension-records", repo, "exposure", "--where",
                        "physical_filter = 'HSC-I'")
    assert exposures == [{
        "instrument": "HSC", "exposure": 903337, "physical_filter": "HSC-I",
        "day_obs": 20130617, "obs_id": "HSCA903337", "exposure_time": 30.0,
        "observation_type": "science",
        "timespan": {"begin": "2013-06-17T13:03:00", "end": "2013-06-17T13:03:30"}}]
    table = fed("query-dimension-records", repo, "exposure", "--where",
                "exposure IN (903334..903335)").stdout.splitlines()
    assert table[0].split()[:3] == ["instrument", "exposure", "physical_filter"]
    assert len(table) == 4
    assert "2013-06-17T13:00:00 .. 2013-06-17T13:00:30" in table[2]
    assert fed("query-dimension-records", repo, "tract").stdout.strip() == "(none)"


def test_insert_dimension_records_errors_write_nothing(repo: Path, tmp_path: Path):
    fed("insert-dimension-records", repo, write_yaml(tmp_path / "hsc.yaml", HSC_RECORDS))
    before = snapshot(repo)

    def bad(name: str, text: str, *extra, match):
        path = tmp_path / name
        path.write_text(text)
        fails("insert-dimension-records", repo, path, *extra, match=match)

    bad("broken.yaml", "detector: [{instrument: HSC\n", match="broken.yaml is not valid YAML")
    bad("scalar.yaml", "just text\n", match="must hold a list of records or a mapping")
    bad("list.yaml", "- {instrument: HSC, detector: 9}\n", match="--dimension")
    bad("nolist.yaml", "detector: {instrument: HSC}\n", match="must hold a list of records")
    bad("short.csv", "instrument,detector,full_name\nHSC,9\n", "--dimension", "detector",
        match="short.csv:2: wrong number of columns")
    bad("long.csv", "instrument,detector\nHSC,9\nHSC,10,x\n", "--dimension", "detector",
        match="long.csv:3: wrong number of columns")
    bad("quote.csv", 'instrument,detector,full_name\nHSC,9,"1_09\n', "--dimension", "detector",
        match="quote.csv is not valid CSV")
    bad("empty.csv", "", "--dimension", "detector", match="empty.csv is empty")
    bad("nodim.csv", "instrument,detector\nHSC,9\n", match="name it with --dimension")
    bad("missing.yaml", "detector:\n- {instrument: HSC, detector: 9}\n- {instrument: HSC}\n",
        match="detector record {'instrument': 'HSC'} is missing 'detector'")
    bad("unknown.yaml", "detector:\n- {instrument: HSC, detector: 9, colour: red}\n",
        match="unknown field(s) colour in detector record")
    bad("notint.csv", "instrument,detector\nHSC,nine\n", "--dimension", "detector",
        match="dimension 'detector' needs an integer, got 'nine'")
    bad("conflict.yaml", "detector:\n- {instrument: HSC, detector: 0, full_name: renamed}\n",
        match=["detector record for instrument='HSC', detector=0 differs from the stored one",
               "renamed"])
    bad("twice.yaml", "detector:\n- {instrument: HSC, detector: 9, full_name: a}\n"
        "- {instrument: HSC, detector: 9, full_name: b}\n",
        match="two different detector records for instrument='HSC', detector=9")
    bad("dangling.yaml", "exposure:\n- {instrument: HSC, exposure: 1, physical_filter: HSC-Z,"
        " day_obs: 20130617}\n", match="refers to physical_filter")
    bad("nosuch.yaml", "ccd:\n- {ccd: 1}\n", match="unknown dimension 'ccd'")
    bad("badtime.yaml", "exposure:\n- {instrument: HSC, exposure: 1, physical_filter: HSC-R,"
        " day_obs: 20130617, timespan_begin: yesterday}\n", match="invalid time 'yesterday'")
    # Good records before a bad one in the same file: all or nothing.
    bad("partly.yaml", "detector:\n- {instrument: HSC, detector: 50}\n"
        "exposure:\n- {instrument: HSC, exposure: 903334, physical_filter: HSC-I,"
        " day_obs: 20130617}\n", match="exposure record for instrument='HSC', exposure=903334")
    usage_error("insert-dimension-records", repo, tmp_path / "absent.yaml",
                match="does not exist")
    assert snapshot(repo) == before
    assert len(as_json("query-dimension-records", repo, "detector")) == 4


# -- collections ---------------------------------------------------------------


def test_register_and_query_collections(repo: Path):
    assert fed("register-collection", repo, "HSC/tags/good", "--doc", "good seeing"
               ).stdout.strip() == "created: HSC/tags/good (TAGGED)"
    assert fed("register-collection", repo, "HSC/runs/a", "--type", "RUN").stdout.startswith(
        "created: HSC/runs/a (RUN)")
    fed("register-collection", repo, "HSC/calib", "--type", "CALIBRATION")
    fed("collection-chain", repo, "HSC/defaults", "HSC/runs/a", "HSC/calib")
    assert fed("register-collection", repo, "HSC/tags/good").stdout.startswith("exists:")
    seq = last_seq(repo)
    fed("register-collection", repo, "HSC/tags/good", "--doc", "very good seeing")
    assert last_seq(repo) == seq + 1

    assert as_json("query-collections", repo) == [
        {"name": "HSC/calib", "type": "CALIBRATION", "owner_site": "NCSA", "doc": ""},
        {"name": "HSC/defaults", "type": "CHAINED", "owner_site": "NCSA", "doc": "",
         "children": ["HSC/runs/a", "HSC/calib"]},
        {"name": "HSC/runs/a", "type": "RUN", "owner_site": "NCSA", "doc": ""},
        {"name": "HSC/tags/good", "type": "TAGGED", "owner_site": "NCSA",
         "doc": "very good seeing"},
    ]
    names = [c["name"] for c in as_json("query-collections", repo, "--type", "RUN",
                                        "--type", "TAGGED")]
    assert names == ["HSC/runs/a", "HSC/tags/good"]
    assert [c["name"] for c in as_json("query-collections", repo, "HSC/tags/*",
                                       "HSC/c*", "HSC/tags/good")] == [
        "HSC/tags/good", "HSC/calib"]
    assert as_json("query-collections", repo, "--type", "CHAINED", "HSC/r*") == []
    table = fed("query-collections", repo, "HSC/defaults").stdout.splitlines()
    assert table[0].split() == ["name", "type", "owner", "children", "doc"]
    assert table[2].split() == ["HSC/defaults", "CHAINED", "NCSA", "HSC/runs/a,", "HSC/calib"]

    before = snapshot(repo)
    fails("register-collection", repo, "HSC/tags/good", "--type", "RUN",
          match="collection 'HSC/tags/good' already exists as TAGGED")
    fails("register-collection", repo, "bad name", match="invalid collection name 'bad name'")
    fails("register-collection", repo, "a//b", match="invalid collection name")
    usage_error("register-collection", repo, "x", "--type", "CHAINED", match="--type")
    usage_error("query-collections", repo, "--type", "BOGUS", match="--type")
    assert snapshot(repo) == before


def test_collection_chain_modes(repo: Path):
    for name in ("a", "b", "c", "d"):
        fed("register-collection", repo, name, "--type", "RUN")

    def chain(*args) -> str:
        return fed("collection-chain", repo, "chain", *args).stdout.strip()

    assert chain("a", "b", "--doc", "the chain") == "chain -> [a, b]"
    assert chain("c", "a", "--mode", "extend") == "chain -> [a, b, c]"
    assert chain("d", "b", "--mode", "prepend") == "chain -> [d, b, a, c]"
    assert chain("b", "c", "--mode", "remove") == "chain -> [d, a]"
    assert chain("--mode", "pop") == "chain -> [a]"
    assert chain("b", "c", "d", "--mode", "extend") == "chain -> [a, b, c, d]"
    assert chain("--mode", "pop", "--", "-1", "1") == "chain -> [a, c]"
    assert chain("c", "b") == "chain -> [c, b]"
    assert chain("--mode", "redefine") == "chain -> []"
    assert chain("a", "--doc", "new doc") == "chain -> [a]"
    fed("collection-chain", repo, "outer", "chain", "d")
    [coll] = as_json("query-collections", repo, "chain")
    assert coll == {"name": "chain", "type": "CHAINED", "owner_site": "NCSA", "doc": "new doc",
                    "children": ["a"]}
    assert as_json("query-collections", repo, "outer")[0]["children"] == ["chain", "d"]

    before = snapshot(repo)
    fails("collection-chain", repo, "chain", "outer",
          match="chain 'chain' cannot contain 'outer': that would form a cycle")
    fails("collection-chain", repo, "chain", "chain", match="would form a cycle")
    fails("collection-chain", repo, "chain", "nosuch", match="no collection named 'nosuch'")
    fails("collection-chain", repo, "chain", "a", "a", match="would list a collection twice")
    fails("collection-chain", repo, "chain", "b", "--mode", "remove",
          match="b not in chain 'chain'")
    fails("collection-chain", repo, "chain", "3", "--mode", "pop",
          match="chain 'chain' has 1 children")
    fails("collection-chain", repo, "chain", "first", "--mode", "pop",
          match="pop takes child positions (integers)")
    fails("collection-chain", repo, "a", "b", match="collection 'a' already exists as RUN")
    fails("collection-chain", repo, "new/chain", "nosuch", match="no collection named 'nosuch'")
    usage_error("collection-chain", repo, "chain", "--mode", "append", match="--mode")
    assert snapshot(repo) == before


# -- ingest --------------------------------------------------------------------


def test_ingest_files_with_deterministic_ids(hsc: Path, tmp_path: Path):
    refs = as_json("query-datasets", hsc, "raw", "-c", RAW_RUN)
    assert len(refs) == 8
    expected = {raw_id(e, d): (e, d) for e in EXPOSURES for d in DETECTORS}
    assert {r["id"] for r in refs} == set(expected)
    by_id = {r["id"]: r for r in refs}
    assert by_id[raw_id(903337, 1)] == {
        "id": raw_id(903337, 1), "dataset_type": "raw", "run": RAW_RUN,
        "data_id": {"instrument": "HSC", "band": "i", "physical_filter": "HSC-I",
                    "detector": 1, "day_obs": 20130617, "exposure": 903337}}
    # copy leaves the sources in place
    assert len(list((tmp_path / "incoming").glob("*.dat"))) == 8
    assert fed("verify", hsc).stdout.strip() == "verified 8 files: 0 problems"

    # Another site ingesting the same files gets the same IDs.
    other = tmp_path / "other"
    fed("create", other, "--site", "IN2P3")
    fed("insert-dimension-records", other, tmp_path / "hsc.yaml")
    fed("register-dataset-type", other, "raw", "Bytes", "exposure", "detector")
    fed("ingest-files", other, "raw", "raw/any", tmp_path / "incoming" / "raws.csv",
        "--data-id", "instrument=HSC", "--id-mode", "deterministic")
    assert {r["id"] for r in as_json("query-datasets", other)} == set(expected)

    # Deterministic IDs exist already: refused, nothing written.
    before = snapshot(hsc)
    fails("ingest-files", hsc, "raw", "HSC/raw/again", tmp_path / "incoming" / "raws.csv",
          "--data-id", "instrument=HSC", "--id-mode", "deterministic", match="already exists")
    assert snapshot(hsc) == before


def test_ingest_files_transfer_modes(hsc: Path, tmp_path: Path):
    for transfer in ("copy", "move", "hardlink", "symlink", "direct"):
        source = tmp_path / transfer
        table = write_raws(source, [903334, 903335], [0])
        run = f"HSC/raw/{transfer}"
        out = fed("ingest-files", hsc, "raw", run, table, "--transfer", transfer,
                  "--data-id", "instrument=HSC").stdout
        assert out.strip() == f"ingested 2 raw datasets into {run} ({transfer})"
        refs = as_json("query-datasets", hsc, "raw", "-c", run, "--show-uri")
        assert [r["data_id"]["exposure"] for r in refs] == [903334, 903335]
        for ref in refs:
            path = uri_path(ref["uri"])
            original = source / f"HSCA{ref['data_id']['exposure']}_000.dat"
            assert path.read_bytes() == f"raw {ref['data_id']['exposure']} 0\n".encode()
            if transfer == "direct":
                assert path == original
            else:
                assert path.is_relative_to(hsc / run)
            assert original.exists() == (transfer != "move"), transfer
            if transfer == "hardlink":
                assert path.stat().st_ino == original.stat().st_ino
            assert path.is_symlink() == (transfer == "symlink"), transfer
    assert fed("verify", hsc, "-c", "HSC/raw/*", "--where", "detector = 0").stdout.strip() == \
        "verified 14 files: 0 problems"
    # Removing datasets leaves files ingested in place ("direct") alone.
    fed("remove-runs", hsc, "HSC/raw/direct", "HSC/raw/symlink", "--yes")
    assert (tmp_path / "direct" / "HSCA903334_000.dat").exists()
    assert (tmp_path / "symlink" / "HSCA903334_000.dat").exists()


def test_ingest_files_table_forms(hsc: Path, tmp_path: Path):
    # A YAML table, paths relative to --prefix, data ID values per row and common.
    data = tmp_path / "data"
    write_raws(data, [903336], [0, 1])
    table = write_yaml(tmp_path / "table.yaml", [
        {"file": "HSCA903336_000.dat", "detector": 0},
        {"file": str(data / "HSCA903336_001.dat"), "detector": 1, "exposure": 903336},
    ])
    fed("ingest-files", hsc, "raw", "yaml/run", table, "--prefix", data,
        "--data-id", "instrument=HSC", "--data-id", "exposure=903336")
    refs = as_json("query-datasets", hsc, "-c", "yaml/run")
    assert [(r["data_id"]["exposure"], r["data_id"]["detector"]) for r in refs] == [
        (903336, 0), (903336, 1)]
    # A bias table with only the file column (saved with a byte-order mark, as spreadsheet
    # programs do): everything else common.
    (tmp_path / "bias.csv").write_text("file\ndata/HSCA903336_000.dat\n", encoding="utf-8-sig")
    fed("ingest-files", hsc, "bias", "calib/run", tmp_path / "bias.csv",
        "--data-id", "instrument=HSC", "--data-id", "detector=3", "--id-mode",
        "deterministic-run")
    [bias] = as_json("query-datasets", hsc, "bias")
    assert bias["data_id"] == {"instrument": "HSC", "detector": 3}
    assert bias["run"] == "calib/run"


def test_ingest_files_errors_leave_nothing(hsc: Path, tmp_path: Path):
    src = tmp_path / "bad"
    write_raws(src, [903336], [0, 1])
    before = snapshot(hsc)
    files_before = sorted(p.name for p in src.iterdir())

    def bad(rows, *extra, match, run="HSC/raw/new", name="table.csv"):
        table = src / name
        if isinstance(rows, list):
            write_csv(table, rows)
        else:
            table.write_text(rows)
        for target in (run, RAW_RUN):  # a new run and an existing one
            fails("ingest-files", hsc, "raw", target, table, "--data-id", "instrument=HSC",
                  *extra, match=match)
        table.unlink()

    header = ["file", "exposure", "detector"]
    good = ["HSCA903336_000.dat", 903336, 0]
    for transfer in ("copy", "move", "hardlink", "symlink", "direct"):
        bad([header, good, ["absent.dat", 903336, 1]], "--transfer", transfer,
            match=["cannot read", "absent.dat", "No such file or directory"])
        bad([header, good, ["HSCA903336_001.dat", 999, 1]], "--transfer", transfer,
            match="no exposure record for instrument='HSC', exposure=999")
    bad([header, good, ["HSCA903336_001.dat", "x", 1]],
        match="dimension 'exposure' needs an integer, got 'x'")
    bad([["file", "exposure"], ["HSCA903336_000.dat", 903336]],
        match="is missing detector")
    bad([header, good, ["HSCA903336_001.dat", 903336, 0]],
        match="two datasets with the same type and data ID")
    bad([header, good, ["HSCA903336_001.dat", 903336, 1, "extra"]],
        match="table.csv:3: wrong number of columns")
    bad([header, ["", 903336, 1]], match="row 1 has no 'file' value")
    bad([header], match="lists no files")
    bad("file,exposure,detector\n\"HSCA903336_000.dat,903336,0\n", match="is not valid CSV")
    bad("- [not, a, row]\n", match="must hold a list of rows", name="table.yaml")
    bad("- {file: [a, b], exposure: 903336, detector: 0}\n", match="'file' must be a path",
        name="table.yaml")
    table = write_csv(src / "ok.csv", [header, good])
    fails("ingest-files", hsc, "nosuch", "HSC/raw/new", table, "--data-id", "instrument=HSC",
          match="no dataset type named 'nosuch'")
    fails("ingest-files", hsc, "raw", "bad run!", table, "--data-id", "instrument=HSC",
          match="invalid collection name")
    fails("ingest-files", hsc, "raw", "HSC/raw/new", table, "--data-id", "instrument",
          match="--data-id 'instrument' must look like key=value")
    fails("ingest-files", hsc, "raw", "HSC/raw/new", table, "--data-id", "instrument=HSC",
          "--data-id", "visit=903336", match="data ID has dimension(s) visit that are not")
    assert snapshot(hsc) == before
    fed("register-collection", hsc, "HSC/tag")
    before = snapshot(hsc)
    fails("ingest-files", hsc, "raw", "HSC/tag", table, "--data-id", "instrument=HSC",
          match="collection 'HSC/tag' is TAGGED, not RUN")
    usage_error("ingest-files", hsc, "raw", "r", table, "--transfer", "teleport",
                match="--transfer")
    usage_error("ingest-files", hsc, "raw", "r", table, "--id-mode", "sequential",
                match="--id-mode")
    usage_error("ingest-files", hsc, "raw", "r", src / "absent.csv", match="does not exist")
    assert snapshot(hsc) == before
    assert sorted(p.name for p in src.iterdir()) == sorted([*files_before, "ok.csv"])


# -- queries -------------------------------------------------------------------


@pytest.fixture
def rerun(hsc: Path, tmp_path: Path) -> Path:
    """hsc plus a rerun of exposure 903334 in HSC/raw/rerun, and HSC/defaults = [rerun, all]."""
    table = write_raws(tmp_path / "rerun", [903334], DETECTORS)
    fed("ingest-files", hsc, "raw", "HSC/raw/rerun", table, "--data-id", "instrument=HSC")
    fed("collection-chain", hsc, "HSC/defaults", "HSC/raw/rerun", RAW_RUN)
    return hsc


def test_query_datasets(rerun: Path):
    repo = rerun

    def found(*args) -> list[tuple[str, int, int]]:
        return [(r["run"], r["data_id"]["exposure"], r["data_id"]["detector"])
                for r in as_json("query-datasets", repo, *args)]

    # Default: every collection (in name order) as one search path, first match per data ID.
    assert found() == found("raw", "-c", "*")
    assert {run for run, exposure, _ in found() if exposure == 903334} == {"HSC/raw/rerun"}
    assert len(found()) == 8
    assert len(found("--find-all")) == 10
    assert found("raw", "-c", RAW_RUN, "--where", "exposure = 903334") == [
        (RAW_RUN, 903334, 0), (RAW_RUN, 903334, 1)]
    first = found("raw", "-c", "HSC/defaults", "--where", "detector = 0")
    assert first == [("HSC/raw/rerun", 903334, 0), (RAW_RUN, 903335, 0),
                     (RAW_RUN, 903336, 0), (RAW_RUN, 903337, 0)]
    every = found("raw", "-c", "HSC/defaults", "--where", "detector = 0", "--find-all")
    assert sorted(every) == sorted(first + [(RAW_RUN, 903334, 0)])
    assert found("r?w", "-c", "HSC/defaults", "--where", "band = 'i'") == [
        (RAW_RUN, 903337, 0), (RAW_RUN, 903337, 1)]
    assert found("raw", "-c", RAW_RUN, "--where",
                 "exposure.observation_type = 'science' AND exposure IN (903335..903337:2)"
                 " AND detector != 1") == [(RAW_RUN, 903335, 0), (RAW_RUN, 903337, 0)]
    assert found("raw", "-c", RAW_RUN, "--where", "exposure = :e AND detector = :d",
                 "--bind", "e=903336", "--bind", "d=1") == [(RAW_RUN, 903336, 1)]
    assert found("raw", "-c", RAW_RUN, "--where", "physical_filter = :f AND detector = 0",
                 "--bind", "f=HSC-I") == [(RAW_RUN, 903337, 0)]
    assert found("bias") == []
    assert found("raw", "-c", "HSC/raw/re*") == [("HSC/raw/rerun", 903334, 0),
                                                 ("HSC/raw/rerun", 903334, 1)]

    refs = as_json("query-datasets", repo, "raw", "-c", RAW_RUN, "--show-uri", "--where",
                   "exposure = 903337 AND detector = 1")
    assert refs[0]["id"] == raw_id(903337, 1)
    assert uri_path(refs[0]["uri"]).read_bytes() == b"raw 903337 1\n"

    table = fed("query-datasets", repo, "raw", "-c", RAW_RUN, "--where",
                "exposure = 903337").stdout.splitlines()
    assert table[0].split() == ["type", "run", "id", "data", "ID"]
    assert set(table[1]) <= {"-", " "}
    assert table[2].split() == ["raw", RAW_RUN, raw_id(903337, 0), "instrument=HSC",
                                "detector=0", "exposure=903337"]
    assert len(table) == 4
    table = fed("query-datasets", repo, "raw", "-c", RAW_RUN, "--show-uri", "--where",
                "exposure = 903337 AND detector = 0").stdout.splitlines()
    assert table[0].split()[-1] == "uri"
    assert table[2].split()[-1].startswith(f"file://{repo}/{RAW_RUN}/raw/")
    assert fed("query-datasets", repo, "bias").stdout.strip() == "(none)"


def test_query_errors(rerun: Path):
    repo = rerun
    before = snapshot(repo)
    fails("query-datasets", repo, "flat", match="no dataset type named 'flat'")
    fails("query-datasets", repo, "raw", "-c", "nosuch", match="no collection named 'nosuch'")
    line = fails("query-datasets", repo, "--where", "exposure = ",
                 match="cannot parse where expression")
    assert "column 11" in line
    line = fails("query-datasets", repo, "--where", "exposure = 903334 AND (detector",
                 match="column")
    fails("query-datasets", repo, "--where", "exposure = 'abc", match="unterminated string")
    fails("query-datasets", repo, "--where", "colour = 'red'",
          match="unknown dimension 'colour' in where expression")
    fails("query-datasets", repo, "--where", "exposure.colour = 'red'",
          match="unknown field exposure.colour")
    fails("query-datasets", repo, "--where", "exposure = :e",
          match="no value given for bind parameter :e")
    fails("query-datasets", repo, "--where", "exposure = :e", "--bind", "e",
          match="--bind 'e' must look like key=value")
    fails("query-datasets", repo, "--where", "exposure = :e", "--bind", "=3",
          match="must look like key=value")
    fails("query-datasets", repo, "--where", "exposure IN (5..1)", match="range end 1")
    fails("query-dimension-records", repo, "ccd", match="unknown dimension 'ccd'")
    fails("query-dimension-records", repo, "exposure", "--where", "detector = 1",
          match="unknown name 'detector' in where expression for exposure records")
    fails("query-dimension-records", repo, "exposure", "--where", "exposure >",
          match="column")
    fails("query-dimension-records", repo, "exposure", "--where", "exposure = :x",
          match="bind parameter :x")
    fails("verify", repo, "-t", "nosuch", match="no dataset type named 'nosuch'")
    fails("verify", repo, "--where", "exposure ==", match="cannot parse where expression")
    usage_error("query-collections", repo, "--json=yes", match="does not take a value")
    assert snapshot(repo) == before


def test_where_value_of_the_wrong_type(request, db_url):
    """A string where an integer belongs is a one-line user error on both databases;
    a number compared with a string dimension is compared as text."""
    repo = request.getfixturevalue("hsc")
    fails("query-datasets", repo, "--where", "exposure = 'abc'",
          match="exposure needs a int value, not 'abc'")
    fails("query-datasets", repo, "--where", "detector IN (1, 'x')",
          match="detector needs a int value")
    assert as_json("query-datasets", repo, "--where", "physical_filter = :f",
                   "--bind", "f=123") == []
    assert len(as_json("query-datasets", repo, "--where", "exposure = '903334'")) > 0


# -- associate and certify -----------------------------------------------------


def test_associate(rerun: Path):
    repo = rerun
    out = fed("associate", repo, "HSC/tags/r", "-c", "HSC/defaults", "--where", "band = 'r'",
              "--doc", "r band").stdout
    assert out.strip() == "HSC/tags/r: 6 datasets tagged, 0 already there"
    tagged = as_json("query-datasets", repo, "-c", "HSC/tags/r")
    assert len(tagged) == 6
    assert {r["run"] for r in tagged if r["data_id"]["exposure"] == 903334} == {"HSC/raw/rerun"}
    out = fed("associate", repo, "HSC/tags/r", "-c", "HSC/defaults", "-t", "raw", "--where",
              "exposure IN (903336, 903337)").stdout
    assert out.strip() == "HSC/tags/r: 2 datasets tagged, 2 already there"
    [coll] = as_json("query-collections", repo, "HSC/tags/r")
    assert coll == {"name": "HSC/tags/r", "type": "TAGGED", "owner_site": "NCSA",
                    "doc": "r band"}
    assert len(as_json("query-datasets", repo, "-c", "HSC/tags/r")) == 8

    before = snapshot(repo)
    fails("associate", repo, "HSC/tags/r", "-c", RAW_RUN, "--where", "exposure = 903334",
          match="TAGGED collection 'HSC/tags/r' already holds")
    fails("associate", repo, "HSC/tags/x", "-c", "nosuch", match="no collection named 'nosuch'")
    fails("associate", repo, RAW_RUN, "-c", "HSC/defaults",
          match=f"collection '{RAW_RUN}' already exists as RUN")
    fails("associate", repo, "HSC/tags/x", "-c", RAW_RUN, "-t", "nosuch",
          match="no dataset type named 'nosuch'")
    fails("associate", repo, "HSC/tags/x", "-c", RAW_RUN, "--where", "band ==",
          match="cannot parse where expression")
    usage_error("associate", repo, "HSC/tags/x", match="give at least one --collections")
    assert snapshot(repo) == before


def test_certify_calibrations(hsc: Path, tmp_path: Path):
    table = write_csv(tmp_path / "bias.csv", [["file", "detector"]] + [
        [f"incoming/HSCA903334_00{d}.dat", d] for d in DETECTORS])
    fed("ingest-files", hsc, "bias", "HSC/calib/run1", table, "--data-id", "instrument=HSC")
    fed("ingest-files", hsc, "bias", "HSC/calib/run2", table, "--data-id", "instrument=HSC")
    out = fed("certify-calibrations", hsc, "HSC/calib/run1", "HSC/calib", "bias",
              "--begin-date", "2013-01-01", "--end-date", "2013-06-17T13:01:00",
              "--doc", "biases").stdout
    assert out.strip() == ("certified 2 bias datasets in HSC/calib from 2013-01-01 "
                           "to 2013-06-17T13:01:00")
    out = fed("certify-calibrations", hsc, "HSC/calib/run2", "HSC/calib", "bias",
              "--begin-date", "2013-06-17T13:01:00", "--where", "detector = 1").stdout
    assert out.strip() == ("certified 1 bias datasets in HSC/calib from 2013-06-17T13:01:00 "
                           "to +inf")
    [coll] = as_json("query-collections", hsc, "--type", "CALIBRATION")
    assert coll == {"name": "HSC/calib", "type": "CALIBRATION", "owner_site": "NCSA",
                    "doc": "biases"}
    found = as_json("query-datasets", hsc, "bias", "-c", "HSC/calib", "--find-all")
    assert sorted((r["run"], r["data_id"]["detector"]) for r in found) == [
        ("HSC/calib/run1", 0), ("HSC/calib/run1", 1), ("HSC/calib/run2", 1)]

    before = snapshot(hsc)
    line = fails("certify-calibrations", hsc, "HSC/calib/run2", "HSC/calib", "bias",
                 "--begin-date", "2013-03-01", "--end-date", "2013-04-01",
                 match=["cannot certify bias", "is already valid for"])
    assert "2013-01-01T00:00:00, 2013-06-17T13:01:00" in line
    fails("certify-calibrations", hsc, "HSC/calib/run1", "HSC/calib2", "bias",
          "--begin-date", "yesterday", match="invalid time 'yesterday'")
    fails("certify-calibrations", hsc, "HSC/calib/run1", "HSC/calib2", "bias",
          "--begin-date", "2014-01-01", "--end-date", "2013-01-01", match="empty timespan")
    fails("certify-calibrations", hsc, "HSC/calib/run1", "HSC/calib2", "bias",
          "--end-date", "2013-13-45", match="invalid time '2013-13-45'")
    fails("certify-calibrations", hsc, "nosuch", "HSC/calib2", "bias",
          match="no collection named 'nosuch'")
    fails("certify-calibrations", hsc, "HSC/calib", "HSC/calib2", "bias",
          match="collection 'HSC/calib' is CALIBRATION, not RUN")
    fails("certify-calibrations", hsc, "HSC/calib/run1", "HSC/calib2", "raw",
          match="run 'HSC/calib/run1' holds no raw datasets to certify")
    fails("certify-calibrations", hsc, "HSC/calib/run1", "HSC/calib2", "flat",
          match="no dataset type named 'flat'")
    fails("certify-calibrations", hsc, "HSC/calib/run1", "HSC/calib2", "bias", "--where",
          "detector = ", match="cannot parse where expression")
    fails("certify-calibrations", hsc, "HSC/calib/run1", RAW_RUN, "bias",
          match=f"collection '{RAW_RUN}' already exists as RUN")
    assert snapshot(hsc) == before


# -- removal -------------------------------------------------------------------


def test_prune_datasets(rerun: Path):
    repo = rerun
    before = snapshot(repo)
    out = fed("prune-datasets", repo, "raw", "-c", RAW_RUN, "--where", "detector = 1",
              "--dry-run").stdout.splitlines()
    assert out[-1] == "4 datasets would be removed"
    assert f"  raw@{{instrument='HSC', detector=1, exposure=903334}} [{RAW_RUN}]" in out
    assert snapshot(repo) == before

    result = fed("prune-datasets", repo, "raw", "-c", RAW_RUN, "--where", "detector = 1",
                 code=2)
    assert "refusing to delete without confirmation: pass --yes" in result.stderr
    assert snapshot(repo) == before
    usage_error("prune-datasets", repo, "raw", "--yes", match="give at least one --collections")
    fails("prune-datasets", repo, "-c", "nosuch", "--yes", match="no collection named 'nosuch'")
    assert snapshot(repo) == before

    doomed = as_json("query-datasets", repo, "raw", "-c", RAW_RUN, "--where", "detector = 1",
                     "--show-uri")
    paths = [uri_path(r["uri"]) for r in doomed]
    assert all(p.exists() for p in paths)
    out = fed("prune-datasets", repo, "raw", "-c", RAW_RUN, "--where", "detector = 1",
              "--yes").stdout
    assert out.splitlines()[-1] == "removed 4 datasets"
    assert not any(p.exists() for p in paths)
    left = as_json("query-datasets", repo, "-c", "*", "--find-all")
    assert len(left) == 6 and {r["id"] for r in left}.isdisjoint(r["id"] for r in doomed)
    assert fed("verify", repo).stdout.strip() == "verified 6 files: 0 problems"
    out = fed("prune-datasets", repo, "raw", "-c", RAW_RUN, "--where", "detector = 1", "-y")
    assert out.stdout.strip() == "nothing to remove"

    # Removing from a chain's search path reaches every run behind it; tags go too.
    fed("associate", repo, "tag", "-c", "HSC/raw/rerun")
    fed("prune-datasets", repo, "-c", "HSC/defaults", "--where", "exposure = 903334", "-y")
    assert as_json("query-datasets", repo, "-c", "tag") == []
    assert len(as_json("query-datasets", repo, "--find-all")) == 3


def test_remove_runs(rerun: Path, tmp_path: Path):
    repo = rerun
    before = snapshot(repo)
    out = fed("remove-runs", repo, "HSC/raw/*", "--dry-run").stdout.splitlines()
    assert out[0].split() == ["run", "datasets"]
    assert [line.split() for line in out[2:]] == [[RAW_RUN, "8"], ["HSC/raw/rerun", "2"]]
    usage_error("remove-runs", repo, "HSC/raw/rerun", match="pass --yes")
    fails("remove-runs", repo, "HSC/raw/rerun", "--yes",
          match="run 'HSC/raw/rerun' is in chained collection 'HSC/defaults'")
    fails("remove-runs", repo, "nosuch", "--yes", match="no collection named 'nosuch'")
    fails("remove-runs", repo, "HSC/defaults", "--yes",
          match="collection 'HSC/defaults' is CHAINED, not RUN")
    usage_error("remove-runs", repo, match="Missing argument 'PATTERNS...'")
    assert snapshot(repo) == before
    assert fed("remove-runs", repo, "nothing*", "--yes").stdout.strip() == "(none)"

    rerun_files = [uri_path(r["uri"]) for r in
                   as_json("query-datasets", repo, "-c", "HSC/raw/rerun", "--show-uri")]
    out = fed("remove-runs", repo, "HSC/raw/rerun", "--yes", "--force").stdout
    assert out.splitlines()[-1] == "removed 1 runs (2 datasets)"
    assert not any(p.exists() for p in rerun_files)
    assert not (repo / "HSC" / "raw" / "rerun").exists()
    assert [c["name"] for c in as_json("query-collections", repo)] == ["HSC/defaults", RAW_RUN]
    assert as_json("query-collections", repo, "HSC/defaults")[0]["children"] == [RAW_RUN]
    assert len(as_json("query-datasets", repo, "-c", "HSC/defaults")) == 8
    fed("collection-chain", repo, "HSC/defaults", "--mode", "pop")
    fed("remove-runs", repo, RAW_RUN, "-y")
    assert as_json("query-datasets", repo, "--find-all") == []
    assert repo_files(repo) == ["federation.yaml"]
    assert sorted(p.name for p in (tmp_path / "incoming").glob("*.dat"))  # sources untouched


# -- verify --------------------------------------------------------------------


def test_verify(rerun: Path):
    repo = rerun
    assert fed("verify", repo).stdout.strip() == "verified 10 files: 0 problems"
    assert as_json("verify", repo) == {"checked": 10, "held_elsewhere": 0, "problems": []}

    [victim] = as_json("query-datasets", repo, "raw", "-c", RAW_RUN, "--show-uri", "--where",
                       "exposure = 903335 AND detector = 1")
    path = uri_path(victim["uri"])
    relative = path.relative_to(repo).as_posix()
    path.write_bytes(b"raw 903335 X\n")  # same size, different content
    result = fed("verify", repo, code=1)
    lines = result.stdout.splitlines()
    assert lines[-1] == "verified 10 files: 1 problems"
    assert relative in lines[0] and victim["id"] in lines[0] and "checksum" in lines[0]
    assert "Traceback" not in result.output
    report = json.loads(fed("verify", repo, "--json", code=1).stdout)
    assert report["checked"] == 10
    assert report["problems"] == [{"id": victim["id"], "path": relative,
                                   "problem": report["problems"][0]["problem"]}]

    # Restricting to other datasets: clean again.
    assert fed("verify", repo, "-c", "HSC/raw/rerun").stdout.strip() == \
        "verified 2 files: 0 problems"
    assert fed("verify", repo, "-t", "raw", "--where", "detector = 0").stdout.strip() == \
        "verified 5 files: 0 problems"

    path.write_bytes(b"truncated")
    other = uri_path(as_json("query-datasets", repo, "-c", "HSC/raw/rerun", "--show-uri",
                             "--where", "detector = 0")[0]["uri"])
    other.unlink()
    report = json.loads(fed("verify", repo, "--json", code=1).stdout)
    problems = {p["path"]: p["problem"] for p in report["problems"]}
    assert set(problems) == {relative, other.relative_to(repo).as_posix()}
    assert "size" in problems[relative]
    assert "missing" in problems[other.relative_to(repo).as_posix()]
    assert fed("verify", repo, "-c", RAW_RUN, "--where", "detector = 0").exit_code == 0


def test_verify_says_which_value_is_whose(hsc: Path):
    [ref] = as_json("query-datasets", hsc, "--show-uri", "--where",
                    "exposure = 903334 AND detector = 0")
    path = uri_path(ref["uri"])
    recorded = xxhash.xxh3_128_hexdigest(path.read_bytes())
    path.write_bytes(b"raw 903334 X\n")
    actual = xxhash.xxh3_128_hexdigest(path.read_bytes())
    lines = fed("verify", hsc, code=1).stdout.splitlines()
    assert lines[0] == (f"checksum mismatch: the file's xxh3-128 is {actual}, its record says "
                        f"{recorded}: {path.relative_to(hsc).as_posix()} ({ref['id']})")
    path.write_bytes(b"short")
    [problem] = as_json_failing("verify", hsc)["problems"]
    assert problem["problem"] == "size mismatch: the file has 5 bytes, its record says 13"


def as_json_failing(*args):
    """Like as_json, for a command that reports a problem with exit status 1."""
    return json.loads(fed(*args, "--json", code=1).stdout)


# -- bad input: one line, nothing written ---------------------------------------


def test_ingest_of_fifo_or_device_is_refused_without_hanging(hsc: Path, tmp_path: Path):
    """Reading a FIFO blocks forever and /dev/zero never ends: only regular files are read."""
    src = tmp_path / "odd"
    write_raws(src, [903336], [0])
    os.mkfifo(src / "pipe")
    before = snapshot(hsc)
    for name, kind in [("pipe", "a FIFO (named pipe)"), ("/dev/zero", "a character device")]:
        for transfer in ("copy", "direct"):
            table = write_csv(src / "t.csv", [["file", "exposure", "detector"],
                                              ["HSCA903336_000.dat", 903336, 0],
                                              [name, 903336, 1]])
            proc = subprocess.run(
                [str(FED), "ingest-files", str(hsc), "raw", "HSC/raw/odd", str(table),
                 "--data-id", "instrument=HSC", "--transfer", transfer],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 1 and proc.stdout == ""
            assert proc.stderr == (f"error: {table}:3: {src / name} is {kind}, not a regular "
                                   "file: only regular files can be ingested\n")
    assert snapshot(hsc) == before


def test_ingest_table_errors_name_their_line(hsc: Path, tmp_path: Path):
    src = tmp_path / "lines"
    write_raws(src, [903336], [0, 1])
    header = "# raws of exposure 903336\nfile,exposure,detector\n\n# detector 0 first\n"
    before = snapshot(hsc)

    def bad(name: str, text: str, match: str | list[str]) -> None:
        (src / name).write_text(text)
        fails("ingest-files", hsc, "raw", RAW_RUN, src / name, "--data-id", "instrument=HSC",
              match=match)

    bad("t.csv", header + "HSCA903336_000.dat,903336,0\nHSCA903336_001.dat,903336,one\n",
        match=f"{src / 't.csv'}:6: dimension 'detector' needs an integer, got 'one'")
    bad("t.csv", header + "HSCA903336_000.dat,903336,0\nHSCA903336_001.dat,903336,0\n",
        match=[f"{src / 't.csv'}:6: two datasets with the same type and data ID",
               f"(also {src / 't.csv'}:5)"])
    bad("t.csv", header + "HSCA903336_000.dat,903336,0\nHSCA903336_001.dat,903336,1,x\n",
        match=f"{src / 't.csv'}:6: wrong number of columns (4 values for 3 columns: file, "
              "exposure, detector)")
    bad("t.csv", header + "absent.dat,903336,0\n",
        match=[f"{src / 't.csv'}:5: cannot read", "absent.dat"])
    bad("t.csv", header + "HSCA903336_000.dat,903336,0\n,903336,1\n",
        match=f"{src / 't.csv'}:6: row 2 has no 'file' value")
    bad("t.yaml", "# raws\n- {file: HSCA903336_000.dat, exposure: 903336, detector: 0}\n"
        "- file: HSCA903336_001.dat\n  exposure: 999\n  detector: 1\n",
        match=f"{src / 't.yaml'}:3: no exposure record for instrument='HSC', exposure=999")
    bad("t.yaml", "- {file: HSCA903336_000.dat, exposure: 903336, detector: 0, colour: red}\n",
        match=f"{src / 't.yaml'}:1: unknown dimension(s) colour in data ID")
    assert snapshot(hsc) == before


def test_tables_that_are_not_utf8_are_refused(hsc: Path, tmp_path: Path):
    before = snapshot(hsc)
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("file,exposure,detector\n# caf\u00e9\nx.dat,903334,0\n".encode("latin-1"))
    fails("ingest-files", hsc, "raw", RAW_RUN, latin,
          match=f"{latin}:2: not UTF-8 text (byte 0xe9 at offset 28); save the file as UTF-8")
    records = tmp_path / "records.csv"
    records.write_bytes("instrument,detector,full_name\nHSC,9,d\u00e9tecteur\n".encode("cp1252"))
    fails("insert-dimension-records", hsc, records, "--dimension", "detector",
          match=f"{records}:2: not UTF-8 text (byte 0xe9")
    records = tmp_path / "records.yaml"
    records.write_bytes("detector:\n- {instrument: HSC, detector: 9, full_name: d\u00e9}\n"
                        .encode("latin-1"))
    fails("insert-dimension-records", hsc, records, match=f"{records}:2: not UTF-8 text")
    assert snapshot(hsc) == before
    assert len(as_json("query-dimension-records", hsc, "detector")) == 4


def test_dimension_record_fields_are_type_checked(hsc: Path, tmp_path: Path):
    """A list or mapping for a text field is refused, not stored as its Python repr."""
    before = snapshot(hsc)
    for record, message in [
            ("{instrument: HSC, detector: 9, full_name: [a, b]}",
             "detector field 'full_name' needs a string, got ['a', 'b'] (list)"),
            ("{instrument: HSC, detector: 9, purpose: {x: 1}}",
             "detector field 'purpose' needs a string, got {'x': 1} (dict)")]:
        path = write_yaml(tmp_path / "bad.yaml", {})
        path.write_text(f"detector:\n- {record}\n")
        fails("insert-dimension-records", hsc, path, match=message)
    path.write_text("exposure:\n- {instrument: HSC, exposure: 1, physical_filter: HSC-R, "
                    "day_obs: 20130617, exposure_time: [30]}\n")
    fails("insert-dimension-records", hsc, path,
          match="exposure field 'exposure_time' needs a float, got [30] (list)")
    assert snapshot(hsc) == before
    assert [d["detector"] for d in as_json("query-dimension-records", hsc, "detector")] == [
        0, 1, 2, 3]


def test_where_with_thousands_of_alternatives_and_huge_integers(hsc: Path):
    """5,000 ORs would be an expression tree too deep for SQLite; on both databases they
    work, and an integer beyond 64 bits is a one-line error."""
    ors = " OR ".join(f"detector = {d}" for d in range(2, 5000)) + " OR detector = 1"
    found = as_json("query-datasets", hsc, "--where", ors)
    assert sorted((r["data_id"]["exposure"], r["data_id"]["detector"]) for r in found) == [
        (e, 1) for e in EXPOSURES]
    pairs = " OR ".join(f"(exposure = {e} AND detector = {e % 2})" for e in range(903000, 904200))
    found = as_json("query-datasets", hsc, "--where", pairs)
    assert sorted((r["data_id"]["exposure"], r["data_id"]["detector"]) for r in found) == [
        (e, e % 2) for e in EXPOSURES]
    ors = " OR ".join(f"exposure = {e}" for e in range(900000, 905000))
    assert len(as_json("query-dimension-records", hsc, "exposure", "--where", ors)) == 4
    before = snapshot(hsc)
    fails("query-datasets", hsc, "--where", "exposure = 9223372036854775808",
          match="integer 9223372036854775808 is out of range for a 64-bit integer")
    fails("query-dimension-records", hsc, "detector", "--where", "detector > :d",
          "--bind", "d=99999999999999999999", match="is out of range for a 64-bit integer")
    fails("verify", hsc, "--where", "exposure IN (1..9223372036854775808)",
          match="is out of range for a 64-bit integer")
    fails("query-datasets", hsc, "--where", "NOT (" * 70 + "detector = 1" + ")" * 70,
          match="where expression is nested too deeply")
    assert snapshot(hsc) == before


def test_registry_file_that_is_not_sqlite(tmp_path: Path):
    root = tmp_path / "repo"
    fed("create", root)
    (root / "registry.sqlite3").write_bytes(b"not a database\n" * 100)
    for command in ("verify", "query-datasets", "query-collections", "query-dataset-types"):
        fails(command, root, match=["registry", "not a database"])


# -- disassociate, decertify, remove-collections ---------------------------------


def test_disassociate(rerun: Path):
    repo = rerun
    fed("associate", repo, "HSC/tags/r", "-c", "HSC/defaults", "--where", "band = 'r'")
    assert len(as_json("query-datasets", repo, "-c", "HSC/tags/r")) == 6
    out = fed("disassociate", repo, "HSC/tags/r", "-c", "HSC/tags/r", "--where",
              "exposure = 903334").stdout
    assert out.strip() == "HSC/tags/r: 2 datasets untagged, 0 were not tagged"
    tagged = as_json("query-datasets", repo, "-c", "HSC/tags/r")
    assert sorted((r["data_id"]["exposure"], r["data_id"]["detector"]) for r in tagged) == [
        (903335, 0), (903335, 1), (903336, 0), (903336, 1)]
    # Searching the runs: every match leaves the tag; ones that were not in it stay out.
    out = fed("disassociate", repo, "HSC/tags/r", "-c", "HSC/defaults", "-t", "raw",
              "--where", "exposure IN (903335, 903337) AND detector = 0").stdout
    assert out.strip() == "HSC/tags/r: 1 datasets untagged, 1 were not tagged"
    assert len(as_json("query-datasets", repo, "-c", "HSC/tags/r")) == 3
    assert len(as_json("query-datasets", repo, "--find-all")) == 10  # the datasets stay
    assert fed("verify", repo).stdout.strip() == "verified 10 files: 0 problems"

    before = snapshot(repo)
    fails("disassociate", repo, RAW_RUN, "-c", RAW_RUN,
          match=f"collection '{RAW_RUN}' is RUN, not TAGGED")
    fails("disassociate", repo, "nosuch", "-c", RAW_RUN, match="no collection named 'nosuch'")
    fails("disassociate", repo, "HSC/tags/r", "-c", "nosuch",
          match="no collection named 'nosuch'")
    fails("disassociate", repo, "HSC/tags/r", "-c", RAW_RUN, "-t", "flat",
          match="no dataset type named 'flat'")
    fails("disassociate", repo, "HSC/tags/r", "-c", RAW_RUN, "--where", "band ==",
          match="cannot parse where expression")
    usage_error("disassociate", repo, "HSC/tags/r", match="give at least one --collections")
    assert snapshot(repo) == before


def test_decertify(hsc: Path, tmp_path: Path):
    table = write_csv(tmp_path / "bias.csv", [["file", "detector"]] + [
        [f"incoming/HSCA903334_00{d}.dat", d] for d in DETECTORS])
    fed("ingest-files", hsc, "bias", "HSC/calib/run1", table, "--data-id", "instrument=HSC")
    fed("certify-calibrations", hsc, "HSC/calib/run1", "HSC/calib", "bias",
        "--begin-date", "2013-01-01", "--end-date", "2014-01-01")

    def bias(detector: int, when: str | None = None):
        """The bias valid for exposure 903334 (2013-06-17T13:00), or at ``when``."""
        from federation.butler import Butler
        from federation.timespan import Timespan

        with Butler(hsc, collections="HSC/calib") as butler:
            if when is None:
                return butler.find_dataset("bias", instrument="HSC", detector=detector,
                                           exposure=903334)
            return butler.find_dataset("bias", instrument="HSC", detector=detector,
                                       timespan=Timespan.instant(when))

    assert bias(0) is not None and bias(1) is not None
    out = fed("decertify", hsc, "HSC/calib", "bias", "--begin-date", "2013-06-01",
              "--end-date", "2013-07-01", "--where", "detector = 0").stdout
    assert out.strip() == ("decertified bias in HSC/calib for 1 data IDs from 2013-06-01 to "
                           "2013-07-01: 1 validity ranges removed, trimmed or split")
    assert bias(0) is None and bias(1) is not None
    assert bias(0, "2013-05-31T23:59:59") is not None and bias(0, "2013-07-01") is not None
    out = fed("decertify", hsc, "HSC/calib", "bias", "--where", "detector = 2").stdout
    assert out.strip().endswith("for 0 data IDs from -inf to +inf: 0 validity ranges removed, "
                                "trimmed or split")
    out = fed("decertify", hsc, "HSC/calib", "bias").stdout
    assert out.strip() == ("decertified bias in HSC/calib from -inf to +inf: 3 validity ranges "
                           "removed, trimmed or split")
    assert as_json("query-datasets", hsc, "bias", "-c", "HSC/calib", "--find-all") == []
    assert len(as_json("query-datasets", hsc, "bias", "-c", "HSC/calib/run1")) == 2

    before = snapshot(hsc)
    fails("decertify", hsc, "HSC/calib/run1", "bias",
          match="collection 'HSC/calib/run1' is RUN, not CALIBRATION")
    fails("decertify", hsc, "nosuch", "bias", match="no collection named 'nosuch'")
    fails("decertify", hsc, "HSC/calib", "flat", match="no dataset type named 'flat'")
    fails("decertify", hsc, "HSC/calib", "bias", "--begin-date", "soon",
          match="invalid time 'soon'")
    fails("decertify", hsc, "HSC/calib", "bias", "--begin-date", "2014-01-01",
          "--end-date", "2013-01-01", match="empty timespan")
    fails("decertify", hsc, "HSC/calib", "bias", "--where", "detector =",
          match="cannot parse where expression")
    assert snapshot(hsc) == before


def test_remove_collections(rerun: Path):
    repo = rerun
    fed("associate", repo, "HSC/tags/r", "-c", "HSC/defaults", "--where", "band = 'r'")
    fed("associate", repo, "HSC/tags/i", "-c", "HSC/defaults", "--where", "band = 'i'")
    fed("collection-chain", repo, "HSC/best", "HSC/tags/r")
    fed("collection-chain", repo, "HSC/defaults", "HSC/tags/i", "--mode", "extend")
    fed("register-collection", repo, "HSC/calib", "--type", "CALIBRATION")

    before = snapshot(repo)
    out = fed("remove-collections", repo, "HSC/tags/*", "HSC/best", "--dry-run").stdout
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["collection", "type", "members", "in", "chains"]
    assert lines[2:] == [["HSC/tags/i", "TAGGED", "2", "HSC/defaults"],
                         ["HSC/tags/r", "TAGGED", "6"], ["HSC/best", "CHAINED", "1"]]
    fails("remove-collections", repo, "HSC/tags/i", "--yes",
          match="collection 'HSC/tags/i' is in chained collection 'HSC/defaults'")
    fails("remove-collections", repo, "HSC/tags/r", "--yes",
          match="collection 'HSC/tags/r' is in chained collection 'HSC/best'")
    fails("remove-collections", repo, "HSC/raw/*", "--yes",
          match=["is a RUN: removing it removes its datasets", "fed remove-runs"])
    fails("remove-collections", repo, "nosuch", "--yes", match="no collection named 'nosuch'")
    usage_error("remove-collections", repo, "HSC/calib", match="pass --yes")
    usage_error("remove-collections", repo, match="Missing argument 'PATTERNS...'")
    assert snapshot(repo) == before
    assert fed("remove-collections", repo, "nothing*", "--yes").stdout.strip() == "(none)"

    # A chain and the tag it holds go together; --force takes a tag out of other chains.
    out = fed("remove-collections", repo, "HSC/tags/*", "HSC/best", "HSC/calib", "--force",
              "--yes").stdout
    assert out.splitlines()[-1] == "removed 4 collections (their datasets stay)"
    assert [c["name"] for c in as_json("query-collections", repo)] == [
        "HSC/defaults", RAW_RUN, "HSC/raw/rerun"]
    assert as_json("query-collections", repo, "HSC/defaults")[0]["children"] == [
        "HSC/raw/rerun", RAW_RUN]
    assert len(as_json("query-datasets", repo, "--find-all")) == 10
    assert fed("verify", repo).stdout.strip() == "verified 10 files: 0 problems"
    # The names are free again, and a new tag under an old name starts empty.
    fed("register-collection", repo, "HSC/tags/r")
    assert as_json("query-datasets", repo, "-c", "HSC/tags/r") == []


# -- as a real program ----------------------------------------------------------


def run_fed(*commands: list) -> list[subprocess.CompletedProcess]:
    """Run `fed` programs side by side (each start costs ~1 s of imports); stdin is not a tty."""
    procs = [subprocess.Popen([str(FED), *map(str, args)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]
    done = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return done


def test_real_program_errors(tmp_path: Path):
    nothing = tmp_path / "nothing"
    missing, usage, verbose, help_ = run_fed(
        ["query-datasets", nothing], ["query-datasets"], ["-v", "verify", nothing], ["--help"])
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == (f"error: {nothing} is not a federation repository: "
                              "no federation.yaml (create one with 'fed create')\n")
    assert usage.returncode == 2 and usage.stderr.startswith("Usage: fed query-datasets")
    assert "Missing argument 'REPO'" in usage.stderr and "Traceback" not in usage.stderr
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert "ConfigError" in verbose.stderr
    assert help_.returncode == 0 and help_.stdout.startswith("Usage: fed [OPTIONS] COMMAND")
    assert not nothing.exists()


def test_real_program_on_a_repository(repo: Path, tmp_path: Path):
    fed("insert-dimension-records", repo, write_yaml(tmp_path / "hsc.yaml", HSC_RECORDS))
    fed("register-dataset-type", repo, "raw", "Bytes", "exposure", "detector")
    table = write_raws(tmp_path / "in", [903334], [0, 1])
    fed("ingest-files", repo, "raw", RAW_RUN, table, "--data-id", "instrument=HSC")
    [ref] = as_json("query-datasets", repo, "--show-uri", "--where", "detector = 1")
    uri_path(ref["uri"]).write_bytes(b"damaged")
    before = snapshot(repo)
    query, where, prune, verify = run_fed(
        ["query-datasets", repo, "--json"],
        ["query-datasets", repo, "--where", "detector = = 1"],
        ["prune-datasets", repo, "-c", RAW_RUN],
        ["verify", repo])
    assert query.returncode == 0 and query.stderr == ""
    assert [r["data_id"]["detector"] for r in json.loads(query.stdout)] == [0, 1]
    assert where.returncode == 1 and where.stdout == ""
    assert where.stderr == ("error: cannot parse where expression at column 12 near '=': "
                            "expected a value\n")
    assert prune.returncode == 2 and "pass --yes" in prune.stderr
    assert verify.returncode == 1 and uri_path(ref["uri"]).name in verify.stdout
    assert verify.stdout.splitlines()[-1] == "verified 2 files: 1 problems"
    assert "Traceback" not in prune.stderr + verify.stderr
    assert snapshot(repo) == before
