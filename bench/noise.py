"""Q4 — noise handling: false keeps on an A/A study, keeps of a true 2σ gain.

Every run's metric is the true value plus Gaussian noise (σ = 1, minimize). The rules are
overnight's own pure decision functions (overnight.judging.rules), fed simulated measurements:

- greedy, 1 run: the autoresearch ratchet — keep when the one candidate run beats the one
  reference run (`judge.greedy`).
- greedy, mean of k: the same ratchet on the means of k = 5 runs each.
- noise-aware, k runs: overnight's rule with `[metric] repeats = 5` — Welch's one-sided
  t-test, α = 0.05 (`judge.decide`).
- noise-aware + confirm: the same, and a would-be keep is run k more times and must hold
  (`[metric] confirm = true`; `judge.confirms`).
- noise-aware, 1 run, known noise: `repeats = 1` when earlier repeated measurements gave a
  pooled σ estimate with 10 degrees of freedom (a fresh, noisy estimate per decision).

Single decisions: the candidate and the best are both measured afresh; the A/A case has no
true difference, the other a true gain of 2σ. Rates with 95 % Wilson intervals.

A whole A/A study: 100 experiments of changes that do nothing, in a row, with the ratchet
(the reference is the best's stored measurements: the runs it was kept on, or its
confirming re-run). False keeps per study and the improvement the study would report
(reference mean of the final best vs the truth, in σ): median [IQR] over the studies.

    python bench/noise.py [--trials 20000] [--studies 200] [--quick]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import med_iqr, table  # noqa: E402

from overnight.judging.rules import Rule, confirms, decide, greedy  # noqa: E402
from overnight.judging.stats import Noise, mean  # noqa: E402

K = 5
RULE = Rule("loss", "minimize")  # alpha 0.05, no min_improvement
NOISE_DF = 10

Draw = Callable[[float, int], list[float]]
# A rule: (candidate's true value, reference values) -> (keep?, the values kept on, runs used)
Decider = Callable[[float, list[float]], tuple[bool, list[float], int]]


def make_rules(rng: random.Random) -> dict[str, tuple[int, Decider]]:
    """name -> (reference runs, decider)."""

    def draw(mu: float, k: int) -> list[float]:
        return [rng.gauss(mu, 1.0) for _ in range(k)]

    def greedy1(mu: float, ref: list[float]) -> tuple[bool, list[float], int]:
        c = draw(mu, 1)
        v = greedy(name="loss", goal="minimize", value=c[0], best=mean(ref), best_experiment=0)
        return v.status == "keep", c, 1

    def greedy_k(mu: float, ref: list[float]) -> tuple[bool, list[float], int]:
        c = draw(mu, K)
        v = greedy(name="loss", goal="minimize", value=mean(c), best=mean(ref), best_experiment=0)
        return v.status == "keep", c, K

    def aware(mu: float, ref: list[float]) -> tuple[bool, list[float], int]:
        c = draw(mu, K)
        return decide(RULE, c, ref, reference_experiment=0).status == "keep", c, K

    def aware_confirm(mu: float, ref: list[float]) -> tuple[bool, list[float], int]:
        c = draw(mu, K)
        first = decide(RULE, c, ref, reference_experiment=0)
        if first.status != "keep":
            return False, c, K
        again_values = draw(mu, K)
        again = decide(RULE, again_values, ref, reference_experiment=0)
        return confirms(first, again), again_values, 2 * K  # the re-run is the reference

    def aware_pooled(mu: float, ref: list[float]) -> tuple[bool, list[float], int]:
        c = draw(mu, 1)
        sd = math.sqrt(sum(rng.gauss(0, 1) ** 2 for _ in range(NOISE_DF)) / NOISE_DF)
        d = decide(RULE, c, ref, reference_experiment=0, noise=Noise(sd, NOISE_DF))
        return d.status == "keep", c, 1

    return {
        "greedy, 1 run (autoresearch)": (1, greedy1),
        f"greedy, mean of {K} runs": (K, greedy_k),
        f"noise-aware, {K} runs (Welch, α = 0.05)": (K, aware),
        f"noise-aware, {K} runs + confirm": (K, aware_confirm),
        f"noise-aware, 1 run, pooled σ ({NOISE_DF} df)": (1, aware_pooled),
    }


def wilson(k: int, n: int) -> str:
    if n == 0:
        return "—"
    p, z = k / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (
        f"{p * 100:.1f} % [{max(0.0, centre - half) * 100:.1f}–{min(1.0, centre + half) * 100:.1f}]"
    )


def single(trials: int, seed: int) -> list[list[object]]:
    rng = random.Random(seed)
    rules = make_rules(rng)
    rows = []
    for name, (k_ref, rule) in rules.items():
        out = []
        runs = 0
        for mu in (0.0, -2.0):  # A/A, then a true 2σ gain (minimize: lower is better)
            kept = 0
            for _ in range(trials):
                ref = [rng.gauss(0.0, 1.0) for _ in range(k_ref)]
                keep, _, used = rule(mu, ref)
                kept += keep
                runs += used
            out.append(wilson(kept, trials))
        rows.append([name, *out, f"{runs / (2 * trials):.1f}"])
    return rows


def studies(count: int, length: int, seed: int) -> list[list[object]]:
    rng = random.Random(seed)
    rules = make_rules(rng)
    rows = []
    for name, (k_ref, rule) in rules.items():
        keeps, claimed = [], []
        for _ in range(count):
            ref = [rng.gauss(0.0, 1.0) for _ in range(k_ref)]  # the baseline's runs
            kept = 0
            for _ in range(length):
                keep, values, _ = rule(0.0, ref)  # a change that does nothing
                if keep:
                    kept += 1
                    ref = values[-k_ref:] if len(values) >= k_ref else values
            keeps.append(kept)
            claimed.append(-mean(ref))  # how much better than the truth the best looks, in σ
        rows.append(
            [name, med_iqr(keeps, "{:.0f}"), f"{mean(keeps):.2f}", med_iqr(claimed, "{:.2f}")]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--length", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny setting, for the tests")
    args = ap.parse_args()
    if args.quick:
        args.trials, args.studies, args.length = 300, 10, 20
    print(f"## Q4. Noise handling (σ = 1, k = {K} repeats)\n")
    print(f"### Single decisions ({args.trials} per cell)\n")
    print(
        table(
            [
                "rule",
                "false keeps, A/A (95 % CI)",
                "keeps of a true 2σ gain (95 % CI)",
                "runs per decision",
            ],
            single(args.trials, args.seed),
        )
    )
    print(
        f"\n### A whole A/A study ({args.length} do-nothing experiments, {args.studies} studies)\n"
    )
    print(
        table(
            ["rule", "false keeps per study", "mean", "reported improvement of the best, σ"],
            studies(args.studies, args.length, args.seed + 1),
        )
    )
    print(
        "\n- the reference for each decision is the best's stored runs (1 or k of them); "
        "after a keep it is the runs the candidate was kept on, or its confirming re-run"
    )
    print(
        "- reported improvement: the mean of the final best's reference runs against the "
        "true value (0): what the study would claim to have gained, all of it noise"
    )


if __name__ == "__main__":
    main()
