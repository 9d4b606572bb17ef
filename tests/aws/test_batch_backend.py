"""The AWS Batch backend against a real moto server (AWS stand-in) on 127.0.0.1.

moto runs no container: without Docker a job SUCCEEDS at once, and in Docker mode with a
state-manager transition it walks SUBMITTED, PENDING, RUNNABLE, STARTING and ends FAILED.
It writes no logs: the tests write the CloudWatch events themselves.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from scripthut.backends.aws import AwsTransientError
from scripthut.states import JobState
from tests.aws import batch_rig as rig
from tests.aws.moto_rig import MotoServer

pytestmark = pytest.mark.aws
RUN = "20261206-000000-abcd"


@pytest.fixture
def queues(moto: MotoServer) -> MotoServer:
    rig.make_queues()
    return moto


def _requests(backend: Any, operation: str) -> list[dict[str, Any]]:
    """Record the parameters of every `operation` call the backend's client makes."""
    seen: list[dict[str, Any]] = []
    backend._batch().meta.events.register(
        f"provide-client-params.batch.{operation}", lambda params, **_: seen.append(dict(params))
    )
    return seen


def _throttle(client: Any, operation: str, times: int) -> list[int]:
    """Answer `operation` with ThrottlingException `times` times (botocore retries see them)."""
    count = [0]

    def reply(request: Any, **_: Any) -> AWSResponse | None:
        if count[0] >= times:
            return None
        count[0] += 1
        body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
        return AWSResponse(
            request.url, 400, {"x-amzn-ErrorType": "ThrottlingException"}, _Raw(body)
        )

    client.meta.events.register(f"before-send.batch.{operation}", reply)
    return count


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body

    def read(self, *_: Any) -> bytes:
        return self.body


def test_a_job_carries_queue_resources_timeout_tags_and_env_outside_the_script(
    queues: MotoServer,
) -> None:
    backend = rig.backend()
    sent = _requests(backend, "SubmitJob")
    body = (
        "#!/bin/bash\n# scripthut task t1\n"
        "export TOKEN='s3cr3t'\nexport SCRIPTHUT_TASK_ID='t1'\necho hi\n"
    )
    job = rig.spec(env={"TOKEN": "s3cr3t"}, cpus=2, memory_mb=1000, gres="gpu:1", time_limit_s=120)
    script = backend.render_script(job, body)
    assert "s3cr3t" not in script
    assert "# environment passed by AWS Batch (containerOverrides): TOKEN" in script
    job = rig.spec(
        env={"TOKEN": "s3cr3t"},
        cpus=2,
        memory_mb=1000,
        gres="gpu:1",
        time_limit_s=120,
        partition=rig.OTHER_QUEUE,
        script=script,
    )
    [outcome] = asyncio.run(backend.submit([job]))
    assert outcome.job_id
    [params] = sent
    overrides = params["containerOverrides"]
    assert params["jobQueue"] == rig.OTHER_QUEUE
    assert params["jobName"] == f"hut_{RUN}_1_1"
    assert params["timeout"] == {"attemptDurationSeconds": 120}
    assert overrides["command"] == ["bash", "-c", script]
    assert overrides["environment"] == [{"name": "TOKEN", "value": "s3cr3t"}]
    assert {r["type"]: r["value"] for r in overrides["resourceRequirements"]} == {
        "VCPU": "2",
        "MEMORY": "1000",
        "GPU": "1",
    }
    described = rig.client("batch").describe_jobs(jobs=[outcome.job_id])["jobs"][0]
    assert described["tags"]["scripthut:tag"] == job.tag
    short = rig.spec(seq=2, time_limit_s=30)
    asyncio.run(backend.submit([short]))
    assert "timeout" not in sent[-1]


def test_a_runtime_append_keeps_its_append_and_its_value_leaves_the_script() -> None:
    from scripthut.backends import batch_jobs as bj

    body = "#!/bin/bash\nexport PATH=\"${PATH:+${PATH}:}\"'/opt/x'\necho\n"
    moved = bj.env_out_of_script(body, {"PATH": "/opt/x"})
    assert "/opt/x" not in moved.script
    assert 'export PATH="${PATH:+${PATH}:}${SCRIPTHUT_APPEND_PATH}"' in moved.script
    assert bj.container_environment(moved.script, {"PATH": "/opt/x"}) == {
        "SCRIPTHUT_APPEND_PATH": "/opt/x"
    }


def test_a_bad_gres_fails_the_task_with_a_reason(queues: MotoServer) -> None:
    from scripthut.errors import ScriptHutError

    with pytest.raises(ScriptHutError, match="gpu:N"):
        rig.backend().render_script(rig.spec(gres="mic:2"), "#!/bin/bash\ntrue\n")


def test_succeeded_jobs_end_completed_and_external_jobs_are_listed(queues: MotoServer) -> None:
    backend = rig.backend()
    jobs = [rig.spec(seq=n) for n in range(1, 4)]
    outcomes = asyncio.run(backend.submit(jobs))
    refs = [rig.ref(o.job_id or "", j.tag) for o, j in zip(outcomes, jobs, strict=True)]
    queues.batch_progression(30)  # the outsider's job stays SUBMITTED
    rig.client("batch").submit_job(
        jobName="someone-else", jobQueue=rig.QUEUE, jobDefinition=rig.DEFINITION
    )
    result = asyncio.run(backend.poll(refs))
    assert result.ok
    assert {s.state for s in result.jobs.values()} == {JobState.COMPLETED}
    assert {s.exit_code for s in result.jobs.values()} == {0}
    assert [s.name for s in result.external or []] == ["someone-else"]


def test_failed_jobs_walk_the_waiting_states_and_end_failed(queues: MotoServer) -> None:
    queues.batch_progression(1)
    backend = rig.backend()
    [outcome] = asyncio.run(backend.submit([rig.spec()]))
    ref = rig.ref(outcome.job_id or "", rig.spec().tag)
    seen: list[str] = []

    def final() -> bool:
        status = asyncio.run(backend.poll([ref])).jobs[ref.job_id]
        if not seen or seen[-1] != status.raw_state:
            seen.append(status.raw_state)
        assert status.state is not JobState.UNKNOWN
        return status.state.is_final

    rig.wait_for(final, timeout=30)
    assert seen[-1] == "FAILED"
    assert {"PENDING", "RUNNABLE", "STARTING"} & set(seen)
    status = asyncio.run(backend.poll([ref])).jobs[ref.job_id]
    assert status.state is JobState.FAILED
    assert status.reason


@pytest.mark.parametrize("state", ["SUBMITTED", "RUNNABLE", "STARTING", "RUNNING"])
def test_cancel_at_each_state(queues: MotoServer, state: str) -> None:
    """CancelJob before STARTING, TerminateJob from STARTING on; the task ends CANCELLED.

    moto never reaches RUNNING without Docker: for RUNNING (and to hold STARTING) the
    backend is shown that state by its DescribeJobs answer, and moto performs the call.
    """
    queues.batch_progression(1)
    backend = rig.backend()
    [outcome] = asyncio.run(backend.submit([rig.spec()]))
    job_id = outcome.job_id or ""
    client = backend._batch()

    def shown(parsed: dict[str, Any], **_: Any) -> None:
        for job in parsed.get("jobs") or []:
            job["status"] = state

    client.meta.events.register("after-call.batch.DescribeJobs", shown)
    asyncio.run(backend.cancel([job_id]))
    client.meta.events.unregister("after-call.batch.DescribeJobs", shown)
    terminate = state in ("STARTING", "RUNNING")
    assert backend.calls.get("TerminateJob", 0) == int(terminate)
    assert backend.calls.get("CancelJob", 0) == int(not terminate)
    rig.wait_for(
        lambda: asyncio.run(backend.poll([rig.ref(job_id, "t")])).jobs[job_id].state.is_final
    )
    status = asyncio.run(backend.poll([rig.ref(job_id, "t")])).jobs[job_id]
    assert status.state is JobState.CANCELLED
    fresh = rig.backend()  # after a restart, the reason says who cancelled it
    if terminate:
        assert (
            asyncio.run(fresh.poll([rig.ref(job_id, "t")])).jobs[job_id].state is JobState.CANCELLED
        )


def test_a_restart_finds_every_submitted_job_and_nothing_else(queues: MotoServer) -> None:
    first = rig.backend()
    jobs = [rig.spec(seq=1), rig.spec(seq=2, partition=rig.OTHER_QUEUE), rig.spec(seq=3)]
    outcomes = asyncio.run(first.submit(jobs[:2]))
    restarted = rig.backend()
    restarted.queues.add(rig.OTHER_QUEUE)  # the queue a task named, known from its spec
    found = asyncio.run(restarted.find([j.tag for j in jobs]))
    assert found == {jobs[0].tag: outcomes[0].job_id, jobs[1].tag: outcomes[1].job_id}


def test_a_lost_answer_to_submit_leaves_exactly_one_job(queues: MotoServer) -> None:
    """SubmitJob went through but its answer did not: submit raises, find adopts the job."""
    from botocore.exceptions import EndpointConnectionError

    backend = rig.backend()

    def lost(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url=queues.url)

    backend._batch().meta.events.register("after-call.batch.SubmitJob", lost)
    job = rig.spec()
    with pytest.raises(AwsTransientError):
        asyncio.run(backend.submit([job]))
    backend._batch().meta.events.unregister("after-call.batch.SubmitJob", lost)
    found = asyncio.run(backend.find([job.tag]))
    assert found is not None and set(found) == {job.tag}
    listed = rig.client("batch").list_jobs(
        jobQueue=rig.QUEUE, filters=[{"name": "JOB_NAME", "values": ["hut_*"]}]
    )
    assert len(listed["jobSummaryList"]) == 1


def test_throttling_is_unknown_never_failed(queues: MotoServer) -> None:
    backend = rig.backend()
    [outcome] = asyncio.run(backend.submit([rig.spec()]))
    ref = rig.ref(outcome.job_id or "", rig.spec().tag)
    count = _throttle(backend._batch(), "DescribeJobs", times=100)
    result = asyncio.run(backend.poll([ref]))
    assert not result.ok and "ThrottlingException" in (result.error or "")
    assert count[0] > 1  # botocore's standard retries (backoff with jitter) ran first
    count[0] = 98  # the next two answers are throttled, the third gets through
    result = asyncio.run(backend.poll([ref]))
    assert result.ok and result.jobs[ref.job_id].state is JobState.COMPLETED
    _throttle(backend._batch(), "SubmitJob", times=100)
    with pytest.raises(AwsTransientError):
        asyncio.run(backend.submit([rig.spec(seq=2)]))
    assert asyncio.run(backend.find([rig.spec(seq=2).tag])) == {}


def test_logs_are_read_from_cloudwatch_by_offset_and_found_again_after_a_restart(
    queues: MotoServer,
) -> None:
    backend = rig.backend()
    paths = backend.job_paths(RUN, "t1", 1)
    assert paths.stderr == paths.stdout  # Batch has one stream for both
    job = rig.spec(paths=paths)
    [outcome] = asyncio.run(backend.submit([job]))
    job_id = outcome.job_id or ""
    stream = rig.client("batch").describe_jobs(jobs=[job_id])["jobs"][0]["container"][
        "logStreamName"
    ]
    logs = rig.client("logs")
    logs.create_log_group(logGroupName="/aws/batch/job")
    logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
    now = int(time.time() * 1000)
    first = [{"timestamp": now + i, "message": f"line {i}"} for i in range(3)]
    logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=stream, logEvents=first)
    fresh = rig.backend()  # knows nothing of the job: finds it by the path's run and task
    chunk = asyncio.run(fresh.read_log(paths.stdout))
    assert chunk.data == b"line 0\nline 1\nline 2\n"
    more = [{"timestamp": now + 10, "message": "line 3"}]
    logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=stream, logEvents=more)
    chunk = asyncio.run(fresh.read_log(paths.stdout, chunk.next_offset))
    assert chunk.data == b"line 3\n" and chunk.offset == 21
    tail = asyncio.run(fresh.read_log(paths.stdout, -7))
    assert tail.data == b"line 3\n"
    missing = asyncio.run(fresh.read_log(backend.job_paths(RUN, "t9", 1).stdout))
    assert missing.missing


def test_job_definition_modes(queues: MotoServer, caplog: pytest.LogCaptureFixture) -> None:
    batch = rig.client("batch")
    locked = rig.backend()
    template = batch.describe_job_definitions(jobDefinitionName=rig.DEFINITION)["jobDefinitions"][0]
    assert locked.definitions.resolve("other:1") == template["jobDefinitionArn"]
    assert "locked to image" in caplog.text
    revisions = rig.backend(job_definition_mode="revisions")
    arn = revisions.definitions.resolve("other:1")
    assert arn != template["jobDefinitionArn"] and revisions.definitions.resolve("other:1") == arn
    again = rig.backend(job_definition_mode="revisions")  # a restart reuses the revision
    assert again.definitions.resolve("other:1") == arn and again.definitions.registered == 0
    described = batch.describe_job_definitions(jobDefinitions=[arn])["jobDefinitions"][0]
    assert described["jobDefinitionName"] == rig.DEFINITION
    assert described["containerProperties"]["image"] == "other:1"
    auto = rig.backend(
        job_definition=None, default_image="img:2", job_role_arn="arn:aws:iam::123456789012:role/r"
    )
    name = auto.definitions.auto_name("img:2")
    assert name.startswith("scripthut-")
    first = auto.definitions.resolve(None)
    assert (
        rig.backend(
            job_definition=None,
            default_image="img:2",
            job_role_arn="arn:aws:iam::123456789012:role/r",
        ).definitions.resolve(None)
        == first
    )
    assert name in first and auto.definitions.resolve("img:3") != first


def test_missing_boto3_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from scripthut.backends.aws import require_boto3
    from scripthut.errors import BackendUnavailable

    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'scripthut\[aws\]'"):
        require_boto3()
