"""Estimated cost of tasks and runs: `elapsed_hours * (task_cpus / instance_vcpus) * price`.

A task's partition is priced through `pricing.partitions` (partition -> instance type):
the instance type's hourly price and vCPUs come from the price table (instances.vantage.sh
data for `pricing.region` and `pricing.price_type`, or the offline table, see
scripthut.prices); `pricing.prices` (instance type or partition -> price per hour) overrides
it. A task is charged its share of the instance: its CPUs over the instance's vCPUs (the
whole price when the vCPUs are not known, as for a price listed under a partition name).
A task row that names its own `instance_type` (a task that had an instance to itself) is
priced by that type, whole. Hours run from `started_at` to `ended_at` (to `now` while it
runs). A task whose partition has no price is "not costed"; a priced task that never
started costs 0. Only the task's latest attempt is counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scripthut.config import Config, PricingConfig
from scripthut.prices import PriceTable, load_prices

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Priced:
    price: float  # per hour, for the whole instance
    listed: str  # the instance type (or partition) the price is listed under
    vcpus: int | None  # the instance's vCPUs, when known


@dataclass(frozen=True, slots=True)
class Pricing:
    """Hourly prices by instance type or partition, partitions' instance types, a price table."""

    prices: Mapping[str, float] = field(default_factory=dict)
    partitions: Mapping[str, str] = field(default_factory=dict)
    table: PriceTable | None = None

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

    @classmethod
    def load(cls, config: Config) -> Pricing:
        """The config's pricing with its price table (live, cached 24 h, or offline)."""
        section = config.pricing
        if section is None:
            return cls()
        table = load_prices(
            config.data_dir, region=section.region, price_type=section.price_type, url=section.url
        )
        return cls(dict(section.prices), dict(section.partitions), table)

    @property
    def active(self) -> bool:
        """True when anything can be priced."""
        return bool(self.prices or self.partitions)

    @property
    def source(self) -> str:
        """Where prices come from, for views: "offline prices" when the live data was not had."""
        return self.table.describe() if self.table is not None else "configured prices"

    def instance(self, instance_type: str) -> Priced | None:
        """An instance type's price: the configured one, else the table's."""
        known = self.table.get(instance_type) if self.table is not None else None
        vcpus = known.vcpus if known is not None else None
        if instance_type in self.prices:
            return Priced(float(self.prices[instance_type]), instance_type, vcpus)
        if known is not None:
            return Priced(known.price, instance_type, vcpus)
        return None

    def priced(self, partition: str | None) -> Priced | None:
        """The price that applies to a partition; None when unpriced."""
        if partition is None:
            return None
        instance = self.partitions.get(partition)
        if instance is not None and (found := self.instance(instance)) is not None:
            return found
        if partition in self.prices:
            return Priced(float(self.prices[partition]), partition, None)
        return None

    def price(self, partition: str | None) -> tuple[float, str] | None:
        """(price per hour, what it was listed under) for a partition; None when unpriced."""
        found = self.priced(partition)
        return None if found is None else (found.price, found.listed)


@dataclass(frozen=True, slots=True)
class TaskCost:
    task: str
    partition: str | None
    priced_as: str | None  # the instance type (or partition) whose price applies
    hours: float
    price: float | None  # per hour, for the whole instance
    cost: float | None  # None: not costed
    share: float = 1.0  # task CPUs / instance vCPUs

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
            "share": self.share,
            "cost": self.cost,
        }


@dataclass(frozen=True, slots=True)
class RunCost:
    total: float
    costed: int
    tasks: int
    items: list[TaskCost]

    source: str = "configured prices"

    @property
    def summary(self) -> str:
        text = f"${self.total:,.2f} ({self.costed} of {self.tasks} tasks costed)"
        return f"{text}, offline prices" if self.source == "offline prices" else text

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "costed": self.costed,
            "tasks": self.tasks,
            "source": self.source,
            "summary": self.summary,
            "items": [item.to_json() for item in self.items],
        }


def task_hours(started_at: float | None, ended_at: float | None, now: float) -> float:
    """Hours from start to end (to `now` while running); 0 before the start."""
    if started_at is None:
        return 0.0
    end = ended_at if ended_at is not None else now
    return max(0.0, end - started_at) / SECONDS_PER_HOUR


def task_cost(
    task: Mapping[str, Any], partition: str | None, pricing: Pricing, now: float | None = None
) -> TaskCost:
    """One task's estimated cost from its times (`started_at`, `ended_at`), CPUs and partition."""
    hours = task_hours(
        task.get("started_at"), task.get("ended_at"), time.time() if now is None else now
    )
    own = task.get("instance_type")
    priced = pricing.instance(str(own)) if own else pricing.priced(partition)
    task_id = str(task.get("id", task.get("task", "")))
    if priced is None:
        return TaskCost(task_id, partition, None, hours, None, None)
    share = 1.0
    if not own and priced.vcpus:
        share = max(1, int(task.get("cpus") or 1)) / priced.vcpus
    cost = hours * share * priced.price
    return TaskCost(task_id, partition, priced.listed, hours, priced.price, cost, share)


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
    return RunCost(total, len(costed), len(items), items, pricing.source)
