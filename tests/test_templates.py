"""File templates: default layout, optional fields, overrides, uniqueness and safety."""

from __future__ import annotations

import posixpath
import uuid

import pytest

from federation.datastore.templates import DEFAULT_TEMPLATE, FileTemplate, FileTemplates
from federation.errors import ConfigError, DatastoreError

UUID = uuid.UUID("12345678123456781234567812345678")
RAW_DIMS = ["instrument", "exposure", "detector"]
RAW_ID = {"instrument": "HSC", "exposure": 903334, "detector": 10,
          "physical_filter": "HSC-R", "band": "r", "day_obs": 20130617}


def fmt(template: FileTemplate, data_id: dict, *, run: str = "HSC/raw/all",
        dataset_type: str = "raw", extension: str = ".fits") -> str:
    return template.format(run=run, dataset_type=dataset_type, data_id=data_id,
                           dataset_id=UUID, extension=extension)


def test_default_template_for_raw() -> None:
    template = FileTemplates().for_type("raw", RAW_DIMS)
    assert template.template == DEFAULT_TEMPLATE
    assert fmt(template, RAW_ID) == "HSC/raw/all/raw/20130617/raw_HSC_r_HSC-R_903334_10.fits"
    assert {"run", "dataset_type", "day_obs", "patch"} <= template.fields


def test_default_template_coadd_drops_optional_fields_and_empty_directory() -> None:
    template = FileTemplates().for_type("deepCoadd", ["skymap", "tract", "patch", "band"])
    data_id = {"skymap": "hsc_rings_v1", "tract": 9813, "patch": 40, "band": "i"}
    path = fmt(template, data_id, run="u/someone/coadd", dataset_type="deepCoadd")
    assert path == "u/someone/coadd/deepCoadd/deepCoadd_i_hsc_rings_v1_9813_40.fits"
    assert "//" not in path


@pytest.mark.parametrize(("template", "data_id", "expected"), [
    ("{run}/{a:?}_{b:?}_{c}", {"c": 3}, "r/3"),
    ("{run}/{a:?}_{b:?}_{c}", {"b": 2, "c": 3}, "r/2_3"),
    ("{run}/{a:?}_{b:?}_{c}", {"a": 1, "c": 3}, "r/1_3"),
    ("{run}/x-{a:?}-{b:?}", {}, "r/x"),
    ("{run}/x-{a:?}-{b:?}", {"b": "B"}, "r/x-B"),
    ("{run}/{a:?}/{b:?}/{c}", {"c": 3}, "r/3"),
    ("{run}/{a:?}{b:?}_y", {}, "r/y"),
    ("{run}/v{a:?}.z", {}, "r/v.z"),
    ("{run}/{id}", {}, "r/" + UUID.hex),
    ("{run}/{c:03d}_{a:05d?}", {"c": 7}, "r/007"),
    ("{run}/{c:03d}_{a:05d?}", {"c": 7, "a": 42}, "r/007_00042"),
])
def test_optional_fields(template: str, data_id: dict, expected: str) -> None:
    assert fmt(FileTemplate(template), data_id, run="r", extension="") == expected


def test_extension_is_appended_to_final_component() -> None:
    t = FileTemplate("{run}/{dataset_type}/{visit:?}")
    assert fmt(t, {}, run="r", dataset_type="t", extension=".fits.gz") == "r/t.fits.gz"
    with pytest.raises(DatastoreError, match="extension"):
        fmt(t, {}, run="r", extension="/../x")


def test_per_type_override() -> None:
    templates = FileTemplates({"calexp": "{run}/calexp/{instrument}/{visit}/{detector:03d}"})
    calexp = templates.for_type("calexp", ["instrument", "visit", "detector"])
    data_id = {"instrument": "HSC", "visit": 1228, "detector": 5}
    assert fmt(calexp, data_id, run="r", dataset_type="calexp") == "r/calexp/HSC/1228/005.fits"
    assert templates.for_type("raw", RAW_DIMS).template == DEFAULT_TEMPLATE
    assert templates.for_type("calexp", ["instrument", "visit", "detector"]) is calexp


def test_override_of_default() -> None:
    templates = FileTemplates({"default": "{run}/{dataset_type}/{id}"})
    template = templates.for_type("anything", ["instrument", "group"])
    assert fmt(template, {}, run="r", dataset_type="t", extension="") == f"r/t/{UUID.hex}"


@pytest.mark.parametrize("config", [
    {"calexp": "{run}/calexp/{visit}"},
    {"default": "{run}/{dataset_type}/{visit}"},
])
def test_non_unique_user_template(config: dict) -> None:
    templates = FileTemplates(config)
    with pytest.raises(ConfigError, match=r"detector.*paths would collide"):
        templates.for_type("calexp", ["instrument", "visit", "detector"])


def test_default_user_template_needs_dataset_type() -> None:
    with pytest.raises(ConfigError, match="collide"):
        FileTemplates({"default": "{run}/{visit}_{detector}"})


@pytest.mark.parametrize("bad", [
    "{dataset_type}/{run}", "run/{dataset_type}", "{run:?}/x", "{run}/{visit",
    "{run}/visit}", "{run}/{}", "{run}/{a.b}", "{run}/{a[0]}", "{run}/{a!r}",
    "{run}/{a:{b}}", "{run}//{a}", "{run}/../{a}", "{run}/{a}/", "{run}/a b/{c}",
    "{run}/{a:zz}", "",
])
def test_bad_templates(bad: str) -> None:
    with pytest.raises(ConfigError):
        FileTemplate(bad)
    with pytest.raises(ConfigError):
        FileTemplates({"raw": bad})


def test_bad_config_types() -> None:
    with pytest.raises(ConfigError):
        FileTemplates({"raw": 42})  # type: ignore[dict-item]


@pytest.mark.parametrize("hostile", ["../../etc", "/etc/passwd", "a/../../b", "..\\..\\x",
                                     "x y;rm -rf *", "é\0\n"])
def test_hostile_data_id_values_are_sanitized(hostile: str) -> None:
    t = FileTemplates().for_type("raw", RAW_DIMS)
    data_id = dict(RAW_ID, physical_filter=hostile, instrument=hostile)
    path = fmt(t, data_id)
    parts = path.split("/")
    assert parts[:5] == ["HSC", "raw", "all", "raw", "20130617"] and len(parts) == 6
    assert not posixpath.isabs(path)
    assert posixpath.normpath(path) == path
    assert all(c.isalnum() and c.isascii() or c in "._+-/%" for c in path)


@pytest.mark.parametrize("value", ["..", "."])
def test_dot_components_rejected(value: str) -> None:
    t = FileTemplate("{run}/{visit}/{detector}")
    with pytest.raises(DatastoreError, match="path component"):
        fmt(t, {"visit": value, "detector": 1}, run="r")


@pytest.mark.parametrize("run", ["../../etc", "a//b", "/abs/run", "a/./b", "run/"])
def test_hostile_run_rejected(run: str) -> None:
    with pytest.raises(DatastoreError, match="path component"):
        fmt(FileTemplates().for_type("raw", RAW_DIMS), RAW_ID, run=run)


def test_run_keeps_slashes_and_is_sanitized() -> None:
    t = FileTemplate("{run}/{dataset_type}")
    assert fmt(t, {}, run="u/me/tick #1", dataset_type="a b",
               extension="") == "u/me/tick%20%231/a%20b"


def test_distinct_values_give_distinct_paths() -> None:
    t = FileTemplate("{run}/{skymap}")
    paths = {fmt(t, {"skymap": v}, run="r", extension="") for v in
             ["hsc rings", "hsc_rings", "hsc%20rings", "hsc%rings", "é", "%C3%A9"]}
    assert len(paths) == 6


def test_missing_required_field() -> None:
    t = FileTemplate("{run}/{dataset_type}/{visit}_{detector}")
    with pytest.raises(DatastoreError, match="'detector'"):
        fmt(t, {"visit": 1})


def test_unformattable_value() -> None:
    t = FileTemplate("{run}/{detector:03d}")
    with pytest.raises(DatastoreError, match="cannot format detector='ten'"):
        fmt(t, {"detector": "ten"})


def test_custom_dimension_falls_back_to_id() -> None:
    templates = FileTemplates()
    t = templates.for_type("raw", ["instrument", "group", "detector"])
    assert "id" in t.fields and t.template == DEFAULT_TEMPLATE + "_{id}"
    data_id = {"instrument": "LATISS", "group": "g1", "detector": 0}
    path = fmt(t, data_id, run="r")
    assert path == f"r/raw/raw_LATISS_0_{UUID.hex}.fits"
    # Built-in default with every required dimension: no id appended.
    assert "id" not in templates.for_type("raw", RAW_DIMS).fields


def test_parsed_templates_are_cached() -> None:
    templates = FileTemplates()
    assert templates.for_type("raw", RAW_DIMS) is templates.for_type("raw", RAW_DIMS)
    assert FileTemplate("{run}/{a}")._parts is FileTemplate("{run}/{a}")._parts
