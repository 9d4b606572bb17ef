"""The prebuilt labextension: what the build writes, how JupyterLab finds it, what a wheel ships."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.lab.harness import BIN, ROOT, ensure_labextension

WHEEL_PATH = "share/jupyter/labextensions/scripthut/package.json"
PYPROJECT_HINT = (
    "pyproject.toml must map the built labextension into the wheel:\n"
    "  [tool.hatch.build.targets.wheel.shared-data]\n"
    '  "src/scripthut/labextension" = "share/jupyter/labextensions/scripthut"\n'
    "and the jupyter-builder hook must build js/lab (npm ci && npm run build in js/lab) "
    "before the wheel is assembled; see docs/lab-panel.md"
)


def listed(output: str) -> str | None:
    """The `scripthut ...` line of `jupyter labextension list` (colour codes removed)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    return next((line.strip() for line in plain.splitlines() if "scripthut" in line), None)


def labextension_list(jupyter_path: Path) -> str:
    env = {
        **os.environ,
        "JUPYTER_PATH": str(jupyter_path),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    done = subprocess.run(
        [str(BIN / "jupyter"), "labextension", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout + done.stderr


def test_build_output_is_a_prebuilt_extension() -> None:
    built = ensure_labextension()
    package = json.loads((built / "package.json").read_text())
    assert package["name"] == "scripthut"
    assert package["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    assert (built / package["jupyterlab"]["_build"]["load"]).is_file()
    assert (built / "static" / "style.js").is_file()
    schema = json.loads((built / "schemas" / "scripthut" / "plugin.json").read_text())
    assert set(schema["properties"]) >= {"refreshInterval", "defaultBackend", "showExternalJobs"}
    install = json.loads((built / "install.json").read_text())
    assert install["packageName"] == "scripthut"


def test_jupyter_finds_it_through_labextension_paths(tmp_path: Path) -> None:
    """`jupyter labextension develop` (which reads `_jupyter_labextension_paths`) links it in."""
    ensure_labextension()
    target = tmp_path / "labextensions"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [
            str(BIN / "jupyter"),
            "labextension",
            "develop",
            "--overwrite",
            str(ROOT),
            "--DevelopLabExtensionApp.sys_prefix=False",
            f"--DevelopLabExtensionApp.labextensions_dir={target}",
        ],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert (target / "scripthut").resolve() == (ROOT / "src" / "scripthut" / "labextension")
    line = listed(labextension_list(tmp_path))
    assert line is not None
    assert re.search(r"scripthut v0\.1\.0 enabled\s+OK \(python, scripthut\)", line), line


def checkout(target: Path) -> Path:
    """The project's files as a fresh clone would have them (tracked + new, not ignored).

    The wheel is built from this copy, not in place: the build hook runs `npm ci`, which
    must not wipe the node_modules of the working tree.
    """
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            destination = target / os.fsdecode(name)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


@pytest.mark.slow
def test_wheel_ships_the_labextension(tmp_path: Path) -> None:
    """A wheel built from the tree installs the extension where JupyterLab looks for it."""
    if shutil.which("git") is None or shutil.which("npm") is None:
        pytest.skip("needs git and npm")
    source = checkout(tmp_path / "src")
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "-w", str(dist), "--no-deps"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("scripthut-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    assert WHEEL_PATH in data, f"{wheel.name} has no {WHEEL_PATH}.\n{PYPROJECT_HINT}"
    assert any(
        n.startswith("share/jupyter/labextensions/scripthut/static/remoteEntry.") for n in data
    )
    assert not any(n.startswith("scripthut/labextension/") for n in names), "shipped twice"

    # Install its data files as pip would (pip itself would uninstall the project from the
    # environment running the tests, even with --prefix).
    prefix = tmp_path / "prefix"
    with zipfile.ZipFile(wheel) as archive:
        for name in names:
            if ".data/data/" in name and not name.endswith("/"):
                target = prefix / name.split(".data/data/", 1)[1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    line = listed(labextension_list(prefix / "share" / "jupyter"))
    assert line is not None
    assert re.search(r"scripthut v0\.1\.0 enabled\s+OK \(python, scripthut\)", line), line
