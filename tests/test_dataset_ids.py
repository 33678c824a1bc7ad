"""Dataset IDs: deterministic ones are exactly the LSST butler's, random ones are UUIDv7.

The comparisons run against the real lsst.daf.butler (the ``test`` extra installs it).
Without it they are skipped, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import json
import os
import threading
import types
import uuid
from pathlib import Path

import pytest

from federation import model
from federation.butler import Butler, FileDataset
from federation.dimensions.universe import DimensionUniverse
from federation.model import IdMode, make_dataset_id

# What daf_butler's DATAID_TYPE gives HSC raw exposure 903334 detector 0 (from the issue).
HSC_RAW_ID = uuid.UUID("5969885e-36c4-58af-b4ce-63bc95b5df43")
HSC_RAW = {"instrument": "HSC", "exposure": 903334, "detector": 0}

# (dataset type, its dimensions, a data ID of its required dimensions)
CASES = [
    ("raw", ["instrument", "exposure", "detector"], HSC_RAW),
    ("calexp", ["instrument", "visit", "detector"],
     {"instrument": "HSC", "visit": 903336, "detector": 50}),
    ("flat", ["instrument", "detector", "physical_filter"],
     {"instrument": "HSC", "detector": 10, "physical_filter": "HSC-R"}),
    ("deepCoadd", ["band", "skymap", "tract", "patch"],
     {"band": "i", "skymap": "hsc_rings_v1", "tract": 9813, "patch": 42}),
    ("camera", ["instrument"], {"instrument": "HSC"}),
    ("skyconfig", [], {}),
]
RUNS = ["HSC/raw/all", "u/alice/DM-12345/step1"]


@pytest.fixture(scope="module")
def daf_butler():
    """lsst.daf.butler, imported only here (federation/ never imports it)."""
    try:
        import lsst.daf.butler as daf_butler
    except ImportError as exc:
        message = f"lsst.daf.butler is not importable ({exc}); pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return daf_butler


def lsst_id(daf_butler, name: str, dimensions: list[str], data_id: dict, mode: IdMode,
            run: str) -> uuid.UUID:
    """The ID daf_butler gives this dataset, through its public DatasetRef."""
    universe = daf_butler.DimensionUniverse()
    dataset_type = daf_butler.DatasetType(name, dimensions, "StructuredDataDict",
                                          universe=universe)
    gen = daf_butler.DatasetIdGenEnum
    lsst_mode = {IdMode.RANDOM: gen.UNIQUE, IdMode.DETERMINISTIC: gen.DATAID_TYPE,
                 IdMode.DETERMINISTIC_RUN: gen.DATAID_TYPE_RUN}[mode]
    assert set(dataset_type.dimensions.required) == set(data_id)
    return daf_butler.DatasetRef(dataset_type, data_id, run=run,
                                 id_generation_mode=lsst_mode).id


def fed_id(name: str, dimensions: list[str], data_id: dict, mode: IdMode,
           run: str) -> uuid.UUID:
    """The ID fed gives it, from the required dimensions of fed's own universe."""
    required = DimensionUniverse.default().group(dimensions).required
    return make_dataset_id(mode, name, {n: data_id[n] for n in required}, run)


# -- deterministic IDs against daf_butler ------------------------------------------------


def test_the_issue_raw_gets_daf_butlers_id() -> None:
    assert make_dataset_id(IdMode.DETERMINISTIC, "raw", HSC_RAW) == HSC_RAW_ID
    # The data ID's order does not matter; the run does not enter this mode.
    reordered = dict(reversed(HSC_RAW.items()))
    assert make_dataset_id("deterministic", "raw", reordered, "HSC/raw/all") == HSC_RAW_ID


def test_daf_butler_gives_the_issue_id(daf_butler) -> None:
    assert lsst_id(daf_butler, *CASES[0], IdMode.DETERMINISTIC, RUNS[0]) == HSC_RAW_ID


@pytest.mark.parametrize("mode", [IdMode.DETERMINISTIC, IdMode.DETERMINISTIC_RUN])
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize(("name", "dimensions", "data_id"), CASES, ids=[c[0] for c in CASES])
def test_deterministic_ids_match_daf_butler(daf_butler, name, dimensions, data_id, mode,
                                            run) -> None:
    expected = lsst_id(daf_butler, name, dimensions, data_id, mode, run)
    got = fed_id(name, dimensions, data_id, mode, run)
    assert got == expected
    assert got.version == 5


def test_deterministic_modes_differ_where_they_should() -> None:
    ids = {fed_id(*CASES[0], mode, run) for mode in (IdMode.DETERMINISTIC,
                                                     IdMode.DETERMINISTIC_RUN) for run in RUNS}
    assert len(ids) == 3  # one per run with the run, one without
    with pytest.raises(ValueError, match="needs the run"):
        make_dataset_id(IdMode.DETERMINISTIC_RUN, "raw", HSC_RAW)


# -- through fed's Butler --------------------------------------------------------------


@pytest.mark.parametrize("how", ["put", "ingest"])
def test_butler_writes_the_issue_raw_with_daf_butlers_id(butler: Butler, tmp_path: Path,
                                                         how: str) -> None:
    butler.registry.register_dataset_type("raw", ["instrument", "exposure", "detector"],
                                          "Bytes")
    if how == "put":
        ref = butler.put(b"raw 903334 0", "raw", HSC_RAW, id_mode="deterministic")
    else:
        path = tmp_path / "HSCA90333400.fits"
        path.write_bytes(b"raw 903334 0")
        (ref,) = butler.ingest([FileDataset(path, "raw", dict(HSC_RAW))],
                               id_mode=IdMode.DETERMINISTIC)
    assert ref.id == HSC_RAW_ID
    assert butler.find_dataset("raw", HSC_RAW).id == HSC_RAW_ID


def test_butler_deterministic_run_ids_match_daf_butler(daf_butler, butler: Butler) -> None:
    """String values, and an implied value (band) in fed's complete data ID, as daf_butler."""
    butler.registry.register_dataset_type("flat", ["instrument", "detector",
                                                   "physical_filter"], "JSON")
    run = "HSC/calib/gen/DM-1"
    data_id = {"instrument": "HSC", "detector": 1, "physical_filter": "HSC-R"}
    ref = butler.put({"gain": 1.0}, "flat", data_id, run=run, id_mode="deterministic-run")
    assert ref.data_id["band"] == "r"
    assert ref.id == lsst_id(daf_butler, "flat", list(data_id), data_id,
                             IdMode.DETERMINISTIC_RUN, run)


def test_a_raw_ingested_by_daf_butler_and_by_fed_has_one_id(daf_butler, butler: Butler,
                                                             tmp_path: Path) -> None:
    """The same raw file, ingested deterministically into a real daf_butler repository and
    into a fed one, gets the same UUID."""
    path = tmp_path / "HSCA90333400.json"
    path.write_text(json.dumps({"exposure": 903334, "detector": 0}))
    run = "HSC/raw/all"

    lsst_root = tmp_path / "lsst"
    daf_butler.Butler.makeRepo(str(lsst_root))
    lsst = daf_butler.Butler.from_config(str(lsst_root), writeable=True, run=run)
    registry = lsst.registry
    registry.insertDimensionData("instrument", {
        "name": "HSC", "detector_max": 200, "visit_max": 21474800, "exposure_max": 21474800,
        "class_name": "lsst.obs.subaru.HyperSuprimeCam"})
    registry.insertDimensionData("physical_filter",
                                 {"instrument": "HSC", "name": "HSC-R", "band": "r"})
    registry.insertDimensionData("day_obs", {"instrument": "HSC", "id": 20130617})
    registry.insertDimensionData("group", {"instrument": "HSC", "name": "903334"})
    registry.insertDimensionData("detector", {"instrument": "HSC", "id": 0,
                                              "full_name": "1_00", "purpose": "SCIENCE"})
    registry.insertDimensionData("exposure", {
        "instrument": "HSC", "id": 903334, "obs_id": "HSCA90333400",
        "physical_filter": "HSC-R", "day_obs": 20130617, "group": "903334"})
    raw = daf_butler.DatasetType("raw", ["instrument", "exposure", "detector"],
                                 "StructuredDataDict", universe=lsst.dimensions)
    registry.registerDatasetType(raw)
    registry.registerRun(run)
    ref = daf_butler.DatasetRef(raw, HSC_RAW, run=run,
                                id_generation_mode=daf_butler.DatasetIdGenEnum.DATAID_TYPE)
    lsst.ingest(daf_butler.FileDataset(
        path=str(path), refs=[ref], formatter="lsst.daf.butler.formatters.json.JsonFormatter"),
        transfer="copy")
    (lsst_ref,) = registry.queryDatasets("raw", collections=run)

    butler.registry.register_dataset_type("raw", ["instrument", "exposure", "detector"],
                                          "Bytes")
    (fed_ref,) = butler.ingest([FileDataset(path, "raw", dict(HSC_RAW))], run=run,
                               id_mode="deterministic")
    assert fed_ref.id == lsst_ref.id == HSC_RAW_ID


# -- random IDs ------------------------------------------------------------------------


def unix_ms(value: uuid.UUID) -> int:
    return value.int >> 80


def test_random_ids_are_uuid7_time_ordered_and_unique() -> None:
    before = model.time.time_ns() // 1_000_000
    ids = [make_dataset_id(IdMode.RANDOM, "raw", HSC_RAW) for _ in range(5000)]
    after = model.time.time_ns() // 1_000_000
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # sorted by creation, as bytes and as text
    assert [str(i) for i in ids] == sorted(str(i) for i in ids)
    assert before <= unix_ms(ids[0]) and unix_ms(ids[-1]) <= after + 1


def test_uuid7_keeps_order_within_a_millisecond_and_when_the_clock_steps_back(
        monkeypatch) -> None:
    now = [1_750_000_000_000 * 1_000_000]
    monkeypatch.setattr(model, "_uuid7_last", (0, 0))  # restored afterwards
    monkeypatch.setattr(model, "time", types.SimpleNamespace(time_ns=lambda: now[0]))
    ids = [model.uuid7() for _ in range(100)]
    now[0] -= 5_000 * 1_000_000  # the clock goes back five seconds
    ids += [model.uuid7() for _ in range(100)]
    now[0] += 10_000 * 1_000_000
    ids += [model.uuid7()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {unix_ms(i) for i in ids[:200]} == {1_750_000_000_000}
    assert unix_ms(ids[-1]) == 1_750_000_005_000


def test_uuid7_is_unique_across_threads() -> None:
    made: list[list[uuid.UUID]] = [[] for _ in range(8)]

    def make(out: list[uuid.UUID]) -> None:
        out.extend(model.uuid7() for _ in range(2000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({i for out in made for i in out}) == 8 * 2000
    assert all(out == sorted(out) for out in made)


def test_daf_butler_unique_ids_are_uuid7_too(daf_butler) -> None:
    assert lsst_id(daf_butler, *CASES[0], IdMode.RANDOM, RUNS[0]).version == 7


def test_butler_puts_get_time_ordered_uuid7s(butler: Butler) -> None:
    butler.registry.register_dataset_type("raw", ["instrument", "exposure", "detector"],
                                          "Bytes")
    refs = [butler.put(b"x", "raw", instrument="HSC", exposure=903334, detector=d)
            for d in range(4)]
    ids = [ref.id for ref in refs]
    assert all(i.version == 7 for i in ids) and ids == sorted(ids)
