"""The search rules of `tune` that Optuna does not provide: a trust region around the best
for local moves, the choice between a local move and a joint model suggestion, and the
repair of values that must divide another knob.

Everything here is a pure function of the decided history (replayed in order on restart),
so a resumed study continues with the same radius and the same odds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from overnight.proposers.tune.knobs import Number
from overnight.proposers.tune.space import Space

Params = dict[str, Number]

R0 = 0.3  # first radius, in unit coordinates (a log range of 100x: steps of ~4x)
R_MAX = 0.5
R_MIN = 1 / 64  # below this the region restarts at R0 (a restart around the best)
MOVE_SHARE = 0.25  # each knob beyond the first joins a local move with this probability


@dataclass
class TrustRegion:
    """Grows on success, shrinks after a run of failures, restarts when it has collapsed."""

    radius: float = R0
    failures: int = 0
    restarts: int = 0

    def update(self, outcome: str, knobs: int) -> None:
        """`outcome`: "better" (kept), "tie" (not worse: the centre may move) or "worse"."""
        if outcome == "better":
            self.radius, self.failures = min(self.radius * 2, R_MAX), 0
        elif outcome == "worse":
            self.failures += 1
            if self.failures >= max(3, min(knobs, 6)):
                self.radius, self.failures = self.radius / 2, 0
                if self.radius < R_MIN:
                    self.radius, self.restarts = R0, self.restarts + 1


@dataclass
class MoveChooser:
    """Thompson sampling between "local" (trust region) and "global" (the model's joint
    suggestion), on each kind of move's keep rate so far."""

    tries: dict[str, int] = field(default_factory=lambda: {"local": 0, "global": 0})
    keeps: dict[str, int] = field(default_factory=lambda: {"local": 0, "global": 0})
    share: float | None = None  # a fixed share of local moves instead (for measurements)

    def record(self, move: str, kept: bool) -> None:
        if move in self.tries:
            self.tries[move] += 1
            self.keeps[move] += int(kept)

    def choose(self, rng: random.Random) -> str:
        if self.share is not None:
            return "local" if rng.random() < self.share else "global"
        draws = {
            m: rng.betavariate(1 + self.keeps[m], 1 + self.tries[m] - self.keeps[m])
            for m in ("local", "global")
        }
        return max(draws, key=lambda m: draws[m])


def local_move(
    centre: Params, spaces: dict[str, Space], names: list[str], radius: float,
    rng: random.Random, extra: int = 0,
) -> Params:  # fmt: skip
    """A Gaussian step of `radius` (unit coordinates) from `centre` in a few knobs: one,
    plus each other knob with probability MOVE_SHARE, plus `extra` (after duplicates)."""
    moved = [rng.choice(names)]
    moved += [k for k in names if k != moved[0] and rng.random() < MOVE_SHARE]
    rest = [k for k in names if k not in moved]
    moved += rng.sample(rest, min(len(rest), extra))
    out = dict(centre)
    for k in moved:
        space = spaces[k]
        u = space.unit(centre[k])
        for _ in range(8):
            delta = rng.gauss(0.0, radius)
            if space.step() and abs(delta) < space.step():
                delta = math.copysign(space.step(), delta)
            v = u + delta
            v = -v if v < 0 else 2 - v if v > 1 else v  # reflect at the ends
            new = space.from_unit(v)
            if new != centre[k]:
                out[k] = new
                break
    return out


def divisors_near(target: int, value: Number, space: Space) -> Number | None:
    """The divisor of `target` inside `space` closest to `value` on a log scale."""
    if target <= 0 or value <= 0:
        return None
    found = []
    i = 1
    while i * i <= target:
        if target % i == 0:
            found += [i, target // i]
        i += 1
    inside = [d for d in found if space.inner(d if space.kind == "int" else float(d)) is not None]
    if not inside:
        return None
    best = min(inside, key=lambda d: abs(math.log(d) - math.log(value)))
    return best if space.kind == "int" else float(best)


def repair(params: Params, spaces: dict[str, Space], divides: dict[str, str]) -> Params:
    """`params` with each knob that must divide another set to a divisor of that knob."""
    out = dict(params)
    for k, other in divides.items():
        v, target = out.get(k), out.get(other)
        if v is None or target is None or not float(target).is_integer() or v <= 0:
            continue
        if float(v).is_integer() and int(target) % int(v) == 0:
            continue
        fixed = divisors_near(int(target), v, spaces[k])
        if fixed is not None:
            out[k] = fixed
    return out
