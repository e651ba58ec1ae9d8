"""tools/handouts.py: the student copy loses every solution, parameters are injected papermill-style."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import handouts  # noqa: E402

sys.path.pop(0)


def notebook():
    return new_notebook(cells=[
        new_markdown_cell("# T\n\n**Goal.** g **Prerequisites.** p **Time.** t"),
        new_code_cell("import os\nPRESET = os.environ.get(\"TMR_PRESET\", \"cpu\")\nSEED = 0",
                      metadata={"tags": ["parameters"]}),
        new_code_cell("q1 = ex.EqualityProblem('x', expected=1, hint='h', solution='x = 1  # SECRET-A')\n"
                      "q2 = ex.FunctionProblem('f', cases=[(1, 1)], solution='''\ndef f(a):\n    return a  # SECRET-B\n''')\n"
                      "q3 = ex.ThoughtProblem(hint='think', solution=None)",
                      metadata={"tags": ["exercise-setup"]}),
        new_code_cell("x = ____\nq1.check()"),
        new_code_cell("x = 1  # SECRET-C\nq1.assert_check_passed()", metadata={"tags": ["solution"]}),
    ])


def test_strip_solution_text_keeps_hints_and_code():
    src = "q = ex.EqualityProblem('x', expected=1, hint='h', solution=\"x = '酷似'\")\nprint(1)"
    out = handouts.strip_solution_text(src)
    assert out == "q = ex.EqualityProblem('x', expected=1, hint='h', solution=None)\nprint(1)"
    assert handouts.strip_solution_text("!ls\n") == "!ls\n"  # IPython syntax is left alone


def test_student_copy_has_no_solutions():
    nb = notebook()
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", text="Not attempted")]
    nb.cells[3].execution_count = 3
    student = handouts.without_solutions(nb, keep_outputs=False)
    text = nbformat.writes(student)
    assert "SECRET" not in text
    assert len(student.cells) == 4
    assert student.cells[2].metadata["jupyter"]["source_hidden"] is True
    assert "hint='h'" in student.cells[2].source
    assert student.cells[3].outputs == [] and student.cells[3].execution_count is None
    assert handouts.check_student_copy(nb, student) == []
    assert handouts.check_student_copy(nb, nb) != []  # the teacher's copy does leak


def test_inject_parameters_after_the_parameters_cell():
    nb = handouts.inject_parameters(notebook(), {"SEED": 3, "PRESET": "ci"})
    cell = nb.cells[2]
    assert "injected-parameters" in cell.metadata["tags"]
    assert "SEED = 3\n" in cell.source and "PRESET = 'ci'\n" in cell.source
    assert handouts.parse_value("3") == 3 and handouts.parse_value("ci") == "ci"
    nb = notebook()
    nb.cells[1].metadata["tags"] = []
    with pytest.raises(SystemExit):
        handouts.inject_parameters(nb, {"SEED": 1})


@pytest.mark.slow
def test_build_executes_and_writes_every_file(tmp_path):
    nb = new_notebook(cells=[
        new_markdown_cell("# T"),
        new_code_cell("import os\nPRESET = os.environ.get('TMR_PRESET', 'cpu')\nSEED = 0",
                      metadata={"tags": ["parameters"]}),
        new_code_cell("from tmr_lib import exercises as ex\n"
                      "q1 = ex.EqualityProblem('x', expected=SEED, solution='x = SEED  # SECRET')",
                      metadata={"tags": ["exercise-setup"]}),
        new_code_cell("print('preset', PRESET, 'seed', SEED)"),
        new_code_cell("x = SEED  # SECRET\nq1.assert_check_passed()", metadata={"tags": ["solution"]}),
    ])
    src = tmp_path / "01_tiny.ipynb"
    nbformat.write(nb, src)
    out = tmp_path / "handouts"
    assert handouts.main([str(src), "--preset", "ci", "--out", str(out), "-p", "SEED", "7"]) == 0
    learner = (out / "01_tiny.html").read_text(encoding="utf-8")
    assert "preset ci seed 7" in learner and "SECRET" not in learner
    assert "SECRET" in (out / "teacher" / "01_tiny.html").read_text(encoding="utf-8")
    assert "SECRET" not in (out / "student" / "01_tiny.ipynb").read_text(encoding="utf-8")
    assert "01_tiny.html" in (out / "index.html").read_text(encoding="utf-8")
