"""1000 trivial tasks on the local backend at max_concurrent 8, end to end through the engine
(validation, store, task scripts, events), against `xargs -P 8` running the same commands,
both measured in the same run. Target: engine wall time <= 2x xargs.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripthut.config import parse_config
from scripthut.engine.engine import Engine
from scripthut.states import RunState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document

TASKS = 1000
PARALLEL = 8
TARGET = 2.0


def commands(out: Path) -> list[str]:
    return [f"echo {i} > {out}/{i}.txt" for i in range(TASKS)]


def xargs_seconds(tmp: Path) -> float:
    out = tmp / "xargs"
    out.mkdir()
    lines = "\0".join(commands(out)) + "\0"
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-0", "-P", str(PARALLEL), "-n", "1", "bash", "-c"],
        input=lines.encode(),
        check=True,
    )
    return time.perf_counter() - started


def engine_seconds(tmp: Path) -> float:
    out = tmp / "engine"
    out.mkdir()
    config = parse_config(
        {
            "backends": [
                {"name": "local", "type": "local", "max_concurrent": PARALLEL, "cpus": PARALLEL}
            ],
            "settings": {"data_dir": str(tmp / "data"), "poll_interval": 5},
        }
    )
    doc = [{"id": f"t{i}", "command": c} for i, c in enumerate(commands(out))]

    async def main() -> float:
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store)
        await engine.start()
        started = time.perf_counter()
        record = engine.submit(parse_document(doc))
        final = await engine.wait(record.id)
        elapsed = time.perf_counter() - started
        await engine.stop()
        assert final.state == RunState.COMPLETED, final.state
        assert len(list(out.iterdir())) == TASKS
        store.close()
        return elapsed

    return asyncio.run(main())


def main() -> int:
    xargs, engine = [], []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            xargs.append(xargs_seconds(Path(tmp)))
        with tempfile.TemporaryDirectory() as tmp:
            engine.append(engine_seconds(Path(tmp)))
    ratio = statistics.median(engine) / statistics.median(xargs)
    print(f"{TASKS} trivial tasks, {PARALLEL} at a time")
    print(
        f"xargs -P {PARALLEL}: median {statistics.median(xargs):.2f} s  "
        f"{[round(x, 2) for x in xargs]}"
    )
    print(f"engine:     median {statistics.median(engine):.2f} s  {[round(x, 2) for x in engine]}")
    print(
        f"ratio engine/xargs: {ratio:.2f}x (target <= {TARGET}x): "
        f"{'PASS' if ratio <= TARGET else 'FAIL'}"
    )
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
