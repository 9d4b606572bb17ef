"""`scripthut validate` and `scripthut migrate`: checking and modernising files, no engine.

`validate` loads the config exactly as `run` does and, given a workflow file, checks what
`run` checks before anything is stored (backend, env includes). `migrate` rewrites a
ScriptHut 0.3 config or workflow file into the modern form; YAML comments are not kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from scripthut.config import load_config, load_file
from scripthut.config.legacy import LEGACY_SECTIONS, migrate_data
from scripthut.engine.create import check_run
from scripthut.errors import InvalidInput, Issue
from scripthut.workflow.parse import (
    LEGACY_TASK_KEYS,
    decode_json,
    load_workflow,
    parse_document,
)

CONFIG_SUFFIXES = (".yaml", ".yml")


def validate(config_path: str | None, file: str | None, backend: str | None) -> dict[str, Any]:
    """What `scripthut validate` reports; InvalidInput / NotFound when something is wrong."""
    config = load_config(config_path)
    report: dict[str, Any] = {
        "valid": True,
        "config": str(config.source_path) if config.source_path else None,
        "backends": [b.name for b in config.backends],
    }
    if file is not None:
        workflow = load_workflow(file)
        entry = check_run(config, workflow, backend)
        report |= {
            "file": file,
            "backend": entry.name,
            "tasks": len(workflow.tasks),
            "edges": sum(len(d) for d in workflow.deps.values()),
        }
    return report


def migrated_text(path: Path) -> tuple[str, bool]:
    """The file's modern text, and whether it differs in content from the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput([Issue(str(path), "no such file")], "cannot migrate") from None
    if path.suffix in CONFIG_SUFFIXES:
        return _migrate_config(path, text)
    return _migrate_workflow(path, text)


def _migrate_config(path: Path, text: str) -> tuple[str, bool]:
    load_file(path)  # every problem of the file, located, before anything is rewritten
    data = yaml.safe_load(text) or {}
    modern = migrate_data(data)
    changed = any(key in data for key in LEGACY_SECTIONS)
    return yaml.safe_dump(modern, sort_keys=False, allow_unicode=True), changed


def _migrate_workflow(path: Path, text: str) -> tuple[str, bool]:
    data = decode_json(text, source=str(path))
    workflow = parse_document(data, source=str(path))
    tasks = data.get("tasks") if isinstance(data, dict) else data
    changed = isinstance(tasks, list) and any(
        isinstance(task, dict) and key in task for task in tasks for key in LEGACY_TASK_KEYS
    )
    return json.dumps(workflow.to_document(), indent=2) + "\n", changed


def write_in_place(path: Path, text: str) -> Path:
    """Keep the original as FILE.bak, then write `text` to FILE."""
    backup = path.with_name(path.name + ".bak")
    shutil.copy2(path, backup)
    path.write_text(text, encoding="utf-8")
    return backup
