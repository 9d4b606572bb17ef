"""The cost model: hours between start and end times the partition's hourly price."""

from __future__ import annotations

import pytest

from scripthut.config import parse_config
from scripthut.widgets.cost import Pricing, run_cost, task_cost, task_hours

PRICING = Pricing(
    prices={"c5.xlarge": 0.17, "p3.2xlarge": 3.06, "standard": 0.5},
    partitions={"cpu": "c5.xlarge", "gpu": "p3.2xlarge", "orphan": "no-such-type"},
)


def test_hours_run_from_start_to_end_or_to_now() -> None:
    assert task_hours(1000.0, 1000.0 + 5400, now=99999.0) == pytest.approx(1.5)
    assert task_hours(1000.0, None, now=1000.0 + 1800) == pytest.approx(0.5)
    assert task_hours(None, None, now=5000.0) == 0.0
    assert task_hours(2000.0, 1000.0, now=0.0) == 0.0  # a clock jump never costs money


def test_a_partition_is_priced_through_its_instance_type_else_by_its_own_name() -> None:
    assert PRICING.price("gpu") == (3.06, "p3.2xlarge")
    assert PRICING.price("standard") == (0.5, "standard")
    assert PRICING.price("orphan") is None  # maps to a type without a price
    assert PRICING.price("nowhere") is None
    assert PRICING.price(None) is None


def test_task_cost() -> None:
    gpu = task_cost({"id": "fit", "started_at": 0.0, "ended_at": 7200.0}, "gpu", PRICING, now=1e9)
    assert gpu.cost == pytest.approx(6.12)
    assert (gpu.priced_as, gpu.price, gpu.costed) == ("p3.2xlarge", 3.06, True)
    running = task_cost({"id": "r", "started_at": 100.0, "ended_at": None}, "cpu", PRICING, 3700.0)
    assert running.cost == pytest.approx(0.17)
    waiting = task_cost({"id": "w", "started_at": None}, "cpu", PRICING, now=5.0)
    assert (waiting.cost, waiting.costed) == (0.0, True)
    unpriced = task_cost({"id": "u", "started_at": 0.0, "ended_at": 3600.0}, "debug", PRICING)
    assert (unpriced.cost, unpriced.costed, unpriced.hours) == (None, False, 1.0)


def test_run_cost_counts_what_could_be_costed() -> None:
    tasks = [
        {"id": "a", "started_at": 0.0, "ended_at": 3600.0},
        {"id": "b", "started_at": 0.0, "ended_at": 1800.0},
        {"id": "c", "started_at": 0.0, "ended_at": 3600.0},
        {"id": "d", "started_at": None, "ended_at": None},
    ]
    partitions = {"a": "gpu", "b": "cpu", "c": "debug", "d": "cpu"}
    cost = run_cost(tasks, partitions, PRICING, now=10_000.0)
    assert cost.total == pytest.approx(3.06 + 0.085)
    assert (cost.costed, cost.tasks) == (3, 4)
    assert cost.summary == "$3.15 (3 of 4 tasks costed)"
    assert [i.task for i in cost.items if not i.costed] == ["c"]


def test_pricing_from_the_config_and_from_a_mapping() -> None:
    config = parse_config(
        {
            "backends": [{"name": "local", "type": "local"}],
            "pricing": {"prices": {"m5.large": 0.096}, "partitions": {"normal": "m5.large"}},
        },
        source="test",
    )
    from_config = Pricing.of(config.pricing)
    assert from_config.price("normal") == (0.096, "m5.large")
    assert Pricing.of({"prices": {"x": 1}}).price("x") == (1.0, "x")
    assert Pricing.of(None).price("normal") is None
