"""How a sync, an import or a receive runs: one set of options for all of them."""

from __future__ import annotations

from dataclasses import dataclass

from federation.errors import ConfigError
from federation.sync.selection import Selection

ON_CONFLICT = ("fail", "skip")


@dataclass(frozen=True)
class SyncOptions:
    """``on_conflict``: fail (nothing applied when anything conflicts) or skip (the rest is
    applied); ``jobs``: files transferred in parallel (None: what suits the transport,
    see :attr:`Transport.parallel`); ``lock_timeout``: seconds to wait for another sync
    into the destination."""

    selection: Selection = Selection()
    dry_run: bool = False
    on_conflict: str = "fail"
    jobs: int | None = None
    lock_timeout: float = 60.0
    #: the source was rebuilt (another repository instance): re-plan from a snapshot,
    #: comparing contents, every difference a conflict
    reset_cursor: bool = False
    #: keep datasets deleted upstream (as a ``keep_deleted`` site does), for this sync only
    keep_deleted: bool = False
    #: into a site whose files come through Rucio: ask for the files and return at once (a
    #: later sync imports what Rucio brought meanwhile)
    no_wait: bool = False
    #: through Rucio: keep at least this many copies of what the sync carries among the
    #: RSEs of ``copies_at`` (site names; empty: every site with Rucio), as one Rucio rule
    #: per RUN (a policy flow's ``min_copies``)
    min_copies: int = 1
    copies_at: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.on_conflict not in ON_CONFLICT:
            raise ConfigError(f"--on-conflict must be fail or skip, not {self.on_conflict!r}")
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, not {self.jobs}")

    @property
    def strict(self) -> bool:
        """Whether any conflict stops the whole operation."""
        return self.on_conflict == "fail"
