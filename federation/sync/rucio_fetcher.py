"""Files that Rucio brings: the fetcher of a sync into a site whose files come through Rucio.

Instead of copying each file itself, it registers at the source's RSE what Rucio does not
know yet (a source on this machine; a remote source registers its own files), asks for a
rule per file on the destination's RSE, waits while Rucio (and FTS) move the bytes, and
verifies every arrived file in place, size and xxh3, against the dataset's record. Only
then does the sync import the record. A file still on its way (``--no-wait``, or the wait
ran out) or whose rule is stuck fails for this run with Rucio's reason, and is retried by
the next sync, like any failed transfer.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from federation.butler import Butler
from federation.datastore.checksum import file_checksum, mismatch
from federation.datastore.posix import PosixDatastore
from federation.errors import ConfigError
from federation.registry.replica import Replica
from federation.registry.states import DatasetState
from federation.rucio.names import run_dataset, why_unmappable
from federation.rucio.register import Registrable, register
from federation.rucio.rules import SiteRules
from federation.rucio.session import RucioError, RucioSession
from federation.sites import SiteDefinition
from federation.sync.fetcher import Downloaded, Fetcher, Staged, local_path
from federation.sync.options import SyncOptions
from federation.sync.progress import Progress
from federation.sync.report import Report
from federation.transport.base import Transport


class RucioFetcher(Fetcher):
    """Brings the files of datasets into a datastore through Rucio rules."""

    def __init__(self, datastore: PosixDatastore, transport: Transport, source: str, *,
                 source_session: RucioSession, source_root: Path | None,
                 rules: SiteRules, wait: float | None, jobs: int | None = None,
                 progress: Progress | None = None) -> None:
        super().__init__(datastore, transport, source, jobs=jobs, progress=progress)
        self.source_session = source_session
        self.source_root = source_root  # None: the source registers its files itself
        self.rules = rules
        self.wait = wait  # seconds to wait for Rucio (None: look once, --no-wait)
        self.source_rules = SiteRules(source_session, source)
        self.runs: set[str] = set()  # the RUNs whose files this sync asked Rucio for

    def download(self, states: Sequence[DatasetState], in_use: Iterable[str] = ()
                 ) -> Downloaded:
        result = Downloaded()
        in_use = set(in_use)
        wanted: dict[str, DatasetState] = {}
        self.runs.update(s.run for s in states)
        for state in states:
            why = why_unmappable(state.file.path)
            if why is None and local_path(state) in in_use:
                why = "its path holds another dataset's file here"
            if why is not None:
                result.failed[state.id] = (state.file.path, f"cannot come through Rucio: {why}")
            else:
                wanted[state.file.path] = state
        if not wanted:
            return result
        for name, reason in self._at_source(list(wanted.values())).items():
            state = wanted.pop(name)
            result.failed[state.id] = (name, reason)
        self.rules.ensure(list(wanted))
        deadline = None if self.wait is None else time.monotonic() + self.wait
        arrivals = self.rules.wait(list(wanted), deadline=deadline,
                                   poll=self.rules.session.settings.poll,
                                   on_arrival=lambda n, b: self.progress.advance(0, b),
                                   stopped=self._stopped.is_set)
        for name, reason in arrivals.waiting.items():
            result.failed[wanted[name].id] = (name, reason)
        arrived = [wanted[name] for name in arrivals.arrived]
        with ThreadPoolExecutor(self.jobs) as pool:
            for state, problem in zip(arrived, pool.map(self._check, arrived), strict=True):
                if problem is None:
                    relative = local_path(state)
                    result.staged[state.id] = Staged(relative, os.path.join(
                        self._root, relative), None, state.file.size)
                else:
                    result.failed[state.id] = (state.file.path, problem)
        self.progress.advance(len(states), 0)
        return result

    def finish(self, report: Report, src: Butler | None, dst: Butler,
               sites: Sequence[SiteDefinition], options: SyncOptions, *,
               keep_deleted: bool) -> None:
        """After the records are in: deletions' rules removed (at ``dst``, and at ``src``,
        the source's repository when it is on this machine), ``min_copies`` kept, the
        requests made counted in the report."""
        if not options.dry_run:
            if removed_any(report):
                if not keep_deleted:
                    report.notes += release_deleted(dst, self.rules)
                if src is not None:  # the source's own deletions: its rules go too
                    report.notes += release_deleted(src, self.source_rules)
            report.notes += keep_copies(self, sites, options)
        report.rucio_requests = self.rules.session.calls + self.source_session.calls

    def _at_source(self, states: list[DatasetState]) -> dict[str, str]:
        """Make sure the source's RSE has these files; why it cannot for some, by name."""
        session = self.source_session
        if self.source_root is not None:
            done = register(session, self.source_root, [Registrable.of(s) for s in states],
                            jobs=self.jobs, rules=self.source_rules)
            return {path: f"not registered at {self.source}: {reason}"
                    for path, reason in done.failed.items()}
        names = [s.file.path for s in states]
        there = session.replicas(session.settings.rse, names)
        return {name: f"not registered in Rucio on {session.settings.rse}: run 'fed rucio "
                      f"register {self.source}' where {self.source}'s registry is"
                for name in names if name not in there or there[name].state != "AVAILABLE"}

    def _check(self, state: DatasetState) -> str | None:
        """Why the file Rucio brought does not do (None: it matches its record)."""
        info = state.file
        final = os.path.join(self._root, local_path(state))
        try:
            got = file_checksum(final)
        except FileNotFoundError:
            return (f"Rucio lists it on {self.rules.rse}, but it is not at {final}: the RSE "
                    "must map names to the datastore (identity: prefix/scope/name)")
        except OSError as exc:
            return f"{exc.strerror or exc}"
        problem = mismatch(got, (info.size, info.checksum))
        if problem:
            return (f"the replica Rucio brought from {self.source} does not match its record "
                    f"({problem}); not imported")
        return None


def through_rucio(source: SiteDefinition, destination: SiteDefinition) -> SiteRules | None:
    """The destination's file rules when files go from ``source`` to ``destination``
    through Rucio (both say so, on the same server); None when they go by transport."""
    if destination.rucio is None or source.rucio is None:
        return None
    if source.rucio.url.rstrip("/") != destination.rucio.url.rstrip("/"):
        raise ConfigError(f"sites {source.name} and {destination.name} use different Rucio "
                          f"servers ({source.rucio.url}, {destination.rucio.url}): files can "
                          "only move between RSEs of one Rucio instance")
    if source.rucio.scope != destination.rucio.scope:
        raise ConfigError(f"sites {source.name} and {destination.name} use different Rucio "
                          f"scopes ({source.rucio.scope}, {destination.rucio.scope}): a "
                          "federation's files have one name in one scope")
    return SiteRules(RucioSession(destination.rucio, destination.name), destination.name)


def rucio_fetcher(source: SiteDefinition, dst: Butler, transport: Transport, rules: SiteRules,
                  options: SyncOptions, progress: Progress | None) -> RucioFetcher:
    """The fetcher of a sync from ``source`` whose files ``rules`` bring to ``dst``."""
    assert source.rucio is not None
    source_session = RucioSession(source.rucio, source.name)
    rules.session.whoami()  # wrong credentials or no server: one line, before any write
    source_session.whoami()
    return RucioFetcher(
        dst.datastore, transport, source.name, source_session=source_session,
        source_root=None if source.is_remote else source.root, rules=rules,
        wait=None if options.no_wait else rules.session.settings.wait,
        jobs=options.jobs, progress=progress)


def removed_any(report: Report) -> bool:
    """Whether a sync removed datasets (applied tombstones)."""
    return any(key.startswith("dataset_removal ") and count and not key.endswith(" skip")
               for key, count in report.counts.items())


def release_deleted(dst: Butler, rules: SiteRules) -> list[str]:
    """Remove the rules of files whose datasets this site deleted (tombstones, nothing at
    the path any more), so that Rucio's reaper removes the replicas; notes for the report.

    A name whose path holds a dataset again (re-created) keeps its rule, and so does one
    whose dataset never arrived (its file may still be on its way)."""
    replica = Replica(dst.registry)
    in_use = replica.paths_in_use(rules.rules)
    unused = [name for name in rules.rules if name not in in_use]
    if not unused:
        return []
    by_id = {uuid.UUID(guid): name for name, guid in rules.session.guids(unused).items()}
    deleted = replica.dataset_tombstones(list(by_id))
    removed = rules.remove([by_id[i] for i in deleted])
    if not removed:
        return []
    return [f"removed {removed} Rucio rule(s) on {rules.rse} for datasets deleted here; "
            "Rucio's reaper removes their replicas"]


def keep_copies(fetcher: RucioFetcher, sites: Sequence[SiteDefinition],
                options: SyncOptions) -> list[str]:
    """``min_copies`` as Rucio rules: for each RUN this sync carried, a rule on its Rucio
    dataset for ``options.min_copies`` copies among the RSEs of ``options.copies_at``, so
    that Rucio itself keeps that many (it never reaps a replica a rule holds)."""
    rses = sorted({s.rucio.rse for s in sites if s.rucio is not None
                   and (not options.copies_at or s.name in options.copies_at)})
    if options.min_copies < 2 or not fetcher.runs or len(rses) < options.min_copies:
        return []
    session, expression = fetcher.source_session, "|".join(rses)

    def missing() -> list[str]:
        have = {r.name for r in session.rules(expression) if r.copies == options.min_copies}
        return sorted(run_dataset(run) for run in fetcher.runs
                      if run_dataset(run) not in have)

    wanted = missing()
    if not wanted:
        return []
    add = functools.partial(session.add_rules, rse_expression=expression,
                            copies=options.min_copies, grouping="DATASET",
                            comment=f"fed: min_copies {options.min_copies}")
    for attempt in range(3):
        try:
            add(wanted)
            break
        except RucioError:
            # Another flow from this source (a policy runs them in parallel) may be adding
            # the same rules: give its transaction a moment, look again, add the rest.
            if attempt == 2:
                raise
            time.sleep(1.0 + attempt)
            wanted = missing()
            if not wanted:
                break
    return [f"Rucio keeps {options.min_copies} copies of {len(wanted)} RUN(s) among "
            f"{expression}"] if wanted else []


def bypassed_rucio(source: SiteDefinition, destination: SiteDefinition,
                   report: Report) -> list[str]:
    """A note when files reached a Rucio site without going through Rucio."""
    if destination.rucio is None or not report.files:
        return []
    return [f"{destination.name} replicates its files through Rucio, but {source.name} has "
            f"no 'rucio:' block: the files were copied over {source.transport}, not through "
            f"Rucio ('fed rucio register {destination.name}' registers them)"]
