"""The docs build as a site in strict mode: a broken link or anchor, or a page under docs/
missing from the nav, fails the build (scripts/test.sh runs the same build)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    # NO_MKDOCS_2_WARNING is mkdocs-material's own switch for its end-of-life notice.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_of_the_docs(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(ROOT / "docs", root / "docs")
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    return root


def test_the_docs_build_strict_and_print_only_progress(tmp_path: Path) -> None:
    done = _build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    noise = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert noise, "mkdocs printed nothing: did it run?"
    assert all(line.startswith("INFO") for line in noise), noise
    pages = sorted(p.relative_to(ROOT / "docs") for p in (ROOT / "docs").rglob("*.md"))
    site = tmp_path / "site"
    built = [site / p.with_suffix("") / "index.html" for p in pages if p.stem != "index"]
    assert pages and all(page.is_file() for page in [site / "index.html", *built])


# Each is a warning that strict mode makes fatal: (page, link added to it, what mkdocs says).
BREAKAGES = [
    ("cost.md", "[x](no-such-page.md)", "'no-such-page.md', but the target is not found"),
    ("cost.md", "[x](workflows.md#no-such-heading)", "not contain an anchor '#no-such-heading'"),
    ("backends/slurm.md", "[x](../../README.md)", "'../../README.md', but the target"),
    ("cli.md", "[x](/cost.md)", "absolute link '/cost.md'"),
]


def test_broken_links_and_a_page_missing_from_the_nav_fail_the_build(tmp_path: Path) -> None:
    """One build for every kind of breakage (a build takes seconds): each is reported, and
    the count proves nothing else was."""
    root = _copy_of_the_docs(tmp_path)
    for page, link, _ in BREAKAGES:
        with (root / "docs" / page).open("a") as out:
            out.write(f"\nSee {link}.\n")
    (root / "docs" / "backends" / "lost.md").write_text("# Lost\n\nNo page links here.\n")
    done = _build(root, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    for page, _, message in BREAKAGES:
        assert re.search(
            rf"WARNING -  Doc file '{re.escape(page)}' contains .*{re.escape(message)}", output
        )
    assert re.search(r"not included in the \"nav\".*\n\s+- backends/lost\.md", output)
    assert f"Aborted with {len(BREAKAGES) + 1} warnings in strict mode" in output


def test_the_readme_links_pages_that_exist() -> None:
    links = re.findall(r"\]\((docs/[^)#\s]+)", (ROOT / "README.md").read_text())
    assert "docs/index.md" in links
    assert [link for link in links if not (ROOT / link).is_file()] == []
