"""Pydantic validation errors -> problems with a readable place and a helpful message."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from scripthut.config.checks import Problem, Step, Steps, clean_loc, suggestion
from scripthut.config.models import Config

# Keys of newer versions of the original ScriptHut that this version does not have yet.
_NOT_SUPPORTED = frozenset({"stacks", "agent", "cache", "datasets"})
_NOT_SUPPORTED_PREFIXES = ("cli_",)
_UNSUPPORTED_TYPES = {"ecs": "ECS is not supported (use type: batch for AWS Batch)"}


def _strip(annotation: Any) -> Any:
    """Unwrap Annotated and `X | None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        members = [a for a in get_args(annotation) if a is not type(None)]
        if origin in (typing.Union, UnionType) and len(members) == 1:
            annotation = members[0]
            continue
        return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _descend(annotation: Any, elem: Step) -> Any:
    annotation = _strip(annotation)
    origin = get_origin(annotation)
    if origin in (typing.Union, UnionType):
        tagged = [m for m in get_args(annotation) if _is_model(m) and "type" in m.model_fields]
        return next((m for m in tagged if m.model_fields["type"].default == elem), None)
    if _is_model(annotation):
        for name, info in annotation.model_fields.items():
            if elem in (name, info.alias):
                return info.annotation
        return None
    if origin is list and isinstance(elem, int):
        return get_args(annotation)[0]
    if origin is dict:
        return get_args(annotation)[1]
    return None


def _annotation_at(loc: Sequence[Step]) -> Any:
    annotation: Any = Config
    for elem in loc:
        annotation = _descend(annotation, elem)
        if annotation is None:
            return None
    return _strip(annotation)


def _keys_at(loc: Sequence[Step]) -> list[str]:
    model = _annotation_at(loc)
    if not _is_model(model):
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _tags_at(loc: Sequence[Step]) -> list[str]:
    union = _annotation_at(loc)
    return [str(m.model_fields["type"].default) for m in get_args(union) if _is_model(m)]


def _describe(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _value_message(err: ErrorDetails) -> str:
    kind, value = err["type"], err["input"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_describe(value)}"
    if kind == "list_type":
        return f"expected a list, got {_describe(value)}"
    message = err["msg"].removeprefix("Value error, ")
    scalar = isinstance(value, str | int | float) and len(repr(value)) <= 60
    return f"{message} (got {value!r})" if scalar and kind != "value_error" else message


def _unknown_key(key: str, loc: Sequence[Step]) -> str:
    if key in _NOT_SUPPORTED or key.startswith(_NOT_SUPPORTED_PREFIXES):
        return f"'{key}' is not supported by this version of ScriptHut"
    return f"unknown key '{key}'{suggestion(key, _keys_at(loc))}"


def error_problem(err: ErrorDetails, data: object) -> Problem:
    loc, kind = tuple(err["loc"]), err["type"]
    steps = clean_loc(loc, data)
    if kind == "extra_forbidden":
        return Problem(steps[:-1], _unknown_key(str(steps[-1]), loc[:-1]), anchor=steps)
    if kind == "missing":
        return Problem(steps[:-1], f"missing required key '{steps[-1]}'")
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        return _tag_problem(err, steps)
    if steps and isinstance(steps[-1], str):
        return Problem(steps[:-1], _value_message(err), steps[-1], anchor=steps)
    return Problem(steps, _value_message(err))


def _tag_problem(err: ErrorDetails, steps: Steps) -> Problem:
    """A list entry whose `type` is missing or names no known kind."""
    tags = _tags_at(err["loc"])
    choices = ", ".join(tags)
    if err["type"] == "union_tag_not_found":
        return Problem(steps, f"missing required key 'type' (one of: {choices})")
    tag = str(err.get("ctx", {}).get("tag", ""))
    message = f"unknown type '{tag}'{suggestion(tag, tags)} (one of: {choices})"
    message = _UNSUPPORTED_TYPES.get(tag, message)
    return Problem(steps, message, "type", anchor=(*steps, "type"))
