"""A selection that matches nothing says so.

The first sync (or push, or snapshot export) of a selection whose ``-c`` or
``-t`` globs match no collection or dataset type at the source is refused,
with one line naming them, before anything is written. Later syncs of a
selection that matched once are not checked: what it matched may have been
removed since, and those removals must still reach the destination. A
selection that carries no dataset (a ``--where`` that matches none) is not an
error; its first report says so in a note.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from federation.butler import Butler
from federation.errors import InputError
from federation.sites import SiteDefinition
from federation.sync.options import SyncOptions
from federation.sync.remote.mirror import Mirror
from federation.sync.report import Report
from federation.sync.selection import Selection
from federation.sync.site_access import open_site, sync_lock


def first_use(source: SiteDefinition, destination: SiteDefinition,
              selection: Selection) -> bool:
    """Whether ``selection`` has never been synced (or pushed) from ``source`` to
    ``destination``: no cursor records it."""
    if destination.is_remote:  # a push: the source keeps the cursor
        with open_site(source) as src:
            return src.registry.cursors.get("push", destination.name, selection.key) is None
    with open_site(destination) as dst:
        return dst.registry.cursors.get("pull", source.name, selection.key) is None


def check_patterns(source: SiteDefinition, destination: SiteDefinition,
                   options: SyncOptions) -> None:
    """Refuse a selection whose ``-c`` or ``-t`` globs match nothing at ``source``.

    A source reached over the network is read through its mirror, refreshed
    first (under the destination's sync lock, as the sync itself does).
    """
    if _explicit(options.selection):
        with _source_registry(source, destination, options.lock_timeout) as src:
            refuse_unmatched(source.name, src, options.selection, "nothing was synced")


def refuse_unmatched(site: str, butler: Butler, selection: Selection, outcome: str) -> None:
    """InputError naming the globs of ``selection`` that match nothing in ``butler``."""
    registry = butler.registry
    unmatched = _unmatched("-c", selection.collections,
                           (c.name for c in registry.collections.query()))
    unmatched += _unmatched("-t", selection.dataset_types,
                            (t.name for t in registry.dataset_types.query()))
    if unmatched:
        raise InputError(f"nothing at {site} matches {', '.join(unmatched)}; {outcome}")


def note_if_empty(site: str, selection: Selection, datasets: int) -> list[str]:
    """The note for a selection's first report when it carried no dataset."""
    if datasets or selection.is_full:
        return []
    return [f"no datasets at {site} matched the selection ({selection.describe()})"]


def datasets_in(report: Report) -> int:
    """How many datasets a report mentions, whatever was done with them."""
    return sum(n for key, n in report.counts.items() if key.split(" ")[0] == "dataset")


def _explicit(selection: Selection) -> bool:
    """Whether a selection names anything (``*`` matches everything, even nothing)."""
    return any(p != "*" for p in selection.collections + selection.dataset_types)


def _unmatched(flag: str, patterns: Iterable[str], names: Iterable[str]) -> list[str]:
    """``flag 'PATTERN'`` for each pattern (but ``*``) that matches none of ``names``."""
    patterns = [p for p in patterns if p != "*"]
    if not patterns:
        return []
    names = list(names)
    return [f"{flag} {p!r}" for p in patterns
            if not any(fnmatch.fnmatchcase(n, p) for n in names)]


@contextmanager
def _source_registry(source: SiteDefinition, destination: SiteDefinition,
                     lock_timeout: float) -> Iterator[Butler]:
    """The repository a sync reads ``source`` from: its own, or its mirror at
    ``destination`` (brought up to date)."""
    if not source.is_remote:
        with open_site(source) as src:
            yield src
        return
    with open_site(destination) as dst:
        root = dst.config.root
    mirror = Mirror(source, root)
    with sync_lock(root, destination.name, lock_timeout):
        mirror.refresh()
        with mirror.open() as src:
            yield src
