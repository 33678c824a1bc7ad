"""An LSST butler (daf_butler) repository as a ``fed sync`` source, against the real
lsst-daf-butler: selection by collection and by --where, the cursor (a re-sync is a
no-op and cheap; what is added later arrives), deletions found by a full comparison,
and the refusals (a missing or corrupted source file, a destination in another
universe, daf_butler not installed).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml
from butler_repos import (
    CALIB,
    CALIB_RUNS,
    CHAIN,
    CHAIN_CHILDREN,
    RAW_RUN,
    TAGGED,
    VALIDITY,
    ButlerRepo,
    import_daf_butler,
    make_butler_repo,
)
from click.testing import CliRunner

from federation.butler import Butler
from federation.cli.main import cli
from federation.dafbutler import source as butler_source
from federation.dimensions import daf_butler as daf_butler_universe
from federation.errors import ConfigError, FederationError, InputError
from federation.operations.sync import sync
from federation.sites import load_site, parse_site
from federation.sync.options import SyncOptions
from federation.sync.selection import Selection
from federation.timespan import MAX_NS, to_ns


class Setup:
    """A daf_butler repository (site LSST) and an empty fed repository in daf_butler's
    universe (site DEST), with their site definitions."""

    def __init__(self, tmp_path: Path) -> None:
        self.lsst: ButlerRepo = make_butler_repo(tmp_path / "lsst" / "repo")
        self.sites = tmp_path / "sites"
        self.sites.mkdir()
        self.dest = tmp_path / "dest"
        Butler.create(self.dest, site="DEST", universe=daf_butler_universe.load(None))
        self.define("LSST", {"kind": "daf_butler", "root": str(self.lsst.root)})
        self.define("DEST", {"registry": f"sqlite:///{self.dest / 'registry.sqlite3'}",
                             "root": str(self.dest)})

    def define(self, name: str, block: dict) -> None:
        (self.sites / f"{name}.yaml").write_text(yaml.safe_dump({"name": name} | block))

    def sync(self, *collections: str, types=None, where=None, reset=False, dry_run=False,
             destination: str = "DEST"):
        selection = Selection.make(collections or None, types, where)
        return sync("LSST", destination, SyncOptions(selection, dry_run=dry_run,
                                                     reset_cursor=reset),
                    sites_dir=self.sites)

    def butler(self) -> Butler:
        return Butler(self.dest)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    import_daf_butler()  # skips when lsst-daf-butler is not installed
    return Setup(tmp_path)


def inserted(report) -> int:
    return report.counts.get("dataset insert", 0)


def held_ids(butler: Butler, collections, types="*") -> set[uuid.UUID]:
    return {ref.id for ref in butler.query_datasets(types, collections, find_first=False)}


# -- site definitions -------------------------------------------------------------------


def test_a_daf_butler_site_names_its_root_or_its_config(tmp_path: Path) -> None:
    by_root = parse_site({"name": "LSST", "kind": "daf_butler", "root": "repo"},
                         tmp_path / "LSST.yaml")
    assert by_root.is_daf_butler and by_root.read_only
    assert by_root.registry.config == (tmp_path / "repo").resolve()
    by_config = parse_site({"name": "LSST", "kind": "daf_butler",
                            "config": "repo/butler.yaml"}, tmp_path / "LSST.yaml")
    assert by_config.registry.config.name == "butler.yaml"
    assert by_config.files.root == (tmp_path / "repo").resolve()
    with pytest.raises(ConfigError, match="'root'.*or 'config'"):
        parse_site({"name": "LSST", "kind": "daf_butler"}, tmp_path / "LSST.yaml")
    with pytest.raises(ConfigError, match="takes only"):
        parse_site({"name": "LSST", "kind": "daf_butler", "root": "r", "registry": "x"},
                   tmp_path / "LSST.yaml")
    with pytest.raises(ConfigError, match="'kind' must be"):
        parse_site({"name": "LSST", "kind": "lsst", "root": "r"}, tmp_path / "LSST.yaml")


# -- selections ---------------------------------------------------------------------------


def test_sync_a_chain_brings_datasets_collections_validity_and_files(setup: Setup) -> None:
    report = setup.sync(CHAIN)
    raws, biases = set(setup.lsst.raws.values()), set(setup.lsst.biases.values())
    assert inserted(report) == len(raws) + len(biases)
    with setup.butler() as dst:
        assert held_ids(dst, [RAW_RUN]) == raws
        assert held_ids(dst, list(CALIB_RUNS)) == biases
        assert dst.registry.collections.children(CHAIN) == list(CHAIN_CHILDREN)
        certified = {ref.id: (span.begin, span.end)
                     for ref, span in dst.registry.datasets.certifications(CALIB)}
        expected = {}
        for (run, _), dataset_id in setup.lsst.biases.items():
            begin, end = VALIDITY[run]
            expected[dataset_id] = (to_ns(begin, default=0),
                                    MAX_NS if end is None else to_ns(end, default=0))
        assert certified == expected
        for dataset_id in raws | biases:
            stored, _ = dst.registry.datasets.file(dataset_id)
            here = dst.datastore.root / stored.path
            assert here.read_bytes() == setup.lsst.file(dataset_id).read_bytes()


def test_sync_by_where_and_dataset_type(setup: Setup) -> None:
    report = setup.sync(RAW_RUN, types=["raw"], where="instrument = 'HSC' AND detector = 1")
    wanted = {i for (_, detector), i in setup.lsst.raws.items() if detector == 1}
    assert inserted(report) == len(wanted)
    with setup.butler() as dst:
        assert held_ids(dst, [RAW_RUN]) == wanted


def test_a_tagged_collection_comes_with_its_members(setup: Setup) -> None:
    setup.sync(TAGGED)
    with setup.butler() as dst:
        assert held_ids(dst, [TAGGED]) == setup.lsst.tagged()


def test_a_bad_where_is_one_line(setup: Setup) -> None:
    with pytest.raises(FederationError, match="--where"):
        setup.sync(RAW_RUN, where="detector = = 1")


def test_globs_that_match_nothing_are_refused(setup: Setup) -> None:
    with pytest.raises(InputError, match="nothing at LSST matches -c 'HSC/nothing/\\*'"):
        setup.sync("HSC/nothing/*")
    with pytest.raises(InputError, match="-t 'flat'"):
        setup.sync(RAW_RUN, types=["flat"])
    with setup.butler() as dst:
        assert dst.registry.cursors.all() == []


# -- the cursor -------------------------------------------------------------------------


def test_a_resync_is_a_cheap_no_op(setup: Setup, monkeypatch) -> None:
    setup.sync(CHAIN)
    monkeypatch.setattr(butler_source.ButlerSource, "export", _no_export)
    started = time.perf_counter()
    report = setup.sync(CHAIN)
    elapsed = time.perf_counter() - started
    assert inserted(report) == 0 and not report.files
    assert elapsed < 5, f"a no-op re-sync took {elapsed:.2f} s"
    with setup.butler() as dst:
        cursor = dst.registry.cursors.get("pull", "LSST", Selection.make([CHAIN]).key)
        assert cursor is not None and cursor.last_seq > 0
        assert cursor.selection["daf_butler"]["counts"] == {"bias": 6, "raw": 12}


def _no_export(*args, **kwargs):
    raise AssertionError("a no-op re-sync exported something")


def test_a_dataset_added_at_the_source_arrives_next_time(setup: Setup) -> None:
    setup.sync(CHAIN)
    new_id = add_raw(setup.lsst)
    report = setup.sync(CHAIN)
    assert inserted(report) == 1
    assert not any("compared the whole selection" in note for note in report.notes)
    with setup.butler() as dst:
        assert new_id in held_ids(dst, [RAW_RUN])
    assert inserted(setup.sync(CHAIN)) == 0


def test_a_changed_tag_is_seen_by_the_structure_digest(setup: Setup) -> None:
    setup.sync(TAGGED)
    lsst = setup.lsst.butler(writeable=True)
    extra = [ref for ref in lsst.registry.queryDatasets("raw", collections=RAW_RUN)
             if ref.dataId["detector"] == 2][:1]
    lsst.registry.associate(TAGGED, extra)
    report = setup.sync(TAGGED)
    assert any("compared the whole selection" in note for note in report.notes)
    with setup.butler() as dst:
        assert held_ids(dst, [TAGGED]) == setup.lsst.tagged() | {extra[0].id}


def test_datasets_gone_from_the_source_are_reported_and_kept(setup: Setup) -> None:
    setup.sync(RAW_RUN)
    victim = setup.lsst.raws[903334, 0]
    lsst = setup.lsst.butler(writeable=True)
    lsst.pruneDatasets([lsst.get_dataset(victim)], purge=True, unstore=True,
                       disassociate=True)
    report = setup.sync(RAW_RUN)  # the count differs: a full comparison
    assert any("gone from LSST" in note and str(victim) in note for note in report.notes)
    with setup.butler() as dst:
        assert victim in held_ids(dst, [RAW_RUN])
    again = setup.sync(RAW_RUN, reset=True)
    assert any("gone from LSST" in note for note in again.notes)


def test_dry_run_writes_nothing(setup: Setup) -> None:
    report = setup.sync(CHAIN, dry_run=True)
    assert inserted(report) == 18
    with setup.butler() as dst:
        assert not held_ids(dst, ["*"])
        assert dst.registry.cursors.all() == []


# -- refusals -----------------------------------------------------------------------------


def test_a_missing_source_file_fails_with_nothing_written(setup: Setup) -> None:
    setup.lsst.file(setup.lsst.raws[903335, 1]).unlink()
    with pytest.raises(FederationError):
        setup.sync(RAW_RUN)
    with setup.butler() as dst:
        assert not held_ids(dst, ["*"])
        assert dst.registry.cursors.all() == []
        assert not [p for p in dst.datastore.root.rglob("*.json")]


def test_a_truncated_source_file_fails_with_nothing_written(setup: Setup) -> None:
    path = setup.lsst.file(setup.lsst.raws[903335, 1])
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(FederationError, match="its datastore record says 102"):
        setup.sync(RAW_RUN)
    with setup.butler() as dst:
        assert not held_ids(dst, ["*"])


def test_a_destination_outside_daf_butlers_universe_is_refused(setup: Setup,
                                                              tmp_path: Path) -> None:
    Butler.create(tmp_path / "plain", site="PLAIN")
    setup.define("PLAIN", {"registry": f"sqlite:///{tmp_path / 'plain' / 'registry.sqlite3'}",
                           "root": str(tmp_path / "plain")})
    with pytest.raises(ConfigError, match="--universe daf_butler"):
        setup.sync(RAW_RUN, destination="PLAIN")


def test_a_butler_site_is_no_destination_and_has_no_releases(setup: Setup) -> None:
    with pytest.raises(ConfigError, match="not into it"):
        sync("DEST", "LSST", SyncOptions(), sites_dir=setup.sites)
    with pytest.raises(InputError, match="no releases"):
        sync("LSST", "DEST", SyncOptions(Selection.make(release="DR1")),
             sites_dir=setup.sites)


def test_without_daf_butler_one_line_says_what_to_install(setup: Setup, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_lsst(name, *args, **kwargs):
        if name.startswith("lsst"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lsst)
    with pytest.raises(ConfigError, match=r"pip install 'federation\[butler\]'"):
        butler_source.ButlerSource(load_site("LSST", setup.sites))


def test_the_command_line_prints_the_summary(setup: Setup) -> None:
    runner = CliRunner()
    args = ["sync", "LSST", "DEST", "-c", CHAIN, "--sites", str(setup.sites)]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "LSST -> DEST: applied" in first.output
    again = runner.invoke(cli, args)
    assert again.exit_code == 0 and "insert" not in again.output
    plain = runner.invoke(cli, ["site", "check", "LSST", "--sites", str(setup.sites)])
    assert "LSST: ok (LSST butler repository" in plain.output


def add_raw(repo: ButlerRepo) -> uuid.UUID:
    """A new raw (detector 3 of exposure 903334) ingested at the source."""
    daf_butler = import_daf_butler()
    lsst = repo.butler(writeable=True)
    lsst.registry.insertDimensionData("detector", {"instrument": "HSC", "id": 3,
                                                   "full_name": "1_03", "purpose": "SCIENCE"})
    raw = lsst.registry.getDatasetType("raw")
    path = repo.root.parent / "incoming" / "late.json"
    path.write_bytes(b'{"late": true}')
    ref = daf_butler.DatasetRef(raw, {"instrument": "HSC", "exposure": 903334, "detector": 3},
                                run=RAW_RUN)
    lsst.ingest(daf_butler.FileDataset(path=str(path), refs=[ref],
                                       formatter="lsst.daf.butler.formatters.json.JsonFormatter"),
                transfer="copy")
    return ref.id
