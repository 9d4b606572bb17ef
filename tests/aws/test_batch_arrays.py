"""AWS Batch array jobs (arrayProperties) against a real moto server, and the bootstrap each
child runs, executed by a real bash.

moto creates an array's children (`<id>:<i>`) and lists them beside the parent; it runs no
container, so the tests run the bootstrap themselves, as a child would, and write the
children's CloudWatch events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from scripthut.backends import batch_arrays as ba
from scripthut.backends.aws import AwsTransientError
from scripthut.backends.base import ArrayGroup, JobSpec
from scripthut.backends.batch_jobs import CANCEL_REASON
from scripthut.states import JobState
from tests.aws import batch_rig as rig
from tests.aws.moto_rig import MotoServer
from tests.aws.test_batch_backend import _requests, _throttle

pytestmark = pytest.mark.aws
RUN = "20261206-000000-abcd"
SECRET = "$(touch {marker}) `touch {marker}` s3cr3t"


@pytest.fixture
def queues(moto: MotoServer) -> MotoServer:
    rig.make_queues()
    return moto


def sweep(
    count: int, *, start: int = 0, marker: Path | None = None, **fields: Any
) -> list[JobSpec]:
    """`count` rendered jobs of one run with the same resources, each with its own env."""
    backend = rig.backend()
    jobs = []
    for seq in range(start, start + count):
        value = SECRET.format(marker=marker or "/nonexistent/x") + f" #{seq}"
        body = (
            f"#!/bin/bash\n# scripthut task t{seq}\nexport PARAM={_quote(value)}\n"
            f'printf "%s|%s\\n" "t{seq}" "$PARAM"\nexit {seq % 3}\n'
        )
        paths = backend.job_paths(RUN, f"t{seq}", 1)
        base = rig.spec(RUN, seq, paths=paths, env={"PARAM": value}, **fields)
        jobs.append(_with_script(base, backend.render_script(base, body)))
    return jobs


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _with_script(spec: JobSpec, script: str) -> JobSpec:
    return dataclasses.replace(spec, script=script)


def run_child(args: dict[str, Any], index: int) -> subprocess.CompletedProcess[str]:
    """Run child `index` of a SubmitJob request as Batch would: its command, its env."""
    overrides = args["containerOverrides"]
    env = {item["name"]: item["value"] for item in overrides["environment"]}
    env |= {"PATH": os.environ["PATH"], "AWS_BATCH_JOB_ARRAY_INDEX": str(index)}
    return subprocess.run(
        overrides["command"], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_a_sweep_is_one_array_job_whose_children_run_their_own_scripts(
    queues: MotoServer, tmp_path: Path
) -> None:
    backend = rig.backend()
    sent = _requests(backend, "SubmitJob")
    marker = tmp_path / "evaluated"
    jobs = sweep(4, marker=marker, cpus=2, memory_mb=1000, time_limit_s=120)
    [outcomes] = asyncio.run(backend.submit_arrays([ArrayGroup(tuple(jobs), throttle=50)]))
    [args] = sent
    parent = str(outcomes[0].job_id).split(":")[0]
    assert [o.job_id for o in outcomes] == [f"{parent}:{i}" for i in range(4)]
    tag = ba.array_tag(jobs)
    assert args["jobName"] == ba.array_name(tag) == tag.replace(".", "_")
    assert args["arrayProperties"] == {"size": 4}
    assert args["tags"]["scripthut:tag"] == tag and args["tags"]["scripthut:array-size"] == "4"
    assert args["timeout"] == {"attemptDurationSeconds": 120}
    overrides = args["containerOverrides"]
    assert overrides["command"] == ["bash", "-c", ba.BOOTSTRAP]
    assert {r["type"]: r["value"] for r in overrides["resourceRequirements"]} == {
        "VCPU": "2",
        "MEMORY": "1000",
    }
    assert [e["name"] for e in overrides["environment"]] == [ba.BUNDLE_VAR]
    assert "s3cr3t" not in json.dumps(args)  # values only inside the compressed bundle
    assert len(json.dumps(overrides, separators=(",", ":"))) <= ba.OVERRIDES_BUDGET
    # Every child runs exactly its own script, with its own value, nothing of it evaluated.
    for index, job in enumerate(jobs):
        child = run_child(args, index)
        value = job.env["PARAM"]
        assert (child.returncode, child.stdout) == (index % 3, f"t{index}|{value}\n")
        assert "s3cr3t" not in job.script
    assert not marker.exists()
    beyond = run_child(args, 4)
    assert beyond.returncode == 2 and "no element 4" in beyond.stderr
    # moto knows the children by those ids, on the queue asked for.
    described = rig.client("batch").describe_jobs(jobs=[str(o.job_id) for o in outcomes])
    assert len(described["jobs"]) == 4


def test_groups_are_chunked_by_throttle_size_and_overrides_budget(queues: MotoServer) -> None:
    backend = rig.backend(max_array_size=3)
    sent = _requests(backend, "SubmitJob")
    small = sweep(7)
    results = asyncio.run(backend.submit_arrays([ArrayGroup(tuple(small), throttle=100)]))
    assert [a.get("arrayProperties", {}).get("size") for a in sent] == [3, 2, 2]
    assert all(o.job_id for o in results[0])
    # The throttle caps an array (Batch has none): a throttle of 1 means plain jobs.
    sent.clear()
    asyncio.run(backend.submit_arrays([ArrayGroup(tuple(sweep(2, start=10)), throttle=1)]))
    assert len(sent) == 2 and not any("arrayProperties" in a for a in sent)
    # Scripts that do not compress: split until each array's overrides fit the budget.
    sent.clear()
    noisy = [
        _with_script(job, job.script + "# " + os.urandom(900).hex() + "\n")
        for job in sweep(12, start=20)
    ]
    [outcomes] = asyncio.run(backend.submit_arrays([ArrayGroup(tuple(noisy), throttle=100)]))
    assert len(sent) > 1 and len(outcomes) == 12 and all(o.job_id for o in outcomes)
    sizes = [len(json.dumps(a["containerOverrides"], separators=(",", ":"))) for a in sent]
    assert max(sizes) <= ba.OVERRIDES_BUDGET
    assert sum(a.get("arrayProperties", {}).get("size", 1) for a in sent) == 12


def test_elements_are_polled_cancelled_and_found_one_by_one(queues: MotoServer) -> None:
    queues.batch_progression(5)  # children wait in moto's early states
    backend = rig.backend()
    jobs = sweep(3, start=30)
    [outcomes] = asyncio.run(backend.submit_arrays([ArrayGroup(tuple(jobs), throttle=10)]))
    ids = [str(o.job_id) for o in outcomes]
    refs = [rig.ref(job_id, job.tag) for job_id, job in zip(ids, jobs, strict=True)]
    describes = _requests(backend, "DescribeJobs")
    result = asyncio.run(backend.poll(refs))
    assert [call["jobs"] for call in describes] == [ids]  # one call for every element
    assert {s.state for s in result.jobs.values()} == {JobState.PENDING}
    assert not any(ba.is_array_name(s.name or "") for s in result.external or [])
    asyncio.run(backend.cancel([ids[1]]))
    assert backend.calls["CancelJob"] == 1

    def ended() -> list[JobState] | None:
        result = asyncio.run(backend.poll(refs))
        states = [result.jobs[i].state for i in ids]
        return states if states[1].is_final else None

    queues.batch_progression(0.1)  # moto stops a cancelled job at its next step
    states = rig.wait_for(ended)
    assert states[1] is JobState.CANCELLED
    assert JobState.CANCELLED not in (states[0], states[2])
    children = rig.client("batch").describe_jobs(jobs=ids)["jobs"]
    reasons = {j["jobId"]: j.get("statusReason") for j in children}
    assert reasons[ids[1]] == CANCEL_REASON
    assert reasons[ids[0]] != CANCEL_REASON and reasons[ids[2]] != CANCEL_REASON
    # A restarted backend finds every element by its tag (and the plain job beside them).
    [plain] = asyncio.run(backend.submit([rig.spec(RUN, 40)]))
    fresh = rig.backend()
    tags = [job.tag for job in jobs] + [rig.spec(RUN, 40).tag, rig.spec(RUN, 41).tag]
    found = asyncio.run(fresh.find(tags))
    assert found == {**{j.tag: i for j, i in zip(jobs, ids, strict=True)}, tags[3]: plain.job_id}


def test_each_element_logs_to_its_own_stream_found_after_a_restart(queues: MotoServer) -> None:
    backend = rig.backend()
    jobs = sweep(2, start=50)
    [outcomes] = asyncio.run(backend.submit_arrays([ArrayGroup(tuple(jobs), throttle=10)]))
    logs = rig.client("logs")
    logs.create_log_group(logGroupName="/aws/batch/job")
    described = rig.client("batch").describe_jobs(jobs=[str(o.job_id) for o in outcomes])
    streams = {j["jobId"]: j["container"]["logStreamName"] for j in described["jobs"]}
    assert len(set(streams.values())) == 2
    now = int(time.time() * 1000)
    for outcome, job in zip(outcomes, jobs, strict=True):
        stream = streams[str(outcome.job_id)]
        logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
        event = {"timestamp": now, "message": f"from {job.task_id}"}
        logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=stream, logEvents=[event])
    fresh = rig.backend()  # knows nothing: finds the array by the run, the element by the task
    for job in jobs:
        chunk = asyncio.run(fresh.read_log(job.paths.stdout))
        assert chunk.data == f"from {job.task_id}\n".encode()


def test_a_throttled_array_submission_is_unknown_not_failed(queues: MotoServer) -> None:
    backend = rig.backend()
    _throttle(backend._batch(), "SubmitJob", times=100)
    jobs = sweep(3, start=60)
    with pytest.raises(AwsTransientError, match="3 array elements"):
        asyncio.run(backend.submit_arrays([ArrayGroup(tuple(jobs), throttle=10)]))
    assert asyncio.run(rig.backend().find([job.tag for job in jobs])) == {}


def test_arrays_false_and_the_limits_in_config() -> None:
    from pydantic import ValidationError

    assert not rig.backend(arrays=False).arrays_enabled()
    assert rig.backend().arrays_enabled()
    with pytest.raises(ValidationError, match="max_array_size"):
        rig.backend(max_array_size=10_001)
    assert ba.largest_chunk(None, None) == ba.MAX_SIZE
    assert ba.largest_chunk(500, 20) == 20 and ba.largest_chunk(5, 20) == 5
