"""DO NOT CHANGE — the locked market of the pricing study.

A small retailer sells one product line in three segments (budget, mainstream, premium),
one price per segment per week, over three years (156 weeks). This file generates that
world deterministically from a fixed seed (Python's own `random`, no dependencies):

    units = BASE × season(week) × holiday_lift × exp(-β × (price / competitor_price - 1)) × noise

- BASE: weekly units sold at the competitor's price, per segment.
- season: a yearly wave, `1 + SEASON_AMP × sin(2π (week_of_year - SEASON_PEAK + 13) / 52)`,
  strongest at week SEASON_PEAK of the year.
- holidays (weeks 46–51 of each year: Black Friday to Christmas): demand × HOLIDAY_LIFT, and
  shoppers are less price-sensitive: β × HOLIDAY_BETA.
- β, the price sensitivity of the segment: at the competitor's price, a 1 % higher price
  sells about β % fewer units. For this demand curve the profit-maximizing price is
  `cost + competitor_price / β`, whatever the week's volume.
- competitor_price: the rival's shelf price for the segment, known when we set our price; it
  drifts with inflation and now and then drops for a promotion week.
- unit cost: known when we set our price; it drifts up with inflation (about 3 % a year) and
  wobbles a little from week to week.
- noise: multiplicative, log-normal (σ = NOISE_SIGMA), drawn once per (segment, week). It
  does not depend on the price we set, so every pricing rule is judged against the same
  luck (common random numbers) and the evaluation has no run-to-run noise.

The timeline:
    weeks   0–103  history: what was sold at the prices the shop actually charged (cost-plus
                   with occasional price tests); `history()` returns it and a rule may learn
                   from it
    weeks 104–129  validation (January–June of year 3): the study's metric, `profit`
    weeks 130–155  holdout (July–December of year 3, holidays included): `holdout_profit`,
                   never shown to the proposer

One more thing happened, and nothing in the features shows it: in weeks 110–125 the
budget segment's main competitor had supply problems, and budget shoppers, with nowhere else
to go, came to us more often (demand × 1.3) and became much less price-sensitive (β_budget
fell from 4.0 to 1.4). A rule tuned on
the validation weeks alone learns to charge budget shoppers more; in the holdout weeks that
costs money. That is what the `[holdout]` gate of the study is there to catch.

`python generate.py --csv history.csv` writes the history as CSV.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from dataclasses import asdict, dataclass

SEED = 20240314
WEEKS = 156
HISTORY = range(0, 104)
VALIDATION = range(104, 130)
HOLDOUT = range(130, 156)
SEGMENTS = ("budget", "mainstream", "premium")

BASE = {"budget": 1000.0, "mainstream": 420.0, "premium": 110.0}  # units/week at parity
BETA = {"budget": 4.0, "mainstream": 2.5, "premium": 1.6}  # price sensitivity
COST = {"budget": 6.0, "mainstream": 12.0, "premium": 26.0}  # unit cost in week 0
COMPETITOR = {"budget": 10.0, "mainstream": 20.0, "premium": 52.0}  # rival's price, week 0
SEASON_AMP = {"budget": 0.15, "mainstream": 0.25, "premium": 0.35}
SEASON_PEAK = 24  # week of the year with the most demand (early summer)
HOLIDAY_WEEKS = range(46, 52)
HOLIDAY_LIFT = 1.7
HOLIDAY_BETA = 0.75
INFLATION = 0.03  # per year, on costs and competitor prices
PROMO_CHANCE = 0.08  # share of weeks in which the competitor runs a promotion
PROMO_DEPTH = 0.15  # the promotion's price cut
NOISE_SIGMA = 0.12
# The validation-period quirk (see the module docstring): hidden from the features.
SHORTAGE_WEEKS = range(110, 126)
SHORTAGE_SEGMENT = "budget"
SHORTAGE_LIFT = 1.3
SHORTAGE_BETA = 1.4


@dataclass(frozen=True)
class Week:
    """What a pricing rule knows about one week for one segment, before setting its price."""

    week: int  # 0..155
    week_of_year: int  # 0..51
    holiday: bool
    competitor_price: float
    unit_cost: float


@dataclass(frozen=True)
class Sale:
    """One row of the history: the week, the price charged and the units sold."""

    segment: str
    week: int
    week_of_year: int
    holiday: bool
    competitor_price: float
    unit_cost: float
    price: float
    units: float


class Market:
    """The generated world: features and the realized demand for any price."""

    def __init__(self, seed: int = SEED) -> None:
        rng = random.Random(seed)
        self.features: dict[tuple[str, int], Week] = {}
        self.noise: dict[tuple[str, int], float] = {}
        # Draw everything in one fixed order, so each number is the same in every run.
        for seg in SEGMENTS:
            for t in range(WEEKS):
                drift = (1.0 + INFLATION) ** (t / 52)
                promo = rng.random() < PROMO_CHANCE
                wobble = 1.0 + rng.gauss(0.0, 0.02)
                comp = COMPETITOR[seg] * drift * wobble * (1.0 - PROMO_DEPTH * promo)
                cost = COST[seg] * drift * (1.0 + rng.gauss(0.0, 0.025))
                woy = t % 52
                self.features[seg, t] = Week(
                    t, woy, woy in HOLIDAY_WEEKS, round(comp, 2), round(cost, 2)
                )
                self.noise[seg, t] = math.exp(rng.gauss(0.0, NOISE_SIGMA) - NOISE_SIGMA**2 / 2)
        self._history_prices = {
            (seg, t): self._historical_price(seg, t, rng) for seg in SEGMENTS for t in HISTORY
        }

    def beta(self, segment: str, t: int) -> float:
        beta = BETA[segment]
        if self.features[segment, t].holiday:
            beta *= HOLIDAY_BETA
        if segment == SHORTAGE_SEGMENT and t in SHORTAGE_WEEKS:
            beta = SHORTAGE_BETA
        return beta

    def demand(self, segment: str, t: int, price: float) -> float:
        """Units sold in week `t` of `segment` at `price`."""
        f = self.features[segment, t]
        season = 1.0 + SEASON_AMP[segment] * math.sin(
            2 * math.pi * (f.week_of_year - SEASON_PEAK + 13) / 52
        )
        lift = HOLIDAY_LIFT if f.holiday else 1.0
        if segment == SHORTAGE_SEGMENT and t in SHORTAGE_WEEKS:
            lift *= SHORTAGE_LIFT
        relative = price / f.competitor_price - 1.0
        # Capped exponent: an absurdly low price sells a lot, but not an overflow.
        response = math.exp(min(-self.beta(segment, t) * relative, 5.0))
        return BASE[segment] * season * lift * response * self.noise[segment, t]

    def _historical_price(self, segment: str, t: int, rng: random.Random) -> float:
        # What the shop did before: 35 % over cost, and in one week out of six a price test
        # of ±10–20 %, which is what makes the price response visible in the history.
        f = self.features[segment, t]
        price = f.unit_cost * 1.35
        if rng.random() < 1 / 6:
            price *= 1.0 + rng.choice((-1, 1)) * rng.uniform(0.10, 0.20)
        return round(price, 2)

    def history(self) -> list[Sale]:
        out = []
        for seg in SEGMENTS:
            for t in HISTORY:
                f = self.features[seg, t]
                p = self._history_prices[seg, t]
                out.append(Sale(seg, t, f.week_of_year, f.holiday, f.competitor_price,
                                f.unit_cost, p, round(self.demand(seg, t, p), 1)))  # fmt: skip
        return out


_MARKET: Market | None = None


def market() -> Market:
    global _MARKET
    if _MARKET is None:
        _MARKET = Market()
    return _MARKET


def history() -> list[Sale]:
    """The sales history (weeks 0–103): features, the price charged, units sold."""
    return market().history()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The pricing study's market.")
    parser.add_argument("--csv", help="write the sales history to this CSV file ('-': stdout)")
    args = parser.parse_args(argv)
    rows = [asdict(s) for s in history()]
    if args.csv:
        out = sys.stdout if args.csv == "-" else open(args.csv, "w", newline="")  # noqa: SIM115
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        if out is not sys.stdout:
            out.close()
    else:
        print(f"{len(rows)} history rows (weeks {HISTORY.start}–{HISTORY.stop - 1}, "
              f"{len(SEGMENTS)} segments); use --csv FILE to export them")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
