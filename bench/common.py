"""Helpers shared by the bench scripts: the machine, spreads, Markdown tables, temp repos.

Every bench script prints Markdown (a `## question` heading, a table, notes) so `make bench`
output can be pasted into docs/benchmarks.md as it is.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

GIT_ID = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]


def machine() -> dict[str, str]:
    """What the numbers were measured on: cores, CPU model, RAM, Python, date."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "cores (nproc)": str(
            os.cpu_count() if not hasattr(os, "sched_getaffinity") else len(os.sched_getaffinity(0))
        ),
        "CPU": cpu,
        "RAM": ram,
        "Python": platform.python_version(),
        "OS": f"{platform.system()} {platform.release()}",
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # Other work on the machine skews timings; say how busy it was when the run began.
        "load average (1 min) at start": f"{os.getloadavg()[0]:.2f}",
    }


def quantiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile); a single value gives it three times."""
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, med, q3


def med_iqr(xs: Sequence[float], fmt: str = "{:.3g}") -> str:
    """`median [q1–q3]`, the spread every table shows."""
    if not xs:
        return "—"
    q1, med, q3 = quantiles(xs)
    return f"{fmt.format(med)} [{fmt.format(q1)}–{fmt.format(q3)}]"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A Markdown table; `align` has one char per column: l (default for the first) or r."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *GIT_ID, *args], cwd=repo, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def make_repo(root: Path, files: dict[str, str]) -> Path:
    """A fresh git repo with `files` committed on branch main."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    return root


def overnight_env() -> dict[str, str]:
    """The environment for `python -m overnight` from a checkout (src on the path), without
    model keys: the bench talks to its stub model only."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env
