"""Scripts too long for ECS's container overrides, against a real moto server.

Batch starts every job as an ECS task whose container overrides hold at most 8,192
characters; a job over it would fail only when it starts. A plain job whose
`bash -c <script>` does not fit goes as a bundle of one element, run by the array
bootstrap in a real bash here (moto runs no container); one that does not fit even
compressed fails at submission, and nothing is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from scripthut.backends import batch_arrays as ba
from scripthut.backends.base import ArrayGroup, JobSpec
from scripthut.backends.batch import BatchBackend
from scripthut.engine.engine import Engine
from scripthut.states import RunState, TaskState
from scripthut.store import Store
from scripthut.workflow.parse import parse_document
from tests.aws import batch_rig as rig
from tests.aws.moto_rig import MotoServer
from tests.aws.test_batch_backend import _requests
from tests.aws.test_batch_engine import batch_jobs, config, with_engine

pytestmark = pytest.mark.aws
RUN = "20261207-000000-abcd"
LINES = 340  # the compressible part: ~19 KiB of near-identical lines
NOISE_BYTES = 700  # the incompressible part: random bytes, as hex in the script


@pytest.fixture
def queues(moto: MotoServer) -> MotoServer:
    rig.make_queues()
    return moto


def big_body(seq: int, noise: str) -> str:
    """A ~20 KiB task script: `LINES` additions that compress well and a random value that
    does not; it prints the sum and a checksum of the random value."""
    adds = "".join(
        f"total=$((total + {i % 7}))  # step {i} of the long computation\n" for i in range(LINES)
    )
    return (
        f"#!/bin/bash\n# scripthut task t{seq}\nexport PARAM='value of t{seq}'\ntotal=0\n{adds}"
        f"noise={noise}\n"
        'printf "%s %s %s\\n" "$total" "$(printf %s "$noise" | sha256sum | cut -c1-16)" "$PARAM"\n'
    )


def rendered(backend: BatchBackend, seq: int, body: str) -> JobSpec:
    base = rig.spec(RUN, seq, env={"PARAM": f"value of t{seq}"})
    base = dataclasses.replace(base, paths=backend.job_paths(RUN, base.task_id, 1))
    return dataclasses.replace(base, script=backend.render_script(base, body))


def run_job(args: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run a plain job's request as Batch would: its command, its variables (no array index)."""
    overrides = args["containerOverrides"]
    env = {item["name"]: item["value"] for item in overrides["environment"]}
    env["PATH"] = os.environ["PATH"]
    return subprocess.run(
        overrides["command"], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def expected(seq: int, noise: str) -> str:
    total = sum(i % 7 for i in range(LINES))
    return f"{total} {hashlib.sha256(noise.encode()).hexdigest()[:16]} value of t{seq}\n"


def test_a_20_kib_script_travels_compressed_and_runs_through_the_bootstrap(
    queues: MotoServer,
) -> None:
    backend = rig.backend()
    sent = _requests(backend, "SubmitJob")
    noise = os.urandom(NOISE_BYTES).hex()
    big = rendered(backend, 1, big_body(1, noise))
    small = rendered(backend, 2, "#!/bin/bash\nexport PARAM='value of t2'\necho \"small $PARAM\"\n")
    assert 20 * 1024 <= len(big.script.encode()) < 24 * 1024
    outcomes = asyncio.run(backend.submit([big, small]))
    assert all(o.job_id for o in outcomes)
    by_name = {a["jobName"]: a for a in sent}
    big_args, small_args = by_name[big.tag.replace(".", "_")], by_name[small.tag.replace(".", "_")]
    for args in sent:
        assert ba.overrides_length(args["containerOverrides"]) <= ba.OVERRIDES_BUDGET
    # The big one: the bootstrap, and the script and its variable only inside the bundle.
    assert big_args["containerOverrides"]["command"] == ["bash", "-c", ba.BOOTSTRAP]
    assert [e["name"] for e in big_args["containerOverrides"]["environment"]] == [ba.BUNDLE_VAR]
    assert "arrayProperties" not in big_args and big_args["tags"]["scripthut:task"] == "t1"
    child = run_job(big_args)
    assert (child.returncode, child.stdout, child.stderr) == (0, expected(1, noise), "")
    # The small one keeps the readable form.
    assert small_args["containerOverrides"]["command"] == ["bash", "-c", small.script]
    assert small_args["containerOverrides"]["environment"] == [
        {"name": "PARAM", "value": "value of t2"}
    ]
    assert run_job(small_args).stdout == "small value of t2\n"
    # A restarted backend finds the big job by its tag, and its log by its task.
    fresh = rig.backend()
    found = asyncio.run(fresh.find([big.tag, small.tag]))
    assert found == {big.tag: outcomes[0].job_id, small.tag: outcomes[1].job_id}
    stream = rig.client("batch").describe_jobs(jobs=[str(outcomes[0].job_id)])["jobs"][0]
    logs = rig.client("logs")
    logs.create_log_group(logGroupName="/aws/batch/job")
    name = stream["container"]["logStreamName"]
    logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=name)
    event = {"timestamp": int(time.time() * 1000), "message": "from t1"}
    logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=name, logEvents=[event])
    assert asyncio.run(rig.backend().read_log(big.paths.stdout)).data == b"from t1\n"


def test_an_oversize_script_fails_at_submission_and_nothing_is_sent(queues: MotoServer) -> None:
    backend = rig.backend()
    sent = _requests(backend, "SubmitJob")
    huge = rendered(backend, 3, big_body(3, os.urandom(6000).hex()))
    [outcome] = asyncio.run(backend.submit([huge]))
    assert outcome.job_id is None and outcome.error
    assert "task 't3'" in outcome.error and f"({len(huge.script.encode())} bytes)" in outcome.error
    assert "8192" in outcome.error and "file of the run's source or of the image" in outcome.error
    assert sent == [] and rig.client("batch").list_jobs(jobQueue=rig.QUEUE)["jobSummaryList"] == []
    # In an array group, the element that alone is too big fails; the others go as an array.
    noise = os.urandom(NOISE_BYTES).hex()
    group = [
        rendered(backend, 4, big_body(4, noise)),
        huge,
        rendered(backend, 5, big_body(5, noise)),
    ]
    [outcomes] = asyncio.run(backend.submit_arrays([ArrayGroup(tuple(group), throttle=10)]))
    assert [bool(o.job_id) for o in outcomes] == [True, False, True]
    assert outcomes[1].error == outcome.error
    assert all(ba.overrides_length(a["containerOverrides"]) <= ba.OVERRIDES_BUDGET for a in sent)
    assert sum(a.get("arrayProperties", {}).get("size", 1) for a in sent) == 2


def test_an_engine_run_sends_no_overrides_over_the_limit_and_shows_the_real_script(
    queues: MotoServer, tmp_path: Path
) -> None:
    """Big and small tasks, a sweep of big ones (arrays) and one too big even compressed:
    every SubmitJob the engine sends fits ECS's limit, the oversize task fails with the
    reason, and the script view shows each task's own script, not the bundle."""
    cfg = config(tmp_path)
    backend = rig.backend()
    sent = _requests(backend, "SubmitJob")
    noise = os.urandom(NOISE_BYTES).hex()
    long_command = "n=$((n + 1))  # one step of the long computation\n" * LINES
    flow = [
        {"id": "small", "command": "echo small"},
        {"id": "big", "command": f"{long_command}\necho {noise}", "cpus": 2},
        *(
            {"id": f"sweep.{i}", "command": f"{long_command}\necho {noise} {i}", "memory": "2G"}
            for i in range(4)
        ),
        {"id": "huge", "command": f"echo {os.urandom(6000).hex()}", "cpus": 3},
    ]

    async def body(engine: Engine, store: Store) -> str:
        run = engine.submit(parse_document(flow), name="sizes")
        assert (await engine.wait(run.id, timeout=60)).state is RunState.FAILED
        return run.id

    run_id = with_engine(cfg, backend, body)
    assert sent and all(
        ba.overrides_length(a["containerOverrides"]) <= ba.OVERRIDES_LIMIT for a in sent
    )
    assert any(a.get("arrayProperties") for a in sent)  # the sweep went as array jobs
    store = Store.in_data_dir(cfg.data_dir)
    tasks = {t.task_id: t for t in store.tasks(run_id)}
    assert tasks.pop("huge").state is TaskState.FAILED
    assert "8192" in (store.task(run_id, "huge").reason or "")
    assert {t.state for t in tasks.values()} == {TaskState.COMPLETED}
    assert {j["jobName"] for j in batch_jobs(run_id)} == {a["jobName"] for a in sent}
    for task_id in ("big", "sweep.2", "small"):
        script = store.attempt(run_id, task_id, None).script
        assert ba.BOOTSTRAP not in script and ba.BUNDLE_VAR not in script
        assert ("echo small" if task_id == "small" else long_command) in script
    store.close()
