"""The dependency graph: wildcard expansion over task ids, cycle detection, ordering.

Patterns use case-sensitive fnmatch rules (`*`, `?`, `[...]`). `IdIndex` answers a
pattern without testing every id: a plain id is a dict lookup, and a glob is
narrowed to the ids sharing its literal prefix (or suffix) by bisecting a sorted
list before a compiled regex checks the candidates. Results are cached per pattern.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import translate
from typing import Literal

from scripthut.errors import ScriptHutError

GLOB_CHARS = "*?["
_MAX_CHAR = 0x10FFFF
Matcher = Callable[[str], object]
_TINY_RANGE = 64  # below this many candidates, a second (suffix) narrowing is not worth it


def is_glob(pattern: str) -> bool:
    """Whether the pattern holds a wildcard character (`*`, `?` or `[`)."""
    return "*" in pattern or "?" in pattern or "[" in pattern


def literal_prefix(pattern: str) -> str:
    """The characters before the first wildcard: every match starts with them."""
    cut = len(pattern)
    for char in GLOB_CHARS:
        found = pattern.find(char)
        if found != -1 and found < cut:
            cut = found
    return pattern[:cut]


def literal_suffix(pattern: str) -> str:
    """The characters after the last wildcard or bracket: every match ends with them."""
    cut = max(pattern.rfind(char) for char in "*?[]")
    return pattern[cut + 1 :]


def _starts_with(prefix: str) -> Matcher:
    def matches(task_id: str) -> bool:
        return task_id.startswith(prefix)

    return matches


def _prefix_range(sorted_ids: Sequence[str], prefix: str) -> tuple[int, int]:
    """The slice of `sorted_ids` holding every id that starts with `prefix`."""
    lo = bisect_left(sorted_ids, prefix)
    last = ord(prefix[-1])
    if last == _MAX_CHAR:
        return lo, len(sorted_ids)
    return lo, bisect_left(sorted_ids, prefix[:-1] + chr(last + 1), lo)


ProblemKind = Literal["self", "unknown", "no_match", "only_self"]


@dataclass(frozen=True, slots=True)
class DepProblem:
    """A dependency pattern of a task that cannot be satisfied, and why."""

    task_id: str
    pattern: str
    kind: ProblemKind

    @property
    def message(self) -> str:
        return _PROBLEM_TEXT[self.kind].format(pattern=self.pattern)


_PROBLEM_TEXT: dict[ProblemKind, str] = {
    "self": "'{pattern}' is the task itself: a task cannot depend on itself",
    "unknown": "unknown dependency '{pattern}'",
    "no_match": "pattern '{pattern}' matches no task",
    "only_self": "pattern '{pattern}' matches only the task itself",
}


class CycleError(ScriptHutError, ValueError):
    """The dependency graph has a cycle; `path` is one of them, first id repeated last."""

    def __init__(self, path: list[str]) -> None:
        self.path = path
        super().__init__(f"dependency cycle: {' -> '.join(path)}")


class IdIndex:
    """Task ids, answering fnmatch patterns in roughly the size of the answer.

    Matches come back in insertion order. Adding ids drops the cached glob results.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._position: dict[str, int] = {}
        self._sorted: list[str] | None = None
        self._reversed: list[str] | None = None
        self._globs: dict[str, tuple[Matcher, tuple[str, ...]]] = {}
        self.add(ids)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._position

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def add(self, ids: Iterable[str]) -> None:
        """Append ids; an id already present (or repeated) raises ValueError, adding none."""
        new_ids = list(ids)
        fresh = dict.fromkeys(new_ids)
        clash = next((i for i in fresh if i in self._position), None)
        if clash is not None or len(fresh) != len(new_ids):
            raise ValueError(
                "repeated ids" if clash is None else f"id '{clash}' is already in the index"
            )
        start = len(self._ids)
        self._position.update(zip(new_ids, range(start, start + len(new_ids)), strict=True))
        self._ids.extend(new_ids)
        self._sorted = None
        self._reversed = None
        self._globs.clear()

    def match(self, pattern: str) -> list[str]:
        """Every id the pattern matches, in insertion order."""
        if not is_glob(pattern):
            return [pattern] if pattern in self._position else []
        return list(self._glob(pattern)[1])

    def expand(self, pattern: str, own_id: str) -> tuple[Sequence[str], ProblemKind | None]:
        """The ids a task `own_id` depends on through `pattern`, or why there are none.

        A plain id equal to `own_id` is an error; a wildcard that also matches
        `own_id` leaves it out, and is an error only when it matches nothing else.
        """
        if not is_glob(pattern):
            if pattern == own_id:
                return (), "self"
            if pattern in self._position:
                return (pattern,), None
            return (), "unknown"
        matches, matched = self._glob(pattern)
        if not matched:
            return (), "no_match"
        if not matches(own_id):
            return matched, None
        if matched == (own_id,):
            return (), "only_self"
        return [task_id for task_id in matched if task_id != own_id], None

    def _glob(self, pattern: str) -> tuple[Matcher, tuple[str, ...]]:
        cached = self._globs.get(pattern)
        if cached is None:
            prefix = literal_prefix(pattern)
            if pattern == prefix + "*":
                cached = (_starts_with(prefix), self._scan(pattern, None))
            else:
                regex = re.compile(translate(pattern)).match
                cached = (regex, self._scan(pattern, regex))
            self._globs[pattern] = cached
        return cached

    def _scan(self, pattern: str, matches: Matcher | None) -> tuple[str, ...]:
        """Match the candidates the literal prefix or suffix leaves, in insertion order.

        Without `matches` (a pattern that is a prefix and `*`), every candidate matches.
        """
        candidates = self._candidates(pattern)
        found = list(candidates) if matches is None else list(filter(matches, candidates))
        if candidates is not self._ids and len(found) > 1:
            found.sort(key=self._position.__getitem__)
        return tuple(found)

    def _candidates(self, pattern: str) -> Sequence[str]:
        """The narrower of the prefix range and the suffix range (or every id)."""
        prefix = literal_prefix(pattern)
        suffix = literal_suffix(pattern)
        by_prefix: Sequence[str] = self._ids
        if prefix:
            ordered = self._sorted_ids()
            lo, hi = _prefix_range(ordered, prefix)
            by_prefix = ordered[lo:hi]
        if not suffix or len(by_prefix) <= _TINY_RANGE:
            return by_prefix
        reversed_ids = self._reversed_ids()
        lo, hi = _prefix_range(reversed_ids, suffix[::-1])
        if hi - lo >= len(by_prefix):
            return by_prefix
        return [task_id[::-1] for task_id in reversed_ids[lo:hi]]

    def _sorted_ids(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self._ids)
        return self._sorted

    def _reversed_ids(self) -> list[str]:
        if self._reversed is None:
            self._reversed = sorted(task_id[::-1] for task_id in self._ids)
        return self._reversed


def expand_deps(
    patterns: Mapping[str, Sequence[str]], index: IdIndex
) -> tuple[dict[str, list[str]], list[DepProblem]]:
    """Expand each task's patterns over `index`: ids deduplicated in first-seen order.

    Returns the expanded dependencies of every task in `patterns` and the
    patterns that could not be satisfied (their ids are simply left out).
    """
    expanded: dict[str, list[str]] = {}
    problems: list[DepProblem] = []
    for task_id, task_patterns in patterns.items():
        expanded[task_id] = _expand_task(task_id, task_patterns, index, problems)
    return expanded, problems


def _expand_task(
    task_id: str, patterns: Sequence[str], index: IdIndex, problems: list[DepProblem]
) -> list[str]:
    if not patterns:
        return []
    if len(patterns) == 1:
        found, problem = index.expand(patterns[0], task_id)
        if problem is not None:
            problems.append(DepProblem(task_id, patterns[0], problem))
        return list(found)
    merged: dict[str, None] = {}
    for pattern in patterns:
        found, problem = index.expand(pattern, task_id)
        if problem is not None:
            problems.append(DepProblem(task_id, pattern, problem))
        merged.update(dict.fromkeys(found))
    return list(merged)


def _kahn(deps: Mapping[str, Collection[str]]) -> tuple[list[str], dict[str, int]]:
    """Kahn's algorithm: the ids in dependency order, and the waiting counts of the rest.

    Dependencies on ids outside `deps` count as already satisfied.
    """
    waiting: dict[str, int] = {}
    dependents: defaultdict[str, list[str]] = defaultdict(list)
    for task_id, task_deps in deps.items():
        count = 0
        for dep in task_deps:
            if dep in deps:
                count += 1
                dependents[dep].append(task_id)
        waiting[task_id] = count
    ready = deque(task_id for task_id, count in waiting.items() if count == 0)
    order: list[str] = []
    while ready:
        task_id = ready.popleft()
        order.append(task_id)
        for dependent in dependents.get(task_id, ()):
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    return order, waiting


def _already_ordered(deps: Mapping[str, Collection[str]]) -> bool:
    """Whether every task comes after all its dependencies in the mapping's own order.

    Most documents list tasks this way; the check is one lookup per edge and,
    when it holds, proves there is no cycle without building the reverse graph.
    """
    position = {task_id: i for i, task_id in enumerate(deps)}
    for i, task_deps in enumerate(deps.values()):
        for dep in task_deps:
            if position.get(dep, -1) >= i:
                return False
    return True


def topological_order(deps: Mapping[str, Collection[str]]) -> list[str]:
    """Every id of `deps` after all of its dependencies; raises CycleError on a cycle.

    The mapping's order is kept when it already satisfies the dependencies; otherwise
    ties keep it. Dependencies on ids outside `deps` are ignored.
    """
    if _already_ordered(deps):
        return list(deps)
    order, waiting = _kahn(deps)
    if len(order) < len(deps):
        raise CycleError(_cycle_among(deps, waiting))
    return order


def find_cycle(deps: Mapping[str, Collection[str]]) -> list[str] | None:
    """One dependency cycle as a path (`a` needs `b` ... needs `a`), or None."""
    if _already_ordered(deps):
        return None
    order, waiting = _kahn(deps)
    if len(order) == len(deps):
        return None
    return _cycle_among(deps, waiting)


def _cycle_among(deps: Mapping[str, Collection[str]], waiting: Mapping[str, int]) -> list[str]:
    """Walk from a blocked task along blocked dependencies until a task repeats.

    Every task Kahn's algorithm could not release waits on at least one other such
    task, so the walk never stops early and must close a loop.
    """
    start = next(task_id for task_id in deps if waiting[task_id] > 0)
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(dep for dep in deps[node] if waiting.get(dep, 0) > 0)
    cycle = path[seen[node] :]
    members = set(cycle)
    first = cycle.index(next(task_id for task_id in deps if task_id in members))
    rotated = cycle[first:] + cycle[:first]
    return [*rotated, rotated[0]]
