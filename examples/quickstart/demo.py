"""The quickstart demo: what `make demo` runs.

Copies this example into a fresh git repository in a temp directory, runs 20 experiments
of the offline `tune` proposer there (`overnight run --experiments 20 --proposer tune
--seed 0`), then prints where the study got to and where to look next. The temp directory
is kept, so you can inspect the branch, the ledger and every experiment afterwards.

    .venv/bin/python examples/quickstart/demo.py [--experiments N] [--dir DIR]

Needs no API key and no network. Exits non-zero if the study failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STUDY_FILES = [".gitignore", "README.md", "overnight.toml", "prepare.py", "program.md", "train.py"]
BRANCH = "overnight/quickstart"


def overnight_cmd() -> list[str]:
    """The `overnight` console script next to this Python, else `python -m overnight`."""
    bindir = Path(sys.executable).parent
    for name in ("overnight", "overnight.exe"):
        script = bindir / name
        if script.is_file():
            return [str(script)]
    return [sys.executable, "-m", "overnight"]


def run_env() -> dict[str, str]:
    """The environment for overnight: this Python's bin directory first on PATH, so the
    study's `python train.py` finds the same interpreter (and numpy) as this script."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def git(repo: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=repo, check=not capture, text=True, capture_output=capture
    )


def make_repo(parent: Path | None) -> Path:
    """A fresh git repository holding the study files, committed on `main`."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    repo = Path(tempfile.mkdtemp(prefix="overnight-quickstart-", dir=parent))
    for name in STUDY_FILES:
        shutil.copy2(HERE / name, repo / name)
    git(repo, "-c", "init.defaultBranch=main", "init", "-q")
    # Commit as whoever the user is; a machine without a git identity gets a local one.
    identity = {"user.name": "overnight demo", "user.email": "demo@overnight.invalid"}
    for key, fallback in identity.items():
        if not git(repo, "config", key, capture=True).stdout.strip():
            git(repo, "config", "--local", key, fallback)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "quickstart: a tiny MLP study")
    return repo


def run_study(repo: Path, experiments: int) -> int:
    """`overnight run` with its output streaming to the terminal; returns its exit code."""
    args = ["run", "--experiments", str(experiments), "--proposer", "tune", "--seed", "0"]
    if not sys.stdout.isatty():
        args.append("--plain")
    print(f"$ overnight {' '.join(args)}\n", flush=True)
    proc = subprocess.Popen([*overnight_cmd(), *args], cwd=repo, env=run_env())
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the child got the Ctrl-C too: let it record and stop
        proc.wait()
        return 130


def read_status(repo: Path) -> dict[str, Any] | None:
    proc = subprocess.run(
        [*overnight_cmd(), "status", "--json"],
        cwd=repo, env=run_env(), text=True, capture_output=True,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return None
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(f"overnight status --json printed no JSON:\n{proc.stdout}\n")
        return None


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def summarize(repo: Path, st: dict[str, Any]) -> bool:
    """Print the summary; False when the study has no measured best (it failed)."""
    metric = st.get("metric") or {}
    name, goal = metric.get("name", "metric"), metric.get("goal", "minimize")
    base = _num((st.get("baseline") or {}).get("value"))
    best_info = st.get("best") or {}
    best = _num(best_info.get("value"))
    counts = st.get("counts") or {}
    branch = st.get("branch") or BRANCH

    print("\n" + "=" * 72)
    print(f"study {st.get('study', 'quickstart')}: {name} ({goal})")
    if base is None or best is None:
        print("  no measured baseline: the study did not get going (see the output above)")
        ok = False
    else:
        change = (base - best) if goal == "minimize" else (best - base)
        rel = f" ({100 * change / abs(base):.1f}% better)" if base else ""
        word = "lower" if goal == "minimize" else "higher"
        print(f"  baseline {base:.6f} -> best {best:.6f}{rel}")
        if change <= 0:
            print(f"  (no experiment got a {word} {name} than the baseline this time)")
        print(
            f"  best: experiment {best_info.get('experiment')}, "
            f"commit {str(best_info.get('commit') or '')[:10]}"
        )
        ok = True
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    print(f"  experiments: {st.get('experiments')} (baseline included); {shown or 'none decided'}")
    cost = _num(st.get("cost_usd"))
    if cost:
        print(f"  model cost: ${cost:.2f}")
    print(f"  branch: {branch}")
    print(f"  directory: {repo}")

    cli = "overnight" if shutil.which("overnight") else " ".join(overnight_cmd())
    n = best_info.get("experiment", 1) if ok else 0
    hints = [
        (f"cd {repo}", ""),
        (f"{cli} log", "every experiment and its verdict"),
        (f"{cli} show {n}", "one experiment: diff, metrics, verdict and reason"),
        (f"git log {branch}", "the kept improvements, one commit each"),
        (f"git diff main {branch} -- train.py", "everything the study changed"),
        (f"{cli} report", "report.html and progress.png of the whole study"),
        (f"{cli} serve", "a live dashboard in your browser"),
    ]
    width = max(len(cmd) for cmd, _ in hints)
    print("\nwhere to look next:")
    for cmd, note in hints:
        print(f"  {cmd:<{width}}  # {note}" if note else f"  {cmd}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=20, help="experiments to run (20)")
    parser.add_argument("--dir", type=Path, default=None, help="make the temp repo under DIR")
    args = parser.parse_args(argv)
    if shutil.which("git") is None:
        print("demo: git is not installed", file=sys.stderr)
        return 2

    repo = make_repo(args.dir)
    print(f"quickstart study copied into {repo} (a fresh git repository)", flush=True)
    rc = run_study(repo, args.experiments)
    st = read_status(repo)
    ok = summarize(repo, st) if st is not None else False
    if rc != 0:
        print(
            f"\novernight run exited with code {rc}; the directory is kept: {repo}", file=sys.stderr
        )
        return rc
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
