"""Benchmark: reading, validating and expanding large workflow documents.

Each (shape, size) case runs in a fresh interpreter so its peak RSS is its own. The
timed step is `parse_document` on an already decoded document (every check, the
wildcard expansion and the cycle check); `+json` also times decoding the JSON text.
Targets: at most 1 s and 300 MB of peak RSS per case. A second part compares the
wildcard expansion with a naive all-pairs `fnmatch` expansion, measured in this run.

    .venv/bin/python bench/bench_workflow.py [--quick]
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from scripthut.workflow.dag import IdIndex, expand_deps
from scripthut.workflow.parse import decode_json, parse_document

TARGET_SECONDS = 1.0
TARGET_MB = 300.0
SIZES = (1_000, 10_000, 100_000)
RATIO_SIZE = 5_000
GROUP_SIZE = 100
REPEATS = 3

Task = dict[str, Any]


def _task(task_id: str, deps: list[str] | None = None) -> Task:
    task: Task = {"id": task_id, "command": f"python run.py --task {task_id}"}
    if deps:
        task["deps"] = deps
    return task


def fan(n: int) -> list[Task]:
    """prep -> n x sim.{i} -> collect (which waits on "sim.*")."""
    sims = [_task(f"sim.{i}", ["prep"]) for i in range(n)]
    return [_task("prep"), *sims, _task("collect", ["sim.*"])]


def grouped(n: int) -> list[Task]:
    """Groups of GROUP_SIZE tasks g{k}.t{i}, a collector per group, one final task."""
    groups = max(1, n // GROUP_SIZE)
    tasks = [_task(f"g{k}.t{i}") for k in range(groups) for i in range(GROUP_SIZE)]
    tasks += [_task(f"collect.g{k}", [f"g{k}.*"]) for k in range(groups)]
    return [*tasks, _task("final", ["collect.*"])]


def chain(n: int) -> list[Task]:
    """t0 <- t1 <- ... <- t{n-1}."""
    return [_task("t0")] + [_task(f"t{i}", [f"t{i - 1}"]) for i in range(1, n)]


SHAPES: dict[str, Callable[[int], list[Task]]] = {"fan": fan, "grouped": grouped, "chain": chain}


def _median_seconds(step: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_case(shape: str, n: int) -> dict[str, Any]:
    """Time and measure one case in this process (called in a fresh interpreter)."""
    doc = SHAPES[shape](n)
    text = json.dumps(doc)
    seconds = _median_seconds(lambda: parse_document(doc))
    json_seconds = _median_seconds(lambda: parse_document(decode_json(text, source="bench")))
    gc.collect()
    tracemalloc.start()
    workflow = parse_document(doc)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    edges = sum(len(deps) for deps in workflow.deps.values())
    return {
        "shape": shape,
        "n": len(doc),
        "edges": edges,
        "seconds": seconds,
        "json_seconds": json_seconds,
        "rss_mb": rss_kb / 1024,
        "parse_mb": traced_peak / 2**20,
    }


def _run_child(shape: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", shape, str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def naive_expand(patterns: dict[str, tuple[str, ...]], ids: list[str]) -> dict[str, list[str]]:
    """Every pattern against every id with fnmatch (the quadratic baseline)."""
    expanded: dict[str, list[str]] = {}
    for task_id, task_patterns in patterns.items():
        merged: dict[str, None] = {}
        for pattern in task_patterns:
            merged.update(dict.fromkeys(m for m in fnmatch.filter(ids, pattern) if m != task_id))
        expanded[task_id] = list(merged)
    return expanded


def compare_expansion(shape: str, n: int) -> tuple[float, float]:
    """Seconds of IdIndex expansion (index build included) and of the naive one."""
    doc = SHAPES[shape](n)
    ids = [task["id"] for task in doc]
    patterns = {task["id"]: tuple(task.get("deps", ())) for task in doc}
    start = time.perf_counter()
    ours, problems = expand_deps(patterns, IdIndex(ids))
    fast = time.perf_counter() - start
    start = time.perf_counter()
    naive = naive_expand(patterns, ids)
    slow = time.perf_counter() - start
    assert not problems
    assert ours == naive, "the two expansions disagree"
    return fast, slow


def _verdict(row: dict[str, Any]) -> str:
    ok = row["seconds"] <= TARGET_SECONDS and row["rss_mb"] <= TARGET_MB
    return "pass" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 100,000-task cases")
    parser.add_argument("--child", nargs=2, metavar=("SHAPE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child[0], int(args.child[1]))))
        return 0
    sizes = SIZES[:-1] if args.quick else SIZES
    print(f"targets: <= {TARGET_SECONDS:.1f} s and <= {TARGET_MB:.0f} MB peak RSS per case")
    header = f"{'shape':<8} {'tasks':>7} {'edges':>7} {'seconds':>8} {'+json s':>8}"
    print(f"{header} {'peak RSS MB':>11} {'parse MB':>9}  result")
    failed = False
    for shape in SHAPES:
        for n in sizes:
            row = _run_child(shape, n)
            verdict = _verdict(row)
            failed |= verdict != "pass"
            print(
                f"{row['shape']:<8} {row['n']:>7} {row['edges']:>7} {row['seconds']:>8.3f} "
                f"{row['json_seconds']:>8.3f} {row['rss_mb']:>11.1f} {row['parse_mb']:>9.1f}  "
                f"{verdict}"
            )
    print(f"\nwildcard expansion at {RATIO_SIZE} tasks, IdIndex vs naive all-pairs fnmatch:")
    for shape in SHAPES:
        fast, slow = compare_expansion(shape, RATIO_SIZE)
        print(
            f"  {shape:<8} IdIndex {fast * 1e3:8.2f} ms   naive {slow:7.3f} s   {slow / fast:8.0f}x"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
