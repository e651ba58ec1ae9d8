"""Execute the notebooks and write the workshop handouts (``make handouts``).

    python tools/handouts.py                       # every notebook, cpu preset -> handouts/
    python tools/handouts.py notebooks/07_*.ipynb --preset ci -p N_TEAMS 6

For each notebook ``NN_name.ipynb`` it writes, into the git-ignored ``handouts/`` folder:

``NN_name.html``
    the learner's handout: executed top to bottom, with pictures, **without solutions**;
``student/NN_name.ipynb``
    the notebook learners work in: no outputs, **no solutions**;
``teacher/NN_name.ipynb`` and ``teacher/NN_name.html``
    the executed notebook with everything, solutions included (keep it for the host);
``index.html``
    links to all of them, with the preset and the run time of each notebook.

What counts as a solution (the notebooks follow this; ``tests/test_notebooks_clean.py`` checks it):

* a cell tagged ``solution`` (the worked answer of an exercise, which also proves in CI that the
  checker accepts it): removed from the learner's HTML and the student copy;
* the ``solution="..."`` text given to a ``tmr_lib.exercises`` problem: replaced by ``None``, so
  ``q1.solution()`` says that this copy has none; hints stay;
* the cell tagged ``exercise-setup`` that defines the checkers keeps working in the student copy,
  but its code is collapsed there and hidden in the HTML (hidden, not secret: use nbgrader for
  graded work).

Parameters: the cell tagged ``parameters`` holds the defaults; ``-p NAME VALUE`` adds a cell tagged
``injected-parameters`` after it, as papermill does. ``--preset`` sets ``TMR_PRESET`` for the kernel.
"""
from __future__ import annotations

import argparse
import ast
import copy
import html
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat

KIT = Path(__file__).resolve().parent.parent
SOLUTION_TAG = "solution"
SETUP_TAG = "exercise-setup"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


# --------------------------------------------------------------------------- solutions out
def strip_solution_text(source: str) -> str:
    """``source`` with the value of every ``solution=`` keyword argument replaced by ``None``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython syntax (!, %): nothing we can safely rewrite
        return source
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "solution" and not (isinstance(kw.value, ast.Constant) and kw.value.value is None):
                    v = kw.value
                    spans.append((v.lineno, v.col_offset, v.end_lineno, v.end_col_offset))
    if not spans:
        return source
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def pos(lineno: int, col: int) -> int:  # ast columns are UTF-8 byte offsets
        line = lines[lineno - 1]
        return offsets[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8"))

    out = source
    for l0, c0, l1, c1 in sorted(spans, reverse=True):
        out = out[: pos(l0, c0)] + "None" + out[pos(l1, c1):]
    return out


def without_solutions(nb, *, keep_outputs: bool) -> nbformat.NotebookNode:
    """A copy of ``nb`` with no solution cells and no solution texts (see the module docstring)."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb.cells:
        if SOLUTION_TAG in tags(cell):
            continue
        if cell.cell_type == "code":
            cell.source = strip_solution_text(cell.source)
            if SETUP_TAG in tags(cell):
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
            if not keep_outputs:
                cell.outputs = []
                cell.execution_count = None
        cells.append(cell)
    nb.cells = cells
    return nb


def check_student_copy(teacher, student) -> list[str]:
    """Problems that would leak a solution into ``student`` (empty when it is clean)."""
    problems = [f"cell {i} is tagged {SOLUTION_TAG}" for i, c in enumerate(student.cells) if SOLUTION_TAG in tags(c)]
    for i, cell in enumerate(student.cells):
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "solution":
                if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                    problems.append(f"cell {i} still gives a solution= text")
    return problems


# --------------------------------------------------------------------------- parameters
def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def inject_parameters(nb, params: dict) -> nbformat.NotebookNode:
    """Add a cell tagged ``injected-parameters`` after the ``parameters`` cell (papermill's way)."""
    if not params:
        return nb
    nb = copy.deepcopy(nb)
    idx = next((i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in tags(c)), None)
    if idx is None:
        raise SystemExit("this notebook has no cell tagged 'parameters'; -p cannot be used")
    source = "# Parameters injected by tools/handouts.py\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
    nb.cells.insert(idx + 1, cell)
    return nb


# --------------------------------------------------------------------------- run and export
def execute(nb, cwd: Path, preset: str, timeout: int):
    """Run ``nb`` in a fresh kernel with ``TMR_PRESET=preset``; returns (notebook, seconds)."""
    from nbconvert.preprocessors import ExecutePreprocessor

    env_before = dict(os.environ)
    os.environ["TMR_PRESET"] = preset
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
    try:
        t0 = time.time()
        ep = ExecutePreprocessor(timeout=timeout, kernel_name="python3")
        ep.preprocess(nb, {"metadata": {"path": str(cwd)}})
        return nb, time.time() - t0
    finally:
        os.environ.clear()
        os.environ.update(env_before)


def to_html(nb, path: Path, title: str) -> None:
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {SETUP_TAG}
    c.TagRemovePreprocessor.remove_cell_tags = {INJECTED_TAG}
    c.HTMLExporter.preprocessors = ["nbconvert.preprocessors.TagRemovePreprocessor"]
    exporter = HTMLExporter(config=c, template_name="lab")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")


def write_index(out: Path, rows: list[dict], preset: str) -> Path:
    items = "\n".join(
        f"<tr><td><a href='{html.escape(r['stem'])}.html'>{html.escape(r['stem'])}</a></td>"
        f"<td><a href='student/{html.escape(r['stem'])}.ipynb'>student notebook</a></td>"
        f"<td><a href='teacher/{html.escape(r['stem'])}.html'>teacher's copy</a></td>"
        f"<td>{r['seconds']:.0f} s</td><td>{html.escape(r['status'])}</td></tr>"
        for r in rows
    )
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "<!doctype html><meta charset='utf-8'><title>TMR Kit handouts</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em 1em;text-align:left}</style>"
        f"<h1>TMR Kit handouts</h1><p>Executed with preset <b>{html.escape(preset)}</b> on {when}. "
        "Hand out the HTML pages and the <code>student/</code> notebooks; <code>teacher/</code> holds "
        "the solutions.</p>"
        "<table><tr><th>handout</th><th>to work in</th><th>with solutions (host)</th><th>run time</th>"
        f"<th>status</th></tr>{items}</table>"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def build(notebook: Path, out: Path, preset: str, params: dict, timeout: int) -> dict:
    stem = notebook.stem
    nb = nbformat.read(notebook, as_version=4)
    student = without_solutions(nb, keep_outputs=False)
    leaks = check_student_copy(nb, student)
    if leaks:
        raise SystemExit(f"{notebook}: the student copy would leak solutions: {leaks}")
    (out / "student").mkdir(parents=True, exist_ok=True)
    nbformat.write(student, out / "student" / f"{stem}.ipynb")

    run = inject_parameters(nb, params)
    status = "ok"
    t0 = time.time()
    try:
        run, seconds = execute(run, notebook.parent, preset, timeout)
    except Exception as e:  # noqa: BLE001 - keep the partial notebook: it shows where it failed
        seconds = time.time() - t0
        status = f"FAILED: {type(e).__name__}"
        print(f"{notebook}: execution failed:\n{e}", file=sys.stderr)
    (out / "teacher").mkdir(parents=True, exist_ok=True)
    nbformat.write(run, out / "teacher" / f"{stem}.ipynb")
    to_html(run, out / "teacher" / f"{stem}.html", f"{stem} (teacher's copy)")
    to_html(without_solutions(run, keep_outputs=True), out / f"{stem}.html", stem)
    print(f"{stem}: {status}, {seconds:.1f} s -> {out / (stem + '.html')}")
    return {"stem": stem, "seconds": seconds, "status": status}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    ap.add_argument("--preset", default=os.environ.get("TMR_PRESET", "cpu"), help="TMR_PRESET for the run (default cpu)")
    ap.add_argument("--out", type=Path, default=KIT / "handouts", help="output folder (default handouts/)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override a value of the parameters cell (repeatable), e.g. -p SEED 1")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = ap.parse_args(argv)

    notebooks = args.notebooks or sorted((KIT / "notebooks").glob("[0-9]*.ipynb"))
    if not notebooks:
        print("no notebooks found", file=sys.stderr)
        return 1
    params = {k: parse_value(v) for k, v in args.parameter}
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [build(nb.resolve(), args.out, args.preset, params, args.timeout) for nb in notebooks]
    index = write_index(args.out, rows, args.preset)
    print(f"index: {index}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
