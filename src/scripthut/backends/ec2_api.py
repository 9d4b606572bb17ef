"""boto3 for the EC2 backend and `scripthut setup-aws-ec2`.

- `load_boto3`: boto3 imported on first use, with a clear message when it is not installed.
- `AWSClients`: clients of one profile and region, through the standard credential chain and
  endpoint settings (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_EC2`, ... as for any AWS tool, which
  private endpoints need too). Nothing is stored: credentials stay in the chain.
- `is_transient`: throttling, capacity and network errors mean "unknown, try again", never
  "the task failed"; every other error is the request's own fault.
- `Instance`: the fields of one DescribeInstances entry the backend reads.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scripthut.errors import ScriptHutError

INSTALL_HINT = "pip install 'scripthut[aws]'"
LIVE_STATES = frozenset({"pending", "running", "stopping", "stopped"})
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "InternalFailure",
        "InsufficientInstanceCapacity",
        "RequestTimeout",
        "RequestExpired",
    }
)
_NETWORK_ERRORS = (
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ProxyConnectionError",
    "HTTPClientError",
)


def load_boto3() -> Any:
    """The boto3 module; ScriptHutError naming the extra to install when it is missing."""
    try:
        return importlib.import_module("boto3")
    except ImportError as exc:
        raise ScriptHutError(f"the AWS backends need boto3: {INSTALL_HINT}") from exc


class AWSClients:
    """boto3 clients for one profile and region, made once each (boto3 clients are
    thread-safe; sessions are not, so clients are made under a lock)."""

    def __init__(self, region: str, profile: str | None = None, max_attempts: int = 3) -> None:
        self.region = region
        self.profile = profile
        self.max_attempts = max_attempts
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        with self._lock:
            found = self._clients.get(service)
            if found is None:
                found = self._clients[service] = self._make(service)
            return found

    def _make(self, service: str) -> Any:
        boto3 = load_boto3()
        config = importlib.import_module("botocore.config").Config(
            retries={"max_attempts": self.max_attempts, "mode": "standard"}
        )
        try:
            session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
        except Exception as exc:  # botocore.exceptions.ProfileNotFound and the like
            raise ScriptHutError(f"AWS profile {self.profile!r}: {exc}") from exc
        return session.client(service, config=config)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_transient(exc: BaseException) -> bool:
    """Throttling, capacity, a 5xx or a network failure: the outcome is unknown."""
    if error_code(exc) in TRANSIENT_CODES:
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return isinstance(status, int) and status >= 500
    return any(cls.__name__ in _NETWORK_ERRORS for cls in type(exc).__mro__)


def describe(exc: BaseException) -> str:
    """`Code: message` for an AWS error, the exception's text for anything else."""
    code = error_code(exc)
    if code:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
        return f"{code}: {message}" if message else code
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance as DescribeInstances reports it."""

    id: str
    state: str
    instance_type: str = ""
    launched_at: float | None = None
    state_reason_code: str = ""
    state_reason: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Instance:
        launched = raw.get("LaunchTime")
        reason = raw.get("StateReason") or {}
        return cls(
            id=str(raw["InstanceId"]),
            state=str((raw.get("State") or {}).get("Name", "")),
            instance_type=str(raw.get("InstanceType", "")),
            launched_at=launched.timestamp() if isinstance(launched, datetime) else None,
            state_reason_code=str(reason.get("Code", "")),
            state_reason=str(reason.get("Message", "")),
            tags={str(t["Key"]): str(t["Value"]) for t in raw.get("Tags") or []},
        )


def describe_instances(ec2: Any, filters: Sequence[dict[str, Any]]) -> list[Instance]:
    """Every instance matching `filters`, all pages."""
    paginator = ec2.get_paginator("describe_instances")
    return [Instance.parse(raw) for raw in _instances(paginator.paginate(Filters=list(filters)))]


def _instances(pages: Any) -> Iterator[dict[str, Any]]:
    for page in pages:
        for reservation in page.get("Reservations", []):
            yield from reservation.get("Instances", [])
