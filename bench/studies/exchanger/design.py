"""A heat-exchanger design scored by the Ackley function in disguise (a held-out study of
bench/search_quality.py: nobody tuned `tune` on it).

Five design knobs in physical units. The cost is Ackley's function of their log-ratios to
an optimum at non-round values, so it has a lattice of local minima around one global
minimum of 12.5 kW (lower is better) — a standard test of whether a search can leave a
local basin.
"""

import math

TUBE_DIAMETER_M = 0.02  # inner diameter of each tube
FLOW_RATE_L_MIN = 40.0  # coolant flow
FIN_PITCH_MM = 2.5  # spacing of the fins
TUBE_COUNT = 24  # tubes in the bundle
WALL_MM = 1.2  # wall thickness

OPTIMUM = {"d": 0.0372, "q": 17.3, "p": 4.61, "n": 57, "w": 0.83}
SPAN = 2.2  # Ackley units per decade: local minima are ~2.8x apart on each knob


def main() -> None:
    ratios = [TUBE_DIAMETER_M / OPTIMUM["d"], FLOW_RATE_L_MIN / OPTIMUM["q"],
              FIN_PITCH_MM / OPTIMUM["p"], TUBE_COUNT / OPTIMUM["n"], WALL_MM / OPTIMUM["w"]]
    if min(ratios) <= 0:
        raise SystemExit("every dimension must be positive")
    x = [SPAN * math.log10(r) for r in ratios]
    n = len(x)
    ackley = (
        -20 * math.exp(-0.2 * math.sqrt(sum(v * v for v in x) / n))
        - math.exp(sum(math.cos(2 * math.pi * v) for v in x) / n) + 20 + math.e
    )
    print(f"loss_kw: {12.5 + 10 * ackley:.5f}")


if __name__ == "__main__":
    main()
