"""How fast does the command line start? (issue 16: `--help`, `status`, `log` within 200 ms,
`run`'s first line within 0.5 s, medians on the 2-core dev machine.)

    python bench/startup.py [--repeats N] [--quick]

Builds a small study in a temp repo (3 experiments of the `tune` proposer), then runs each
command as a user does, through the `overnight` console script next to this Python, N
times interleaved, and prints the median and the interquartile range of the wall time
(process start to exit; for `run`, process start to its first line of output) and the CPU
time (user + system, git subprocesses included), which a busy machine inflates far less
than the wall time. `python -c pass` is the floor every command pays. No timing is asserted
anywhere: the numbers go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import make_repo, med_iqr, overnight_env, table  # noqa: E402

SCORE = "X = 10\nY = 3\nprint(f'score: {X * Y}')\n"
CONFIG = """\
[study]
name = "startup"
surface = ["score.py"]
budget = "30s"

[run]
command = "python score.py"

[metric]
name = "score"
goal = "minimize"

[proposer]
kind = "tune"
"""
# (label, arguments, goal in ms)
COMMANDS = [
    ("`overnight --help`", ["--help"], 200),
    ("`overnight status`", ["status"], 200),
    ("`overnight status --json`", ["status", "--json"], 200),
    ("`overnight log`", ["log"], 200),
    ("`overnight show 1`", ["show", "1"], None),
    ("`overnight frobnicate` (usage error)", ["frobnicate"], None),
]
RUN_ARGS = ["run", "--experiments", "0", "--plain"]


def overnight() -> list[str]:
    script = Path(sys.executable).parent / "overnight"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "overnight"]


def env() -> dict[str, str]:
    """As a user runs it: Python may cache bytecode (PYTHONDONTWRITEBYTECODE, set on some
    dev machines, would make every start compile overnight's modules again)."""
    out = overnight_env()
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


CPU: dict[str, list[float]] = {}  # label -> CPU seconds (user + system, with git children)


def wall(argv: list[str], cwd: Path, label: str = "") -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env(), capture_output=True)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    CPU.setdefault(label, []).append(cpu)
    return took


def first_line(argv: list[str], cwd: Path) -> float:
    """Seconds from the process start to its first line on stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()
    took = time.perf_counter() - t0
    proc.communicate()
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    cli = overnight()
    with tempfile.TemporaryDirectory(prefix="overnight-startup-") as tmp:
        repo = make_repo(Path(tmp) / "repo", {
            "score.py": SCORE, "overnight.toml": CONFIG, "program.md": "Make it small.\n",
        })  # fmt: skip
        setup = subprocess.run([*cli, "run", "--experiments", "3", "--plain"], cwd=repo,
                               env=env(), capture_output=True, text=True)  # fmt: skip
        if setup.returncode != 0:
            print(setup.stdout + setup.stderr, file=sys.stderr)
            return 1
        for _, argv, _ in COMMANDS:  # warm-up: bytecode and the config cache written once
            wall([*cli, *argv], repo)
        times: dict[str, list[float]] = {label: [] for label, _, _ in COMMANDS}
        times["python -c pass"] = []
        times["run"] = []
        for _ in range(repeats):  # interleaved: a busy moment hits every command alike
            times["python -c pass"].append(wall([sys.executable, "-c", "pass"], repo, "floor"))
            for label, argv, _ in COMMANDS:
                times[label].append(wall([*cli, *argv], repo, label))
            times["run"].append(first_line([*cli, *RUN_ARGS], repo))
    rows = [("`python -c pass` (the floor)", med_iqr(times["python -c pass"], "{:.3f}"),
             med_iqr(CPU["floor"], "{:.3f}"), "")]  # fmt: skip
    for label, _, goal in COMMANDS:
        rows.append((label, med_iqr(times[label], "{:.3f}"), med_iqr(CPU[label], "{:.3f}"),
                     _goal(times[label], goal)))  # fmt: skip
    rows.append(("`overnight run` to its first line", med_iqr(times["run"], "{:.3f}"), "",
                 _goal(times["run"], 500)))  # fmt: skip
    print(f"## Start-up of the command line (median [IQR] s of {repeats}, interleaved)\n")
    print(table(["command", "wall s", "CPU s", "goal (wall)"], rows, "lrrl"))
    print(f"\n{' '.join(Path(c).name for c in cli)}: the console script a user runs; the "
          f"study has 4 experiments; load average (1 min) {os.getloadavg()[0]:.2f} at the end.")
    return 0


def _goal(xs: list[float], goal_ms: int | None) -> str:
    if goal_ms is None:
        return ""
    median = sorted(xs)[len(xs) // 2]
    return f"≤ {goal_ms} ms: {'met' if median * 1000 <= goal_ms else 'NOT met'}"


if __name__ == "__main__":
    sys.exit(main())
