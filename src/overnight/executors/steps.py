"""Running a task's commands in order: the one loop every executor uses (locally and on a
Ray node), so budgets, log names and the stop-at-first-failure rule cannot drift apart."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from overnight.executors.base import RunTask, StepFacts
from overnight.isolation.runner import auto_memory_limit, run_command

# label -> the argv prefix confining that command (the sandbox), as a context manager.
Wrap = Callable[[str], contextlib.AbstractContextManager[list[str]]]


def _no_wrap(_label: str) -> contextlib.AbstractContextManager[list[str]]:
    return contextlib.nullcontext([])


def run_steps(
    task: RunTask,
    cwd: Path,
    env: dict[str, str],
    log_dir: Path,
    *,
    stop: threading.Event | None = None,
    wrap: Wrap = _no_wrap,
    between: Callable[[str], None] | None = None,
    max_rss: int | Literal["auto"] | None = "auto",
) -> list[StepFacts]:
    """Run `task.commands` in `cwd`, each under the budget and the memory limit `max_rss`
    ("auto": this machine's default, None: none); stop at the first failure. `between(label)` runs
    before every command but the first: it brings the worktree back to the candidate
    commit, so that nothing the experiment left there reaches the trusted evaluator."""
    limit = auto_memory_limit() if max_rss == "auto" else max_rss
    steps: list[StepFacts] = []
    for i, (label, command) in enumerate(task.commands):
        if i and between is not None:
            between(label)
        name = task.log_name(label)
        with wrap(label) as prefix:
            out = run_command(
                command, cwd=cwd, env=env, budget_s=task.budget_s,
                stdout_path=log_dir / f"{name}.stdout", stderr_path=log_dir / f"{name}.stderr",
                marker=f"{task.marker}:{label}", stop=stop, wrap=prefix, max_rss=limit,
            )  # fmt: skip
        step = StepFacts(
            label=label, exit_code=out.exit_code, timed_out=out.timed_out,
            interrupted=out.interrupted, wall_s=out.wall_s, stdout=str(out.stdout_path),
            stderr=str(out.stderr_path), output_tail=out.output_tail,
            killed_because=out.killed_because, notes=out.notes,
        )  # fmt: skip
        steps.append(step)
        if step.failed:
            break
    return steps
