"""AWS Batch array jobs: many tasks of one run with the same resources as one `SubmitJob`.

Pure functions (no boto3). An array job's children all get the same container overrides,
so the elements travel as data, never as code:

- The command is `BOOTSTRAP`, fixed text: it reads element `$AWS_BATCH_JOB_ARRAY_INDEX`
  from the bundle in the one variable `SCRIPTHUT_ARRAY`, exports that element's own
  variables (`export "NAME=value"`: assigned, never evaluated), drops the bundle and
  `exec`s the element's script as a plain job runs it (`bash -c <script>`). No task text is
  evaluated by the bootstrap, and no env value is ever written into a script.
- The bundle is, per element, NUL-separated fields `tag, task, k, script, k x NAME=value`,
  gzip-compressed and base64-encoded (the image needs `base64` and `gzip`, as coreutils and
  busybox have). A sweep's scripts differ in a few words, so they compress well.
- Batch starts each job (plain or a child) as an ECS task whose container overrides may
  hold at most 8192 characters (`Container Overrides length must be at most 8192`, FAILED
  at start): every job's overrides are kept within `OVERRIDES_BUDGET`, leaving room for the
  variables Batch adds. A group is split until each chunk fits (a chunk of one goes as a
  plain job). A plain job whose `bash -c <script>` does not fit goes as a bundle of one
  element, run by the same bootstrap (`plain_overrides`); one that does not fit even so
  fails at submission with the reason. SubmitJob's own limit (30 KiB) is far above it.
- The array's name is its tag (`arrays.array_tag`, `.` as `_`), also the job tag
  `scripthut:tag`; after a restart `find` lists the run's arrays by name and reads the
  element tags back from the bundle in the parent's description.
- Element `i` is the child `<array job id>:<i>`: polled, cancelled and logged (each child
  has its own CloudWatch stream) like a plain job.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scripthut.backends import batch_jobs as bj
from scripthut.backends.arrays import array_tag
from scripthut.backends.base import ArrayGroup, JobSpec
from scripthut.errors import ScriptHutError

BUNDLE_VAR = "SCRIPTHUT_ARRAY"
SIZE_KEY = "scripthut:array-size"
MIN_SIZE = 2  # Batch's own limits on arrayProperties.size
MAX_SIZE = 10_000
OVERRIDES_LIMIT = 8192  # characters ECS allows a task's container overrides
OVERRIDES_BUDGET = 6 * 1024  # of those, what ScriptHut uses (Batch adds its own variables)
_ARRAY_NAME = re.compile(r"^hut_([0-9]{8}-[0-9]{6}-[0-9a-f]+)_arr_([0-9a-f]{16})$")
_FIELDS = 4  # tag, task, number of variables, script

# Element `$AWS_BATCH_JOB_ARRAY_INDEX` of the bundle; element 0 in a plain job (a bundle of one).
BOOTSTRAP = r"""__hut_i=${AWS_BATCH_JOB_ARRAY_INDEX:-0}
case $__hut_i in ''|*[!0-9]*) echo 'scripthut: bad AWS_BATCH_JOB_ARRAY_INDEX' >&2; exit 2 ;; esac
for __hut_c in base64 gzip; do
    command -v "$__hut_c" >/dev/null 2>&1 || {
        echo "scripthut: array elements need $__hut_c in the image (or arrays: false)" >&2
        exit 2
    }
done
mapfile -d '' -t __hut_f < <(printf '%s' "${SCRIPTHUT_ARRAY:-}" | base64 -d | gzip -dc)
unset SCRIPTHUT_ARRAY
__hut_p=0
__hut_n=0
while :; do
    __hut_k=${__hut_f[__hut_p + 2]:-x}
    case $__hut_k in ''|*[!0-9]*)
        echo "scripthut: this array has no element $__hut_i" >&2
        exit 2 ;;
    esac
    [ "$__hut_n" -eq "$__hut_i" ] && break
    __hut_p=$((__hut_p + 4 + __hut_k))
    __hut_n=$((__hut_n + 1))
done
for ((__hut_j = 0; __hut_j < __hut_k; __hut_j++)); do
    export "${__hut_f[__hut_p + 4 + __hut_j]}"
done
__hut_s=${__hut_f[__hut_p + 3]}
unset __hut_f __hut_i __hut_c __hut_p __hut_n __hut_k __hut_j
exec bash -c "$__hut_s"
"""


@dataclass(frozen=True, slots=True)
class Element:
    """One element read back from an array's bundle."""

    tag: str
    task: str
    index: int


def array_name(tag: str) -> str:
    """The Batch job name of an array tag (`hut.<run>.arr.<hash>` -> `hut_<run>_arr_<hash>`)."""
    name = tag.replace(".", "_")
    if _ARRAY_NAME.fullmatch(name) is None:
        raise ScriptHutError(f"tag {tag!r} cannot name an AWS Batch array job")
    return name


def is_array_name(name: str) -> bool:
    return _ARRAY_NAME.fullmatch(name) is not None


def element_id(array_job_id: str, index: int) -> str:
    """Batch's id of one child (`<array job id>:<index>`)."""
    return f"{array_job_id}:{index}"


def largest_chunk(max_array_size: int | None, throttle: int | None) -> int:
    """The most elements of one array: Batch's limit, the configured one, and the throttle
    (Batch arrays have none of their own, so a chunk is never larger than it)."""
    sizes = [MAX_SIZE, max_array_size or MAX_SIZE, throttle or MAX_SIZE]
    return max(1, min(sizes))


def bundle(specs: Sequence[JobSpec]) -> str:
    """The elements' tags, tasks, scripts and variables as one variable's value."""
    raw = bytearray()
    for spec in specs:
        environment = bj.container_environment(spec.script, spec.env)
        pairs = [f"{name}={value}" for name, value in environment.items()]
        fields = [spec.tag, spec.task_id, str(len(pairs)), spec.script, *pairs]
        for text in fields:
            if "\0" in text:
                raise ScriptHutError(f"task '{spec.task_id}': a NUL byte cannot reach AWS Batch")
            raw += text.encode() + b"\0"
    return base64.b64encode(gzip.compress(bytes(raw), compresslevel=9, mtime=0)).decode()


def read_bundle(value: str) -> list[Element]:
    """The elements a bundle holds (empty when it cannot be read)."""
    try:
        fields = gzip.decompress(base64.b64decode(value, validate=True)).decode().split("\0")
    except (ValueError, OSError, EOFError):
        return []
    out: list[Element] = []
    at = 0
    while at + _FIELDS <= len(fields) and fields[at + 2].isdigit():
        out.append(Element(fields[at], fields[at + 1], len(out)))
        at += _FIELDS + int(fields[at + 2])
    return out


def elements_of(job: Mapping[str, Any]) -> list[Element]:
    """The elements of a described array parent, from its bundle variable (none for a plain
    job, even one whose script travels as a bundle of one)."""
    if not is_array_name(str(job.get("jobName") or "")):
        return []
    for item in (job.get("container") or {}).get("environment") or []:
        if item.get("name") == BUNDLE_VAR:
            return read_bundle(str(item.get("value") or ""))
    return []


def overrides(specs: Sequence[JobSpec]) -> dict[str, Any]:
    """The container overrides every child of the array gets."""
    return {
        "command": ["bash", "-c", BOOTSTRAP],
        "resourceRequirements": bj.resources(specs[0]),
        "environment": [{"name": BUNDLE_VAR, "value": bundle(specs)}],
    }


def overrides_length(value: Mapping[str, Any]) -> int:
    """The length of container overrides as ECS counts them (their compact JSON)."""
    return len(json.dumps(value, separators=(",", ":")))


def overrides_size(specs: Sequence[JobSpec]) -> int:
    return overrides_length(overrides(specs))


def plain_overrides(spec: JobSpec) -> dict[str, Any]:
    """A plain job's container overrides: readable (`bash -c <script>`, its variables) when
    they fit `OVERRIDES_BUDGET`, else the bootstrap and a bundle of this one element;
    ScriptHutError saying what to do when even that does not fit."""
    readable = bj.overrides(spec, bj.container_environment(spec.script, spec.env))
    if overrides_length(readable) <= OVERRIDES_BUDGET:
        return readable
    packed = overrides([spec])
    size = overrides_length(packed)
    if size > OVERRIDES_BUDGET:
        raise ScriptHutError(
            f"task '{spec.task_id}': its script ({len(spec.script.encode())} bytes) and "
            f"variables take {size} characters of container overrides even compressed, over "
            f"the {OVERRIDES_BUDGET} ScriptHut keeps them within (ECS allows "
            f"{OVERRIDES_LIMIT} per AWS Batch job, with the variables Batch adds): put the "
            "long part in a file of the run's source or of the image, and have the command "
            "read it"
        )
    return packed


def fitting_chunks(group: ArrayGroup, largest: int) -> list[ArrayGroup]:
    """`group` in chunks of at most `largest` whose overrides fit `OVERRIDES_BUDGET`."""
    out: list[ArrayGroup] = []
    todo = even_chunks(group, -(-len(group) // max(1, largest)))
    while todo:
        chunk = todo.pop(0)
        size = overrides_size(chunk.jobs) if len(chunk) > 1 else 0
        if size <= OVERRIDES_BUDGET:
            out.append(chunk)
            continue
        todo[:0] = even_chunks(chunk, _parts(chunk, size))
    return out


def _parts(chunk: ArrayGroup, size: int) -> int:
    """How many arrays `chunk` (whose overrides are `size` long) should become: the fixed
    part (the bootstrap) counted once, the bundle's bytes shared out per element."""
    fixed = len(json.dumps({**overrides(chunk.jobs[:1]), "environment": []}))
    per = max(1.0, (size - fixed) / len(chunk))
    fits = max(1, int((OVERRIDES_BUDGET - fixed) / per * 0.95))
    return min(len(chunk), max(2, -(-len(chunk) // fits)))


def even_chunks(group: ArrayGroup, parts: int) -> list[ArrayGroup]:
    """`group` as `parts` chunks whose sizes differ by one at most (7 in 3: 3, 2, 2), so
    that no chunk of one is left over when the others could give it an element."""
    size, jobs = len(group), group.jobs
    bounds = [size * part // parts for part in range(parts + 1)]
    sizes = sorted((bounds[i + 1] - bounds[i] for i in range(parts)), reverse=True)
    out: list[ArrayGroup] = []
    start = 0
    for count in sizes:
        out.append(ArrayGroup(jobs[start : start + count], group.throttle))
        start += count
    return out


def submit_args(
    group: ArrayGroup,
    *,
    queue: str,
    definition: str,
    backend: str,
    retry_attempts: int,
) -> dict[str, Any]:
    """The SubmitJob arguments of one array (at least `MIN_SIZE` elements)."""
    specs = group.jobs
    if not MIN_SIZE <= len(specs) <= MAX_SIZE:
        raise ScriptHutError(f"an AWS Batch array has {MIN_SIZE} to {MAX_SIZE} elements")
    for spec in specs:
        bj.check_environment(bj.container_environment(spec.script, spec.env))
    tag = array_tag(specs)
    first = specs[0]
    args: dict[str, Any] = {
        "jobName": array_name(tag),
        "jobQueue": queue,
        "jobDefinition": definition,
        "arrayProperties": {"size": len(specs)},
        "containerOverrides": overrides(specs),
        "retryStrategy": {"attempts": retry_attempts},
        "tags": {
            bj.TAG_KEY: tag,
            bj.RUN_KEY: first.run_id,
            SIZE_KEY: str(len(specs)),
            bj.BACKEND_KEY: backend,
        },
        "propagateTags": False,
    }
    if first.time_limit_s >= bj.MIN_TIMEOUT_S:
        args["timeout"] = {"attemptDurationSeconds": int(first.time_limit_s)}
    bj.check_request_size(args)
    return args


def elements_per_tag(
    parents: Sequence[Mapping[str, Any]], wanted: set[str]
) -> dict[str, tuple[float, str]]:
    """tag -> (created, element id) for wanted tags found in these described array parents."""
    found: dict[str, tuple[float, str]] = {}
    for job in parents:
        created = float(job.get("createdAt") or 0)
        for element in elements_of(job):
            if element.tag in wanted and (
                element.tag not in found or created < found[element.tag][0]
            ):
                found[element.tag] = (created, element_id(str(job["jobId"]), element.index))
    return found
