"""One pass of ``fed federate``: which edges are due, in what order, how many at once.

**Order.** Sites are ranked along the flows: the groups of sites that flows join in
a loop (NCSA <-> IN2P3) are ordered so that every flow between two groups goes
forward, and within a group the site that receives the fewest flows from inside
it comes first (then by name). Edges run in the order of their source's rank, then
their destination's, then their key; so NCSA -> IN2P3 runs before IN2P3 ->
Princeton, and one pass carries data along every acyclic path. Within a loop, what
the first pass could not carry the next one does.

**Parallelism.** An edge starts once every earlier edge into its source has ended
(what it relays has arrived) and every earlier edge into its destination too (one
writer per site; the sync's own lock would serialize them anyway), with at most
``jobs`` edges running. An edge that fails does not hold back the others: what
depends on it runs with what its source already holds.

**Stopping.** Once ``stop`` is set no edge starts; those running finish.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from federation.policy.graph import components
from federation.policy.model import Edge, FlowRun
from federation.policy.state import FederateState

RunEdge = Callable[[Edge], FlowRun]


@dataclass
class PassResult:
    """What one pass did: every edge's run (or why it did not run), in pass order;
    ``problems``: why the pass could not run at all (policies that no longer check)."""

    number: int
    started: float
    ended: float | None = None
    runs: list[FlowRun] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stopped: bool = False

    @property
    def counts(self) -> Counter:
        return Counter(run.result for run in self.runs)

    @property
    def failed(self) -> list[FlowRun]:
        return [run for run in self.runs if run.result == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems

    def to_dict(self) -> dict:
        return {"pass": self.number, "started": self.started, "ended": self.ended,
                "ok": self.ok, "stopped": self.stopped, "counts": dict(self.counts),
                "problems": self.problems, "flows": [run.to_dict() for run in self.runs]}


def order_edges(edges: Sequence[Edge]) -> list[Edge]:
    """The edges in pass order (see the module's docstring)."""
    arcs = [(edge.source, edge.destination) for edge in edges]
    rank: dict[str, int] = {}
    for group in components([site for arc in arcs for site in arc], arcs):
        members = set(group)
        inside = Counter(head for tail, head in arcs if tail in members and head in members)
        for site in sorted(group, key=lambda s: (inside[s], s)):
            rank[site] = len(rank)
    return sorted(edges, key=lambda e: (rank[e.source], rank[e.destination], e.key))


def plan_pass(edges: Sequence[Edge], state: FederateState, now: float, *,
              everything: bool = False) -> tuple[list[Edge], list[FlowRun]]:
    """The edges to run now (in order) and the runs of those that will not: disabled, or
    not due yet (``everything``: every enabled edge is due)."""
    chosen, skipped = [], []
    for edge in edges:
        if not edge.flow.enabled:
            skipped.append(FlowRun(edge, "disabled", "enabled: false"))
            continue
        known = state.flows.get(edge.key)
        if everything or known is None or known.due(now):
            chosen.append(edge)
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(known.next_due))
        why = (f"after {known.failures} failure(s) in a row, retried from {when}"
               if known.failures else f"next due {when}")
        skipped.append(FlowRun(edge, "not due", why))
    return chosen, skipped


def execute(edges: Sequence[Edge], run_edge: RunEdge, *, jobs: int, stop: threading.Event,
            started: Callable[[Edge], None] = lambda edge: None,
            finished: Callable[[FlowRun], None] = lambda run: None) -> list[FlowRun]:
    """Run ``edges`` (in pass order) on up to ``jobs`` threads, each once what it depends on
    has ended. ``started`` and ``finished`` are called in this (the calling) thread."""
    waits_for = {i: {j for j in range(i)
                     if edges[j].destination in (edges[i].source, edges[i].destination)}
                 for i in range(len(edges))}
    pending, done = list(range(len(edges))), set()
    running: dict[Future, int] = {}
    results: dict[int, FlowRun] = {}
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        while pending or running:
            if stop.is_set():
                for i in pending:
                    results[i] = FlowRun(edges[i], "stopped", "not started: asked to stop")
                    finished(results[i])
                pending = []
            for i in [i for i in pending if waits_for[i] <= done]:
                if len(running) >= max(1, jobs):
                    break
                pending.remove(i)
                started(edges[i])
                running[pool.submit(_guarded, run_edge, edges[i])] = i
            if not running:
                continue
            ended, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            for future in ended:
                i = running.pop(future)
                results[i] = future.result()
                done.add(i)
                finished(results[i])
    return [results[i] for i in range(len(edges))]


def _guarded(run_edge: RunEdge, edge: Edge) -> FlowRun:
    """A run that raised is a failed run: one flow never stops the others."""
    started = time.time()
    try:
        return run_edge(edge)
    except Exception as exc:  # noqa: BLE001 - whatever it was, the other flows go on
        text = str(exc).splitlines()[0] if str(exc) else ""
        return FlowRun(edge, "failed", f"{type(exc).__name__}: {text}".rstrip(": "),
                       started, time.time())
