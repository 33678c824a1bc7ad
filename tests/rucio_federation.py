"""Federations whose files move through the real Rucio server of rucio_server.py.

Every test gets a scope and one POSIX RSE per site of its own (names tagged at random, so
tests share the session's server without seeing each other). Each RSE maps names with
Rucio's ``identity`` algorithm under the prefix ``BASE/SITE/``; the site's repository is
``BASE/SITE/SCOPE``: the datastore path of a file is its Rucio name, and a replica Rucio
puts on the RSE lands exactly where the site's registry expects the file.

FTS cannot run here. :class:`TransferAgent` stands in for it (and for Rucio's conveyor
daemons): it looks for locks of replicating rules, copies each file from an RSE that has
it to the lock's RSE, verifies the copy's adler32 against the replica's record, and marks
the new replica available through Rucio's API, which is what Rucio's own transfer
machinery does once FTS reports a successful transfer. Rucio's rule, lock and replica
state is real: only the bytes are moved by this agent.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from rucio_server import RucioServer, rucio_server  # noqa: F401  (fixture)

from federation.butler import Butler

SITES = {"NCSA": ["HSC/raw", "HSC/calib", "HSC/runs", "HSC/defaults", "refcats", "skymaps"],
         "IN2P3": ["HSC/runs-in2p3", "u/in2p3"], "Princeton": ["u/princeton"]}


def adler32_of(path: Path) -> str:
    value = 1
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"


def local_path(pfn: str) -> Path:
    return Path(pfn.removeprefix("file://localhost").removeprefix("file://"))


@dataclass
class TransferAgent:
    """Moves the bytes of replicating locks, as FTS would (see the module's docstring)."""

    client: object
    scope: str
    copied: int = 0
    failures: list[str] = field(default_factory=list)
    #: files whose copies the agent corrupts after checking them (a storage fault at the
    #: destination), by name
    corrupt: set[str] = field(default_factory=set)
    #: called (rule id, reason) when a copy fails its checksum, as Rucio's conveyor marks
    #: a rule whose transfers FTS gave up on (None: the lock just stays replicating)
    stuck_reason: Callable[[str, str], None] | None = None

    def run_once(self) -> int:
        """Copy what every replicating rule of the scope waits for; how many files.

        In bulk, as FTS takes transfers: one listing of the replicating rules, then per
        destination RSE a chunk of files at a time (their replicas, their destination
        PFNs and their new state each in one request)."""
        waiting: dict[str, dict[str, str]] = {}  # RSE -> file name -> rule id
        for rule in list(self.client.list_replication_rules(  # state R: REPLICATING
                filters={"scope": self.scope, "state": "R"})):
            if str(rule["did_type"]).endswith("FILE") and rule["copies"] == 1 \
                    and self._is_rse(rule["rse_expression"]):
                waiting.setdefault(rule["rse_expression"], {})[rule["name"]] = rule["id"]
                continue
            for lock in self.client.list_replica_locks(rule["id"]):
                if lock["state"] == "REPLICATING":
                    waiting.setdefault(lock["rse"], {})[lock["name"]] = rule["id"]
        done = 0
        for target, files in waiting.items():
            names = sorted(files)
            for start in range(0, len(names), 1000):
                done += self._copy_chunk(target, names[start:start + 1000], files)
        self.copied += done
        return done

    def _is_rse(self, expression: str) -> bool:
        if not hasattr(self, "_rses"):
            self._rses = {r["rse"] for r in self.client.list_rses()}
        return expression in self._rses

    def _copy_chunk(self, target: str, names: list[str], rules: dict[str, str]) -> int:
        dids = [{"scope": self.scope, "name": name} for name in names]
        replicas = {r["name"]: r for r in self.client.list_replicas(
            dids, schemes=["file"], all_states=True, sort="random")}
        pfns = {}
        for start in range(0, len(names), 25):  # a GET: its URL is capped (gunicorn 4 KiB)
            pfns.update(self.client.lfns2pfns(
                target, [f"{self.scope}:{n}" for n in names[start:start + 25]],
                operation="write"))
        arrived = []
        for name in names:
            replica = replicas.get(name) or {}
            sources = [rse for rse, state in replica.get("states", {}).items()
                       if state == "AVAILABLE" and rse != target]
            if sources and self._copy(rules[name], name, sources[0], replica,
                                      local_path(pfns[f"{self.scope}:{name}"])):
                arrived.append({"scope": self.scope, "name": name, "state": "A"})
        if arrived:
            self.client.update_replicas_states(target, arrived)
        return len(arrived)

    def _copy(self, rule_id: str, name: str, source_rse: str, replica: dict,
              destination: Path) -> bool:
        source = local_path(replica["rses"][source_rse][0])
        destination.parent.mkdir(parents=True, exist_ok=True)
        temp = destination.with_name(destination.name + ".agent-part")
        temp.write_bytes(source.read_bytes())
        got = adler32_of(temp)
        if got != replica["adler32"]:  # FTS verifies checksums, so does this
            temp.unlink()
            reason = (f"[TRANSFER FAILED] checksum mismatch: source {source_rse} adler32 "
                      f"{replica['adler32']}, copy {got}")
            self.failures.append(f"{name}: {reason}")
            if self.stuck_reason is not None:
                self.stuck_reason(rule_id, reason)
            return False
        os.replace(temp, destination)
        if name in self.corrupt:
            with open(destination, "r+b") as f:
                first = f.read(1)
                f.seek(0)
                f.write(bytes([first[0] ^ 0xFF]))
        return True

    @contextlib.contextmanager
    def running(self, interval: float = 0.2) -> Iterator[TransferAgent]:
        """The agent at work in a thread while the block runs."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    self.run_once()
                except Exception as exc:  # noqa: BLE001 - the server may be down on purpose
                    self.failures.append(f"agent: {type(exc).__name__}: {exc}")
                stop.wait(interval)

        worker = threading.Thread(target=loop, daemon=True)
        worker.start()
        try:
            yield self
        finally:
            stop.set()
            worker.join(timeout=30)


class RucioFederation:
    """Three sites whose files are replicated through Rucio (see the module docstring)."""

    def __init__(self, server: RucioServer, base: Path) -> None:
        self.server = server
        self.base = base
        self.tag = uuid.uuid4().hex[:8]
        self.scope = f"fed{self.tag}"
        self.client = server.client()
        self.client.add_scope("root", self.scope)
        self.sites_dir = base / "sites"
        self.sites_dir.mkdir(parents=True)
        self.agent = TransferAgent(self.client, self.scope)
        for name, owns in SITES.items():
            prefix = base / name
            rse = self.rse(name)
            self.client.add_rse(rse, deterministic=True, rse_type="DISK")
            self.client.add_protocol(rse, {
                "scheme": "file", "hostname": "localhost", "port": 0, "prefix": f"{prefix}/",
                "impl": "rucio.rse.protocols.posix.Default",
                "domains": {"lan": {"read": 1, "write": 1, "delete": 1},
                            "wan": {"read": 1, "write": 1, "delete": 1,
                                    "third_party_copy_read": 1, "third_party_copy_write": 1}}})
            self.client.add_rse_attribute(rse, "lfn2pfn_algorithm", "identity")
            self.client.set_local_account_limit("root", rse, -1)
            repo = self.repo(name)
            self.write_site(name, owns)
            Butler.create(repo, site=name)

    def rse(self, site: str) -> str:
        return f"{site.upper()}_{self.tag.upper()}"

    def repo(self, site: str) -> Path:
        return self.base / site / self.scope

    def rucio_block(self, site: str, **changes) -> dict:
        return {"url": self.server.url, "account": "root", "username": self.server.username,
                "password": self.server.password, "scope": self.scope, "rse": self.rse(site),
                "poll": 0.2, "timeout": 20, "wait": 120} | changes

    def write_site(self, name: str, owns: list[str] | None = None, **changes) -> None:
        repo = self.repo(name)
        (self.sites_dir / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "registry": f"sqlite:///{repo / 'registry.sqlite3'}",
            "root": str(repo), "owns": owns if owns is not None else SITES[name],
            "rucio": self.rucio_block(name, **changes)}))

    def butler(self, name: str, **kwargs) -> Butler:
        return Butler(self.repo(name), **kwargs)

    def fed(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``fed`` on this federation's sites, as a user would."""
        done = subprocess.run([self.fed_path, *args], capture_output=True, text=True,
                              env=self.env, timeout=600)
        if check and done.returncode:
            raise AssertionError(f"fed {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    @property
    def fed_path(self) -> str:
        return str(Path(sys.executable).parent / "fed")

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ) | {"FED_SITES": str(self.sites_dir)}

    def mark_stuck(self, rule_id: str, reason: str) -> None:
        """What Rucio's conveyor does with a rule whose transfer failed for good: the rule
        and its replicating locks STUCK, the reason in the rule's error (set in Rucio's
        database, as the daemon does: the client API cannot set an error). The error goes
        in first: a sync looking meanwhile never sees the rule stuck without its reason."""
        engine = sa.create_engine(self.server.db_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE rules SET error = :e WHERE id = CAST(:i AS uuid)"),
                             {"e": reason, "i": rule_id})
        finally:
            engine.dispose()
        self.client.update_replication_rule(rule_id, {"state": "STUCK"})

    def rules(self, site: str) -> list[dict]:
        return [r for r in self.client.list_replication_rules(
            filters={"scope": self.scope, "rse_expression": self.rse(site)})]

    def replica_state(self, site: str, name: str) -> str | None:
        found = list(self.client.list_replicas([{"scope": self.scope, "name": name}],
                                               all_states=True))
        return found[0]["states"].get(self.rse(site)) if found else None


@pytest.fixture
def rucio_fed(rucio_server: RucioServer, tmp_path: Path) -> RucioFederation:  # noqa: F811
    """Three sites (NCSA, IN2P3, Princeton) on SQLite, files through Rucio."""
    return RucioFederation(rucio_server, tmp_path)
