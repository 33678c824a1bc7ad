"""Calls that must answer within a deadline: one daemon thread per call.

A site that does not answer in time (a hung database, a server that accepts and
never replies) is given up on, not waited for: its thread is left to finish on its
own, and while it has not, the same call (same key) is not started again: a status
page refreshing every few seconds never piles threads onto a stuck site.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")

_running: dict[str, threading.Thread] = {}
_guard = threading.Lock()


class NoAnswer(Exception):
    """A call did not answer before its deadline."""


def call_all(calls: Mapping[str, Callable[[], T]], timeout: float,
             ) -> dict[str, T | BaseException]:
    """Run every call at once; each one's result, or the exception it raised, or
    :class:`NoAnswer` if it had not returned ``timeout`` seconds after the start."""
    results: dict[str, T | BaseException] = {}
    threads: dict[str, threading.Thread] = {}
    for key, func in calls.items():
        with _guard:
            previous = _running.get(key)
            if previous is not None and previous.is_alive():
                results[key] = NoAnswer("no answer yet to the previous request (still "
                                        "waiting for it)")
                continue
            thread = threading.Thread(target=_run, args=(key, func, results), daemon=True,
                                      name=f"status {key}")
            _running[key] = threads[key] = thread
        thread.start()
    deadline = time.monotonic() + timeout
    for key, thread in threads.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            results[key] = NoAnswer(f"no answer within {timeout:g} s")
    return dict(results)


def _run(key: str, func: Callable[[], T], results: dict[str, T | BaseException]) -> None:
    try:
        value: T | BaseException = func()
    except Exception as exc:  # noqa: BLE001 - handed to the caller as the site's answer
        value = exc
    results.setdefault(key, value)
    with _guard:
        if _running.get(key) is threading.current_thread():
            del _running[key]
