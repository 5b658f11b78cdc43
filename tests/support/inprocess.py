"""In-process studies: a real git repo and ledger, the real loop and pipeline, runs played
by the FakeExecutor (deterministic, no processes, no timing)."""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import make_repo

from overnight.executors.base import RunTask
from overnight.executors.fake import FakeExecutor, FakeRun
from overnight.experiment.loop import Loop, RunOptions, RunSummary
from overnight.store.study import Study

Behave = Callable[[RunTask, dict[str, str]], FakeRun]


def study_toml(metric: str = "", extra: str = "", name: str = "score",
               proposer: str = "support.noop:CommentProposer") -> str:  # fmt: skip
    return textwrap.dedent(f"""\
        [study]
        name = "t"
        surface = ["score.py"]
        budget = "10s"

        [run]
        command = "python score.py"

        [metric]
        name = "{name}"
        goal = "minimize"
        """) + metric + f'\n[proposer]\nkind = "{proposer}"\n' + extra  # fmt: skip


def make_study(root: Path, toml: str, score: str = "X = 10\n") -> Study:
    repo = make_repo(root, {"score.py": score, "overnight.toml": toml})
    return Study.open(cwd=repo)


def run_study(study: Study, behave: Behave, n: int, **options: Any) -> tuple[Loop, RunSummary]:
    """Run `n` experiments serially (no look-ahead) with `behave` playing every run."""
    executor = FakeExecutor(study.ws, study.cfg.study.surface, behave)
    loop = Loop(study, RunOptions(experiments=n, lookahead=0, **options), executor=executor)
    return loop, loop.run()


def x_of(files: dict[str, str]) -> float:
    """The `X = <number>` of score.py."""
    return float(files["score.py"].split("X = ")[1].split()[0])


def exact_with_holdout(task: RunTask, files: dict[str, str]) -> FakeRun:
    """Runs that print X exactly; the holdout command prints `acc: 0.9`."""
    if task.kind == "holdout":
        return FakeRun(stdout="acc: 0.9\n")
    return FakeRun(stdout=f"score: {x_of(files)}\n")


def noisy(sd: float, metric: str = "score", offset_sd: float = 0.0, seed: int = 0) -> Behave:
    """Runs that print X plus seeded Gaussian noise (`sd` per run). `offset_sd`: noise shared
    by all the runs of one experiment (what repeats cannot see: a per-build effect)."""

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        rng = random.Random(f"{seed}:{task.experiment}:{task.kind}:{task.repeat}")
        offset = random.Random(f"{seed}:offset:{task.experiment}").gauss(0, offset_sd)
        return FakeRun(stdout=f"{metric}: {x_of(files) + offset + rng.gauss(0, sd)!r}\n")

    return behave
