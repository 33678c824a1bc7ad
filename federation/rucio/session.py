"""The one place that talks to a Rucio server: bulk calls, errors as one line, calls counted.

Every call goes through :meth:`RucioSession.call`, which turns what rucio-clients raises
(wrong credentials, an unreachable server, a refused request) into a :class:`RucioError`
naming the server and the operation, and counts the requests made (the benchmark reports
them: a sync of N files must make far fewer than N). Lists of files travel in chunks of
:data:`CHUNK` names per request.

rucio-clients reads a configuration file when it is imported; a machine without one
(no ``$RUCIO_CONFIG``, ``$RUCIO_HOME/etc/rucio.cfg`` or ``/opt/rucio/etc/rucio.cfg``) gets
an empty one in ``$XDG_CACHE_HOME/federation/rucio/``: everything a session needs comes
from the site definition. Tokens are kept there too, one directory per server, account
and identity, so that two federations on one machine never share a token.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from federation.rucio.settings import RucioSettings
from federation.transport.base import TransportError

#: names per bulk request
CHUNK = 1000
#: names per lfns2pfns request: a GET, whose URL servers cap (gunicorn: 4 KiB)
PFN_CHUNK = 25
T = TypeVar("T")
log = logging.getLogger(__name__)


class RucioError(TransportError):
    """A Rucio server refused a request, or could not be reached."""


@dataclass(frozen=True)
class RucioFile:
    """A file to register: its name (the datastore path), size, checksums and metadata."""

    name: str
    size: int
    adler32: str
    md5: str
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Replica:
    """A file's replica on one RSE, as Rucio lists it."""

    name: str
    state: str  # AVAILABLE, COPYING, UNAVAILABLE, BEING_DELETED, BAD, ...
    size: int
    adler32: str | None
    pfns: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()  # every collection holding it (with ``parents=True``)


@dataclass(frozen=True)
class Rule:
    """A replication rule, as Rucio lists it."""

    id: str
    name: str
    rse_expression: str
    state: str  # OK, REPLICATING, STUCK, SUSPENDED, WAITING_APPROVAL, INJECT
    copies: int
    locked: bool
    expires_at: datetime | None
    comment: str
    error: str | None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "federation" / "rucio"


def _ensure_client_config() -> None:
    """Give rucio-clients a configuration file when the machine has none."""
    home = os.environ.get("RUCIO_HOME")
    candidates = [os.environ.get("RUCIO_CONFIG"),
                  f"{home}/etc/rucio.cfg" if home else None, "/opt/rucio/etc/rucio.cfg"]
    if any(c and os.path.isfile(c) for c in candidates):
        return
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "rucio.cfg"
    if not config.exists():
        config.write_text("# Written by fed: site definitions give the server and identity.\n"
                          "[client]\n")
    os.environ["RUCIO_CONFIG"] = str(config)


class RucioSession:
    """A logged-in connection to one site's Rucio server (thread-safe counting; one client
    per session, made on first use)."""

    def __init__(self, settings: RucioSettings, site: str) -> None:
        self.settings = settings
        self.site = site
        self.calls = 0
        self._lock = threading.Lock()
        self._login = threading.Lock()
        self._client: Any = None

    # -- the client ----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._login:  # transfer threads share one login
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        _ensure_client_config()
        try:
            from rucio.client import Client  # rucio-clients: only when a site uses Rucio
        except ImportError:
            raise RucioError(f"site {self.site} replicates its files through Rucio, but "
                             "rucio-clients is not installed: pip install "
                             "'federation[rucio]'") from None

        s = self.settings
        session = self
        creds = self._creds()
        # A token per server, account and credentials: a changed password is tried anew.
        key = hashlib.sha256(f"{s.url}|{s.account}|{sorted(creds.items())}".encode()
                             ).hexdigest()[:16]
        tokens = cache_dir() / "tokens" / key
        tokens.mkdir(parents=True, exist_ok=True, mode=0o700)

        token_file = str(s.token_file) if s.token_file else None

        class Counted(Client):
            TOKEN_PATH_PREFIX = f"{tokens}/.rucio_"

            def _get_auth_tokens(self) -> Any:
                if token_file is None:
                    return super()._get_auth_tokens()
                # A bearer token someone else keeps fresh (oidc-agent, htgettoken, ...).
                return (token_file, f"{tokens}/.expiry", token_file,
                        os.path.dirname(token_file))

            def _send_request(self, *args: Any, **kwargs: Any) -> Any:
                with session._lock:
                    session.calls += 1
                return super()._send_request(*args, **kwargs)

        quiet = logging.getLogger("federation.rucio.client")
        quiet.setLevel(logging.CRITICAL)
        return self.call("log in", lambda: Counted(
            rucio_host=s.url, auth_host=s.auth_url or s.url, account=s.account,
            auth_type=s.auth_type, creds=creds, timeout=s.timeout,
            ca_cert=s.ca_cert if isinstance(s.ca_cert, str) else None, logger=quiet))

    def _creds(self) -> dict[str, Any]:
        s = self.settings
        if s.auth_type == "userpass":
            password = s.password
            if password is None:
                password = os.environ.get(s.password_env or "")
                if not password:
                    raise RucioError(f"site {self.site}: the Rucio password is read from "
                                     f"${s.password_env}, which is not set")
            return {"username": s.username, "password": password}
        if s.auth_type == "x509":
            return {"client_cert": str(s.certificate),
                    "client_key": str(s.key or s.certificate)}
        if s.auth_type == "x509_proxy":
            return {"client_proxy": str(s.proxy)}
        return {}

    def call(self, what: str, operation: Callable[[], T]) -> T:
        """Run one request (or a listing, consumed here); anything Rucio or the network
        raises becomes a RucioError of one line."""
        try:
            return operation()
        except RucioError:
            raise
        except Exception as exc:  # noqa: BLE001 - rucio-clients raises many kinds
            raise RucioError(self._explain(what, exc)) from exc

    def _explain(self, what: str, exc: Exception) -> str:
        s = self.settings
        name = type(exc).__name__
        detail = " ".join(str(exc).split())
        if "Details:" in detail:
            detail = detail.split("Details:", 1)[1].strip()
        where = f"Rucio at {s.url} (site {self.site})"
        if name == "CannotAuthenticate":
            return (f"{where}: cannot {what}: account {s.account} could not authenticate "
                    f"with {s.auth_type} (wrong credentials?)")
        if name in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout",
                    "ServiceUnavailable", "ServerConnectionException", "MaxRetryError",
                    "NewConnectionError") \
                or isinstance(exc, OSError):
            return f"{where} did not answer ({what}): {detail[:200] or name}"
        return f"{where}: cannot {what}: {name}: {detail[:300]}"

    # -- bulk operations -----------------------------------------------------------------

    def dids(self, names: Iterable[str]) -> list[dict[str, str]]:
        return [{"scope": self.settings.scope, "name": name} for name in names]

    def whoami(self) -> str:
        return self.call("ask who is logged in", lambda: self.client.whoami()["account"])

    def replicas(self, rse: str, names: Sequence[str], *,
                 parents: bool = False) -> dict[str, Replica]:
        """The replicas of these files on ``rse`` (files without one there are left out);
        with ``parents``, each with the names of the collections holding it, at any depth
        (in the same request)."""
        found: dict[str, Replica] = {}
        for chunk in chunks(names):
            listed = self.call(f"list replicas on {rse}", lambda c=chunk: list(
                self.client.list_replicas(self.dids(c), rse_expression=rse, all_states=True,
                                          resolve_archives=False, resolve_parents=parents,
                                          # any order: the default (geoip) costs the
                                          # server a lookup per replica
                                          sort="random")))
            for item in listed:
                state = (item.get("states") or {}).get(rse)
                if state is not None:
                    found[item["name"]] = Replica(
                        item["name"], str(state), int(item.get("bytes") or 0),
                        item.get("adler32"), tuple((item.get("rses") or {}).get(rse, ())),
                        tuple(p.split(":", 1)[-1] for p in item.get("parents") or ()))
        return found

    def files(self, names: Sequence[str]) -> dict[str, RucioFile]:
        """The files among ``names`` Rucio knows (on any RSE, or none): size, checksums and
        ``guid`` as first registered."""
        found: dict[str, RucioFile] = {}
        for chunk in chunks(names):
            for meta in self.call("read file metadata", lambda c=chunk: list(
                    self.client.get_metadata_bulk(self.dids(c)))):
                if str(meta.get("did_type", "FILE")).upper().endswith("FILE"):
                    guid = {"guid": str(meta["guid"])} if meta.get("guid") else {}
                    found[meta["name"]] = RucioFile(
                        meta["name"], int(meta.get("bytes") or 0), meta.get("adler32") or "",
                        meta.get("md5") or "", guid)
        return found

    def add_replicas(self, rse: str, files: Sequence[RucioFile]) -> None:
        """Register files as replicas on ``rse`` (already registered ones are left as they
        are), with their size, checksums and metadata columns (``guid``)."""
        for chunk in chunks(files):
            rows = [{"scope": self.settings.scope, "name": f.name, "bytes": f.size,
                     "adler32": f.adler32, "md5": f.md5,
                     "meta": {k: v for k, v in f.meta.items() if k == "guid"}}
                    for f in chunk]
            try:
                self.call(f"register replicas on {rse}",
                          lambda r=rows: self.client.add_replicas(rse, r))
            except RucioError:
                # Another sync from this site may have registered some meanwhile: register
                # what is still missing, once.
                there = self.replicas(rse, [row["name"] for row in rows])
                rest = [row for row in rows if row["name"] not in there]
                if rest:
                    self.call(f"register replicas on {rse}",
                              lambda r=rest: self.client.add_replicas(rse, r))
            extra = [{"scope": self.settings.scope, "name": f.name,
                      "meta": {k: v for k, v in f.meta.items() if k != "guid"}}
                     for f in chunk if any(k != "guid" for k in f.meta)]
            if extra:
                try:
                    self.call("set file metadata",
                              lambda e=extra: self.client.set_dids_metadata_bulk(e))
                except RucioError:
                    # Two syncs from this site setting the same metadata at once can
                    # collide in Rucio's database; the values are the same: set them again.
                    time.sleep(0.5)
                    self.call("set file metadata",
                              lambda e=extra: self.client.set_dids_metadata_bulk(e))

    def guids(self, names: Sequence[str]) -> dict[str, str]:
        """Each file's ``guid`` metadata (the dataset UUID fed registered it with)."""
        found: dict[str, str] = {}
        for chunk in chunks(names):
            for meta in self.call("read file metadata", lambda c=chunk: list(
                    self.client.get_metadata_bulk(self.dids(c)))):
                if meta.get("guid"):
                    found[meta["name"]] = str(meta["guid"])
        return found

    def add_collections(self, kind: str, names: Sequence[str]) -> None:
        """Create Rucio datasets (``kind="dataset"``) or containers that do not exist yet."""
        if not names:
            return
        add = self.client.add_datasets if kind == "dataset" else self.client.add_containers
        for attempt in range(2):  # a second look when another sync made some meanwhile
            existing = self._existing(names)
            missing = [n for n in names if n not in existing]
            try:
                for chunk in chunks(missing):
                    self.call(f"create Rucio {kind}s",
                              lambda c=chunk: add([{"scope": self.settings.scope, "name": n}
                                                   for n in c]))
                return
            except RucioError:
                if attempt:
                    raise

    def _existing(self, names: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(names):
            found.update(m["name"] for m in self.call("look up Rucio names", lambda c=chunk: list(
                self.client.get_metadata_bulk(self.dids(c)))))
        return found

    def attach(self, parent: str, children: Sequence[str]) -> None:
        """Attach files to a dataset (or datasets to a container); attached ones stay."""
        for chunk in chunks(children):
            self.call(f"attach to {parent}", lambda c=chunk: self.client.attach_dids_to_dids(
                [{"scope": self.settings.scope, "name": parent, "dids": self.dids(c)}],
                ignore_duplicate=True))

    def rules(self, rse_expression: str | None = None, **filters: Any) -> list[Rule]:
        """This account's rules in the scope (on ``rse_expression``, if given)."""
        wanted = {"account": self.settings.account, "scope": self.settings.scope, **filters}
        if rse_expression is not None:
            wanted["rse_expression"] = rse_expression
        listed = self.call("list replication rules", lambda: list(
            self.client.list_replication_rules(filters=wanted)))
        return [_rule(item) for item in listed]

    def add_rules(self, names: Sequence[str], rse_expression: str, *, comment: str,
                  copies: int = 1, locked: bool = False, grouping: str = "NONE") -> list[str]:
        """One rule per name (a file, dataset or container) on ``rse_expression``."""
        ids: list[str] = []
        for chunk in chunks(names):
            ids += self.call(f"add replication rules on {rse_expression}", lambda c=chunk: (
                self.client.add_replication_rule(
                    self.dids(c), copies=copies, rse_expression=rse_expression,
                    grouping=grouping, account=self.settings.account, locked=locked,
                    comment=comment)))
        return ids

    def revive_rule(self, rule_id: str) -> None:
        """Keep a rule that was being removed (its expiry cleared)."""
        self.call("keep a replication rule", lambda: self.client.update_replication_rule(
            rule_id, {"lifetime": None}))

    def delete_rule(self, rule_id: str) -> None:
        """Remove a rule, its replicas to be purged by Rucio's reaper once unprotected."""
        self.call("remove a replication rule", lambda: self.client.delete_replication_rule(
            rule_id, purge_replicas=True))

    def pfns(self, rse: str, names: Sequence[str], operation: str = "read") -> dict[str, str]:
        """Where ``rse`` puts these names (its lfn2pfn mapping), by name."""
        found: dict[str, str] = {}
        scope = self.settings.scope
        for chunk in chunks(names, PFN_CHUNK):
            mapped = self.call(f"map names to {rse}", lambda c=chunk: self.client.lfns2pfns(
                rse, [f"{scope}:{n}" for n in c], operation=operation))
            found.update({did.split(":", 1)[1]: pfn for did, pfn in mapped.items()})
        return found

    def file_names(self, pattern: str) -> list[str]:
        """Names of the scope's files matching ``pattern`` (``*`` a wildcard), on any RSE."""
        return self.call("list file names", lambda: [str(name) for name in (
            self.client.list_dids(self.settings.scope, {"name": pattern}, did_type="file"))])

    def delete_replicas(self, rse: str, names: Sequence[str]) -> None:
        """Remove replicas from ``rse``'s catalog at once (the last one of a file removes the
        file too). Rucio's generic permission policy grants this to no account."""
        for chunk in chunks(names):
            self.call(f"delete replicas on {rse}",
                      lambda c=chunk: self.client.delete_replicas(rse, self.dids(c)))

    def mark_deleted(self, rse: str, names: Sequence[str]) -> None:
        """Declare replicas on ``rse`` BEING_DELETED (tombstoned): no longer available, and
        Rucio's reaper removes them from the catalog (root or an admin account)."""
        for chunk in chunks(names):
            self.call(f"mark replicas deleted on {rse}", lambda c=chunk: (
                self.client.update_replicas_states(rse, [
                    {"scope": self.settings.scope, "name": n, "state": "B"} for n in c])))

    def protecting_rules(self, rse: str, name: str) -> list[str]:
        """Ids of the rules that lock the file and whose RSE expression takes in ``rse``."""
        locking = self.call("list the rules of a file", lambda: list(
            self.client.list_associated_rules_for_file(self.settings.scope, name)))
        found: list[str] = []
        for rule in locking:
            covered = self.call("resolve an RSE expression", lambda r=rule: [
                item["rse"] for item in self.client.list_rses(r["rse_expression"])])
            if rse in covered:
                found.append(str(rule["id"]))
        return found


def _rule(item: dict[str, Any]) -> Rule:
    return Rule(str(item["id"]), item["name"], item["rse_expression"], str(item["state"]),
                int(item.get("copies") or 1), bool(item.get("locked")),
                item.get("expires_at"), item.get("comments") or item.get("comment") or "",
                item.get("error"))


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
