"""The status model put together from the sites' answers (:mod:`.probe`), the flows the
policies declare, and the federate state: lags, flows, pairs and the release matrix.

Where a destination stands in its source's journal, for a selection:

- a local source and a local destination: the destination's pull cursor;
- a remote destination (pushed to): the source's push cursor;
- a remote source (pulled through a mirror of its outbox kept at the destination): the
  published entries the mirror lacks, plus the mirror's entries the cursor has not
  reached (their age is when the mirror took them: the change itself is older; unknown
  when only unmirrored entries are missing).

A selection never synced is behind by the source's whole journal, unless nothing at the
source matches it yet (``nothing to carry yet``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from federation.policy import Edge, FederateState
from federation.registry.lag import JournalTail, LatestRun
from federation.registry.releases import ReleaseCheck, ReleaseInfo
from federation.sites import LocalRegistry, SiteDefinition
from federation.status.model import (
    FlowStatus,
    Lag,
    PairStatus,
    ReleaseCell,
    ReleaseStatus,
    SiteStatus,
    worst,
)
from federation.status.probe import SiteProbe
from federation.sync.selection import Selection

Answer = SiteProbe | BaseException
Tails = dict[tuple[int, str, str], JournalTail] | BaseException
#: a site's standing with a release, from its release record and its latest check
Classify = Callable[[str, ReleaseInfo | None, ReleaseCheck | None], ReleaseCell]


def reason(answer: BaseException) -> str:
    text = str(answer).strip()
    return text.splitlines()[0] if text else type(answer).__name__


@dataclass
class Gathered:
    """The sites' answers and the journal tails asked of each source."""

    sites: Sequence[SiteDefinition]
    probes: dict[str, Answer]
    tails: dict[str, Tails]

    def probe(self, name: str) -> SiteProbe | None:
        found = self.probes.get(name)
        return found if isinstance(found, SiteProbe) else None

    def why_not(self, *names: str) -> str | None:
        """Why one of the sites named cannot be read (None: all can)."""
        for name in names:
            found = self.probes.get(name)
            if found is None:
                return f"site {name} is not defined"
            if isinstance(found, BaseException):
                return f"{name} unreachable: {reason(found)}"
        return None

    def is_remote(self, name: str) -> bool:
        return any(site.name == name and site.is_remote for site in self.sites)

    # -- where a destination stands --------------------------------------------------

    def answered(self, name: str) -> SiteProbe:
        """The answer of a site known to have answered (see :meth:`why_not`)."""
        found = self.probes[name]
        assert isinstance(found, SiteProbe), name
        return found

    def position(self, source: str, destination: str, key: str) -> int | None:
        """The source journal entry the destination has reached for a selection (None:
        never synced); only for a local source. A destination reached over the network
        is pushed to: the source keeps that cursor."""
        if self.is_remote(destination):
            cursor = self.answered(source).pushes.get((destination, key))
        else:
            cursor = self.answered(destination).pulls.get((source, key))
        return None if cursor is None else cursor.last_seq

    def wanted(self, pairs: Sequence[tuple[str, str, str]]
               ) -> dict[str, set[tuple[int, str, str]]]:
        """The journal tails to ask each local source for: (cursor, destination,
        selection key)."""
        found: dict[str, set[tuple[int, str, str]]] = {}
        for source, destination, key in pairs:
            if self.why_not(source, destination) or self.is_remote(source):
                continue
            after = self.position(source, destination, key)
            found.setdefault(source, set()).add((after or 0, destination, key))
        return found

    def selections(self, edges: Sequence[Edge]) -> dict[str, Selection]:
        """Every selection a lag is asked for, by key: the flows', and those of the cursors
        the sites keep."""
        found = {edge.flow.selection().key: edge.flow.selection() for edge in edges}
        for name in (site.name for site in self.sites):
            probe = self.probe(name)
            if probe is not None:
                for cursor in (*probe.pulls.values(), *probe.pushes.values()):
                    if cursor.selection_key not in found and cursor.selection:
                        found[cursor.selection_key] = Selection.from_dict(cursor.selection)
        return found

    def lag(self, source: str, destination: str, key: str,
            selection: Selection | None = None) -> Lag:
        """How far ``destination`` is behind ``source`` for the selection ``key``."""
        problem = self.why_not(source, destination)
        if problem:
            return Lag(None, note=problem)
        src = self.answered(source)
        if selection is not None and not carries_anything(src, selection) and \
                self.never(source, destination, key):
            return Lag(0, head=src.head, note="nothing to carry yet")
        if self.is_remote(source):
            return self._remote_lag(src, destination, key)
        tails = self.tails.get(source)
        if isinstance(tails, BaseException) or tails is None:
            return Lag(None, note=f"{source} unreachable: "
                                  f"{reason(tails) if tails else 'not asked'}")
        after = self.position(source, destination, key)
        tail = tails.get((after or 0, destination, key))
        if tail is None:
            return Lag(None, note=f"{source}: no record of this selection")
        return Lag(tail.entries, tail.oldest, after, src.head,
                   "never synced" if after is None else "")

    def never(self, source: str, destination: str, key: str) -> bool:
        """Whether the destination has never synced this selection from the source."""
        if self.is_remote(source):
            return (source, key) not in self.answered(destination).pulls
        return self.position(source, destination, key) is None

    def _remote_lag(self, src: SiteProbe, destination: str, key: str) -> Lag:
        dst, name = self.answered(destination), src.site.name
        if (name, key) not in dst.pulls:
            return Lag(src.head, None, None, src.head, "never synced")
        mirrored = dst.mirrored.get(name, 0)
        pending = dst.mirror_tails.get((name, key), JournalTail(0, None))
        entries = max(0, src.head - mirrored) + pending.entries
        return Lag(entries, pending.oldest if pending.entries else None, mirrored, src.head,
                   "through its mirror here")


def carries_anything(src: SiteProbe, selection: Selection) -> bool:
    """Whether anything at the source matches a selection yet (a release: it exists)."""
    if selection.release is not None:
        return selection.release in src.releases
    return any(selection.matches_collection(name) for name in src.collections)


def site_statuses(found: Gathered) -> list[SiteStatus]:
    rows = []
    for site in found.sites:
        answer = found.probes.get(site.name)
        registry = "published" if not isinstance(site.registry, LocalRegistry) \
            else site.registry.url.split(":", 1)[0].split("+", 1)[0]
        common = dict(name=site.name, transport=site.transport, registry=registry,
                      role=site.role)
        if isinstance(answer, SiteProbe):
            rows.append(SiteStatus(reachable=True, head=answer.head,
                                   last_change=answer.last_change,
                                   releases=tuple(sorted(answer.releases)),
                                   note=answer.note, elapsed=round(answer.elapsed, 3),
                                   **common))
        else:
            rows.append(SiteStatus(reachable=False, error=reason(answer) if answer else "",
                                   **common))
    return rows


def flow_statuses(found: Gathered, edges: Sequence[Edge], state: FederateState
                  ) -> list[FlowStatus]:
    rows = []
    for edge in edges:
        flow, selection = edge.flow, edge.flow.selection()
        lag = found.lag(edge.source, edge.destination, selection.key, selection)
        known = state.flows.get(edge.key)
        runs = [run for run in _runs(found, edge.source, edge.destination)
                if _is_run_of(run, edge, selection)]
        latest = max(runs, key=_when, default=None)
        oks = [run.last_ok for run in runs if run.last_ok is not None]
        if known is not None and known.last_success is not None:
            oks.append(known.last_success)
        dst = found.probe(edge.destination)
        retries = None if dst is None or found.is_remote(edge.destination) \
            else dst.retries.get((edge.source, selection.key), 0)
        entry = latest.entry if latest is not None else None
        rows.append(FlowStatus(
            edge.key, flow.policy, flow.name, edge.source, edge.destination,
            selection.describe(), flow.interval, flow.enabled, lag,
            last_run=known.last_started if known else None,
            last_result=known.last_result if known else None,
            last_detail=known.last_detail if known else "",
            last_success=max(oks, default=None),
            last_error=known.last_error if known else None,
            last_error_at=known.last_error_at if known else None,
            failures=known.failures if known else 0,
            next_due=known.next_due if known else None, retries=retries,
            conflicts=entry.conflicts if entry is not None else None,
            conflict_message=entry.message if entry is not None and
            entry.result == "conflict" else "",
            unreachable=lag.entries is None))
    return rows


def _runs(found: Gathered, source: str, destination: str) -> list[LatestRun]:
    """The logged runs from ``source`` into ``destination``, from both sites' logs."""
    runs = []
    for name in (destination, source):
        probe = found.probe(name)
        if probe is not None:
            runs += [run for run in probe.runs if run.entry.source == source
                     and run.entry.destination == destination]
    return runs


def _is_run_of(run: LatestRun, edge: Edge, selection: Selection) -> bool:
    entry = run.entry
    if entry.operation == "federate":
        return entry.selection.get("edge") == edge.key
    return entry.operation in ("sync", "push") and entry.selection == selection.to_dict()


def _when(run: LatestRun) -> float:
    return run.entry.ended or run.entry.started


def pair_statuses(found: Gathered, edges: Sequence[Edge], flows: Sequence[FlowStatus]
                  ) -> list[PairStatus]:
    """Each (source, destination) pair of a flow or of a cursor, with its last sync and
    its worst lag: over its flows; a pair no flow joins (syncs run by hand), over the
    selections the destination has synced from the source."""
    keys = cursor_keys(found, edges)
    rows = []
    for source, destination in dict.fromkeys((s, d) for s, d, _ in keys):
        mine = [f for f in flows if (f.source, f.destination) == (source, destination)]
        followed = [k for s, d, k in keys if (s, d) == (source, destination)]
        lags = [f.lag for f in mine] or [found.lag(source, destination, k) for k in followed]
        latest = max(_runs(found, source, destination), key=_when, default=None)
        dst = found.probe(destination)
        retries = None if dst is None or found.is_remote(destination) else sum(
            n for (peer, _), n in dst.retries.items() if peer == source)
        reachable = found.why_not(source, destination) is None
        selections = sum(1 for key in followed
                         if reachable and not found.never(source, destination, key))
        rows.append(PairStatus(source, destination, tuple(f"{f.policy}/{f.flow}" for f in mine),
                               selections, worst(lags), _when(latest) if latest else None,
                               latest.entry.result if latest else None, retries))
    return rows


def cursor_keys(found: Gathered, edges: Sequence[Edge]) -> list[tuple[str, str, str]]:
    """(source, destination, selection key) of every flow and every cursor a site keeps
    for a defined site: what the pairs are made of, in flow order first."""
    names = {site.name for site in found.sites}
    keys = [(edge.source, edge.destination, edge.flow.selection().key) for edge in edges]
    for name in (site.name for site in found.sites):
        probe = found.probe(name)
        if probe is None:
            continue
        keys += [(peer, name, key) for peer, key in probe.pulls if peer in names]
        keys += [(name, peer, key) for peer, key in probe.pushes
                 if peer in names and found.is_remote(peer)]
    return list(dict.fromkeys(keys))


def release_statuses(found: Gathered, classify: Classify) -> list[ReleaseStatus]:
    """The completeness matrix: every release any reachable site knows, at every site."""
    names = sorted({name for probe in map(found.probe, found.probes) if probe
                    for name in probe.releases})
    rows = []
    for name in names:
        cells, infos = [], []
        for site in found.sites:
            probe = found.probe(site.name)
            if probe is None:
                problem = found.why_not(site.name) or ""
                cells.append(ReleaseCell(site.name, "unreachable", detail=problem))
                continue
            info, check = probe.releases.get(name, (None, None))
            if info is not None:
                infos.append((site.name, info))
            cells.append(classify(site.name, info, check))
        home = next((info for at, info in infos if at == info.site), infos[0][1])
        rows.append(ReleaseStatus(name, home.site, home.root,
                                  any(info.retracted is not None for _, info in infos),
                                  tuple(cells)))
    return rows
