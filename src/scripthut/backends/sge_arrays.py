"""Grid Engine job arrays: site limits, the array job's script, element ids and ranges.

- `SiteLimits` / `limits_script` / `read_limits`: `max_aj_tasks` (most tasks in one array)
  and `max_aj_instances` (most tasks of one array running at once) from `qconf -sconf`.
- `wrapper_script`: the shared `#$` header, `#$ -t 1-<n>`, `#$ -tc <throttle>`, then
  `arrays.wrapper_body` indexed by `$SGE_TASK_ID` (which starts at 1), each element's
  script copied from the array's bundle when it starts.
- `element_id` / `split_id`: an element is `<job>.<task>` (`123.4`), as `qstat -xml` and
  `qacct` name array tasks; element `i` of the wrapper is task `i + 1`.
- `task_numbers`: the tasks a pending array's `<tasks>` range (`2-10:1`, `1,3-5:2`) holds;
  `task_ranges`: element ids as `qdel <job> -t a-b` ranges.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scripthut.backends.arrays import wrapper_body
from scripthut.backends.base import JobSpec
from scripthut.backends.remote import Section, capture
from scripthut.workflow.script import SHEBANG

DEFAULT_MAX_AJ_TASKS = 75000  # Grid Engine's default max_aj_tasks
_CONF_LINE = re.compile(r"^\s*(max_aj_tasks|max_aj_instances)\s+([0-9]+)", re.MULTILINE)
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?")


@dataclass(frozen=True, slots=True)
class SiteLimits:
    """`max_aj_tasks` and `max_aj_instances` (0 in qconf: no limit, kept as None)."""

    max_aj_tasks: int | None = DEFAULT_MAX_AJ_TASKS
    max_aj_instances: int | None = None

    def largest_array(self, configured: int | None) -> int:
        sizes = [self.max_aj_tasks, configured]
        return max(1, min((size for size in sizes if size is not None), default=1 << 30))

    def throttle(self, throttle: int | None) -> int | None:
        limits = [throttle, self.max_aj_instances]
        present = [limit for limit in limits if limit is not None]
        return min(present) if present else None


def limits_script() -> str:
    """`qconf -sconf` (the global configuration) as section `sconf`."""
    return capture("sconf", "qconf -sconf")


def read_limits(sections: Sequence[Section]) -> SiteLimits | None:
    """The limits, or None when `qconf -sconf` did not answer."""
    section = next((s for s in sections if s.name == "sconf"), None)
    if section is None or section.rc() != 0:
        return None
    values = {name: int(value) for name, value in _CONF_LINE.findall(section.body)}
    tasks = values.get("max_aj_tasks", DEFAULT_MAX_AJ_TASKS)
    instances = values.get("max_aj_instances", 0)
    return SiteLimits(tasks or None, instances or None)


def array_options(size: int, throttle: int | None) -> list[tuple[str, str | None]]:
    """`-t 1-<size>`, and `-tc <throttle>` when it limits anything."""
    limited = throttle is not None and 0 < throttle < size
    return [("t", f"1-{size}"), ("tc", str(throttle) if limited else None)]


def wrapper_script(
    header: Sequence[str], options: Sequence[str], jobs: Sequence[JobSpec], bundle: str
) -> str:
    """The array job: the shared `#$` header, the array options, the body (its elements'
    scripts in the file `bundle`)."""
    body = wrapper_body(jobs, index_expr="${SGE_TASK_ID-}", bundle=bundle, first=1)
    return "\n".join([SHEBANG, *header, *options]) + "\n" + body


def element_id(array_job_id: str, index: int) -> str:
    """Grid Engine's id of element `index` (0-based) of array job `array_job_id`."""
    return f"{array_job_id}.{index + 1}"


def split_id(job_id: str) -> tuple[str, str | None]:
    """(`123`, `4`) for `123.4`; (`123`, None) for a plain job."""
    number, _, task = job_id.partition(".")
    return number, task or None


def task_numbers(tasks: str) -> set[int]:
    """The task numbers of a `<tasks>` range list; empty when it is not one."""
    found: set[int] = set()
    for part in tasks.split(","):
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            return set()
        start = int(match.group(1))
        end = int(match.group(2) or start)
        step = max(1, int(match.group(3) or 1))
        if end - start > 1_000_000:
            return set()
        found.update(range(start, end + 1, step))
    return found


def task_ranges(job_ids: Iterable[str]) -> list[tuple[str, str]]:
    """(job number, `a-b`) for each run of consecutive tasks among the element ids."""
    tasks: dict[str, set[int]] = {}
    for job_id in job_ids:
        number, task = split_id(job_id)
        if task is not None and task.isdigit():
            tasks.setdefault(number, set()).add(int(task))
    out: list[tuple[str, str]] = []
    for number, found in tasks.items():
        ordered = sorted(found)
        start = previous = ordered[0]
        for following in [*ordered[1:], None]:
            if following is not None and following == previous + 1:
                previous = following
                continue
            out.append((number, f"{start}-{previous}"))
            if following is not None:
                start = previous = following
    return out
