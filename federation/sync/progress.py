"""How a sync tells its caller about transfers; the CLI draws bars or prints lines."""

from __future__ import annotations


class Progress:
    """Receives transfer progress. ``advance`` is called from transfer threads."""

    def planned(self, files: int, nbytes: int) -> None:
        """The files and bytes this run expects to transfer (when known up front)."""

    def advance(self, files: int, nbytes: int) -> None:
        """``files`` more files finished, ``nbytes`` more bytes arrived."""
