"""daf_butler's dimension universe in fed repositories (``fed create --universe daf_butler``).

The translation is checked element by element against the real lsst.daf.butler's own
DimensionUniverse, for every universe version the installed package describes; then
repositories in that universe take daf_butler's records (regions, key-less join
elements, alternate keys), on SQLite and PostgreSQL, sync between themselves, and
refuse to sync with repositories of the default universe.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BACKENDS
from test_cli import fails, fed

from federation.butler import Butler
from federation.dimensions import daf_butler as translated

daf_butler = pytest.importorskip("lsst.daf.butler", reason="pip install -e '.[test]'")

# A square of one degree, as daf_butler's export writes a ConvexPolygon (sphgeom encoding).
SQUARE = ("70000000000000f03f000000000000000000000000000000008aaff597c0feef3f1edd892b0bdf913f"
          "0000000000000000b4825f3c81fdef3f27dcf7c958de913f1edd892b0bdf913f8aaff597c0feef3f00"
          "000000000000001edd892b0bdf913f")

RECORDS = f"""
instrument: [{{instrument: HSC, detector_max: 200, visit_system_value: 1}}]
physical_filter: [{{instrument: HSC, physical_filter: HSC-R, band: r}}]
detector: [{{instrument: HSC, detector: 0, full_name: "1_53"}},
           {{instrument: HSC, detector: 1, full_name: "1_54"}}]
day_obs: [{{instrument: HSC, day_obs: 20130617,
           timespan: {{begin: "2013-06-17T12:00:00", end: "2013-06-18T12:00:00"}}}}]
group: [{{instrument: HSC, group: g1}}]
visit_system: [{{instrument: HSC, visit_system: 1, name: one-to-one}}]
exposure: [{{instrument: HSC, exposure: 903334, obs_id: HSCA90333400, physical_filter: HSC-R,
            group: g1, day_obs: 20130617,
            timespan: {{begin: "2013-06-17T13:00:00", end: "2013-06-17T13:05:00"}}}}]
visit: [{{instrument: HSC, visit: 903334, name: v903334, physical_filter: HSC-R,
         day_obs: 20130617, region: "{SQUARE}"}}]
visit_definition: [{{instrument: HSC, exposure: 903334, visit: 903334}}]
visit_system_membership: [{{instrument: HSC, visit: 903334, visit_system: 1}}]
visit_detector_region: [{{instrument: HSC, visit: 903334, detector: 0, region: "{SQUARE}"}}]
"""


def lsst_universe(version: int):
    """daf_butler's own universe of that version."""
    config = translated.config_dir() / "old_dimensions" / f"daf_butler_universe{version}.yaml"
    if version == daf_butler.DimensionUniverse().version or not config.is_file():
        return daf_butler.DimensionUniverse()
    return daf_butler.DimensionUniverse(daf_butler.DimensionConfig(str(config)))


@pytest.mark.parametrize("version", [v for v in translated.available_versions()])
def test_every_element_matches_daf_butlers_own(version: int) -> None:
    ours = translated.load(version)
    theirs = lsst_universe(version)
    elements = theirs.getStaticElements()
    assert ours.namespace == "daf_butler" and ours.version == theirs.version
    assert set(ours.dimensions) == set(elements.names)
    for element in elements:
        mine = ours[element.name]
        assert set(mine.requires) | ({mine.name} if mine.has_key else set()) \
            == set(element.required.names), element.name
        assert set(mine.implies) == set(element.implied.names), element.name
        assert mine.has_timespan == (element.temporal is not None), element.name
        if isinstance(element, daf_butler.SkyPixDimension):  # regions computed, no records
            assert (mine.key_type, mine.metadata) == ("int", {}), element.name
            continue
        assert ("region" in mine.metadata) == (element.spatial is not None), element.name
        fields = {f.name for f in element.schema.all} - {"timespan"}
        mine_fields = {*mine.requires, *mine.implies,
                       *(mine.renamed.get(f, f) for f in mine.metadata)}
        if mine.has_key:
            mine_fields.add(mine.key_field)
        assert mine_fields == fields, element.name


def test_the_current_universe_is_the_one_daf_butler_writes() -> None:
    assert translated.load().version == daf_butler.DimensionUniverse().version
    assert translated.load(7).digest != translated.load().digest


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_repository_in_daf_butlers_universe_takes_its_records(tmp_path: Path, db_url,
                                                                  backend) -> None:
    repo = tmp_path / "repo"
    fed("create", str(repo), "--universe", "daf_butler",
       *(["--db", db_url] if db_url else []))
    (tmp_path / "records.yaml").write_text(RECORDS)
    fed("insert-dimension-records", str(repo), str(tmp_path / "records.yaml"))
    fed("register-dataset-type", str(repo), "raw", "Bytes", "instrument", "exposure", "detector")
    with Butler(repo) as b:
        universe = b.registry.universe
        assert (universe.namespace, universe.version) == ("daf_butler",
                                                          daf_butler.DimensionUniverse().version)
        regions = b.registry.dimensions.query("visit_detector_region")
        assert [(r["visit"], r["detector"], r["region"]) for r in regions] \
            == [(903334, 0, SQUARE)]
        (exposure,) = b.registry.dimensions.query("exposure")
        assert (exposure["obs_id"], exposure["group"]) == ("HSCA90333400", "g1")
        raw = b.registry.dataset_types.get("raw").dimensions
        assert set(raw.required) == {"instrument", "exposure", "detector"}
        assert set(raw.implied) == {"physical_filter", "band", "group", "day_obs"}


def test_key_less_elements_and_bad_regions_are_refused_clearly(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    fed("create", str(repo), "--universe", "daf_butler")
    fails("register-dataset-type", str(repo), "bad", "Bytes", "visit_detector_region",
          match="visit_detector_region cannot be in a data ID")
    (tmp_path / "r.yaml").write_text(RECORDS.replace(SQUARE, "not-hex", 1))
    fails("insert-dimension-records", str(repo), str(tmp_path / "r.yaml"),
          match=["region", "hex"])
    with Butler(repo) as b:
        assert b.registry.dimensions.query("instrument") == []


@pytest.mark.parametrize(("choice", "says"), [
    ("daf_butler:99", "daf_butler has no universe version 99"),
    ("daf_butler:seven", "universe version must be a number"),
])
def test_a_universe_that_does_not_exist_is_refused(tmp_path: Path, choice: str,
                                                   says: str) -> None:
    fails("create", str(tmp_path / "repo"), "--universe", choice, match=says)
    assert not (tmp_path / "repo").exists()


def test_older_universe_versions_make_repositories_too(tmp_path: Path) -> None:
    fed("create", str(tmp_path / "repo"), "--universe", "daf_butler:7")
    with Butler(tmp_path / "repo") as b:
        assert b.registry.universe.version == 7
        assert "group" in b.registry.universe.dimensions


def make_sites(tmp_path: Path, universes: dict[str, str | None]) -> Path:
    """Repositories and site definitions; a None universe is the default one."""
    import yaml

    sites = tmp_path / "sites"
    sites.mkdir()
    for name, universe in universes.items():
        repo = tmp_path / "repos" / name
        fed("create", str(repo), "--site", name, *(["--universe", universe] if universe else []))
        (sites / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "registry": f"sqlite:///{repo / 'registry.sqlite3'}",
            "root": str(repo), "transport": "local"}))
    return sites


def test_records_of_every_kind_sync_between_daf_butler_repositories(tmp_path: Path) -> None:
    sites = make_sites(tmp_path, {"NCSA": "daf_butler", "IN2P3": "daf_butler",
                                  "laptop": None})
    ncsa = tmp_path / "repos" / "NCSA"
    (tmp_path / "records.yaml").write_text(RECORDS)
    fed("insert-dimension-records", str(ncsa), str(tmp_path / "records.yaml"))
    fed("sync", "NCSA", "IN2P3", "--sites", str(sites))
    with Butler(ncsa) as a, Butler(tmp_path / "repos" / "IN2P3") as b:
        for element in ("visit_detector_region", "visit_definition", "visit_system_membership",
                        "visit", "exposure", "instrument"):
            assert b.registry.dimensions.query(element) == a.registry.dimensions.query(element)
    fails("sync", "NCSA", "laptop", "--sites", str(sites),
          match=["different dimension universes", "universe federation:1 here, daf_butler:"])
