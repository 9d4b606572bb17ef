"""What a workflow document may hold: lengths, CPUs, ids, memory sizes and time limits.

The same limits hold for workflow files, REST bodies and the Python API.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from math import ceil

MAX_ID = 200
SAFE_ID = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_ID - 1}}}")
MAX_CPUS = 4096
# Length limits (characters).
MAX_NAME = 200  # a task's or a run's name
MAX_TEXT = 4096  # paths, partition, gres, image, memory, time limit, dependency patterns
MAX_COMMAND = 131_072  # a task's command (Linux's limit on one argument string)
MAX_ENV_VALUE = 32_768  # one value of an env rule's set/append/if, and its init text
MAX_GROUP_NAME = 200  # an env_groups name
INT64 = (-(2**63), 2**63 - 1)
TIME_FORMS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"

_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?) *(?:([KMGT])I?B?)?", re.ASCII | re.IGNORECASE)
_MB_PER_UNIT = {
    "K": Fraction(1, 1024),
    "M": Fraction(1),
    "G": Fraction(1024),
    "T": Fraction(1 << 20),
}
_TIME = re.compile(r"(?:([0-9]+)-)?([0-9]+)(?::([0-9]+))?(?::([0-9]+))?", re.ASCII)


@lru_cache(maxsize=1024)
def parse_memory_mb(text: str) -> int:
    """Megabytes of a Slurm-style memory size ("4G", "512", "1.5GiB"); no unit means MB."""
    found = _MEMORY.fullmatch(text)
    if found is None:
        raise ValueError(
            f"'{text}' is not a memory size: a number with an optional unit K, M, G or T "
            "(KB/KiB... also accepted; no unit means MB)"
        )
    amount, unit = found.groups()
    megabytes = ceil(Fraction(amount) * _MB_PER_UNIT[(unit or "M").upper()])
    if megabytes < 1:
        raise ValueError(f"'{text}' is zero: a task needs some memory")
    return megabytes


@lru_cache(maxsize=1024)
def parse_time_limit_s(text: str) -> int:
    """Seconds of a Slurm time limit in one of the forms of TIME_FORMS."""
    found = _TIME.fullmatch(text)
    if found is None:
        raise ValueError(f"'{text}' is not a Slurm time limit: use {TIME_FORMS}")
    days, *parts = found.groups()
    numbers = [int(part) for part in parts if part is not None]
    if days is None:
        units = [(60, None), (1, 60)] if len(numbers) < 3 else [(3600, None), (60, 60), (1, 60)]
    else:
        units = [(86400, None), (3600, 24), (60, 60), (1, 60)]
        numbers.insert(0, int(days))
    seconds = 0
    for number, (scale, bound) in zip(numbers, units, strict=False):
        if bound is not None and number >= bound:
            raise ValueError(f"'{text}' has a field of {number} where at most {bound - 1} fits")
        seconds += number * scale
    if seconds <= 0:
        raise ValueError(f"'{text}' is zero: a time limit must be longer than that")
    return seconds
