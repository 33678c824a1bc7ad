"""A site definition's ``rucio:`` block: read whole, every mistake one line naming the key
(no Rucio server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from federation.errors import ConfigError
from federation.sites import load_site

BLOCK = {"url": "https://rucio.example.org", "account": "fed", "username": "fed",
         "password_env": "FED_RUCIO_PASSWORD", "scope": "hsc", "rse": "NCSA_DISK"}


def site(tmp_path: Path, rucio) -> Path:
    folder = tmp_path / "sites"
    folder.mkdir(exist_ok=True)
    (folder / "NCSA.yaml").write_text(yaml.safe_dump({
        "name": "NCSA", "registry": "sqlite:///ncsa.sqlite3", "root": "ncsa/hsc",
        "rucio": rucio}))
    return folder


def test_a_rucio_block_is_read_with_its_defaults(tmp_path: Path) -> None:
    found = load_site("NCSA", site(tmp_path, BLOCK))
    assert found.rucio is not None
    assert (found.rucio.rse, found.rucio.scope, found.rucio.auth_type) == \
        ("NCSA_DISK", "hsc", "userpass")
    assert found.rucio.wait == 86400 and found.rucio.ca_cert is True
    shown = found.to_dict()["rucio"]
    assert shown["password_env"] == "FED_RUCIO_PASSWORD" and "password" not in shown
    assert load_site("NCSA", site(tmp_path, None)).rucio is None


def test_x509_needs_a_certificate_and_resolves_it_next_to_the_definition(
        tmp_path: Path) -> None:
    block = {k: v for k, v in BLOCK.items() if k not in ("username", "password_env")}
    found = load_site("NCSA", site(tmp_path, block | {"auth_type": "x509",
                                                      "certificate": "certs/fed.pem"}))
    assert found.rucio.certificate == tmp_path / "sites" / "certs" / "fed.pem"
    with pytest.raises(ConfigError, match="'rucio: certificate' is required with auth_type"):
        load_site("NCSA", site(tmp_path, block | {"auth_type": "x509"}))


@pytest.mark.parametrize(("change", "message"), [
    ({"rse": None}, "'rucio: rse' is required"),
    ({"url": "rucio.example.org"}, "'rucio: url' must be an http:// or https:// URL"),
    ({"scope": "a scope"}, "'rucio: scope' must be letters"),
    ({"auth_type": "kerberos"}, "'rucio: auth_type' must be one of"),
    ({"password_env": None}, "'rucio: password_env' is required with auth_type userpass"),
    ({"wait": 0}, "'rucio: wait' must be a positive number"),
    ({"ca_cert": ""}, "'rucio: ca_cert' must be true, false or a CA bundle path"),
    ({"rses": "X"}, "unknown key\\(s\\) in 'rucio:': rses"),
])
def test_every_mistake_is_one_line_naming_the_key(tmp_path: Path, change: dict,
                                                  message: str) -> None:
    block = {k: v for k, v in (BLOCK | change).items() if v is not None}
    with pytest.raises(ConfigError, match=message) as error:
        load_site("NCSA", site(tmp_path, block))
    assert "\n" not in str(error.value) and "NCSA.yaml" in str(error.value)


def test_a_missing_password_variable_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from federation.rucio.session import RucioError, RucioSession

    monkeypatch.delenv("FED_RUCIO_PASSWORD", raising=False)
    found = load_site("NCSA", site(tmp_path, BLOCK))
    with pytest.raises(RucioError, match=r"\$FED_RUCIO_PASSWORD, which is not set"):
        RucioSession(found.rucio, found.name).whoami()
