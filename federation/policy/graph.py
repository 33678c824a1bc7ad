"""Sites joined by flows: strongly connected groups, in dependency order."""

from __future__ import annotations

import heapq
from collections.abc import Iterable


def components(nodes: Iterable[str], arcs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), sources first: every arc between two
    components goes from an earlier one to a later one, and among components free to go
    the one with the first name comes first. Each component's nodes are sorted.
    """
    graph: dict[str, list[str]] = {node: [] for node in sorted(set(nodes))}
    for tail, head in arcs:
        graph.setdefault(tail, []).append(head)
        graph.setdefault(head, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for head in sorted(set(graph[node])):
            if head not in index:
                visit(head)
                low[node] = min(low[node], low[head])
            elif head in on_stack:
                low[node] = min(low[node], index[head])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return _in_order(found, graph)


def _in_order(groups: list[list[str]], graph: dict[str, list[str]]) -> list[list[str]]:
    """The components sources first; among those free to go, by their first name."""
    group_of = {node: i for i, group in enumerate(groups) for node in group}
    after: dict[int, set[int]] = {i: set() for i in range(len(groups))}
    for tail, heads in graph.items():
        after[group_of[tail]] |= {group_of[h] for h in heads if group_of[h] != group_of[tail]}
    waiting = {i: 0 for i in after}
    for heads in after.values():
        for head in heads:
            waiting[head] += 1
    ready = [(groups[i][0], i) for i, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        _, i = heapq.heappop(ready)
        ordered.append(groups[i])
        for head in after[i]:
            waiting[head] -= 1
            if waiting[head] == 0:
                heapq.heappush(ready, (groups[head][0], head))
    return ordered
