"""The exercise checkers: each kind accepts a right answer and refuses a wrong one."""
from __future__ import annotations

import numpy as np
import pytest

from tmr_lib import exercises as ex
from tmr_lib.exercises import ____


def feedback(problem, *values):
    return problem._feedback(values)


# ---------------------------------------------------------------- EqualityProblem
def test_equality_right_and_wrong():
    q = ex.EqualityProblem("n_cites", expected=600)
    q.assert_check_passed(600)
    q.assert_check_passed(np.int64(600))
    q.assert_check_failed(601)
    assert "should be a number" in feedback(q, "600").message


def test_equality_float_tolerance_and_several_vars():
    q = ex.EqualityProblem(["share", "name"], expected=(0.49, "部分一致"), abs_tol=0.005)
    q.assert_check_passed(0.4917, "部分一致")
    q.assert_check_failed(0.52, "部分一致")
    q.assert_check_failed(0.49, "酷似")
    with pytest.raises(ValueError):
        ex.EqualityProblem(["a", "b"], expected=(1,))


def test_equality_bool_is_not_a_number():
    q = ex.EqualityProblem("flag", expected=True)
    q.assert_check_passed(True)
    q.assert_check_failed(1)
    q.assert_check_failed(False)


def test_equality_containers():
    q = ex.EqualityProblem("ids", expected=["a", "b"])
    q.assert_check_passed(("a", "b"))
    q.assert_check_failed(["b", "a"])
    q2 = ex.EqualityProblem("v", expected=np.array([0.1, 0.2]))
    q2.assert_check_passed([0.1, 0.2 + 1e-12])
    q2.assert_check_failed([0.1, 0.3])


# ---------------------------------------------------------------- reading the notebook's globals
def test_check_reads_caller_globals_and_blank(capsys):
    q = ex.EqualityProblem("answer_from_globals", expected=3)
    g = globals()
    g["answer_from_globals"] = ____
    try:
        q.check()
        assert "Not attempted" in capsys.readouterr().out
        g["answer_from_globals"] = 4
        q.check()
        assert "Incorrect" in capsys.readouterr().out
        g["answer_from_globals"] = 3
        q.check()
        assert "Correct" in capsys.readouterr().out
        q.assert_check_passed()
    finally:
        del g["answer_from_globals"]
    q.check()
    assert "define answer_from_globals first" in capsys.readouterr().out


def test_not_attempted_is_neither_pass_nor_fail():
    q = ex.EqualityProblem("x", expected=1)
    with pytest.raises(AssertionError):
        q.assert_check_passed(____)
    with pytest.raises(AssertionError):
        q.assert_check_failed(____)


# ---------------------------------------------------------------- FunctionProblem
def reciprocal_rank(ranked, correct):
    for i, g in enumerate(ranked, start=1):
        if g in correct:
            return 1 / i
    return 0.0


CASES = [((["a", "b", "c"], {"b"}), 0.5), ((["a"], {"z"}), 0.0), ((["x", "y"], {"x", "y"}), 1.0)]


def test_function_right_and_wrong():
    q = ex.FunctionProblem("reciprocal_rank", cases=CASES)
    q.assert_check_passed(reciprocal_rank)
    q.assert_check_failed(lambda ranked, correct: 1.0)  # always 1
    fb = feedback(q, lambda ranked, correct: 1.0)
    assert "test case 1" in fb.message and "expected 0.5" in fb.message


def test_function_reports_errors_missing_return_and_non_callables():
    q = ex.FunctionProblem("reciprocal_rank", cases=CASES)

    def forgot_return(ranked, correct):
        1 / 2

    assert "forget `return`" in feedback(q, forgot_return).message
    assert "ZeroDivisionError" in feedback(q, lambda r, c: 1 / 0).message
    assert "should be a function" in feedback(q, 0.5).message
    with pytest.raises(ValueError):
        ex.FunctionProblem("f", cases=[])


def test_function_with_a_blank_body_is_not_attempted():
    def hit_rank(ranked, correct):
        return ____

    q = ex.FunctionProblem("hit_rank", cases=[((["a"], {"a"}), 1)])
    assert feedback(q, hit_rank).kind == "todo"


def test_function_single_argument_cases():
    q = ex.FunctionProblem("square", cases=[(2, 4), (3, 9)])
    q.assert_check_passed(lambda x: x * x)
    q.assert_check_failed(lambda x: x + x)  # right for 2, wrong for 3


# ---------------------------------------------------------------- CodingProblem
def test_coding_right_and_wrong():
    def checker(df):
        assert len(df) == 3, f"expected 3 rows, got {len(df)}"
        if list(df) != ["gid", "cite_gid"]:
            raise ex.Incorrect("columns must be gid, cite_gid")

    import pandas as pd

    q = ex.CodingProblem("sub", checker)
    q.assert_check_passed(pd.DataFrame({"gid": [1, 2, 3], "cite_gid": ["a", "b", "c"]}))
    q.assert_check_failed(pd.DataFrame({"gid": [1, 2], "cite_gid": ["a", "b"]}))
    assert feedback(q, pd.DataFrame({"gid": [1, 2]})).message.startswith("expected 3 rows, got 2")
    q.assert_check_failed(pd.DataFrame({"x": [1, 2, 3], "y": [1, 2, 3]}))


# ---------------------------------------------------------------- hints, solutions, thought problems
def test_hints_and_solution(capsys):
    q = ex.EqualityProblem("x", expected=1, hint=["first", "second"], solution="x = 1\n")
    q.hint()
    out = capsys.readouterr().out
    assert "first" in out and "hint(2)" in out
    q.hint(5)  # clamps to the last hint
    assert "second" in capsys.readouterr().out
    q.solution()
    assert "x = 1" in capsys.readouterr().out
    ex.EqualityProblem("x", expected=1).solution()
    assert "no solutions" in capsys.readouterr().out


def test_thought_problem(capsys):
    q = ex.ThoughtProblem(hint="think of noise", solution="Fewer queries, more noise.")
    q.check()
    assert "nothing to check" in capsys.readouterr().out
    q.solution()
    assert "more noise" in capsys.readouterr().out


def test_feedback_html_is_escaped():
    fb = ex.Feedback("incorrect", "<script>x</script>", code="a < b")
    assert "<script>" not in fb._repr_html_()
    assert "&lt;script&gt;" in fb._repr_html_()
    assert "Incorrect: <script>x</script>" in repr(fb)
