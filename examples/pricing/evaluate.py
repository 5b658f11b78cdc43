"""DO NOT CHANGE — the locked evaluation of the pricing study.

Asks `pricing.price(segment, week, cost)` for a price for every segment and week of a
period, sells at that price in the generated market (`generate.py`) and adds up the profit,
`(price - unit cost) × units`, in currency units.

    python evaluate.py              validation weeks 104–129: prints `profit: <number>` (the
                                    study's metric) and secondary metrics (revenue, units,
                                    margin, profit per segment)
    python evaluate.py --holdout    holdout weeks 130–155: prints only `holdout_profit: <number>`
                                    (the study's [holdout]; never shown to the proposer)

A price that is not a finite positive number, or a rule that raises, is an error: the run
exits non-zero, which overnight records as a crash.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from generate import HOLDOUT, SEGMENTS, VALIDATION, Week, market

PriceFn = Callable[[str, Week, float], float]


def simulate(rule: PriceFn, weeks: range) -> dict[str, float]:
    """Profit and friends of `rule` over `weeks`."""
    m = market()
    totals = {"profit": 0.0, "revenue": 0.0, "units": 0.0, "cost": 0.0}
    per_segment = dict.fromkeys(SEGMENTS, 0.0)
    for t in weeks:
        for seg in SEGMENTS:
            f = m.features[seg, t]
            price = rule(seg, f, f.unit_cost)
            if not isinstance(price, int | float) or not math.isfinite(price) or price <= 0:
                raise ValueError(f"price({seg!r}, week {t}) returned {price!r}")
            units = m.demand(seg, t, float(price))
            profit = (price - f.unit_cost) * units
            totals["profit"] += profit
            totals["revenue"] += price * units
            totals["units"] += units
            totals["cost"] += f.unit_cost * units
            per_segment[seg] += profit
    totals.update({f"profit_{seg}": value for seg, value in per_segment.items()})
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Profit of pricing.price in the market.")
    parser.add_argument("--holdout", action="store_true", help="evaluate the holdout weeks")
    args = parser.parse_args(argv)
    from pricing import price  # the surface; imported late so --help works without it

    if args.holdout:
        print(f"holdout_profit: {simulate(price, HOLDOUT)['profit']:.2f}")
        return 0
    r = simulate(price, VALIDATION)
    margin = (r["revenue"] - r["cost"]) / r["revenue"] * 100 if r["revenue"] else 0.0
    print(f"profit: {r['profit']:.2f}")
    print(f"revenue: {r['revenue']:.2f}")
    print(f"units: {r['units']:.1f}")
    print(f"margin_pct: {margin:.2f}")
    for seg in SEGMENTS:
        print(f"profit_{seg}: {r[f'profit_{seg}']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
