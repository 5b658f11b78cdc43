"""Q1 — harness cost per experiment: overnight vs OpenEvolve, same evaluator, same stub model.

Both harnesses evolve the same trivial program with the same evaluator (a score computed
from the program's text: no run time to speak of) and talk to the same instant stub model
(bench/stub_llm.py: a local OpenAI-compatible server returning a fixed small edit). What is
left is each harness's own cost per iteration: building the prompt, parsing and applying
the edit, evaluating, recording.

- overnight: `overnight run --experiments N --plain` with the `llm` proposer (provider
  openai, base_url = the stub), in a fresh git repo; the run command is
  `python evaluator.py program.py` (a fresh process per run: that is how overnight enforces
  budgets and isolation).
- OpenEvolve: installed from PyPI into bench/.venv-openevolve (created here on first use),
  run as `openevolve-run program.py evaluator.py --config config.yaml --iterations N` with its
  defaults except: the stub as the only model, parallel_evaluations = 1 (one experiment at a
  time, like overnight with workers = 1), no cascade evaluation (the evaluator has no
  stages), evaluator timeout 30 s.

Seconds per iteration = the spacing of consecutive model requests (each harness makes one
per iteration), after a warm-up; median and IQR over the iterations of all runs, and each
run's own median (the runs of the two harnesses are interleaved). The end-to-end column
divides the whole command's wall time (start-up included) by N.

    python bench/harness_cost.py [--iterations 60] [--runs 3] [--quick] [--no-install]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, make_repo, med_iqr, overnight_env, table  # noqa: E402
from stub_llm import StubLLM  # noqa: E402

VENV = ROOT / "bench" / ".venv-openevolve"
WARMUP = 3  # request gaps dropped at the start (imports, first prompt, process pools)

PROGRAM = '''\
"""The program both harnesses evolve (the evaluator scores shorter versions higher)."""

# EVOLVE-BLOCK-START
X = 0
# EVOLVE-BLOCK-END
'''

EVALUATOR = '''\
"""A trivial evaluator: shorter programs score higher (every stub edit adds a line, so no
candidate ever beats its parent and every iteration is a plain evaluate-and-record)."""

import sys


def evaluate(program_path):
    with open(program_path) as fh:
        lines = fh.read().count("\\n")
    return {"combined_score": 1.0 / (1 + lines)}


if __name__ == "__main__":
    print(f"combined_score: {evaluate(sys.argv[1])['combined_score']:.6f}")
'''

OVERNIGHT_TOML = """\
[study]
name = "harness"
instructions = "program.md"
surface = ["program.py"]
budget = "30s"

[run]
command = "{python} evaluator.py program.py"

[metric]
name = "combined_score"
goal = "maximize"

[proposer]
kind = "llm"
provider = "openai"
base_url = "{url}"
model = "stub-model"
"""

OPENEVOLVE_YAML = """\
max_iterations: {n}
random_seed: 42
llm:
  api_base: "{url}"
  api_key: "not-needed"
  models:
    - name: "stub-model"
      weight: 1.0
  timeout: 30
  retries: 0
evaluator:
  timeout: 30
  parallel_evaluations: 1
  cascade_evaluation: false
"""


def gaps(arrivals: list[float]) -> list[float]:
    d = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return d[WARMUP:] if len(d) > WARMUP + 2 else d


def run_overnight(work: Path, n: int) -> dict[str, object]:
    with StubLLM() as stub:
        repo = make_repo(
            work,
            {
                "program.py": PROGRAM,
                "evaluator.py": EVALUATOR,
                "program.md": "Make combined_score higher.\n",
                "overnight.toml": OVERNIGHT_TOML.format(python=sys.executable, url=stub.url),
            },
        )
        cmd = [sys.executable, "-m", "overnight", "run", "--experiments", str(n), "--plain"]
        t0 = time.monotonic()
        out = subprocess.run(cmd, cwd=repo, env=overnight_env(), capture_output=True, text=True)
        wall = time.monotonic() - t0
        arrivals = list(stub.arrivals)
    if out.returncode != 0:
        return {"error": f"overnight run exited {out.returncode}: {out.stderr.strip()[-300:]}"}
    status = subprocess.run(
        [sys.executable, "-m", "overnight", "status", "--json"],
        cwd=repo,
        env=overnight_env(),
        capture_output=True,
        text=True,
    )
    counts = json.loads(status.stdout)["counts"] if status.returncode == 0 else {}
    measured = counts.get("keep", 0) + counts.get("discard", 0) - 1  # minus the baseline
    return {
        "gaps": gaps(arrivals),
        "wall": wall,
        "n": n,
        "requests": len(arrivals),
        "ok": measured,
        "note": f"{counts}",
    }


def ensure_openevolve(install: bool) -> tuple[Path | None, str]:
    """The venv's openevolve-run, or None and why not."""
    exe = VENV / "bin" / "openevolve-run"
    if exe.exists():
        return exe, ""
    if not install:
        return None, f"skipped: {VENV.relative_to(ROOT)} is not there (--no-install)"
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "openevolve"],
    ]
    for step in steps:
        out = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            lines = [ln for ln in (out.stderr or out.stdout).strip().splitlines() if ln.strip()]
            why = lines[-1] if lines else f"exit {out.returncode}"
            return None, f"not measured: `{' '.join(step[-3:])}` failed: {why}"
    return (
        (exe, "") if exe.exists() else (None, "not measured: openevolve-run missing after install")
    )


def openevolve_version() -> str:
    out = subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('openevolve'))",
        ],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


def run_openevolve(work: Path, n: int, exe: Path) -> dict[str, object]:
    d = work
    d.mkdir(parents=True)
    (d / "program.py").write_text(PROGRAM)
    (d / "evaluator.py").write_text(EVALUATOR)
    with StubLLM() as stub:
        (d / "config.yaml").write_text(OPENEVOLVE_YAML.format(n=n, url=stub.url))
        cmd = [
            str(exe),
            "program.py",
            "evaluator.py",
            "--config",
            "config.yaml",
            "--iterations",
            str(n),
            "--output",
            str(d / "out"),
        ]
        t0 = time.monotonic()
        out = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=1800)
        wall = time.monotonic() - t0
        arrivals = list(stub.arrivals)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip()[-300:]
        return {"error": f"openevolve-run exited {out.returncode}: {tail}"}
    logs = "\n".join(p.read_text(errors="replace") for p in (d / "out").rglob("*.log"))
    ok = logs.count("completed in")  # "Iteration N: Program … completed in X s"
    return {
        "gaps": gaps(arrivals),
        "wall": wall,
        "n": n,
        "requests": len(arrivals),
        "ok": ok,
        "note": "",
    }


def process_start_ms(repo: Path, times: int = 15) -> list[float]:
    """What starting `python evaluator.py program.py` alone costs (part of overnight's row)."""
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "evaluator.py", "program.py"],
            cwd=repo,
            check=True,
            capture_output=True,
        )
        out.append((time.perf_counter() - t0) * 1000)
    return out


def merge(runs: list[dict[str, object]]) -> dict[str, object]:
    """One row from several runs: all iterations pooled, plus each run's own median."""
    bad = [r for r in runs if "error" in r]
    if bad:
        return bad[0]
    return {
        "gaps": [g for r in runs for g in r["gaps"]],  # type: ignore[attr-defined]
        "per_run": [median(r["gaps"]) for r in runs],  # type: ignore[arg-type]
        "wall_per_iter": [float(r["wall"]) / int(r["n"]) for r in runs],  # type: ignore[arg-type]
        "requests": sum(int(r["requests"]) for r in runs),  # type: ignore[call-overload]
        "ok": sum(int(r["ok"]) for r in runs),  # type: ignore[call-overload]
        "n": sum(int(r["n"]) for r in runs),  # type: ignore[call-overload]
    }


def row(name: str, r: dict[str, object]) -> list[object]:
    if "error" in r:
        return [name, str(r["error"]), "—", "—", "—", "—"]
    per_run = ", ".join(f"{x * 1000:.1f}" for x in r["per_run"])  # type: ignore[attr-defined]
    return [
        name,
        med_iqr([x * 1000 for x in r["gaps"]], "{:.1f}"),  # type: ignore[attr-defined]
        per_run,
        f"{median(r['wall_per_iter']) * 1000:.0f}",  # type: ignore[arg-type]
        f"{r['requests']}",
        f"{r['ok']}/{r['n']}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=60, help="iterations per run")
    ap.add_argument("--runs", type=int, default=3, help="runs of each harness, interleaved")
    ap.add_argument("--quick", action="store_true", help="a few iterations, for the tests")
    skip = "do not create bench/.venv-openevolve (skip OpenEvolve if absent)"
    ap.add_argument("--no-install", action="store_true", help=skip)
    args = ap.parse_args()
    n, runs = (6, 1) if args.quick else (args.iterations, args.runs)
    exe, why = ensure_openevolve(not args.no_install)
    on_runs, oe_runs = [], []
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        work = Path(tmp)
        for i in range(runs):  # interleaved, so drift of the machine hits both alike
            on_runs.append(run_overnight(work / f"overnight-{i}", n))
            if exe is not None:
                oe_runs.append(run_openevolve(work / f"openevolve-{i}", n, exe))
        start_ms = process_start_ms(work / "overnight-0", 5 if args.quick else 15)
    on = merge(on_runs)
    from overnight import __version__

    rows = [row(f"overnight {__version__} (workers 1, run-ahead)", on)]
    if exe is None:
        oe: dict[str, object] = {"error": why}
        rows.append(["OpenEvolve", why, "—", "—", "—", "—"])
    else:
        oe = merge(oe_runs)
        rows.append(row(f"OpenEvolve {openevolve_version()} (parallel_evaluations 1)", oe))
    print(f"## Q1. Harness cost per experiment ({runs} × {n} iterations, instant stub model)\n")
    headers = ["harness", "ms per iteration, median [IQR]", "median of each run",
               "end-to-end ms/iter", "model calls", "evaluated"]  # fmt: skip
    print(table(headers, rows))
    notes = []
    if "gaps" in on and "gaps" in oe:
        a, b = median(on["gaps"]), median(oe["gaps"])  # type: ignore[arg-type]
        each = [x / y for x, y in zip(on["per_run"], oe["per_run"], strict=True)]  # type: ignore[call-overload]
        notes.append(
            f"ratio overnight / OpenEvolve (median per iteration): **{a / b:.2f}×** "
            f"(each run: {', '.join(f'{x:.2f}' for x in each)})"
        )
    notes.append(
        f"per iteration = spacing of consecutive model requests after {WARMUP} warm-up "
        "iterations; end-to-end = the whole command / N, start-up included"
    )
    notes.append(
        "overnight starts a fresh `python evaluator.py` process per run (budget kill, "
        "isolation, locked-file checks); that start alone takes "
        f"{med_iqr(start_ms, '{:.1f}')} ms here; the controller's own share (git, ledger) "
        "is broken down by bench/overhead.py. OpenEvolve calls `evaluate()` inside a "
        "long-lived worker process"
    )
    notes.append(
        "the evaluator scores shorter programs higher and every stub edit adds a line, so "
        "nothing is ever kept: both rows are evaluate-and-record only"
    )
    print("\n" + "\n".join(f"- {x}" for x in notes))


if __name__ == "__main__":
    main()
