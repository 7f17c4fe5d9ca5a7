"""The visible tests of notebooks 03–05's exercises: what their ``lab.check`` calls (``asif_nb.lab``).

Each ``*_check(...)`` returns a test for ``lab.check``: a function of the student's answer returning
``(ok, feedback)``. The feedback says what the answer *measured* (a score, a recall, a fraction of wrong
answers) against the stated goal — never the answer. The autograder's hidden tests live in ``lab/solutions``.
"""
from __future__ import annotations

import math
import numbers
import re

import numpy as np

__all__ = ["caption_check", "curation_check", "threshold_check", "threshold_outcome"]


def caption_check(asif, image, reference: str, factor: float = 1.5, forbidden: str = "cat"):
    """Notebook 03: the answer is a text without the word ``forbidden`` (or its plural) that ``image`` scores at
    least ``factor`` times as high as ``reference``."""
    target = factor * float(asif.similarity([image], [reference])[0, 0])
    word = re.compile(rf"\b{re.escape(forbidden)}s?\b", re.I)

    def test(text) -> tuple[bool, str]:
        if not isinstance(text, str) or not text.strip():
            return False, f"return a text (a non-empty string), not {type(text).__name__}."
        if word.search(text):
            return False, f"your text uses the word {forbidden!r}: find one without it."
        score = float(asif.similarity([image], [text])[0, 0])
        return score >= target, (f"{text!r} scores {score:.3f} with the photo; the goal is at least {target:.3f} "
                                 f"({factor:g} × the {target / factor:.3f} of {reference!r}).")

    return test


def curation_check(model, embedded, pool, embed_texts, target: int, min_recall: float = 0.8, max_pairs: int = 20):
    """Notebook 04: the answer is a list of at most ``max_pairs`` ``(pool index, caption)``; those pairs (the pool's
    image embedding, ``embed_texts([caption])``) are added to a copy of ``model``, which must then recall class
    ``target`` of ``embedded`` at least ``min_recall`` of the time *and* keep the accuracy over all classes at
    least where it was. The feedback gives the measured numbers."""
    from .curation import class_report, with_pairs

    before = class_report(model, embedded)
    name = embedded.class_names[target]

    def test(pairs) -> tuple[bool, str]:
        if isinstance(pairs, (str, bytes, dict)) or not hasattr(pairs, "__len__"):
            return False, "return a list of (pool index, caption) tuples."
        pairs = list(pairs)
        if not pairs:
            return False, "the list is empty: add at least one pair."
        if len(pairs) > max_pairs:
            return False, f"{len(pairs)} pairs: at most {max_pairs} are allowed."
        for pair in pairs:
            if (not isinstance(pair, (tuple, list)) or len(pair) != 2 or isinstance(pair[0], (bool, np.bool_))
                    or not isinstance(pair[0], numbers.Integral) or not isinstance(pair[1], str)
                    or not pair[1].strip()):
                return False, f"{pair!r} is not a (pool index, caption) pair: an int and a non-empty string."
            if not 0 <= int(pair[0]) < len(pool.images):
                return False, f"pool index {int(pair[0])} is out of range: the pool holds {len(pool.images)} images."
        index = np.array([int(i) for i, _ in pairs])
        ids = [f"added/{j}/{i}" for j, i in enumerate(index)]
        edited = with_pairs(model, pool.images[index], embed_texts([caption for _, caption in pairs]), ids=ids)
        after = class_report(edited, embedded)
        recall_ok = bool(after["recall"][target] >= min_recall)
        accuracy_ok = bool(after["accuracy"] >= before["accuracy"])
        feedback = (f"with your {len(pairs)} pair{'s' if len(pairs) != 1 else ''}, {name!r} recall is "
                    f"{after['recall'][target]:.3f} (was {before['recall'][target]:.3f}; the goal is at least "
                    f"{min_recall:g}) and the accuracy over all classes {after['accuracy']:.4f} (was "
                    f"{before['accuracy']:.4f}; the goal is not lower).")
        if not accuracy_ok:
            lost = after["recall"] - before["recall"]
            worst = int(np.nanargmin(lost))
            feedback += (f" The class that lost most is {embedded.class_names[worst]!r} ({before['recall'][worst]:.3f}"
                         f" → {after['recall'][worst]:.3f}): which test images do your new anchors attract?")
        return recall_ok and accuracy_ok, feedback

    return test


def threshold_outcome(threshold: float, best, right, wrong) -> dict:
    """The rule "answer only when the best score >= threshold" on queries with best scores ``best`` whose answer
    (without the rule) is ``right`` or ``wrong`` (neither: no answer, a tie): the fractions of all queries answered
    right, answered wrong, and unknown."""
    best, right, wrong = (np.asarray(a) for a in (best, right, wrong))
    answered = best >= threshold
    return {"right": float(np.mean(answered & right)), "wrong": float(np.mean(answered & wrong)),
            "unknown": float(np.mean(~(answered & (right | wrong))))}


def threshold_check(best, right, wrong, max_wrong: float):
    """Notebook 05: the answer is a threshold (chosen on other queries) for the rule "answer only when the best
    score >= t". On *these* queries it must answer wrongly at most ``max_wrong`` of them, and rightly nearly as
    many as the best threshold that meets the goal here would; "nearly" and the goal's margin are two binomial
    standard errors, the noise of a threshold chosen on another sample of the same size."""
    best, right, wrong = np.asarray(best, dtype=float), np.asarray(right, bool), np.asarray(wrong, bool)
    slack = 2 * math.sqrt(max_wrong * (1 - max_wrong) / len(best))
    candidates = np.append(np.unique(best), np.inf)
    outcomes = [threshold_outcome(t, best, right, wrong) for t in candidates]
    best_right = max(o["right"] for o in outcomes if o["wrong"] <= max_wrong)

    def test(threshold) -> tuple[bool, str]:
        if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real) or math.isnan(threshold):
            return False, f"return a number (got {type(threshold).__name__})."
        got = threshold_outcome(float(threshold), best, right, wrong)
        wrong_ok = got["wrong"] <= max_wrong + slack
        right_ok = got["right"] >= best_right - slack
        feedback = (f"on the held-out queries t = {float(threshold):.4f} answers {got['wrong']:.3f} of them wrongly "
                    f"(the goal: at most {max_wrong:g}, give or take {slack:.3f}) and {got['right']:.3f} rightly "
                    f"(the best threshold meeting the goal there answers {best_right:.3f} rightly; yours may be "
                    f"{slack:.3f} below), {got['unknown']:.3f} unknown.")
        if wrong_ok and not right_ok:
            feedback += " It is safe but too cautious: a lower threshold still meets the goal."
        return wrong_ok and right_ok, feedback

    return test
