"""Which AWS Batch job definition a job is submitted against: the three modes.

- locked (`job_definition` set, `job_definition_mode: locked`): always the configured
  definition. A task asking for another image is submitted anyway, with a warning: the
  definition decides the image.
- revisions (`job_definition_mode: revisions`): the configured definition is a template.
  A task image that differs from the template's registers a new revision of the same
  name, copying the template's container properties with the image replaced; one revision
  per image, reused (an ACTIVE revision with that image is found again after a restart).
- auto-register (no `job_definition`): a definition `scripthut-<hash>` per image signature
  (image, roles, log group), registered on first use and found again by name.

Calls are blocking boto3 calls: the backend runs `resolve` in a worker thread.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from scripthut.errors import ScriptHutError

log = logging.getLogger(__name__)

DEFAULT_LOG_GROUP = "/aws/batch/job"
AUTO_PREFIX = "scripthut-"
# Properties of a described revision that RegisterJobDefinition accepts again.
_COPIED = ("parameters", "retryStrategy", "timeout", "platformCapabilities", "propagateTags")


class JobDefinitions:
    """Definition ARNs per image, registered or looked up once and cached."""

    def __init__(
        self,
        client: Callable[[], Any],
        *,
        job_definition: str | None,
        mode: str,
        default_image: str | None,
        job_role_arn: str | None = None,
        execution_role_arn: str | None = None,
        log_group: str = DEFAULT_LOG_GROUP,
    ) -> None:
        self._client = client
        self.job_definition = job_definition
        self.mode = mode if job_definition else "auto"
        self.default_image = default_image
        self.job_role_arn = job_role_arn
        self.execution_role_arn = execution_role_arn
        self.log_group = log_group
        self._lock = threading.Lock()
        self._by_image: dict[str | None, str] = {}
        self._template: dict[str, Any] | None = None
        self._warned: set[str] = set()
        self.registered = 0  # revisions and definitions this process registered

    def resolve(self, image: str | None) -> str:
        """The definition (ARN or name) for a task asking for `image` (None: the default)."""
        wanted = image or self.default_image
        with self._lock:
            known = self._by_image.get(wanted)
            if known is None:
                known = self._by_image[wanted] = self._find_or_register(wanted)
            return known

    def _find_or_register(self, image: str | None) -> str:
        if self.mode == "auto":
            if image is None:
                raise ScriptHutError("no image: set default_image or the task's image")
            return self._auto(image)
        assert self.job_definition is not None
        template = self._load_template()
        current = (template.get("containerProperties") or {}).get("image")
        if image is None or image == current:
            return str(template["jobDefinitionArn"])
        if self.mode == "locked":
            if image not in self._warned:
                self._warned.add(image)
                log.warning(
                    "job definition %s is locked to image %s: a task asked for %s and runs "
                    "with the definition's image (job_definition_mode: revisions registers "
                    "a revision per image)",
                    self.job_definition,
                    current,
                    image,
                )
            return str(template["jobDefinitionArn"])
        return self._revision(template, image)

    # -- revisions ------------------------------------------------------------------------

    def _load_template(self) -> dict[str, Any]:
        if self._template is None:
            assert self.job_definition is not None
            self._template = self._describe(self.job_definition)
        return self._template

    def _describe(self, ref: str) -> dict[str, Any]:
        """A definition by ARN, `name:revision` or name (its latest ACTIVE revision)."""
        client = self._client()
        if ref.startswith("arn:") or ":" in ref:
            found = client.describe_job_definitions(jobDefinitions=[ref]).get("jobDefinitions")
        else:
            found = self._active(ref)
        if not found:
            raise ScriptHutError(
                f"AWS Batch job definition '{ref}' does not exist (or is inactive)"
            )
        newest: dict[str, Any] = max(found, key=lambda d: int(d.get("revision") or 0))
        return newest

    def _active(self, name: str) -> list[dict[str, Any]]:
        client = self._client()
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            reply = client.describe_job_definitions(
                jobDefinitionName=name, status="ACTIVE", **({"nextToken": token} if token else {})
            )
            found.extend(reply.get("jobDefinitions") or [])
            token = reply.get("nextToken")
            if not token:
                return found

    def _revision(self, template: dict[str, Any], image: str) -> str:
        name = str(template["jobDefinitionName"])
        for revision in sorted(self._active(name), key=lambda d: -int(d.get("revision") or 0)):
            if (revision.get("containerProperties") or {}).get("image") == image:
                return str(revision["jobDefinitionArn"])
        properties = copy.deepcopy(template.get("containerProperties") or {})
        properties["image"] = image
        extra = {key: template[key] for key in _COPIED if template.get(key)}
        return self._register(name, properties, extra)

    # -- auto-register --------------------------------------------------------------------

    def auto_properties(self, image: str) -> dict[str, Any]:
        """The container properties of an auto-registered definition (resources set per job)."""
        properties: dict[str, Any] = {
            "image": image,
            "command": ["bash", "-c", "echo no command given"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "2048"},
            ],
        }
        if self.job_role_arn:
            properties["jobRoleArn"] = self.job_role_arn
        if self.execution_role_arn:
            properties["executionRoleArn"] = self.execution_role_arn
        if self.log_group != DEFAULT_LOG_GROUP:
            properties["logConfiguration"] = {
                "logDriver": "awslogs",
                "options": {"awslogs-group": self.log_group},
            }
        return properties

    def auto_name(self, image: str) -> str:
        signature = json.dumps(self.auto_properties(image), sort_keys=True)
        return AUTO_PREFIX + hashlib.sha256(signature.encode()).hexdigest()[:16]

    def _auto(self, image: str) -> str:
        name = self.auto_name(image)
        existing = self._active(name)
        if existing:
            return str(max(existing, key=lambda d: int(d.get("revision") or 0))["jobDefinitionArn"])
        return self._register(name, self.auto_properties(image), {})

    def _register(self, name: str, properties: dict[str, Any], extra: dict[str, Any]) -> str:
        reply = self._client().register_job_definition(
            jobDefinitionName=name,
            type="container",
            containerProperties=properties,
            tags={"scripthut:managed": "true"},
            **extra,
        )
        self.registered += 1
        log.info("registered AWS Batch job definition %s", reply.get("jobDefinitionArn"))
        return str(reply["jobDefinitionArn"])
