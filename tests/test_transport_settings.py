"""The settings of each kind of transport, as site definitions give them: refused in one
line naming the file and key when invalid, described without secrets, and read without
loading any network library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from federation.errors import ConfigError
from federation.transport.kinds import INBOX, KINDS, parse_settings
from federation.transport.retry import RetryPolicy
from federation.transport.settings import LocalSettings, SFTPSettings

SFTP = {"host": "h", "root": "/d"}
HTTP = {"url": "https://x/repo/"}


@pytest.mark.parametrize(("kind", "block", "message"), [
    ("sftp", None, "'transport: sftp' needs a 'sftp:' mapping"),
    ("sftp", {"root": "/data"}, "'sftp: host' is required"),
    ("sftp", {"host": "h"}, "'sftp: root' is required"),
    ("sftp", {"host": "h", "root": "data"}, "'sftp: root' must be an absolute path"),
    ("sftp", SFTP | {"port": 0}, "'sftp: port' must be a positive integer"),
    ("sftp", SFTP | {"port": True}, "'sftp: port' must be a positive integer"),
    ("sftp", SFTP | {"port": 70000}, "'sftp: port' must be at most 65535"),
    ("sftp", SFTP | {"retries": 0}, "'sftp: retries' must be a positive integer"),
    ("sftp", SFTP | {"timeout": 0}, "'sftp: timeout' must be a positive number"),
    ("sftp", SFTP | {"retry_deadline": "soon"}, "'sftp: retry_deadline' must be a positive"),
    ("sftp", SFTP | {"password": "x"}, "unknown key(s) in 'sftp:': password"),
    ("sftp", SFTP | {"outbox": "out"}, "'sftp: outbox' must be an absolute path"),
    ("sftp", SFTP | {"user": 3}, "'sftp: user' must be a string"),
    ("http", {}, "'http: url' is required"),
    ("http", {"url": "ftp://x/"}, "'http: url' must be an http:// or https:// URL"),
    ("http", HTTP | {"verify": 1}, "'http: verify' must be true, false or a CA bundle path"),
    ("http", HTTP | {"retries": 2.5}, "'http: retries' must be a positive integer"),
    ("http", HTTP | {"inbox": "https://x/in/"}, "unknown key(s) in 'http:': inbox"),
    ("local", {}, "'root' is required and must be a string"),
    ("local", {"root": "r", "outbox": 3}, "'outbox' must be a directory path"),
    ("rsync", {}, "unknown transport 'rsync'; use one of local, sftp, http"),
])
def test_invalid_settings_are_refused_in_one_line_naming_the_file_and_key(kind, block, message):
    with pytest.raises(ConfigError) as info:
        parse_settings(kind, block, "sites/NCSA.yaml")
    assert str(info.value).startswith("sites/NCSA.yaml: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_settings_describe_the_site_and_survive_their_own_dict(tmp_path):
    sftp = parse_settings("sftp", SFTP | {"port": 2222, "user": "fed", "key_file": "~/.ssh/k",
                                          "retries": 3, "retry_deadline": 10}, "x")
    assert sftp == SFTPSettings("h", "/d", port=2222, user="fed", key_file=Path("~/.ssh/k"),
                                retry=RetryPolicy(attempts=3, deadline=10.0))
    assert sftp.describe() == "sftp://h:2222/d" and sftp.address == "[h]:2222"
    assert sftp.folder("outbox") == "/d/.federation-outbox"
    http = parse_settings("http", HTTP, "x")
    assert http.describe() == HTTP["url"]
    assert http.folder_url("outbox") == "https://x/repo/.federation-outbox/"
    with pytest.raises(ConfigError, match="read-only over HTTP"):
        http.open("inbox")
    local = parse_settings("local", {"root": "repo", "outbox": "pub"}, "x", base=tmp_path)
    assert local == LocalSettings(tmp_path / "repo", tmp_path / "pub", tmp_path / "repo" / INBOX)
    assert local.open("outbox").describe() == str(tmp_path / "pub")
    for settings in (sftp, http, local):
        shown = json.loads(json.dumps(settings.to_dict()))
        assert parse_settings(settings.kind, shown, "x").to_dict() == shown


def test_the_table_of_kinds_says_what_each_transport_can_do():
    assert {name: (kind.remote, kind.writable, kind.settings.kind)
            for name, kind in KINDS.items()} == {
        "local": (False, True, "local"), "sftp": (True, True, "sftp"),
        "http": (True, False, "http")}


def test_reading_transport_settings_loads_no_network_library():
    """Site definitions are read by every command, `fed --help` included: fast."""
    code = ("import sys, federation.transport.kinds; "
            "print([m for m in ('paramiko', 'requests') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
