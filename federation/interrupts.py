"""Ctrl-C held back while a registry write transaction is open.

An interrupt that lands inside a database call leaves the connection half-way:
SQLAlchemy drops it, and SQLite keeps its write lock for as long as the
interrupted statement is referenced (by the traceback on its way up), so the
next write in the same process (the sync log noting "interrupted") waits out
the busy timeout. A write transaction is short and atomic either way, so the
interrupt waits for it to commit or roll back and is raised right after.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Inside the block, SIGINT is noted instead of raised; on leaving it, the usual
    handler runs (KeyboardInterrupt). Only the main thread receives signals, so
    elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # ignored, or the process default: nothing to hold back
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            previous(signal.SIGINT, None)
