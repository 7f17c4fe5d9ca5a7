"""Exercises that fail until they are solved, checked without giving the answer away (issue #12).

Every exercise of the notebooks is two cells, in nbgrader's convention (the Jupyter standard for course
assignments; ``asif_nb.assignment`` builds the student release and the answer key from them):

- the **answer cell** (an nbgrader *solution* cell): a function the student completes. As committed it holds
  nbgrader's stub, so "run all" reaches the check with nothing solved::

      def bytes_per_pair():
          \"\"\"How many bytes does one anchor pair take in float32, both halves together?\"\"\"
          # YOUR CODE HERE
          raise NotImplementedError()

- the **check cell** (an nbgrader *graded test* cell)::

      lab.check("01-bytes", bytes_per_pair, lambda answer: answer == 4 * (d1 + d2), hint="4 bytes per value ...")

``check`` never raises and never prints the expected answer: a stub that raises, an error in the student's code, a
wrong answer all say **not yet** (with the hint); a right one says **solved**. Each outcome is kept, so the
notebook's results JSON records what the student answered (``outcomes()``). The answer key — each exercise's
solution and the hidden test the autograder adds (``assert lab.solved("01-bytes")``) — lives in
``lab/solutions/<notebook>.yml``, never in the notebooks.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Callable

__all__ = ["Outcome", "check", "close_to", "outcomes", "reset", "solved"]


@dataclass
class Outcome:
    exercise: str
    solved: bool
    feedback: str
    answer: Any = None  # what the student's function returned (JSON-safe), None when it did not return


_OUTCOMES: dict[str, Outcome] = {}


def _json_safe(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(float(value)) else str(value)
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value][:50]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in list(value.items())[:50]}
    if hasattr(value, "tolist") and getattr(value, "size", 1001) <= 1000:
        return _json_safe(value.tolist())
    return f"<{type(value).__name__}>"


def check(exercise: str, answer: Callable[[], Any] | Any, test: Callable[[Any], Any], *, hint: str = "",
          call: bool = True) -> None:
    """Check one exercise and say so, without raising and without revealing the answer.

    ``answer`` is the student's function (called with no arguments when ``call``, the default) or a value;
    ``test(result)`` returns True when it is right (or ``(ok, feedback)`` to say something specific). An answer
    function that raises — nbgrader's ``NotImplementedError`` stub included — or a test that raises on the result
    counts as *not yet*. The outcome is printed and kept (``solved``, ``outcomes()``); nothing is returned, so
    the check cell's output is that one line.
    """
    returned, result = False, None
    try:
        result = answer() if call and callable(answer) else answer
        returned = True
        verdict = test(result)
        ok, feedback = verdict if isinstance(verdict, tuple) else (bool(verdict), "")
    except NotImplementedError:
        ok, feedback = False, "the answer cell still holds its stub: complete it (replace `raise NotImplementedError()`)."
    except Exception as err:  # the student's code can raise anything; say what, never crash the notebook
        where = "your answer" if not returned else "checking your answer"
        ok, feedback = False, f"{where} raised {type(err).__name__}: {err}"
    if not ok and not feedback:
        feedback = "not this one."
    if not ok and hint:
        feedback = f"{feedback} Hint: {hint}"
    outcome = Outcome(exercise, bool(ok), "solved" if ok else feedback, _json_safe(result) if returned else None)
    _OUTCOMES[exercise] = outcome
    print(f"Exercise {exercise}: {'solved ✓' if ok else 'not yet — ' + feedback}")


def close_to(expected: float, tolerance: float = 1e-3) -> Callable[[Any], bool]:
    """A test for ``check``: the answer is a number within ``tolerance`` of ``expected`` (never printed)."""
    def test(value) -> tuple[bool, str]:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return False, f"return a number (got {type(value).__name__})."
        return abs(float(value) - float(expected)) <= tolerance, ""
    return test


def solved(exercise: str) -> bool:
    """Whether the last ``check`` of ``exercise`` in this kernel found it solved (the autograder's hidden test)."""
    outcome = _OUTCOMES.get(exercise)
    return bool(outcome and outcome.solved)


def outcomes() -> dict[str, dict]:
    """Every exercise checked in this kernel: ``{id: {solved, feedback, answer}}``, for the results JSON."""
    return {key: {k: v for k, v in asdict(outcome).items() if k != "exercise"} for key, outcome in _OUTCOMES.items()}


def reset() -> None:
    _OUTCOMES.clear()
