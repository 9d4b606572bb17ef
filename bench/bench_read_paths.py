"""Benchmark: what the input checks and secret masking add to the read and write paths.

Each figure is a ratio against a baseline measured in the same run:
- decoding a workflow body: `parse.decode_json` (repeated keys, 64-bit integers, finite
  numbers, lone surrogates) against `json.loads` with the repeated-keys hook alone, on a
  clean document (the common case: one regex scan) and on one whose text triggers the
  exact walk;
- a run's task list: `TaskRecord.to_json` (names and reasons URL-masked) against the same
  dicts built without masking;
- masking a whole workflow document (as export and dry-run do) against `json.dumps` of it.

    .venv/bin/python bench/bench_read_paths.py [--tasks N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from scripthut.secrets import SecretMasker, document_pairs, mask_document
from scripthut.states import TaskState
from scripthut.store.records import TaskRecord
from scripthut.workflow.parse import decode_json

REPEATS = 5


def median_seconds(step: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def workflow(n: int, *, suspect: bool = False) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [
        {
            "id": f"sim.{i}",
            "command": f"python run.py --seed {i}",
            "deps": ["prep"],
            "env": [{"set": {"API_TOKEN": "tok-1234abcd", "N": str(i)}}] if i % 10 == 0 else [],
        }
        for i in range(n)
    ]
    if suspect:
        tasks[-1]["command"] = "echo 12345678901234567890"  # 20 digits: the exact walk runs
    return {
        "env": [{"set": {"SLACK_URL": "https://hooks.slack.com/services/T/B/x"}}],
        "tasks": tasks,
    }


def repeated_keys_hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """What decoding cost before the value checks: the repeated-keys hook alone."""
    obj = dict(items)
    if len(obj) != len(items):
        raise ValueError("repeated key")
    return obj


def plain_json(task: TaskRecord) -> dict[str, Any]:
    return {"run": task.run_id, "id": task.task_id, "name": task.spec.get("name", task.task_id),
            "state": task.state.value, "deps": task.deps, "attempt": task.attempt,
            "job_id": task.job_id, "exit_code": task.exit_code, "reason": task.reason,
            "submitted_at": task.submitted_at, "started_at": task.started_at,
            "ended_at": task.ended_at, "generated_by": task.generated_by}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    n = parser.parse_args().tasks
    clean, suspect = json.dumps(workflow(n)), json.dumps(workflow(n, suspect=True))
    base = median_seconds(lambda: json.loads(clean, object_pairs_hook=repeated_keys_hook))
    checked = median_seconds(lambda: decode_json(clean, source="bench"))
    walked = median_seconds(lambda: decode_json(suspect, source="bench"))
    print(f"{n:,} tasks, {len(clean) / 2**20:.1f} MiB of JSON; medians of {REPEATS}")
    print(f"decode  loads+key check {base:.3f} s   decode_json {checked:.3f} s ", end="")
    print(f"({checked / base:.2f}x); with the exact walk {walked:.3f} s ({walked / base:.2f}x)")

    records = [
        TaskRecord("r", f"sim.{i}", i, {"id": f"sim.{i}", "command": "x"}, ["prep"],
                   TaskState.COMPLETED, reason=None if i % 3 else "exit code 1")
        for i in range(n)
    ]  # fmt: skip
    base = median_seconds(lambda: [plain_json(t) for t in records])
    masked = median_seconds(lambda: [t.to_json() for t in records])
    print(f"tasks   unmasked dicts {base:.3f} s   to_json {masked:.3f} s ({masked / base:.2f}x)")

    doc = workflow(n)
    base = median_seconds(lambda: json.dumps(doc))
    masking = median_seconds(lambda: mask_document(doc, SecretMasker(document_pairs(doc))))
    print(
        f"export  json.dumps {base:.3f} s   mask_document {masking:.3f} s ({masking / base:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
