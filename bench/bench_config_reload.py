"""What watching and layering the configuration costs, against baselines of the same run.

1. The watcher's look at the files (`ConfigSource.signature()`, once a second in the server)
   against one `os.stat` of the global file: the ratio is how many stats one look is worth.
2. The configuration for a run's folder when its project file has not changed
   (`Config.for_folder`, a cache hit: a walk up the folders and one stat) against reading
   and validating both files (`ConfigSource.load()`).
3. `Engine.reload` (the files already read) with R active runs on the local backend (env
   rules rebuilt for each) against the same reload with no run.

Targets: (1) under 100 stats; (2) a cache hit under 5% of a full read; (3) reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from scripthut.config import ConfigSource
from scripthut.engine.engine import Engine
from scripthut.store import Store
from scripthut.workflow.parse import parse_document


def per_call(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def write_files(base: Path) -> tuple[Path, Path]:
    global_file = base / "xdg" / "scripthut" / "scripthut.yaml"
    global_file.parent.mkdir(parents=True)
    backends = [{"name": "local", "type": "local", "max_concurrent": 1}]
    backends += [
        {"name": f"hpc{i}", "type": "pbs", "ssh": {"host": "h", "user": "u"}} for i in range(20)
    ]
    workflows = [{"name": f"w{i}", "backend": "local", "command": "true"} for i in range(50)]
    data = {"backends": backends, "workflows": workflows, "settings": {"data_dir": "data"}}
    global_file.write_text(yaml.safe_dump(data))
    repo = base / "a" / "b" / "c" / "repo"
    (repo / "deep" / "er").mkdir(parents=True)
    (repo / "scripthut.yaml").write_text(
        yaml.safe_dump({"env": [{"set": {f"V{i}": str(i)}} for i in range(50)]})
    )
    return global_file, repo


async def reload_seconds(source: ConfigSource, runs: int, rounds: int) -> float:
    config = source.load()
    store = Store.in_data_dir(config.data_dir / f"runs{runs}")
    engine = Engine(config, store)
    await engine.start()
    try:
        doc = [{"id": f"t{i}", "command": "sleep 60"} for i in range(3)]
        for _ in range(runs):
            engine.submit(parse_document(doc), backend="local")
        await asyncio.sleep(0.5)
        configs = [source.load() for _ in range(rounds)]  # reading the files is measured apart
        start = time.perf_counter()
        for new in configs:
            await engine.reload(new)
        elapsed = (time.perf_counter() - start) / rounds
        for run_id in list(engine.runs):
            await engine.cancel(run_id)
        return elapsed
    finally:
        await engine.stop()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        global_file, repo = write_files(base)
        os.environ["XDG_CONFIG_HOME"] = str(base / "xdg")
        os.environ.pop("SCRIPTHUT_CONFIG", None)
        source = ConfigSource(start=repo / "deep" / "er")
        config = source.load()
        stat = per_call(lambda: os.stat(global_file), args.n)
        look = per_call(source.signature, args.n)
        ratio = look / stat
        print(f"watcher look {look * 1e6:.1f} us = {ratio:.1f} x one stat ({stat * 1e6:.2f} us)")
        other = base / "a"
        config.for_folder(repo)
        hit = per_call(lambda: config.for_folder(repo / "deep"), args.n)
        full = per_call(source.load, max(20, args.n // 100))
        print(
            f"for_folder (unchanged file) {hit * 1e6:.1f} us = {hit / full:.4f} x a full read "
            f"({full * 1e3:.2f} ms); no project file: "
            f"{per_call(lambda: config.for_folder(other), args.n) * 1e6:.1f} us"
        )
        empty = asyncio.run(reload_seconds(source, 0, 10))
        busy = asyncio.run(reload_seconds(source, args.runs, 10))
        print(
            f"Engine.reload: {empty * 1e3:.2f} ms with no run, {busy * 1e3:.2f} ms with "
            f"{args.runs} active runs = {busy / empty:.1f} x"
        )


if __name__ == "__main__":
    main()
