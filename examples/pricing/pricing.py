"""The pricing rule: one price per segment per week.

This file is the SURFACE of the pricing study: proposals change it, and nothing else.
`evaluate.py` (locked) calls `price(segment, week, cost)` for every segment and week and
sells at that price in the generated market of `generate.py` (locked).

Today's rule is what many shops start with: cost plus a fixed markup per segment, never
below a minimum margin, with two optional adjustments (a holiday markup and a pull toward
the competitor's price) that are switched off.
"""

from generate import Week

# --- knobs (plain literals: the tuner rewrites them) --------------------------------------
BUDGET_MARKUP = 0.3  # price = unit cost × (1 + markup), budget segment
MAINSTREAM_MARKUP = 0.4  # the same, mainstream segment
PREMIUM_MARKUP = 0.5  # the same, premium segment
HOLIDAY_MARKUP = 0.0  # extra markup in holiday weeks (46-51 of the year)
COMPETITOR_WEIGHT = 0.0  # 0: pure cost-plus; 1: match the competitor's price
MIN_MARGIN = 0.05  # never sell below unit cost × (1 + this)
# ------------------------------------------------------------------------------------------

MARKUPS = {"budget": BUDGET_MARKUP, "mainstream": MAINSTREAM_MARKUP, "premium": PREMIUM_MARKUP}


def price(segment: str, week: Week, cost: float) -> float:
    """The price of `segment` in `week`, given this week's unit cost."""
    markup = MARKUPS[segment] + (HOLIDAY_MARKUP if week.holiday else 0.0)
    cost_plus = cost * (1.0 + markup)
    weight = min(max(COMPETITOR_WEIGHT, 0.0), 1.0)
    target = (1.0 - weight) * cost_plus + weight * week.competitor_price
    return max(target, cost * (1.0 + MIN_MARGIN))
