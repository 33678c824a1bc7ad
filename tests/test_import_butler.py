"""`fed import-butler`: a real daf_butler export (tests/butler_repos.py) into fed.

Everything is checked through fed's own API and CLI: collections (types, docs, chain
order), dataset UUIDs, tags, validity ranges, records (regions too) and file bytes;
a second import changes nothing; conflicts and damaged exports write nothing.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from butler_repos import (
    CALIB,
    CALIB_DOC,
    CALIB_RUNS,
    CHAIN,
    CHAIN_CHILDREN,
    NESTED_CHAIN,
    NESTED_CHILDREN,
    RAW_RUN,
    TAGGED,
    TAGGED_DOC,
    VALIDITY,
    ButlerRepo,
    make_butler_repo,
    raw_content,
)
from click.testing import CliRunner

from federation.butler import Butler
from federation.cli.main import cli
from federation.dafbutler.export_yaml import ButlerTime
from federation.errors import ConfigError, ConflictError, InputError
from federation.model import CollectionType
from federation.operations.import_butler import import_butler
from federation.operations.repo import create
from federation.timespan import MAX_NS


def make_repo(path: Path, db_url: str | None = None, universe: str | None = "daf_butler"
              ) -> Path:
    return create(path, db=db_url, universe=universe).root


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.output


def state(repo: Path) -> dict:
    """What a repository holds: journal head, collections, dataset IDs, files on disk."""
    with Butler(repo) as butler:
        registry = butler.registry
        with registry.db.transaction():
            head = registry.db.head()
        files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*")
                       if p.is_file() and p.parent != repo)  # the datastore's files
        return {"head": head,
                "collections": sorted(c.name for c in registry.collections.query()),
                "datasets": sorted(i for i, _, _ in registry.datasets.iter_files()),
                "files": files}


def edited(source: Path, target: Path, edit) -> Path:
    """A copy of an export with ``edit(document_text) -> text`` applied."""
    target.write_text(edit(source.read_text()))
    return target


@pytest.fixture(scope="module")
def lsst(tmp_path_factory: pytest.TempPathFactory) -> ButlerRepo:
    """The daf_butler repository of tests/butler_repos.py and its export (not modified)."""
    return make_butler_repo(tmp_path_factory.mktemp("lsst") / "repo")


# -- a whole import, checked through fed ----------------------------------------------


def test_import_everything(lsst: ButlerRepo, tmp_path: Path, db_url) -> None:
    repo = make_repo(tmp_path / "fed", db_url)
    report = import_butler(repo, lsst.export, files_from=lsst.root)
    all_ids = set(lsst.raws.values()) | set(lsst.biases.values())
    assert report.datasets == report.files == len(all_ids)
    assert set(report.dataset_ids) == all_ids
    assert report.bytes == sum(lsst.file(i).stat().st_size for i in all_ids)
    assert report.conflicts == []

    with Butler(repo) as butler:
        registry = butler.registry
        got = {c.name: c for c in registry.collections.query()}
        assert {n: c.type for n, c in got.items()} == {
            RAW_RUN: CollectionType.RUN, CALIB_RUNS[0]: CollectionType.RUN,
            CALIB_RUNS[1]: CollectionType.RUN, CALIB: CollectionType.CALIBRATION,
            TAGGED: CollectionType.TAGGED, CHAIN: CollectionType.CHAINED,
            NESTED_CHAIN: CollectionType.CHAINED}
        assert got[CALIB].doc == CALIB_DOC and got[TAGGED].doc == TAGGED_DOC
        assert got[CHAIN].children == list(CHAIN_CHILDREN)
        assert got[NESTED_CHAIN].children == list(NESTED_CHILDREN)

        raws = butler.query_datasets("raw", RAW_RUN, find_first=False)
        assert {(r.data_id["exposure"], r.data_id["detector"]): r.id for r in raws} == lsst.raws
        assert {r.data_id["band"] for r in raws} == {"r", "i"}  # implied values completed
        tagged = butler.query_datasets("raw", TAGGED, find_first=False)
        assert {r.id for r in tagged} == lsst.tagged()

        certified = registry.datasets.certifications(CALIB)
        assert len(certified) == len(lsst.biases)
        for ref, span in certified:
            run = ref.run
            assert lsst.biases[run, ref.data_id["detector"]] == ref.id
            begin, end = VALIDITY[run]
            assert span.begin == ButlerTime.parse(begin.replace("T", " ")).ns
            assert span.end == (MAX_NS if end is None else
                                ButlerTime.parse(end.replace("T", " ")).ns)

        for dataset_id in all_ids:
            (ref,) = [r for r in butler.query_datasets(None, [RAW_RUN, *CALIB_RUNS],
                                                       find_first=False) if r.id == dataset_id]
            path = Path(butler.get_uri(ref).removeprefix("file://"))
            assert path == repo / lsst.paths[dataset_id]  # the export's path
            assert path.read_bytes() == lsst.file(dataset_id).read_bytes()
        assert butler.get("raw", {"instrument": "HSC", "exposure": 903335, "detector": 1},
                          collections=CHAIN) == raw_content(903335, 1)  # Bytes: as they are
        assert butler.verify().ok

        # Records: regions as sphgeom wrote them, time spans in TAI ns.
        lsst_butler = lsst.butler()
        for record in lsst_butler.registry.queryDimensionRecords("visit_detector_region"):
            (row,) = butler.query_dimension_records(
                "visit_detector_region",
                where=f"visit = {record.visit} AND detector = {record.detector}")
            assert row["region"] == record.region.encode().hex()
        # Everything is journaled, so that a sync carries it on.
        kinds = {e.change.kind for e in registry.db.entries()}
        assert {"dimension_record", "dataset_type", "collection", "chain"} <= kinds


def test_cli_import_then_reimport_is_a_no_op(lsst: ButlerRepo,
                                             tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fed")
    code, out = run_cli("import-butler", repo, lsst.export,
                        "--files-from", lsst.root)
    assert code == 0, out
    assert "datasets           18" in out and "files: 18" in out
    before = state(repo)
    code, out = run_cli("import-butler", repo, lsst.export,
                        "--files-from", lsst.root)
    assert code == 0, out
    assert out.startswith("nothing new:")
    assert state(repo) == before
    code, out = run_cli("query-datasets", repo, "bias", "-c", CALIB)
    assert code == 0 and out.count("bias") >= 3


def test_files_from_defaults_to_the_exports_directory(lsst: ButlerRepo,
                                                      tmp_path: Path) -> None:
    export = lsst.root / "export-here.yaml"
    shutil.copy(lsst.export, export)
    try:
        report = import_butler(make_repo(tmp_path / "fed"), export)
    finally:
        export.unlink()
    assert report.files == 18


@pytest.mark.parametrize("transfer", ["copy", "hardlink", "symlink", "move", "direct"])
def test_transfer_modes(lsst: ButlerRepo, tmp_path: Path, transfer: str) -> None:
    files = tmp_path / "files"
    shutil.copytree(lsst.root, files)
    repo = make_repo(tmp_path / "fed")
    report = import_butler(repo, lsst.export, files_from=files, transfer=transfer)
    assert report.files == 18
    raw = lsst.raws[903334, 0]
    source = files / lsst.paths[raw]
    with Butler(repo) as butler:
        assert butler.verify().ok
        stored, _ = butler.registry.datasets.file(raw)
    if transfer == "direct":
        assert stored.path == str(source.absolute())
    else:
        target = repo / lsst.paths[raw]
        assert target.read_bytes() == raw_content(903334, 0)
        assert target.is_symlink() == (transfer == "symlink")
        assert source.exists() == (transfer != "move")


# -- refusals: nothing written -----------------------------------------------------------


def test_a_repository_in_another_universe_is_refused(lsst: ButlerRepo,
                                                     tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fed", universe=None)
    code, out = run_cli("import-butler", repo, lsst.export,
                        "--files-from", lsst.root)
    assert code == 1
    assert out.startswith("error: ") and out.count("\n") == 1
    assert "fed create REPO --universe daf_butler:8" in out
    other = edited(lsst.export, tmp_path / "v7.yaml",
                   lambda t: t.replace("universe_version: 8", "universe_version: 7"))
    with pytest.raises(ConfigError, match="version 7.*--universe daf_butler:7"):
        import_butler(make_repo(tmp_path / "fed8"), other, files_from=lsst.root)


@pytest.mark.parametrize("damage", ["bad yaml", "missing file", "unknown dataset type",
                                    "unknown collection", "unknown record", "bad uuid",
                                    "bad tag", "escaping path"])
def test_a_damaged_export_writes_nothing(lsst: ButlerRepo, tmp_path: Path,
                                         damage: str) -> None:
    files = lsst.root
    text = lsst.export.read_text()
    raw = str(lsst.raws[903336, 2])
    if damage == "bad yaml":
        text = text.replace("- type: collection\n", "- type: [collection\n", 1)
    elif damage == "missing file":
        files = tmp_path / "files"
        shutil.copytree(lsst.root, files)
        (files / lsst.paths[lsst.raws[903336, 2]]).unlink()
    elif damage == "unknown dataset type":
        text = text.replace("  dataset_type: raw\n", "  dataset_type: rawx\n")
    elif damage == "unknown collection":
        text = text.replace("  - HSC/calib\n", "  - HSC/calibx\n")
    elif damage == "unknown record":
        text = text.replace("      detector: 2\n      exposure: 903336\n",
                            "      detector: 7\n      exposure: 903336\n")
    elif damage in ("bad uuid", "bad tag"):  # bad tag: a dataset nobody has
        tags = text.index(f"collection: {TAGGED}")
        wrong = "not-a-uuid" if damage == "bad uuid" else str(uuid.uuid4())
        text = text[:tags] + text[tags:].replace(str(lsst.raws[903334, 0]), wrong)
    else:  # the file exists, but its path would leave the datastore
        text = text.replace("path: HSC/raw/all/raw/20130617/HSCA90333600/",
                            "path: HSC/raw/all/../all/raw/20130617/HSCA90333600/", 1)
    assert text != lsst.export.read_text() or damage == "missing file"
    export = tmp_path / "export.yaml"
    export.write_text(text)
    repo = make_repo(tmp_path / "fed")
    before = state(repo)
    code, out = run_cli("import-butler", repo, export, "--files-from", files)
    assert code == 1, out
    assert out.startswith("error: ") and out.count("\n") == 1, out
    if damage == "missing file":
        assert raw in out and "No such file" in out
    assert state(repo) == before
    assert not [p for p in repo.rglob("*") if p.is_file() and "HSC" in p.parts]


# -- conflicts ---------------------------------------------------------------------------


def test_a_conflicting_record_is_refused_with_both_sides(lsst: ButlerRepo,
                                                         tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fed")
    partial = edited(lsst.export, tmp_path / "tagless.yaml", _without_tags)
    import_butler(repo, partial, files_from=lsst.root)
    before = state(repo)
    changed = edited(lsst.export, tmp_path / "changed.yaml",
                     lambda t: t.replace("full_name: '1_01'", "full_name: '1_99'"))
    with pytest.raises(ConflictError) as failure:
        import_butler(repo, changed, files_from=lsst.root)
    message = str(failure.value)
    assert "record detector {instrument='HSC', detector=1}" in message
    assert "full_name='1_01'" in message and "full_name='1_99'" in message
    assert "\n" not in message
    assert state(repo) == before  # the tags the export adds were not written either

    code, out = run_cli("import-butler", repo, changed, "--files-from", lsst.root,
                        "--on-conflict", "skip")
    assert code == 0, out
    assert "skipped conflict: record detector" in out and "1 conflict(s) skipped" in out
    with Butler(repo) as butler:
        (row,) = butler.query_dimension_records("detector", where="detector = 1")
        assert row["full_name"] == "1_01"  # left as it was
        assert {r.id for r in butler.query_datasets("raw", TAGGED, find_first=False)} \
            == lsst.tagged()


def _without_tags(text: str) -> str:
    return text[:text.index(f"- type: associations\n  collection: {TAGGED}")]


def test_a_conflicting_dataset_shows_both_checksums(lsst: ButlerRepo,
                                                    tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fed")
    import_butler(repo, lsst.export, files_from=lsst.root)
    before = state(repo)
    files = tmp_path / "files"
    shutil.copytree(lsst.root, files)
    raw = lsst.raws[903337, 1]
    (files / lsst.paths[raw]).write_bytes(b"other bytes")
    code, out = run_cli("import-butler", repo, lsst.export, "--files-from", files)
    assert code == 1
    assert f"dataset {raw}: repository has a file of" in out and "11 bytes" in out
    assert state(repo) == before
    report = import_butler(repo, lsst.export, files_from=files, on_conflict="skip")
    assert report.new == 0 and report.skipped >= 1
    assert (repo / lsst.paths[raw]).read_bytes() == raw_content(903337, 1)


def test_a_uuid_given_to_another_dataset_is_a_conflict(lsst: ButlerRepo,
                                                       tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fed")
    import_butler(repo, lsst.export, files_from=lsst.root)
    one, two = str(lsst.raws[903334, 1]), str(lsst.raws[903334, 2])
    swapped = edited(lsst.export, tmp_path / "swapped.yaml", lambda t: t.replace(
        one, "SWAP").replace(two, one).replace("SWAP", two))
    with pytest.raises(ConflictError, match=f"dataset {two}: repository has "
                                            r"raw@\{.*detector=2.*export has raw@\{.*detector=1"):
        import_butler(repo, swapped, files_from=lsst.root)


# -- IDs agree with daf_butler ------------------------------------------------------------


def test_a_raw_ingested_by_daf_butler_and_by_fed_gets_one_uuid(lsst: ButlerRepo,
                                                               tmp_path: Path) -> None:
    """fed ingest-files (deterministic) gives a raw the UUID daf_butler gave it; importing
    the export into that repository then finds the same dataset there."""
    repo = make_repo(tmp_path / "fed")
    records_only = edited(lsst.export, tmp_path / "records.yaml",
                          lambda t: t[:t.index("- type: collection\n")])
    assert import_butler(repo, records_only).datasets == 0
    table = tmp_path / "raws.csv"
    (tmp_path / "HSCA90333400-0.json").write_bytes(raw_content(903334, 0))
    table.write_text("file,instrument,exposure,detector\nHSCA90333400-0.json,HSC,903334,0\n")
    code, out = run_cli("register-dataset-type", repo, "raw", "Bytes", "instrument",
                        "exposure", "detector")
    assert code == 0, out
    code, out = run_cli("ingest-files", repo, "raw", RAW_RUN, table, "--id-mode",
                        "deterministic")
    assert code == 0, out
    with Butler(repo) as butler:
        (ref,) = butler.query_datasets("raw", RAW_RUN)
    assert ref.id == lsst.raws[903334, 0]
    # The same file content: the import sees that dataset as already there, but its
    # file lies at fed's template path, not the export's; the other raws come in.
    report = import_butler(repo, lsst.export, files_from=lsst.root)
    assert report.conflicts == []
    assert lsst.raws[903334, 0] not in report.dataset_ids
    assert report.datasets == 17


def test_import_is_usable_from_python_with_progress(lsst: ButlerRepo,
                                                    tmp_path: Path) -> None:
    ticks: list[int] = []
    report = import_butler(make_repo(tmp_path / "fed"), lsst.export,
                           files_from=lsst.root, progress=ticks.append)
    assert sum(ticks) == report.files == 18
    assert all(isinstance(i, uuid.UUID) for i in report.dataset_ids)


def test_bad_options_are_input_errors(lsst: ButlerRepo, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fed")
    with pytest.raises(InputError, match="transfer"):
        import_butler(repo, lsst.export, transfer="teleport")
    with pytest.raises(InputError, match="on-conflict"):
        import_butler(repo, lsst.export, on_conflict="merge")


def test_fed_sync_carries_an_import_to_another_site(lsst: ButlerRepo, tmp_path: Path) -> None:
    """Everything imported is journaled: a sync brings all of it, files too, elsewhere."""
    sites = tmp_path / "sites"
    sites.mkdir()
    for name in ("NCSA", "laptop"):
        root = create(tmp_path / name, site=name, universe="daf_butler").root
        (sites / f"{name}.yaml").write_text(
            f"name: {name}\nregistry: sqlite:///{root / 'registry.sqlite3'}\nroot: {root}\n"
            "transport: local\n")
    import_butler(tmp_path / "NCSA", lsst.export, files_from=lsst.root)
    code, out = run_cli("sync", "NCSA", "laptop", "--sites", sites)
    assert code == 0, out
    with Butler(tmp_path / "NCSA") as ncsa, Butler(tmp_path / "laptop") as laptop:
        for collection in (RAW_RUN, *CALIB_RUNS, TAGGED, CALIB):
            assert {r.id for r in laptop.query_datasets(None, collection, find_first=False)} \
                == {r.id for r in ncsa.query_datasets(None, collection, find_first=False)}
        assert [c.children for c in laptop.registry.collections.query(types=[
            CollectionType.CHAINED])] == [list(CHAIN_CHILDREN), list(NESTED_CHILDREN)]
        assert sorted((r.id, s) for r, s in laptop.registry.datasets.certifications(CALIB)) \
            == sorted((r.id, s) for r, s in ncsa.registry.datasets.certifications(CALIB))
        assert laptop.verify().checked == 18


def test_a_dataset_type_defined_otherwise_is_skipped_with_its_datasets(
        lsst: ButlerRepo, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fed")
    with Butler(repo) as butler:
        butler.registry.register_dataset_type("raw", ["instrument", "detector"], "JSON")
    with pytest.raises(ConflictError, match="dataset type raw: repository has raw"):
        import_butler(repo, lsst.export, files_from=lsst.root)
    report = import_butler(repo, lsst.export, files_from=lsst.root, on_conflict="skip")
    assert report.datasets == len(lsst.biases) and report.certifications == len(lsst.biases)
    assert report.tags == 0
    kinds = {c.kind for c in report.conflicts}
    assert {"dataset type", "datasets", "tag"} <= kinds
    with Butler(repo) as butler:
        assert butler.registry.get_dataset_type("raw").storage_class == "JSON"
        assert butler.query_datasets("raw", RAW_RUN, find_first=False) == []


def test_a_file_outside_the_exported_datastore(lsst: ButlerRepo, tmp_path: Path) -> None:
    """daf_butler exports a file ingested in place as an absolute URI: it is read there and
    placed where the repository's templates say."""
    raw = lsst.raws[903335, 2]
    outside = tmp_path / "elsewhere" / "raw.json"
    outside.parent.mkdir()
    shutil.copy(lsst.file(raw), outside)
    export = edited(lsst.export, tmp_path / "uri.yaml", lambda t: t.replace(
        f"path: {lsst.paths[raw]}", f"path: {outside.as_uri()}"))
    repo = make_repo(tmp_path / "fed")
    import_butler(repo, export, files_from=lsst.root)
    with Butler(repo) as butler:
        stored, _ = butler.registry.datasets.file(raw)
        assert not stored.path.startswith("/") and stored.path != lsst.paths[raw]
        assert (repo / stored.path).read_bytes() == raw_content(903335, 2)
        assert butler.verify().ok
