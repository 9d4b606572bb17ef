"""Job arrays, the part every scheduler shares (Slurm, PBS `-t`/`-J`, Grid Engine `-t`).

Many ready tasks of one run that ask for the same resources become one array job. Each task
keeps its own attempt (tag, intent row, task script, logs, exit-code file, env): the array is
only a way to hand the scheduler many scripts in one submission.

- `ArrayGroup`: the jobs of one array, in element order, and the throttle (most elements
  running at once).
- `group_jobs`: split a batch into arrays (jobs of one run with the same `array_key`, at
  least `minimum` of them) and plain jobs.
- `split_group`: a group as chunks the site accepts (MaxArraySize and the like).
- `array_tag`: the array's own tag (its `--comment`, index file and wrapper name),
  derived from its elements' tags.
- `wrapper_body`: the array job's script after its scheduler header. It maps the element's
  index to that element's script and log paths through bash arrays of quoted literals,
  opens its logs (created 0600) and `exec`s the script: no user text is ever evaluated by
  the wrapper, and the element runs exactly as a plain job would (its shebang, its env, its
  exit-code file). The element scripts were written at submission as one file, the bundle,
  and each element first copies its own bytes of it to its script file: one file created
  per array at submission instead of one per element.
  Its first line lists the element tags: after a crash `find` reads it to learn which
  element of which array an attempt is (`members_script` / `read_members`).
- `ArrayFiles` / `bundled_submission`: where an array's own files go (wrapper, log, bundle)
  and the array job as one `remote.Submission`, the same for every scheduler.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace

from scripthut.backends.base import ArrayGroup, JobPaths, JobSpec
from scripthut.backends.remote import Bundle, Section, Submission, job_dirs
from scripthut.workflow.script import shell_path

ARRAYS_DIR = ".arrays"
TAGS_LINE = "# scripthut array tags:"
BUNDLE_SUFFIX = ".elements"  # not `.sh`: `members_script` reads only the wrappers


def array_key(spec: JobSpec) -> Hashable:
    """What must be equal for two jobs to share an array: run and every resource asked for."""
    return (
        spec.run_id,
        spec.partition,
        spec.cpus,
        spec.memory_mb,
        spec.time_limit_s,
        spec.gres,
        spec.image,
    )


def group_jobs(
    jobs: Iterable[JobSpec], *, minimum: int = 2
) -> tuple[list[JobSpec], list[list[JobSpec]]]:
    """(plain jobs, groups): jobs sharing an `array_key` with at least `minimum - 1` others
    form a group (in batch order); the rest stay plain."""
    by_key: dict[Hashable, list[JobSpec]] = {}
    for spec in jobs:
        by_key.setdefault(array_key(spec), []).append(spec)
    plain: list[JobSpec] = []
    groups: list[list[JobSpec]] = []
    for members in by_key.values():
        if len(members) >= max(2, minimum):
            groups.append(members)
        else:
            plain.extend(members)
    return plain, groups


def split_group(group: ArrayGroup, largest: int) -> list[ArrayGroup]:
    """`group` as near-equal chunks of at most `largest` elements, same throttle."""
    size = len(group.jobs)
    if size <= largest:
        return [group]
    chunks = -(-size // max(1, largest))
    step = -(-size // chunks)
    return [
        ArrayGroup(group.jobs[start : start + step], group.throttle)
        for start in range(0, size, step)
    ]


def array_tag(jobs: Sequence[JobSpec]) -> str:
    """`hut.<run>.arr.<hash of the element tags>`: a hut tag (kept out of external jobs),
    safe as a file name and a comment, the same whenever the same elements are submitted."""
    digest = hashlib.sha256(" ".join(spec.tag for spec in jobs).encode()).hexdigest()[:16]
    return f"hut.{jobs[0].run_id}.arr.{digest}"


def element_id(array_job_id: str, index: int) -> str:
    """Slurm's id of one element (`123_4`)."""
    return f"{array_job_id}_{index}"


@dataclass(frozen=True, slots=True)
class ArrayFiles:
    """An array job's own files in `folder`: `<tag>.sh` (the wrapper, whose tags line `find`
    reads), `<tag>.log` (the wrapper's own output) and `<tag>.elements` (the bundle)."""

    tag: str
    folder: str

    @property
    def wrapper(self) -> str:
        return f"{self.folder}/{self.tag}.sh"

    @property
    def log(self) -> str:
        return f"{self.folder}/{self.tag}.log"

    @property
    def bundle(self) -> str:
        return f"{self.folder}/{self.tag}{BUNDLE_SUFFIX}"

    def head(self, jobs: Sequence[JobSpec]) -> JobSpec:
        """The array job as one job for the scheduler's header: the first element's
        resources, the array's tag, `<first name> (+<n-1>)`, the wrapper and its log."""
        paths = JobPaths(self.log, self.log, "", self.wrapper)
        name = f"{jobs[0].name} (+{len(jobs) - 1})"
        return replace(jobs[0], tag=self.tag, name=name, paths=paths)


def array_files(jobs: Sequence[JobSpec], folder: str) -> ArrayFiles:
    """The files of the array of `jobs`, kept in `folder` (`<log_dir>/.arrays`)."""
    return ArrayFiles(array_tag(jobs), folder.rstrip("/") or "/")


def bundled_submission(files: ArrayFiles, wrapper: str, jobs: Sequence[JobSpec]) -> Submission:
    """The array job for `remote.submit_script`: the wrapper `files.wrapper` (its log beside
    it), the element scripts written first as the one file `files.bundle`."""
    dirs = {files.folder} | {d for spec in jobs for d in job_dirs(spec.paths)}
    return Submission(
        files.tag,
        wrapper,
        files.wrapper,
        tuple(sorted(dirs)),
        (files.log, ""),
        Bundle(files.bundle, tuple(spec.script for spec in jobs)),
    )


def wrapper_body(jobs: Sequence[JobSpec], *, index_expr: str, bundle: str, first: int = 0) -> str:
    """Bash after the header: run element `index_expr - first`'s own script with its logs.

    `index_expr` is trusted text naming the scheduler's index variable (`$SLURM_ARRAY_TASK_ID`,
    `$SGE_TASK_ID`, ...); everything of the tasks is a quoted literal. The element scripts
    were submitted as the one file `bundle` (`bundled_submission`): the element writes its
    own script (0700) from its bytes there when it starts, then runs it; a short or failed
    copy stops it (exit 2, the reason in its .err).
    """

    def literal(paths: Iterable[str]) -> str:
        return " ".join(shell_path(path) for path in paths)

    return "".join(
        [
            f"{TAGS_LINE} {' '.join(spec.tag for spec in jobs)}\n",
            f"__hut_scripts=({literal(spec.paths.script for spec in jobs)})\n",
            f"__hut_outs=({literal(spec.paths.stdout for spec in jobs)})\n",
            f"__hut_errs=({literal(spec.paths.stderr for spec in jobs)})\n",
            *_bundle_arrays(jobs, bundle),
            f"__hut_i={index_expr}\n",
            "case $__hut_i in ''|*[!0-9]*) __hut_i=-1 ;; "
            f"*) __hut_i=$((__hut_i - {int(first)})) ;; esac\n",
            'if [ "$__hut_i" -lt 0 ] || [ "$__hut_i" -ge "${#__hut_scripts[@]}" ]; then\n',
            f'    echo {shlex.quote("scripthut: this array has no element ")}"$__hut_i" >&2\n',
            "    exit 2\n",
            "fi\n",
            # The element's logs are created private, as a plain job's are before sbatch;
            # its own commands get the job's umask back.
            "__hut_umask=$(umask)\n",
            "umask 077\n",
            'exec >> "${__hut_outs[__hut_i]}" 2>> "${__hut_errs[__hut_i]}"\n',
            _UNBUNDLE,
            'umask "$__hut_umask"\n',
            'exec "${__hut_scripts[__hut_i]}"\n',
        ]
    )


# The element's bytes of the bundle become its script file; a short or failed copy (the
# bundle gone, a full disk) stops the element before anything runs.
_UNBUNDLE = r"""__hut_s=${__hut_scripts[__hut_i]}
__hut_from=0
if [ "$__hut_i" -gt 0 ]; then __hut_from=${__hut_ends[__hut_i - 1]}; fi
__hut_len=$((${__hut_ends[__hut_i]} - __hut_from))
command -p tail -c +"$((__hut_from + 1))" -- "$__hut_bundle" 2>/dev/null |
    command -p head -c "$__hut_len" > "$__hut_s"
command -p chmod 700 -- "$__hut_s" 2>/dev/null
__hut_got=$(command -p wc -c < "$__hut_s" 2>/dev/null)
if [ "$((__hut_got + 0))" -ne "$__hut_len" ] || [ ! -x "$__hut_s" ]; then
    echo "scripthut: cannot write this element's script $__hut_s from $__hut_bundle" >&2
    exit 2
fi
"""


def _bundle_arrays(jobs: Sequence[JobSpec], bundle: str) -> list[str]:
    """The bundle's path and where each element's script ends in it (bytes)."""
    ends: list[str] = []
    end = 0
    for spec in jobs:
        end += len(spec.script.encode())
        ends.append(str(end))
    return [f"__hut_bundle={shell_path(bundle)}\n", f"__hut_ends=({' '.join(ends)})\n"]


def tags_of_wrapper(line: str) -> list[str]:
    """The element tags a wrapper's tags line lists (empty if it is not that line)."""
    if not line.startswith(TAGS_LINE):
        return []
    return line[len(TAGS_LINE) :].split()


def members_script(tags: Sequence[str], log_dir: str) -> str:
    """Bash: a `members` section of `tag array index` lines for wanted tags found in the tags
    lines of the wrappers under `<log_dir>/.arrays`, and `__hut_arrays` (those arrays)."""
    words = len(TAGS_LINE.split())
    awk = (
        'BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) k[w[i]] = 1 } '
        f"index($0, {_awk_string(TAGS_LINE)}) == 1 {{ "
        'a = FILENAME; sub(/.*\\//, "", a); sub(/\\.sh$/, "", a); '
        f"for (i = {words + 1}; i <= NF; i++) if ($i in k) print $i, a, i - {words + 1}; "
        "nextfile }"
    )
    folder = shell_path(f"{log_dir.rstrip('/')}/{ARRAYS_DIR}")
    return "".join(
        [
            f"__hut_members=$(for __hut_f in {folder}/*.sh; do "
            '[ -f "$__hut_f" ] && printf "%s\\0" "$__hut_f"; done | '
            f"xargs -0r awk -v want={shlex.quote(' '.join(tags))} {shlex.quote(awk)} "
            "2>/dev/null)\n",
            'printf \'%s members\\n%s\\n\' "$__hut_m" "$__hut_members"\n',
            "__hut_arrays=$(awk '{ print $2 }' <<< \"$__hut_members\" | sort -u | tr '\\n' ' ')\n",
        ]
    )


def _awk_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_members(sections: Iterable[Section]) -> dict[str, list[tuple[str, int]]]:
    """tag -> every (array tag, index) listing it (a resubmission may list it again)."""
    found: dict[str, list[tuple[str, int]]] = {}
    for section in sections:
        if section.name != "members":
            continue
        for line in section.body.splitlines():
            words = line.split()
            if len(words) == 3 and words[2].isdigit():
                found.setdefault(words[0], []).append((words[1], int(words[2])))
    return found
