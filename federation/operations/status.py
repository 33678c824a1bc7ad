"""``fed status`` and ``fed serve``: the federation's state, gathered from every site
within a deadline, as a report or as a read-only web page.

Each site is read in a thread of its own (:mod:`federation.status.bounded`): one that
has not answered within ``timeout`` seconds is shown as unreachable, with why. The
sites answer first (journal heads, cursors, releases, sync logs); then each source is
asked how much of its journal lies after its destinations' cursors: at most about
twice ``timeout`` in all.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from federation.errors import ConfigError, InputError
from federation.operations import release as releases
from federation.operations.policy import Declared, problems_of, read_declared
from federation.policy import FederateState, policies_dir, state_path
from federation.registry.releases import ReleaseCheck, ReleaseInfo
from federation.sites import SiteDefinition, sites_dir
from federation.status.assemble import (
    Gathered,
    cursor_keys,
    flow_statuses,
    pair_statuses,
    release_statuses,
    site_statuses,
)
from federation.status.bounded import call_all
from federation.status.model import FederationStatus, LoggedRun, ReleaseCell
from federation.status.probe import journal_tails, probe, quick

PathLike = str | os.PathLike | None


@dataclass(frozen=True)
class StatusRequest:
    """Where the sites, policies and federate state are; ``timeout``: seconds each site
    has to answer; ``log_limit``: the latest sync log entries to gather too (0: none)."""

    sites: PathLike = None
    policies: PathLike = None
    state: PathLike = None
    timeout: float = 10.0
    log_limit: int = 0

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise InputError(f"--timeout must be positive, not {self.timeout:g}")
        if self.log_limit < 0:
            raise InputError("the log limit must not be negative")


def status(request: StatusRequest) -> FederationStatus:
    """Every site, flow, (source, destination) pair and release, as they stand now."""
    started, generated = time.monotonic(), time.time()
    declared = _declared(request)
    folder, policies = sites_dir(request.sites), policies_dir(request.policies)
    problems = [str(problem) for problem in problems_of(declared)]
    path = state_path(policies, request.state)
    try:
        state = FederateState.load(path)
    except ConfigError as exc:
        problems.append(str(exc))
        state = FederateState(path)
    sites, edges = declared.sites, declared.edges
    remote = frozenset(site.name for site in sites if site.is_remote)
    asked = call_all({_key("probe", site): partial(
        probe, quick(site, request.timeout), remote, releases.published, request.log_limit)
        for site in sites}, request.timeout)
    found = Gathered(sites, {site.name: asked[_key("probe", site)] for site in sites}, {})
    wanted = found.wanted(cursor_keys(found, edges))
    by_name = {site.name: site for site in sites}
    selections = found.selections(edges)
    tails = call_all({_key("journal", by_name[name]): partial(journal_tails, by_name[name],
                                                              cursors, selections)
                      for name, cursors in wanted.items()}, request.timeout)
    found.tails = {name: tails[_key("journal", by_name[name])] for name in wanted}
    flows = flow_statuses(found, edges, state)
    return FederationStatus(
        generated, request.timeout, str(folder), str(policies), str(path),
        sites=site_statuses(found), flows=flows, pairs=pair_statuses(found, edges, flows),
        releases=release_statuses(found, _classify), problems=problems,
        log=_recent(found, request.log_limit), elapsed=time.monotonic() - started)


def _declared(request: StatusRequest) -> Declared:
    """The sites and policies; none at all is an error (a status of nothing)."""
    declared = read_declared(request.policies, request.sites)
    if not declared.sites:
        broken = f" ({len(declared.unreadable)} cannot be read: 'fed site list')" \
            if declared.unreadable else ""
        raise ConfigError(f"no usable site definitions in {sites_dir(request.sites)}{broken} "
                          "(see --sites or $FED_SITES)")
    policies = policies_dir(request.policies)
    if not policies.is_dir():
        raise ConfigError(f"no policies directory {policies} (see --policies or "
                          "$FED_POLICIES)")
    return declared


def _key(what: str, site: SiteDefinition) -> str:
    """Names one call to one site, process-wide: a call still running is not repeated."""
    return f"{what} {site.name} {site.source}"


def _classify(site: str, info: ReleaseInfo | None, check: ReleaseCheck | None) -> ReleaseCell:
    """A site's standing with a release, as ``fed release status`` rules it."""
    standing = releases.standing(site, info, check)
    return ReleaseCell(standing.site, standing.state, standing.root, standing.checked,
                       standing.detail)


def _recent(found: Gathered, limit: int) -> list[LoggedRun]:
    """The latest ``limit`` entries of every reachable site's sync log, newest first."""
    runs = [LoggedRun(name, entry) for name in found.probes
            if (probe_ := found.probe(name)) is not None for entry in probe_.recent]
    runs.sort(key=lambda run: (run.entry.started, run.entry.id or 0), reverse=True)
    return runs[:limit]


# -- fed serve -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServeRequest:
    """``fed serve``: the status page on ``host:port`` (0: any free port), refreshing
    itself every ``refresh`` seconds; a host other than loopback only with ``public``."""

    status: StatusRequest
    host: str = "127.0.0.1"
    port: int = 8765
    refresh: float = 10.0
    public: bool = False
    log_limit: int = 50

    def __post_init__(self) -> None:
        if not self.refresh > 0:
            raise InputError(f"--refresh must be positive, not {self.refresh:g}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port must be between 0 and 65535, not {self.port}")


def check_host(host: str, public: bool) -> None:
    """Refuse to serve beyond this machine unless asked to (``--public``)."""
    if public:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"--host {host}: cannot be resolved ({exc})") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                                for a in addresses):
        raise InputError(f"--host {host} is not a loopback address: the status page would "
                         "be open to the network; add --public to serve it there anyway")


def _listening(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``; one that cannot be had is a one-line error
    (werkzeug would print its own lines and exit)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return listener


def serve(request: ServeRequest, *, stop: threading.Event,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve the status page until ``stop`` is set; ``ready`` is told its URL."""
    from werkzeug.serving import make_server

    from federation.web import create_app

    check_host(request.host, request.public)
    gather = partial(status, dataclasses.replace(request.status, log_limit=request.log_limit))
    _declared(request.status)  # no sites or no policies: an error now
    app = create_app(gather, refresh=request.refresh)
    with _listening(request.host, request.port) as listener:
        port = listener.getsockname()[1]
        server = make_server(request.host, port, app, threaded=True, fd=listener.fileno())
    host = f"[{request.host}]" if ":" in request.host else request.host
    if ready is not None:
        ready(f"http://{host}:{port}/")
    watcher = threading.Thread(target=lambda: (stop.wait(), server.shutdown()), daemon=True)
    watcher.start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        stop.set()
        server.server_close()
