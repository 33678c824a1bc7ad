"""The rules that bring files to one site's RSE and keep them there.

A sync into a site whose files come through Rucio asks for one rule per file on the
site's RSE (``fed: files of SITE``): Rucio (and FTS) bring the file, and keep it while the
rule stands. A rule is per file so that a deletion removes exactly that file's rule
(Rucio's reaper then removes the replica); rules are added in bulk, a chunk of names
per request, and the site's existing rules are listed once per sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from federation.rucio.session import RucioError, RucioSession, Rule


def files_comment(site: str) -> str:
    """The comment marking the rules fed placed for a site's files."""
    return f"fed: files of {site}"


@dataclass
class Arrivals:
    """Where the files of one wait stand: the names on the RSE, and why the others are not."""

    arrived: dict[str, int] = field(default_factory=dict)  # name -> size Rucio lists
    waiting: dict[str, str] = field(default_factory=dict)  # name -> why it is not there


class SiteRules:
    """One site's file rules on its RSE (listed once, on first use)."""

    def __init__(self, session: RucioSession, site: str) -> None:
        self.session = session
        self.site = site
        self.rse = session.settings.rse
        self.comment = files_comment(site)
        self._rules: dict[str, Rule] | None = None

    @property
    def rules(self) -> dict[str, Rule]:
        """fed's file rules on the RSE, by file name."""
        if self._rules is None:
            self._rules = {r.name: r for r in self.session.rules(self.rse)
                           if r.comment == self.comment}
        return self._rules

    def ensure(self, names: Sequence[str]) -> int:
        """A standing rule for each name: new ones added in bulk, ones being removed (an
        expiry set by an earlier deletion) kept. Returns how many were added."""
        rules = self.rules
        for name in names:
            rule = rules.get(name)
            if rule is not None and rule.expires_at is not None:
                self.session.revive_rule(rule.id)
                rules[name] = Rule(**{**rule.__dict__, "expires_at": None})
        missing = [n for n in dict.fromkeys(names) if n not in rules]
        if missing:
            try:
                ids = self.session.add_rules(missing, self.rse, comment=self.comment)
            except RucioError:
                # Another sync may have added some meanwhile: list again, add the rest once.
                self._rules = None
                rules = self.rules
                missing = [n for n in missing if n not in rules]
                ids = self.session.add_rules(missing, self.rse, comment=self.comment) \
                    if missing else []
            for name, rule_id in zip(missing, ids, strict=False):
                rules[name] = Rule(rule_id, name, self.rse, "REPLICATING", 1, False, None,
                                   self.comment, None)
        return len(missing)

    def wait(self, names: Sequence[str], *, deadline: float | None, poll: float,
             on_arrival: Callable[[int, int], None] | None = None,
             stopped: Callable[[], bool] = lambda: False) -> Arrivals:
        """Look at the names' replicas on the RSE until all are there, their rules are
        stuck, ``deadline`` (a ``time.monotonic()`` value; None: look once) passes, or
        ``stopped()``. ``on_arrival(files, bytes)`` is told of each newly arrived group."""
        result = Arrivals()
        pending = list(dict.fromkeys(names))
        while True:
            replicas = self.session.replicas(self.rse, pending)
            now_here = {n: replicas[n].size for n in pending
                        if n in replicas and replicas[n].state == "AVAILABLE"}
            if now_here:
                result.arrived.update(now_here)
                if on_arrival is not None:
                    on_arrival(len(now_here), sum(now_here.values()))
            pending = [n for n in pending if n not in now_here]
            stuck = self._stuck(pending)
            for name, reason in stuck.items():
                result.waiting[name] = reason
            pending = [n for n in pending if n not in stuck]
            if not pending or deadline is None or time.monotonic() >= deadline or stopped():
                break
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        for name in pending:
            rule = self.rules.get(name)
            state = (replicas.get(name).state if name in replicas else "no replica yet")
            result.waiting[name] = (f"Rucio has not brought it yet (rule "
                                    f"{rule.id if rule else '?'}, replica {state})")
        return result

    def _stuck(self, pending: Sequence[str]) -> dict[str, str]:
        """The pending names whose rules Rucio gave up on (STUCK), with Rucio's reason."""
        if not pending:
            return {}
        wanted = set(pending)
        return {r.name: f"Rucio rule {r.id} is stuck: {r.error or 'no reason given'}"
                for r in self.session.rules(self.rse, state="S")  # Rucio filters by code
                if r.name in wanted and r.comment == self.comment}

    def remove(self, names: Sequence[str]) -> int:
        """Remove the rules of these names (Rucio's reaper then removes the replicas that no
        other rule protects). Locked rules are left. Returns how many were removed."""
        removed = 0
        for name in dict.fromkeys(names):
            rule = self.rules.get(name)
            if rule is None or rule.locked or rule.expires_at is not None:
                continue
            self.session.delete_rule(rule.id)
            self.rules.pop(name)
            removed += 1
        return removed
