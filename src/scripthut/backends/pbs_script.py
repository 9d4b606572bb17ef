"""PBS's words, written: the `#PBS` header of one job in the Torque or PBS Pro dialect.

Pure functions only. `qsub` reads `#PBS` lines itself (no shell) and splits them at
white space, so every value that reaches one is checked against a plain character set
and refused with a clear error otherwise; the job's name is its ScriptHut tag. The
job's logs are not named here: the script sends its own output to them (see
`log_redirect`), so they grow while the job runs, as PBS's spooled files do not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scripthut.workflow.script import shell_path

FLAVORS = ("torque", "pbspro")
_WORD = re.compile(r"[A-Za-z0-9_.@+-]+")
_GPU = re.compile(r"gpus?(?::([0-9]+))?")
_CHUNK_RESOURCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=[A-Za-z0-9_.+-]+")


@dataclass(frozen=True, slots=True)
class Resources:
    """What one job asks for, in ScriptHut's words."""

    cpus: int = 1
    memory_mb: int = 4096
    time_limit_s: int = 3600
    gres: str | None = None


def pbs_word(kind: str, value: str) -> str:
    """`value` unchanged if a `#PBS` line can carry it, else ValueError naming `kind`."""
    if not _WORD.fullmatch(value):
        raise ValueError(
            f"{kind} {value!r} cannot be passed to qsub: use letters, digits and _ . @ + -"
        )
    return value


def pbs_memory(mb: int) -> str:
    """`4096` MB -> `4gb`; `1500` -> `1500mb` (PBS sizes are lower-case, integer)."""
    mb = max(1, int(mb))
    return f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"


def walltime(seconds: int) -> str:
    """`HH:MM:SS`, hours past 24 allowed."""
    seconds = max(1, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def gpu_resources(flavor: str, gres: str | None) -> list[str]:
    """A task's `gres` in the dialect: `gpu:2` -> Torque `gpus=2`, PBS Pro `ngpus=2`.

    Other chunk resources may be given as PBS writes them (`ngpus=2:gpu_model=a100`); a
    Slurm GPU type (`gpu:a100:2`) has no standard PBS spelling and is refused.
    """
    if gres is None or not gres.strip():
        return []
    text = gres.strip()
    match = _GPU.fullmatch(text)
    if match is not None:
        count = int(match.group(1) or 1)
        return [f"gpus={count}" if flavor == "torque" else f"ngpus={count}"]
    parts = text.split(":")
    if all(_CHUNK_RESOURCE.fullmatch(part) for part in parts):
        return parts
    raise ValueError(
        f"gres {gres!r} has no PBS spelling: use 'gpu:N', or resources as PBS names them "
        "('ngpus=2:gpu_model=a100')"
    )


def resource_lines(flavor: str, res: Resources) -> list[str]:
    """`-l` values: Torque `nodes=1:ppn=N[:gpus=G]`, `mem=`; PBS Pro one `select` chunk."""
    cpus = max(1, int(res.cpus))
    memory = pbs_memory(res.memory_mb)
    extra = gpu_resources(flavor, res.gres)
    if flavor == "torque":
        return [
            f"walltime={walltime(res.time_limit_s)}",
            ":".join([f"nodes=1:ppn={cpus}", *extra]),
            f"mem={memory}",
        ]
    return [
        f"walltime={walltime(res.time_limit_s)}",
        ":".join([f"select=1:ncpus={cpus}:mem={memory}", *extra]),
    ]


def job_header(
    flavor: str,
    *,
    name: str,
    queue: str | None,
    account: str | None,
    res: Resources,
) -> list[str]:
    """The `#PBS` lines of one job (an array job adds its own `-t`/`-J` line to these)."""
    if flavor not in FLAVORS:
        raise ValueError(f"unknown PBS flavor {flavor!r} (torque or pbspro)")
    lines = [f"#PBS -N {pbs_word('job name', name)}", "#PBS -S /bin/bash"]
    if queue:
        lines.append(f"#PBS -q {pbs_word('queue', queue)}")
    if account:
        lines.append(f"#PBS -A {pbs_word('account', account)}")
    lines.extend(f"#PBS -l {value}" for value in resource_lines(flavor, res))
    return lines


def log_redirect(stdout: str, stderr: str) -> str:
    """The line that sends the rest of the script's output to its logs (appending)."""
    return f"exec >>{shell_path(stdout)} 2>>{shell_path(stderr)} || exit 1"
