"""Small exercise checkers for the notebooks, in the style of Kaggle's learntools.

In a notebook::

    from tmr_lib import exercises as ex
    from tmr_lib.exercises import ____          # the blank a learner fills in

    q1 = ex.EqualityProblem("n_cites", expected=600, hint="How many rows has cite_v2.csv?")
    q2 = ex.FunctionProblem("reciprocal_rank", cases=[((["a", "b"], {"b"}), 0.5)])

    n_cites = ____
    q1.check()          # "Not attempted: set n_cites" / "Correct" / "Incorrect: ... expected ..."
    q1.hint()           # the first hint; q1.hint(2) the next one
    q1.solution()       # the worked answer (unless this is the student copy)

``check()`` reads the named variables from the notebook's globals (or takes them as
arguments: ``q1.check(600)``). It never raises on a wrong answer: it shows what is wrong.
``assert_check_passed()`` / ``assert_check_failed()`` do raise, so the teacher's copy can prove
in CI that each checker accepts the right answer and refuses a wrong one.

Problem kinds:

* :class:`EqualityProblem` -- values equal to the expected ones (floats with a tolerance);
* :class:`FunctionProblem` -- a function the learner writes, run on test cases;
* :class:`CodingProblem` -- any check written as a function that raises :class:`Incorrect`;
* :class:`ThoughtProblem` -- a question to think about: a hint and a solution, nothing to check.

Solutions live in the notebook: in the ``solution=`` text of a problem and in cells tagged
``solution``. ``tools/handouts.py`` writes the student copy without either (``solution=`` text
becomes ``None``, and ``solution()`` then says so).
"""
from __future__ import annotations

import html
import inspect
import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "____",
    "Incorrect",
    "Problem",
    "EqualityProblem",
    "FunctionProblem",
    "CodingProblem",
    "ThoughtProblem",
]


class _Blank:
    """The placeholder a learner replaces: ``x = ____``."""

    def __repr__(self) -> str:
        return "____"


____ = _Blank()


class Incorrect(Exception):
    """Raised by a checker: the message tells the learner what is wrong."""


class _NotAttempted(Exception):
    pass


_COLOURS = {"correct": "#2e7d32", "incorrect": "#c62828", "todo": "#8d6e00", "hint": "#1565c0",
            "solution": "#37474f"}
_LABELS = {"correct": "Correct", "incorrect": "Incorrect", "todo": "Not attempted yet", "hint": "Hint",
           "solution": "Solution"}


class Feedback:
    """What check/hint/solution show: plain text in a terminal, coloured HTML in Jupyter."""

    def __init__(self, kind: str, message: str = "", code: str | None = None):
        self.kind, self.message, self.code = kind, message, code

    def __repr__(self) -> str:
        text = _LABELS[self.kind] + (f": {self.message}" if self.message else "")
        if self.code:
            text += "\n" + textwrap.indent(self.code.strip("\n"), "    ")
        return text

    def _repr_html_(self) -> str:
        head = f'<span style="color:{_COLOURS[self.kind]};font-weight:bold">{_LABELS[self.kind]}</span>'
        body = f": {html.escape(self.message)}" if self.message else ""
        code = f"<pre>{html.escape(self.code.strip(chr(10)))}</pre>" if self.code else ""
        return f"<div>{head}{body}{code}</div>"


def _show(fb: Feedback) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(fb)
            return
    except ImportError:  # pragma: no cover - IPython ships with the kit
        pass
    print(repr(fb))


def _caller_globals() -> dict[str, Any]:
    """The globals of the first frame outside this module (the notebook's namespace)."""
    frame = inspect.currentframe()
    try:
        while frame is not None and frame.f_globals.get("__name__") == __name__:
            frame = frame.f_back
        return frame.f_globals if frame is not None else {}
    finally:
        del frame


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def equal(a: Any, b: Any, rel: float = 1e-6, abs_: float = 1e-9) -> bool:
    """Equality that forgives float rounding, numpy scalars/arrays and list-vs-tuple."""
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        both = isinstance(a, (bool, np.bool_)) and isinstance(b, (bool, np.bool_))
        return both and bool(a) == bool(b)
    if isinstance(a, (int, float, np.integer, np.floating)) and isinstance(b, (int, float, np.integer, np.floating)):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rel, atol=abs_))
        except (TypeError, ValueError):
            return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y, rel, abs_) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an odd __eq__ is simply "not equal"
        return False


class Problem:
    """One exercise: ``check()``, ``hint(n)``, ``solution()``.

    ``var`` names the notebook variable(s) the learner sets (a name or a list of names).
    Subclasses implement :meth:`_check`, which raises :class:`Incorrect` with a helpful message.
    """

    def __init__(self, var: str | Sequence[str] = (), *, hint: str | Sequence[str] | None = None,
                 solution: str | None = None):
        self.vars: tuple[str, ...] = (var,) if isinstance(var, str) else tuple(var)
        self.hints: list[str] = [hint] if isinstance(hint, str) else list(hint or [])
        self._solution = solution

    # -- what the learner calls --------------------------------------------------------------
    def check(self, *values: Any) -> None:
        """Show whether the answer is right (never raises on a wrong answer)."""
        _show(self._feedback(values))

    def hint(self, n: int = 1) -> None:
        """Show hint ``n`` (1 = the gentlest)."""
        if not self.hints:
            _show(Feedback("hint", "no hint for this one: read the question again, then try solution()."))
            return
        n = max(1, min(int(n), len(self.hints)))
        more = f" (hint {n} of {len(self.hints)}; try .hint({n + 1}))" if n < len(self.hints) else ""
        _show(Feedback("hint", self.hints[n - 1] + more))

    def solution(self) -> None:
        """Show the worked answer."""
        if self._solution is None:
            _show(Feedback("solution", "this copy has no solutions; ask your host for the teacher's copy."))
        else:
            _show(Feedback("solution", "", code=textwrap.dedent(self._solution)))

    # -- what the teacher's copy and the tests call ----------------------------------------------
    def assert_check_passed(self, *values: Any) -> None:
        fb = self._feedback(values)
        if fb.kind != "correct":
            raise AssertionError(f"expected the check to pass, got {fb!r}")
        _show(fb)

    def assert_check_failed(self, *values: Any) -> None:
        fb = self._feedback(values)
        if fb.kind != "incorrect":
            raise AssertionError(f"expected the check to fail, got {fb!r}")

    # -- machinery -----------------------------------------------------------------------------
    def _values(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        if values:
            if self.vars and len(values) != len(self.vars):
                raise TypeError(f"check() takes {len(self.vars)} value(s) ({', '.join(self.vars)}), got {len(values)}")
            out = values
        else:
            g = _caller_globals()
            missing = [v for v in self.vars if v not in g]
            if missing:
                raise _NotAttempted(f"define {', '.join(missing)} first, then run check() again.")
            out = tuple(g[v] for v in self.vars)
        blank = [name for name, v in zip(self.vars or ("the answer",) * len(out), out) if isinstance(v, _Blank)]
        if blank:
            raise _NotAttempted(f"replace ____ in {', '.join(blank)} with your answer, then run check() again.")
        return out

    def _feedback(self, values: tuple[Any, ...]) -> Feedback:
        try:
            self._check(*self._values(values))
        except _NotAttempted as e:
            return Feedback("todo", str(e))
        except Incorrect as e:
            return Feedback("incorrect", str(e) or "not yet.")
        return Feedback("correct", self._praise())

    def _praise(self) -> str:
        return "well done."

    def _check(self, *values: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class EqualityProblem(Problem):
    """The learner's variable(s) must equal ``expected`` (one value, or a tuple for several vars).

    Floats compare with relative tolerance ``rel`` (default 1e-6) and absolute ``abs_tol``.
    """

    def __init__(self, var: str | Sequence[str], expected: Any, *, rel: float = 1e-6, abs_tol: float = 1e-9,
                 hint: str | Sequence[str] | None = None, solution: str | None = None):
        super().__init__(var, hint=hint, solution=solution)
        self.expected = (expected,) if len(self.vars) == 1 else tuple(expected)
        if len(self.expected) != len(self.vars):
            raise ValueError(f"{len(self.vars)} variable(s) but {len(self.expected)} expected value(s)")
        self.rel, self.abs_tol = rel, abs_tol

    def _check(self, *values: Any) -> None:
        for name, got, want in zip(self.vars, values, self.expected):
            if isinstance(want, (int, float, np.integer, np.floating)) and not isinstance(want, bool):
                if not isinstance(got, (int, float, np.integer, np.floating)) or isinstance(got, bool):
                    raise Incorrect(f"{name} should be a number, but it is {type(got).__name__} {_short(got)}.")
            if not equal(got, want, self.rel, self.abs_tol):
                raise Incorrect(f"{name} = {_short(got)} is not the expected value.")


class FunctionProblem(Problem):
    """The learner writes a function; it is called on ``cases``: ``[(args, expected), ...]``.

    ``args`` is a tuple of positional arguments (a single non-tuple value is one argument).
    The first failing case is reported with its input, the expected and the returned value.
    """

    def __init__(self, var: str, cases: Iterable[tuple[Any, Any]], *, rel: float = 1e-6, abs_tol: float = 1e-9,
                 hint: str | Sequence[str] | None = None, solution: str | None = None):
        super().__init__(var, hint=hint, solution=solution)
        self.cases = [(a if isinstance(a, tuple) else (a,), want) for a, want in cases]
        if not self.cases:
            raise ValueError("a FunctionProblem needs at least one test case")
        self.rel, self.abs_tol = rel, abs_tol

    def _praise(self) -> str:
        return f"all {len(self.cases)} test cases pass."

    def _check(self, fn: Any) -> None:
        name = self.vars[0]
        if not callable(fn):
            raise Incorrect(f"{name} should be a function (def {name}(...): ...), got {type(fn).__name__}.")
        for i, (args, want) in enumerate(self.cases, start=1):
            call = f"{name}({', '.join(_short(a, 60) for a in args)})"
            try:
                got = fn(*args)
            except Exception as e:  # noqa: BLE001 - the learner's error is the feedback
                raise Incorrect(f"test case {i}: {call} raised {type(e).__name__}: {e}") from None
            if isinstance(got, _Blank):
                raise _NotAttempted(f"replace ____ in the body of {name} with your code, then run check() again.")
            if got is None and want is not None:
                raise Incorrect(f"test case {i}: {call} returned None; did you forget `return`?")
            if not equal(got, want, self.rel, self.abs_tol):
                raise Incorrect(f"test case {i}: {call} returned {_short(got)}, expected {_short(want)}.")


class CodingProblem(Problem):
    """Any check: ``checker(*values)`` raises :class:`Incorrect` (or fails an ``assert``) when wrong."""

    def __init__(self, var: str | Sequence[str], checker: Callable[..., Any], *,
                 hint: str | Sequence[str] | None = None, solution: str | None = None):
        super().__init__(var, hint=hint, solution=solution)
        self.checker = checker

    def _check(self, *values: Any) -> None:
        try:
            self.checker(*values)
        except AssertionError as e:
            raise Incorrect(str(e) or "the check failed.") from None


class ThoughtProblem(Problem):
    """A question to think or talk about: ``hint()`` and ``solution()``, nothing to check."""

    def __init__(self, *, hint: str | Sequence[str] | None = None, solution: str | None = None):
        super().__init__((), hint=hint, solution=solution)

    def check(self, *values: Any) -> None:
        _show(Feedback("hint", "nothing to check here: think it over, then compare with solution()."))

    def _check(self, *values: Any) -> None:
        raise Incorrect("a thought experiment has no check")
