"""Controls: the night's false-keep rate, measured live.

With `[judge] controls = K`, one experiment in every K is the unchanged best resubmitted
blind: a real commit with the best's surface, numbered, measured and judged by the very
same stages as any candidate (the judge gets the same record and cannot tell). Its true
gain is zero, so the share of controls the rule would have kept is a direct measurement of
the false-keep rate under tonight's noise, drift and runs — not the rate the statistics
promise. A control is never kept: a would-be keep is stored as `discard` with its outcome
in the experiment's meta, so `overnight verify` replays it like any verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from overnight.judging.rules import Verdict
from overnight.judging.stats import clopper_pearson

LEVEL = 0.95  # of the interval shown with the rate
JUDGED = ("keep", "discard", "suspect")  # verdicts of the rule (not failures)


def stored_verdict(v: Verdict, of: int) -> Verdict:
    """What a control's verdict `v` is recorded as: never a keep, never on the branch."""
    head = f"control (the unchanged best, experiment {of}, resubmitted blind): "
    if v.status == "keep":
        return Verdict("discard", head + f"the rule would have kept it, a false keep: {v.reason}")
    if v.status == "suspect":
        return Verdict("discard", head + f"it would have been held as suspect: {v.reason}")
    if v.status == "discard":
        return Verdict("discard", head + f"not kept: {v.reason}")
    return Verdict(v.status, head + v.reason)


def outcome(v: Verdict, of: int, gain: float | None) -> dict[str, Any]:
    """The control's meta: what the rule gave (`verify` checks it) and its apparent gain."""
    return {"of": of, "verdict": v.status, "would_keep": v.status == "keep", "gain": gain}


@dataclass
class ControlRow:
    experiment: int
    verdict: str  # what the rule gave: keep, discard, suspect, or a failure status
    gain: float | None


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(
    rows: Sequence[ControlRow], every: int, alpha: float, repeats: int, confirm: bool
) -> dict[str, Any]:
    """`status --json`'s `controls`: how many were judged, how many the rule would have
    kept, the rate with its exact interval, and what to change when it is too high."""
    judged = [r for r in rows if r.verdict in JUDGED]
    kept = sum(1 for r in judged if r.verdict == "keep")
    out: dict[str, Any] = {
        "every": every, "run": len(judged), "would_keep": kept,
        "held": sum(1 for r in judged if r.verdict == "suspect"),
        "failed": len(rows) - len(judged), "rate": None, "interval": None,
        "level": LEVEL, "alpha": alpha, "high": False, "suggestion": "",
    }  # fmt: skip
    if not judged:
        return out
    low, high = clopper_pearson(kept, len(judged), LEVEL)
    out.update(rate=kept / len(judged), interval=[low, high], high=low > alpha)
    if out["high"]:
        out["suggestion"] = suggestion(judged, alpha, repeats, confirm)
    return out


def suggestion(judged: Sequence[ControlRow], alpha: float, repeats: int, confirm: bool) -> str:
    """What would bring the false-keep rate down, from what the controls measured."""
    if repeats == 1:
        return ("set [metric] repeats = 3 or more: with one run per candidate the rule cannot "
                "tell a gain from noise")  # fmt: skip
    gains = [r.gain for r in judged if r.gain is not None]
    text = ""
    if gains:
        q = _quantile(gains, 1 - alpha)
        if q > 0:
            text = (f"raise [metric] min_improvement to about {q:.3g} ({1 - alpha:.0%} of the "
                    "controls, the unchanged best, gained less), or ")  # fmt: skip
    text += f"raise [metric] repeats to {2 * repeats}"
    return text + ("" if confirm else ", or set [metric] confirm = true")

