"""`[[constraint]]`: secondary metrics that must stay in range for a candidate to count."""

from __future__ import annotations

import math
from collections.abc import Sequence

from overnight.config import ConstraintConfig
from overnight.judging.rules import Verdict, fmt


def describe(c: ConstraintConfig) -> str:
    parts = []
    if c.min is not None:
        parts.append(f">= {fmt(c.min)}")
    if c.max is not None:
        parts.append(f"<= {fmt(c.max)}")
    return f"{c.name} {' and '.join(parts)}"


def check_constraints(
    metrics: dict[str, float], constraints: Sequence[ConstraintConfig]
) -> Verdict | None:
    """A crash when a constrained metric is not reported (the limit can't be verified),
    `rejected` naming the first broken constraint, or None when all hold."""
    for c in constraints:
        value = metrics.get(c.name)
        if value is None or not math.isfinite(value):
            what = "not reported" if value is None else f"not finite ({value})"
            return Verdict("crash", f"constrained metric {c.name!r} {what}; "
                           f"constraint {describe(c)} cannot be checked")  # fmt: skip
        if c.max is not None and value > c.max:
            return Verdict("rejected", f"constraint broken: {c.name} = {fmt(value)} > max "
                           f"{fmt(c.max)}")  # fmt: skip
        if c.min is not None and value < c.min:
            return Verdict("rejected", f"constraint broken: {c.name} = {fmt(value)} < min "
                           f"{fmt(c.min)}")  # fmt: skip
    return None
