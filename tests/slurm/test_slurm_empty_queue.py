"""A poll when the user has no job at all in squeue (an empty queue is the common case on a
quiet cluster): the poll script must run to its end, not die on the empty line its empty
squeue output reads as, which made the backend look unreachable."""

from __future__ import annotations

import subprocess

from scripthut.backends.registry import create_backend
from scripthut.backends.remote import END, new_marker, parse_sections
from scripthut.backends.slurm import SlurmBackend
from scripthut.config import parse_config
from tests.slurm.conftest import SlurmRig
from tests.slurm.test_slurm_backend import rig_backend_entry

NO_JOBS_USER = "nobody"  # a system account that never has jobs on the rig


def test_a_poll_of_an_empty_queue_reaches_its_end(slurm_rig: SlurmRig) -> None:
    config = parse_config(
        {"backends": [rig_backend_entry(slurm_rig, "ssh", "~/hut-tests/empty")]}, source="test"
    )
    backend = create_backend(config, config.backend("rig"))
    assert isinstance(backend, SlurmBackend)
    marker = new_marker()
    script = backend.poll_script([], NO_JOBS_USER, marker)
    done = subprocess.run(
        slurm_rig.ssh_argv("bash", "-s"), input=script, capture_output=True, text=True, timeout=60
    )
    sections = parse_sections(done.stdout, marker)
    squeue = [s for s in sections if s.name == "squeue"]
    assert len(squeue) == 1 and squeue[0].rc() == 0 and squeue[0].body.strip() == "", done
    assert sections[-1].name == END, (done.stdout, done.stderr)
    assert "bad array subscript" not in done.stderr
