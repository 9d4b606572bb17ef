"""`scripthut outputs`/`summary` and `Run.outputs()`/`Run.task(id).outputs()` on real runs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import scripthut as hut
from scripthut.client.local import LocalClient
from tests.test_api import client as client  # the fixture
from tests.test_api import isolated as isolated  # the fixture
from tests.test_cli import env as env  # the fixture
from tests.test_cli import hut as run_cli
from tests.test_cli import write

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
WRITER = (
    "printf 'a,b\\n1,2\\n3,4\\n' > \"$SCRIPTHUT_OUTPUT_DIR/t.csv\"; "
    'printf \'{"loss": 0.5}\' > "$SCRIPTHUT_OUTPUT_DIR/m.json"; '
    "echo '# fitted' > \"$SCRIPTHUT_RUN_SUMMARY\""
)


def test_cli_lists_gets_and_summarises(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write(tmp_path / "wf.json", [{"id": "fit", "command": WRITER}])
    run_id = json.loads(run_cli("run", wf, "--json", env=env).stdout)["run"]

    listed = json.loads(run_cli("outputs", run_id, "fit", "--json", env=env).stdout)
    assert [f["path"] for f in listed["files"]] == ["m.json", "t.csv"]
    text = run_cli("outputs", run_id, "fit", env=env).stdout
    assert "table     t.csv" in text and "# fitted" in text
    got = run_cli("outputs", run_id, "fit", "--get", "m.json", env=env)
    assert got.returncode == 0 and got.stdout == '{"loss": 0.5}'
    target = tmp_path / "copy.csv"
    run_cli("outputs", run_id, "fit", "--get", "t.csv", "-o", str(target), env=env)
    assert target.read_text() == "a,b\n1,2\n3,4\n"

    summary = run_cli("summary", run_id, env=env).stdout
    assert summary.startswith("# wf\n") and "## fit\n\n# fitted\n" in summary
    missing = run_cli("outputs", run_id, "fit", "--get", "nope.txt", env=env)
    assert missing.returncode == 2 and "nope.txt" in missing.stderr


def test_python_objects_display_inline(client: LocalClient, tmp_path: Path) -> None:
    (tmp_path / "dot.png").write_bytes(PNG)
    cmd = f'{WRITER}; cp {tmp_path / "dot.png"} "$SCRIPTHUT_OUTPUT_DIR/dot.png"'
    run = hut.run([hut.Task("fit", cmd)])
    assert run.wait(60) == "completed"

    outputs = run.task("fit").outputs()
    assert [o.path for o in outputs] == ["dot.png", "m.json", "t.csv"]
    frame = outputs["t.csv"].value()
    assert list(frame.columns) == ["a", "b"] and frame["b"].tolist() == [2, 4]
    assert "<table" in outputs["t.csv"]._repr_mimebundle_()["text/html"]
    assert outputs["m.json"].value() == {"loss": 0.5}
    image = outputs["dot.png"]._repr_mimebundle_()
    assert base64.b64decode(image["image/png"]) == PNG
    assert "# fitted" in outputs._repr_markdown_()

    everything = run.outputs()
    assert list(everything) == ["fit"]
    assert "- `t.csv` (12 B)" in everything._repr_markdown_()


def test_markdown_outputs_display_as_markdown(client: LocalClient) -> None:
    note = "# Report\\n\\n| a | b |\\n|---|---|\\n| 1 | 2 |\\n"
    run = hut.run([hut.Task("fit", f"printf '{note}' > \"$SCRIPTHUT_OUTPUT_DIR/r.md\"")])
    assert run.wait(60) == "completed"
    report = run.task("fit").outputs()["r.md"]
    bundle = report._repr_mimebundle_()
    assert bundle["text/markdown"].startswith("# Report\n\n| a | b |")
    assert "text/html" not in bundle  # the front end renders (and sanitises) the Markdown


def test_hut_run_no_cache(client: LocalClient, tmp_path: Path) -> None:
    command = "echo ran >> ran.log; echo 1 > o.txt"
    doc = [hut.Task("m", command, working_dir=str(tmp_path), outputs=["o.txt"])]
    for no_cache, hit in ((False, False), (False, True), (True, False)):
        run = hut.run(doc, no_cache=no_cache)
        assert run.wait(60) == "completed"
        assert run.task("m").manifest()["cache"]["hit"] is hit
    assert (tmp_path / "ran.log").read_text() == "ran\nran\n"
