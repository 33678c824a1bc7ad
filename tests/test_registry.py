"""The registry on SQLite and PostgreSQL: schema, universe, records, data IDs, dataset
types and IDs, collections, calibrations, the journal, ownership and concurrent writers.

Every test here runs once per database through the ``db_url`` fixture (directly or
through ``repo``/``butler``).
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import HSC_RECORDS, insert_hsc_records

from federation.butler import Butler
from federation.config import RepoConfig
from federation.dimensions.universe import DimensionUniverse
from federation.errors import (
    CalibrationError,
    CollectionError,
    ConfigError,
    ConflictError,
    DataIdError,
    DatasetTypeError,
    DimensionRecordError,
    ExpressionError,
    InputError,
    MissingDatasetError,
    SchemaVersionError,
)
from federation.model import CollectionType, DatasetRef, IdMode, data_id_key, make_dataset_id
from federation.registry.registry import Registry
from federation.registry.schema import SCHEMA_VERSION
from federation.timespan import Timespan

RAW_DIMS = ("instrument", "exposure", "detector")
BIAS_DIMS = ("instrument", "detector")
RAW_ID = {"instrument": "HSC", "exposure": 903334, "detector": 1}


# -- fixtures and helpers ------------------------------------------------------------


@pytest.fixture
def registry_url(db_url: str | None, tmp_path: Path) -> str:
    return db_url if db_url is not None else f"sqlite:///{tmp_path}/r.db"


@pytest.fixture
def registry(registry_url: str):
    reg = Registry.create(registry_url, site="NCSA")
    yield reg
    reg.close()


@pytest.fixture
def hsc(registry: Registry) -> Registry:
    """A registry with the HSC records and the raw (exposure) and bias dataset types."""
    insert_hsc_records(registry)
    registry.register_dataset_type("raw", RAW_DIMS, "JSON")
    registry.register_dataset_type("bias", BIAS_DIMS, "JSON")
    return registry


@pytest.fixture
def raw_butler(butler: Butler) -> Butler:
    """The conftest butler (HSC records, run HSC/raw/all) with raw and bias registered."""
    butler.registry.register_dataset_type("raw", RAW_DIMS, "JSON")
    butler.registry.register_dataset_type("bias", BIAS_DIMS, "JSON")
    return butler


class Journal:
    """Watches a registry's journal: what did the last operation append?"""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.seq = registry.db.last_seq()

    def new(self) -> list[tuple]:
        """Entries appended since the last call, checked to continue the sequence."""
        entries = list(self.registry.db.entries(after=self.seq))
        seqs = [e.seq for e in entries]
        assert seqs == list(range(self.seq + 1, self.seq + 1 + len(seqs))), seqs
        assert self.registry.db.last_seq() == (seqs[-1] if seqs else self.seq)
        if seqs:
            self.seq = seqs[-1]
        return entries

    def kinds(self) -> list[str]:
        return [e.kind for e in self.new()]


def db_url_of(repo: Path) -> str:
    return RepoConfig.load(repo).db_url


def stored_files(root: Path) -> list[Path]:
    """Every file of a repository's datastore (not the registry or the config)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(
        ("registry.sqlite3", "federation.yaml")))


# -- schema version --------------------------------------------------------------------


def test_schema_version_site_and_universe_are_stored(registry_url: str) -> None:
    Registry.create(registry_url, site="NCSA").close()
    engine = sa.create_engine(registry_url)
    with engine.connect() as conn:
        meta = dict(conn.execute(sa.text("SELECT key, value FROM meta")).all())
    engine.dispose()
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["site"] == "NCSA"
    assert DimensionUniverse.from_yaml(meta["universe"]).dimensions == \
        DimensionUniverse.default().dimensions
    reopened = Registry.open(registry_url)
    try:
        assert reopened.site == "NCSA"
        assert list(reopened.universe.dimensions) == list(DimensionUniverse.default().dimensions)
    finally:
        reopened.close()


def _set_meta(url: str, key: str, value: str | None) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if value is None:
            conn.execute(sa.text("DELETE FROM meta WHERE key = :k"), {"k": key})
        else:
            conn.execute(sa.text("UPDATE meta SET value = :v WHERE key = :k"),
                         {"v": value, "k": key})
    engine.dispose()


def test_unknown_schema_version_is_refused_before_reading_anything(repo: Path) -> None:
    url = db_url_of(repo)
    _set_meta(url, "schema_version", "99")
    # Were the registry read any further, this universe would fail with a ConfigError.
    _set_meta(url, "universe", "dimensions: [this is: not a universe")
    with pytest.raises(SchemaVersionError) as info:
        Registry.open(url)
    message = str(info.value)
    assert re.search(r"\b99\b", message)
    assert re.search(rf"\b{SCHEMA_VERSION}\b", message)
    with pytest.raises(SchemaVersionError, match="99"):
        Butler(repo)


def test_missing_schema_version_is_refused(repo: Path) -> None:
    _set_meta(db_url_of(repo), "schema_version", None)
    with pytest.raises(SchemaVersionError, match="no schema version"):
        Butler(repo)


def test_damaged_meta_is_reported(repo: Path) -> None:
    _set_meta(db_url_of(repo), "universe", None)
    with pytest.raises(ConfigError, match="universe"):
        Butler(repo)


def test_create_twice_and_open_non_registry_fail(registry_url: str, tmp_path: Path) -> None:
    Registry.create(registry_url, site="NCSA").close()
    with pytest.raises(ConfigError, match="already"):
        Registry.create(registry_url, site="NCSA")
    with pytest.raises(ConfigError, match="site"):
        Registry.create(f"sqlite:///{tmp_path}/other.db", site="bad site!")


def test_open_database_without_registry_fails(db_url: str | None, tmp_path: Path) -> None:
    url = db_url if db_url is not None else f"sqlite:///{tmp_path}/empty.db"
    with pytest.raises(ConfigError):
        Registry.open(url)


# -- universe --------------------------------------------------------------------------


def test_default_universe(registry: Registry) -> None:
    u = registry.universe
    for name in ("instrument", "detector", "physical_filter", "band", "day_obs", "exposure",
                 "visit", "skymap", "tract", "patch"):
        assert name in u
    assert u["physical_filter"].requires == ("instrument",)
    assert u["physical_filter"].implies == ("band",)
    assert set(u["exposure"].implies) == {"physical_filter", "day_obs"}
    assert u["exposure"].has_timespan and u["day_obs"].has_timespan
    assert not u["detector"].has_timespan
    assert u["detector"].python_type is int and u["instrument"].python_type is str
    assert set(u["patch"].requires) == {"skymap", "tract"}
    # Dependencies come first in the universe's order.
    order = list(u.dimensions)
    assert order.index("instrument") < order.index("physical_filter") < order.index("exposure")
    assert order.index("band") < order.index("physical_filter")
    group = u.group(RAW_DIMS)
    assert set(group.required) == {"instrument", "exposure", "detector"}
    assert set(group.implied) == {"physical_filter", "band", "day_obs"}
    assert u.group(["patch"]).required == ("skymap", "tract", "patch")
    with pytest.raises(ConfigError, match="camera"):
        u["camera"]


CUSTOM_UNIVERSE = """
version: 3
dimensions:
  telescope:
    key: string
    metadata: {site_name: string}
  filter:
    key: string
  camera:
    key: string
    requires: [telescope]
    implies: [filter]
  night:
    key: int
    requires: [telescope]
    timespan: true
"""


def test_custom_universe_is_used_and_preserved(registry_url: str, tmp_path: Path) -> None:
    path = tmp_path / "universe.yaml"
    path.write_text(CUSTOM_UNIVERSE)
    universe = DimensionUniverse.from_file(path)
    reg = Registry.create(registry_url, site="NCSA", universe=universe)
    try:
        reg.insert_dimension_records("telescope", [{"telescope": "Rubin", "site_name": "Pachon"}])
        reg.insert_dimension_records("camera", [
            {"telescope": "Rubin", "camera": "LSSTCam", "filter": "r"}])
        reg.register_dataset_type("flat", ["camera"], "JSON")
    finally:
        reg.close()
    reg = Registry.open(registry_url)
    try:
        assert list(reg.universe.dimensions) == list(universe.dimensions)
        assert reg.universe.version == 3
        assert "exposure" not in reg.universe
        assert reg.universe["camera"].implies == ("filter",)
        assert reg.universe["night"].has_timespan
        flat = reg.get_dataset_type("flat")
        assert flat.dimensions.required == ("telescope", "camera")
        full, _ = reg.expand_data_id(flat, {"telescope": "Rubin", "camera": "LSSTCam"})
        assert full == {"telescope": "Rubin", "camera": "LSSTCam", "filter": "r"}
        with pytest.raises(DatasetTypeError, match="exposure"):
            reg.register_dataset_type("raw", RAW_DIMS, "JSON")
    finally:
        reg.close()


def test_custom_universe_through_butler(tmp_path: Path, db_url: str | None) -> None:
    root = Butler.create(tmp_path / "custom", db=db_url, site="NCSA",
                         universe=DimensionUniverse.from_yaml(CUSTOM_UNIVERSE))
    with Butler(root) as b:
        assert "camera" in b.registry.universe and "visit" not in b.registry.universe


INVALID_UNIVERSES = [
    ("dimensions: {a: {requires: [b]}}", "unknown dimension 'b'"),
    ("dimensions: {a: {implies: [zz]}}", "zz"),
    ("dimensions: {a: {requires: [b]}, b: {implies: [a]}}", "cycle"),
    ("dimensions: {a: {implies: [a]}}", "cycle"),
    ("dimensions: {a: {requires: [c]}, b: {requires: [a]}, c: {requires: [b]}}", "cycle"),
    ("dimensions: {a: {key: float}}", "key type"),
    ("dimensions: {a: {key: [int]}}", "key type"),
    ("dimensions: {a: {metadata: {x: complex}}}", "type"),
    ("dimensions: {a: {metadata: [x]}}", "metadata"),
    ("dimensions: {run: {}}", "run"),
    ("dimensions: {Instrument: {}}", "Instrument"),
    ("dimensions: {a: 3}", "mapping"),
    ("dimensions: [a, b]", "mapping"),
    ("version: 1", "mapping"),
    ("[1, 2]", "mapping"),
    ("dimensions: {a: [", "YAML"),
    ("dimensions: {a: {}, b: {requires: a}}", "list"),
    ("dimensions: {a: {}, b: {requires: [a, a]}}", "twice"),
    ("dimensions: {a: {}, b: {requires: [a], implies: [a]}}", "twice"),
    ("dimensions: {a: {}, c: {requires: [a]}, b: {implies: [c]}}", "requires"),
    ("dimensions: {a: {}, c: {requires: [a]}, b: {requires: [c]}}", "requires"),
    ("dimensions: {a: {}, b: {requires: [a], metadata: {a: string}}}", "field"),
    ("dimensions: {a: {timespan: true, metadata: {timespan_begin: int}}}", "field"),
    ("dimensions: {a: {metadata: {bad-name: int}}}", "field"),
    ("dimensions: {a: {}, b: {require: [a]}}", "require"),
    ("dimensions: {a: {timespan: 'no'}}", "timespan"),
]


def test_invalid_universes_are_refused(registry_url: str, tmp_path: Path) -> None:
    Registry.create(registry_url, site="NCSA").close()
    for text, expected in INVALID_UNIVERSES:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            DimensionUniverse.from_yaml(text)
        # A repository whose stored universe is invalid refuses to open the same way.
        _set_meta(registry_url, "universe", text)
        with pytest.raises(ConfigError, match=re.escape(expected)):
            Registry.open(registry_url)
    with pytest.raises(ConfigError, match="cannot read"):
        DimensionUniverse.from_file(tmp_path / "missing.yaml")


# -- dimension records -----------------------------------------------------------------


def test_insert_and_query_records(registry: Registry) -> None:
    insert_hsc_records(registry)
    detectors = registry.dimensions.query("detector")
    assert [d["detector"] for d in detectors] == [0, 1, 2, 3]
    assert detectors[2]["full_name"] == "1_02" and detectors[2]["instrument"] == "HSC"
    (instrument,) = registry.dimensions.query("instrument")
    assert instrument["detector_max"] == 112
    exposures = registry.dimensions.query("exposure")
    assert len(exposures) == 4
    first = exposures[0]
    assert first["exposure_time"] == 30.0 and first["physical_filter"] == "HSC-R"
    assert first["timespan"] == Timespan.from_values("2013-06-17T13:00:00",
                                                     "2013-06-17T13:00:30")
    # Band records were created from the physical filters.
    assert sorted(b["band"] for b in registry.dimensions.query("band")) == ["i", "r"]


def test_query_records_with_where(registry: Registry) -> None:
    insert_hsc_records(registry)
    found = registry.dimensions.query("exposure", "physical_filter = 'HSC-R' AND exposure > 903334")
    assert [r["exposure"] for r in found] == [903335, 903336]
    found = registry.dimensions.query("detector", "detector IN (1, 3)")
    assert [r["detector"] for r in found] == [1, 3]
    found = registry.dimensions.query("visit", "physical_filter = :f", bind={"f": "HSC-I"})
    assert [r["visit"] for r in found] == [903337]
    assert registry.dimensions.query("exposure", "observation_type = 'flat'") == []
    with pytest.raises(ExpressionError, match="nonsense"):
        registry.dimensions.query("exposure", "nonsense = 3")
    with pytest.raises(ExpressionError):
        registry.dimensions.query("exposure", "exposure = = 3")


def test_identical_reinsert_is_a_noop(registry: Registry) -> None:
    insert_hsc_records(registry)
    journal = Journal(registry)
    for dimension, records in HSC_RECORDS.items():
        assert registry.insert_dimension_records(dimension, records) == 0
    # Values given as text (as from a CSV) that normalize to the stored ones are identical too.
    assert registry.insert_dimension_records("detector", [
        {"instrument": "HSC", "detector": "2", "full_name": "1_02", "purpose": "SCIENCE"}]) == 0
    assert journal.new() == []
    more = [*HSC_RECORDS["detector"],
            {"instrument": "HSC", "detector": 4, "full_name": "1_04", "purpose": "SCIENCE"}]
    assert registry.insert_dimension_records("detector", more) == 1
    entries = journal.new()
    assert [(e.kind, e.change.dimension, e.change.record["detector"]) for e in entries] == [
        ("dimension_record", "detector", 4)]


def test_differing_record_is_refused_showing_both(registry: Registry) -> None:
    insert_hsc_records(registry)
    journal = Journal(registry)
    changed = {"instrument": "HSC", "detector": 1, "full_name": "CHANGED", "purpose": "SCIENCE"}
    with pytest.raises(DimensionRecordError) as info:
        registry.insert_dimension_records("detector", [changed])
    message = str(info.value)
    assert "1_01" in message and "CHANGED" in message
    with pytest.raises(DimensionRecordError, match="HSC-I"):
        registry.insert_dimension_records("physical_filter", [
            {"instrument": "HSC", "physical_filter": "HSC-I", "band": "z"}])
    # Two different records for one key within one input.
    with pytest.raises(DimensionRecordError, match="detector=7"):
        registry.insert_dimension_records("detector", [
            {"instrument": "HSC", "detector": 7, "full_name": "a"},
            {"instrument": "HSC", "detector": 7, "full_name": "b"}])
    assert journal.new() == []
    assert registry.dimensions.query("detector", "detector = 1")[0]["full_name"] == "1_01"
    assert registry.dimensions.query("detector", "detector = 7") == []


def test_record_with_missing_parent_is_refused(registry: Registry) -> None:
    insert_hsc_records(registry)
    journal = Journal(registry)
    with pytest.raises(DimensionRecordError, match="LSSTCam"):
        registry.insert_dimension_records("detector", [
            {"instrument": "LSSTCam", "detector": 0, "full_name": "R22_S11"}])
    with pytest.raises(DimensionRecordError, match="HSC-Z"):
        registry.insert_dimension_records("exposure", [
            {"instrument": "HSC", "exposure": 1, "physical_filter": "HSC-Z",
             "day_obs": 20130617}])
    with pytest.raises(DimensionRecordError, match="day_obs"):
        registry.insert_dimension_records("exposure", [
            {"instrument": "HSC", "exposure": 1, "physical_filter": "HSC-R",
             "day_obs": 20990101}])
    assert journal.new() == []
    assert registry.dimensions.query("detector", "instrument = 'LSSTCam'") == []
    assert registry.dimensions.query("exposure", "exposure = 1") == []
    # The records are usable once the parent exists: nothing stale was cached.
    registry.insert_dimension_records("instrument", [{"instrument": "LSSTCam"}])
    assert registry.insert_dimension_records("detector", [
        {"instrument": "LSSTCam", "detector": 0, "full_name": "R22_S11"}]) == 1


def test_band_records_created_from_physical_filters(registry: Registry) -> None:
    registry.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    journal = Journal(registry)
    assert registry.insert_dimension_records("physical_filter", [
        {"instrument": "HSC", "physical_filter": "HSC-G", "band": "g"},
        {"instrument": "HSC", "physical_filter": "HSC-G2", "band": "g"}]) == 2
    assert [b["band"] for b in registry.dimensions.query("band")] == ["g"]
    kinds = [e.change.dimension for e in journal.new()]
    assert sorted(kinds) == ["band", "physical_filter", "physical_filter"]
    # An existing band is reused, not re-created.
    registry.insert_dimension_records("physical_filter", [
        {"instrument": "HSC", "physical_filter": "HSC-G3", "band": "g"}])
    assert [e.change.dimension for e in journal.new()] == ["physical_filter"]


MALFORMED_RECORDS = [
    ("detector", {"instrument": "HSC", "detector": 9, "colour": "red"}, InputError, "colour"),
    ("detector", {"instrument": "HSC", "full_name": "x"}, InputError, "detector"),
    ("detector", {"detector": 9}, InputError, "instrument"),
    ("physical_filter", {"instrument": "HSC", "physical_filter": "HSC-Y"}, InputError, "band"),
    ("detector", {"instrument": "HSC", "detector": "nine"}, DataIdError, "integer"),
    ("exposure", {"instrument": "HSC", "exposure": 5, "physical_filter": "HSC-R",
                  "day_obs": 20130617, "exposure_time": "long"}, InputError, "exposure_time"),
    ("exposure", {"instrument": "HSC", "exposure": 5, "physical_filter": "HSC-R",
                  "day_obs": 20130617, "timespan_begin": "yesterday"}, InputError, "yesterday"),
    ("exposure", {"instrument": "HSC", "exposure": 5, "physical_filter": "HSC-R",
                  "day_obs": 20130617, "timespan_begin": "2013-06-17T13:00:30",
                  "timespan_end": "2013-06-17T13:00:00"}, InputError, "empty timespan"),
    ("exposure", {"instrument": "HSC", "exposure": 5, "physical_filter": "HSC-R",
                  "day_obs": 20130617, "timespan": "all night"}, InputError, "timespan"),
    ("exposure", {"instrument": "HSC", "exposure": 5, "physical_filter": "HSC-R",
                  "day_obs": 20130617, "timespan_end": 1.5e18}, InputError, "invalid time"),
    ("instrument", {"instrument": "HSC", "visit_max": 2**70}, InputError, "visit_max"),
    ("instrument", {"instrument": "HSC", "visit_max": 2.5}, InputError, "visit_max"),
    ("instrument", {"instrument": "HSC", "class_name": "c" * 200}, InputError, "too long"),
    ("instrument", {"instrument": "X" * 200}, DataIdError, "too long"),
    ("detector", {"instrument": "HSC", "detector": 2**70}, DataIdError, "range"),
    ("detector", [("instrument", "HSC")], InputError, "mapping"),
    # Strings must be strings: a list, mapping or number is not stored as its repr.
    ("detector", {"instrument": "HSC", "detector": 9, "full_name": ["a", "b"]}, InputError,
     "detector field 'full_name' needs a string, got ['a', 'b'] (list)"),
    ("detector", {"instrument": "HSC", "detector": 9, "purpose": {"x": 1}}, InputError,
     "detector field 'purpose' needs a string, got {'x': 1} (dict)"),
    ("detector", {"instrument": "HSC", "detector": 9, "full_name": 100}, InputError,
     "needs a string, got 100 (int)"),
    ("instrument", {"instrument": "HSC", "visit_max": [1]}, InputError,
     "instrument field 'visit_max' needs a int, got [1] (list)"),
    ("exposure", {"instrument": "HSC", "exposure": 5, "physical_filter": "HSC-R",
                  "day_obs": 20130617, "exposure_time": {"s": 30}}, InputError,
     "exposure field 'exposure_time' needs a float, got {'s': 30} (dict)"),
    ("exposure", {"instrument": "HSC", "exposure": 5, "physical_filter": "HSC-R",
                  "day_obs": 20130617, "exposure_time": True}, InputError,
     "needs a float, got True (bool)"),
    ("camera", {"camera": "x"}, ConfigError, "camera"),
]


def test_malformed_records_are_refused(registry: Registry) -> None:
    registry.insert_dimension_records("instrument", [{"instrument": "HSC"}])
    registry.insert_dimension_records("physical_filter", [
        {"instrument": "HSC", "physical_filter": "HSC-R", "band": "r"}])
    registry.insert_dimension_records("day_obs", [{"instrument": "HSC", "day_obs": 20130617}])
    journal = Journal(registry)
    for dimension, record, error, expected in MALFORMED_RECORDS:
        with pytest.raises(error, match=re.escape(expected)):
            registry.insert_dimension_records(dimension, [record])
    assert journal.new() == []
    assert [r["instrument"] for r in registry.dimensions.query("instrument")] == ["HSC"]
    assert registry.dimensions.query("detector") == []
    assert registry.dimensions.query("exposure") == []


def test_record_fields_take_their_declared_types(registry_url: str, tmp_path: Path) -> None:
    """Numbers where numbers are declared (text from CSV is parsed), text where text is."""
    universe = DimensionUniverse.from_yaml(
        "dimensions:\n  camera:\n    key: string\n"
        "    metadata: {label: string, pixels: int, gain: float, cooled: bool}\n")
    reg = Registry.create(registry_url, site="NCSA", universe=universe)
    try:
        reg.insert_dimension_records("camera", [
            {"camera": "a", "label": "A", "pixels": 4096, "gain": 1, "cooled": True},
            {"camera": "b", "label": "B", "pixels": "2048", "gain": "1.5", "cooled": "no"},
            {"camera": "c", "pixels": 8.0, "gain": 2.5, "cooled": 1}])
        assert reg.dimensions.query("camera") == [
            {"camera": "a", "label": "A", "pixels": 4096, "gain": 1.0, "cooled": True},
            {"camera": "b", "label": "B", "pixels": 2048, "gain": 1.5, "cooled": False},
            {"camera": "c", "label": None, "pixels": 8, "gain": 2.5, "cooled": True}]
        journal = Journal(reg)
        for field, value in [("label", 7), ("label", ["x"]), ("pixels", "many"),
                             ("pixels", [1]), ("gain", "fast"), ("gain", {"a": 1}),
                             ("cooled", "maybe"), ("cooled", 2), ("cooled", [True])]:
            with pytest.raises(InputError, match=f"camera field '{field}' needs a"):
                reg.insert_dimension_records("camera", [{"camera": "d", field: value}])
        assert journal.new() == [] and len(reg.dimensions.query("camera")) == 3
    finally:
        reg.close()


def test_queried_records_can_be_inserted_again_and_copied(
        registry: Registry, tmp_path: Path, other_db_url: str | None) -> None:
    insert_hsc_records(registry)
    registry.insert_dimension_records("day_obs", [  # open-ended timespans survive too
        {"instrument": "HSC", "day_obs": 20130618, "timespan_begin": "2013-06-18T12:00:00"},
        {"instrument": "HSC", "day_obs": 20130619}])
    journal = Journal(registry)
    names = ["instrument", "band", *HSC_RECORDS]
    for name in names:
        assert registry.insert_dimension_records(name, registry.dimensions.query(name)) == 0
    assert journal.new() == []
    copy = Registry.create(other_db_url or f"sqlite:///{tmp_path}/copy.db", site="IN2P3")
    try:
        for name in dict.fromkeys(names):
            copy.insert_dimension_records(name, registry.dimensions.query(name))
        for name in names:
            assert copy.dimensions.query(name) == registry.dimensions.query(name)
        (day,) = copy.dimensions.query("day_obs", "day_obs = 20130618")
        assert day["timespan"] == Timespan.from_values("2013-06-18T12:00:00", None)
        assert copy.dimensions.query("day_obs", "day_obs = 20130619")[0]["timespan"] is None
    finally:
        copy.close()


def test_records_visible_to_a_second_registry(registry: Registry, registry_url: str) -> None:
    other = Registry.open(registry_url)
    try:
        raw = other.dataset_types.make("raw", RAW_DIMS, "JSON")
        with pytest.raises(DataIdError):
            other.expand_data_id(raw, RAW_ID)
        insert_hsc_records(registry)
        full, _ = other.expand_data_id(raw, RAW_ID)
        assert full["band"] == "r"
    finally:
        other.close()


# -- data IDs --------------------------------------------------------------------------


def test_expand_completes_implied_values(hsc: Registry) -> None:
    raw = hsc.get_dataset_type("raw")
    full, key = hsc.expand_data_id(raw, RAW_ID)
    assert full == {"instrument": "HSC", "exposure": 903334, "detector": 1,
                    "physical_filter": "HSC-R", "band": "r", "day_obs": 20130617}
    assert key == data_id_key(["HSC", 1, 903334])
    full, _ = hsc.expand_data_id(raw, {"instrument": "HSC", "exposure": 903337, "detector": 0})
    assert (full["physical_filter"], full["band"]) == ("HSC-I", "i")
    # Values given as text and consistent implied values give the same data ID and key.
    same = hsc.expand_data_id(raw, {"instrument": "HSC", "exposure": "903334", "detector": "1",
                                    "band": "r", "physical_filter": "HSC-R"})
    assert same == (full | {"exposure": 903334, "detector": 1, "physical_filter": "HSC-R",
                            "band": "r"}, key)
    pf = hsc.dataset_types.make("flatness", ["physical_filter"], "JSON")
    full, _ = hsc.expand_data_id(pf, {"instrument": "HSC", "physical_filter": "HSC-I"})
    assert full == {"instrument": "HSC", "physical_filter": "HSC-I", "band": "i"}


BAD_DATA_IDS = [
    ({"instrument": "HSC", "exposure": 903334}, "missing detector"),
    ({"exposure": 903334, "detector": 1}, "missing instrument"),
    ({**RAW_ID, "ccd": 3}, "ccd"),
    ({**RAW_ID, "visit": 903334}, "visit"),
    ({**RAW_ID, "exposure": 42}, "no exposure record for instrument='HSC', exposure=42"),
    ({**RAW_ID, "detector": 99}, "no detector record"),
    ({**RAW_ID, "instrument": "LSSTCam"}, "LSSTCam"),
    ({**RAW_ID, "detector": "one"}, "integer"),
    ({**RAW_ID, "detector": 1.5}, "integer"),
    ({**RAW_ID, "detector": True}, "detector"),
    ({**RAW_ID, "detector": None}, "detector"),
    ({**RAW_ID, "detector": "--1"}, "integer"),
    ({**RAW_ID, "detector": "\u00b2"}, "integer"),
    ({**RAW_ID, "detector": 2**64}, "range"),
    ({**RAW_ID, "instrument": ["HSC"]}, "string"),
    ({**RAW_ID, "band": "i"}, "band='i' but its records imply 'r'"),
    ({**RAW_ID, "physical_filter": "HSC-I"}, "physical_filter='HSC-I'"),
    ({**RAW_ID, "day_obs": 20130618}, "day_obs"),
]


def test_bad_data_ids_are_refused(hsc: Registry) -> None:
    raw = hsc.get_dataset_type("raw")
    for data_id, expected in BAD_DATA_IDS:
        with pytest.raises(DataIdError, match=re.escape(expected)):
            hsc.expand_data_id(raw, data_id)


def test_extra_dimensions_allowed_when_asked(hsc: Registry) -> None:
    bias = hsc.get_dataset_type("bias")
    full, key = hsc.expand_data_id(bias, {**RAW_ID}, allow_extra=True)
    assert full["exposure"] == 903334 and key == data_id_key(["HSC", 1])
    with pytest.raises(DataIdError, match="no exposure record"):
        hsc.expand_data_id(bias, {**RAW_ID, "exposure": 1}, allow_extra=True)
    with pytest.raises(DataIdError, match="not among"):
        hsc.expand_data_id(bias, RAW_ID)


# -- dataset types ---------------------------------------------------------------------


def test_register_dataset_type_twice_is_a_noop(registry: Registry, registry_url: str) -> None:
    journal = Journal(registry)
    assert registry.register_dataset_type("calexp", ["instrument", "visit", "detector"],
                                          "NumpyArray") is True
    # The same definition, even spelled with implied dimensions, changes nothing.
    assert registry.register_dataset_type("calexp", ["visit", "detector", "physical_filter"],
                                          "NumpyArray") is False
    assert [asdict(e.change) for e in journal.new()] == [
        registry.get_dataset_type("calexp").to_dict()]
    other = Registry.open(registry_url)
    try:
        assert other.register_dataset_type("calexp", ["instrument", "visit", "detector"],
                                           "NumpyArray") is False
        calexp = other.get_dataset_type("calexp")
        assert calexp.storage_class == "NumpyArray"
        assert calexp.dimensions.required == ("instrument", "detector", "visit")
        assert [t.name for t in other.dataset_types.query("cal*")] == ["calexp"]
    finally:
        other.close()


def test_conflicting_dataset_type_shows_both_definitions(registry: Registry) -> None:
    registry.register_dataset_type("calexp", ["instrument", "visit", "detector"], "NumpyArray")
    journal = Journal(registry)
    with pytest.raises(DatasetTypeError) as info:
        registry.register_dataset_type("calexp", ["instrument", "visit", "detector"], "JSON")
    message = str(info.value)
    assert "calexp(instrument, detector, visit) -> NumpyArray" in message
    assert "calexp(instrument, detector, visit) -> JSON" in message
    with pytest.raises(DatasetTypeError) as info:
        registry.register_dataset_type("calexp", ["instrument", "exposure"], "NumpyArray")
    assert "calexp(instrument, exposure) -> NumpyArray" in str(info.value)
    assert "visit" in str(info.value)
    assert journal.new() == []
    assert registry.get_dataset_type("calexp").storage_class == "NumpyArray"


BAD_DATASET_TYPES = [
    ("calexp", ["instrument", "visit"], "Pickle", "unknown storage class 'Pickle'"),
    ("calexp", ["instrument", "ccd"], "JSON", "ccd"),
    ("calexp", "instrument", "JSON", "list of dimension names"),
    ("calexp", 3, "JSON", "list of dimension names"),
    ("1calexp", ["instrument"], "JSON", "invalid dataset type name"),
    ("cal exp", ["instrument"], "JSON", "invalid dataset type name"),
    ("calexp\n", ["instrument"], "JSON", "invalid dataset type name"),
    ("", ["instrument"], "JSON", "invalid dataset type name"),
    ("c" * 200, ["instrument"], "JSON", "invalid dataset type name"),
]


def test_bad_dataset_types_are_refused(registry: Registry) -> None:
    journal = Journal(registry)
    for name, dimensions, storage_class, expected in BAD_DATASET_TYPES:
        with pytest.raises(DatasetTypeError, match=re.escape(expected)):
            registry.register_dataset_type(name, dimensions, storage_class)
    assert journal.new() == []
    assert registry.dataset_types.query() == []


def test_unknown_dataset_type_lookup(registry: Registry) -> None:
    with pytest.raises(DatasetTypeError, match="no dataset type named 'nope'"):
        registry.get_dataset_type("nope")


# -- dataset IDs -----------------------------------------------------------------------


def _hsc_butler(root: Path, run: str = "HSC/raw/all") -> Butler:
    b = Butler(root, run=run)
    insert_hsc_records(b.registry)
    b.registry.register_dataset_type("raw", RAW_DIMS, "JSON")
    return b


def test_dataset_ids_across_independent_repositories(
        tmp_path: Path, repo: Path, other_db_url: str | None) -> None:
    other = Butler.create(tmp_path / "other", db=other_db_url, site="IN2P3")
    with _hsc_butler(repo) as a, _hsc_butler(other) as b:
        ref_a = a.put({"v": 1}, "raw", RAW_ID, id_mode="deterministic")
        # Text values and an implied value must not change a deterministic ID.
        ref_b = b.put({"v": 2}, "raw", {"instrument": "HSC", "exposure": "903334",
                                        "detector": "1", "band": "r"},
                      id_mode=IdMode.DETERMINISTIC)
        assert ref_a.id == ref_b.id
        raw_1 = {"instrument": "HSC", "exposure": 903334, "detector": 1}
        assert ref_a.id == make_dataset_id(IdMode.DETERMINISTIC, "raw", raw_1)
        assert ref_a.id.version == 5
        # The same data ID in another run: deterministic means the same UUID, a conflict.
        with pytest.raises(ConflictError, match=str(ref_a.id)):
            a.put({"v": 3}, "raw", RAW_ID, run="HSC/raw/other", id_mode="deterministic")

        rand_a = a.put({"v": 1}, "raw", RAW_ID, run="random")
        rand_b = b.put({"v": 1}, "raw", RAW_ID, run="random")
        assert rand_a.id != rand_b.id and rand_a.id.version == 7
        assert ref_a.id not in (rand_a.id, rand_b.id)

        run_a = a.put({"v": 1}, "raw", RAW_ID, run="det/run1", id_mode="deterministic-run")
        run_b = b.put({"v": 1}, "raw", RAW_ID, run="det/run1", id_mode="deterministic-run")
        run_a2 = a.put({"v": 1}, "raw", RAW_ID, run="det/run2", id_mode="deterministic-run")
        assert run_a.id == run_b.id
        assert run_a.id != run_a2.id and run_a.id != ref_a.id
        assert run_a.id == make_dataset_id(IdMode.DETERMINISTIC_RUN, "raw", raw_1, "det/run1")
        with pytest.raises(ValueError):
            a.put({"v": 1}, "raw", RAW_ID, run="det/run3", id_mode="sequential")


# -- collections -----------------------------------------------------------------------


def test_collection_types_and_reregistration(registry: Registry, registry_url: str) -> None:
    for name, ctype in [("run", CollectionType.RUN), ("tagged", CollectionType.TAGGED),
                        ("chain", CollectionType.CHAINED), ("calib", CollectionType.CALIBRATION)]:
        assert registry.collections.register(name, ctype) is True
    journal = Journal(registry)
    assert registry.register_run("run") is False
    assert registry.register_collection("tagged") is False
    assert registry.register_collection("calib", CollectionType.CALIBRATION) is False
    assert journal.new() == []
    with pytest.raises(CollectionError, match="already exists as RUN"):
        registry.register_collection("run", CollectionType.TAGGED)
    with pytest.raises(CollectionError, match="CHAINED"):
        registry.register_run("chain")
    assert journal.new() == []
    other = Registry.open(registry_url)
    try:
        assert {c.name: c.type for c in other.collections.query()} == {
            "run": CollectionType.RUN, "tagged": CollectionType.TAGGED,
            "chain": CollectionType.CHAINED, "calib": CollectionType.CALIBRATION}
        assert [c.name for c in other.collections.query(types=[CollectionType.RUN])] == ["run"]
        assert other.collections.owner("run") == "NCSA"
    finally:
        other.close()
    with pytest.raises(CollectionError, match="no collection named 'nope'"):
        registry.collections.lookup("nope")
    with pytest.raises(CollectionError, match="not RUN"):
        registry.collections.lookup("tagged", CollectionType.RUN)


BAD_COLLECTION_NAMES = [
    "", "a//b", "/a", "a/", "a b", "../x", "a/./b", "..", "x\n", "r\u00e9sum\u00e9", "a;b",
    "tab\tname", "x" * 300, 7, None,
]


def test_invalid_collection_names_are_refused(registry: Registry) -> None:
    journal = Journal(registry)
    for name in BAD_COLLECTION_NAMES:
        for ctype in (CollectionType.RUN, CollectionType.CHAINED):
            with pytest.raises(CollectionError, match="invalid collection name"):
                registry.collections.register(name, ctype)
    assert journal.new() == []
    assert registry.collections.query() == []
    # The longest allowed name and every allowed character work.
    assert registry.register_run("x" * 256)
    assert registry.register_run("u/some.one/A-b_c+1")


def test_chains_are_ordered_nested_and_redefinable(registry: Registry,
                                                  registry_url: str) -> None:
    for name in ("r1", "r2", "r3"):
        registry.register_run(name)
    registry.register_collection("t1")
    registry.register_collection("inner", CollectionType.CHAINED)
    registry.register_collection("outer", CollectionType.CHAINED)
    colls = registry.collections
    colls.set_chain("inner", ["r2", "t1", "r1"])
    colls.set_chain("outer", ["r3", "inner", "r1"])
    assert colls.children("inner") == ["r2", "t1", "r1"]
    assert colls.get("outer").children == ["r3", "inner", "r1"]
    assert [name for _, name, _ in colls.flatten(["outer"])] == ["r3", "r2", "t1", "r1"]
    assert colls.parents("r1") == ["inner", "outer"]
    colls.set_chain("inner", ["r1", "r2"])
    assert [name for _, name, _ in colls.flatten(["outer"])] == ["r3", "r1", "r2"]
    colls.set_chain("inner", [])
    assert colls.children("inner") == []
    colls.set_chain("inner", ["t1"])
    other = Registry.open(registry_url)
    try:
        assert other.collections.children("outer") == ["r3", "inner", "r1"]
        assert other.collections.children("inner") == ["t1"]
    finally:
        other.close()


def test_bad_chains_are_refused(registry: Registry) -> None:
    for name in ("a", "b", "c"):
        registry.register_collection(name, CollectionType.CHAINED)
    registry.register_run("r")
    colls = registry.collections
    colls.set_chain("a", ["b"])
    colls.set_chain("b", ["c"])
    journal = Journal(registry)
    with pytest.raises(CollectionError, match="cycle"):
        colls.set_chain("a", ["a"])
    with pytest.raises(CollectionError, match="cycle"):
        colls.set_chain("c", ["r", "a"])  # c -> a -> b -> c
    with pytest.raises(CollectionError, match="cycle"):
        colls.set_chain("b", ["a"])  # b -> a -> b
    with pytest.raises(CollectionError, match="twice"):
        colls.set_chain("c", ["r", "r"])
    with pytest.raises(CollectionError, match="no collection named 'missing'"):
        colls.set_chain("c", ["r", "missing"])
    with pytest.raises(CollectionError, match="not CHAINED"):
        colls.set_chain("r", ["a"])
    assert journal.new() == []
    assert colls.children("a") == ["b"] and colls.children("b") == ["c"]
    assert colls.children("c") == []
    with pytest.raises(CollectionError, match="chained collection"):
        colls.remove("c")


def test_chain_search_returns_first_match(raw_butler: Butler) -> None:
    b = raw_butler
    ref1 = b.put({"v": 1}, "raw", RAW_ID, run="run1")
    ref2 = b.put({"v": 2}, "raw", RAW_ID, run="run2")
    only1 = b.put({"v": 10}, "raw", RAW_ID, detector=2, run="run1")
    colls = b.registry.collections
    colls.register("chain", CollectionType.CHAINED)
    colls.set_chain("chain", ["run2", "run1"])
    assert b.find_dataset("raw", RAW_ID, collections="chain") == ref2
    assert b.get("raw", RAW_ID, collections="chain") == {"v": 2}
    # A data ID only in the later run is still found there.
    assert b.find_dataset("raw", RAW_ID, detector=2, collections="chain") == only1
    colls.set_chain("chain", ["run1", "run2"])
    assert b.find_dataset("raw", RAW_ID, collections="chain") == ref1
    assert b.get("raw", RAW_ID, collections="chain") == {"v": 1}
    # Nested chains and explicit lists search in order too.
    colls.register("outer", CollectionType.CHAINED)
    colls.set_chain("outer", ["run2", "chain"])
    assert b.find_dataset("raw", RAW_ID, collections="outer") == ref2
    assert b.find_dataset("raw", RAW_ID, collections=["run1", "run2"]) == ref1
    assert b.find_dataset("raw", RAW_ID, detector=3, collections="outer") is None
    refs = b.query_datasets("raw", "outer")
    assert {r.id for r in refs} == {ref2.id, only1.id}
    assert len(b.query_datasets("raw", "outer", find_first=False)) == 3


def test_collection_documentation(registry: Registry, registry_url: str) -> None:
    registry.register_run("run", doc="raw HSC data, night of 2013-06-17")
    registry.register_collection("tagged")
    assert registry.collections.get("run").doc == "raw HSC data, night of 2013-06-17"
    assert registry.collections.get("tagged").doc == ""
    registry.collections.set_doc("tagged", "best \u2013 reviewed\nsecond line")
    registry.collections.set_doc("run", "")
    other = Registry.open(registry_url)
    try:
        assert other.collections.get("tagged").doc == "best \u2013 reviewed\nsecond line"
        assert other.collections.get("run").doc == ""
    finally:
        other.close()
    with pytest.raises(CollectionError, match="nope"):
        registry.collections.set_doc("nope", "x")


def test_one_dataset_per_slot_in_a_run(raw_butler: Butler) -> None:
    b = raw_butler
    ref = b.put({"v": 1}, "raw", RAW_ID)
    files_before = stored_files(b.config.root)
    journal = Journal(b.registry)
    with pytest.raises(ConflictError, match="already holds") as info:
        b.put({"v": 2}, "raw", RAW_ID)
    assert str(ref.id) in str(info.value)
    assert journal.new() == []
    assert stored_files(b.config.root) == files_before
    assert b.query_datasets("raw", "HSC/raw/all") == [ref]
    assert b.get("raw", RAW_ID) == {"v": 1}
    # The same slot in another run, or another data ID in this run, is fine.
    b.put({"v": 3}, "raw", RAW_ID, run="other")
    b.put({"v": 4}, "raw", RAW_ID, detector=2)
    assert len(b.query_datasets("raw", "HSC/raw/all")) == 2


def test_one_dataset_per_slot_in_a_tagged_collection(raw_butler: Butler) -> None:
    b = raw_butler
    ref1 = b.put({"v": 1}, "raw", RAW_ID, run="run1")
    ref2 = b.put({"v": 2}, "raw", RAW_ID, run="run2")
    other = b.put({"v": 3}, "raw", RAW_ID, detector=2, run="run2")
    ds = b.registry.datasets
    b.registry.register_collection("best")
    assert ds.associate("best", [ref1, other]) == 2
    journal = Journal(b.registry)
    assert ds.associate("best", [ref1]) == 0  # already there
    with pytest.raises(ConflictError, match=str(ref1.id)):
        ds.associate("best", [ref2])
    with pytest.raises(ConflictError, match="two datasets for one slot"):
        ds.associate("best", [ref1, ref2])
    assert journal.new() == []
    assert b.find_dataset("raw", RAW_ID, collections="best") == ref1
    # After untagging, the slot is free for the other dataset.
    assert ds.disassociate("best", [ref1]) == 1
    assert ds.associate("best", [ref2]) == 1
    assert b.find_dataset("raw", RAW_ID, collections="best") == ref2
    assert {r.id for r in b.query_datasets("raw", "best")} == {ref2.id, other.id}
    with pytest.raises(CollectionError, match="not TAGGED"):
        ds.associate("run1", [ref2])


def test_remove_collections(raw_butler: Butler) -> None:
    b = raw_butler
    ref = b.put({"v": 1}, "raw", RAW_ID, run="run1")
    colls = b.registry.collections
    colls.register("tagged", CollectionType.TAGGED)
    b.registry.datasets.associate("tagged", [ref])
    colls.remove("tagged")
    assert not colls.exists("tagged")
    assert b.registry.datasets.get(ref.id) == ref
    # A run still holding datasets cannot lose its definition underneath them.
    with pytest.raises(CollectionError, match="run1"):
        colls.remove("run1")
    assert b.find_dataset("raw", RAW_ID, collections="run1") == ref
    colls.register("chain", CollectionType.CHAINED)
    colls.set_chain("chain", ["run1"])
    with pytest.raises(CollectionError, match="chain"):
        b.remove_runs(["run1"])
    assert b.remove_runs(["run1"], unlink_chains=True) == 1
    assert not colls.exists("run1") and colls.children("chain") == []
    assert b.registry.datasets.get(ref.id) is None


def test_collections_removed_by_another_writer(raw_butler: Butler) -> None:
    """A butler's cached view of a collection must not outlive the collection."""
    a = raw_butler
    a.put({"v": 1}, "raw", RAW_ID, run="r")
    a.registry.register_collection("tagged")
    with Butler(a.config.root) as b:
        b.remove_runs(["r"])
        b.registry.collections.remove("tagged")
        b.registry.register_run("r")  # re-created: a new collection under the old name
    # a still has the old "r" cached; the put must land in the new one.
    ref = a.put({"v": 2}, "raw", RAW_ID, run="r")
    assert a.find_dataset("raw", RAW_ID, collections="r") == ref
    with Butler(a.config.root) as c:
        assert c.query_datasets("raw", "r") == [ref]
    with pytest.raises(CollectionError, match="no collection named 'tagged'"):
        a.registry.datasets.associate("tagged", [ref])


# -- calibrations ----------------------------------------------------------------------


def _calibs(registry: Registry, collection: str) -> list[tuple[uuid.UUID, int, str, str]]:
    return [(ref.id, ref.data_id["detector"], *map(str, span.to_dict().values()))
            for ref, span in registry.datasets.certifications(collection)]


def test_certify_find_and_decertify(raw_butler: Butler) -> None:
    b = raw_butler
    reg = b.registry
    ds = reg.datasets
    bias = reg.get_dataset_type("bias")
    v1 = b.put({"v": 1}, "bias", instrument="HSC", detector=0, run="calib/v1")
    v2 = b.put({"v": 2}, "bias", instrument="HSC", detector=0, run="calib/v2")
    v3 = b.put({"v": 3}, "bias", instrument="HSC", detector=0, run="calib/v3")
    d1 = b.put({"v": 11}, "bias", instrument="HSC", detector=1, run="calib/v1")
    reg.register_collection("calib", CollectionType.CALIBRATION)

    assert ds.certify("calib", [v1, d1], Timespan.from_values(
        "2013-06-17T00:00:00", "2013-06-17T13:01:00")) == 2
    assert ds.certify("calib", [v2], Timespan.from_values("2013-06-17T13:01:00", None)) == 1
    # Identical re-certification changes nothing.
    journal = Journal(reg)
    assert ds.certify("calib", [v2], Timespan.from_values("2013-06-17T13:01:00", None)) == 0
    assert journal.new() == []

    # Lookup by the exposure's own timespan; validity ranges are half-open.
    def find(**kwargs):
        return b.find_dataset("bias", instrument="HSC", detector=0, collections="calib",
                              **kwargs)

    assert find(exposure=903334) == v1  # 13:00:00 - 13:00:30
    assert find(exposure=903335) == v2  # 13:01:00 - 13:01:30
    assert find(exposure=903337) == v2
    assert b.get("bias", instrument="HSC", detector=0, exposure=903334,
                 collections="calib") == {"v": 1}
    assert find(timespan=Timespan.from_values("2013-06-17T05:00", "2013-06-17T06:00")) == v1
    assert find(timespan=Timespan.from_values("2013-06-16T05:00", "2013-06-16T06:00")) is None
    with pytest.raises(CalibrationError, match="2 bias calibrations"):
        find(timespan=Timespan.from_values("2013-06-17T12:00", "2013-06-17T14:00"))
    with pytest.raises(CalibrationError, match="needs a time"):
        find()
    # An exposure without a record here: no dataset can be valid for it here.
    assert find(exposure=1) is None

    # Overlapping validity for the same type + data ID is refused, nothing changes.
    before = _calibs(reg, "calib")
    for span in [("2013-06-17T13:02:00", "2013-06-17T13:03:00"),  # inside v2
                 ("2013-06-17T12:00:00", "2013-06-17T13:00:00"),  # inside v1
                 (None, None)]:
        with pytest.raises(CalibrationError, match="already valid") as info:
            ds.certify("calib", [v3], Timespan.from_values(*span))
        assert "calib" in str(info.value)
    with pytest.raises(CalibrationError, match="already valid"):
        ds.certify("calib", [v1], Timespan.from_values("2013-06-17T12:00", "2013-06-18"))
    with pytest.raises(CalibrationError):
        ds.certify("calib", [v2, v3], Timespan.from_values("2013-06-10", "2013-06-11"))
    assert journal.new() == []
    assert _calibs(reg, "calib") == before

    # Non-overlapping ranges are fine, also for another data ID over the same time.
    assert ds.certify("calib", [v3], Timespan.from_values(None, "2013-06-17T00:00:00")) == 1
    assert find(timespan=Timespan.from_values("2000-01-01", "2000-01-02")) == v3

    # Decertifying the middle of a range splits it; the detector-1 range is also cut.
    assert ds.decertify("calib", bias, Timespan.from_values(
        "2013-06-17T06:00:00", "2013-06-17T07:00:00")) == 2
    assert sorted(_calibs(reg, "calib"), key=lambda c: (c[1], c[2] or "")) == sorted([
        (v3.id, 0, "None", "2013-06-17T00:00:00"),
        (v1.id, 0, "2013-06-17T00:00:00", "2013-06-17T06:00:00"),
        (v1.id, 0, "2013-06-17T07:00:00", "2013-06-17T13:01:00"),
        (v2.id, 0, "2013-06-17T13:01:00", "None"),
        (d1.id, 1, "2013-06-17T00:00:00", "2013-06-17T06:00:00"),
        (d1.id, 1, "2013-06-17T07:00:00", "2013-06-17T13:01:00"),
    ], key=lambda c: (c[1], c[2] or ""))
    assert find(timespan=Timespan.from_values("2013-06-17T06:10", "2013-06-17T06:20")) is None
    assert find(timespan=Timespan.from_values("2013-06-17T07:10", "2013-06-17T07:20")) == v1
    # The gap may now be filled by another dataset.
    assert ds.certify("calib", [v3], Timespan.from_values(
        "2013-06-17T06:00:00", "2013-06-17T07:00:00")) == 1
    assert find(timespan=Timespan.from_values("2013-06-17T06:10", "2013-06-17T06:20")) == v3

    # Decertifying only detector 1, over everything, trims the ends.
    assert ds.decertify("calib", bias, Timespan.from_values("2013-06-17T12:00", None),
                        data_id_keys=[data_id_key(["HSC", 1])]) == 1
    assert [c[2:] for c in _calibs(reg, "calib") if c[1] == 1] == [
        ("2013-06-17T00:00:00", "2013-06-17T06:00:00"),
        ("2013-06-17T07:00:00", "2013-06-17T12:00:00")]
    assert ds.decertify("calib", bias, Timespan()) == 7
    assert ds.certifications("calib") == []
    assert ds.decertify("calib", bias, Timespan()) == 0


def test_bad_certifications(raw_butler: Butler) -> None:
    b = raw_butler
    ds = b.registry.datasets
    v1 = b.put({"v": 1}, "bias", instrument="HSC", detector=0, run="calib/v1")
    b.registry.register_collection("calib2", CollectionType.CALIBRATION)
    b.registry.register_collection("tagged2")
    journal = Journal(b.registry)
    # A ref of a dataset this registry does not hold (e.g. from another repository).
    stranger = DatasetRef(uuid.uuid4(), v1.dataset_type, v1.data_id, "calib/v1")
    with pytest.raises(MissingDatasetError, match=str(stranger.id)):
        ds.certify("calib2", [stranger], Timespan())
    with pytest.raises(MissingDatasetError, match=str(stranger.id)):
        ds.associate("tagged2", [v1, stranger])
    assert ds.certifications("calib2") == [] and b.query_datasets("bias", "tagged2") == []
    with pytest.raises(CollectionError, match="no collection named 'calib'"):
        ds.certify("calib", [v1], Timespan())
    b.registry.register_collection("tagged")
    with pytest.raises(CollectionError, match="not CALIBRATION"):
        ds.certify("tagged", [v1], Timespan())
    with pytest.raises(InputError, match="empty timespan"):
        Timespan.from_values("2013-06-18", "2013-06-17")
    with pytest.raises(InputError, match="tomorrow"):
        Timespan.from_values("tomorrow", None)
    with pytest.raises(InputError, match="1.5"):
        Timespan.from_values(None, 1.5)
    assert [e.kind for e in journal.new()] == ["collection"]


def test_calibration_lookup_through_a_chain(raw_butler: Butler) -> None:
    b = raw_butler
    v1 = b.put({"v": 1}, "bias", instrument="HSC", detector=0, run="calib/v1")
    b.registry.register_collection("calib", CollectionType.CALIBRATION)
    b.registry.datasets.certify("calib", [v1], Timespan.from_values("2013-06-17", "2013-06-18"))
    b.registry.register_run("HSC/raw/all")
    b.registry.register_collection("defaults", CollectionType.CHAINED)
    b.registry.collections.set_chain("defaults", ["HSC/raw/all", "calib"])
    assert b.find_dataset("bias", instrument="HSC", detector=0, exposure=903336,
                          collections="defaults") == v1
    found = b.query_datasets("bias", "defaults",
                             timespan=Timespan.from_values("2013-06-17T10:00", "2013-06-17T11:00"))
    assert found == [v1]
    assert b.query_datasets("bias", "defaults",
                            timespan=Timespan.from_values("2013-06-19", "2013-06-20")) == []


# -- journal and ownership -------------------------------------------------------------


def test_every_mutation_is_journaled(raw_butler: Butler) -> None:
    b = raw_butler
    reg = b.registry
    ds = reg.datasets
    journal = Journal(reg)
    reg.insert_dimension_records("detector", [{"instrument": "HSC", "detector": 50}])
    (entry,) = journal.new()
    assert entry.kind == "dimension_record" and entry.change.record["detector"] == 50
    reg.register_dataset_type("flat", BIAS_DIMS, "NumpyArray")
    assert journal.kinds() == ["dataset_type"]
    ref = b.put({"v": 1}, "raw", RAW_ID)
    entries = journal.new()
    assert [e.kind for e in entries] == ["collection", "dataset"]
    assert entries[0].change.name == "HSC/raw/all" and entries[0].change.owner == "NCSA"
    assert asdict(entries[1].change) == {"id": str(ref.id)}  # the rest is in the rows
    ref2 = b.put({"v": 2}, "raw", RAW_ID, detector=2)
    assert journal.kinds() == ["dataset"]
    reg.register_collection("tagged")
    assert journal.kinds() == ["collection"]
    reg.register_collection("chain", CollectionType.CHAINED)
    reg.collections.set_chain("chain", ["tagged", "HSC/raw/all"])
    assert journal.kinds() == ["collection", "chain"]
    reg.collections.set_doc("tagged", "the best")
    assert journal.kinds() == ["doc"]
    ds.associate("tagged", [ref, ref2])
    assert [(e.kind, sorted(e.change.ids)) for e in journal.new()] == [
        ("associate", sorted([str(ref.id), str(ref2.id)]))]
    assert ds.disassociate("tagged", [ref2]) == 1
    assert journal.kinds() == ["disassociate"]
    assert ds.disassociate("tagged", [ref2]) == 0  # not tagged any more: nothing to record
    assert journal.new() == []
    bias = b.put({"v": 3}, "bias", instrument="HSC", detector=0, run="calib/v1")
    assert journal.kinds() == ["collection", "dataset"]
    reg.register_collection("calib", CollectionType.CALIBRATION)
    ds.certify("calib", [bias], Timespan.from_values("2013-06-17", None))
    assert journal.kinds() == ["collection", "certify"]
    ds.decertify("calib", bias.dataset_type, Timespan.from_values("2013-06-18", None))
    assert journal.kinds() == ["decertify"]
    b.remove([ref2])
    assert [(e.kind, e.change.ids) for e in journal.new()] == [("remove_dataset", [str(ref2.id)])]
    assert ds.remove([ref2]) == []  # already gone
    assert journal.new() == []
    reg.collections.set_chain("chain", [])
    reg.collections.remove("tagged")
    assert journal.kinds() == ["chain", "remove_collection"]
    assert b.remove_runs(["calib/v1"]) == 1
    assert journal.kinds() == ["remove_dataset", "remove_collection"]
    # The whole journal is one gap-free sequence with increasing timestamps.
    entries = list(reg.db.entries())
    assert [e.seq for e in entries] == list(range(1, reg.db.last_seq() + 1))
    times = [e.created_at for e in entries]
    assert times == sorted(times)
    assert [e.seq for e in reg.db.entries(after=3, upto=5)] == [4, 5]


def test_failed_mutations_append_nothing(raw_butler: Butler) -> None:
    b = raw_butler
    reg = b.registry
    ref = b.put({"v": 1}, "raw", RAW_ID)
    reg.register_collection("chain", CollectionType.CHAINED)
    journal = Journal(reg)
    failures = [
        (ConflictError, lambda: b.put({"v": 2}, "raw", RAW_ID)),
        (DataIdError, lambda: b.put({"v": 2}, "raw", RAW_ID, exposure=5)),
        (DatasetTypeError, lambda: b.put({"v": 2}, "nope", RAW_ID)),
        (DimensionRecordError, lambda: reg.insert_dimension_records("detector", [
            {"instrument": "HSC", "detector": 0, "full_name": "other"}])),
        (DatasetTypeError, lambda: reg.register_dataset_type("raw", BIAS_DIMS, "JSON")),
        (CollectionError, lambda: reg.register_collection("HSC/raw/all")),
        (CollectionError, lambda: b.put({"v": 2}, "raw", RAW_ID, run="chain")),
        (CollectionError, lambda: reg.collections.set_chain("chain", ["chain"])),
        (CollectionError, lambda: reg.datasets.associate("HSC/raw/all", [ref])),
        (ConflictError, lambda: reg.datasets.insert("HSC/raw/all", [(ref, None)])),
    ]
    for error, action in failures:
        with pytest.raises(error):
            action()
        assert journal.new() == [], error
    assert b.query_datasets("raw") == [ref]


def test_runs_record_their_owner_and_foreign_runs_are_read_only(
        tmp_path: Path, db_url: str | None) -> None:
    root = Butler.create(tmp_path / "in2p3", db=db_url, site="IN2P3")
    with _hsc_butler(root) as b:
        reg = b.registry
        assert reg.site == "IN2P3"
        local = b.put({"v": 1}, "raw", RAW_ID, run="IN2P3/raw")
        assert reg.collections.owner("IN2P3/raw") == "IN2P3"
        assert reg.collections.get("IN2P3/raw").owner_site == "IN2P3"
        assert reg.collections.register("HSC/raw/all", CollectionType.RUN, owner="NCSA")
        assert reg.collections.owner("HSC/raw/all") == "NCSA"
        reg.collections.register("NCSA/tagged", CollectionType.TAGGED, owner="NCSA")
        reg.collections.register("NCSA/chain", CollectionType.CHAINED, owner="NCSA")
        files_before = stored_files(root)
        journal = Journal(reg)
        with pytest.raises(CollectionError) as info:
            b.put({"v": 2}, "raw", RAW_ID)  # the butler's default run is HSC/raw/all
        assert "NCSA" in str(info.value) and "IN2P3" in str(info.value)
        with pytest.raises(CollectionError, match="NCSA"):
            reg.datasets.associate("NCSA/tagged", [local])
        with pytest.raises(CollectionError, match="NCSA"):
            reg.collections.set_doc("HSC/raw/all", "mine now")
        with pytest.raises(CollectionError, match="NCSA"):
            reg.collections.set_chain("NCSA/chain", ["IN2P3/raw"])
        with pytest.raises(CollectionError, match="NCSA"):
            b.remove_runs(["HSC/raw/all"])
        assert journal.new() == []
        assert stored_files(root) == files_before
        assert b.query_datasets("raw", "HSC/raw/all") == []
        assert reg.collections.exists("HSC/raw/all")


def test_runs_created_by_put_belong_to_the_site(raw_butler: Butler) -> None:
    raw_butler.put({"v": 1}, "raw", RAW_ID)
    assert raw_butler.registry.collections.owner("HSC/raw/all") == "NCSA"
    with Butler(raw_butler.config.root) as again:
        assert again.registry.collections.owner("HSC/raw/all") == "NCSA"


# -- concurrency -----------------------------------------------------------------------


def test_concurrent_writers(repo: Path) -> None:
    with Butler(repo) as setup:
        setup.registry.insert_dimension_records("instrument", [{"instrument": "HSC"}])
        setup.registry.insert_dimension_records("detector", [
            {"instrument": "HSC", "detector": d} for d in range(50)])
        setup.registry.register_dataset_type("metric", BIAS_DIMS, "JSON")
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            with Butler(repo, run=f"thread{index}/run") as b:
                start.wait(timeout=30)
                for detector in range(50):
                    b.put({"thread": index, "detector": detector}, "metric",
                          instrument="HSC", detector=detector)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    with Butler(repo) as b:
        refs = b.query_datasets("metric", ["thread0/run", "thread1/run"], find_first=False)
        assert len(refs) == 100 and len({r.id for r in refs}) == 100
        for index in range(2):
            run = f"thread{index}/run"
            assert sorted(r.data_id["detector"] for r in refs if r.run == run) == list(range(50))
            assert b.get("metric", instrument="HSC", detector=49, collections=run) == {
                "thread": index, "detector": 49}
        entries = list(b.registry.db.entries())
        seqs = [e.seq for e in entries]
        assert seqs == list(range(1, len(seqs) + 1))
        assert b.registry.db.last_seq() == len(seqs)
        assert sum(e.kind == "dataset" for e in entries) == 100
        assert {e.change.id for e in entries if e.kind == "dataset"} == {str(r.id) for r in refs}


def test_concurrent_writers_into_one_new_run(repo: Path) -> None:
    """Both writers find the run missing and create it; the second must not fail."""
    with Butler(repo) as setup:
        setup.registry.insert_dimension_records("instrument", [{"instrument": "HSC"}])
        setup.registry.insert_dimension_records("detector", [
            {"instrument": "HSC", "detector": d} for d in range(20)])
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            with Butler(repo, run="shared/run") as b:
                start.wait(timeout=30)
                b.registry.register_dataset_type("metric", BIAS_DIMS, "JSON")
                for detector in range(index, 20, 2):
                    b.put({"detector": detector}, "metric", instrument="HSC", detector=detector)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with Butler(repo) as b:
        refs = b.query_datasets("metric", "shared/run")
        assert sorted(r.data_id["detector"] for r in refs) == list(range(20))
        kinds = [e.kind for e in b.registry.db.entries()]
        assert kinds.count("collection") == 1 and kinds.count("dataset_type") == 1
