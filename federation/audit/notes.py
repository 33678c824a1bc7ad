"""What an unfinished audit found so far, so that an interrupted audit resumes.

One JSON lines file per audit selection in ``.federation-audit/`` in the datastore:
a header (what the audit covers: the datasets that arrived after ``since``, the
sampling seed, when it first started), then a line per chunk of files checked
(the last path of the chunk, counts, the problems found). File records are checked
in path order, so a resumed audit starts after the last path noted. The file goes
when the audit is recorded in the sync log.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from federation.audit.model import Problem

NOTES = ".federation-audit"  # in the datastore


@dataclass
class Standing:
    """Where an audit stands: what it covers (``since``, ``seed``, ``started``), the last
    path checked, and what was found up to it."""

    since: float | None
    seed: int
    started: float
    upto: str | None = None
    files: int = 0
    hashed: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)


class Notes:
    """The notes of the audits of one selection of one repository."""

    def __init__(self, root: Path, selection: dict) -> None:
        key = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()[:32]
        self.path = root / NOTES / f"{key}.jsonl"
        self.selection = selection

    def read(self) -> Standing | None:
        """What an interrupted audit of this selection found, or None (none, or a note cut
        short or written for something else: start over)."""
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return None
        try:
            head = json.loads(lines[0])
            if head.get("selection") != self.selection:
                return None
            found = Standing(head["since"], int(head["seed"]), float(head["started"]))
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        for number, line in enumerate(lines[1:], 2):
            try:
                chunk = json.loads(line)
                problems = [Problem(kind, path, detail, uuid.UUID(i), size)
                            for kind, i, path, detail, size in chunk["problems"]]
                upto, counts = chunk["upto"], (chunk["files"], chunk["hashed"], chunk["bytes"])
            except (ValueError, KeyError, TypeError):
                if number == len(lines):
                    break  # the last chunk's line, cut short by a kill: checked again
                return None
            found.upto = upto
            found.files, found.hashed, found.bytes = (
                a + b for a, b in zip((found.files, found.hashed, found.bytes), counts,
                                      strict=True))
            found.problems += problems
        return found

    def start(self, standing: Standing) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"selection": self.selection, "since": standing.since,
                                         "seed": standing.seed,
                                         "started": standing.started}) + "\n")

    def add(self, upto: str, files: int, hashed: int, nbytes: int,
            problems: list[Problem]) -> None:
        """Note a chunk of files checked (up to path ``upto``) and what it found."""
        with open(self.path, "a") as out:
            out.write(json.dumps({"upto": upto, "files": files, "hashed": hashed,
                                  "bytes": nbytes,
                                  "problems": [[p.kind, str(p.dataset_id), p.path, p.detail,
                                                p.size] for p in problems]}) + "\n")

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass  # other audits' notes are there
