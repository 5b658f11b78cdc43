"""Q3 — search quality without a model: `tune` vs random search vs Optuna alone.

On the quickstart study (minimize val_loss) and the pricing study (maximize profit), over
several seeds, three ways to spend 100 experiments on the same knobs:

- tune: overnight's TuneProposer, its real propose/observe cycle, with the greedy keep rule
  (keep when strictly better than the best): each proposal moves 1–3 knobs of the current
  best (Optuna TPE around the best, a ratchet).
- random: every knob drawn at random at once, from the same ranges tune searches (log-uniform
  over value/10 … value×10 for floats, value/4 … value×4 for ints, 0 … 1 for zeros; rounded
  to 3 significant digits as tune writes them).
- Optuna alone: one TPE study (default settings) over all knobs at once, same ranges, no
  ratchet: what a user gets from `optuna` directly.

The objective is evaluated in-process to keep this within minutes: the example's surface
file with the new knob values (rewritten by overnight's own knob writer) is executed and
scored by the example's locked evaluation (quickstart: `train.py` with `prepare.evaluate`,
seed 0; pricing: `pricing.price` through `evaluate.simulate` on the validation weeks).
Both objectives are deterministic, so the spread is the search's, not measurement noise.
Every table cell is the best value found (baseline included) after N experiments: median
[IQR] over the seeds.

    python bench/search_quality.py [--seeds 5] [--experiments 100] [--quick]
"""

from __future__ import annotations

import os

# One BLAS thread per worker process: the seeds run in parallel on the machine's cores.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, med_iqr, table  # noqa: E402

EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class StudySpec:
    name: str
    folder: str
    surface: str
    metric: str
    goal: str
    fmt: str


STUDIES = {
    "quickstart": StudySpec(
        "quickstart", "quickstart", "train.py", "val_loss", "minimize", "{:.4f}"
    ),
    "pricing": StudySpec("pricing", "pricing", "pricing.py", "profit", "maximize", "{:,.0f}"),
}

_EVAL: dict[str, Callable[[str], float]] = {}
_CACHE: dict[tuple[str, str], float] = {}


def _quickstart(src: str) -> float:
    os.environ["OVERNIGHT_SEED"] = "0"
    ns = {"__name__": "bench_quickstart_train"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(src, "train.py", "exec"), ns)
        ns["main"]()  # type: ignore[operator]
    m = re.search(r"^val_loss: (\S+)$", out.getvalue(), re.M)
    return float(m.group(1)) if m else math.nan


def _pricing(src: str) -> float:
    import evaluate  # examples/pricing/evaluate.py (on sys.path)

    ns = {"__name__": "bench_pricing_rule"}
    exec(compile(src, "pricing.py", "exec"), ns)
    try:
        return float(evaluate.simulate(ns["price"], evaluate.VALIDATION)["profit"])  # type: ignore[arg-type]
    except (ValueError, ZeroDivisionError, OverflowError):
        return math.nan


def objective(spec: StudySpec, src: str) -> float:
    key = (spec.name, src)
    if key not in _CACHE:
        folder = str(EXAMPLES / spec.folder)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        fn = _quickstart if spec.name == "quickstart" else _pricing
        _CACHE[key] = fn(src)
    return _CACHE[key]


def better(a: float, b: float, goal: str) -> bool:
    return a < b if goal == "minimize" else a > b


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


# == the three searches =====================================================================


def spaces_of(src: str, path: str):  # type: ignore[no-untyped-def]
    from overnight.proposers.tune.knobs import find_knobs
    from overnight.proposers.tune.tune import _Space  # the very ranges tune searches

    knobs = {k.name: k for k in find_knobs(path, src)}
    return knobs, {name: _Space.around(k.value, k.kind) for name, k in knobs.items()}


def search_tune(spec: StudySpec, seed: int, n: int) -> list[float | None]:
    from overnight.proposers.base import Context
    from overnight.proposers.tune.tune import TuneProposer
    from overnight.store.records import ExperimentRecord

    best_src = (EXAMPLES / spec.folder / spec.surface).read_text()
    v0 = objective(spec, best_src)
    best, best_n = v0, 0
    history = [
        ExperimentRecord(0, "keep", v0, {}, "0" * 40, None, "baseline", "", None, "baseline")
    ]
    prop = TuneProposer(seed=seed)
    values: list[float | None] = []
    for i in range(1, n + 1):
        ctx = Context(
            study=spec.name,
            instructions="",
            surface={spec.surface: best_src},
            metric=spec.metric,
            goal=spec.goal,
            budget_s=60.0,
            best_experiment=best_n,
            best_value=best,
            baseline_value=v0,
            history=list(history),
            seed=seed,
        )
        p = prop.propose(ctx)
        value: float | None = None
        if p.invalid_reason or not p.files:
            status = "invalid"
        else:
            src = {spec.surface: best_src, **p.files}[spec.surface]
            value = objective(spec, src)
            if not math.isfinite(value):
                status, value = "crash", None
            elif better(value, best, spec.goal):  # the greedy rule
                status, best_src, best, best_n = "keep", src, value, i
            else:
                status = "discard"
        rec = ExperimentRecord(
            i, status, value, {}, f"{i:040x}", None, p.description, "", None, "tune", meta=p.meta
        )
        history.append(rec)
        prop.observe(rec)
        values.append(value)
    return values


def search_random(spec: StudySpec, seed: int, n: int) -> list[float | None]:
    from overnight.proposers.tune.knobs import apply_values

    base = (EXAMPLES / spec.folder / spec.surface).read_text()
    knobs, spaces = spaces_of(base, spec.surface)
    rng = random.Random(seed)
    values: list[float | None] = []
    for _ in range(n):
        params = {}
        for k, sp in spaces.items():
            lo, hi = float(sp.low), float(sp.high)
            inner = (
                math.exp(rng.uniform(math.log(lo), math.log(hi))) if sp.log else rng.uniform(lo, hi)
            )
            params[k] = sp.from_optuna(inner)
        v = objective(spec, apply_values(spec.surface, base, params))
        values.append(v if math.isfinite(v) else None)
    return values


def search_optuna(spec: StudySpec, seed: int, n: int) -> list[float | None]:
    import optuna

    from overnight.proposers.tune.knobs import apply_values

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = (EXAMPLES / spec.folder / spec.surface).read_text()
    knobs, spaces = spaces_of(base, spec.surface)
    study = optuna.create_study(direction=spec.goal, sampler=optuna.samplers.TPESampler(seed=seed))
    dists = {k: sp.distribution() for k, sp in spaces.items()}
    values: list[float | None] = []
    for _ in range(n):
        trial = study.ask(dists)
        params = {k: spaces[k].from_optuna(trial.params[k]) for k in spaces}
        v = objective(spec, apply_values(spec.surface, base, params))
        if math.isfinite(v):
            study.tell(trial, v)
            values.append(v)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            values.append(None)
    return values


METHODS = {
    "tune (overnight: TPE around the best, greedy ratchet)": search_tune,
    "random search (all knobs at once)": search_random,
    "Optuna alone (TPE over all knobs, no ratchet)": search_optuna,
}


def job(args: tuple[str, str, int, int]) -> tuple[str, str, int, list[float], float]:
    """Best value so far after each experiment (baseline included), and the job's time."""
    study, method, seed, n = args
    spec = STUDIES[study]
    t0 = time.perf_counter()
    v0 = objective(spec, (EXAMPLES / spec.folder / spec.surface).read_text())
    values = METHODS[method](spec, seed, n)
    best, curve = v0, []
    for v in values:
        if finite(v) and better(v, best, spec.goal):  # type: ignore[arg-type]
            best = v  # type: ignore[assignment]
        curve.append(best)
    return study, method, seed, curve, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--experiments", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="tiny setting, for the tests")
    args = ap.parse_args()
    seeds, n = (1, 6) if args.quick else (args.seeds, args.experiments)
    marks = [m for m in (10, 30, 100) if m <= n] or [n]
    jobs = [(s, m, seed, n) for s in STUDIES for m in METHODS for seed in range(seeds)]
    t0 = time.perf_counter()
    if args.jobs > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(args.jobs) as pool:
            results = pool.map(job, jobs, chunksize=1)
    else:
        results = [job(j) for j in jobs]
    wall = time.perf_counter() - t0
    print(f"## Q3. Search quality without a model ({seeds} seeds × {n} experiments)\n")
    for study, spec in STUDIES.items():
        v0 = objective(spec, (EXAMPLES / spec.folder / spec.surface).read_text())
        better_word = "lower" if spec.goal == "minimize" else "higher"
        print(
            f"### {study}: {spec.metric} ({better_word} is better; baseline "
            f"{spec.fmt.format(v0)})\n"
        )
        rows = []
        for method in METHODS:
            curves = [r[3] for r in results if r[0] == study and r[1] == method]
            secs = [r[4] for r in results if r[0] == study and r[1] == method]
            cells = [med_iqr([c[m - 1] for c in curves], spec.fmt) for m in marks]
            rows.append([method, *cells, f"{sum(secs) / len(secs):.1f}"])
        print(table(["method", *[f"best after {m}" for m in marks], "s per search"], rows))
        print()
    print(
        f"- cells: median [IQR] over seeds 0–{seeds - 1}; the same seed drives each method's "
        f"own randomness; {wall:.0f} s in all on {args.jobs} processes"
    )
    print(
        "- the objectives are deterministic (quickstart trains with seed 0; pricing's "
        "market noise is fixed per week), so repeated points cost nothing and were cached"
    )


if __name__ == "__main__":
    main()
