"""The front end's pure parts (DAG grouping, the patch protocol, lanes) under `node --test`.

`units.test.ts` is bundled with the project's own esbuild (js/node_modules) and run by
Node's test runner. Without Node or js/node_modules the test skips, except under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ESBUILD = ROOT / "js" / "node_modules" / ".bin" / "esbuild"


def need(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: run `npm ci` in js/ first)")
    pytest.skip(what)


def test_front_end_units(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        need("node is not installed")
    if not ESBUILD.exists():
        need("js/node_modules is missing")
    bundle = tmp_path / "units.test.mjs"
    subprocess.run(
        [
            str(ESBUILD),
            str(Path(__file__).with_name("units.test.ts")),
            "--bundle",
            "--platform=node",
            "--format=esm",
            f"--outfile={bundle}",
            "--log-level=warning",
        ],
        check=True,
        timeout=60,
    )
    result = subprocess.run(
        [str(node), "--test", str(bundle)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
