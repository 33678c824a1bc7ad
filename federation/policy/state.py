"""What ``fed federate`` remembers between passes: per edge, its last run, its last
success and error, its consecutive failures and when it is next due.

The state is a JSON file (default ``POLICIES/.federate/state.json``), replaced
atomically after every flow run, so a kill at any moment leaves the previous or
the next version, never a torn one. A lock file beside it keeps two ``fed
federate`` processes from running on the same state at once.

A flow that ran well is due again ``interval`` after it started. After ``n``
failures in a row it is due again after ``min(b * 2**(n-1), max(interval, 1 h))``
where ``b = min(interval, 1 min)``: soon at first, then less and less often, never
less often than hourly (or than its interval, if that is longer).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from federation.errors import ConfigError
from federation.policy.model import Edge, FlowRun
from federation.sync.site_access import file_lock

STATE_ENV = "FED_FEDERATE_STATE"
FORMAT = 1
RETRY_BASE = 60.0
BACKOFF_CAP = 3600.0


def state_path(policies: Path, explicit: str | os.PathLike | None = None) -> Path:
    """The state file: explicit, $FED_FEDERATE_STATE, or POLICIES/.federate/state.json."""
    chosen = explicit or os.environ.get(STATE_ENV)
    return Path(chosen) if chosen else policies / ".federate" / "state.json"


def retry_delay(interval: float, failures: int) -> float:
    """Seconds until a flow that failed ``failures`` times in a row is due again."""
    base = min(interval, RETRY_BASE)
    return min(base * 2 ** min(max(failures - 1, 0), 40), max(interval, BACKOFF_CAP))


@dataclass
class FlowState:
    """One edge (``POLICY/FLOW->DEST``) as the last runs left it; times in epoch seconds."""

    key: str
    policy: str
    flow: str
    source: str
    destination: str
    last_started: float | None = None
    last_ended: float | None = None
    last_result: str | None = None  # ok | failed
    last_detail: str = ""
    last_success: float | None = None
    last_error: str | None = None  # the latest failure's one line (kept after a success)
    last_error_at: float | None = None
    failures: int = 0  # in a row, since the last success
    next_due: float | None = None  # None: due now
    cursor: int | None = None  # the source journal entry the last good run reached

    def due(self, now: float) -> bool:
        return self.next_due is None or self.next_due <= now

    def record(self, run: FlowRun, interval: float) -> None:
        """Take a run's outcome and schedule the next one."""
        started = run.started if run.started is not None else time.time()
        self.last_started, self.last_ended = started, run.ended
        self.last_result, self.last_detail = run.result, run.detail
        if run.result == "ok":
            self.last_success, self.failures = started, 0
            self.cursor = run.cursor if run.cursor is not None else self.cursor
            self.next_due = started + interval
        else:
            self.failures += 1
            self.last_error, self.last_error_at = run.detail, run.ended or started
            self.next_due = (run.ended or started) + retry_delay(interval, self.failures)

    @classmethod
    def for_edge(cls, edge: Edge) -> FlowState:
        return cls(edge.key, edge.flow.policy, edge.flow.name, edge.source, edge.destination)


@dataclass
class FederateState:
    """Every edge's :class:`FlowState`, by key, as read from (and saved to) ``path``."""

    path: Path
    flows: dict[str, FlowState] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> FederateState:
        """The state in ``path`` (empty when there is none yet); a file that is not one is
        a one-line error."""
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"not a format {FORMAT} state file")
            names = {f.name for f in fields(FlowState)}
            flows = {key: FlowState(**{k: v for k, v in value.items() if k in names})
                     for key, value in data["flows"].items()}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the federate state {path}: {exc} (move it "
                              "aside to start afresh: every flow is then due)") from None
        return cls(path, flows)

    def get(self, edge: Edge) -> FlowState:
        found = self.flows.get(edge.key)
        if found is None:
            found = self.flows[edge.key] = FlowState.for_edge(edge)
        return found

    def keep_only(self, edges: list[Edge]) -> None:
        """Forget edges the policies no longer declare."""
        keys = {edge.key for edge in edges}
        self.flows = {key: value for key, value in self.flows.items() if key in keys}

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "saved": time.time(),
                "flows": {key: asdict(value) for key, value in sorted(self.flows.items())}}

    def save(self) -> None:
        """Write the state to a temporary file and rename it over the old one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(temporary, "w") as handle:
            json.dump(self.to_dict(), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


def state_lock(path: Path) -> AbstractContextManager[None]:
    """Hold the state file's lock: one ``fed federate`` per state file at a time."""
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as exc:
        raise ConfigError(f"cannot write the federate state beside {path}: {exc} (give "
                          "another place with --state)") from None
    return file_lock(lock, 0, lambda holder: ConfigError(
        f"another fed federate is running on {path} ({holder})"))
