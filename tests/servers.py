"""Real OpenSSH and nginx servers for transport tests, bound to 127.0.0.1 on free ports.

Both are started in their own session (``start_new_session=True``) and killed with SIGKILL,
so tests can simulate a server dying mid-transfer. Every wait is bounded. The binaries come
from ``tools/install-servers.sh``.

Fixtures (import them into a test module or conftest with ``from servers import ...``):

* ``sshd_server`` -- session scope, one :class:`SSHServer` shared by the whole run.
* ``sshd_private`` -- function scope, a :class:`SSHServer` a test may stop and restart.
* ``web_server`` -- session scope, a :class:`WebServer` whose root is pytest's base temp dir,
  so ``web_server.url_for(tmp_path)`` serves any test's ``tmp_path``.
* ``web_private`` -- function scope factory ``web_private(root, limit_rate=None, listing=True)``.
"""

from __future__ import annotations

import functools
import getpass
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HOST = "127.0.0.1"
SSHD = "/usr/sbin/sshd"
NGINX = "/usr/sbin/nginx"
START_TIMEOUT = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _children_by_parent() -> dict[int, list[int]]:
    """Map each pid to its child pids, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Field 4 of /proc/PID/stat is the parent pid; the command name (field 2) may
            # contain spaces and parentheses, so split after its closing ")".
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid``, whatever session or process group they moved to."""
    children = _children_by_parent()
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _kill(pid: int, sig: int, *, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except ProcessLookupError:
        pass


def _tail(path: Path, size: int = 2000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"


def _keygen(path: Path, comment: str) -> None:
    """Create an unencrypted ed25519 key pair at ``path`` and ``path.pub``."""
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", comment,
                    "-f", str(path)], check=True, timeout=30)


class _Server:
    """A server process in its own session on ``port``; subclasses provide the command."""

    port: int
    log: Path
    _proc: subprocess.Popen | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Hook run before each start."""

    def start(self) -> None:
        """Start the server and wait (bounded) until its port accepts connections."""
        self._prepare()
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{type(self).__name__} did not start on {HOST}:{self.port};"
                           f" {self.log} ends with:\n{_tail(self.log)}")

    def stop(self) -> None:
        """SIGKILL the server and everything it forked, including open sessions.

        Killing the process group is not enough for sshd: each connection's child calls
        setsid(), leaving the group. So freeze the group (no new forks), kill every
        descendant found in /proc, then the group.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _kill(proc.pid, signal.SIGSTOP, group=True)
        for pid in _descendants(proc.pid):
            _kill(pid, signal.SIGKILL)
        _kill(proc.pid, signal.SIGKILL, group=True)
        proc.wait(timeout=START_TIMEOUT)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class SSHServer(_Server):
    """An sshd on 127.0.0.1 accepting only ``user_key`` for the current user.

    ``known_hosts`` trusts this server's host key; ``other_known_hosts`` lists a different key
    for the same host and port, to test changed-host-key detection. ``wrong_key`` is a valid
    key pair that is not authorized.
    """

    host = HOST

    def __init__(self, workdir: Path, *, sftp_only: bool = False) -> None:
        """``sftp_only``: the account runs no commands (``ForceCommand internal-sftp``), as
        many data sites configure it."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.user = getpass.getuser()
        self.log = workdir / "sshd.log"
        host_key = workdir / "ssh_host_ed25519_key"
        self.user_key = workdir / "id_user"
        self.wrong_key = workdir / "id_wrong"
        other_host_key = workdir / "other_host_ed25519_key"
        for key in (host_key, self.user_key, self.wrong_key, other_host_key):
            _keygen(key, key.name)
        (workdir / "authorized_keys").write_text(self.user_key.with_suffix(".pub").read_text())
        self.host_key_pub = host_key.with_suffix(".pub").read_text().strip()
        self.known_hosts = workdir / "known_hosts"
        self.known_hosts.write_text(self._known_hosts_line(self.host_key_pub))
        self.other_known_hosts = workdir / "other_known_hosts"
        self.other_known_hosts.write_text(
            self._known_hosts_line(other_host_key.with_suffix(".pub").read_text()))
        self.config = workdir / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {HOST}\n"
            f"HostKey {host_key}\n"
            f"PidFile {workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "Subsystem sftp internal-sftp\n"
            "MaxStartups 100\n"
            "MaxSessions 100\n"
            "LogLevel ERROR\n"
            + ("ForceCommand internal-sftp\n" if sftp_only else ""))

    def _known_hosts_line(self, pub: str) -> str:
        keytype, b64 = pub.split()[:2]
        return f"[{HOST}]:{self.port} {keytype} {b64}\n"

    def _prepare(self) -> None:
        # As root sshd refuses to start without its privilege-separation (chroot) directory,
        # which a container's /run usually lacks; it must not be group/world writable.
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)
            os.chmod("/run/sshd", 0o755)

    def _command(self) -> list[str]:
        # sshd needs an absolute path: it re-executes itself for every connection.
        return [SSHD, "-D", "-e", "-f", str(self.config)]


@functools.cache
def _nginx_has_e_flag() -> bool:
    """nginx >= 1.19.5 takes ``-e FILE``, so it never opens the built-in error log path."""
    help_text = subprocess.run([NGINX, "-h"], capture_output=True, text=True, timeout=30)
    return "-e filename" in help_text.stdout + help_text.stderr


class WebServer(_Server):
    """An nginx on 127.0.0.1 serving ``root`` with ETags and byte ranges.

    Besides static files: ``/moved/<path>`` answers 301 to ``/<path>`` and ``/forbidden/...``
    answers 403. ``limit_rate`` (e.g. ``"100k"``) throttles every response, to make
    transfers slow enough to interrupt. With ``listing`` (the default) directories are
    listed as nginx's JSON index (``autoindex on; autoindex_format json;``), as a site
    must publish them for files to be listed over HTTP; without it they answer 403.
    """

    def __init__(self, workdir: Path, root: Path, *, limit_rate: str | None = None,
                 listing: bool = True) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.root = root
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/"
        self.log = workdir / "error.log"
        self.config = workdir / "nginx.conf"
        temp_paths = "".join(f'    {name}_temp_path "{workdir / name}";\n'
                             for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.config.write_text(
            "daemon off;\n"
            "master_process on;\n"
            "worker_processes 1;\n"
            f'pid "{workdir / "nginx.pid"}";\n'
            f'error_log "{self.log}" warn;\n'
            # Workers would otherwise run as nobody and could not read pytest's 0700 temp dirs.
            + ("user root;\n" if os.geteuid() == 0 else "")
            + "events {}\n"
            "http {\n"
            "    access_log off;\n"
            "    sendfile on;\n"
            "    etag on;\n"
            "    default_type application/octet-stream;\n"
            f"{temp_paths}"
            "    server {\n"
            f"        listen {HOST}:{self.port};\n"
            f'        root "{root}";\n'
            + (f"        limit_rate {limit_rate};\n" if limit_rate else "")
            + ("        location / { autoindex on; autoindex_format json; }\n" if listing
               else "        location / { }\n")
            + "        location ~ ^/moved/(.*)$ { return 301 /$1; }\n"
            "        location /forbidden/ { return 403; }\n"
            "    }\n"
            "}\n")

    def url_for(self, path: Path) -> str:
        """URL of directory ``path`` (under ``root``), ending with "/"."""
        rel = path.resolve().relative_to(self.root.resolve()).as_posix()
        return self.url if rel == "." else self.url + urllib.parse.quote(rel) + "/"

    def _command(self) -> list[str]:
        error_flag = ["-e", str(self.log)] if _nginx_has_e_flag() else []
        return [NGINX, "-p", str(self.workdir), "-c", str(self.config), *error_flag]


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """One sshd for the whole run; tests must not stop it."""
    with SSHServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def sshd_private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """An sshd of this test's own, free to stop and restart."""
    with SSHServer(tmp_path_factory.mktemp("sshd_private")) as server:
        yield server


@pytest.fixture(scope="session")
def sshd_sftp_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """An sshd whose account may only speak SFTP: no shell, no commands."""
    with SSHServer(tmp_path_factory.mktemp("sshd_sftp_only"), sftp_only=True) as server:
        yield server


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """One nginx for the whole run, serving pytest's base temp dir (every ``tmp_path``)."""
    root = tmp_path_factory.getbasetemp()
    with WebServer(tmp_path_factory.mktemp("nginx"), root) as server:
        yield server


@pytest.fixture
def web_private(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., WebServer]]:
    """Factory ``web_private(root, limit_rate=None, listing=True)``: a started nginx of this
    test's own."""
    servers: list[WebServer] = []

    def make(root: Path, limit_rate: str | None = None, listing: bool = True) -> WebServer:
        server = WebServer(tmp_path_factory.mktemp("nginx_private"), root,
                           limit_rate=limit_rate, listing=listing)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
