"""Crash injection and test hooks: named points where a test can act or kill the process.

Set ``FED_FAULT_KILL_AT=N`` and the Nth call of :func:`checkpoint` sends
SIGKILL to the process itself, as a power cut or ``kill -9`` would; set it to a
checkpoint's name and the first call of that name does (with threads at work,
the order of checkpoints varies from run to run, the names do not). Tests can
also run code at a named point with :func:`hooked` (a writer at the source
between a sync's passes, say). Unset, a checkpoint costs two lookups.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_ENV = "FED_FAULT_KILL_AT"
_count = 0
_lock = threading.Lock()  # checkpoints are passed from file-transfer threads too
_hooks: dict[str, list[Callable[[], None]]] = {}


def checkpoint(name: str) -> None:
    """A point where a crash must leave the repository consistent."""
    global _count
    if _hooks:
        for hook in list(_hooks.get(name, ())):
            hook()
    target = os.environ.get(_ENV)
    if not target:
        return
    with _lock:  # an unlocked `+= 1` can lose a count, or kill twice at one number
        _count += 1
        if target != name and (not target.isdigit() or _count != int(target)):
            return
        sys.stderr.write(f"fault injection: killed at checkpoint {_count} ({name})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def hooked(name: str, hook: Callable[[], None]) -> Iterator[None]:
    """Run ``hook`` each time the checkpoint ``name`` is passed, inside the block (tests)."""
    _hooks.setdefault(name, []).append(hook)
    try:
        yield
    finally:
        _hooks[name].remove(hook)
        if not _hooks[name]:
            del _hooks[name]
