"""Bounded retries with exponential backoff, for transient network failures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from federation.transport.base import TransportError

T = TypeVar("T")
log = logging.getLogger(__name__)


class TransientError(TransportError):
    """A failure worth retrying: the connection dropped, the server is busy or restarting."""


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` tries within ``deadline`` seconds, waiting 0.5, 1, 2... s between."""

    attempts: int = 5
    initial: float = 0.5
    maximum: float = 8.0
    deadline: float = 120.0

    @classmethod
    def from_options(cls, options: dict) -> RetryPolicy:
        return cls(attempts=max(1, int(options.get("retries", cls.attempts))),
                   deadline=float(options.get("retry_deadline", cls.deadline)))

    def call(self, what: str, func: Callable[[], T]) -> T:
        """``func()``, retried while it raises :class:`TransientError`; the last error wins."""
        start = time.monotonic()
        delay = self.initial
        for attempt in range(1, self.attempts + 1):
            try:
                return func()
            except TransientError as exc:
                left = self.deadline - (time.monotonic() - start)
                if attempt == self.attempts or left <= delay:
                    raise TransportError(f"{what}: {exc} (gave up after {attempt} "
                                         f"attempt{'s' if attempt > 1 else ''})") from None
                log.info("%s: %s; retrying in %.1f s", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.maximum)
        raise AssertionError("unreachable")
