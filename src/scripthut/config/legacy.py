"""ScriptHut 0.3 config sections: one deprecation warning each, and their modern rewrite.

0.3 wrote `environments: [{name, variables, extra_init, description}]` and
`projects: [{name, backend, path, description}]`. They are read as they are (the models turn
them into env groups and `path` sources) and each section present logs one warning per
file load with the exact text that replaces it; `scripthut migrate` writes that text.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import yaml

from scripthut.config.models import LegacyEnvironment, LegacyProject

log = logging.getLogger("scripthut.config")

LEGACY_SECTIONS = ("environments", "projects")


def modern_sections(data: Mapping[str, Any]) -> dict[str, Any]:
    """The modern `env_groups` / `sources` entries that replace the 0.3 sections of `data`."""
    out: dict[str, Any] = {}
    environments = data.get("environments") or []
    if environments:
        groups = {}
        for raw in environments:
            env = LegacyEnvironment.model_validate(raw)
            groups[env.name] = [
                rule.model_dump(by_alias=True, exclude_defaults=True) for rule in env.rules()
            ]
        out["env_groups"] = groups
    projects = data.get("projects") or []
    if projects:
        out["sources"] = [_source_dict(LegacyProject.model_validate(raw)) for raw in projects]
    return out


def _source_dict(project: LegacyProject) -> dict[str, Any]:
    source = project.source()
    fields = source.model_dump(exclude_defaults=True, exclude={"type"})
    return {"name": source.name, "type": "path", **fields, "workflows_glob": source.workflows_glob}


def warn_legacy(data: object, source: str) -> None:
    """One warning per 0.3 section present in a loaded (and valid) file."""
    if not isinstance(data, Mapping):
        return
    modern = modern_sections(data)
    if "environments" in data and "env_groups" in modern:
        replacement = _flow({"env_groups": modern["env_groups"]})
        log.warning(
            "%s: 'environments' is deprecated; write instead: %s "
            "(tasks then use env: [{include: [NAME]}]; `scripthut migrate` rewrites the file)",
            source,
            replacement,
        )
    if "projects" in data and "sources" in modern:
        replacement = _flow({"sources": modern["sources"]})
        log.warning(
            "%s: 'projects' is deprecated; write instead: %s "
            "(`scripthut migrate` rewrites the file)",
            source,
            replacement,
        )


def migrate_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with its 0.3 sections replaced by modern ones, other keys in their order."""
    modern = modern_sections(data)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in LEGACY_SECTIONS:
            continue
        if key == "env_groups" and "env_groups" in modern:
            value = {**modern.pop("env_groups"), **(value or {})}
        elif key == "sources" and "sources" in modern:
            value = [*(value or []), *modern.pop("sources")]
        out[key] = value
    out.update(modern)
    return out


def _flow(value: object) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.strip()
