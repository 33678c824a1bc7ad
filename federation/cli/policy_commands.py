"""`fed policy list|show|check` and `fed federate`: thin wrappers over federation.operations."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from federation.cli import render
from federation.cli.federation_commands import SITES

if TYPE_CHECKING:
    from federation.policy import Edge, FlowRun, PassResult

POLICIES = click.option("--policies", "policies_dir",
                        type=click.Path(file_okay=False, path_type=Path),
                        envvar="FED_POLICIES", default=None,
                        help="Directory of policies (default: $FED_POLICIES or ./policies).")


@click.group()
def policy() -> None:
    """Sync policies: policies/NAME.yaml files declare flows (from a site, to sites, what,
    how often); 'fed federate' runs them. Unknown keys are errors."""


@policy.command("list")
@POLICIES
@SITES
@render.JSON_OPTION
def policy_list(policies_dir, sites_dir, as_json) -> None:
    """List every flow of every policy: its source, the sites it goes to ('to: all'
    resolved), what it carries, and how often it is due.

    A file with problems is not hidden: the flows that could be read are listed, and
    each problem gets one line on stderr ('error: FILE: ...'); the exit status is then
    1. 'fed policy check' also checks the flows against the site definitions.
    """
    from federation.operations.policy import list_policies

    listing = list_policies(policies_dir, sites_dir)
    if as_json:
        render.as_json({"policies": [p.to_dict() for p in listing.policies],
                        "problems": [str(p) for p in listing.problems]})
    else:
        render.table(["policy", "flow", "from", "to", "carries", "every", "enabled"],
                     [_flow_row(f, listing.edges) for p in listing.policies for f in p.flows])
        for problem in listing.problems:
            click.echo(f"error: {problem}", err=True)
    if listing.problems:
        sys.exit(1)


def _flow_row(flow, edges) -> list:
    from federation.policy import format_interval

    sites = [e.destination for e in edges if e.flow == flow]
    to = f"all ({', '.join(sites) or 'none'})" if flow.to_all else ", ".join(sites)
    if flow.is_release:
        carries = f"release {flow.release}"
    else:
        carries = ", ".join(flow.collections)
        if flow.dataset_types != ("*",):
            carries += f" [{', '.join(flow.dataset_types)}]"
        if flow.where:
            carries += f" where {flow.where}"
    extras = [text for text, on in (("records only", not flow.files),
                                    ("keeps deletions", flow.deletions == "keep"),
                                    ("skips conflicts", flow.on_conflict == "skip")) if on]
    carries += "".join(f"; {text}" for text in extras)
    return [flow.policy, flow.name, flow.source, to, carries, format_interval(flow.interval),
            "yes" if flow.enabled else "no"]


@policy.command("show")
@click.argument("name", metavar="POLICY[/FLOW]")
@POLICIES
@SITES
def policy_show(name, policies_dir, sites_dir) -> None:
    """Show one policy (or one of its flows) as JSON, each flow with the sites it goes
    to ('to: all' resolved against the sites directory)."""
    from federation.operations.policy import show

    render.as_json(show(name, policies_dir, sites_dir))


@policy.command("check")
@POLICIES
@SITES
def policy_check(policies_dir, sites_dir) -> None:
    """Check every policy file against the schema and against the site definitions.

    \b
    Each problem gets one line on stderr ('error: FILE: ...') and the exit status
    is 1; nothing is written. Problems: a file that is not YAML, unknown keys, wrong
    types or values (interval, on_conflict, deletions, min_copies < 1), a 'where'
    that does not parse or whose :binds do not match 'bind', a release flow that
    also names collections, types or a where; an unknown site, 'to' naming the
    source, a flow into a read-only site or into a release site that is not a
    release flow; two flows writing collections that one name can match into one
    site from different sources; an owner cycle (a site's own collections carried
    back into it, or round a loop of replicas).
    """
    from federation.operations.policy import check

    result = check(policies_dir, sites_dir)
    for problem in result.problems:
        click.echo(f"error: {problem}", err=True)
    if result.problems:
        sys.exit(1)
    click.echo(f"ok: {result.policies} policies, {result.flows} flows, {result.edges} "
               f"site-to-site syncs, checked against {result.sites} sites")


@click.command()
@click.option("--once", is_flag=True,
              help="Run every enabled flow now, due or not (one pass).")
@click.option("--watch", is_flag=True,
              help="Run a pass of the due flows every --interval seconds until SIGTERM or "
                   "Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=None, metavar="S",
              help="Seconds between passes with --watch (default 60).")
@POLICIES
@SITES
@click.option("--state", "state_file", type=click.Path(dir_okay=False, path_type=Path),
              envvar="FED_FEDERATE_STATE", default=None,
              help="The state file (default: POLICIES/.federate/state.json).")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Flows run at once (each into a different site).")
@click.option("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds a flow waits for another sync into its destination.")
@render.JSON_OPTION
def federate(once, watch, interval, policies_dir, sites_dir, state_file, jobs, wait,
             as_json) -> None:
    """Run the flows the policies declare: by default one pass of those that are due.

    \b
    Each flow runs as 'fed sync FROM TO' with its selection would, once per
    destination, under that site's sync lock. A pass runs NCSA -> IN2P3 before
    IN2P3 -> Princeton (sites ordered along the flows; loops in a stable order,
    the next pass carrying what one could not), up to --jobs flows at once, one
    per destination. A flow that fails (a site down, a conflict) does not stop
    the others; it is retried after min(b * 2^(n-1), max(interval, 1 h)) for n
    failures in a row (b = min(interval, 1 min)). A flow is due 'interval' after
    its last run started. Each pass ends with a table of every flow (ok, failed,
    not due, disabled, stopped) and one 'error:' line per failure; the exit
    status is 1 when a flow of the last pass failed.

    \b
    The state (per flow: last run, last success, last error, failures in a row,
    next due) is kept in POLICIES/.federate/state.json (--state), rewritten
    atomically after every flow; each run is also in the sync log of its
    destination (operation 'federate', naming the policy and flow). SIGTERM or
    Ctrl-C: the flows in progress finish, no other starts, and the command exits
    (a second signal stops at once; like kill -9, that loses nothing: the next
    run completes what was cut short).
    """
    from federation.operations.federate import FederateRequest
    from federation.operations.federate import federate as run

    if interval is not None and not watch:
        raise click.UsageError("--interval goes with --watch")
    request = FederateRequest(policies_dir, sites_dir, state_file, once, watch,
                              interval or 60.0, jobs, wait)
    stop = threading.Event()
    with _stop_on_signals(stop):
        result = run(request, stop=stop, listener=_Printer(as_json))
    if not result.ok:
        sys.exit(1)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop``: running flows finish, no other starts. A second
    signal exits at once (as kill -9 would, which the sync core survives)."""
    def handler(signum, _frame) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            click.echo(f"{name} again: stopping at once; the next run completes what was "
                       "cut short", err=True)
            os._exit(128 + signum)
        stop.set()
        click.echo(f"{name}: finishing the flows in progress, then stopping (again to "
                   "stop at once)", err=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class _Printer:
    """A FederateListener: progress on stderr as flows start and end; each pass's table on
    stdout (or one JSON line per pass), and one 'error:' line per failure on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def flow_started(self, edge: Edge) -> None:
        if not self.as_json:
            click.echo(f"{edge.describe()}: started", err=True)

    def flow_finished(self, run: FlowRun) -> None:
        if run.ran and not self.as_json:
            click.echo(f"{run.edge.describe()}: {run.result} ({_took(run)})", err=True)

    def pass_finished(self, result: PassResult) -> None:
        if self.as_json:
            click.echo(json.dumps(result.to_dict(), default=str))
        else:
            _show_pass(result)
        for run in result.failed:
            click.echo(f"error: {run.edge.describe()}: {run.detail}", err=True)
        for problem in result.problems:
            click.echo(f"error: pass {result.number}: {problem}", err=True)


def _show_pass(result: PassResult) -> None:
    from federation.policy.model import RESULTS

    counts = ", ".join(f"{result.counts[name]} {name}" for name in RESULTS
                       if result.counts[name])
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.started))
    took = (result.ended or result.started) - result.started
    stopped = "; stopped on request" if result.stopped else ""
    click.echo(f"pass {result.number} at {when}, {took:.1f} s: {counts or 'no flows'}{stopped}")
    if result.runs:
        render.table(["flow", "from -> to", "result", "took", "detail"],
                     [[r.edge.flow.key, f"{r.edge.source} -> {r.edge.destination}",
                       r.result, _took(r), r.detail] for r in result.runs])


def _took(run: FlowRun) -> str:
    if run.started is None or run.ended is None:
        return ""
    return f"{run.ended - run.started:.1f} s"
