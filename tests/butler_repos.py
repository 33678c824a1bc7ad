"""A real LSST butler (daf_butler) repository and its YAML export, for interop tests.

Use it from a test module, with a fixture of its own (built once per module)::

    from butler_repos import ButlerRepo, make_butler_repo

    @pytest.fixture(scope="module")
    def lsst(tmp_path_factory) -> ButlerRepo:
        return make_butler_repo(tmp_path_factory.mktemp("lsst") / "repo")

    def test_something(lsst: ButlerRepo) -> None:
        lsst.export      # the export file (format 1.0.x, written by Butler.export)
        lsst.root        # the daf_butler repository (its datastore root too)
        lsst.raws        # {(exposure, detector): UUID}; lsst.biases {(run, detector): UUID}
        lsst.paths       # {UUID: file path relative to lsst.root}

(or import the ready-made :func:`lsst_butler_repo` fixture, ``# noqa: F401, F811``),
and write another export of it with :func:`export_butler_repo`.

The repository holds, in daf_butler's default universe:

- instrument HSC, physical filters HSC-R/HSC-I (bands r/i), one day_obs, one
  group per exposure, detectors 0-2 (:data:`DETECTORS`), exposures 903334-903337
  (:data:`EXPOSURES`) with time spans, and for each a visit with a region, its
  visit_definition and visit_detector_regions (visit_system 0);
- ``raw`` (instrument, exposure, detector; StructuredDataDict): one JSON file per
  exposure x detector, ingested (copied) with deterministic IDs (``DATAID_TYPE``,
  the same UUID ``fed ingest-files --id-mode deterministic`` gives) into RUN
  ``HSC/raw/all``;
- ``bias`` (instrument, detector; a calibration): one per detector in each of two
  RUNs, ``HSC/calib/gen/20130101`` and ``HSC/calib/gen/20130617``, certified in
  CALIBRATION ``HSC/calib`` over [2013-01-01, 2013-06-17 12:00) and
  [2013-06-17 12:00, unbounded) TAI (:data:`VALIDITY`);
- TAGGED ``u/alice/good-raws`` (the raws of detector 0, :func:`ButlerRepo.tagged`);
- CHAINED ``HSC/defaults`` = [HSC/raw/all, HSC/calib] and CHAINED
  ``u/alice/chain`` = [u/alice/good-raws, HSC/defaults] (a chain of a chain).

The export (``Butler.export``, what ``butler`` itself writes) holds every dataset,
every collection above with its docs and the visit records (the rest come with
the datasets' data IDs). The files stay in the repository: ``files_from`` for an
import is :attr:`ButlerRepo.root`.

lsst.daf.butler is imported inside the functions, so importing this module costs
nothing when it is not installed (the fixture then skips, or fails under ``CI``).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

INSTRUMENT = "HSC"
DETECTORS = (0, 1, 2)
EXPOSURES = {903334: "HSC-R", 903335: "HSC-R", 903336: "HSC-I", 903337: "HSC-I"}
DAY_OBS = 20130617
RAW_RUN = "HSC/raw/all"
CALIB = "HSC/calib"
CALIB_RUNS = ("HSC/calib/gen/20130101", "HSC/calib/gen/20130617")
# Validity of the biases of each calibration RUN, as TAI ISO times (None: unbounded).
VALIDITY = {CALIB_RUNS[0]: ("2013-01-01T00:00:00", "2013-06-17T12:00:00"),
            CALIB_RUNS[1]: ("2013-06-17T12:00:00", None)}
TAGGED = "u/alice/good-raws"
TAGGED_DOC = "raws of detector 0 that passed inspection"
CALIB_DOC = "HSC master calibrations"
CHAIN = "HSC/defaults"
CHAIN_CHILDREN = (RAW_RUN, CALIB)
NESTED_CHAIN = "u/alice/chain"
NESTED_CHILDREN = (TAGGED, CHAIN)
# A square of 0.2 deg per visit, on the equator.
REGION_DEGREES = 0.2


@dataclass
class ButlerRepo:
    """A daf_butler repository built by :func:`make_butler_repo` and its export."""

    root: Path
    export: Path
    raws: dict[tuple[int, int], uuid.UUID] = field(default_factory=dict)
    biases: dict[tuple[str, int], uuid.UUID] = field(default_factory=dict)  # (run, detector)
    paths: dict[uuid.UUID, str] = field(default_factory=dict)  # UUID -> path in datastore

    def tagged(self) -> set[uuid.UUID]:
        """The datasets of :data:`TAGGED`."""
        return {i for (_, detector), i in self.raws.items() if detector == 0}

    def file(self, dataset_id: uuid.UUID) -> Path:
        """A dataset's file in the daf_butler datastore."""
        return self.root / self.paths[dataset_id]

    def butler(self, writeable: bool = False) -> Any:
        """A daf_butler Butler on the repository."""
        daf_butler = import_daf_butler()
        return daf_butler.Butler.from_config(str(self.root), writeable=writeable)


def import_daf_butler() -> Any:
    """lsst.daf.butler, or a skip (a failure under CI) when it is not installed."""
    try:
        import lsst.daf.butler as daf_butler
    except ImportError as exc:
        message = f"lsst.daf.butler is not importable ({exc}); pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return daf_butler


def _tai(text: str | None) -> Any:
    import astropy.time

    return None if text is None else astropy.time.Time(text, scale="tai")


def _region(index: int) -> Any:
    from lsst.sphgeom import ConvexPolygon, LonLat, UnitVector3d

    ra, size = 10.0 + index * REGION_DEGREES, REGION_DEGREES
    corners = [(ra, 0.0), (ra + size, 0.0), (ra + size, size), (ra, size)]
    return ConvexPolygon([UnitVector3d(LonLat.fromDegrees(a, d)) for a, d in corners])


def raw_content(exposure: int, detector: int) -> bytes:
    """The bytes of a raw's file (JSON)."""
    return json.dumps({"exposure": exposure, "detector": detector,
                       "pixels": list(range(detector, detector + 16))}).encode()


def _insert_records(registry: Any, daf_butler: Any) -> None:
    Timespan = daf_butler.Timespan
    registry.insertDimensionData("instrument", {
        "name": INSTRUMENT, "detector_max": 200, "visit_max": 21474800,
        "exposure_max": 21474800, "class_name": "lsst.obs.subaru.HyperSuprimeCam"})
    registry.insertDimensionData("physical_filter",
                                 {"instrument": INSTRUMENT, "name": "HSC-R", "band": "r"},
                                 {"instrument": INSTRUMENT, "name": "HSC-I", "band": "i"})
    registry.insertDimensionData("day_obs", {
        "instrument": INSTRUMENT, "id": DAY_OBS,
        "timespan": Timespan(_tai("2013-06-17T12:00:00"), _tai("2013-06-18T12:00:00"))})
    registry.insertDimensionData("detector", *[
        {"instrument": INSTRUMENT, "id": d, "full_name": f"1_{d:02d}", "purpose": "SCIENCE"}
        for d in DETECTORS])
    registry.insertDimensionData("visit_system", {"instrument": INSTRUMENT, "id": 0,
                                                  "name": "one-to-one"})
    for index, (exposure, physical_filter) in enumerate(EXPOSURES.items()):
        span = Timespan(_tai(f"2013-06-17T13:{index:02d}:00"),
                        _tai(f"2013-06-17T13:{index:02d}:30"))
        registry.insertDimensionData("group", {"instrument": INSTRUMENT, "name": str(exposure)})
        registry.insertDimensionData("exposure", {
            "instrument": INSTRUMENT, "id": exposure, "obs_id": f"HSCA{exposure}00",
            "physical_filter": physical_filter, "day_obs": DAY_OBS, "group": str(exposure),
            "timespan": span, "exposure_time": 30.0, "observation_type": "science"})
        registry.insertDimensionData("visit", {
            "instrument": INSTRUMENT, "id": exposure, "name": f"v{exposure}",
            "physical_filter": physical_filter, "day_obs": DAY_OBS, "timespan": span,
            "region": _region(index)})
        registry.insertDimensionData("visit_definition", {
            "instrument": INSTRUMENT, "exposure": exposure, "visit": exposure})
        registry.insertDimensionData("visit_system_membership", {
            "instrument": INSTRUMENT, "visit_system": 0, "visit": exposure})
        registry.insertDimensionData("visit_detector_region", *[
            {"instrument": INSTRUMENT, "visit": exposure, "detector": d,
             "region": _region(index)} for d in DETECTORS])


def make_butler_repo(root: Path, export: Path | None = None) -> ButlerRepo:
    """Build the repository described in the module docstring at ``root`` and write its
    export to ``export`` (default: ``root.parent / "export.yaml"``)."""
    daf_butler = import_daf_butler()
    daf_butler.Butler.makeRepo(str(root))
    lsst = daf_butler.Butler.from_config(str(root), writeable=True, run=RAW_RUN)
    registry = lsst.registry
    _insert_records(registry, daf_butler)
    out = ButlerRepo(root=root, export=export or root.parent / "export.yaml")

    raw = daf_butler.DatasetType("raw", ["instrument", "exposure", "detector"],
                                 "StructuredDataDict", universe=lsst.dimensions)
    registry.registerDatasetType(raw)
    registry.registerRun(RAW_RUN)
    incoming = root.parent / "incoming"
    incoming.mkdir(exist_ok=True)
    files = []
    for exposure in EXPOSURES:
        for detector in DETECTORS:
            path = incoming / f"HSCA{exposure}00-{detector}.json"
            path.write_bytes(raw_content(exposure, detector))
            ref = daf_butler.DatasetRef(
                raw, {"instrument": INSTRUMENT, "exposure": exposure, "detector": detector},
                run=RAW_RUN, id_generation_mode=daf_butler.DatasetIdGenEnum.DATAID_TYPE)
            files.append(daf_butler.FileDataset(
                path=str(path), refs=[ref],
                formatter="lsst.daf.butler.formatters.json.JsonFormatter"))
            out.raws[exposure, detector] = ref.id
    lsst.ingest(*files, transfer="copy")

    bias = daf_butler.DatasetType("bias", ["instrument", "detector"], "StructuredDataDict",
                                  universe=lsst.dimensions, isCalibration=True)
    registry.registerDatasetType(bias)
    registry.registerCollection(CALIB, daf_butler.CollectionType.CALIBRATION, doc=CALIB_DOC)
    bias_refs = []
    for run in CALIB_RUNS:
        registry.registerRun(run)
        refs = [lsst.put({"bias": detector, "run": run}, bias, instrument=INSTRUMENT,
                         detector=detector, run=run) for detector in DETECTORS]
        begin, end = VALIDITY[run]
        registry.certify(CALIB, refs, daf_butler.Timespan(_tai(begin), _tai(end)))
        out.biases.update({(run, ref.dataId["detector"]): ref.id for ref in refs})
        bias_refs += refs

    registry.registerCollection(TAGGED, daf_butler.CollectionType.TAGGED, doc=TAGGED_DOC)
    raw_refs = list(registry.queryDatasets("raw", collections=RAW_RUN))
    registry.associate(TAGGED, [r for r in raw_refs if r.id in out.tagged()])
    registry.registerCollection(CHAIN, daf_butler.CollectionType.CHAINED)
    registry.setCollectionChain(CHAIN, list(CHAIN_CHILDREN))
    registry.registerCollection(NESTED_CHAIN, daf_butler.CollectionType.CHAINED)
    registry.setCollectionChain(NESTED_CHAIN, list(NESTED_CHILDREN))

    root_path = root.resolve()
    for ref in raw_refs + bias_refs:
        location = Path(lsst.getURI(ref).ospath).resolve()
        out.paths[ref.id] = location.relative_to(root_path).as_posix()
    export_butler_repo(out, out.export)
    return out


def export_butler_repo(repo: ButlerRepo, path: Path, *, datasets: bool = True) -> Path:
    """Write the repository's export (``Butler.export``) to ``path``: every collection,
    every dataset (with ``datasets``) and the visit records."""
    daf_butler = import_daf_butler()
    lsst = daf_butler.Butler.from_config(str(repo.root))
    registry = lsst.registry
    with lsst.export(filename=str(path)) as export:
        if datasets:
            refs = list(registry.queryDatasets(..., collections=[RAW_RUN, *CALIB_RUNS]))
            export.saveDatasets(refs)
        for element in ("visit_system", "visit", "visit_definition",
                        "visit_system_membership", "visit_detector_region"):
            export.saveDimensionData(element, registry.queryDimensionRecords(element))
        for name in (CALIB, TAGGED, CHAIN, NESTED_CHAIN):
            export.saveCollection(name)
    return path


@pytest.fixture(scope="module")
def lsst_butler_repo(tmp_path_factory: pytest.TempPathFactory) -> ButlerRepo:
    """The repository and its export, built once per test module (do not modify them;
    copy the export to change it)."""
    return make_butler_repo(tmp_path_factory.mktemp("lsst") / "repo")
