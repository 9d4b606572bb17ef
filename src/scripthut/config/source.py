"""Where a configuration comes from, and reading it again: on a reload, and per folder.

A `ConfigSource` names the global file (explicit path, $SCRIPTHUT_CONFIG or the XDG one) and
the folder where work starts. `load()` reads the global file plus the project file found
from that folder. `for_folder()` gives the configuration for work started elsewhere (a
run's folder), read once per version of its project file. `signature()` changes whenever
any file in use (or one that would now be found) changes, which is what a watcher polls.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripthut.config.layers import (
    GLOBAL,
    PROJECT,
    Layer,
    Stamp,
    build,
    find_project_path,
    global_candidate,
    read_layer,
    stamp,
)
from scripthut.config.legacy import warn_legacy
from scripthut.config.models import Config
from scripthut.errors import InvalidInput

log = logging.getLogger("scripthut.config")

Adjust = Callable[[Config], None]
_STALE: Stamp = (-1, -1, -1)  # read again on next use


@dataclass(frozen=True, slots=True)
class LayerFile:
    """A file of the configuration: its layer, path, and whether it exists."""

    layer: str
    path: Path
    exists: bool

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "path": str(self.path), "exists": self.exists}


@dataclass(slots=True)
class _Project:
    stamp: Stamp
    config: Config | None  # the last good reading
    error: InvalidInput | None  # the current reading's problems


class ConfigSource:
    """The files a configuration is read from, read again on demand."""

    def __init__(
        self,
        explicit: str | Path | None = None,
        start: str | Path | None = None,
        adjust: Adjust | None = None,
    ) -> None:
        self.explicit = explicit
        self.start = Path(start).absolute() if start is not None else Path.cwd()
        self.adjust = adjust
        self._global: Layer | None = None
        self._global_path: Path | None = None
        self._bare: Config | None = None  # the global file alone
        self._projects: dict[Path, _Project] = {}
        self._lock = threading.Lock()
        self.loaded: tuple[object, ...] | None = None

    # -- reading ---------------------------------------------------------------------------

    def load(self) -> Config:
        """The global file plus the start folder's project file; InvalidInput if broken."""
        path, named = global_candidate(self.explicit)
        title = f"invalid config file {path}"
        project_path = find_project_path(self.start, exclude=path)
        stamps = ((path, stamp(path)), (project_path, stamp(project_path)))  # before reading
        layer = read_layer(GLOBAL, path, title) if named or path.is_file() else None
        project = None
        if project_path is not None:
            project = read_layer(PROJECT, project_path, f"invalid config file {project_path}")
        config = self._finish(build(layer, project, path), [layer, project])
        bare = self._finish(build(layer, None, path), []) if project else config
        with self._lock:
            self._global, self._global_path, self._bare = layer, path, bare
            # other folders' files are read again on next use, their last good kept
            self._projects = {
                p: _Project(_STALE, e.config, None) for p, e in self._projects.items()
            }
            if project_path is not None:
                self._projects[project_path] = _Project(stamps[1][1], config, None)
            known = tuple((p, self._projects[p].stamp) for p in sorted(self._projects))
        self.loaded = (*stamps, known)  # what `signature()` said when this was read
        return config

    def _finish(self, config: Config, layers: list[Layer | None]) -> Config:
        for layer in layers:
            if layer is not None:
                warn_legacy(layer.data, str(layer.path))
        data_dir = os.environ.get("SCRIPTHUT_DATA_DIR")
        if data_dir:
            config.settings.data_dir = Path(data_dir).expanduser().absolute()
        if self.adjust is not None:
            self.adjust(config)
        config.layers = self
        return config

    def for_folder(self, config: Config, folder: Path, *, strict: bool = False) -> Config:
        """The configuration for work started in `folder` (see Config.for_folder)."""
        global_path = self._global_path
        if global_path is None or self._bare is None:
            return config
        project_path = find_project_path(folder, exclude=global_path)
        if project_path is None:
            return self._bare
        current = stamp(project_path)
        with self._lock:
            known = self._projects.get(project_path)
        if known is None or known.stamp != current:
            known = self._read_project(project_path, current, known)
        if known.error is not None and (strict or known.config is None):
            if strict:
                raise known.error
            return self._bare
        assert known.config is not None
        return known.config

    def _read_project(self, path: Path, current: Stamp, known: _Project | None) -> _Project:
        last_good = known.config if known is not None else None
        try:
            project = read_layer(PROJECT, path, f"invalid config file {path}")
            assert self._global_path is not None
            config = self._finish(build(self._global, project, self._global_path), [project])
            entry = _Project(current, config, None)
        except InvalidInput as exc:
            log.warning("%s", exc)
            entry = _Project(current, last_good, exc)
        with self._lock:
            self._projects[path] = entry
        return entry

    # -- what is in use --------------------------------------------------------------------

    def files(self, folder: Path | None = None) -> list[LayerFile]:
        """The global file (even if absent) and the project file for `folder` (or the start)."""
        path, _ = global_candidate(self.explicit)
        out = [LayerFile(GLOBAL, path, path.is_file())]
        project = find_project_path(folder or self.start, exclude=path)
        if project is not None:
            out.append(LayerFile(PROJECT, project, True))
        return out

    def problems(self) -> list[InvalidInput]:
        """Project files read for a run's folder whose current version is broken."""
        with self._lock:
            return [p.error for p in self._projects.values() if p.error is not None]

    def signature(self) -> tuple[object, ...]:
        """Changes whenever a file in use changes, appears or goes."""
        path, _ = global_candidate(self.explicit)
        project = find_project_path(self.start, exclude=path)
        with self._lock:
            known = sorted(self._projects)
        return (
            (path, stamp(path)),
            (project, stamp(project)),
            tuple((p, stamp(p)) for p in known),
        )


def load_config(path: str | Path | None = None, *, start: str | Path | None = None) -> Config:
    """The configuration: the global file plus the project file found walking up from
    `start` (default: the current folder); $SCRIPTHUT_DATA_DIR wins over settings.data_dir."""
    return ConfigSource(path, start).load()
