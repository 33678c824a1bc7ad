"""Repositories whose dimension universes differ are never synced: syncs, bundle imports
and pulls through a published outbox compare the universes first and refuse with one
line naming the differences; nothing is written.
"""

from __future__ import annotations

import copy
import shutil

import pytest
from conftest import populate_ncsa, repo_state
from test_bundles import export, sites
from test_cli import fails

from federation.butler import Butler
from federation.dimensions.universe import DimensionUniverse
from federation.errors import ConfigError

REACHES = ("local", "sftp")  # see conftest.pytest_generate_tests


def laptop_with(federation, change) -> None:
    """Make the laptop's repository again with a changed universe."""
    config = copy.deepcopy(DimensionUniverse.default().config)
    change(config["dimensions"])
    root = federation.root / "repos" / "laptop"
    shutil.rmtree(root)
    Butler.create(root, site="laptop", universe=DimensionUniverse(config))


def string_detectors(dims: dict) -> None:
    dims["detector"]["key"] = "string"


def extra_exposure_field(dims: dict) -> None:
    dims["exposure"].setdefault("metadata", {})["seeing"] = "float"


@pytest.mark.parametrize(("change", "named"), [
    (string_detectors, "detector key type string here, int there"),
    (extra_exposure_field, "exposure.seeing float here, absent there"),
])
def test_a_sync_between_different_universes_is_refused(federation, change, named):
    populate_ncsa(federation)
    laptop_with(federation, change)
    with federation.butler("laptop") as b:
        before = repo_state(b), b.registry.db.last_seq()
    with pytest.raises(ConfigError) as info:
        federation.sync("NCSA", "laptop")
    assert "different dimension universes" in str(info.value) and named in str(info.value)
    with federation.butler("laptop") as b:
        assert (repo_state(b), b.registry.db.last_seq()) == before


@pytest.mark.parametrize("reach", ["local"], indirect=True)  # a bundle is a file
def test_a_bundle_from_another_universe_is_refused(federation, tmp_path):
    populate_ncsa(federation)
    laptop_with(federation, string_detectors)
    bundle = export(federation, tmp_path / "b.jsonl.gz", "0", "--with-files", tmp_path / "f")
    fails("import", bundle, "laptop", "--files-from", tmp_path / "f", *sites(federation),
          match=["different dimension universes", "detector key type"])
