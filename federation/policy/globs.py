"""Collection globs compared without a registry: can two globs match one name, and which
site's collections can a glob match.

Globs are those of ``fed sync -c`` (:func:`fnmatch.fnmatchcase`): ``*`` matches any
text (``/`` included), ``?`` one character, ``[abc]``, ``[a-z]`` and ``[!abc]`` one
character of (or not of) a set; a ``[`` without its ``]`` is itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from federation.sites.ownership import Owner, owner_by_prefix, under

_WILD = re.compile(r"[*?\[]")
_OTHER = ("\x00", "x", "\uffff")  # characters no glob names, for wildcards and negations


@dataclass(frozen=True)
class _Chars:
    """One character position: a set of characters and ranges, or its complement."""

    items: frozenset[str] = frozenset()
    ranges: tuple[tuple[str, str], ...] = ()
    negated: bool = False

    def __contains__(self, char: str) -> bool:
        inside = char in self.items or any(lo <= char <= hi for lo, hi in self.ranges)
        return inside != self.negated

    def samples(self) -> set[str]:
        """Characters at the edges of this set: where two sets meet, one of them lies."""
        found = set(self.items)
        for lo, hi in self.ranges:
            for end in (lo, hi):
                found |= {end, chr(max(ord(end) - 1, 0)), chr(min(ord(end) + 1, 0x10FFFF))}
        return found


_STAR = None  # a token: any text
_ANY = _Chars(negated=True)


def _tokens(pattern: str) -> list[_Chars | None]:
    """A glob as positions: ``None`` for ``*`` (repeats collapsed), else a character set."""
    found: list[_Chars | None] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            if not found or found[-1] is not _STAR:
                found.append(_STAR)
        elif char == "?":
            found.append(_ANY)
        elif char == "[":
            end = i + (1 if i < n and pattern[i] == "!" else 0)
            end += 1 if end < n and pattern[end] == "]" else 0
            while end < n and pattern[end] != "]":
                end += 1
            if end >= n:
                found.append(_Chars(frozenset("[")))
                continue
            found.append(_char_class(pattern[i:end]))
            i = end + 1
        else:
            found.append(_Chars(frozenset(char)))
    return found


def _char_class(body: str) -> _Chars:
    negated = body.startswith("!")
    body = body[1:] if negated else body
    items, ranges, k = set(), [], 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            ranges.append((body[k], body[k + 2]))
            k += 3
        else:
            items.add(body[k])
            k += 1
    return _Chars(frozenset(items), tuple(ranges), negated)


def globs_overlap(first: str, second: str) -> bool:
    """Whether some collection name matches both globs (``HSC/raw/*`` and ``HSC/*/all``
    do; ``HSC/raw/*`` and ``HSC/calib`` do not)."""
    a, b = _tokens(first), _tokens(second)
    alphabet = set(_OTHER)
    for token in a + b:
        if token is not _STAR:
            alphabet |= token.samples()
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] is _STAR:
            todo.append((i + 1, j))
        if j < len(b) and b[j] is _STAR:
            todo.append((i, j + 1))
        if i == len(a) or j == len(b):
            continue
        for char in alphabet:
            after_a = _step(a[i], i, char)
            after_b = _step(b[j], j, char)
            if after_a is not None and after_b is not None:
                todo.append((after_a, after_b))
    return False


def _step(token: _Chars | None, position: int, char: str) -> int | None:
    if token is _STAR:
        return position
    return position + 1 if char in token else None


def pattern_owner(pattern: str, sites: Iterable[Owner]) -> str | None:
    """The site that owns every collection ``pattern`` can match, if one does.

    A glob without wildcards is owned as its name is (the longest ``owns`` prefix
    covering it). Otherwise the text before its first wildcard, cut back to its last
    ``/``, must lie under a prefix of that site, and no other site may own a prefix
    at or below it (``HSC/runs/*`` is NCSA's when NCSA owns ``HSC/runs``; ``HSC/*`` and
    ``HSC/raw*`` are no one's).
    """
    sites = list(sites)
    wild = _WILD.search(pattern)
    if wild is None:
        return owner_by_prefix(pattern, sites)
    fixed = pattern[:wild.start()]
    if "/" not in fixed:
        return None
    directory = fixed[:fixed.rindex("/")]
    owner = owner_by_prefix(directory, sites)
    if owner is None:
        return None
    if any(site.name != owner and under(prefix.rstrip("/"), directory)
           for site in sites for prefix in site.owns):
        return None
    return owner
