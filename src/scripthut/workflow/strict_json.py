"""Decoding JSON that ScriptHut can store: every problem located, never a crash later.

Repeated keys, integers beyond 64 bits, NaN/Infinity and lone surrogates are reported by
the path of the value; syntax errors by line and column.
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from scripthut.errors import InvalidInput, Issue
from scripthut.workflow.limits import INT64, SAFE_ID
from scripthut.workflow.wording import invalid_title

_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATES = "holds a lone surrogate (such as \\ud800): not valid Unicode text"
# What the text of a value json_problems reports must contain: a surrogate escape, 19+
# digits in a row (an integer near or past 64 bits), a 3-digit exponent (1e400 is inf).
_SUSPECT = re.compile(r"\\u[dD][89a-fA-F]|[0-9]{19}|[eE][+-]?[0-9]{3}")


def decode_json(text: str, *, source: str, title: str | None = None) -> object:
    """Decode JSON that ScriptHut can store: every problem located, never a crash later.

    Syntax errors are reported by line and column; repeated keys, integers beyond 64
    bits, NaN/Infinity and lone surrogates ("\\ud800", which no UTF-8 store accepts) by
    the path of the value; nesting deeper than the parser handles as such.
    """
    repeated: list[Issue] = []
    constants: list[str] = []
    heading = title or invalid_title(source)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items):
            repeated.extend(_repeated_keys(items, source))
        return obj

    def constant(name: str) -> float:
        constants.append(name)
        return math.nan

    try:
        with gc_paused():
            data = json.loads(
                text, object_pairs_hook=pairs, parse_int=_parse_int, parse_constant=constant
            )
    except json.JSONDecodeError as err:
        message = f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        raise InvalidInput([Issue(where=source, message=message)], title=heading) from err
    except RecursionError:
        message = "nested too deeply: more levels of arrays and objects than can be read"
        raise InvalidInput([Issue(where=source, message=message)], title=heading) from None
    if repeated:
        raise InvalidInput(repeated, title=heading)
    if constants or _SUSPECT.search(text):  # the exact walk only when the text calls for it
        problems = json_problems(data, source)
        if problems:
            raise InvalidInput(problems, title=heading)
    return data


def _parse_int(text: str) -> int | float:
    """An integer literal; one too long for 64 bits becomes inf, reported by json_problems."""
    return int(text) if len(text) <= 20 else math.inf


def json_problems(data: object, where: str, limit: int = 20) -> list[Issue]:
    """Values of decoded JSON no store can keep, each named by its path (at most `limit`)."""
    issues: list[Issue] = []
    stack: list[tuple[object, str]] = [(data, "")]
    while stack and len(issues) < limit:
        value, path = stack.pop()
        problem = _value_problem(value)
        if problem is not None:
            issues.append(Issue(where=where, field=path or None, message=problem))
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                if _value_problem(key) is not None:
                    issues.append(Issue(where=where, field=path or None, message=_SURROGATES))
                stack.append((item, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, list):
            for index in range(len(value) - 1, -1, -1):
                stack.append((value[index], f"{path}[{index}]"))
    return issues


def _value_problem(value: object) -> str | None:
    if isinstance(value, str):
        return _SURROGATES if not value.isascii() and _SURROGATE.search(value) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        return "integer out of range: it must fit in 64 bits (-2^63 to 2^63-1)"
    if isinstance(value, float) and math.isinf(value):
        return "number out of range: integers must fit in 64 bits, numbers must be finite"
    if isinstance(value, float) and math.isnan(value):
        return "NaN is not a JSON number"
    return None


def _repeated_keys(items: list[tuple[str, Any]], source: str) -> list[Issue]:
    owner = dict(items).get("id")
    where = f"task '{owner}'" if isinstance(owner, str) and SAFE_ID.fullmatch(owner) else source
    seen: set[str] = set()
    issues = []
    for key, _ in items:
        if key in seen:
            issues.append(Issue(where=where, field=key, message="key given more than once"))
        seen.add(key)
    return issues


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while many acyclic objects are built.

    Reading 100,000 tasks allocates about a million containers, none of them in a
    cycle; without this, repeated full collections take about half the time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
