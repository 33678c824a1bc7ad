"""A content-defined (prolly) Merkle tree over sorted entries: the identity of a release.

The manifest's entries, sorted by key (dataset type, data ID, run), are the
tree's leaves. Each level is cut into chunks by content alone: a chunk ends
after an item whose hash's first byte is below :data:`BOUNDARY` (one item in 64
on average) once it holds at least two items, and at the end of the level. A
chunk's hash is the next level's item; the level with a single item is the
root. Because a boundary depends on the item, not on its position, two
manifests that differ in a few entries share every chunk away from those
entries: their trees differ along O(d log n) nodes, and :func:`diff` visits
only those.

Hashes are SHA-256: an entry's is ``SHA-256(0x00 || line)`` (``line``: the
entry's canonical JSON, see :mod:`federation.release.manifest`), a node's is
``SHA-256(0x01 || child hash || child hash ...)``. An empty manifest's root is
``SHA-256(0x01)``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

BOUNDARY = 4  # a chunk may end after an item whose hash starts with a byte below this
MIN_CHUNK = 2  # ...and not before it holds this many items: every level halves at least
LEAF, NODE = b"\x00", b"\x01"


def entry_hash(line: bytes) -> bytes:
    return hashlib.sha256(LEAF + line).digest()


def node_hash(children: Sequence[bytes]) -> bytes:
    return hashlib.sha256(NODE + b"".join(children)).digest()


@dataclass(frozen=True)
class Node:
    """One chunk: its level (0: its children are entries) and its children's hashes."""

    level: int
    children: tuple[bytes, ...]

    @property
    def hash(self) -> bytes:
        return node_hash(self.children)


def chunks(items: Sequence[bytes]) -> list[list[bytes]]:
    """Cut one level's item hashes into chunks by content."""
    found: list[list[bytes]] = []
    current: list[bytes] = []
    for item in items:
        current.append(item)
        if item[0] < BOUNDARY and len(current) >= MIN_CHUNK:
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def build(entry_hashes: Iterable[bytes]) -> tuple[bytes, list[Node]]:
    """The root over the entries' hashes (in key order), and every node of the tree."""
    items = list(entry_hashes)
    nodes: list[Node] = []
    level = 0
    while True:
        made = [Node(level, tuple(chunk)) for chunk in chunks(items)] or [Node(level, ())]
        nodes.extend(made)
        items = [node.hash for node in made]
        if len(items) == 1:
            return items[0], nodes
        level += 1


@dataclass
class TreeDiff:
    """Entry hashes found under one side's differing subtrees only, and the node count
    the walk read (the cost of the comparison)."""

    only_a: list[bytes]
    only_b: list[bytes]
    nodes_visited: int


def diff(root_a: bytes, root_b: bytes, node_a: Callable[[bytes], Node],
         node_b: Callable[[bytes], Node]) -> TreeDiff:
    """The entries of tree A not in tree B and the reverse, reading only the nodes whose
    hashes differ (``node_a``/``node_b`` look a node up by hash).

    A node found on both sides holds the same entries on both, and an entry is under
    one node per level, so the entries outside the common subtrees are exactly those
    under the nodes left unmatched, level by level from the roots down.
    """
    if root_a == root_b:
        return TreeDiff([], [], 0)
    a, b = [node_a(root_a)], [node_b(root_b)]
    visited = 2
    while a or b:
        level = max(n.level for n in a + b)
        if level == 0:
            break
        upper_a = [n for n in a if n.level == level]
        upper_b = [n for n in b if n.level == level]
        shared = Counter(c for n in upper_a for c in n.children) & \
            Counter(c for n in upper_b for c in n.children)
        below_a = [n for n in a if n.level < level]
        below_b = [n for n in b if n.level < level]
        for child in _unmatched(upper_a, shared):
            below_a.append(node_a(child))
            visited += 1
        for child in _unmatched(upper_b, shared):
            below_b.append(node_b(child))
            visited += 1
        a, b = below_a, below_b
    entries_a = Counter(c for n in a for c in n.children)
    entries_b = Counter(c for n in b for c in n.children)
    return TreeDiff(list((entries_a - entries_b).elements()),
                    list((entries_b - entries_a).elements()), visited)


def _unmatched(nodes: list[Node], shared: Counter) -> list[bytes]:
    return [c for n in nodes for c in n.children if c not in shared]
