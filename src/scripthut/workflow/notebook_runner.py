"""Runs one notebook task where the task runs: `python3 -c <this file> IN OUT PARAMS_JSON`.

Self-contained on purpose (the standard library, then papermill or nbclient): it is sent
inside the task's script, so the cluster needs no ScriptHut. Papermill's semantics: the
parameters go into a new cell tagged `injected-parameters` right after the cell tagged
`parameters` (at the top when there is none; an earlier injected cell is replaced). The
executed notebook is written to OUT even when a cell fails; a failure names the cell.
Exit status: 0 done, 1 a cell failed, 127 neither papermill nor nbclient can be imported.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any, NoReturn

INJECTED = "injected-parameters"


def fail(message: str, code: int = 1) -> NoReturn:
    sys.stderr.write("scripthut: " + message + "\n")
    sys.exit(code)


def parameter_source(params: dict[str, Any]) -> str:
    lines = ["# Parameters"]
    lines.extend(f"{name} = {value!r}" for name, value in params.items())
    return "\n".join(lines) + "\n"


def inject(nb: Any, params: dict[str, Any], nbformat: Any) -> None:
    cells = [c for c in nb.cells if INJECTED not in c.get("metadata", {}).get("tags", [])]
    at = 0
    for index, cell in enumerate(cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            at = index + 1
            break
    cell = nbformat.v4.new_code_cell(parameter_source(params))
    cell.metadata["tags"] = [INJECTED]
    cells.insert(at, cell)
    nb.cells = cells


def with_papermill(pm: Any, source: str, target: str, params: dict[str, Any]) -> None:
    try:
        pm.execute_notebook(source, target, parameters=params, progress_bar=False, cwd=os.getcwd())
    except pm.PapermillExecutionError as exc:
        where = f"cell {exc.cell_index} (In [{exc.exec_count}])"
        fail(f"notebook {source} failed in {where}: {exc.ename}: {exc.evalue}")


def with_nbclient(source: str, target: str, params: dict[str, Any]) -> None:
    try:
        nbformat: Any = importlib.import_module("nbformat")
        nbclient: Any = importlib.import_module("nbclient")
        errors: Any = importlib.import_module("nbclient.exceptions")
    except ImportError:
        fail(
            "a notebook task needs papermill, or nbclient and nbformat, in the task's "
            f"environment; {sys.executable} can import neither (pip install papermill)",
            127,
        )
    nb = nbformat.read(source, as_version=4)
    inject(nb, params, nbformat)
    client = nbclient.NotebookClient(nb, resources={"metadata": {"path": os.getcwd()}})
    try:
        client.execute()
    except errors.CellExecutionError as exc:
        nbformat.write(nb, target)
        index, error = failing_cell(nb)
        detail = f"{error.get('ename')}: {error.get('evalue')}" if error else str(exc)
        fail(f"notebook {source} failed in cell {index}: {detail}")
    nbformat.write(nb, target)


def failing_cell(nb: Any) -> tuple[int, Any]:
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return index, output
    return -1, None


def main(argv: list[str]) -> None:
    source, target, params = argv[1], argv[2], json.loads(argv[3])
    if not os.path.isfile(source):
        fail(f"notebook {source} not found (from {os.getcwd()})")
    papermill: Any
    try:
        import papermill  # type: ignore[import-not-found, no-redef]
    except ImportError:
        papermill = None
    if papermill is not None:
        with_papermill(papermill, source, target, params)
    else:
        with_nbclient(source, target, params)


if __name__ == "__main__":
    main(sys.argv)
