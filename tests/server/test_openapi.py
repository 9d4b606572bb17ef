"""The shipped OpenAPI description matches the routes the extension registers."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import yaml
from openapi_spec_validator import validate

from tests.server.conftest import extension_app
from tests.server.test_security import concrete, methods


def spec() -> dict[str, Any]:
    text = resources.files("scripthut.server").joinpath("openapi.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def test_the_description_is_valid_openapi_3() -> None:
    validate(spec())


def template_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)))


def test_every_registered_route_and_verb_is_described(jp_serverapp: Any) -> None:
    paths = spec()["paths"]
    prefix = "scripthut/api"
    described = {template: template_regex(prefix + template) for template in paths}
    used = set()
    for pattern, handler, *_ in extension_app(jp_serverapp).handlers:
        if pattern.endswith("(.*)"):
            continue  # the JSON 404 for unknown paths, described in the info section
        path = concrete(pattern)
        matches = [t for t, rx in described.items() if rx.fullmatch(path)]
        assert len(matches) == 1, (pattern, path, matches)
        (template,) = matches
        used.add(template)
        for method in methods(handler):
            assert method.lower() in paths[template], (template, method)
        documented = {m for m in paths[template] if m != "parameters"}
        assert documented == {m.lower() for m in methods(handler)}, template
    assert used == set(paths), set(paths) - used  # and nothing described that does not exist


def test_every_operation_names_its_auth_resource(jp_serverapp: Any) -> None:
    resources_by_path = {}
    for pattern, handler, *_ in extension_app(jp_serverapp).handlers:
        if not pattern.endswith("(.*)"):
            resources_by_path[concrete(pattern)] = handler.auth_resource
    for template, item in spec()["paths"].items():
        rx = template_regex("scripthut/api" + template)
        (resource,) = {r for p, r in resources_by_path.items() if rx.fullmatch(p)}
        for method, operation in item.items():
            if method != "parameters":
                assert operation["x-auth-resource"] == resource, (template, method)
