"""Estimated cost of tasks and runs from the pricing table of scripthut.yaml.

The cost of a task is the hours between its `started_at` and `ended_at` (up to `now`
while it runs) times the hourly price of its partition. A partition is priced through
`pricing.partitions` (partition -> instance type) and `pricing.prices` (instance type
or partition -> price per hour): the instance type's price when the partition maps to
one that has a price, else a price listed under the partition's own name. A task whose
partition has no price is "not costed"; a priced task that never started costs 0.
Only the task's latest attempt is counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scripthut.config import PricingConfig

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Pricing:
    """Hourly prices by instance type or partition, and partitions' instance types."""

    prices: Mapping[str, float] = field(default_factory=dict)
    partitions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, value: Pricing | PricingConfig | Mapping[str, Any] | None) -> Pricing:
        """From the config model, a `{"prices": ..., "partitions": ...}` mapping, or None."""
        if value is None:
            return cls()
        if isinstance(value, Pricing):
            return value
        if isinstance(value, PricingConfig):
            return cls(dict(value.prices), dict(value.partitions))
        prices = {str(k): float(v) for k, v in dict(value.get("prices") or {}).items()}
        partitions = {str(k): str(v) for k, v in dict(value.get("partitions") or {}).items()}
        return cls(prices, partitions)

    def price(self, partition: str | None) -> tuple[float, str] | None:
        """(price per hour, what it was listed under) for a partition; None when unpriced."""
        if partition is None:
            return None
        instance = self.partitions.get(partition)
        if instance is not None and instance in self.prices:
            return float(self.prices[instance]), instance
        if partition in self.prices:
            return float(self.prices[partition]), partition
        return None


@dataclass(frozen=True, slots=True)
class TaskCost:
    task: str
    partition: str | None
    priced_as: str | None  # the instance type (or partition) whose price applies
    hours: float
    price: float | None  # per hour
    cost: float | None  # None: not costed

    @property
    def costed(self) -> bool:
        return self.cost is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "partition": self.partition,
            "priced_as": self.priced_as,
            "hours": self.hours,
            "price": self.price,
            "cost": self.cost,
        }


@dataclass(frozen=True, slots=True)
class RunCost:
    total: float
    costed: int
    tasks: int
    items: list[TaskCost]

    @property
    def summary(self) -> str:
        return f"${self.total:,.2f} ({self.costed} of {self.tasks} tasks costed)"


def task_hours(started_at: float | None, ended_at: float | None, now: float) -> float:
    """Hours from start to end (to `now` while running); 0 before the start."""
    if started_at is None:
        return 0.0
    end = ended_at if ended_at is not None else now
    return max(0.0, end - started_at) / SECONDS_PER_HOUR


def task_cost(
    task: Mapping[str, Any], partition: str | None, pricing: Pricing, now: float | None = None
) -> TaskCost:
    """One task's estimated cost from its times (`started_at`, `ended_at`) and partition."""
    hours = task_hours(
        task.get("started_at"), task.get("ended_at"), time.time() if now is None else now
    )
    priced = pricing.price(partition)
    task_id = str(task.get("id", task.get("task", "")))
    if priced is None:
        return TaskCost(task_id, partition, None, hours, None, None)
    price, listed = priced
    return TaskCost(task_id, partition, listed, hours, price, hours * price)


def run_cost(
    tasks: Iterable[Mapping[str, Any]],
    partitions: Mapping[str, str | None],
    pricing: Pricing,
    now: float | None = None,
) -> RunCost:
    """Every task's cost and the run's total over the costed ones."""
    moment = time.time() if now is None else now
    items = [task_cost(t, partitions.get(str(t.get("id"))), pricing, moment) for t in tasks]
    costed = [i for i in items if i.cost is not None]
    total = sum(i.cost for i in costed if i.cost is not None)
    return RunCost(total, len(costed), len(items), items)
