"""A sweep on AWS Batch (a moto server) through the real engine: arrays against plain jobs.

Prints the SubmitJob calls, elements per array, bundle bytes per element and the time until
every task is accepted, arrays on against arrays off (the baseline, in the same run).
moto answers in microseconds; against AWS each SubmitJob is a round trip and counts
against the account's 50 SubmitJob per second.

    .venv/bin/python bench/bench_batch_arrays.py [tasks]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' AWS rig

from tests.aws import batch_rig as rig
from tests.aws.moto_rig import running_moto

from scripthut.backends.batch_arrays import BUNDLE_VAR
from scripthut.backends.registry import BackendRegistry
from scripthut.config import parse_config
from scripthut.engine.engine import Engine
from scripthut.store import Store
from scripthut.workflow.parse import parse_document


def sweep(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"sim.{i}",
            "command": 'python simulate.py --seed "$SEED" --out results/',
            "env": [{"set": {"SEED": str(1000 + i)}}],
        }
        for i in range(count)
    ]


async def accepted(count: int, arrays: bool, data: Path) -> dict[str, Any]:
    backend = rig.backend(arrays=arrays, max_concurrent=count)
    sent: list[dict[str, Any]] = []
    backend._batch().meta.events.register(
        "provide-client-params.batch.SubmitJob", lambda params, **_: sent.append(dict(params))
    )
    cfg = parse_config(
        {
            "backends": [
                {
                    "name": "aws",
                    "type": "batch",
                    "aws": {"region": rig.REGION, "job_queue": rig.QUEUE},
                    "job_definition": rig.DEFINITION,
                    "max_concurrent": count,
                }
            ],
            "settings": {"data_dir": str(data), "poll_interval": 60},
        }
    )
    store = Store.in_data_dir(cfg.data_dir)
    registry = BackendRegistry(cfg)
    registry.add(backend)
    engine = Engine(cfg, store, registry=registry, min_poll_interval=0.2)
    await engine.start()
    try:
        start = time.perf_counter()
        run = engine.submit(parse_document(sweep(count)), name="sweep")
        while not all(t.job_id for t in store.tasks(run.id)):
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - start
    finally:
        await engine.stop()
        store.close()
    arrays_sent = [a for a in sent if "arrayProperties" in a]
    sizes = [a["arrayProperties"]["size"] for a in arrays_sent]
    bundle = sum(
        len(e["value"])
        for a in arrays_sent
        for e in a["containerOverrides"]["environment"]
        if e["name"] == BUNDLE_VAR
    )
    overrides = [len(json.dumps(a["containerOverrides"])) for a in arrays_sent]
    return {
        "calls": len(sent),
        "sizes": sizes,
        "bytes_per_element": bundle / max(1, sum(sizes)),
        "largest_overrides": max(overrides, default=0),
        "seconds": elapsed,
    }


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp, running_moto(Path(tmp)) as moto:
        os.environ.update(moto.env)
        rig.make_queues()
        plain = asyncio.run(accepted(count, False, Path(tmp) / "plain"))
        arrays = asyncio.run(accepted(count, True, Path(tmp) / "arrays"))
    print(f"{count} tasks, every one accepted:")
    print(f"  plain jobs: {plain['calls']} SubmitJob, {plain['seconds']:.2f} s (baseline)")
    print(
        f"  arrays:     {arrays['calls']} SubmitJob (sizes {arrays['sizes']}), "
        f"{arrays['seconds']:.2f} s ({plain['seconds'] / arrays['seconds']:.1f}x faster)"
    )
    print(
        f"  bundle: {arrays['bytes_per_element']:.0f} bytes per element; largest overrides "
        f"{arrays['largest_overrides']} characters"
    )


if __name__ == "__main__":
    main()
