"""Build backend objects from config entries; say clearly which types have no driver yet."""

from __future__ import annotations

from pathlib import Path

from scripthut.backends.base import Backend
from scripthut.config import (
    BackendConfig,
    BatchBackendConfig,
    Config,
    EC2BackendConfig,
    LocalBackendConfig,
    PBSBackendConfig,
    SGEBackendConfig,
    SlurmBackendConfig,
)
from scripthut.errors import BackendUnavailable

AVAILABLE_TYPES = ("local", "slurm", "pbs", "sge", "batch", "ec2")


def create_backend(config: Config, entry: BackendConfig) -> Backend:
    """The driver for one configured backend; BackendUnavailable when there is none yet."""
    if isinstance(entry, LocalBackendConfig):
        from scripthut.backends.local import LocalBackend

        return LocalBackend(
            entry.name,
            max_concurrent=entry.max_concurrent,
            log_dir=Path(config.log_dir_for(entry)),
            cpus=entry.cpus,
            login_shell=entry.login_shell,
        )
    if isinstance(entry, SlurmBackendConfig):
        from scripthut.backends.remote import make_transport
        from scripthut.backends.slurm import SlurmBackend

        return SlurmBackend(
            entry.name,
            transport=make_transport(entry),
            max_concurrent=entry.max_concurrent,
            log_dir=config.log_dir_for(entry),
            account=entry.account,
            partition_map=entry.partition_map,
            default_partition=entry.default_partition,
            login_shell=entry.login_shell,
            arrays=entry.arrays,
            max_array_size=entry.max_array_size,
        )
    if isinstance(entry, PBSBackendConfig):
        from scripthut.backends.pbs import PBSBackend
        from scripthut.backends.remote import make_transport

        return PBSBackend(
            entry.name,
            transport=make_transport(entry),
            max_concurrent=entry.max_concurrent,
            log_dir=config.log_dir_for(entry),
            flavor=entry.flavor,
            queue=entry.queue,
            account=entry.account,
            bin_dir=entry.bin_dir,
            login_shell=entry.login_shell,
            arrays=entry.arrays,
            max_array_size=entry.max_array_size,
        )
    if isinstance(entry, SGEBackendConfig):
        from scripthut.backends.remote import make_transport
        from scripthut.backends.sge import SGEBackend

        return SGEBackend(
            entry.name,
            transport=make_transport(entry),
            max_concurrent=entry.max_concurrent,
            log_dir=config.log_dir_for(entry),
            account=entry.account,
            queue=entry.queue,
            partition_map=entry.partition_map,
            parallel_env=entry.parallel_env,
            memory_resource=entry.memory_resource,
            login_shell=entry.login_shell,
            arrays=entry.arrays,
            max_array_size=entry.max_array_size,
        )
    if isinstance(entry, BatchBackendConfig):
        from scripthut.backends.batch_setup import batch_backend

        return batch_backend(entry)
    if isinstance(entry, EC2BackendConfig):
        from scripthut.backends.ec2 import EC2Backend

        return EC2Backend(entry, data_dir=config.data_dir)
    raise BackendUnavailable(
        f"backend '{entry.name}' has type '{entry.type}', which is not available yet "
        f"in this version of ScriptHut (available: {', '.join(AVAILABLE_TYPES)})"
    )


class BackendRegistry:
    """Backends by name, created on first use and kept for the engine's lifetime."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._backends: dict[str, Backend] = {}

    def get(self, name: str) -> Backend:
        backend = self._backends.get(name)
        if backend is None:
            backend = create_backend(self.config, self.config.backend(name))
            self._backends[name] = backend
        return backend

    def add(self, backend: Backend) -> None:
        """Use a ready-made backend under its name (embedding and tests)."""
        self._backends[backend.name] = backend

    def forget(self, name: str) -> Backend | None:
        """Stop handing out this backend (the config changed); the caller closes it."""
        return self._backends.pop(name, None)

    def started(self) -> list[Backend]:
        return list(self._backends.values())

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
