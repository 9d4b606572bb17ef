"""Build a BatchBackend from its config entry: boto3 session and clients, definitions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from scripthut.backends.aws import make_client, make_session, require_boto3
from scripthut.backends.batch import BatchBackend
from scripthut.backends.batch_defs import JobDefinitions
from scripthut.config import BatchBackendConfig


def lazy_client(session: Any, service: str) -> Callable[[], Any]:
    """A function returning one client for `service`, made on first use (thread-safe)."""
    lock = threading.Lock()
    made: list[Any] = []

    def get() -> Any:
        with lock:
            if not made:
                made.append(make_client(session, service))
            return made[0]

    return get


def batch_backend(entry: BatchBackendConfig) -> BatchBackend:
    """The backend for one `type: batch` entry; BackendUnavailable without boto3."""
    require_boto3()
    session = make_session(entry.aws.profile, entry.aws.region)
    batch = lazy_client(session, "batch")
    definitions = JobDefinitions(
        batch,
        job_definition=entry.job_definition,
        mode=entry.job_definition_mode,
        default_image=entry.default_image,
        job_role_arn=entry.job_role_arn,
        execution_role_arn=entry.execution_role_arn,
        log_group=entry.log_group,
    )
    return BatchBackend(
        entry.name,
        batch=batch,
        logs=lazy_client(session, "logs"),
        job_queue=entry.aws.job_queue,
        definitions=definitions,
        max_concurrent=entry.max_concurrent,
        retry_attempts=entry.retry_attempts,
        log_group=entry.log_group,
        arrays=entry.arrays,
        max_array_size=entry.max_array_size,
    )
