"""One candidate's path (experiment/pipeline.py), in-process: a real git repo and ledger,
the loop and scheduler as they run at night, and the FakeExecutor instead of processes, so
every stage can be driven deterministically (no timing, no sleeps)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import git, make_repo

from overnight.executors.base import RunTask
from overnight.executors.fake import FakeExecutor, FakeRun
from overnight.experiment.loop import Loop, RunOptions, RunSummary
from overnight.experiment.view import View
from overnight.judging.replay import verify_ledger
from overnight.judging.verdict import VerdictRecord
from overnight.proposers.base import BaseProposer, Context
from overnight.store.records import ExperimentRecord, Proposal
from overnight.store.study import Study

CONFIG = """\
[study]
name = "p"
surface = ["knobs.py"]
budget = "10s"

[run]
command = "python knobs.py"

[metric]
name = "loss"
goal = "minimize"
{metric}
[proposer]
kind = "tune"
{extra}"""

KNOBS = "A = 3.0\n\nB = 10\n"


def knobs(a: float = 3.0, b: float = 10) -> str:
    return f"A = {a}\n\nB = {b}\n"


def loss_of(files: dict[str, str]) -> float:
    values = dict(re.findall(r"^(\w+) = (\S+)$", files["knobs.py"], re.M))
    return float(values["A"]) + float(values["B"])


def scored(task: RunTask, files: dict[str, str]) -> FakeRun:
    return FakeRun(stdout=f"step: 1\nloss: {loss_of(files)}\n")


class ListProposer(BaseProposer):
    """Proposes `steps` in order: surfaces, or callables of the context."""

    name = "list"

    def __init__(self, steps: list[Any]) -> None:
        self.steps = list(steps)
        self.contexts: list[Context] = []
        self.observed: list[ExperimentRecord] = []

    def propose(self, ctx: Context) -> Proposal:
        self.contexts.append(ctx)
        step = self.steps.pop(0) if self.steps else knobs(ctx.seed, len(self.contexts))
        if callable(step):
            step = step(ctx)
        if isinstance(step, Proposal):
            return step
        return Proposal(files={"knobs.py": step}, description=f"try {len(self.contexts)}")

    def observe(self, rec: ExperimentRecord) -> None:
        self.observed.append(rec)


class Decisions(View):
    """Records verdicts; `on_decided` lets a test release a run that waits for one."""

    def __init__(self, on_decided: Callable[[ExperimentRecord], None] | None = None) -> None:
        self.records: list[ExperimentRecord] = []
        self.messages: list[str] = []
        self.on_decided = on_decided

    def decided(self, rec: ExperimentRecord, status: dict[str, Any]) -> None:
        self.records.append(rec)
        if self.on_decided:
            self.on_decided(rec)

    def message(self, text: str) -> None:
        self.messages.append(text)


def study_at(tmp_path: Path, metric: str = "", extra: str = "",
             files: dict[str, str] | None = None) -> Study:  # fmt: skip
    repo = make_repo(tmp_path / "repo", {
        "knobs.py": KNOBS, "helper.txt": "locked\n",
        "overnight.toml": CONFIG.format(metric=metric, extra=extra), **(files or {}),
    })  # fmt: skip
    return Study.open(repo / "overnight.toml", cwd=repo)


def night(study: Study, proposer: BaseProposer, behave: Any = scored, *, n: int,
          slots: int = 1, lookahead: int = 0, view: View | None = None,
          per_command: Any = None) -> tuple[RunSummary, FakeExecutor]:  # fmt: skip
    executor = FakeExecutor(study.ws, ["knobs.py"], behave, slots=slots, per_command=per_command)
    loop = Loop(study, RunOptions(experiments=n, lookahead=lookahead), view or Decisions(),
                executor=executor, proposer=proposer)  # fmt: skip
    return loop.run(), executor


def ledger_rows(study: Study) -> list[ExperimentRecord]:
    ledger = study.open_ledger()
    try:
        return ledger.records()
    finally:
        ledger.close()


def measurement_kinds(study: Study, n: int) -> list[str]:
    ledger = study.open_ledger()
    try:
        return [m["kind"] for m in ledger.measurements(n)]
    finally:
        ledger.close()


def verified(study: Study) -> None:
    """`overnight verify` replays every verdict the pipeline made and agrees."""
    ledger = study.open_ledger()
    try:
        report = verify_ledger(ledger)
    finally:
        ledger.close()
    assert report.ok, report.as_dict()
    assert report.checked >= 1


def test_each_stage_gives_its_status_and_only_keeps_move_the_branch(tmp_path: Path) -> None:
    study = study_at(tmp_path)
    proposer = ListProposer([
        knobs(2.0),                                      # better: keep
        knobs(2.0, 11),                                  # worse: discard
        knobs(2.0),                                      # same surface as the best: invalid
        Proposal(files={"helper.txt": "x"}, description="outside"),  # rejected
        Proposal(files={}, description="bad", invalid_reason="edit did not apply"),
        knobs(1.0, 5),                                   # keep
    ])  # fmt: skip
    summary, executor = night(study, proposer, n=6)
    assert summary.ran == 6 and summary.kept == 2
    rows = ledger_rows(study)
    assert [r.status for r in rows] == [
        "keep", "keep", "discard", "invalid", "rejected", "invalid", "keep"]
    assert rows[2].value == 13.0 and "empty change" in (rows[3].reason or "")
    assert "helper.txt" in (rows[4].reason or "")
    assert "edit did not apply" in (rows[5].reason or "")
    # Only candidates that could run were given to the executor: baseline + 3.
    assert [t.experiment for t in executor.tasks] == [0, 1, 2, 6]
    # The branch holds exactly the keeps, each the child of the previous one.
    chain = git(study.root, "rev-list", "--first-parent", "--reverse", "overnight/p").split()
    assert chain == [rows[0].commit, rows[1].commit, rows[6].commit]
    # Every candidate that was committed stays reachable under its ref.
    for r in rows:
        if r.commit:
            assert git(study.root, "rev-parse", f"refs/overnight/p/{r.experiment}") == r.commit
    # The proposer learned every verdict, and its next context carried the history.
    assert [r.experiment for r in proposer.observed] == [1, 2, 3, 4, 5, 6]
    assert [r.experiment for r in proposer.contexts[-1].history][-1] == 5
    verified(study)


def test_failures_are_never_kept(tmp_path: Path) -> None:
    study = study_at(tmp_path)
    outcomes = iter([
        FakeRun(stdout="loss: 0.5\n", exit_code=3),            # crash despite a good number
        FakeRun(stdout="loss: 0.1\n", timed_out=True),         # timeout
        FakeRun(stdout="loss: nan\n"),                          # non-finite: crash
        FakeRun(stdout="nothing here\n"),                       # missing metric: crash
        FakeRun(stdout="loss: 0.2\n", changed=["helper.txt"]),  # touched a locked file
    ])  # fmt: skip

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        return scored(task, files) if task.experiment == 0 else next(outcomes)

    summary, _ = night(study, ListProposer([knobs(a) for a in (1, 2, 3, 4, 5)]), behave, n=5)
    rows = ledger_rows(study)
    assert [r.status for r in rows[1:]] == ["crash", "timeout", "crash", "crash", "rejected"]
    assert "code 3" in (rows[1].reason or "") and "helper.txt" in (rows[5].reason or "")
    assert all(r.value is None for r in rows[1:])
    assert summary.kept == 0
    assert git(study.root, "rev-parse", "overnight/p") == rows[0].commit
    verified(study)


def test_check_gate_confirm_and_holdout(tmp_path: Path) -> None:
    extra = '[check]\ncommand = "lint"\n\n[holdout]\ncommand = "hold"\nname = "acc"\n' \
            'goal = "maximize"\n'  # fmt: skip
    study = study_at(tmp_path, metric="confirm = true\n", extra=extra)
    confirm_fails = {2}

    def per_command(task: RunTask, label: str, files: dict[str, str]) -> FakeRun:
        if label == "check":
            return FakeRun(exit_code=1, stderr="E501 line too long") if "B = 7" in \
                files["knobs.py"] else FakeRun()  # fmt: skip
        raise AssertionError(label)

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        if task.kind == "check":
            return per_command(task, "check", files)
        if task.kind == "holdout":
            # The holdout likes A near 2: experiment 3 (A = 0.5) overfits the search metric.
            return FakeRun(stdout=f"acc: {10 - abs(loss_of(files) - 12.0)}\n")
        if task.kind == "confirm" and task.experiment in confirm_fails:
            return FakeRun(stdout="loss: 99\n")
        return scored(task, files)

    proposer = ListProposer([knobs(2.0), knobs(1.0), knobs(0.5, 5), knobs(2.0, 7)])
    night(study, proposer, behave, n=4)
    rows = ledger_rows(study)
    assert [r.status for r in rows[1:]] == ["keep", "rejected", "rejected", "invalid"]
    assert "confirm" in (rows[2].reason or "")
    assert "holdout" in (rows[3].reason or "")
    assert "[check] failed" in (rows[4].reason or "") and "E501" in (rows[4].reason or "")
    verified(study)


def test_a_winner_beaten_to_the_branch_is_carried_over_and_measured_again(
    tmp_path: Path,
) -> None:
    """Two slots, two winners from one parent, on different lines. The slow one's run is
    held until the fast one is decided: it then beat a best that moved, so it is carried
    onto the new best, measured there, and kept on top of it."""
    study = study_at(tmp_path)
    fast_decided = threading.Event()

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        if task.experiment == 1 and task.kind == "run" and "A = 1.0" in files["knobs.py"] \
                and "B = 10" in files["knobs.py"]:  # fmt: skip
            assert fast_decided.wait(30), "the fast experiment was never decided"
        return scored(task, files)

    view = Decisions(lambda rec: fast_decided.set() if rec.experiment == 2 else None)
    proposer = ListProposer([knobs(1.0, 10), knobs(3.0, 8)])
    night(study, proposer, behave, n=2, slots=2, lookahead=2, view=view)
    rows = {r.experiment: r for r in ledger_rows(study)}
    assert rows[2].status == "keep" and rows[2].value == 11.0
    assert rows[1].status == "keep" and rows[1].value == 9.0  # A = 1.0 on top of B = 8
    assert rows[1].parent == rows[2].commit
    assert any("re-measuring" in m for m in view.messages)
    assert any(k.startswith("stale-") for k in measurement_kinds(study, 1))
    verified(study)


def test_racing_winners_on_the_same_line_give_one_keep(tmp_path: Path) -> None:
    study = study_at(tmp_path)
    fast_decided = threading.Event()

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        if task.experiment == 1 and "A = 1.0" in files["knobs.py"]:
            assert fast_decided.wait(30), "the fast experiment was never decided"
        return scored(task, files)

    view = Decisions(lambda rec: fast_decided.set() if rec.experiment == 2 else None)
    night(study, ListProposer([knobs(1.0), knobs(2.0)]), behave, n=2, slots=2, lookahead=2,
          view=view)  # fmt: skip
    rows = {r.experiment: r for r in ledger_rows(study)}
    assert rows[2].status == "keep"
    assert rows[1].status == "discard" and "does not merge" in (rows[1].reason or "")
    verified(study)


def test_a_proposal_made_on_an_older_best_is_carried_before_it_runs(tmp_path: Path) -> None:
    """Run-ahead: proposal 2 is made while experiment 1 runs, on the baseline. Experiment 1
    is kept, so proposal 2 is carried onto it before running; the record says how."""
    study = study_at(tmp_path)
    first_running, second_made = threading.Event(), threading.Event()

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        if task.experiment == 1:
            first_running.set()
            assert second_made.wait(30), "the next proposal was never asked for"
        return scored(task, files)

    def second(ctx: Context) -> Proposal:
        assert first_running.wait(30)
        second_made.set()
        return Proposal(files={"knobs.py": "A = 3.0\n\nB = 10\nC = 0\n"}, description="add C")

    proposer = ListProposer([knobs(2.0), second])
    night(study, proposer, behave, n=2, lookahead=1)
    rows = ledger_rows(study)
    assert proposer.contexts[1].best_commit == rows[0].commit  # made on the baseline
    assert rows[1].status == "keep" and rows[2].parent == rows[1].commit
    assert git(study.root, "show", f"{rows[2].commit}:knobs.py") == "A = 2.0\n\nB = 10\nC = 0"
    record = VerdictRecord.from_dict(rows[2].meta["verdict"])
    assert record.transfer is not None and record.transfer["how"] in ("proposer", "merge")


def test_a_proposer_that_raises_gives_an_invalid_experiment(tmp_path: Path) -> None:
    study = study_at(tmp_path)

    def broken(ctx: Context) -> Proposal:
        raise RuntimeError("model unreachable")

    night(study, ListProposer([broken, knobs(2.0)]), n=2)
    rows = ledger_rows(study)
    assert rows[1].status == "invalid" and "model unreachable" in (rows[1].reason or "")
    assert rows[2].status == "keep"


@pytest.mark.parametrize("repeats", [1, 3])
def test_repeats_are_all_run_and_the_value_is_their_mean(tmp_path: Path, repeats: int) -> None:
    study = study_at(tmp_path, metric=f"repeats = {repeats}\n")

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        return FakeRun(stdout=f"loss: {loss_of(files) + 0.01 * task.repeat}\n")

    _, executor = night(study, ListProposer([knobs(1.0)]), behave, n=1)
    runs = [(t.experiment, t.repeat) for t in executor.tasks if t.kind == "run"]
    assert runs == [(n, r) for n in (0, 1) for r in range(repeats)]
    rows = ledger_rows(study)
    assert rows[1].value == pytest.approx(11.0 + 0.01 * (repeats - 1) / 2)
    verified(study)


def test_a_proposal_still_being_made_when_the_night_ends_is_dropped(tmp_path: Path) -> None:
    """Run-ahead asks for one more proposal than the night runs. When the last experiment
    is decided, that request is abandoned: the loop returns with no feeder left that could
    write to the records it has closed, and the late answer is recorded nowhere."""
    WAIT = 30  # seconds a forced ordering may take before the test fails (never reached)
    release = threading.Event()
    asked = threading.Event()

    def late(ctx: Context) -> str:
        asked.set()
        release.wait(WAIT)
        return knobs(9.0)

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        if task.experiment == 2:
            asked.wait(WAIT)  # the third proposal is being made while the last run runs
        return scored(task, files)

    study = study_at(tmp_path)
    proposer = ListProposer([knobs(2.0), knobs(3.0, 12), late])
    summary, _ = night(study, proposer, behave, n=2, lookahead=1)
    try:
        assert asked.is_set() and summary.ran == 2
        assert not [t.name for t in threading.enumerate()
                    if t.name.startswith("overnight-feeder")]  # fmt: skip
    finally:
        release.set()
    assert [r.experiment for r in ledger_rows(study)] == [0, 1, 2]
    verified(study)
