"""Site definitions are what is used: a definition whose registry is not its repository's is
refused, and site names are names, never paths."""

from __future__ import annotations

import yaml
from conftest import populate_ncsa, repo_state
from test_cli import fails, fed


def rewrite(path, **changes) -> None:
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(data | changes))


def test_a_registry_url_pointing_elsewhere_is_refused(federation, tmp_path):
    populate_ncsa(federation)
    sites = federation.sites_dir
    rewrite(sites / "IN2P3.yaml", registry=f"sqlite:///{tmp_path / 'nowhere.sqlite3'}")
    with federation.butler("IN2P3") as b:
        before = repo_state(b), b.registry.db.last_seq()
    check = fed("site", "check", "IN2P3", "--sites", sites, code=1)
    assert "error: IN2P3:" in check.stderr and "its definition names the registry" in check.stderr
    fails("sync", "NCSA", "IN2P3", "--sites", sites,
          match=["IN2P3", "nowhere.sqlite3", "but the repository at", "correct one of them"])
    with federation.butler("IN2P3") as b:
        assert (repo_state(b), b.registry.db.last_seq()) == before
    assert not (tmp_path / "nowhere.sqlite3").exists()


def test_site_names_are_never_paths(federation, tmp_path):
    populate_ncsa(federation)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Princeton.yaml").write_text((federation.sites_dir / "Princeton.yaml").read_text())
    for name in ("../outside/Princeton", "/etc/passwd", "Prince ton", "a" * 65):
        fails("sync", "NCSA", name, "--sites", federation.sites_dir,
              match="invalid site name")
    fails("site", "show", "../outside/Princeton", "--sites", federation.sites_dir,
          match="invalid site name")
