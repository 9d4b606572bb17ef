"""Benchmark: what a run's cost (`GET runs/{id}/cost`) costs against reading the run's tasks
(`GET runs/{id}` with tasks), measured in the same run on the same store.

Both read every task of one run from a real SQLite store and build JSON-able dicts; the cost
also prices each task (`scripthut.cost.stored_run_cost`, configured prices, no fetch).

    .venv/bin/python bench/bench_cost.py [--tasks N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scripthut.config import parse_config
from scripthut.cost import Pricing, stored_run_cost
from scripthut.engine.create import record_run
from scripthut.store import Store
from scripthut.workflow.parse import parse_document

REPEATS = 5


def median_seconds(step: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    n = parser.parse_args().tasks
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "backends": [{"name": "local", "type": "local"}],
                "pricing": {"url": "http://127.0.0.1:9/x", "prices": {"normal": 1.0}},
                "settings": {"data_dir": str(Path(tmp) / "data")},
            }
        )
        store = Store.in_data_dir(config.data_dir)
        tasks = [{"id": f"t{i}", "command": "true", "cpus": 1 + i % 4} for i in range(n)]
        run = record_run(store, config, parse_document(tasks)).run
        store.update_tasks(
            [(run.id, f"t{i}", {"started_at": 0.0, "ended_at": float(i)}) for i in range(n)]
        )
        pricing = Pricing(prices={"normal": 1.0})
        read = median_seconds(lambda: [t.to_json() for t in store.iter_tasks(run.id)])
        cost = median_seconds(lambda: stored_run_cost(store, config, pricing, run.id).to_json())
        store.close()
    print(f"{n} tasks: read the tasks {read * 1000:.0f} ms, the cost {cost * 1000:.0f} ms")
    print(f"cost / read = {cost / read:.2f}")


if __name__ == "__main__":
    main()
