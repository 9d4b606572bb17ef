"""The env rule: one entry of an `env:` list in scripthut.yaml or a workflow document.

Rules come from four layers (backend, server, workflow, task) and are evaluated in order
by `scripthut.workflow.env.resolve_env`. This module only holds their shape.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROTECTED_PREFIX = "SCRIPTHUT_"


class EnvRule(BaseModel):
    """set / append / init, guarded by an optional `if`, possibly including env_groups."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, frozen=True, coerce_numbers_to_str=True
    )

    if_: dict[str, str | list[str]] | None = Field(default=None, alias="if")
    include: list[str] = Field(default_factory=list)
    set: dict[str, str] = Field(default_factory=dict)
    append: dict[str, str] = Field(default_factory=dict)
    init: str = ""

    @field_validator("set", "append")
    @classmethod
    def _names_are_shell_variables(cls, values: dict[str, str]) -> dict[str, str]:
        for name, value in values.items():
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"'{name}' is not a valid environment variable name")
            if name.startswith(PROTECTED_PREFIX):
                raise ValueError(
                    f"'{name}' is protected: SCRIPTHUT_* variables are set by ScriptHut"
                )
            if "\0" in value:
                raise ValueError(f"the value of '{name}' contains a NUL byte")
        return values

    @field_validator("init")
    @classmethod
    def _init_has_no_nul(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("init contains a NUL byte")
        return value
