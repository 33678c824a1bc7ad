"""Crash injection for tests: kill this process at the Nth checkpoint.

Set ``FED_FAULT_KILL_AT=N`` and the Nth call of :func:`checkpoint` sends
SIGKILL to the process itself, as a power cut or ``kill -9`` would. Unset,
a checkpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_ENV = "FED_FAULT_KILL_AT"
_count = 0
_lock = threading.Lock()  # checkpoints are passed from file-transfer threads too


def checkpoint(name: str) -> None:
    """A point where a crash must leave the repository consistent."""
    global _count
    target = os.environ.get(_ENV)
    if not target:
        return
    with _lock:  # an unlocked `+= 1` can lose a count, or kill twice at one number
        _count += 1
        if _count != int(target):
            return
        sys.stderr.write(f"fault injection: killed at checkpoint {_count} ({name})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
