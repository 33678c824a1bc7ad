"""`fed status` and `fed serve`: thin wrappers over federation.operations.status."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from federation.cli import render
from federation.cli.federation_commands import SITES
from federation.cli.policy_commands import POLICIES

if TYPE_CHECKING:
    from federation.status import FederationStatus

STATE = click.option("--state", "state_file", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="FED_FEDERATE_STATE", default=None,
                     help="fed federate's state file (default: POLICIES/.federate/state.json).")
TIMEOUT = click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0,
                       show_default=True, metavar="S",
                       help="Seconds each site has to answer; one that does not is shown as "
                            "unreachable.")
ERROR_WIDTH = 70


@click.command()
@SITES
@POLICIES
@STATE
@TIMEOUT
@render.JSON_OPTION
def status(sites_dir, policies_dir, state_file, timeout, as_json) -> None:
    """Show the federation: every site, flow, (source, destination) pair and release.

    \b
    sites:    reachable (within --timeout, with why not), journal head, last change
    flows:    one row per flow and destination: how far behind the destination is
              (source journal entries after its cursor, and the age of the oldest
              change it lacks), its standing, last success, last error, files
              waiting to be retried, conflicts in its last logged run, next due
    pairs:    each (source, destination): the worst lag of its flows (of the
              selections synced by hand when no flow joins them), the last sync
    releases: release x site: verified, incomplete, unverified, absent, unreachable

    \b
    A flow's standing is the first that holds: disabled; unreachable (a site did
    not answer); failing (its last run failed); lagging (behind > 0); stale (its
    last success is older than twice its interval); ok. Entries the destination
    made itself are not counted when they come back. The exit status is 0 (a
    report), unless there are no site definitions or no policies directory.
    """
    from federation.operations.status import StatusRequest
    from federation.operations.status import status as run

    found = run(StatusRequest(sites_dir, policies_dir, state_file, timeout))
    if as_json:
        render.as_json(found.to_dict())
    else:
        show(found)
    for problem in found.problems:
        click.echo(f"warning: {problem}", err=True)


def show(found: FederationStatus) -> None:
    """The status as tables: sites, flows, pairs, releases."""
    from federation.status import ago, format_age

    now = found.generated
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    click.echo(f"federation status at {when} (gathered in {found.elapsed:.2f} s; each site "
               f"has {format_age(found.timeout)} to answer)")
    click.echo("\nsites")
    render.table(["site", "reach", "transport", "registry", "role", "journal head",
                  "last change", "releases", "note"],
                 [[s.name, "ok" if s.reachable else "unreachable", s.transport, s.registry,
                   s.role, s.head, ago(s.last_change, now), list(s.releases),
                   s.error or s.note] for s in found.sites])
    click.echo("\nflows")
    render.table(["flow", "from -> to", "standing", "behind", "oldest missing",
                  "last success", "last error", "retries", "conflicts", "next due"],
                 [[f.key.split("->")[0], f"{f.source} -> {f.destination}",
                   ("! " if f.lagging else "") + f.standing(now), _behind(f.lag),
                   format_age(f.lag.age(now)), ago(f.last_success, now) or "never",
                   _error(f.last_error, f.last_error_at, now), f.retries, f.conflicts,
                   _due(f.next_due, f.enabled, now)] for f in found.flows])
    click.echo("\npairs (the worst of their flows; without flows, of the selections synced by "
               "hand)")
    render.table(["from -> to", "flows", "selections", "behind (worst)", "oldest missing",
                  "last sync", "result", "retries"],
                 [[f"{p.source} -> {p.destination}", len(p.flows), p.selections,
                   _behind(p.lag), format_age(p.lag.age(now)), ago(p.last_sync, now),
                   p.last_result, p.retries] for p in found.pairs])
    click.echo("\nreleases")
    names = found.site_names
    render.table(["release", "home"] + names,
                 [[r.name + (" (retracted)" if r.retracted else ""), r.home]
                  + [r.cell(name).state for name in names] for r in found.releases])


def _behind(lag) -> str:
    if lag.entries is None:
        return "?"  # a site out of reach: the sites table says why
    return f"{lag.entries}" + (f" ({lag.note})" if lag.note else "")


def _error(error: str | None, at: float | None, now: float) -> str:
    from federation.status import ago

    return f"{ago(at, now)}: {_cut(error)}" if error else ""


def _due(next_due: float | None, enabled: bool, now: float) -> str:
    from federation.status import format_age

    if not enabled:
        return "disabled"
    if next_due is None or next_due <= now:
        return "now"
    return f"in {format_age(next_due - now)}"


def _cut(text: str) -> str:
    return text if len(text) <= ERROR_WIDTH else text[:ERROR_WIDTH - 3] + "..."


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on: a loopback address unless --public.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port; the URL is printed).")
@click.option("--public", is_flag=True,
              help="Allow a --host that is not loopback: the page (read-only, but showing "
                   "site names, paths and errors) is then open to the network.")
@click.option("--refresh", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
              metavar="S", help="Seconds between the page's refreshes of itself.")
@SITES
@POLICIES
@STATE
@TIMEOUT
@click.option("--log-limit", type=click.IntRange(1, 10000), default=50, show_default=True,
              help="Sync log entries shown (the latest, of every site on this machine).")
def serve(host, port, public, refresh, sites_dir, policies_dir, state_file, timeout,
          log_limit) -> None:
    """Serve the federation's status as a web page, read-only, until Ctrl-C or SIGTERM.

    \b
    /            sites and flows with their lag (lagging flows marked), the pairs,
                 the release completeness matrix (release x site) and the recent
                 sync log; the page refreshes itself every --refresh seconds
    /api/status  the same JSON as 'fed status --json'
    /api/log     the recent sync log (?limit=N)

    \b
    It listens on 127.0.0.1:8765 by default; a --host that is not a loopback
    address is refused unless --public is given. Only GET requests are answered.
    The server is werkzeug's threaded WSGI server, meant for a local tool; behind
    a real front server, run federation.web.create_app under any WSGI server.
    """
    from federation.operations.status import ServeRequest, StatusRequest
    from federation.operations.status import serve as run

    request = ServeRequest(StatusRequest(sites_dir, policies_dir, state_file, timeout),
                           host, port, refresh, public, log_limit)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    stop = threading.Event()
    with _stop_on_signals(stop):
        run(request, stop=stop, ready=lambda url: click.echo(
            f"serving the federation's status at {url} (Ctrl-C or SIGTERM to stop)"))
    click.echo("stopped")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(_signum, _frame) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
