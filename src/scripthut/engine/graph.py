"""In-memory DAG state of one run, updated incrementally.

Every operation costs in proportion to what changed, never to the size of the run:
a completed task decrements its dependents' counters, a failed one cascades
dep_failed through its descendants, and ready tasks wait in a queue.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from scripthut.states import RERUNNABLE_TASK_STATES, TaskState


@dataclass(slots=True)
class Node:
    """One task's place in the DAG."""

    task_id: str
    deps: list[str]
    state: TaskState = TaskState.PENDING
    dependents: list[str] = field(default_factory=list)
    unmet: int = 0
    in_flight: bool = False  # an attempt is being submitted or is on the backend


class RunGraph:
    """Dependency counters, ready queue and per-state counts of one run."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.nodes: dict[str, Node] = {}
        self.counts: Counter[TaskState] = Counter()
        self.ready: deque[str] = deque()
        self.active = 0  # tasks holding (or about to hold) a job on the backend
        self.add(nodes)

    def add(self, nodes: Iterable[Node]) -> list[str]:
        """Add tasks (at creation, after a restart, or generated); returns ids made dep_failed."""
        new = list(nodes)
        for node in new:
            self.nodes[node.task_id] = node
            self.counts[node.state] += 1
            self.active += node.in_flight
        for node in new:
            for dep in node.deps:
                self.nodes[dep].dependents.append(node.task_id)
        doomed: list[str] = []
        for node in new:
            node.unmet = sum(1 for dep in node.deps if self.nodes[dep].state != TaskState.COMPLETED)
            if node.state == TaskState.PENDING and not node.in_flight:
                if any(self.nodes[dep].state in RERUNNABLE_TASK_STATES for dep in node.deps):
                    doomed.append(node.task_id)
                elif node.unmet == 0:
                    self.ready.append(node.task_id)
        return [tid for root in doomed for tid in self._cascade_from(root, include_root=True)]

    def take_ready(self, limit: int) -> list[str]:
        """Up to `limit` ready tasks, marked in flight."""
        taken: list[str] = []
        while self.ready and len(taken) < limit:
            node = self.nodes[self.ready.popleft()]
            if node.state == TaskState.PENDING and not node.in_flight and node.unmet == 0:
                self._set_in_flight(node, True)
                taken.append(node.task_id)
        return taken

    def give_back(self, task_ids: Sequence[str]) -> None:
        """Tasks taken but not submitted after all go to the front of the queue."""
        for task_id in reversed(task_ids):
            node = self.nodes[task_id]
            self._set_in_flight(node, False)
            if node.state == TaskState.PENDING:
                self.ready.appendleft(task_id)

    def set_state(self, task_id: str, state: TaskState) -> list[str]:
        """Move a task; returns the ids of pending descendants that became dep_failed."""
        node = self.nodes[task_id]
        previous = node.state
        if previous == state:
            return []
        self._move(node, state)
        self._set_in_flight(node, state.is_active)
        if state == TaskState.COMPLETED:
            self._release_dependents(node)
            return []
        if state in RERUNNABLE_TASK_STATES:
            return self._cascade_from(task_id, include_root=False)
        return []

    def cancel_pending(self, among: Iterable[str] | None = None) -> list[str]:
        """Every pending task not in flight (of `among`, when given) becomes cancelled;
        returns their ids."""
        nodes = self.nodes.values() if among is None else (self.nodes[t] for t in among)
        cancelled = [n.task_id for n in nodes if n.state == TaskState.PENDING and not n.in_flight]
        for task_id in cancelled:
            self._move(self.nodes[task_id], TaskState.CANCELLED)
        return cancelled

    def rerun(self) -> list[str]:
        """Failed, cancelled and dep_failed tasks become pending again; returns their ids."""
        again = [n.task_id for n in self.nodes.values() if n.state in RERUNNABLE_TASK_STATES]
        for task_id in again:
            node = self.nodes[task_id]
            self._move(node, TaskState.PENDING)
            self._set_in_flight(node, False)
        for task_id in again:
            node = self.nodes[task_id]
            node.unmet = sum(1 for dep in node.deps if self.nodes[dep].state != TaskState.COMPLETED)
            if node.unmet == 0:
                self.ready.append(task_id)
        return again

    @property
    def finished(self) -> bool:
        return sum(self.counts[s] for s in TaskState if not s.is_final) == 0

    def in_flight_ids(self) -> list[str]:
        return [n.task_id for n in self.nodes.values() if n.in_flight]

    def _set_in_flight(self, node: Node, value: bool) -> None:
        if node.in_flight != value:
            node.in_flight = value
            self.active += 1 if value else -1

    def _move(self, node: Node, state: TaskState) -> None:
        self.counts[node.state] -= 1
        self.counts[state] += 1
        node.state = state

    def _release_dependents(self, node: Node) -> None:
        for dep_id in node.dependents:
            child = self.nodes[dep_id]
            child.unmet -= 1
            if child.unmet == 0 and child.state == TaskState.PENDING and not child.in_flight:
                self.ready.append(dep_id)

    def _cascade_from(self, root: str, *, include_root: bool) -> list[str]:
        doomed: list[str] = []
        stack = [root] if include_root else list(self.nodes[root].dependents)
        while stack:
            node = self.nodes[stack.pop()]
            if node.state != TaskState.PENDING or node.in_flight:
                continue
            self._move(node, TaskState.DEP_FAILED)
            doomed.append(node.task_id)
            stack.extend(node.dependents)
        return doomed
