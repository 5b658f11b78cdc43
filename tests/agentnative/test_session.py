"""The session behind `overnight mcp`, in-process with the fake executor: the desk between
the tools and the loop, and the tools' meaning without the wire format."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import make_repo, score_config

from overnight.agentnative.desk import SUBMISSION_KEY, SubmissionDesk
from overnight.agentnative.session import AgentSession
from overnight.errors import UsageError
from overnight.executors.fake import FakeExecutor, FakeRun
from overnight.experiment.loop import RunOptions
from overnight.store.records import ExperimentRecord, Proposal
from overnight.store.study import Study


def src(x: float) -> str:
    return f"X = {x}\nprint('score: {x}')\n"


def record(n: int, sid: str, status: str = "keep") -> ExperimentRecord:
    return ExperimentRecord(n, status, 1.0, {}, None, None, "d", "r", 0.1, "mcp",
                            meta={SUBMISSION_KEY: sid})  # fmt: skip


# == the desk =====================================================================================


def test_desk_takes_in_order_and_refuses_beyond_its_slots() -> None:
    desk = SubmissionDesk(lambda: 2)
    a = desk.hand_in(Proposal(files={"a": "1"}, description="a"))
    b = desk.hand_in(Proposal(files={"a": "2"}, description="b"))
    assert a.proposal.meta[SUBMISSION_KEY] == a.id != b.id
    with pytest.raises(UsageError, match="all 2 experiment slot"):
        desk.hand_in(Proposal(files={"a": "3"}, description="c"))
    assert desk.take() is a and desk.take() is b and desk.ready.is_set()
    desk.numbered(7, a.id)
    assert desk.wait(a, numbered=True, timeout=0) and not desk.wait(a, numbered=False, timeout=0)
    with pytest.raises(UsageError, match=r"experiment 7\)"):
        desk.hand_in(Proposal(files={"a": "3"}, description="c"))
    desk.decided(record(7, a.id))
    assert a.record is not None and a.done and desk.outstanding() == 1
    desk.hand_in(Proposal(files={"a": "3"}, description="c"))  # a slot is free again


def test_desk_end_tells_each_open_submission_what_became_of_it() -> None:
    desk = SubmissionDesk(lambda: 3)
    running = desk.hand_in(Proposal(files={}, description="running"))
    queued = desk.hand_in(Proposal(files={}, description="queued"))
    desk.numbered(4, running.id)
    waiter = threading.Thread(target=desk.wait, args=(queued, False, 30))
    waiter.start()
    desk.end("stopped by SIGTERM")
    waiter.join(5)
    assert not waiter.is_alive()
    assert "experiment 4 is left undecided and is re-run" in running.ended
    assert "ended before it ran" in queued.ended
    with pytest.raises(UsageError, match="session is over: stopped by SIGTERM"):
        desk.hand_in(Proposal(files={}, description="late"))
    desk.decided(record(9, "someone else's"))  # a resumed experiment: nobody waits for it


# == the session ==================================================================================


@pytest.fixture
def study(tmp_path: Path) -> Study:
    extra = '\n[holdout]\ncommand = "python heldout.py"\nname = "heldout"\ngoal = "maximize"\n'
    root = make_repo(tmp_path / "repo", {
        "score.py": src(10), "overnight.toml": score_config(extra=extra), "program.md": "Go.\n",
        "heldout.py": "",
    })  # fmt: skip
    return Study.open(root / "overnight.toml")


def fake(study: Study, slots: int = 1) -> FakeExecutor:
    def behave(task, files):  # type: ignore[no-untyped-def]
        if task.kind == "holdout":
            return FakeRun(stdout="heldout: 1\n")
        x = float(files["score.py"].split("X = ")[1].split()[0])
        return FakeRun(stdout=f"score: {x}\nheldout: 99\n")

    return FakeExecutor(study.ws, ["score.py"], behave, slots=slots)


def start(study: Study, **opts: object) -> tuple[AgentSession, threading.Thread]:
    session = AgentSession(study, RunOptions(**opts), executor=fake(study))  # type: ignore[arg-type]
    thread = threading.Thread(target=session.run)
    thread.start()
    return session, thread


def verdict(session: AgentSession, files: dict[str, str], description: str = "d") -> dict:
    sub = session.submit(files, description)
    assert session.desk.wait(sub, numbered=False, timeout=60)
    return session.result(sub)


def test_a_session_judges_submissions_like_any_proposal(study: Study) -> None:
    session, thread = start(study)
    try:
        assert verdict(session, {"score.py": src(5)})["status"] == "keep"
        # `./x` and absolute paths inside the repository name the surface file.
        out = verdict(session, {"./score.py": src(4)})
        assert (out["experiment"], out["status"]) == (2, "keep")
        out = verdict(session, {str(study.root / "score.py"): src(6)})
        assert out["status"] == "discard"
        out = verdict(session, {"../outside.py": "x", "score.py": src(1)})
        assert out["status"] == "rejected" and "../outside.py" in out["reason"]
        assert verdict(session, {"score.py": src(4)})["status"] == "invalid"  # a duplicate

        view = session.study_view()
        assert view["best"]["experiment"] == 2 and view["best"]["surface"] == {"score.py": src(4)}
        assert "heldout" not in str(view)  # printed by the runs, but it is the holdout's name
        shown = session.show(2)
        assert "heldout" not in shown["metrics"]
        assert all("holdout" not in m["kind"] for m in shown["measurements"])
        assert "holdout" not in shown["meta"]["verdict"]
        assert "heldout" in study.show(2)["metrics"]  # the CLI, for the user, shows it all
    finally:
        session.stop()
        thread.join(30)
    assert not thread.is_alive() and session.summary is not None


def test_stop_rules_refuse_new_submissions_and_end_the_loop(study: Study) -> None:
    session, thread = start(study, patience=2)
    try:
        assert verdict(session, {"score.py": src(11)})["status"] == "discard"
        assert verdict(session, {"score.py": src(12)})["status"] == "discard"
        with pytest.raises(UsageError, match="no keep in the last 2 experiments"):
            session.submit({"score.py": src(1)}, "too late")
        thread.join(30)
        assert not thread.is_alive() and session.finished.is_set()
        assert session.study_view()["session"]["state"] == "over"
    finally:
        session.stop()
        thread.join(30)


def test_a_result_notes_when_the_best_moved_since_the_agent_looked(study: Study) -> None:
    session = AgentSession(study, RunOptions(), executor=fake(study, slots=2))
    thread = threading.Thread(target=session.run)
    thread.start()
    try:
        assert verdict(session, {"score.py": src(9)})["status"] == "keep"  # its own keep
        session.study_view()  # the agent looks: the best is experiment 1
        mine = session.submit({"score.py": src(30)}, "mine")
        other = session.submit({"score.py": src(8)}, "a sub-agent's")
        for sub in (mine, other):
            assert session.desk.wait(sub, numbered=False, timeout=60)
        out = session.result(mine)
        assert out["status"] == "discard" and out["best"]["experiment"] == other.experiment
        assert f"moved to experiment {other.experiment}" in out["note"]
        assert "note" not in session.result(other)
    finally:
        session.stop()
        thread.join(30)


def test_a_change_is_taken_against_the_best_the_agent_last_saw(study: Study) -> None:
    """The agent read the study at the baseline and handed two changes in without looking
    again: the second is carried onto the first one's keep, not measured as a revert of it."""
    xy = "X = 10\n# -\n# -\n# -\nY = 0\n"

    def behave(task, files):  # type: ignore[no-untyped-def]
        if task.kind == "holdout":
            return FakeRun(stdout="heldout: 1\n")
        text = files["score.py"]
        x, y = (float(text.split(f"{k} = ")[1].split()[0]) if f"{k} = " in text else 0.0
                for k in "XY")  # fmt: skip
        return FakeRun(stdout=f"score: {x + y}\n")

    session = AgentSession(study, RunOptions(),
                           executor=FakeExecutor(study.ws, ["score.py"], behave))  # fmt: skip
    thread = threading.Thread(target=session.run)
    thread.start()
    try:
        verdict(session, {"score.py": xy.replace("X = 10", "X = 9")})  # adds Y: a keep
        xy = xy.replace("X = 10", "X = 9")
        assert session.study_view()["best"]["surface"]["score.py"] == xy
        first = session.submit({"score.py": xy.replace("X = 9", "X = 7")}, "X → 7")
        assert session.desk.wait(first, numbered=False, timeout=60)
        assert first.record is not None and first.record.status == "keep"
        second = session.submit({"score.py": xy.replace("Y = 0", "Y = -2")}, "Y → -2")
        assert session.desk.wait(second, numbered=False, timeout=60)
        out = session.result(second)
        assert (out["status"], out["value"]) == ("keep", 5.0)  # X = 7 and Y = -2
    finally:
        session.stop()
        thread.join(30)
