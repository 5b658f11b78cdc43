"""Where one knob is searched: its range and scale, as Optuna sees it and as a unit interval
(the coordinates of the trust region's local moves).

A declared range (`# tune: 1e-4..0.1 log`, or `[proposer].knobs`) is a hard limit. A
default range is centred on the knob's value and grows past an edge when the best sits on
it, but never past what the knob means: fractions stay in [0, 1], powers of two stay powers
of two, a positive value stays positive.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from overnight.proposers.tune.knobs import Kind, Knob, Number, round_value
from overnight.proposers.tune.spec import KnobSpec

# Names of shares and probabilities: a default range never leaves [0, 1].
FRACTION = re.compile(r"RATIO|FRAC|DROPOUT|PROB|MOMENTUM|BETA|SHARE|PERCENTILE|QUANTILE", re.I)
EDGE = 0.02  # a best within 2 % of a range's end is "on the edge"
POW2_MIN = 8  # an int power of two from here up (or written 2**k) stays a power of two


def _r(value: float) -> float:
    return round_value(value, "float")  # type: ignore[return-value]


def _is_pow2(value: Number) -> bool:
    return value > 0 and float(value).is_integer() and (int(value) & (int(value) - 1)) == 0


@dataclass
class Space:
    """`low`/`high` are in Optuna's units: `sign * value`, or the exponent for `pow2`."""

    kind: Kind  # how the knob is written
    scale: str  # "log" | "linear" | "pow2" | "choice"
    low: float = 0.0
    high: float = 1.0
    sign: int = 1
    integer: bool = False
    choices: tuple[Number, ...] = ()
    floor: float | None = None  # never grown below / above these
    ceiling: float | None = None
    fixed: bool = False  # a declared range: never grown
    divides: str = ""
    grown: list[str] = field(default_factory=list)

    # --- Optuna's view ---------------------------------------------------------------------

    def distribution(self) -> BaseDistribution:
        if self.scale == "choice":
            return CategoricalDistribution(self.choices)
        if self.scale == "pow2" or self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.scale == "log")
        return FloatDistribution(float(self.low), float(self.high), log=self.scale == "log")

    def inner(self, value: Number) -> Number | None:
        """Optuna's value for a knob value; None when it lies outside the space."""
        if self.scale == "choice":
            return value if value in self.choices else None
        if self.scale == "pow2":
            if not _is_pow2(abs(value)) and not (0 < abs(value) < 1):
                return None
            e = math.log2(abs(value))
            if not float(e).is_integer() or not self.low <= e <= self.high:
                return None
            return int(e)
        x = self.sign * value
        if not self.low - 1e-12 * abs(self.low) <= x <= self.high + 1e-12 * abs(self.high):
            return None
        if self.integer:
            return int(round(x)) if float(x).is_integer() else None
        return float(x)

    def value(self, inner: Number) -> Number:
        """The knob value for Optuna's value, rounded as it will be written."""
        if self.scale == "choice":
            return inner
        if self.scale == "pow2":
            e = int(min(max(round(inner), self.low), self.high))
            return self._written(2**e if e >= 0 else 2.0**e)
        x = min(max(float(inner), self.low), self.high)
        x = float(round(x)) if self.integer else x
        rounded = round_value(x, self.kind)
        rounded = min(max(rounded, self.low), self.high)
        return self._written(self.sign * rounded)

    def _written(self, x: Number) -> Number:
        if self.kind == "int":
            return int(round(x))
        return float(round(x)) if self.integer else _r(x)

    # --- the unit interval -----------------------------------------------------------------

    def _t(self, x: float) -> float:
        return math.log(x) if self.scale == "log" else x

    def unit(self, value: Number) -> float:
        """Where a value lies in the range, 0 (low) to 1 (high), clamped."""
        if self.scale == "choice":
            n = len(self.choices)
            best = min(range(n), key=lambda i: abs(self.choices[i] - value))
            return best / (n - 1) if n > 1 else 0.5
        if self.scale == "pow2":
            x = math.log2(abs(value)) if value else self.low
        else:
            x = self.sign * value
            if self.scale == "log" and x <= 0:
                return 0.0
        lo, hi = self._t(self.low), self._t(self.high)
        u = (self._t(x) - lo) / (hi - lo) if hi > lo else 0.5
        return min(max(u, 0.0), 1.0)

    def from_unit(self, u: float) -> Number:
        u = min(max(u, 0.0), 1.0)
        if self.scale == "choice":
            return self.choices[int(round(u * (len(self.choices) - 1)))]
        lo, hi = self._t(self.low), self._t(self.high)
        t = lo + u * (hi - lo)
        inner = math.exp(t) if self.scale == "log" else t
        return self.value(inner)

    def step(self) -> float:
        """The smallest move in unit coordinates that changes an integer or choice knob."""
        if self.scale == "choice":
            return 1.0 / max(1, len(self.choices) - 1)
        if self.scale == "pow2":
            return 1.0 / max(1.0, self.high - self.low)
        return 0.0

    # --- growth ----------------------------------------------------------------------------

    def grow(self, value: Number) -> bool:
        """Push a default range past the edge `value` sits on; False when it cannot move."""
        if self.fixed or self.scale == "choice" or self.inner(value) is None:
            return False
        u, before = self.unit(value), (self.low, self.high)
        if u <= EDGE:
            self.low = self._beyond(self.low, -1)
        elif u >= 1 - EDGE:
            self.high = self._beyond(self.high, +1)
        if (self.low, self.high) == before:
            return False
        self.grown.append(f"{before[0]:g}..{before[1]:g} -> {self.low:g}..{self.high:g}")
        return True

    def _beyond(self, bound: float, direction: int) -> float:
        if self.scale == "pow2":
            new = bound + 2 * direction
        elif self.scale == "log":
            factor = 4 if self.integer else 10
            new = bound * factor if direction > 0 else bound / factor
            new = (max(1, int(new)) if direction < 0 else int(new)) if self.integer else _r(new)
        else:
            width = self.high - self.low
            new = bound + direction * width
            new = int(round(new)) if self.integer else _r(new)
        if self.floor is not None:
            new = max(new, self.floor)
        if self.ceiling is not None:
            new = min(new, self.ceiling)
        return new

    def widen(self, value: Number) -> bool:
        """Stretch a default range to hold a value already measured (written by hand or by
        another proposer); False when it cannot hold it."""
        if self.inner(value) is not None:
            return True
        if self.fixed or self.scale == "choice":
            return False
        if self.scale == "pow2":
            if not _is_pow2(abs(value)):
                return False
            e = math.log2(abs(value))
            self.low, self.high = min(self.low, e), max(self.high, e)
            return True
        x = self.sign * value
        if (self.scale == "log" and x <= 0) or (self.integer and not float(x).is_integer()):
            return False
        if (self.floor is not None and x < self.floor) or (
            self.ceiling is not None and x > self.ceiling
        ):
            return False
        self.low, self.high = min(self.low, x), max(self.high, x)
        return True


def build_space(knob: Knob, spec: KnobSpec) -> Space:
    """The space of a knob from its value and what the user declared about it."""
    v, kind = knob.value, knob.kind
    integer = spec.integer if spec.integer is not None else kind == "int"
    if spec.choices:
        return Space(kind, "choice", choices=spec.choices, fixed=True, divides=spec.divides)
    pow2 = spec.scale == "pow2" or (
        spec.scale is None and kind == "int" and _is_pow2(v)
        and (v >= POW2_MIN or "**" in knob.text)
    )
    if pow2:
        if spec.low is not None and spec.high is not None:
            lo, hi = math.ceil(math.log2(spec.low)), math.floor(math.log2(spec.high))
            if lo > hi:
                raise ValueError(f"no power of two in {spec.low}..{spec.high}")
            return Space(kind, "pow2", lo, hi, fixed=True, divides=spec.divides)
        e = round(math.log2(abs(v))) if v else 0
        floor = 0.0 if kind == "int" else None
        low = e - 2 if floor is None else max(e - 2, floor)
        return Space(kind, "pow2", low, e + 2, floor=floor, divides=spec.divides)
    if spec.low is not None and spec.high is not None:
        scale = spec.scale or ("log" if spec.low > 0 and spec.high / spec.low >= 10 else "linear")
        lo, hi = (math.ceil(spec.low), math.floor(spec.high)) if integer else (spec.low, spec.high)
        if lo > hi:
            raise ValueError(f"no whole number in {spec.low}..{spec.high}")
        return Space(kind, scale, lo, hi, integer=integer, fixed=True, divides=spec.divides)
    return _default(knob, spec, integer)


def _default(knob: Knob, spec: KnobSpec, integer: bool) -> Space:
    v, kind = knob.value, knob.kind
    sign, a = (-1 if v < 0 else 1), abs(v)
    fraction = kind == "float" and bool(FRACTION.search(knob.name)) and 0 <= v <= 1
    if a == 0 or (fraction and v >= 0.5) or spec.scale == "linear":
        if a == 0:
            lo, hi = 0, (10 if integer else 1.0)
        elif fraction:
            lo, hi = 0.0, 1.0
        else:
            n = int(a)
            lo, hi = (max(0, n // 4), max(4 * n, n + 4)) if integer else (0.0, _r(2 * a))
        return Space(kind, "linear", lo, hi, sign, integer, floor=0.0,
                     ceiling=1.0 if fraction else None, divides=spec.divides)  # fmt: skip
    if integer:
        n = max(1, int(round(a)))
        return Space(kind, "log", max(1, n // 4), max(4 * n, n + 4), sign, True, floor=1.0,
                     divides=spec.divides)  # fmt: skip
    hi = min(1.0, _r(a * 10)) if fraction else _r(a * 10)
    return Space(kind, "log", _r(a / 10), hi, sign, False,
                 ceiling=1.0 if fraction else None, divides=spec.divides)  # fmt: skip
