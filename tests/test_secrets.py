"""The one secret rule (scripthut.secrets): names, URLs, copies, and what each view masks."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripthut.secrets import (
    MASK,
    SecretMasker,
    document_pairs,
    env_pairs,
    looks_secret,
    mask_document,
    mask_env,
    mask_urls,
    url_secrets,
)
from scripthut.workflow.env import resolve_env
from scripthut.workflow.parse import parse_document
from scripthut.workflow.script import render_task_script
from tests.helpers import SECRET_TOKEN, SECRET_WORKFLOW, assert_no_secret


@pytest.mark.parametrize(
    "name", ["API_TOKEN", "github-token", "SLACK_WEBHOOK", "DB_PASSWORD", "aws_secret", "SSH_KEY"]
)
def test_secret_looking_names(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize("name", ["PATH", "TOKENIZER", "KEYBOARD", "HOME", "N_TASKS"])
def test_ordinary_names(name: str) -> None:
    assert not looks_secret(name)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XyZ", "https://hooks.slack.com/***"),
        ("https://discord.com/api/webhooks/1/abc", "https://discord.com/***"),
        ("https://acme.webhook.office.com/webhookb2/abc", "https://acme.webhook.office.com/***"),
        ("https://ci.example/api/webhook/abc?x=1", "https://ci.example/***"),
        ("https://hooks.zapier.com/hooks/catch/1/z", "https://hooks.zapier.com/***"),
        ("postgres://bob:s3cr3t@db:5432/x", "postgres://bob:***@db:5432/x"),
        ("https://u:p@h/x", "https://u:***@h/x"),
        ("https://api.example/x?api_key=zz&page=2", "https://api.example/x?api_key=***&page=2"),
        ("https://blob.example/f?sv=1&sig=abc", "https://blob.example/f?sv=1&sig=***"),
    ],
)
def test_urls_with_credentials_are_masked(url: str, shown: str) -> None:
    assert mask_urls(f"curl '{url}' done") == f"curl '{shown}' done"
    assert url_secrets(url)


@pytest.mark.parametrize(
    "text", ["http://host:8080/path?page=2", "https://example.org/docs/a_b", "ssh://h:22", "x"]
)
def test_plain_urls_and_text_are_left_alone(text: str) -> None:
    assert mask_urls(text) == text
    assert url_secrets(text) == []


def test_copies_of_a_secret_are_masked_under_any_name() -> None:
    masker = SecretMasker([("API_TOKEN", "abcd1234"), ("N", "5"), ("P_KEY", "ab")])
    assert masker.holds_secret("URL", "https://x/?t=abcd1234")
    assert not masker.holds_secret("N", "5")
    assert masker.value("URL", "https://x/?t=abcd1234") == f"https://x/?t={MASK}"
    assert masker.value("P_KEY", "ab") == MASK  # short: masked by name, not hunted
    assert masker.text("ab abcd1234") == f"ab {MASK}"
    shown = SecretMasker([("API_TOKEN", "abcd1234")], enabled=False)
    assert shown.text("abcd1234") == "abcd1234" and shown.holds_secret("API_TOKEN", "x")


def test_a_task_script_is_masked_whatever_its_values_hold() -> None:
    workflow = parse_document(
        {
            "tasks": [
                {
                    "id": "a",
                    "command": f"curl -d ok https://hooks.slack.com/x/c0ffee; echo {SECRET_TOKEN}",
                    "env": [
                        {
                            "set": {
                                "API_TOKEN": SECRET_TOKEN,
                                "MY_PASSWORD": "it's\nmulti-line",
                                "X_SECRET": "o'brien-secret",
                            },
                            "append": {"PATH": "/opt/bin"},
                        }
                    ],
                }
            ]
        }
    )
    env = resolve_env([("task", workflow.tasks[0].env)], {}, {"SCRIPTHUT_RUN_ID": "r"})
    script = render_task_script(workflow.tasks[0], env, exit_path="/tmp/x.exit")
    assert SECRET_TOKEN in script and "multi-line" in script  # the job needs them
    masker = SecretMasker(env_pairs(env.to_json()))
    shown = masker.script(script)
    for clear in (SECRET_TOKEN, "multi-line", "o'\\''brien", "brien-secret", "c0ffee"):
        assert clear not in shown, clear
    assert f"export API_TOKEN='{MASK}'" in shown
    assert "export PATH=" in shown and "/opt/bin" in shown  # ordinary values stay
    assert shown.endswith('exit "$?"\n')


def test_documents_and_recorded_envs_are_masked() -> None:
    masker = SecretMasker(document_pairs(SECRET_WORKFLOW))
    shown = mask_document(SECRET_WORKFLOW, masker)
    assert_no_secret(repr(shown))
    assert shown["tasks"][0]["env"][0]["set"]["MY_PASSWORD"] == MASK
    assert shown["tasks"][0]["command"] == "echo done"
    workflow = parse_document(SECRET_WORKFLOW)
    env = resolve_env([("workflow", workflow.env), ("task", workflow.tasks[0].env)], {}, {})
    recorded = env.to_json()
    masked = mask_env(recorded, SecretMasker(env_pairs(recorded)))
    assert_no_secret(repr(masked))
    assert masked == env.to_json(mask_secrets=True)  # one rule for both shapes
    assert masked["values"]["COPY"]["secret"] is True


def test_event_texts_never_carry_url_credentials(tmp_path: Path) -> None:
    """A reason or a name that quotes a URL reaches the event stream masked."""
    from scripthut.store import Store

    store = Store.in_data_dir(tmp_path / "data")
    try:
        hook = "https://hooks.slack.com/services/T1/B2/sekret"
        reason = "submission rejected: curl https://bob:hunter2@example.org/x failed"
        (event,) = store.append_events([("task", "r", "t", {"reason": reason, "name": hook})])
        stored = store.events_since(0)[0]
        for data in (event.data, stored.data):
            assert "hunter2" not in data["reason"] and "sekret" not in data["name"]
            assert "bob:***@example.org" in data["reason"]
    finally:
        store.close()
