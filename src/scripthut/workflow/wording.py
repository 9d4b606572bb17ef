"""How validation messages of a workflow name types, quote values and suggest keys."""

from __future__ import annotations

import re
from collections.abc import Iterable

from scripthut.errors import did_you_mean

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "an array",
    dict: "an object",
}


def invalid_title(source: str) -> str:
    """The title of the InvalidInput a document from `source` raises."""
    return "invalid workflow" if source == "workflow" else f"invalid workflow ({source})"


def type_name(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def shown(value: object, limit: int = 60) -> str:
    """A value as messages quote it: repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"


def suggestion(word: str, choices: Iterable[str]) -> str:
    if len(word) > 100:
        return ""
    return did_you_mean(word, choices)


def too_long(value: str, limit: int) -> str:
    return f"too long: {len(value):,} characters, at most {limit:,}"
