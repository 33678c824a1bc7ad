"""A real, throwaway Rucio server for tests, bound to 127.0.0.1 on a free port.

:class:`RucioServer` runs the Rucio server package from a virtualenv of its own
(``tools/install-rucio.sh``; ``FED_RUCIO_VENV``, default ``.rucio-venv`` at the project root)
against a database of its own on the local PostgreSQL (``FED_TEST_POSTGRES_URL``, as in
``conftest.py``), created empty and dropped afterwards:

1. ``CREATE DATABASE rucio_test_<random>``;
2. ``rucio.cfg`` written to the work dir (the server processes get ``RUCIO_CONFIG``);
3. the schema built and the root account bootstrapped with userpass credentials
   (``build_database()``, ``create_base_vo()``, ``create_root_account()`` of
   ``rucio.db.sqla.util``, i.e. what the package's ``tools/bootstrap.py`` runs);
4. the REST API served by ``gunicorn`` (``rucio.web.rest.flaskapi.v1.main:application``),
   in its own session, until ``GET /ping`` answers;

and :meth:`RucioServer.stop` SIGTERMs gunicorn's process group (SIGKILL after a bounded
wait) and drops the database (``WITH (FORCE)``). Every wait is bounded.

Only the server (no daemons) runs: rules stay REPLICATING as nothing transfers. Tests talk
to it with ``rucio-clients`` of the same version in the project's venv
(:meth:`RucioServer.client`).

Fixture (``pytest_plugins = ["rucio_server"]`` or ``from rucio_server import rucio_server``):

* ``rucio_server`` -- session scope, one started :class:`RucioServer`. With
  ``FED_TEST_RUCIO=1`` (``tools/test.sh`` sets it, after ``tools/install-rucio.sh``) or under
  CI (``CI`` set) the Rucio tests are required: a missing Rucio venv, ``rucio-clients`` or
  PostgreSQL fails them. Otherwise they run where all of that is present and skip with the
  reason elsewhere.

Run by hand, ``python tests/rucio_server.py`` starts one and prints how to reach it until
Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

HOST = "127.0.0.1"
PROJECT = Path(__file__).resolve().parents[1]
RUCIO_VENV = Path(os.environ.get("FED_RUCIO_VENV", PROJECT / ".rucio-venv"))
RUCIO_VERSION = "41.5.1"  # tools/install-rucio.sh installs this; rucio-clients must match
PG_URL = os.environ.get(
    "FED_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BOOTSTRAP_TIMEOUT = 120.0  # schema creation: ~130 tables, indexes and constraints
START_TIMEOUT = 60.0  # gunicorn importing Rucio and answering /ping
STOP_TIMEOUT = 10.0

_BOOTSTRAP = """\
from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
build_database()
create_base_vo()
create_root_account()
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tail(path: Path, size: int = 3000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"


def missing_prerequisite(venv: Path = RUCIO_VENV, pg_url: str = PG_URL) -> str | None:
    """Why a Rucio server cannot be started here, or None when it can."""
    if not (venv / "bin" / "gunicorn").exists():
        return f"no Rucio server venv at {venv}: run tools/install-rucio.sh"
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            client_version = version("rucio-clients")
        except PackageNotFoundError:
            return (f"rucio-clients is not installed in {sys.prefix}: "
                    f"pip install rucio-clients=={RUCIO_VERSION}")
        if client_version != RUCIO_VERSION:
            return f"rucio-clients {client_version} installed, the server is {RUCIO_VERSION}"
    except ImportError:  # pragma: no cover
        return "importlib.metadata unavailable"
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        return f"PostgreSQL not reachable at {pg_url}: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()
    return None


class RucioServer:
    """A Rucio server of its own: a fresh PostgreSQL database, a rucio.cfg, gunicorn.

    ``url`` is where it answers (``http://127.0.0.1:PORT``); the root account authenticates
    with ``username``/``password`` (userpass). ``log`` is gunicorn's output, ``rucio_log``
    the server's own log dir.
    """

    def __init__(self, workdir: Path, *, pg_url: str = PG_URL, venv: Path = RUCIO_VENV,
                 workers: int = 1, threads: int = 4) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.venv = venv
        self.workers = workers
        self.threads = threads
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.username = "fedroot"
        self.password = secrets.token_hex(12)
        self.db_name = f"rucio_test_{uuid.uuid4().hex[:12]}"
        self._admin_url = sa.engine.make_url(pg_url)
        # Rucio 41 talks to PostgreSQL through psycopg 3 only (the rucio[postgresql] extra).
        self.db_url = self._admin_url.set(drivername="postgresql+psycopg",
                                          database=self.db_name)
        self.config = workdir / "rucio.cfg"
        self.client_config = workdir / "rucio-client.cfg"
        self.log = workdir / "gunicorn.log"
        self.rucio_log = workdir / "log"
        self.startup_seconds: dict[str, float] = {}
        self._proc: subprocess.Popen | None = None
        self._db_created = False

    # -- configuration -------------------------------------------------------------------

    def _write_configs(self) -> None:
        self.rucio_log.mkdir(exist_ok=True)
        alembic_ini = self.workdir / "alembic.ini"
        migrate_repo = next(
            (self.venv / "lib").glob("python3*/site-packages/rucio/db/sqla/migrate_repo"))
        db_url = self.db_url.render_as_string(hide_password=False)
        # build_database() stamps the schema at alembic's head, reading this file.
        alembic_ini.write_text(
            "[alembic]\n"
            f"script_location = {migrate_repo}\n"
            f"sqlalchemy.url = {db_url.replace('%', '%%')}\n"
            "[loggers]\nkeys = root\n"
            "[handlers]\nkeys = console\n"
            "[formatters]\nkeys = generic\n"
            "[logger_root]\nlevel = WARN\nhandlers = console\n"
            "[handler_console]\nclass = StreamHandler\nargs = (sys.stderr,)\n"
            "level = NOTSET\nformatter = generic\n"
            "[formatter_generic]\nformat = %(levelname)s [%(name)s] %(message)s\n")
        # An empty identity skips that kind in create_root_account(): userpass only.
        # [cache] url names a closed port so Rucio never shares a memcached that happens to
        # run on the machine (it falls back to no caching when memcached is unreachable).
        self.config.write_text(
            "[common]\n"
            f"logdir = {self.rucio_log}\n"
            "loglevel = WARNING\n"
            "logformat = %%(asctime)s\t%%(process)d\t%%(levelname)s\t%%(message)s\n"
            "[database]\n"
            f"default = {db_url.replace('%', '%%')}\n"
            "pool_size = 5\n"
            "max_overflow = 5\n"
            "pool_reset_on_return = rollback\n"
            "echo = 0\n"
            "[alembic]\n"
            f"cfg = {alembic_ini}\n"
            "[bootstrap]\n"
            f"userpass_identity = {self.username}\n"
            f"userpass_pwd = {self.password}\n"
            "userpass_email = root@localhost\n"
            "x509_identity =\n"
            "x509_email =\n"
            "gss_identity =\n"
            "gss_email =\n"
            "ssh_identity =\n"
            "ssh_email =\n"
            "[policy]\n"
            "permission = generic\n"
            "schema = generic\n"
            "lfn2pfn_algorithm_default = hash\n"
            "support = root@localhost\n"
            "support_rucio = https://rucio.cern.ch/\n"
            "[cache]\n"
            f"url = {HOST}:{free_port()}\n"
            "[monitor]\n"
            "enable_metrics = False\n"
            "[client]\n"  # what the server's own rucio tools would use
            f"rucio_host = {self.url}\n"
            f"auth_host = {self.url}\n"
            "auth_type = userpass\n"
            f"username = {self.username}\n"
            f"password = {self.password}\n"
            "account = root\n")
        # For rucio-clients in the test process: where the server is, no credentials (each
        # RucioServer.client() passes its own).
        self.client_config.write_text(
            "[client]\n"
            f"rucio_host = {self.url}\n"
            f"auth_host = {self.url}\n"
            "auth_type = userpass\n"
            "account = root\n"
            "request_retries = 1\n")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "RUCIO_HOME")}
        env["RUCIO_CONFIG"] = str(self.config)
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    # -- database ------------------------------------------------------------------------

    def _admin(self, statement: str) -> None:
        engine = sa.create_engine(self._admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(statement))
        finally:
            engine.dispose()

    def _create_database(self) -> None:
        self._admin(f'CREATE DATABASE "{self.db_name}"')
        self._db_created = True

    def _drop_database(self) -> None:
        if self._db_created:
            # FORCE (PostgreSQL >= 13) ends connections a killed worker may have left.
            self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self._db_created = False

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Create the database, bootstrap it, start gunicorn and wait until it answers."""
        t0 = time.monotonic()
        try:
            self._write_configs()
            self._create_database()
            bootstrap_log = self.workdir / "bootstrap.log"
            with open(bootstrap_log, "wb") as log:
                done = subprocess.run([str(self.venv / "bin" / "python"), "-c", _BOOTSTRAP],
                                      env=self._env(), cwd=self.workdir,
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                      timeout=BOOTSTRAP_TIMEOUT)
            if done.returncode:
                raise RuntimeError(f"Rucio bootstrap failed ({done.returncode});"
                                   f" {bootstrap_log} ends with:\n{_tail(bootstrap_log)}")
            t1 = time.monotonic()
            self.startup_seconds["bootstrap"] = t1 - t0
            self._start_gunicorn()
            self.startup_seconds["gunicorn"] = time.monotonic() - t1
        except BaseException:
            self.stop()
            raise

    def _start_gunicorn(self) -> None:
        command = [
            str(self.venv / "bin" / "gunicorn"),
            "--bind", f"{HOST}:{self.port}",
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--timeout", "120",
            "--graceful-timeout", "5",
            "--worker-tmp-dir", str(self.workdir),
            "--log-level", "warning",
            "--error-logfile", "-",
            "rucio.web.rest.flaskapi.v1.main:application",
        ]
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(command, env=self._env(), cwd=self.workdir,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Rucio server did not answer on {self.url}/ping;"
                           f" {self.log} ends with:\n{_tail(self.log)}")

    def stop(self) -> None:
        """Stop gunicorn (its whole process group) and drop the database."""
        try:
            self.stop_gunicorn()
        finally:
            self._drop_database()

    def stop_gunicorn(self) -> None:
        """Stop serving (the database stays): the server is down until start_gunicorn()."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
            # Workers left behind by a master that died first are in the same group.
            _signal_group(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=STOP_TIMEOUT)

    def start_gunicorn(self) -> None:
        """Serve again on the same port, after stop_gunicorn()."""
        if self._proc is None:
            self._start_gunicorn()

    def run_daemon(self, name: str, *args: str, timeout: float = 120.0) -> str:
        """Run one of Rucio's daemons (``rucio-reaper --run-once``, ...) from the server's
        environment; its output, or RuntimeError with it if it failed."""
        done = subprocess.run([str(self.venv / "bin" / name), *args], env=self._env(),
                              cwd=self.workdir, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode:
            raise RuntimeError(f"{name} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def __enter__(self) -> RucioServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients -------------------------------------------------------------------------

    def client(self, username: str | None = None, password: str | None = None,
               account: str = "root"):
        """A ``rucio.client.Client`` logged in with userpass (default: the root identity).

        Each client keeps its token in a directory of its own: rucio-clients otherwise
        caches tokens per account under /tmp, shared with every other server and client.
        Raises ``rucio.common.exception.CannotAuthenticate`` for wrong credentials.
        """
        from rucio.client import Client

        tokens = self.workdir / "tokens"
        tokens.mkdir(exist_ok=True)
        token_dir = tempfile.mkdtemp(dir=tokens)
        isolated = type("IsolatedClient", (Client,),
                        {"TOKEN_PATH_PREFIX": f"{token_dir}/.rucio_"})
        return isolated(rucio_host=self.url, auth_host=self.url, account=account,
                        auth_type="userpass",
                        creds={"username": username or self.username,
                               "password": self.password if password is None else password},
                        timeout=60)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def rucio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    """One Rucio server for the whole run, with its own database; ``RUCIO_CONFIG`` points the
    test process's rucio-clients at it while it runs."""
    required = os.environ.get("FED_TEST_RUCIO") == "1" or bool(os.environ.get("CI"))
    reason = missing_prerequisite()
    if reason:
        if required:
            pytest.fail(f"Rucio server unavailable: {reason}")
        pytest.skip(f"Rucio server unavailable: {reason}")
    server = RucioServer(tmp_path_factory.mktemp("rucio"))
    previous = os.environ.get("RUCIO_CONFIG")
    with server:
        os.environ["RUCIO_CONFIG"] = str(server.client_config)
        _clean_client_config_cache()
        try:
            yield server
        finally:
            if previous is None:
                os.environ.pop("RUCIO_CONFIG", None)
            else:
                os.environ["RUCIO_CONFIG"] = previous
            _clean_client_config_cache()


def _clean_client_config_cache() -> None:
    """rucio-clients reads its config once per process; make it read RUCIO_CONFIG again."""
    try:
        from rucio.common.config import clean_cached_config
    except ImportError:
        return
    clean_cached_config()


if __name__ == "__main__":
    reason = missing_prerequisite()
    if reason:
        sys.exit(reason)
    with tempfile.TemporaryDirectory(prefix="rucio-server-") as tmp, \
            RucioServer(Path(tmp)) as server:
        print(f"Rucio {RUCIO_VERSION} at {server.url} (database {server.db_name})\n"
              f"  RUCIO_CONFIG={server.client_config}  identity {server.username}"
              f" / {server.password}  account root\n"
              f"  start-up: {server.startup_seconds}\n  Ctrl-C stops it.", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
