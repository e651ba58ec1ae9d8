"""The notebooks as committed: no outputs, and the teaching structure every notebook shares.

Each notebook opens with its goal, prerequisites and time estimate, has a cell tagged
``parameters`` (papermill style: ``tools/handouts.py -p NAME VALUE``), ends with an Exercises
section, and keeps its worked answers in cells tagged ``solution`` so that the student copy can
leave them out (see tools/handouts.py).
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
ids = [p.name for p in NOTEBOOKS]


def tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


@pytest.fixture(params=NOTEBOOKS, ids=ids)
def nb(request):
    return request.param, nbformat.read(request.param, as_version=4)


def test_notebooks_are_numbered():
    for p in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name), f"{p.name}: name it NN_words.ipynb"


def test_no_outputs_or_execution_counts(nb):
    path, book = nb
    dirty = [i for i, c in enumerate(book.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} hold outputs or execution counts; clear them with "
                       f"`.venv/bin/jupyter nbconvert --clear-output --inplace {path}`")


def test_valid_notebook_format(nb):
    path, book = nb
    nbformat.validate(book)


def test_header_states_goal_prerequisites_and_time(nb):
    path, book = nb
    first = book.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), \
        f"{path.name}: the first cell must be a markdown title"
    for word in ("Goal", "Prerequisites", "Time"):
        assert re.search(rf"\*\*{word}\b", first.source), f"{path.name}: the first cell lacks **{word}.**"


def test_starts_with_the_session_and_has_a_parameters_cell(nb):
    """The first code cell is the two-line session start (the recipe from $TMR_PRESET, its data found
    from anywhere); one parameters cell follows; no notebook finds the kit or the preset by hand."""
    path, book = nb
    code = [c for c in book.cells if c.cell_type == "code"]
    first = [line for line in code[0].source.splitlines() if line.strip()]
    assert len(first) == 2 and first[0] == "from tmr_lib.session import start" and \
        re.match(r'kit = start\("\d\d_\w+"', first[1]), f"{path.name}: the first code cell must be the session start"
    params = [c for c in book.cells if "parameters" in tags(c)]
    assert len(params) == 1 and params[0].cell_type == "code", \
        f"{path.name}: exactly one code cell must be tagged 'parameters'"
    for c in code:
        src = "\n".join(line.split("#")[0] for line in c.source.splitlines())  # code, not comments
        assert "os.environ.get(\"TMR_PRESET\"" not in src and "DATA_PRESET" not in src and "pyproject.toml" not in src, \
            f"{path.name}: a cell finds the preset or the kit by hand; use the session (kit.recipe, kit.data_dir)"


def test_has_exercises_with_solutions_in_tagged_cells(nb):
    path, book = nb
    heads = [i for i, c in enumerate(book.cells)
             if c.cell_type == "markdown" and re.search(r"^#+ .*Exercises", c.source, re.M)]
    assert heads, f"{path.name}: no '## Exercises' section"
    after = book.cells[heads[-1]:]
    problems = sum(len(re.findall(r"\bex\.\w+Problem\(", c.source)) for c in after if c.cell_type == "code")
    assert 2 <= problems <= 4, f"{path.name}: {problems} exercises (tmr_lib.exercises problems); 2 to 4 expected"
    for c in book.cells:
        if "solution" in tags(c):
            assert c.cell_type == "code"
        elif c.cell_type == "code":
            assert "assert_check_passed" not in c.source, \
                f"{path.name}: a worked answer (assert_check_passed) outside a cell tagged 'solution':\n{c.source}"


def test_no_solution_leaks_into_the_student_copy(nb):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    try:
        import handouts
    finally:
        sys.path.pop(0)
    path, book = nb
    student = handouts.without_solutions(book, keep_outputs=False)
    assert handouts.check_student_copy(book, student) == []
    assert not any("solution" in tags(c) for c in student.cells)
