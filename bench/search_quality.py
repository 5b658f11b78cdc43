"""Q3 — search quality without a model: `tune` vs Optuna alone vs random search, each run
through the real loop (`overnight run`, run-ahead on, the greedy keep rule).

Five studies: the project's quickstart and pricing examples, and three it was never tuned
on (bench/studies/): gradient boosting on scikit-learn's breast-cancer data, a small neural
network on its digits (integer and log-scale knobs), and a heat exchanger scored by the
Ackley function (physical units, a non-round optimum, many local minima). For each study,
method and seed a fresh git repo runs `overnight run --experiments N --seed S`:

- tune: `--proposer tune`, as a user runs it;
- Optuna alone: `--proposer methods:OptunaAloneProposer` (bench/methods.py), Optuna's default
  TPESampler over every knob at once;
- random: `--proposer methods:RandomProposer`, every knob drawn at random at once.

All three start from the same baseline (experiment 0, the first trial of each), search the
same ranges (`TuneProposer.spaces_for`: declared and default ranges, SEED left alone), and
Optuna gets `tune`'s number of start-up trials. Each experiment's command runs through a
warm interpreter (bench/warm.py: scikit-learn is imported once, each run forks), so the
bench measures the search, not 1.5 s of imports per run. Every cell is the best value found
(baseline included) after N experiments: median [IQR] over the seeds.

    nice python bench/search_quality.py [--seeds 5] [--experiments 100] [--studies a,b]
        [--methods tune,optuna,random] [--jobs 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, make_repo, med_iqr, overnight_env, quantiles, table  # noqa: E402

BENCH = ROOT / "bench"


@dataclass(frozen=True)
class StudySpec:
    folder: str
    surface: str
    script: str  # what [run].command runs
    metric: str
    goal: str
    fmt: str
    needs: str = ""  # a module the study imports (skipped when it is not installed)
    about: str = ""


STUDIES = {  # cheapest first
    "exchanger": StudySpec("bench/studies/exchanger", "design.py", "design.py", "loss_kw",
                           "minimize", "{:.3f}",
                           about="held out: Ackley in physical units, 5 knobs, optimum 12.5"),
    "pricing": StudySpec("examples/pricing", "pricing.py", "evaluate.py", "profit", "maximize",
                         "{:,.0f}", about="the example: 6 pricing knobs, no holdout gate"),
    "boosting": StudySpec("bench/studies/boosting", "train.py", "train.py", "val_logloss",
                          "minimize", "{:.4f}", "sklearn",
                          "held out: HistGradientBoosting, breast cancer, 6 knobs + SEED"),
    "network": StudySpec("bench/studies/network", "train.py", "train.py", "val_logloss",
                         "minimize", "{:.4f}", "sklearn",
                         "held out: MLPClassifier, digits, 6 int/log knobs + SEED"),
    "quickstart": StudySpec("examples/quickstart", "train.py", "train.py", "val_loss",
                            "minimize", "{:.4f}", about="the example: numpy MLP, 7 knobs"),
}
METHODS = {
    "tune": ("tune", "tune (trust region + multivariate TPE)"),
    "optuna": ("methods:OptunaAloneProposer", "Optuna alone (default TPESampler)"),
    "random": ("methods:RandomProposer", "random search (all knobs at once)"),
    "tune-cmaes": ("methods:TuneCmaEsProposer", "tune, CMA-ES as the joint model"),
    "tune-gp": ("methods:TuneGPProposer", "tune, GP as the joint model"),
    "tune-tpe-only": ("methods:TuneGlobalOnlyProposer", "tune, joint TPE moves only"),
    "tune-local-only": ("methods:TuneLocalOnlyProposer", "tune, trust-region moves only"),
    "tune-warmup": ("methods:TuneWarmupProposer",
                    "tune, random joint draws until TPE's start-up (not the default)"),
}
PRELOAD = ["numpy", "sklearn.ensemble", "sklearn.neural_network", "sklearn.datasets",
           "sklearn.metrics", "sklearn.model_selection"]  # fmt: skip


def available(module: str) -> bool:
    return not module or importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def warm_server(folder: Path) -> Iterator[str]:
    """bench/warm.py serving on a socket in `folder`; stopped by its own pid afterwards."""
    sock = str(folder / "warm.sock")
    preload = [m for m in PRELOAD if available(m.split(".")[0])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "warm.py"), "serve", sock, "--preload", ",".join(preload)],
        stdout=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def config(spec: StudySpec) -> str:
    command = f"{sys.executable} {BENCH / 'warm.py'} run {spec.script}"
    return (
        f'[study]\nname = "bench"\nsurface = ["{spec.surface}"]\nbudget = "30s"\n\n'
        f"[run]\ncommand = {json.dumps(command)}\n\n"
        f'[metric]\nname = "{spec.metric}"\ngoal = "{spec.goal}"\n'
    )


def job(args: tuple[str, str, int, int, str, Path]) -> dict:
    """One study, one method, one seed: a fresh repo, `overnight run`, the ledger's values."""
    study, method, seed, n, sock, tmp = args
    spec = STUDIES[study]
    src = ROOT / spec.folder
    files = {
        p.relative_to(src).as_posix(): p.read_text()
        for p in sorted(src.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
        and p.suffix in (".py", ".md") and p.name != "overnight.toml"
    }  # fmt: skip
    files["overnight.toml"] = config(spec)
    repo = make_repo(tmp / f"{study}-{method}-{seed}", files)
    env = overnight_env()
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), env["PYTHONPATH"]])
    env.update(BENCH_WARM_SOCKET=sock, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cli = [sys.executable, "-m", "overnight"]
    t0 = time.perf_counter()
    out = subprocess.run(
        [*cli, "run", "--experiments", str(n), "--seed", str(seed), "--plain",
         "--proposer", METHODS[method][0]],
        cwd=repo, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    log = subprocess.run([*cli, "log", "--json"], cwd=repo, env=env, capture_output=True,
                         text=True)  # fmt: skip
    rows = json.loads(log.stdout) if log.returncode == 0 and log.stdout.strip() else []
    shutil.rmtree(repo, ignore_errors=True)
    values = {r["experiment"]: r["value"] for r in rows if r["status"] in ("keep", "discard")}
    statuses = [r["status"] for r in rows if r["experiment"] > 0]
    error = "" if out.returncode == 0 and 0 in values else (out.stderr or out.stdout)[-800:]
    better = (lambda a, b: a < b) if spec.goal == "minimize" else (lambda a, b: a > b)
    curve, best = [], values.get(0)
    for i in range(1, n + 1):
        v = values.get(i)
        if v is not None and (best is None or better(v, best)):
            best = v
        curve.append(best)
    return {"study": study, "method": method, "seed": seed, "curve": curve, "wall": wall,
            "baseline": values.get(0), "statuses": statuses, "error": error}  # fmt: skip


def at_least(a: float, b: float, goal: str) -> bool:
    return a <= b if goal == "minimize" else a >= b


def report(
    results: list[dict], studies: list[str], methods: list[str], marks: list[int], seeds: int,
    n: int, wall: float, jobs: int, skipped: dict[str, str],
) -> None:  # fmt: skip
    import optuna

    print(f"## Q3. Search quality without a model ({seeds} seeds × {n} experiments, "
          "the real loop)\n")  # fmt: skip
    verdicts = []
    for study in studies:
        spec = STUDIES[study]
        if study in skipped:
            print(f"### {study}: skipped ({skipped[study]})\n")
            continue
        rs = [r for r in results if r["study"] == study]
        base = next((r["baseline"] for r in rs if r["baseline"] is not None), None)
        word = "lower" if spec.goal == "minimize" else "higher"
        shown = "—" if base is None else spec.fmt.format(base)
        print(f"### {study}: {spec.metric} ({word} is better; baseline {shown}) — {spec.about}\n")
        rows, medians = [], {}
        for method in methods:
            mine = [r for r in rs if r["method"] == method]
            errors = [r["error"] for r in mine if r["error"]]
            curves = [r["curve"] for r in mine if not r["error"] and r["curve"][-1] is not None]
            cells = []
            for m in marks:
                xs = [c[m - 1] for c in curves]
                cells.append(med_iqr(xs, spec.fmt) if xs else "—")
                medians[(method, m)] = quantiles(xs)[1] if xs else None
            invalid = sum(s == "invalid" for r in mine for s in r["statuses"])
            secs = sum(r["wall"] for r in mine) / max(1, len(mine))
            note = f"{len(errors)} failed: {errors[0].strip().splitlines()[-1]}" if errors else ""
            rows.append([METHODS[method][1], *cells, f"{secs:.0f}", invalid, note])
        print(table(["method", *[f"best after {m}" for m in marks], "s per search",
                     "invalid", "note"], rows))  # fmt: skip
        print()
        for m in marks:
            t, o, r = (medians.get((k, m)) for k in ("tune", "optuna", "random"))
            if None in (t, o, r):
                continue
            verdicts.append((study, m, at_least(t, o, spec.goal), not at_least(r, t, spec.goal)))
    if verdicts:
        print("### Does tune meet the goal? (median best: at least Optuna's, better than "
              "random's)\n")  # fmt: skip
        rows = [[s, m, "yes" if vo else "**no**", "yes" if vr else "**no**"]
                for s, m, vo, vr in verdicts]  # fmt: skip
        print(table(["study", "after", "tune >= Optuna alone", "tune > random"], rows))
        print()
    try:
        import sklearn

        sk = f", scikit-learn {sklearn.__version__}"
    except ImportError:
        sk = ""
    busy = sum(r["wall"] for r in results)
    print(f"- cells: median [IQR] over seeds 0–{seeds - 1}; each method's own randomness is "
          f"seeded with the seed; Optuna {optuna.__version__}{sk}; the searches took "
          f"{busy / 60:.0f} min of wall time in all, run {jobs} at a time (this report: "
          f"{wall:.0f} s)")  # fmt: skip
    print("- every method runs `overnight run` (run-ahead on: the next proposal is made while "
          "the current experiment runs, and re-based when that one is kept); an experiment is "
          "counted whatever its status, invalid (e.g. a duplicate) included")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--experiments", type=int, default=100)
    ap.add_argument("--studies", default=",".join(STUDIES))
    ap.add_argument("--methods", default="tune,optuna,random")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="tiny setting, for the tests")
    ap.add_argument("--save", type=Path, help="append each finished search to this JSONL "
                    "file, and reuse the searches it already holds (resume a long run)")
    args = ap.parse_args()
    studies = args.studies.split(",")
    methods = args.methods.split(",")
    seeds, n = (1, 5) if args.quick else (args.seeds, args.experiments)
    if args.quick:  # one fast study that needs nothing but overnight
        studies = ["exchanger"]
    unknown = [s for s in studies if s not in STUDIES] + [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown study or method: {', '.join(unknown)}")
    marks = [m for m in (10, 30, 100) if m <= n] or [n]
    skipped = {s: f"needs {STUDIES[s].needs}: pip install -e '.[bench]'"
               for s in studies if not available(STUDIES[s].needs)}  # fmt: skip
    t0 = time.perf_counter()
    done = []
    if args.save and args.save.exists():
        done = [json.loads(line) for line in args.save.read_text().splitlines() if line.strip()]
    key = lambda r: (r["study"], r["method"], r["seed"], len(r["curve"]))  # noqa: E731
    results = [r for r in done if key(r) in {(s, m, d, n) for s in studies for m in methods
                                             for d in range(seeds)}]  # fmt: skip
    have = {key(r) for r in results}
    with tempfile.TemporaryDirectory(prefix="overnight-q3-") as tmp, warm_server(Path(tmp)) as sock:
        # Study by study (in the order given: cheapest first by default), so a long run cut
        # short leaves whole studies; --save keeps every search the moment it ends.
        work = [(s, m, seed, n, sock, Path(tmp)) for s in studies if s not in skipped
                for seed in range(seeds) for m in methods
                if (s, m, seed, n) not in have]  # fmt: skip
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for future in as_completed([pool.submit(job, w) for w in work]):
                result = future.result()
                results.append(result)
                if args.save:
                    with args.save.open("a") as fh:
                        fh.write(json.dumps(result) + "\n")
    report(results, studies, methods, marks, seeds, n, time.perf_counter() - t0, args.jobs,
           skipped)  # fmt: skip
    failed = [r for r in results if r["error"]]
    if failed:  # the table says which; a benchmark with failed searches is not a result
        sys.exit(f"{len(failed)} of {len(results)} searches failed, e.g. "
                 f"{failed[0]['study']}/{failed[0]['method']}: "
                 f"{failed[0]['error'].strip().splitlines()[-1]}")  # fmt: skip


if __name__ == "__main__":
    main()
