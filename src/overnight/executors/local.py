"""Runs on this machine, one git worktree per slot."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from overnight.executors.base import BaseExecutor, RunFacts, RunTask
from overnight.executors.steps import run_steps
from overnight.git.workspace import Workspace
from overnight.isolation import safefs
from overnight.isolation.integrity import ProtectedFiles, outside_surface
from overnight.isolation.sandbox import Sandbox


class LocalExecutor(BaseExecutor):
    def __init__(
        self,
        workspace: Workspace,
        surface: list[str],
        protected: ProtectedFiles,
        slots: int = 1,
        gpus: list[int] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.ws = workspace
        self.surface = surface
        self.protected = protected
        self.slots = slots
        self.gpus = gpus or []
        self._stop = threading.Event()
        self.sandbox = sandbox
        self._locked: list[str] | None = None

    def stop(self) -> None:
        self._stop.set()

    def run(self, task: RunTask) -> RunFacts:
        wt = self.ws.worktree(task.slot)
        keep = self.protected.files
        path = wt.checkout(task.commit, keep)
        self.protected.sync(path)
        env = dict(task.env)
        if self.gpus and isinstance(task.slot, int):
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[task.slot % len(self.gpus)])
        for d in ("OVERNIGHT_TRACE_DIR", "OVERNIGHT_ARTIFACT_DIR"):
            if d in env:
                if Path(env[d]).is_symlink():  # planted by an earlier run: never followed
                    safefs.remove(Path(env[d]))
                Path(env[d]).mkdir(parents=True, exist_ok=True)
        changed: set[str] = set()

        def reset(_label: str = "") -> None:
            # What the run changed is a fact to report; the files are put back either way,
            # and whatever it left in the worktree (untracked, ignored) is deleted. Between
            # the experiment and the trusted evaluator too: the evaluator sees the candidate
            # commit, the protected files and $OVERNIGHT_ARTIFACT_DIR, nothing else the
            # experiment wrote (a module shadowing one it imports, a forged __pycache__).
            changed.update(wt.clean(keep))
            changed.update(self.protected.changed(path))
            self.protected.sync(path)

        try:
            steps = run_steps(
                task, path, env, Path(task.exp_dir), stop=self._stop,
                wrap=lambda label: self._wrap(task, path, env, label), between=reset,
                max_rss=self.sandbox.max_rss if self.sandbox is not None else "auto",
            )  # fmt: skip
        finally:
            reset()
        return RunFacts(
            experiment=task.experiment, repeat=task.repeat, kind=task.kind, steps=steps,
            changed=sorted(changed),
            isolation=self.sandbox.describe() if self.sandbox is not None else "none",
        )  # fmt: skip

    def _wrap(
        self, task: RunTask, wt: Path, env: dict[str, str], label: str
    ) -> contextlib.AbstractContextManager[list[str]]:
        """The sandbox prefix of one command; the holdout command alone sees hidden paths."""
        if not self.sandbox:
            return contextlib.nullcontext([])
        if self._locked is None:
            # Tracked files are the same in every candidate: only surface contents change.
            tracked = outside_surface(self.ws.tracked_files(task.commit), self.surface)
            self._locked = sorted(set(tracked) | set(self.protected.files))
        writable = [Path(env[d]) for d in ("OVERNIGHT_TRACE_DIR", "OVERNIGHT_ARTIFACT_DIR")
                    if d in env]  # fmt: skip
        return self.sandbox.wrap(
            worktree=wt, writable=writable, locked=self._locked, trusted=label == "holdout"
        )
