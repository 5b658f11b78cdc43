"""The controller's own cost per experiment: everything except the run and the proposer.

An instant proposer (a new value of one constant each time) and a trivial command
(`echo score: N` through bash) on a fresh temp git repo; the loop runs in-process with
timers around git calls, the run's process, and ledger writes. Prints a Markdown table.

    python bench/overhead.py [--experiments 200]

Goal (issue #2): median overhead <= 50 ms per experiment.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import overnight.executors.local as local_mod
import overnight.git.workspace as ws_mod
import overnight.store.ledger as ledger_mod
from overnight.cli.view import View
from overnight.experiment.loop import Loop, RunOptions
from overnight.proposers.base import BaseProposer, Context
from overnight.store.records import ExperimentRecord, Proposal
from overnight.store.study import Study

CONFIG = """
[study]
name = "bench"
surface = ["knob.py"]
budget = "30s"

[run]
command = "echo score: 1"

[metric]
name = "score"
goal = "minimize"

[proposer]
kind = "bench:InstantProposer"
"""

TIMERS: dict[str, float] = defaultdict(float)


class InstantProposer(BaseProposer):
    name = "instant"

    def __init__(self, **_: Any) -> None:
        self.i = 0

    def propose(self, ctx: Context) -> Proposal:
        t0 = time.perf_counter()
        self.i += 1
        p = Proposal(files={"knob.py": f"X = {self.i}\n"}, description=f"X = {self.i}")
        TIMERS["proposer"] += time.perf_counter() - t0
        return p


class Stamps(View):
    def __init__(self) -> None:
        self.decided_at: list[float] = []
        self.snapshots: list[dict[str, float]] = []

    def decided(self, rec: ExperimentRecord, status: dict[str, Any]) -> None:
        self.decided_at.append(time.perf_counter())
        self.snapshots.append(dict(TIMERS))


_DEPTH = threading.local()


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Time only the outermost timed call: ledger methods call each other (and git helpers
    nest), and counting both levels would make the parts add up to more than the total."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_DEPTH, "n", 0)
        _DEPTH.n = depth + 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _DEPTH.n = depth
            if depth == 0:
                TIMERS[name] += time.perf_counter() - t0

    return wrapper


def instrument() -> None:
    ws_mod.git = timed("git", ws_mod.git)
    local_mod.run_command = timed("run (process start + `echo`)", local_mod.run_command)
    for method in (
        "add_proposed",
        "set_state",
        "decide",
        "add_measurement",
        "set_meta",
        "write_tsv",
        "records",
        "get",
        "last_keep",
        "find_hash",
        "counts",
    ):
        setattr(ledger_mod.Ledger, method, timed("ledger", getattr(ledger_mod.Ledger, method)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=200)
    args = ap.parse_args()

    import sys

    sys.modules["bench"] = sys.modules[__name__]
    instrument()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "knob.py").write_text("X = 0\n")
        (repo / "overnight.toml").write_text(CONFIG)
        for cmd in (
            ["init", "-q"],
            ["add", "-A"],
            ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init"],
        ):
            subprocess.run(["git", *cmd], cwd=repo, check=True)
        study = Study.open(repo / "overnight.toml", cwd=repo)
        view = Stamps()
        Loop(study, RunOptions(experiments=args.experiments), view).run()

    per_exp: list[float] = []
    parts: dict[str, list[float]] = defaultdict(list)
    for i in range(2, len(view.decided_at)):  # skip the baseline and the first (warm-up)
        total = view.decided_at[i] - view.decided_at[i - 1]
        before, after = view.snapshots[i - 1], view.snapshots[i]
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        run = delta.get("run (process start + `echo`)", 0.0)
        prop = delta.get("proposer", 0.0)
        per_exp.append((total - prop) * 1000)
        for k, v in delta.items():
            if k != "proposer":
                parts[k].append(v * 1000)
        parts["other (python)"].append((total - sum(delta.values())) * 1000)
        del run

    med = statistics.median(per_exp)
    print(f"## Controller overhead per experiment ({len(per_exp)} experiments)\n")
    print("| part | median ms | p90 ms |")
    print("|---|---:|---:|")
    for k in sorted(parts):
        vals = sorted(parts[k])
        print(f"| {k} | {statistics.median(vals):.1f} | {vals[int(len(vals) * 0.9)]:.1f} |")
    p90 = sorted(per_exp)[int(len(per_exp) * 0.9)]
    print(f"| **total (excl. proposer)** | **{med:.1f}** | {p90:.1f} |")
    print(f"\ngoal: <= 50 ms median -> {'met' if med <= 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
