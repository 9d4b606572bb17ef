"""A run's cost from what the store recorded: the one function every view calls.

Batch tasks are priced by their job queue (the configured one when they name none), EC2
tasks by the instance type they were launched as, charged whole, for their real running
time; the offline table is used (and said) when the price data cannot be fetched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scripthut.config import parse_config
from scripthut.cost import Pricing, stored_run_cost, task_basis
from scripthut.engine.create import record_run
from scripthut.store import Store
from scripthut.workflow.parse import parse_document

UNREACHABLE = "http://127.0.0.1:9/instances.json"  # refused at once: offline prices


def config(tmp_path: Path, pricing: dict[str, Any] | None) -> Any:
    doc: dict[str, Any] = {
        "backends": [
            {
                "name": "ec2",
                "type": "ec2",
                "aws": {"region": "us-east-1"},
                "ami": "ami-12345678",
                "subnet_id": "subnet-1",
                "default_image": "img:1",
                "instance_types": {"default": "c5.xlarge", "big": "m5.4xlarge"},
            },
            {
                "name": "batch",
                "type": "batch",
                "aws": {"region": "us-east-1", "job_queue": "cpu-queue"},
                "job_definition": "def",
            },
            {"name": "local", "type": "local", "cpus": 2},
        ],
        "settings": {"data_dir": str(tmp_path / "data")},
    }
    if pricing is not None:
        doc["pricing"] = {"url": UNREACHABLE, **pricing}
    return parse_config(doc)


def recorded(store: Store, cfg: Any, backend: str, tasks: list[dict[str, Any]]) -> str:
    specs = [{k: v for k, v in t.items() if k not in ("started_at", "ended_at")} for t in tasks]
    run = record_run(store, cfg, parse_document(specs), backend=backend).run
    times = [(t["id"], {k: t[k] for k in ("started_at", "ended_at") if k in t}) for t in tasks]
    store.update_tasks([(run.id, task, fields) for task, fields in times if fields])
    return run.id


def test_task_basis_follows_the_backend(tmp_path: Path) -> None:
    cfg = config(tmp_path, None)
    ec2, batch, local = cfg.backends
    assert task_basis({"partition": "big", "cpus": 2}, ec2).instance_type == "m5.4xlarge"
    assert task_basis({}, ec2).instance_type == "c5.xlarge"
    assert task_basis({"partition": "nope"}, ec2).instance_type == "c5.xlarge"
    assert task_basis({}, batch).partition == "cpu-queue"
    assert task_basis({"partition": "gpu-queue"}, batch).partition == "gpu-queue"
    assert (task_basis({"cpus": "x"}, local).partition, task_basis({}, local).cpus) == ("normal", 1)
    assert task_basis({"partition": "p"}, None).instance_type is None  # backend removed


def test_ec2_tasks_cost_their_own_instance_for_their_running_time(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"prices": {"m5.4xlarge": 1.0}})
    store = Store.in_data_dir(cfg.data_dir)
    run_id = recorded(
        store,
        cfg,
        "ec2",
        [
            {"id": "small", "command": "true", "cpus": 1, "started_at": 0.0, "ended_at": 3600.0},
            {"id": "big", "command": "true", "partition": "big", "started_at": 0.0},
            {"id": "waiting", "command": "true"},
        ],
    )
    pricing = Pricing.load(cfg)
    assert pricing.source == "offline prices" and pricing.active
    cost = stored_run_cost(store, cfg, pricing, run_id, now=1800.0)
    items = {i.task: i for i in cost.items}
    # c5.xlarge from the offline table (0.17/h), whole although the task asked 1 CPU of 4
    assert (items["small"].priced_as, items["small"].share) == ("c5.xlarge", 1.0)
    assert items["small"].cost == pytest.approx(0.17)
    assert items["big"].cost == pytest.approx(0.5)  # running: to now, the configured price
    assert items["waiting"].cost == 0.0
    assert cost.summary == "$0.67 (3 of 3 tasks costed), offline prices"
    store.close()


def test_batch_tasks_are_priced_by_their_queue_and_cpu_share(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"partitions": {"cpu-queue": "c5.xlarge"}})
    store = Store.in_data_dir(cfg.data_dir)
    run_id = recorded(
        store,
        cfg,
        "batch",
        [
            {"id": "a", "command": "true", "cpus": 2, "started_at": 0.0, "ended_at": 7200.0},
            {"id": "b", "command": "true", "partition": "other", "started_at": 0.0},
        ],
    )
    cost = stored_run_cost(store, cfg, Pricing.load(cfg), run_id, now=100.0)
    items = {i.task: i for i in cost.items}
    assert items["a"].cost == pytest.approx(2 * 0.5 * 0.17)  # 2 of c5.xlarge's 4 vCPUs
    assert not items["b"].costed  # a queue without a price
    assert (cost.costed, cost.tasks) == (1, 2)
    store.close()


def test_without_a_pricing_section_nothing_is_priced(tmp_path: Path) -> None:
    cfg = config(tmp_path, None)
    store = Store.in_data_dir(cfg.data_dir)
    run_id = recorded(store, cfg, "local", [{"id": "a", "command": "true", "started_at": 0.0}])
    pricing = Pricing.load(cfg)
    cost = stored_run_cost(store, cfg, pricing, run_id, now=10.0)
    assert not pricing.active and (cost.costed, cost.tasks) == (0, 1)
    store.close()
