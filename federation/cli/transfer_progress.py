"""Transfer progress for `fed sync`, `fed import` and pushes: files, bytes, rate, ETA.

On a terminal a bar redraws in place; otherwise (logs, cron) a plain line is
written to stderr at most every ``interval`` seconds, and nothing at all for
a transfer shorter than that.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from federation.sync.progress import Progress

BAR = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B "
       "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TransferProgress(Progress):
    """Draws a sync's transfers; use as a context manager around the sync."""

    def __init__(self, title: str, *, stream: TextIO | None = None, tty: bool | None = None,
                 interval: float = 10.0) -> None:
        self.title = title
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.files = self.bytes = 0
        self.total_files: int | None = None
        self.total_bytes: int | None = None
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_line = self._start
        self._bar = None

    def __enter__(self) -> TransferProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._files_text(), refresh=False)
            self._bar.refresh()
            self._bar.close()

    def planned(self, files: int, nbytes: int) -> None:
        with self._lock:
            self.total_files, self.total_bytes = files, nbytes
            if self._bar is not None:
                self._bar.total = nbytes
                self._bar.refresh()

    def advance(self, files: int, nbytes: int) -> None:
        with self._lock:
            self.files += files
            self.bytes += nbytes
            if self.tty:
                self._draw_bar(nbytes)
            elif time.monotonic() - self._last_line >= self.interval:
                self._last_line = time.monotonic()
                print(self.line(), file=self.stream, flush=True)

    def _draw_bar(self, nbytes: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total_bytes, desc=self.title, unit="B",
                             unit_scale=True, unit_divisor=1000, file=self.stream, leave=False,
                             mininterval=0.2, bar_format=BAR)
        self._bar.set_postfix_str(self._files_text(), refresh=False)
        self._bar.update(nbytes)

    def _files_text(self) -> str:
        total = f"/{self.total_files}" if self.total_files is not None else ""
        return f"{self.files}{total} files"

    def line(self) -> str:
        """One status line: files, bytes, rate, and ETA when the totals are known."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.bytes / elapsed
        size = human_bytes(self.bytes)
        if self.total_bytes is not None:
            size += f"/{human_bytes(self.total_bytes)}"
        text = f"{self.title}: {self._files_text()}, {size}, {human_bytes(rate)}/s"
        if self.total_bytes and rate > 0:
            text += f", ETA {_clock(max(self.total_bytes - self.bytes, 0) / rate)}"
        return text
