"""Env rule resolution: the layers' rules become one task's variables and init lines.

Rules run top to bottom (backend, server, workflow, task) against a seed of
SCRIPTHUT_* variables. Every write is recorded as an `EnvOp`, so a view can show
where each value came from. See docs/env-rules.md for the user-facing rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from scripthut.env_rules import EnvRule
from scripthut.errors import InvalidInput, Issue
from scripthut.secrets import MASK as MASK
from scripthut.secrets import SecretMasker
from scripthut.secrets import looks_secret as looks_secret
from scripthut.task_env import inherited, withheld

SEED_LAYER = "seed"
INHERITED_LAYER = "inherited"
SEED_RULE = -1

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SHELL_SYNTAX = re.compile(r"\$[A-Za-z_{(]|`")

Guard = Mapping[str, str | list[str]]


@dataclass(frozen=True, slots=True)
class EnvOp:
    """One write: which layer, group and rule made it, how, and what it contributed.

    `rule` is the rule's index within its layer, or within `group` for an included
    rule; it is -1 for the seed. `op` is "seed", "set", "append" or "init".
    """

    layer: str
    group: str | None
    rule: int
    op: str
    value: str

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "group": self.group,
            "rule": self.rule,
            "op": self.op,
            "value": self.value,
        }


@dataclass(slots=True)
class EnvValue:
    """A resolved variable and every write to it, oldest first.

    `from_runtime` means the value is appended to the variable's value on the
    machine that runs the task (PATH, LD_LIBRARY_PATH...): `value` holds only the
    configured part.
    """

    value: str
    from_runtime: bool
    ops: list[EnvOp]


@dataclass(slots=True)
class ResolvedEnv:
    """The variables, init lines and warnings of one task."""

    values: dict[str, EnvValue] = field(default_factory=dict)
    init: list[tuple[str, EnvOp]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self, runtime: Mapping[str, str] | None = None) -> dict[str, str]:
        """Name -> value. A runtime-appended value joins `runtime`'s value when given."""
        out: dict[str, str] = {}
        for name, resolved in self.values.items():
            base = runtime.get(name, "") if runtime is not None and resolved.from_runtime else ""
            out[name] = f"{base}:{resolved.value}" if base else resolved.value
        return out

    def init_lines(self) -> list[str]:
        """The expanded init texts, in order."""
        return [text for text, _ in self.init]

    def secret_names(self) -> set[str]:
        """Variables whose value must not be shown: secret names, and values holding one."""
        masker = _Masker(self.values)
        return {name for name, value in self.values.items() if masker.is_secret(name, value)}

    def to_json(self, *, mask_secrets: bool = False) -> dict[str, Any]:
        """A JSON-able view with provenance; `mask_secrets` hides secret values everywhere."""
        masker = _Masker(self.values, enabled=mask_secrets)
        return {
            "values": {name: masker.value_json(name, value) for name, value in self.values.items()},
            "init": [{**op.to_json(), "value": masker.text(text)} for text, op in self.init],
            "warnings": list(self.warnings),
        }


class _Masker(SecretMasker):
    """Hides the values of secret-looking variables, wherever they appear (scripthut.secrets)."""

    def __init__(self, values: Mapping[str, EnvValue], *, enabled: bool = True) -> None:
        pairs = [
            (name, text)
            for name, value in values.items()
            for text in (value.value, *(op.value for op in value.ops))
        ]
        super().__init__(pairs, enabled=enabled)

    def is_secret(self, name: str, value: EnvValue) -> bool:
        return self.holds_secret(name, value.value)

    def value_json(self, name: str, value: EnvValue) -> dict[str, Any]:
        return {
            "value": self.value(name, value.value),
            "from_runtime": value.from_runtime,
            "secret": self.is_secret(name, value),
            "ops": [{**op.to_json(), "value": self.value(name, op.value)} for op in value.ops],
        }


def inherited_layer(environ: Mapping[str, str] | None, where: str) -> dict[str, Any]:
    """The "inherited" layer of an env view: what a task gets from the process starting it.

    Values of secret-looking names are masked; the names `task_env` withholds (the
    server's credentials) are listed, without values. `environ` is None when that
    environment is not known here (a login shell on a remote host); `where` says whose
    environment it is. The task's own rules (`values`) override what it inherits.
    """
    if environ is None:
        return {"layer": INHERITED_LAYER, "source": where, "known": False, "values": {},
                "withheld": []}  # fmt: skip
    values = {
        name: {"value": MASK if looks_secret(name) else value, "secret": looks_secret(name)}
        for name, value in sorted(inherited(environ).items())
    }
    return {"layer": INHERITED_LAYER, "source": where, "known": True, "values": values,
            "withheld": withheld(environ)}  # fmt: skip


def build_seed(
    *,
    backend: str,
    workflow: str,
    run_id: str,
    created_at: datetime,
    git_repo: str | None = None,
    git_branch: str | None = None,
    git_sha: str | None = None,
) -> dict[str, str]:
    """The protected SCRIPTHUT_* variables every task starts from."""
    seed = {
        "SCRIPTHUT_BACKEND": backend,
        "SCRIPTHUT_WORKFLOW": workflow,
        "SCRIPTHUT_RUN_ID": run_id,
        "SCRIPTHUT_CREATED_AT": created_at.isoformat(),
    }
    optional = {
        "SCRIPTHUT_GIT_REPO": git_repo,
        "SCRIPTHUT_GIT_BRANCH": git_branch,
        "SCRIPTHUT_GIT_SHA": git_sha,
    }
    seed.update({name: value for name, value in optional.items() if value is not None})
    return seed


# -- flattening includes -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    """One rule to evaluate, with where it came from and every guard it must pass."""

    rule: EnvRule
    layer: str
    group: str | None
    index: int
    guards: tuple[Guard, ...]


def _with_guard(guards: tuple[Guard, ...], rule: EnvRule) -> tuple[Guard, ...]:
    return (*guards, rule.if_) if rule.if_ else guards


def _flatten(
    layers: Sequence[tuple[str, Sequence[EnvRule]]],
    groups: Mapping[str, Sequence[EnvRule]],
) -> list[_Step]:
    """Every rule in evaluation order, includes inlined; bad includes raise InvalidInput."""
    steps: list[_Step] = []
    issues: list[Issue] = []
    for layer, rules in layers:
        for index, rule in enumerate(rules):
            step = _Step(rule, layer, None, index, _with_guard((), rule))
            steps.extend(_expand(step, groups, (), issues))
    if issues:
        raise InvalidInput(dict.fromkeys(issues), title="invalid env rules")
    return steps


def _expand(
    step: _Step,
    groups: Mapping[str, Sequence[EnvRule]],
    chain: tuple[str, ...],
    issues: list[Issue],
) -> Iterator[_Step]:
    """The included groups' steps (recursively), then the step itself."""
    for name in step.rule.include:
        yield from _include(step, name, groups, chain, issues)
    if step.rule.set or step.rule.append or step.rule.init:
        yield step


def _include(
    step: _Step,
    name: str,
    groups: Mapping[str, Sequence[EnvRule]],
    chain: tuple[str, ...],
    issues: list[Issue],
) -> Iterator[_Step]:
    where = _where(step.layer, step.group, step.index)
    if name in chain:
        cycle = " -> ".join((*chain, name))
        issues.append(Issue(where, f"env group include cycle: {cycle}", "include"))
        return
    if name not in groups:
        issues.append(Issue(where, f"unknown env group '{name}'", "include"))
        return
    for index, rule in enumerate(groups[name]):
        inner = _Step(rule, step.layer, name, index, _with_guard(step.guards, rule))
        yield from _expand(inner, groups, (*chain, name), issues)


def _where(layer: str, group: str | None, index: int) -> str:
    place = f"{layer} env rule {index}"
    return f"{layer} env group '{group}' rule {index}" if group else place


# -- evaluation ----------------------------------------------------------------------


def _matches(guard: Guard, env: Mapping[str, EnvValue]) -> bool:
    """AND across keys; a list of values means any of them."""
    for name, expected in guard.items():
        current = env.get(name)
        actual = current.value if current is not None else None
        if isinstance(expected, list):
            if actual not in expected:
                return False
        elif actual != expected:
            return False
    return True


@lru_cache(maxsize=1024)
def _seed_op(value: str) -> EnvOp:
    """The (immutable, shared) seed write of `value`: every task of a run has the same."""
    return EnvOp(SEED_LAYER, None, SEED_RULE, "seed", value)


class _Resolver:
    """The env so far, and the writes that built it."""

    def __init__(self, seed: Mapping[str, str]) -> None:
        values = {name: EnvValue(value, False, [_seed_op(value)]) for name, value in seed.items()}
        self.result = ResolvedEnv(values)
        self.env = values

    def run(self, step: _Step) -> None:
        if not all(_matches(guard, self.env) for guard in step.guards):
            return
        for name, raw in step.rule.set.items():
            self._set(step, name, raw)
        for name, raw in step.rule.append.items():
            self._append(step, name, raw)
        if step.rule.init:
            text = self._expand(step, step.rule.init)
            self.result.init.append((text, self._op(step, "init", text)))

    def _set(self, step: _Step, name: str, raw: str) -> None:
        value = self._value(step, name, raw)
        op = self._op(step, "set", value)
        current = self.env.get(name)
        if current is None:
            self.env[name] = EnvValue(value, False, [op])
            return
        current.value, current.from_runtime = value, False
        current.ops.append(op)

    def _append(self, step: _Step, name: str, raw: str) -> None:
        part = self._value(step, name, raw)
        op = self._op(step, "append", part)
        current = self.env.get(name)
        if current is None:
            self.env[name] = EnvValue(part, True, [op])
            return
        current.value = f"{current.value}:{part}" if current.value else part
        current.ops.append(op)

    def _op(self, step: _Step, kind: str, value: str) -> EnvOp:
        return EnvOp(step.layer, step.group, step.index, kind, value)

    def _value(self, step: _Step, name: str, raw: str) -> str:
        if "$" in raw or "`" in raw:
            self._warn_shell_syntax(step, name, raw)
        return self._expand(step, raw)

    def _expand(self, step: _Step, raw: str) -> str:
        if "${" not in raw:
            return raw
        return _REFERENCE.sub(lambda match: self._lookup(step, match.group(1)), raw)

    def _lookup(self, step: _Step, name: str) -> str:
        current = self.env.get(name)
        where = _where(step.layer, step.group, step.index)
        if current is None:
            self._warn(
                f"{where}: ${{{name}}} is not defined by the seed or an earlier rule; "
                "it expands to an empty string (rules are resolved before the job runs)"
            )
            return ""
        if current.from_runtime:
            self._warn(
                f"{where}: ${{{name}}} extends the runtime value of {name}; "
                "only the configured part is known here"
            )
        return current.value

    def _warn_shell_syntax(self, step: _Step, name: str, raw: str) -> None:
        if _SHELL_SYNTAX.search(_REFERENCE.sub("", raw)):
            where = _where(step.layer, step.group, step.index)
            self._warn(
                f"{where}: the value of {name} contains shell syntax ($, `) that is kept "
                "literally; only ${NAME} references to resolved variables are expanded"
            )

    def _warn(self, message: str) -> None:
        if message not in self.result.warnings:
            self.result.warnings.append(message)


def resolve_env(
    layers: Sequence[tuple[str, Sequence[EnvRule]]],
    groups: Mapping[str, Sequence[EnvRule]],
    seed: Mapping[str, str],
) -> ResolvedEnv:
    """Evaluate the layers' rules, in order, against `seed`.

    `layers` is ordered backend, server, workflow, task, each as (label, rules);
    `groups` are the env_groups already merged across layers. Unknown groups and
    include cycles raise InvalidInput.
    """
    resolver = _Resolver(seed)
    if any(rules for _, rules in layers):
        for step in _flatten(layers, groups):
            resolver.run(step)
    return resolver.result
