"""Slurm job arrays: site limits, the array job's script, and finding elements again.

- `SiteLimits` / `limits_script` / `read_limits`: `MaxArraySize` and `MaxJobCount` from
  `scontrol show config`, and the user's `MaxSubmitJobs` from the accounting associations
  (when accounting answers), in one round trip; the backend asks once and keeps the answer.
- `wrapper_script`: `#SBATCH --array=0-<n-1>[%throttle]`, the shared resources of the
  elements, the array's tag in `--comment`, then `arrays.wrapper_body` indexed by
  `$SLURM_ARRAY_TASK_ID` (the array job's files and bundle: `arrays.ArrayFiles`).
- `members_script` / `read_members` (in `arrays`, shared by every scheduler): after a crash,
  which element of which array an attempt tag is, from the wrappers' tags lines.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from scripthut.backends import slurm_parse as sp
from scripthut.backends.arrays import element_id, wrapper_body
from scripthut.backends.arrays import members_script as members_script
from scripthut.backends.arrays import read_members as read_members
from scripthut.backends.base import ArrayGroup, JobSpec
from scripthut.backends.remote import Section, capture
from scripthut.workflow.script import SHEBANG

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize
_CONFIG_LINE = re.compile(r"^\s*(MaxArraySize|MaxJobCount)\s*=\s*([0-9]+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class SiteLimits:
    """What the cluster allows: largest array (elements), jobs in the system, jobs per user."""

    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE
    max_job_count: int | None = None
    max_submit_jobs: int | None = None

    def concurrency(self, configured: int) -> int:
        """Most jobs (array elements count one each) to keep queued or running: the config's,
        at most MaxSubmitJobs and nine tenths of MaxJobCount (the controller's job table,
        which holds every element, pending or ended less than MinJobAge ago, of every user:
        past it sbatch blocks, retrying, instead of failing)."""
        limits = [configured, self.max_submit_jobs]
        if self.max_job_count is not None:
            limits.append(max(1, self.max_job_count * 9 // 10))
        return min(limit for limit in limits if limit is not None)

    def largest_array(self, configured: int | None) -> int:
        """Most elements in one array: the site's limit, the config's, MaxSubmitJobs."""
        sizes = [self.max_array_size, configured, self.max_submit_jobs]
        return max(1, min(size for size in sizes if size is not None))


def limits_script(user: str) -> str:
    """`scontrol show config` and the user's association limits (sections `config`, `assoc`)."""
    sacctmgr = [
        "sacctmgr",
        "--noheader",
        "--parsable2",
        "show",
        "associations",
        f"where user={user}",
        "format=MaxSubmitJobs",
    ]
    return capture("config", "scontrol show config") + capture("assoc", shlex.join(sacctmgr))


def read_limits(sections: Sequence[Section]) -> SiteLimits | None:
    """The limits, or None when `scontrol show config` did not answer."""
    by_name = {section.name: section for section in sections}
    config = by_name.get("config")
    if config is None or config.rc() != 0:
        return None
    values = dict(_CONFIG_LINE.findall(config.body))
    assoc = by_name.get("assoc")
    submit: list[int] = []
    if assoc is not None and assoc.rc() == 0:
        submit = [int(word) for word in assoc.body.split() if word.strip().isdigit()]
    return SiteLimits(
        max_array_size=int(values.get("MaxArraySize", DEFAULT_MAX_ARRAY_SIZE)),
        max_job_count=int(values["MaxJobCount"]) if "MaxJobCount" in values else None,
        max_submit_jobs=min(submit) if submit else None,
    )


def array_option(size: int, throttle: int | None) -> str:
    """`0-<size-1>`, with `%<throttle>` when it limits anything."""
    option = f"0-{size - 1}"
    if throttle is not None and 0 < throttle < size:
        option += f"%{throttle}"
    return option


def wrapper_script(
    header: Sequence[str], jobs: Sequence[JobSpec], throttle: int | None, bundle: str
) -> str:
    """The array job: `header` (#SBATCH lines of the shared resources), the array, the body
    (its elements' scripts in the file `bundle`)."""
    lines = [
        SHEBANG,
        *header,
        f"#SBATCH --array={array_option(len(jobs), throttle)}",
        "#SBATCH --open-mode=append",
    ]
    body = wrapper_body(jobs, index_expr="${SLURM_ARRAY_TASK_ID-}", bundle=bundle)
    return "\n".join(lines) + "\n" + body


def base_job_id(job_id: str) -> str:
    """The array's job id of an element id (`123_4` or `123_[4-9%2]` -> `123`)."""
    return job_id.split("_", 1)[0]


def resolve_members(
    members: dict[str, list[tuple[str, int]]], arrays: dict[str, str]
) -> dict[str, str]:
    """tag -> element job id, for member tags whose array has a known job id."""
    found: dict[str, str] = {}
    for tag, places in members.items():
        for array, index in places:
            job_id = arrays.get(array)
            if job_id is not None and sp.is_job_id(job_id):
                found[tag] = element_id(job_id, index)
                break
    return found


def found_tags(
    tags: Sequence[str], members: dict[str, list[tuple[str, int]]], ids: dict[str, str]
) -> dict[str, str]:
    """tag -> job id: plain jobs by their own tag, elements through their array."""
    found = {tag: ids[tag] for tag in tags if tag in ids}
    elements = resolve_members(members, ids)
    found.update({tag: job_id for tag, job_id in elements.items() if tag not in found})
    return found


def packed(groups: Sequence[ArrayGroup], elements: int) -> list[list[ArrayGroup]]:
    """Arrays packed into round trips of about `elements` elements (at least one array each)."""
    trips: list[list[ArrayGroup]] = []
    size = 0
    for group in groups:
        if not trips or size + len(group) > elements:
            trips.append([])
            size = 0
        trips[-1].append(group)
        size += len(group)
    return trips
