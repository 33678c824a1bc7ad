"""Classifying every pair: by record first, then by content where the bytes differ.

A pair whose two files have the same size and checksum is identical without
reading anything; a pair of storage classes that are only compared by bytes
(``Bytes``) is different as soon as the checksums differ. Only the remaining
pairs' files are brought (verified, fetched from other sites when they are
there) and compared by content (:mod:`.content`).
"""

from __future__ import annotations

from collections.abc import Sequence

from federation.compare.content import IMAGES, READ, compare_files
from federation.compare.files import Files, Wanted
from federation.compare.model import (
    ImageDiff,
    Kind,
    PairResult,
    Tolerance,
    TypeSummary,
    describe,
)
from federation.compare.pairing import Entry, Pair


class Progress:
    """Told when a phase starts and how much of it is done (the CLI draws a bar)."""

    def start(self, total: int, what: str) -> None:
        """A phase of ``total`` steps begins: ``"files"`` verified or fetched, then
        ``"pairs"`` compared."""

    def advance(self, n: int = 1) -> None:
        """``n`` more steps of the current phase are done."""


class Outcome:
    """The pairs classified, the summaries per dataset type, the worst image pair."""

    def __init__(self) -> None:
        self.results: list[PairResult] = []
        self.summaries: dict[str, TypeSummary] = {}
        self.worst_image: ImageDiff | None = None


def classify(pairs: Sequence[Pair], tolerance: Tolerance, files: Files, *,
             labels: tuple[str, str] = ("A", "B"), keep_image: bool = False,
             progress: Progress | None = None) -> Outcome:
    """Classify ``pairs`` (B is the reference of the tolerance); ``labels`` name the
    sides in messages; ``keep_image``: keep A - B of the worst image pair."""
    progress = progress or Progress()
    outcome = Outcome()
    to_read: list[tuple[PairResult, Wanted, Wanted]] = []
    for pair in pairs:
        result = _by_record(pair)
        summary = _summary(outcome, pair)
        if result.kind is Kind.EQUIVALENT:  # undecided: the content will tell
            what = describe(pair.dataset_type, pair.data_id)
            to_read.append((result, _wanted(labels[0], what, pair.a),
                            _wanted(labels[1], what, pair.b)))
        else:
            summary.counts[result.kind] += 1
            if result.kind is Kind.IDENTICAL and summary.max_abs is None:
                summary.max_abs = 0.0
        outcome.results.append(result)
    wanted = [w for _, a, b in to_read for w in (a, b)]
    progress.start(len(set(wanted)), "files")
    paths = files.bring(wanted, progress.advance)
    progress.start(len(to_read), "pairs")
    for result, want_a, want_b in to_read:
        _by_content(result, paths[want_a], paths[want_b], tolerance, outcome, keep_image)
        progress.advance(1)
    return outcome


def _wanted(side: str, what: str, entry: Entry | None) -> Wanted:
    assert entry is not None and entry.info is not None
    return Wanted(side, what, entry.info, entry.local)


def _summary(outcome: Outcome, pair: Pair) -> TypeSummary:
    name = pair.dataset_type
    if name not in outcome.summaries:
        entry = pair.a or pair.b
        outcome.summaries[name] = TypeSummary(name, entry.storage_class if entry else "")
    return outcome.summaries[name]


def _by_record(pair: Pair) -> PairResult:
    """What the records alone decide; EQUIVALENT here means "read the files"."""
    a, b = pair.a, pair.b
    entry = a or b
    assert entry is not None
    result = PairResult(pair.dataset_type, pair.data_id, entry.storage_class, Kind.EQUIVALENT,
                        a.info if a else None, b.info if b else None)
    if a is None or b is None:
        result.kind = Kind.ONLY_B if a is None else Kind.ONLY_A
    elif a.storage_class != b.storage_class:
        result.kind = Kind.DIFFERENT
        result.reasons.append(f"storage class {a.storage_class} in A, {b.storage_class} in B")
    elif a.info is None or b.info is None:
        result.kind = Kind.DIFFERENT
        side = "A" if a.info is None else "B"
        result.reasons.append(f"no file is recorded for it in {side}")
    elif (a.info.size, a.info.checksum) == (b.info.size, b.info.checksum):
        result.kind = Kind.IDENTICAL
    elif entry.storage_class not in READ:
        result.kind = Kind.DIFFERENT
        result.reasons.append(f"the bytes differ ({entry.storage_class} is compared by "
                              "checksum only)")
    return result


def _by_content(result: PairResult, path_a, path_b, tolerance: Tolerance, outcome: Outcome,
                keep_image: bool) -> None:
    summary = outcome.summaries[result.dataset_type]
    image = keep_image and result.storage_class in IMAGES
    content = compare_files(result.storage_class, path_a, path_b, tolerance,
                            histogram=summary.histogram, keep_image=image)
    result.parts = content.parts
    result.stats = content.stats
    result.reasons = content.reasons
    result.kind = Kind.DIFFERENT if content.reasons else Kind.EQUIVALENT
    summary.counts[result.kind] += 1
    if result.stats is not None and result.stats.finite:
        summary.max_abs = max(summary.max_abs or 0.0, result.stats.max_abs)
    if content.image is not None:
        worst = outcome.worst_image
        if worst is None or result.severity() > worst.pair.severity():
            name, diff, beyond = content.image
            outcome.worst_image = ImageDiff(result, name, diff, beyond)
