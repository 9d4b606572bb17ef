"""What the AWS backends share: boto3 (an optional extra), clients, and which errors are transient.

boto3 is imported only here and only when an AWS backend is built, so ScriptHut installs
and runs without it; a missing boto3 is a clear error naming the extra to install.
Credentials come from the standard AWS chain (environment, profile, instance role), and
the endpoint from the standard settings too (`AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_BATCH`, ... for private endpoints and stand-ins).

A throttled call or a network failure is transient: the backend reports "unknown" (a
failed poll, a lookup to repeat) and the engine backs off; no task fails for it. botocore
itself retries throttling with exponential backoff and jitter ("standard" mode) first.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from scripthut.errors import BackendUnavailable
from scripthut.transport import TransportError

T = TypeVar("T")

INSTALL_HINT = "pip install 'scripthut[aws]'"
MAX_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
# Error codes AWS uses for "slow down" or "try again": never a reason to fail a task.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServerException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)


class AwsTransientError(TransportError):
    """An AWS call was throttled or did not get through: whether it took effect is unknown."""


def require_boto3() -> Any:
    """The boto3 module, or BackendUnavailable saying how to install it."""
    try:
        import boto3
    except ImportError:
        raise BackendUnavailable(
            f"the AWS backends need boto3, which is not installed: {INSTALL_HINT}"
        ) from None
    return boto3


def make_session(profile: str | None, region: str) -> Any:
    """A boto3 session on the standard credential chain (`profile` picks one of its profiles)."""
    boto3 = require_boto3()
    from botocore.exceptions import ProfileNotFound

    try:
        return boto3.session.Session(profile_name=profile, region_name=region)
    except ProfileNotFound as exc:
        raise BackendUnavailable(f"AWS profile '{profile}' is not configured: {exc}") from None


def make_client(session: Any, service: str) -> Any:
    """A client with bounded timeouts and botocore's standard retries (backoff with jitter)."""
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        user_agent_extra="scripthut",
    )
    return session.client(service, config=config)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "")
    return ""


def is_transient(exc: BaseException) -> bool:
    """Throttling, 5xx answers, network and credential-lookup failures."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        NoRegionError,
    )

    if isinstance(exc, ClientError):
        response = exc.response if isinstance(exc.response, dict) else {}
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return error_code(exc) in TRANSIENT_CODES or status >= 500 or status == 429
    if isinstance(exc, NoCredentialsError | NoRegionError):
        return True  # the environment may be fixed without touching the run
    return isinstance(exc, BotoCoreError | OSError)


def describe(exc: BaseException) -> str:
    """One line for users: the AWS error code and message, or the exception's text."""
    code = error_code(exc)
    response = getattr(exc, "response", None)
    if code and isinstance(response, dict):
        message = str(response.get("Error", {}).get("Message") or "")
        return f"{code}: {message}" if message else code
    return str(exc) or type(exc).__name__


async def call(what: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in a worker thread; a transient failure becomes AwsTransientError."""
    try:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
    except Exception as exc:
        if is_transient(exc):
            raise AwsTransientError(f"{what}: {describe(exc)}") from exc
        raise


def pages(fn: Callable[..., dict[str, Any]], key: str, /, **kwargs: Any) -> list[Any]:
    """Every item of a paged AWS list call (`nextToken`), in order. Runs in the caller's thread."""
    items: list[Any] = []
    token: str | None = None
    while True:
        reply = fn(**kwargs, **({"nextToken": token} if token else {}))
        items.extend(reply.get(key) or [])
        token = reply.get("nextToken")
        if not token:
            return items
