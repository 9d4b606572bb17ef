"""Looking up 1,000 cacheable tasks on the rig over SSH: one script for the batch (ours)
against one round trip per task (the baseline), measured in the same run.

Each task has one small input file in its own folder on the cluster; half of the keys are in
the directory store (hits, restored), half are not (misses). Ours: the engine's lookup script
(`backends/cache_store.py`) for all 1,000 tasks at once — hashing, key, look-up and restore
on the cluster. Baseline: the same script for one task at a time, timed for --sample tasks
and scaled to N. Prints round trips and seconds for each, and the ratio baseline / ours.

Run as root with the rig up (`bash tests/rig/slurm.sh up`):

    .venv/bin/python bench/bench_cache_lookup.py [--tasks 1000] [--sample 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from bench_slurm_submit import rig_env
from scripthut.backends.cache_store import (
    LOOKUP_SCRIPT,
    LookupRequest,
    lookup_args,
    parse_reply,
    script_bytes,
)
from scripthut.backends.slurm import SlurmBackend
from scripthut.transport import SSHTransport
from scripthut.workflow.caching import final_key

PREFIX = "0" * 64


def setup_script(base: str, tasks: int) -> str:
    """Input folders for every task; entries in the store for the even ones."""
    return f"""
set -e
base=$HOME/{base}
mkdir -p "$base/store"
for i in $(seq 0 {tasks - 1}); do
    mkdir -p "$base/t$i"; printf 'input %s\\n' "$i" > "$base/t$i/in.txt"
done
for i in $(seq 0 2 {tasks - 1}); do
    sums=$(cd "$base/t$i" && sha256sum -- in.txt)
    key=$(printf '%s\\n%s\\n' {PREFIX} "$sums" | sha256sum | cut -c1-64)
    mkdir -p "$base/store/$key/files"; printf 'out %s\\n' "$i" > "$base/store/$key/files/out.txt"
    (cd "$base/store/$key/files" && sha256sum -- out.txt > ../sums)
done
"""


async def main(args: argparse.Namespace) -> None:
    rig = rig_env()
    transport = SSHTransport(
        host=rig["SSH_HOST"],
        port=int(rig["SSH_PORT"]),
        user=rig["SSH_USER"],
        key_path=rig["SSH_KEY"],
        known_hosts=rig["KNOWN_HOSTS"],
    )
    backend = SlurmBackend("rig", transport=transport, max_concurrent=8, log_dir="~/bench-logs")
    await backend.start()
    base = f"bench-cache-{uuid.uuid4().hex[:8]}"
    try:
        await transport.run_script(setup_script(base, args.tasks), timeout=600)
        requests = [
            LookupRequest(str(i), f"~/{base}/t{i}", PREFIX, ("in.txt",)) for i in range(args.tasks)
        ]
        root = f"~/{base}/store"
        before = transport.stats.commands
        started = time.perf_counter()
        data = await backend.run_store_script(
            script_bytes(LOOKUP_SCRIPT, lookup_args(root, requests, True))
        )
        ours = time.perf_counter() - started
        ours_trips = transport.stats.commands - before
        reply = parse_reply(data)
        assert len(reply.hits) == (args.tasks + 1) // 2, len(reply.hits)
        assert len(reply.keys) == args.tasks
        sums = reply.inputs["1"]
        assert reply.keys["1"] == final_key(PREFIX, sums)

        before = transport.stats.commands
        started = time.perf_counter()
        for request in requests[: args.sample]:
            await backend.run_store_script(
                script_bytes(LOOKUP_SCRIPT, lookup_args(root, [request], True))
            )
        per_task = (time.perf_counter() - started) / args.sample
        base_trips = (transport.stats.commands - before) // args.sample * args.tasks
    finally:
        await transport.run(["rm", "-rf", "--", base])
        await backend.close()
    baseline = per_task * args.tasks
    print(f"{args.tasks} cacheable tasks, {len(reply.hits)} hits (restored), rig over SSH")
    print(f"  ours (one script):      {ours_trips:5d} round trip(s) {ours:8.2f} s")
    print(f"  baseline (per task):    {base_trips:5d} round trips   {baseline:8.2f} s (scaled)")
    print(f"  ratio baseline / ours:  {baseline / ours:8.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
