"""Sources of workflow files (git repositories and folders on a backend) and their syncs."""

from scripthut.sources.cache import SyncCache
from scripthut.sources.state import SyncState, WorkflowFile
from scripthut.sources.sync import Provenance, Sources, SyncFailed, transports_of

__all__ = [
    "Provenance",
    "Sources",
    "SyncCache",
    "SyncFailed",
    "SyncState",
    "WorkflowFile",
    "transports_of",
]
