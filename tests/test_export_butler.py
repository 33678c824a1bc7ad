"""``fed export-butler``: a fed repository's selection as a daf_butler export, read back by
the real lsst.daf.butler.

A fed repository in daf_butler's universe (raws of two exposures x two detectors, a
calexp on a visit, biases of two RUNs certified over two time ranges in a CALIBRATION
collection, a TAGGED collection, a CHAINED one holding a chain) is exported with its
files, imported into a new daf_butler repository (SQLite), and checked from daf_butler's
side: collections, types, docs, chain order, tags, UUIDs, validity ranges, file bytes;
then the export is compared block by block with the one daf_butler itself writes for
the same datasets and collections. Bad input writes nothing.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from butler_repos import ButlerRepo, lsst_butler_repo  # noqa: F401  (fixture)
from test_cli import fails, fed, usage_error

from federation.butler import Butler
from federation.dafbutler import export_records, export_yaml
from federation.dimensions import daf_butler as translated

daf_butler = pytest.importorskip("lsst.daf.butler", reason="pip install -e '.[test]'")

SQUARE = ("70000000000000f03f000000000000000000000000000000008aaff597c0feef3f1edd892b0bdf913f"
          "0000000000000000b4825f3c81fdef3f27dcf7c958de913f1edd892b0bdf913f8aaff597c0feef3f00"
          "000000000000001edd892b0bdf913f")
EXPOSURES = {903334: ("g1", "2013-06-17T13:00:00", "2013-06-17T13:05:00"),
             903336: ("g2", "2013-06-17T13:10:00", "2013-06-17T13:15:00")}
RECORDS = f"""
instrument: [{{instrument: HSC, detector_max: 200, visit_system_value: 1}}]
physical_filter: [{{instrument: HSC, physical_filter: HSC-R, band: r}},
                  {{instrument: HSC, physical_filter: HSC-I, band: i}}]
detector: [{{instrument: HSC, detector: 0, full_name: "1_53"}},
           {{instrument: HSC, detector: 1, full_name: "1_54"}},
           {{instrument: HSC, detector: 2, full_name: "1_55"}}]
day_obs: [{{instrument: HSC, day_obs: 20130617,
           timespan: {{begin: "2013-06-17T12:00:00", end: "2013-06-18T12:00:00"}}}}]
group: [{{instrument: HSC, group: g1}}, {{instrument: HSC, group: g2}}]
visit_system: [{{instrument: HSC, visit_system: 1, name: one-to-one}}]
exposure: {[{"instrument": "HSC", "exposure": e, "obs_id": f"HSCA{e}00",
             "physical_filter": "HSC-R", "group": g, "day_obs": 20130617,
             "exposure_time": 30.0, "timespan": {"begin": b, "end": t}}
            for e, (g, b, t) in EXPOSURES.items()]}
visit: [{{instrument: HSC, visit: 903334, name: v903334, physical_filter: HSC-R,
         day_obs: 20130617, region: "{SQUARE}",
         timespan: {{begin: "2013-06-17T13:00:00", end: "2013-06-17T13:05:00"}}}}]
visit_definition: [{{instrument: HSC, exposure: 903334, visit: 903334}}]
visit_system_membership: [{{instrument: HSC, visit: 903334, visit_system: 1}}]
visit_detector_region: [{{instrument: HSC, visit: 903334, detector: 0, region: "{SQUARE}"}},
                        {{instrument: HSC, visit: 903334, detector: 1, region: "{SQUARE}"}}]
"""
RAW_RUN, CALIB, TAGGED, CHAIN, OUTER = (
    "HSC/raw/all", "HSC/calib", "u/alice/good-raws", "HSC/defaults", "u/alice/chain")
CALIB_RUNS = {"HSC/calib/gen/20130101": ("2013-01-01T00:00:00", "2013-06-17T13:07:00"),
              "HSC/calib/gen/20130617": ("2013-06-17T13:07:00", None)}
CALEXP_RUN = "HSC/runs/RC2/w_2026_01/DM-1"
DOCS = {CALIB: "HSC master calibrations", TAGGED: "raws that passed inspection",
        CHAIN: "HSC default search path", OUTER: "alice's search path"}


@dataclass
class FedRepo:
    """A fed repository in daf_butler's universe and what it holds."""

    root: Path
    ids: dict[str, dict[tuple, uuid.UUID]]  # dataset type -> (run, data ID items) -> UUID
    contents: dict[uuid.UUID, bytes]

    def uuid(self, dataset_type: str, run: str, **data_id: Any) -> uuid.UUID:
        key = tuple(sorted(({"instrument": "HSC"} | data_id).items()))
        return self.ids[dataset_type][(run, key)]


def make_fed_repo(root: Path) -> FedRepo:
    """Build the repository the tests export, through fed's own commands."""
    files = root.parent / f"{root.name}-inputs"
    files.mkdir()
    repo = str(root)
    fed("create", repo, "--universe", "daf_butler")
    (files / "records.yaml").write_text(RECORDS)
    fed("insert-dimension-records", repo, files / "records.yaml")
    fed("register-dataset-type", repo, "raw", "YAML", "instrument", "exposure", "detector")
    fed("register-dataset-type", repo, "bias", "YAML", "instrument", "detector")
    fed("register-dataset-type", repo, "calexp_summary", "JSON", "instrument", "visit",
        "detector")
    raws = ["file,instrument,exposure,detector"]
    for exposure in EXPOSURES:
        for detector in (0, 1):
            name = f"raw_{exposure}_{detector}.yaml"
            (files / name).write_text(f"exposure: {exposure}\ndetector: {detector}\n")
            raws.append(f"{name},HSC,{exposure},{detector}")
    _ingest(files, repo, "raw", RAW_RUN, raws, "--id-mode", "deterministic")
    for run, (begin, end) in CALIB_RUNS.items():
        rows = ["file,instrument,detector"]
        for detector in (0, 1):
            name = f"bias_{run.rsplit('/', 1)[1]}_{detector}.yaml"
            (files / name).write_text(f"bias: {run}\ndetector: {detector}\n")
            rows.append(f"{name},HSC,{detector}")
        _ingest(files, repo, "bias", run, rows)
        fed("certify-calibrations", repo, run, CALIB, "bias", "--begin-date", begin,
            *(["--end-date", end] if end else []), "--doc", DOCS[CALIB])
    (files / "calexp.json").write_text('{"psf_sigma": 1.7}')
    _ingest(files, repo, "calexp_summary", CALEXP_RUN,
            ["file,instrument,visit,detector", "calexp.json,HSC,903334,0"])
    fed("associate", repo, TAGGED, "-c", RAW_RUN, "--where", "detector = 0", "--doc",
        DOCS[TAGGED])
    fed("collection-chain", repo, CHAIN, RAW_RUN, CALIB, "--doc", DOCS[CHAIN])
    fed("collection-chain", repo, OUTER, TAGGED, CHAIN, "--doc", DOCS[OUTER])
    ids: dict[str, dict[tuple, uuid.UUID]] = {}
    contents = {}
    with Butler(root) as butler:
        for ref in butler.query_datasets(None, ["*"], find_first=False):
            key = (ref.run, tuple(sorted(ref.required_data_id.items())))
            ids.setdefault(ref.dataset_type.name, {})[key] = ref.id
            contents[ref.id] = Path(butler.get_uri(ref).removeprefix("file://")).read_bytes()
    return FedRepo(root, ids, contents)


def _ingest(files: Path, repo: str, dataset_type: str, run: str, rows: list[str],
            *options: str) -> None:
    table = files / f"{dataset_type}-{run.replace('/', '_')}.csv"
    table.write_text("\n".join(rows) + "\n")
    fed("ingest-files", repo, dataset_type, run, table, "--prefix", files, *options)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> FedRepo:
    return make_fed_repo(tmp_path_factory.mktemp("fed") / "repo")


@pytest.fixture(scope="module")
def imported(repo: FedRepo, tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """The whole repository exported with its files and imported by daf_butler."""
    out = tmp_path_factory.mktemp("export")
    fed("export-butler", repo.root, "-c", OUTER, "-c", "HSC/runs/*", "-o", out / "export.yaml",
        "--with-files", out / "files")
    return Imported(butler_import(out / "new", out / "files", out / "export.yaml"),
                    out / "export.yaml", out / "files")


@dataclass
class Imported:
    butler: Any
    export: Path
    files: Path


def butler_import(root: Path, directory: Path, export: Path) -> Any:
    """A new daf_butler repository (SQLite) with ``export`` imported, files copied."""
    daf_butler.Butler.makeRepo(str(root))
    butler = daf_butler.Butler.from_config(str(root), writeable=True)
    butler.import_(directory=str(directory), filename=str(export), transfer="copy")
    return butler


def tai(text: str | None) -> Any:
    import astropy.time

    return None if text is None else astropy.time.Time(text, scale="tai")


# -- what daf_butler finds ------------------------------------------------------------


def test_collections_come_with_their_types_docs_and_chains(imported: Imported) -> None:
    registry = imported.butler.registry
    CT = daf_butler.CollectionType
    expected = {RAW_RUN: CT.RUN, CALEXP_RUN: CT.RUN, CALIB: CT.CALIBRATION, TAGGED: CT.TAGGED,
                CHAIN: CT.CHAINED, OUTER: CT.CHAINED, **dict.fromkeys(CALIB_RUNS, CT.RUN)}
    assert {c: registry.getCollectionType(c) for c in registry.queryCollections()} == expected
    for name, doc in DOCS.items():
        assert registry.getCollectionDocumentation(name) == doc
    assert list(registry.getCollectionChain(OUTER)) == [TAGGED, CHAIN]
    assert list(registry.getCollectionChain(CHAIN)) == [RAW_RUN, CALIB]
    bias = registry.getDatasetType("bias")
    assert bias.isCalibration() and bias.storageClass_name == "StructuredDataDict"
    assert not registry.getDatasetType("raw").isCalibration()


def test_datasets_keep_their_uuids_runs_tags_and_bytes(repo: FedRepo,
                                                       imported: Imported) -> None:
    butler = imported.butler
    found = {ref.id: ref for ref in butler.registry.queryDatasets(..., collections=...)}
    assert set(found) == set(repo.contents)
    for dataset_type, keys in repo.ids.items():
        for (run, data_id), dataset_id in keys.items():
            ref = found[dataset_id]
            assert (ref.datasetType.name, ref.run) == (dataset_type, run)
            assert dict(ref.dataId.required) == dict(data_id)
            assert butler.getURI(ref).read() == repo.contents[dataset_id]
    tagged = {ref.id for ref in butler.registry.queryDatasets("raw", collections=TAGGED)}
    assert tagged == {repo.uuid("raw", RAW_RUN, exposure=e, detector=0) for e in EXPOSURES}
    raw = repo.uuid("raw", RAW_RUN, exposure=903336, detector=1)
    assert butler.get(found[raw]) == {"exposure": 903336, "detector": 1}
    summary = butler.find_dataset("calexp_summary", instrument="HSC", visit=903334,
                                  detector=0, collections=CALEXP_RUN)
    assert butler.get(summary) == {"psf_sigma": 1.7}


def test_certifications_keep_their_validity_ranges(repo: FedRepo, imported: Imported) -> None:
    registry = imported.butler.registry
    ranges = {(a.ref.id, a.timespan.begin.tai.isot,
               None if a.timespan.end is None else a.timespan.end.tai.isot)
              for a in registry.queryDatasetAssociations(
                  "bias", collections=CALIB,
                  collectionTypes={daf_butler.CollectionType.CALIBRATION})}
    expected = {(repo.uuid("bias", run, detector=detector), f"{begin}.000000",
                 None if end is None else f"{end}.000000")
                for run, (begin, end) in CALIB_RUNS.items() for detector in (0, 1)}
    assert ranges == expected
    for run, when in (("HSC/calib/gen/20130101", "2013-06-17T13:00:00"),
                      ("HSC/calib/gen/20130617", "2013-06-17T13:10:00")):
        span = daf_butler.Timespan(tai(when), tai(when) + 1e-3 * _seconds())
        found = imported.butler.find_dataset("bias", instrument="HSC", detector=1,
                                             collections=OUTER, timespan=span)
        assert found.id == repo.uuid("bias", run, detector=1)


def _seconds() -> Any:
    import astropy.units

    return astropy.units.s


def test_the_export_is_what_daf_butler_writes_for_the_same_datasets(
        imported: Imported, tmp_path: Path) -> None:
    """daf_butler exports the datasets it imported, with the same collections: the blocks
    (dimension records, collections, dataset types, datasets, associations) are the same,
    in the same order; only the paths differ (daf_butler's own file templates)."""
    butler = imported.butler
    theirs_path = tmp_path / "theirs.yaml"
    with butler.export(filename=str(theirs_path)) as export:
        export.saveDatasets(butler.registry.queryDatasets(..., collections=...))
        for name in (CALIB, TAGGED, CHAIN, OUTER):
            export.saveCollection(name)
    ours = export_yaml.load(imported.export.read_text())
    theirs = export_yaml.load(theirs_path.read_text())
    assert {k: v for k, v in ours.items() if k != "data"} \
        == {k: v for k, v in theirs.items() if k != "data"}
    assert _without_paths(ours["data"]) == _without_paths(theirs["data"])
    elements = [b["element"] for b in ours["data"] if b["type"] == "dimension"]
    assert {"visit", "visit_definition", "visit_detector_region",
            "visit_system_membership", "exposure", "group"} <= set(elements)
    assert "band" not in elements


def _without_paths(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for block in blocks:
        for record in block.get("records", []) if block["type"] == "dataset" else []:
            record.pop("path")
    return blocks


# -- selections ---------------------------------------------------------------------


def test_a_selection_exports_what_it_finds_and_the_records_it_needs(
        repo: FedRepo, tmp_path: Path) -> None:
    out = tmp_path / "raws.yaml"
    result = fed("export-butler", repo.root, "-c", CHAIN, "-t", "r*", "--where",
                 "exposure = 903334", "-o", out, "--with-files", tmp_path / "files")
    assert "exported 2 datasets" in result.stdout
    data = export_yaml.load(out.read_text())["data"]
    datasets = {r["dataset_id"][0] for b in data if b["type"] == "dataset" for r in b["records"]}
    assert datasets == {repo.uuid("raw", RAW_RUN, exposure=903334, detector=d) for d in (0, 1)}
    records = {b["element"]: b["records"] for b in data if b["type"] == "dimension"}
    assert [r["id"] for r in records["exposure"]] == [903334]
    assert [r["id"] for r in records["detector"]] == [0, 1]
    assert "visit" not in records  # raws have no visit: daf_butler brings none either
    collections = {b["name"]: b["collection_type"] for b in data if b["type"] == "collection"}
    assert collections == {CHAIN: "CHAINED", RAW_RUN: "RUN", CALIB: "CALIBRATION"}
    assert not [b for b in data if b["type"] == "associations"]  # no bias selected
    new = butler_import(tmp_path / "new", tmp_path / "files", out)
    assert {r.id for r in new.registry.queryDatasets(..., collections=...)} == datasets


def test_without_files_the_repository_is_the_import_directory(repo: FedRepo,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "calib.yaml"
    fed("export-butler", repo.root, "-c", CALIB, "-o", out)
    assert not (tmp_path / "files").exists()
    new = butler_import(tmp_path / "new", repo.root, out)
    found = {a.ref.id for a in new.registry.queryDatasetAssociations(
        "bias", collections=CALIB, collectionTypes={daf_butler.CollectionType.CALIBRATION})}
    assert found == set(repo.ids["bias"].values())
    for dataset_id in found:
        (ref,) = [r for r in new.registry.queryDatasets("bias", collections=...)
                  if r.id == dataset_id]
        assert new.getURI(ref).read() == repo.contents[dataset_id]


def test_files_already_copied_are_verified_not_copied_again(repo: FedRepo,
                                                            tmp_path: Path) -> None:
    args = ("export-butler", repo.root, "-c", RAW_RUN, "-o", tmp_path / "e.yaml",
            "--with-files", tmp_path / "files")
    assert "files: 4 copied" in fed(*args).stdout
    assert "files: 0 copied" in fed(*args).stdout and "(4 already there)" in fed(*args).stdout


# -- bad input writes nothing -------------------------------------------------------


def test_a_repository_outside_daf_butlers_universe_is_refused(tmp_path: Path) -> None:
    fed("create", tmp_path / "plain")
    fails("export-butler", tmp_path / "plain", "-c", "*", "-o", tmp_path / "e.yaml",
          "--with-files", tmp_path / "files",
          match=["federation dimension universe", "daf_butler would not know",
                 "--universe daf_butler"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


@pytest.mark.parametrize(("options", "says"), [
    (["-c", "HSC/nope"], "nothing at local matches -c 'HSC/nope'"),
    (["-c", RAW_RUN, "-t", "flat"], "matches -t 'flat'"),
    (["-c", RAW_RUN, "--where", "exposure = = 1"], "cannot parse where expression"),
    (["-c", RAW_RUN, "--where", "exposure.colour = 1"], "unknown field exposure.colour"),
    (["-c", RAW_RUN, "--formatter", "raw=JsonFormatter"], "expected a daf_butler class path"),
    (["-c", RAW_RUN, "--storage-class", "flat=StructuredDataDict"],
     "dataset types this repository does not have: flat"),
])
def test_bad_selections_write_nothing(repo: FedRepo, tmp_path: Path, options: list[str],
                                      says: str) -> None:
    fails("export-butler", repo.root, *options, "-o", tmp_path / "e.yaml", "--with-files",
          tmp_path / "files", match=says)
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_cannot_be_written_is_refused(repo: FedRepo, tmp_path: Path) -> None:
    fails("export-butler", repo.root, "-c", RAW_RUN, "-o", tmp_path / "no" / "e.yaml",
          match="no directory")
    usage_error("export-butler", repo.root, "-c", RAW_RUN, "-o", tmp_path,
                match="is a directory")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        fails("export-butler", repo.root, "-c", RAW_RUN, "-o", locked / "e.yaml",
              match=["cannot write", "Permission denied"])
        assert list(locked.iterdir()) == []


def test_storage_classes_daf_butler_cannot_read_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    built = make_fed_repo(root)
    (tmp_path / "blob.dat").write_bytes(b"\x00\x01")
    (tmp_path / "blob.csv").write_text("file,instrument\nblob.dat,HSC\n")
    fed("register-dataset-type", root, "blob", "Bytes", "instrument")
    fed("ingest-files", root, "blob", "HSC/blobs", tmp_path / "blob.csv")
    out = tmp_path / "out"
    out.mkdir()
    fails("export-butler", root, "-c", "HSC/*", "-o", out / "e.yaml",
          match=["no storage class or formatter for blob (Bytes)", "--formatter TYPE=CLASS",
                 "leave those dataset types out with -t"])
    assert list(out.iterdir()) == []
    fed("export-butler", root, "-c", "HSC/*", "-t", "raw", "-t", "bias", "-o", out / "e.yaml")
    assert len(built.ids["raw"]) == 4


def test_a_corrupted_file_stops_the_export_before_it_is_written(tmp_path: Path) -> None:
    built = make_fed_repo(tmp_path / "repo")
    raw = built.uuid("raw", RAW_RUN, exposure=903336, detector=0)
    with Butler(built.root) as butler:
        path = Path(butler.get_uri(butler.registry.datasets.get(raw)).removeprefix("file://"))
    path.write_bytes(path.read_bytes().replace(b"903336", b"903337"))
    fails("export-butler", built.root, "-c", RAW_RUN, "-o", tmp_path / "e.yaml",
          "--with-files", tmp_path / "files",
          match=["does not match its record", "checksum mismatch", "no export file written"])
    assert not (tmp_path / "e.yaml").exists()
    assert not [p for p in (tmp_path / "files").rglob("*") if ".tmp-" in p.name]


# -- daf_butler -> fed -> daf_butler --------------------------------------------------


def test_a_daf_butler_repository_goes_round_trip_through_fed(
        lsst_butler_repo: ButlerRepo, tmp_path: Path) -> None:  # noqa: F811  (a fixture)
    """What 'fed import-butler' brought in goes back out the same: collections, docs,
    chains, types (their daf_butler storage classes, kept opaque in fed), UUIDs, data IDs,
    tags, validity ranges and bytes, with no names to give back."""
    repo = tmp_path / "fed"
    fed("create", repo, "--universe", "daf_butler")
    fed("import-butler", repo, lsst_butler_repo.export, "--files-from", lsst_butler_repo.root)
    with Butler(repo) as b:
        assert b.registry.dataset_types.get("raw").storage_class \
            == "daf_butler:StructuredDataDict"
    out = tmp_path / "out"
    out.mkdir()
    fails("export-butler", repo, "-c", "*", "-o", out / "e.yaml", "--formatter",
          "flat=lsst.daf.butler.formatters.json.JsonFormatter",
          match="dataset types this repository does not have: flat")
    assert list(out.iterdir()) == []
    fed("export-butler", repo, "-c", "*", "-o", out / "e.yaml", "--with-files", out / "files")
    again = butler_import(tmp_path / "again", out / "files", out / "e.yaml")
    assert _summary(again) == _summary(lsst_butler_repo.butler())


def _summary(butler: Any) -> tuple:
    """A daf_butler repository's collections, dataset types, datasets and associations."""
    registry = butler.registry
    CT = daf_butler.CollectionType
    collections = {name: (registry.getCollectionType(name), registry.getCollectionDocumentation(
        name), tuple(registry.getCollectionChain(name))
        if registry.getCollectionType(name) is CT.CHAINED else None)
        for name in registry.queryCollections()}
    types = {(t.name, t.storageClass_name, t.isCalibration(), tuple(t.dimensions.names))
             for t in registry.queryDatasetTypes()}
    datasets = {(ref.id, ref.datasetType.name, ref.run, tuple(ref.dataId.required.items()),
                 butler.getURI(ref).read())
                for ref in registry.queryDatasets(..., collections=...)}
    associations = {(a.ref.id, a.collection, str(a.timespan))
                    for t in ("raw", "bias") for a in registry.queryDatasetAssociations(
                        t, collections=..., collectionTypes={CT.TAGGED, CT.CALIBRATION})}
    return collections, types, datasets, associations


# -- what daf_butler keeps records of ------------------------------------------------


@pytest.mark.parametrize("version", [v for v in translated.available_versions() if v >= 2])
@pytest.mark.parametrize("installed", [True, False])
def test_elements_with_records_and_populated_ones_are_daf_butlers(
        version: int, installed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which elements have records in an export and which a dimension brings along, as
    daf_butler says, read from its configuration (or, without it, guessed)."""
    if not installed:
        monkeypatch.setattr(export_records, "_elements", lambda universe: None)
    ours = translated.load(version)
    config = translated.config_dir() / "old_dimensions" / f"daf_butler_universe{version}.yaml"
    theirs = daf_butler.DimensionUniverse() if version == daf_butler.DimensionUniverse().version \
        else daf_butler.DimensionUniverse(daf_butler.DimensionConfig(str(config)))
    assert export_records.without_records(ours) \
        == {e.name for e in theirs.elements if not e.has_own_table}
    populated = {e.name: d.name for d in theirs.elements
                 for e in theirs.get_elements_populated_by(d) if e.name != d.name}
    assert export_records.populated_by(ours) == populated


def test_hash_fields_are_written_as_daf_butler_writes_bytes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    fed("create", repo, "--universe", "daf_butler")
    (tmp_path / "records.yaml").write_text(
        "skymap: [{skymap: rings, hash: '0102ff', tract_max: 10, patch_nx_max: 2, "
        "patch_ny_max: 2}]\n")
    fed("insert-dimension-records", repo, tmp_path / "records.yaml")
    fed("register-dataset-type", repo, "skyMap", "YAML", "skymap")
    (tmp_path / "sky.yaml").write_text("rings: 12\n")
    (tmp_path / "sky.csv").write_text("file,skymap\nsky.yaml,rings\n")
    fed("ingest-files", repo, "skyMap", "skymaps", tmp_path / "sky.csv")
    fed("export-butler", repo, "-c", "skymaps", "-o", tmp_path / "e.yaml")
    assert "hash: !!binary" in (tmp_path / "e.yaml").read_text()
    new = butler_import(tmp_path / "new", repo, tmp_path / "e.yaml")
    (record,) = new.registry.queryDimensionRecords("skymap")
    assert (record.name, record.hash, record.tract_max) == ("rings", b"\x01\x02\xff", 10)
    assert new.get("skyMap", skymap="rings", collections="skymaps") == {"rings": 12}


def test_files_ingested_in_place_are_copied_under_their_run(tmp_path: Path) -> None:
    """A file ingested with --transfer direct (an absolute path) is listed where it is, or,
    with --with-files, copied to <run>/_external/<UUID><suffix>."""
    repo = make_fed_repo(tmp_path / "repo")
    outside = tmp_path / "outside" / "raw.yaml"
    outside.parent.mkdir()
    outside.write_text("exposure: 903336\ndetector: 2\n")
    (tmp_path / "t.csv").write_text(f"file,instrument,exposure,detector\n{outside},HSC,903336,2\n")
    fed("ingest-files", repo.root, "raw", "HSC/raw/direct", tmp_path / "t.csv",
        "--transfer", "direct")
    for files in (tmp_path / "files", None):
        out = tmp_path / f"e-{files is None}.yaml"
        fed("export-butler", repo.root, "-c", "HSC/raw/direct", "-o", out,
            *(["--with-files", files] if files else []))
        (block,) = [b for b in export_yaml.load(out.read_text())["data"]
                    if b["type"] == "dataset"]
        (record,) = block["records"]
        assert record["path"] == (str(outside) if files is None else
                                  f"HSC/raw/direct/_external/{record['dataset_id'][0]}.yaml")
        new = butler_import(tmp_path / f"new-{files is None}", files or repo.root, out)
        assert new.get("raw", instrument="HSC", exposure=903336, detector=2,
                       collections="HSC/raw/direct") == {"exposure": 903336, "detector": 2}


def test_copies_report_their_progress_in_files_and_bytes(repo: FedRepo, tmp_path: Path) -> None:
    from federation.operations.export_butler import export_butler
    from federation.sync.progress import Progress

    class Recorder(Progress):
        def __init__(self) -> None:
            self.plan, self.files, self.bytes = None, 0, 0

        def planned(self, files: int, nbytes: int) -> None:
            self.plan = (files, nbytes)

        def advance(self, files: int, nbytes: int) -> None:
            self.files += files
            self.bytes += nbytes

    size = sum(len(repo.contents[i]) for i in repo.ids["raw"].values())
    for copied in (4, 0):  # the second time every file is there already
        seen = Recorder()
        report = export_butler(repo.root, tmp_path / "e.yaml", collections=[RAW_RUN],
                               with_files=tmp_path / "files", progress=seen)
        assert (report.copied, report.already_there) == (copied, 4 - copied)
        assert (seen.plan, seen.files, seen.bytes) == ((4, size), 4, size)
