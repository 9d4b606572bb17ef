"""A job queue and job definition in moto, and BatchBackend objects pointed at them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3

from scripthut.backends.base import JobPaths, JobRef, JobSpec
from scripthut.backends.batch import BatchBackend
from scripthut.backends.batch_setup import batch_backend
from scripthut.config import BatchBackendConfig

QUEUE = "hut-queue"
OTHER_QUEUE = "hut-other-queue"
DEFINITION = "hut-def"
IMAGE = "public.ecr.aws/docker/library/bash:5"
REGION = "us-east-1"


def client(service: str) -> Any:
    return boto3.session.Session(region_name=REGION).client(service)


def make_queues() -> None:
    """An unmanaged compute environment, two queues and one job definition."""
    iam = client("iam")
    role = iam.create_role(RoleName="hut-batch-service", AssumeRolePolicyDocument="{}")["Role"]
    batch = client("batch")
    env = batch.create_compute_environment(
        computeEnvironmentName="hut-env", type="UNMANAGED", serviceRole=role["Arn"]
    )
    for name in (QUEUE, OTHER_QUEUE):
        batch.create_job_queue(
            jobQueueName=name,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[
                {"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}
            ],
        )
    batch.register_job_definition(
        jobDefinitionName=DEFINITION,
        type="container",
        containerProperties={
            "image": IMAGE,
            "command": ["true"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "512"},
            ],
        },
    )


def backend(**fields: Any) -> BatchBackend:
    entry = BatchBackendConfig.model_validate(
        {
            "name": "aws",
            "type": "batch",
            "aws": {"region": REGION, "job_queue": QUEUE},
            "job_definition": DEFINITION,
            **fields,
        }
    )
    made = batch_backend(entry)
    made.external_every_s = 0.0
    return made


def spec(
    run: str = "20261206-000000-abcd",
    seq: int = 1,
    attempt: int = 1,
    *,
    script: str = "#!/bin/bash\necho hi\n",
    paths: JobPaths | None = None,
    **fields: Any,
) -> JobSpec:
    task = fields.pop("task_id", f"t{seq}")
    return JobSpec(
        tag=f"hut.{run}.{seq}.{attempt}",
        run_id=run,
        task_id=task,
        attempt=attempt,
        name=task,
        script=script,
        paths=paths or JobPaths("x", "x", "x", "x"),
        working_dir="~",
        **fields,
    )


def ref(job_id: str, tag: str, paths: JobPaths | None = None) -> JobRef:
    return JobRef(job_id, tag, paths or JobPaths("x", "x", "x", "x"))


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy (a rig wait, not a timed assert)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.1)
