"""``fed federate``: run the flows the policies declare, in passes.

Each pass re-reads the policies and the site definitions, picks the edges that are
due (every enabled one with ``once``), runs them in the order and with the
parallelism of :mod:`federation.policy.schedule`, and records each run in the
state file and in the sync log. A flow runs exactly as ``fed sync SOURCE DEST``
with its selection would (the same first-use check, a release verified at the
end), under its destination's sync lock.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from federation.errors import ConfigError, FederationError, InputError
from federation.operations.policy import problems_of, read_declared
from federation.operations.selection import check_patterns, first_use, refuse_unmatched
from federation.operations.sync import sync
from federation.policy import (
    Edge,
    FederateState,
    FlowRun,
    PassResult,
    execute,
    plan_pass,
    policies_dir,
    state_lock,
    state_path,
)
from federation.registry.sync_log import LogEntry
from federation.sites import load_site
from federation.sync.options import SyncOptions
from federation.sync.report import Report, SyncConflictError
from federation.sync.site_access import open_site

PathLike = str | os.PathLike | None
NOT_APPLIED = ("skip", "conflict", "refused", "blocked", "failed")


@dataclass(frozen=True)
class FederateRequest:
    """``once``: every enabled flow now, due or not; ``watch``: a pass every ``interval``
    seconds until stopped (otherwise one pass of the due flows); ``jobs``: flows at once;
    ``lock_timeout``: seconds a flow waits for another sync into its destination."""

    policies: PathLike = None
    sites: PathLike = None
    state: PathLike = None
    once: bool = False
    watch: bool = False
    interval: float = 60.0
    jobs: int = 4
    lock_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.once and self.watch:
            raise InputError("--once and --watch exclude each other")
        if self.jobs < 1 or self.interval <= 0:
            raise InputError("--jobs must be at least 1 and --interval positive")


class FederateListener:
    """Told of each pass and flow as it happens (the CLI prints); does nothing here."""

    def flow_started(self, edge: Edge) -> None:
        """``edge`` has started (in the calling thread)."""

    def flow_finished(self, run: FlowRun) -> None:
        """``run`` ended, or was skipped."""

    def pass_finished(self, result: PassResult) -> None:
        """A pass ended (after every flow it ran)."""


def federate(request: FederateRequest, *, stop: threading.Event | None = None,
             listener: FederateListener | None = None) -> PassResult:
    """Run passes (one, or until ``stop`` is set with ``watch``); returns the last.

    Policies that do not check are an error before anything runs; in a later pass of
    ``watch`` they make that pass fail (and the next one reads them again).
    """
    stop = stop or threading.Event()
    listener = listener or FederateListener()
    edges = _edges(request)  # bad policies: an error before anything is written
    path = state_path(policies_dir(request.policies), request.state)
    with state_lock(path):
        state = FederateState.load(path)
        number, problem = 0, None
        while True:
            number += 1
            if problem is None:
                result = _pass(number, edges, state, request, stop, listener)
            else:  # the policies stopped checking since the last pass: run nothing
                result = PassResult(number, time.time(), time.time(), problems=[problem])
            listener.pass_finished(result)
            if not request.watch or stop.is_set() or stop.wait(request.interval):
                return result
            try:
                edges, problem = _edges(request), None
            except FederationError as exc:
                problem = str(exc)


def _edges(request: FederateRequest) -> list[Edge]:
    found = read_declared(request.policies, request.sites)
    problems = problems_of(found)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"{problems[0]}{more}: nothing was run; 'fed policy check' lists "
                          "every problem")
    return found.edges


def _pass(number: int, edges: list[Edge], state: FederateState, request: FederateRequest,
          stop: threading.Event, listener: FederateListener) -> PassResult:
    result = PassResult(number, time.time())
    state.keep_only(edges)
    chosen, skipped = plan_pass(edges, state, result.started, everything=request.once)
    for run in skipped:
        listener.flow_finished(run)

    def finished(run: FlowRun) -> None:
        if run.ran:
            state.get(run.edge).record(run, run.edge.flow.interval)
            state.save()
        listener.flow_finished(run)

    runs = execute(chosen, lambda edge: run_edge(edge, request), jobs=request.jobs,
                   stop=stop, started=listener.flow_started, finished=finished)
    result.runs = sorted(runs + skipped, key=lambda r: edges.index(r.edge))
    result.stopped, result.ended = stop.is_set(), time.time()
    return result


def run_edge(edge: Edge, request: FederateRequest) -> FlowRun:
    """One flow into one destination, as ``fed sync`` would run it; logged at the
    destination (or, when it cannot be opened, at the source) with its policy and flow."""
    flow, started = edge.flow, time.time()
    # A release sync ends with a verification that hashes in a pool of forked processes;
    # beside other flows' threads it hashes in this one (a fork could inherit a held lock).
    jobs = 1 if flow.is_release and request.jobs > 1 else None
    options = SyncOptions(flow.selection(), on_conflict=flow.on_conflict, jobs=jobs,
                          lock_timeout=request.lock_timeout,
                          keep_deleted=flow.deletions == "keep",
                          min_copies=flow.min_copies,
                          copies_at=(flow.source, *flow.destinations)
                          if flow.destinations else ())
    report, logged_as = None, "ok"
    try:
        waiting = _nothing_yet(edge, options, request)
        if waiting is not None:
            run = FlowRun(edge, "ok", waiting, started, time.time(), notes=(waiting,))
        else:
            report = sync(edge.source, edge.destination, options, sites_dir=request.sites)
            run, logged_as = _outcome(edge, report, started)
    except SyncConflictError as exc:
        report, logged_as = exc.report, "conflict"
        run = FlowRun(edge, "failed", _line(exc), started, time.time(),
                      dict(exc.report.counts))
    except Exception as exc:  # noqa: BLE001 - a site down, a bug: the other flows go on
        logged_as = "error"
        shown = _line(exc) if isinstance(exc, FederationError) \
            else f"{type(exc).__name__}: {_line(exc)}"
        run = FlowRun(edge, "failed", shown, started, time.time())
    _log(edge, run, report, logged_as, request)
    return run


def _nothing_yet(edge: Edge, options: SyncOptions, request: FederateRequest) -> str | None:
    """Why a flow has nothing to carry yet (its release or its collections do not exist
    at its source), or None. A first sync would refuse that as an error; a standing flow
    waits for them instead."""
    src, dst = load_site(edge.source, request.sites), load_site(edge.destination, request.sites)
    selection = options.selection
    if selection.release is not None:
        if src.is_remote:
            return None
        with open_site(src) as butler:
            if butler.registry.releases.find(selection.release) is not None:
                return None
        return f"nothing to carry yet: {src.name} has no release {selection.release}"
    if selection.is_full or (src.is_remote and dst.is_remote) \
            or not first_use(src, dst, selection):
        return None
    try:
        if src.is_remote:
            check_patterns(src, dst, options)
        else:
            with open_site(src) as butler:
                refuse_unmatched(src.name, butler, selection, "nothing to carry yet")
    except InputError as exc:
        return _line(exc)
    return None


def _outcome(edge: Edge, report: Report, started: float) -> tuple[FlowRun, str]:
    """A finished sync's run (ok, or failed for files that did not arrive or a release that
    did not verify) and its sync log result."""
    applied = sum(n for key, n in report.counts.items() if key.split(" ")[-1] not in NOT_APPLIED)
    detail = f"{applied} applied, {report.files} file(s), {report.bytes} bytes"
    notes = list(report.notes)
    if report.conflict_count:
        notes.append(f"{report.conflict_count} conflict(s) left out (on_conflict: skip)")
    notes += [f"release {c.release} verified at {c.site}" for c in report.verified
              if c.complete]
    unverified = [c for c in report.verified if not c.complete]
    common: dict[str, Any] = dict(counts=dict(report.counts), files=report.files,
                                  bytes=report.bytes, cursor=report.cursor, notes=tuple(notes))
    if report.failed:
        _, path, reason = report.failed[0]
        detail = (f"{len(report.failed)} file(s) did not arrive (first {path}: {reason}); "
                  f"the rest was applied and the next run retries them")
        return FlowRun(edge, "failed", detail, started, time.time(), **common), "failed"
    if unverified:
        check = unverified[0]
        detail = (f"release {check.release} arrived but did not verify at {check.site} "
                  f"({check.missing} missing, {check.corrupt} corrupt)")
        return FlowRun(edge, "failed", detail, started, time.time(), **common), "failed"
    if notes:
        detail += "; " + "; ".join(notes)
    return FlowRun(edge, "ok", detail, started, time.time(), **common), "ok"


def _log(edge: Edge, run: FlowRun, report: Report | None, result: str,
         request: FederateRequest) -> None:
    """Record the run (operation ``federate``, its selection naming the policy and flow)
    in the destination's sync log, or the source's when the destination is out of reach;
    nowhere if neither can be opened (the state file still has it)."""
    selection = edge.flow.selection().to_dict() | {
        "policy": edge.flow.policy, "flow": edge.flow.name, "edge": edge.key}
    for name in (edge.destination, edge.source):
        try:
            site = load_site(name, request.sites)
            if site.is_remote:
                continue
            with open_site(site) as butler:
                log = butler.registry.log
                entry = log.start(LogEntry("federate", edge.source, edge.destination, selection,
                                           started=run.started or time.time()))
                entry.cursor_to, entry.counts = run.cursor, dict(run.counts)
                entry.files, entry.bytes = run.files, run.bytes
                if report is not None:
                    entry.conflicts, entry.failures = report.conflict_count, len(report.failed)
                entry.result, entry.ended = result, run.ended
                entry.message = f"policy {edge.flow.policy}, flow {edge.flow.name}: {run.detail}"
                log.finish(entry)
            return
        except Exception:  # noqa: BLE001, S112 - out of reach: try the other site
            continue


def _line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
