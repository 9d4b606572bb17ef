"""The one rule for what counts as a secret, and how read paths mask it.

A value is secret when its variable's name looks like a credential (TOKEN, PASSWORD,
API_KEY...), when it is a webhook URL (its path is the credential), when it carries a
password inside a URL (`scheme://user:pass@host`) or a secret-looking query parameter,
or when it contains (a copy of) another secret value. Views never show such values: the
store keeps them because the job needs them, and every read path (REST, CLI, Python API,
widgets, exports) masks them through `SecretMasker`.

Everything here works on plain strings and JSON-like dicts, so every floor can use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter secret values are not hunted for inside other values

_SECRET_NAME = re.compile(
    r"TOKEN(?!IZ)|SECRET|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY"
    r"|CREDENTIAL|COOKIE|WEBHOOK|(?:^|_)KEY$|_PWD$|(?:^|_)PASS(?:_|$)"
)
_SECRET_PARAMS = frozenset(
    {"sig", "signature", "key", "code", "auth", "apikey", "access_token", "pwd", "pass"}
)
_URL = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?:(?P<user>[^\s/?#@:'\"<>]*):(?P<password>[^\s/?#@'\"<>]+)@)?"
    r"(?P<host>[^\s/?#:'\"<>]+)(?P<port>:[0-9]*)?"
    r"(?P<path>/[^\s?#'\"<>]*)?(?P<query>\?[^\s#'\"<>]*)?"
)
_DISCORD = frozenset({"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"})
_QUOTED_EXPORT = re.compile(
    r"(?P<lead>(?:^|\n)export (?P<name>[A-Za-z_][A-Za-z0-9_]*)="
    r"(?:\"\$\{(?P=name):\+\$\{(?P=name)\}:\}\")?)(?P<value>(?:'[^']*'|\\')+)"
)


def looks_secret(name: str) -> bool:
    """True when a variable's name suggests a credential (TOKEN, PASSWORD, API_KEY...)."""
    return _SECRET_NAME.search(name.upper().replace("-", "_")) is not None


def is_webhook(host: str, path: str) -> bool:
    """True for URLs whose path is the credential (Slack, Discord, Teams, any /webhook)."""
    host, path = host.lower(), path.lower()
    return (
        host.startswith("hooks.")
        or ".hooks." in host
        or "webhook" in host
        or host.endswith(".webhook.office.com")
        or (host in _DISCORD and path.startswith("/api/webhooks"))
        or "/webhook" in path
    )


def url_secrets(text: str) -> list[str]:
    """The secret parts of the URLs in `text`: passwords, webhook paths, secret parameters."""
    return [part for found in _URL.finditer(text) for part in _secret_parts(found)]


def _secret_parts(found: re.Match[str]) -> Iterator[str]:
    if found["password"]:
        yield found["password"]
    path, query = found["path"] or "", found["query"] or ""
    if is_webhook(found["host"], path):
        tail = (path + query).lstrip("/")
        if tail:
            yield tail
        return
    for pair in query[1:].split("&"):
        name, sep, value = pair.partition("=")
        if sep and value and (looks_secret(name) or name.lower() in _SECRET_PARAMS):
            yield value


def mask_urls(text: str) -> str:
    """`text` with URL passwords, webhook paths and secret query values replaced by MASK."""
    if "://" not in text:
        return text
    return _URL.sub(_masked_url, text)


def _masked_url(found: re.Match[str]) -> str:
    user = f"{found['user']}:{MASK}@" if found["password"] else ""
    head = f"{found['head']}{user}{found['host']}{found['port'] or ''}"
    path, query = found["path"] or "", found["query"] or ""
    if is_webhook(found["host"], path):
        return f"{head}/{MASK}" if (path + query).strip("/") else head + path
    return head + path + _masked_query(query)


def _masked_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for pair in query[1:].split("&"):
        name, sep, value = pair.partition("=")
        secret = sep and value and (looks_secret(name) or name.lower() in _SECRET_PARAMS)
        pairs.append(f"{name}={MASK}" if secret else pair)
    return "?" + "&".join(pairs)


class SecretMasker:
    """Masks the secrets of a set of (name, value) pairs wherever they appear.

    Secret values (of secret-looking names, and the secret parts of URLs) at least
    MIN_SECRET_LENGTH long are hunted inside any text, so a copy under another name
    (`URL=https://x?t=${API_TOKEN}`) is masked too. `enabled=False` shows everything
    (the job's own view) while still telling which values are secret.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]] = (), *, enabled: bool = True) -> None:
        found: set[str] = set()
        for name, value in pairs:
            if looks_secret(name):
                found.add(value)
            found.update(url_secrets(value))
        self.secrets = sorted(
            (s for s in found if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True
        )
        self.enabled = enabled

    def holds_secret(self, name: str, value: str) -> bool:
        """True when the variable's value must not be shown."""
        return (
            looks_secret(name)
            or any(secret in value for secret in self.secrets)
            or bool(url_secrets(value))
        )

    def text(self, text: str) -> str:
        """`text` with every known secret and every URL secret masked."""
        if not self.enabled:
            return text
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return mask_urls(text)

    def value(self, name: str, value: str) -> str:
        """A variable's value as a view may show it: all masked for a secret name."""
        return MASK if self.enabled and looks_secret(name) else self.text(value)

    def script(self, script: str) -> str:
        """A task script with secret exports, known secrets (also shell-quoted) and URLs masked."""
        if not self.enabled:
            return script

        def export(found: re.Match[str]) -> str:
            shown = f"'{MASK}'" if looks_secret(found["name"]) else found["value"]
            return found["lead"] + shown

        script = _QUOTED_EXPORT.sub(export, script)
        for secret in self.secrets:
            script = script.replace(secret, MASK)
            quoted = secret.replace("'", "'\\''")
            if quoted != secret:
                script = script.replace(quoted, MASK)
        return mask_urls(script)


# -- JSON shapes: env rules, task specs, workflow documents, recorded envs ------------------

SPEC_KEYS_KEPT = frozenset({"id", "deps", "dependencies", "cpus"})


def rule_pairs(rules: object) -> Iterator[tuple[str, str]]:
    """(name, value) of every `set`/`append` entry, guard and init of a list of rule dicts."""
    if not isinstance(rules, list):
        return
    for rule in rules:
        if not isinstance(rule, Mapping):
            continue
        for key in ("set", "append", "if"):
            yield from _items(rule.get(key))
        if isinstance(rule.get("init"), str):
            yield "", rule["init"]


def _items(block: object) -> Iterator[tuple[str, str]]:
    if isinstance(block, Mapping):
        for name, value in block.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    yield str(name), item


def mask_rules(rules: object, masker: SecretMasker) -> object:
    """A copy of a list of env rule dicts with secret values masked."""
    if not isinstance(rules, list):
        return rules
    return [_mask_rule(rule, masker) if isinstance(rule, Mapping) else rule for rule in rules]


def _mask_rule(rule: Mapping[str, Any], masker: SecretMasker) -> dict[str, Any]:
    out = dict(rule)
    for key in ("set", "append", "if"):
        block = rule.get(key)
        if isinstance(block, Mapping):
            out[key] = {name: _mask_value(name, v, masker) for name, v in block.items()}
    if isinstance(rule.get("init"), str):
        out["init"] = masker.text(rule["init"])
    return out


def _mask_value(name: str, value: object, masker: SecretMasker) -> object:
    if isinstance(value, list):
        return [masker.value(name, v) if isinstance(v, str) else v for v in value]
    return masker.value(name, value) if isinstance(value, str) else value


def spec_pairs(spec: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    yield from rule_pairs(spec.get("env"))
    for key, value in spec.items():
        if key not in SPEC_KEYS_KEPT and key != "env" and isinstance(value, str):
            yield "", value


def mask_spec(spec: Mapping[str, Any], masker: SecretMasker) -> dict[str, Any]:
    """A task spec (as written) with its env rules and text fields masked."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "env":
            out[key] = mask_rules(value, masker)
        elif key not in SPEC_KEYS_KEPT and isinstance(value, str):
            out[key] = masker.text(value)
        else:
            out[key] = value
    return out


def document_pairs(document: object) -> Iterator[tuple[str, str]]:
    """The pairs of a workflow document: its rules, its groups' rules, its tasks'."""
    tasks = document if isinstance(document, list) else None
    if isinstance(document, Mapping):
        yield from rule_pairs(document.get("env"))
        groups = document.get("env_groups")
        if isinstance(groups, Mapping):
            for rules in groups.values():
                yield from rule_pairs(rules)
        tasks = document.get("tasks")
    for task in tasks if isinstance(tasks, list) else []:
        if isinstance(task, Mapping):
            yield from spec_pairs(task)


def mask_document(document: object, masker: SecretMasker) -> object:
    """A workflow document (array of tasks, or object with tasks/env/env_groups), masked."""
    if isinstance(document, list):
        return [mask_spec(t, masker) if isinstance(t, Mapping) else t for t in document]
    if not isinstance(document, Mapping):
        return document
    out = dict(document)
    if "env" in out:
        out["env"] = mask_rules(out["env"], masker)
    if isinstance(out.get("env_groups"), Mapping):
        out["env_groups"] = {k: mask_rules(v, masker) for k, v in out["env_groups"].items()}
    if isinstance(out.get("tasks"), list):
        out["tasks"] = mask_document(out["tasks"], masker)
    return out


def env_pairs(env: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """The pairs of a recorded env (`ResolvedEnv.to_json()`): values, their writes, inits."""
    values = env.get("values")
    for name, entry in (values or {}).items() if isinstance(values, Mapping) else ():
        if isinstance(entry, Mapping):
            yield name, str(entry.get("value", ""))
            for op in entry.get("ops") or []:
                if isinstance(op, Mapping):
                    yield name, str(op.get("value", ""))
    for entry in env.get("init") or []:
        if isinstance(entry, Mapping):
            yield "", str(entry.get("value", ""))


def mask_env(env: Mapping[str, Any], masker: SecretMasker) -> dict[str, Any]:
    """A recorded env with its values, writes and init lines masked (as `ResolvedEnv` masks)."""
    out = dict(env)
    values = env.get("values")
    if isinstance(values, Mapping):
        out["values"] = {
            name: _mask_entry(name, entry, masker) if isinstance(entry, Mapping) else entry
            for name, entry in values.items()
        }
    if isinstance(env.get("init"), list):
        out["init"] = [
            {**e, "value": masker.text(str(e.get("value", "")))} if isinstance(e, Mapping) else e
            for e in env["init"]
        ]
    return out


def _mask_entry(name: str, entry: Mapping[str, Any], masker: SecretMasker) -> dict[str, Any]:
    value = str(entry.get("value", ""))
    ops = [
        {**op, "value": masker.value(name, str(op.get("value", "")))}
        for op in entry.get("ops") or []
        if isinstance(op, Mapping)
    ]
    return {
        **entry,
        "value": masker.value(name, value),
        "secret": masker.holds_secret(name, value),
        "ops": ops,
    }
