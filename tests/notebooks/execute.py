"""Execute the notebooks in place, so the outputs nbval compares against are fresh.

    .venv/bin/python tests/notebooks/execute.py [notebooks/NAME.ipynb ...]

Run it after changing a notebook, then check the diff: deterministic outputs must not move;
cells whose output holds run ids or times carry `# NBVAL_IGNORE_OUTPUT` (or the
`nbval-ignore-output` tag, for a cell magic whose first line must be the magic). Each
notebook runs in its own kernel with the notebook's folder as working directory, as under
nbval. Saved widget outputs keep only their static forms (the HTML and text summaries the
widgets provide): a widget view without its live model would show as an error, and its
saved state would carry the whole JavaScript bundle.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT = 600
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=False,
    )
    client.execute()
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data and len(data) > 1:
                del data[WIDGET_VIEW]
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv] or sorted(NOTEBOOKS.glob("*.ipynb"))
    for path in paths:
        print(f"executing {path}", flush=True)
        execute(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
