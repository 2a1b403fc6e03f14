"""Pure functions over a plan's dependency graph: cycles, topological order, critical path."""

from collections.abc import Hashable, Iterable, Mapping


def find_cycle(depends_on: Mapping[Hashable, Iterable[Hashable]]) -> list[Hashable] | None:
    """A cycle as a path that returns to its start (["a", "b", "a"]), or None. Deterministic."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(depends_on, WHITE)
    stack: list[Hashable] = []

    def visit(node: Hashable) -> list[Hashable] | None:
        color[node] = GREY
        stack.append(node)
        for dep in sorted(depends_on.get(node, ()), key=str):
            if color.get(dep, WHITE) == GREY:
                return [*stack[stack.index(dep) :], dep]
            if color.get(dep, WHITE) == WHITE and dep in depends_on and (found := visit(dep)):
                return found
        stack.pop()
        color[node] = BLACK
        return None

    for node in sorted(depends_on, key=str):
        if color[node] == WHITE and (found := visit(node)):
            return found
    return None


def topological_order(
    depends_on: Mapping[Hashable, Iterable[Hashable]], tie_break: Mapping[Hashable, int]
) -> list[Hashable]:
    """Dependencies first; among ready nodes, the smallest tie_break (declared position) first."""
    remaining = {n: set(depends_on.get(n, ())) & set(depends_on) for n in depends_on}
    order: list[Hashable] = []
    while remaining:
        ready = sorted(
            (n for n, deps in remaining.items() if not deps), key=lambda n: tie_break.get(n, 0)
        )
        if not ready:
            raise ValueError(
                f"dependency cycle: {' -> '.join(map(str, find_cycle(depends_on) or []))}"
            )
        node = ready[0]
        order.append(node)
        del remaining[node]
        for deps in remaining.values():
            deps.discard(node)
    return order


def critical_path(
    depends_on: Mapping[Hashable, Iterable[Hashable]], weight: Mapping[Hashable, float]
) -> list[Hashable]:
    """The longest chain by summed weight (e.g. expected duration, or 1 per step)."""
    order = topological_order(depends_on, {n: i for i, n in enumerate(depends_on)})
    best: dict[Hashable, tuple[float, Hashable | None]] = {}
    for node in order:
        deps = [d for d in depends_on.get(node, ()) if d in best]
        prev = max(deps, key=lambda d: best[d][0], default=None)
        best[node] = ((best[prev][0] if prev is not None else 0.0) + weight.get(node, 1.0), prev)
    if not best:
        return []
    node: Hashable | None = max(best, key=lambda n: best[n][0])
    path: list[Hashable] = []
    while node is not None:
        path.append(node)
        node = best[node][1]
    return path[::-1]
