"""A run cancelled while its cluster is unreachable ends at once; a job that turns up for
its unconfirmed submission is cancelled when the cluster answers again, by this engine
or by the next one.

The cluster is the real rig reached through a TCP relay on 127.0.0.1 that the test closes
(an outage: connections refused) and opens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from scripthut.config import parse_config
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.slurm.conftest import SlurmRig
from tests.slurm.test_slurm_backend import rig_backend_entry


class Relay:
    """Forwards 127.0.0.1:<port> to the rig's sshd while open."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for pipe in list(self.pipes):
            pipe.cancel()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()


def relay_config(rig: SlurmRig, relay: Relay, tmp_path: Path) -> Any:
    known = tmp_path / "known_hosts"
    key = rig.known_hosts.read_text().splitlines()[0].split(" ", 1)[1]
    known.write_text(f"[127.0.0.1]:{relay.port} {key}\n")
    entry = rig_backend_entry(rig, "ssh", "~/hut-tests/outage", max_concurrent=5)
    entry["ssh"] |= {"port": relay.port, "known_hosts": str(known), "connect_timeout": 5}
    data = {"backends": [entry], "settings": {"data_dir": str(tmp_path / "data")}}
    return parse_config(data, source="test")


SBATCH = ["sbatch", "--parsable", "-p", "debug", "-o", "/dev/null"]


def sbatch_for_tag(rig: SlurmRig, tag: str) -> str:
    """The job an unconfirmed submission may have created: carrying the attempt's tag."""
    done = subprocess.run(
        rig.ssh_argv(shlex.join([*SBATCH, f"--comment={tag}", "--wrap", "sleep 300"])),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().split(";")[0]


def slurm_state(rig: SlurmRig, job_id: str) -> str:
    done = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30
    )
    for part in done.stdout.split():
        if part.startswith("JobState="):
            return part.split("=", 1)[1]
    return "gone"


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def test_a_job_found_after_an_outage_is_cancelled_by_the_next_engine(
    slurm_rig: SlurmRig, tmp_path: Path
) -> None:
    doc = [{"id": "long", "command": "sleep 300", "partition": "debug", "memory": "100M"}]

    async def main() -> None:
        relay = Relay(slurm_rig.ssh_port)
        await relay.open()
        config = relay_config(slurm_rig, relay, tmp_path)
        await relay.close()  # the cluster is unreachable from the start
        store = Store.in_data_dir(config.data_dir)
        engine = Engine(config, store, min_poll_interval=0.5)
        await engine.start()
        job_id = ""
        try:
            run = engine.submit(parse_document(doc), name="outage")
            await until(
                lambda: "unreachable since" in (store.get_run(run.id).message or ""),
                60,
                "the run to say its backend is unreachable",
            )
            (attempt,) = store.attempts(run.id)
            assert attempt.state == "intent"
            # The submission went through after all: a job with the attempt's tag exists.
            job_id = sbatch_for_tag(slurm_rig, attempt.tag)
            await engine.cancel(run.id)
            final = await engine.wait(run.id, timeout=10)
            assert final.state == RunState.CANCELLED
            assert store.tasks(run.id)[0].state == TaskState.CANCELLED
        finally:
            await engine.stop()
        await relay.open()  # the cluster answers again; a new engine takes over
        engine = Engine(config, store, min_poll_interval=0.5)
        await engine.start()
        try:
            await until(
                lambda: store.attempts(run.id)[0].state == "cancelled", 60, "the job cancelled"
            )
            (attempt,) = store.attempts(run.id)
            assert attempt.job_id == job_id
            await until(
                lambda: slurm_state(slurm_rig, job_id) == "CANCELLED",
                30,
                f"Slurm job {job_id} cancelled",
            )
        finally:
            await engine.stop()
            store.close()
            await relay.close()
            if job_id:
                with contextlib.suppress(OSError):
                    subprocess.run(["scancel", job_id], timeout=30, check=False)

    asyncio.run(main())
