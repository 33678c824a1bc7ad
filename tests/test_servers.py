"""The loopback sshd and nginx fixtures in servers.py work with real clients."""

from __future__ import annotations

import select
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from servers import SSHServer

# Register the fixtures of servers.py (importing them by name would upset ruff's F811).
pytest_plugins = ["servers"]


def ssh(server: SSHServer, key: Path, *command: str, known_hosts: Path | None = None,
        wait: bool = True):
    """Run ``ssh`` against ``server`` ignoring all user and system ssh configuration."""
    args = ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known_hosts or server.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", str(server.port),
            f"{server.user}@{server.host}", *command]
    if not wait:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30)


def test_ssh_key_auth(sshd_server):
    assert ssh(sshd_server, sshd_server.user_key, "true").returncode == 0
    assert ssh(sshd_server, sshd_server.wrong_key, "true").returncode != 0


def test_ssh_changed_host_key_is_refused(sshd_server):
    result = ssh(sshd_server, sshd_server.user_key, "true",
                 known_hosts=sshd_server.other_known_hosts)
    assert result.returncode != 0
    assert "HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_ssh_restart(sshd_private):
    assert ssh(sshd_private, sshd_private.user_key, "true").returncode == 0
    sshd_private.stop()
    assert ssh(sshd_private, sshd_private.user_key, "true").returncode != 0
    sshd_private.start()
    assert ssh(sshd_private, sshd_private.user_key, "true").returncode == 0
    sshd_private.restart()
    assert ssh(sshd_private, sshd_private.user_key, "true").returncode == 0


def test_ssh_stop_kills_open_sessions(sshd_private):
    session = ssh(sshd_private, sshd_private.user_key, "echo up; sleep 60", wait=False)
    with session:
        try:
            ready, _, _ = select.select([session.stdout], [], [], 10)
            assert ready and session.stdout.readline() == b"up\n"
            sshd_private.stop()
            assert session.wait(timeout=10) != 0
        finally:
            session.kill()


def fetch(url: str, **headers: str):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_web_server(web_server, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"0123456789")
    url = web_server.url_for(tmp_path)
    with fetch(url + "data.bin") as response:
        assert response.read() == b"0123456789"
        assert response.headers["ETag"]
    with fetch(url + "data.bin", Range="bytes=2-") as response:
        assert response.status == 206
        assert response.read() == b"23456789"
    with pytest.raises(urllib.error.HTTPError) as error:
        fetch(web_server.url + "forbidden/x")
    assert error.value.code == 403
    relpath = url.removeprefix(web_server.url) + "data.bin"
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as error:
        opener.open(web_server.url + "moved/" + relpath, timeout=10)
    assert error.value.code == 301
    assert error.value.headers["Location"] == web_server.url + relpath


def test_web_private_limit_rate(web_private, tmp_path):
    (tmp_path / "big.bin").write_bytes(bytes(64 * 1024))
    server = web_private(tmp_path, limit_rate="32k")
    start = time.monotonic()
    with fetch(server.url + "big.bin") as response:
        assert len(response.read()) == 64 * 1024
    assert time.monotonic() - start > 0.5
    server.restart()
    with fetch(server.url_for(tmp_path) + "big.bin", Range="bytes=-4") as response:
        assert response.read() == bytes(4)
