"""End-to-end: a scripted coding agent drives a study through `overnight mcp`, with the MCP
SDK's own client over stdio (the server is the real `overnight mcp` subprocess)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from conftest import git, make_repo, overnight_env, run_cli

pytest.importorskip("mcp")
from mcp import ClientSession  # noqa: E402
from support.mcp_client import (  # noqa: E402
    agent,
    call,
    decided,
    lines,
    ready,
    refused,
    server_process,
    until,
)

# X and Y sit far apart so that two concurrent changes merge; a run holds while $HOLD_FILE
# exists (and writes its pid), so a test decides when a run may end.
BASE = """\
import os, time
X = 10
# -
# -
# -
Y = 0
if os.path.exists(os.environ.get("HOLD_FILE", "")):
    open(os.environ["HOLD_PIDS"], "a").write(f"{os.getpid()}\\n")
    while os.path.exists(os.environ["HOLD_FILE"]):
        time.sleep(0.05)
print(f"score: {X + Y}")
"""

CONFIG = """\
[study]
name = "t"
surface = ["score.py"]
budget = "30s"

[run]
command = "python score.py"

[metric]
name = "score"
goal = "minimize"
"""

HOLDOUT = """
[holdout]
command = "python heldout.py"
name = "heldout"
goal = "maximize"
"""


def score(x: int = 10, y: int = 0) -> str:
    return BASE.replace("X = 10", f"X = {x}").replace("Y = 0", f"Y = {y}")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {
        "score.py": BASE, "overnight.toml": CONFIG + HOLDOUT, "program.md": "Make X small.\n",
        "helper.txt": "locked\n", "heldout.py": "print('heldout: 1')\n",
    })  # fmt: skip


@pytest.fixture
def hold(tmp_path: Path) -> dict[str, str]:
    return {"HOLD_FILE": str(tmp_path / "hold"), "HOLD_PIDS": str(tmp_path / "pids")}


async def held_experiment(s: ClientSession, hold: dict[str, str]) -> None:
    """Experiment 1 (X 10 → 7), running and held until the hold file goes."""
    await ready(s)
    Path(hold["HOLD_FILE"]).write_text("")
    started = await call(s, "submit", files={"score.py": score(7)}, description="X 10 → 7",
                         wait=False)  # fmt: skip
    assert started == {"experiment": 1}
    await until(lambda: lines(Path(hold["HOLD_PIDS"])) == 1)


def cli_json(repo: Path, *args: str) -> Any:
    out = run_cli(repo, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def verify(repo: Path) -> None:
    out = run_cli(repo, "verify")
    assert out.returncode == 0, out.stdout + out.stderr


# == a scripted session ============================================================================


def test_agent_drives_a_study_keep_discard_rejected(repo: Path) -> None:
    notes: list[str] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        notes.append(message or "")

    async def scenario() -> dict:
        async with agent(repo) as s:
            tools = await s.list_tools()
            assert [t.name for t in tools.tools] == ["study", "submit", "show", "stop"]
            st = await ready(s)
            assert st["triplet"]["surface"] == ["score.py"]
            assert st["triplet"]["metric"]["name"] == "score" and st["triplet"]["budget_s"] == 30
            assert st["instructions"] == "Make X small.\n"
            assert st["best"] == {"experiment": 0, "value": 10.0, "commit": st["best"]["commit"],
                                  "surface": {"score.py": BASE}}  # fmt: skip
            assert "heldout" not in json.dumps(st)  # the holdout is never shown to the agent

            win = await call(s, "submit", progress, files={"score.py": score(5)},
                             description="X 10 → 5", hypothesis="a smaller X scores lower")
            assert (win["experiment"], win["status"], win["value"]) == (1, "keep", 5.0)
            assert notes and all(n for n in notes)  # progress while it waited
            # Exactly what was submitted is measured: a change of the best of the moment it
            # arrived (here it undoes X and moves Y), not of an older best it was queued on.
            lose = await call(s, "submit", files={"score.py": score(x=10, y=-1)},
                              description="X back to 10, Y → -1")  # fmt: skip
            assert (lose["experiment"], lose["status"], lose["value"]) == (2, "discard", 9.0)
            assert "not better" in lose["reason"]
            out = await call(s, "submit", files={"score.py": score(3), "helper.txt": "x\n"},
                             description="X → 3 and a locked file")  # fmt: skip
            assert (out["experiment"], out["status"]) == (3, "rejected")
            assert "outside the surface: helper.txt" in out["reason"]

            # Refused at the door, nothing recorded: unknown or mistyped arguments.
            text = await refused(s, "submit", files={"score.py": score(4)}, description="x",
                                 branch="main")  # fmt: skip
            assert "unknown argument 'branch'" in text
            assert "missing argument 'description'" in await refused(
                s, "submit", files={"score.py": score(4)})
            assert "experiment" in await refused(s, "show", experiment="1")
            assert "unknown argument" in await refused(s, "stop", force=True)
            assert "unknown tool" in await refused(s, "set_config", metric="x")

            broken = "print('oops')\nraise SystemExit(3)\n"
            crash = await call(s, "submit", files={"score.py": broken}, description="breaks it")
            assert (crash["experiment"], crash["status"], crash["value"]) == (4, "crash", None)

            # wait=false: only the number, then poll with show. An absolute path is accepted.
            quick = await call(s, "submit", files={str(repo / "score.py"): score(4)},
                               description="X → 4", wait=False)  # fmt: skip
            assert quick == {"experiment": 5}
            assert (await decided(s, 5))["status"] == "keep"

            st = await call(s, "study")
            assert [(r["experiment"], r["status"]) for r in st["history"]] == [
                (0, "keep"), (1, "keep"), (2, "discard"), (3, "rejected"), (4, "crash"),
                (5, "keep")]  # fmt: skip
            assert st["history"][1]["hypothesis"] == "a smaller X scores lower"
            assert st["best"]["experiment"] == 5 and st["best"]["surface"]["score.py"] == score(4)
            assert "experiment 4 run.stdout" in st["last_crash_log"]
            assert "oops" in st["last_crash_log"]
            shown = await call(s, "show", experiment=1)

            stopped = await call(s, "stop")
            assert stopped["stopped"] and stopped["status"]["best"]["experiment"] == 5
            assert stopped["reason"] == "stopped by the agent (stop())"
            assert "heldout" not in json.dumps(stopped)
            assert "session is over" in await refused(s, "submit", files={"score.py": score(2)},
                                                      description="too late")  # fmt: skip
            st = await call(s, "study")  # still answers after stop
            assert st["session"]["state"] == "over"
            return shown

    shown = anyio.run(scenario)
    # The same record as `overnight show 1 --json`, less the holdout.
    cli = cli_json(repo, "show", "1")
    assert any("holdout" in m["kind"] for m in cli["measurements"])
    assert "holdout" in cli["meta"]["verdict"]
    cli["measurements"] = [m for m in cli["measurements"] if "holdout" not in m["kind"]]
    del cli["meta"]["verdict"]["holdout"]
    assert shown == cli

    log = cli_json(repo, "log")
    assert [r["status"] for r in log] == ["keep", "keep", "discard", "rejected", "crash", "keep"]
    assert {r["proposer"] for r in log[1:]} == {"mcp"}
    assert git(repo, "rev-parse", "overnight/t") == log[5]["commit"]
    assert git(repo, "show", "overnight/t:helper.txt") == "locked"
    assert "Overnight-Experiment: 5" in git(repo, "log", "-1", "--format=%B", "overnight/t")
    verify(repo)
    out = run_cli(repo, "finish", "--json")  # the morning review, as for any study
    assert out.returncode == 0, out.stderr
    assert git(repo, "show", "overnight/t-final:score.py") == score(4).strip()


def test_concurrent_submits_up_to_the_slots(repo: Path, hold: dict[str, str]) -> None:
    pids, hold_file = Path(hold["HOLD_PIDS"]), Path(hold["HOLD_FILE"])

    async def scenario() -> dict:
        results: dict[str, dict] = {}
        async with agent(repo, hold, "--workers", "2") as s:
            st = await ready(s)
            assert st["session"]["slots"] == 2
            hold_file.write_text("")

            async def one(key: str, files: dict[str, str], description: str) -> None:
                results[key] = await call(s, "submit", files=files, description=description)

            async with anyio.create_task_group() as tg:
                tg.start_soon(one, "x", {"score.py": score(x=7)}, "X 10 → 7")
                tg.start_soon(one, "y", {"score.py": score(y=-2)}, "Y 0 → -2")
                await until(lambda: lines(pids) == 2)  # both run at once
                st = await call(s, "study")
                assert sorted(r["experiment"] for r in st["running"]) == [1, 2]
                assert st["left"]["free_slots"] == 0
                text = await refused(s, "submit", files={"score.py": score(x=1)},
                                     description="a third")  # fmt: skip
                assert "slot(s) are taken" in text
                hold_file.unlink()
            st = await call(s, "study")
        return {"results": results, "study": st}

    out = anyio.run(scenario)
    results = out["results"]
    assert sorted(r["experiment"] for r in results.values()) == [1, 2]
    # Both are kept: the second to finish is carried onto the first one's keep and re-measured.
    assert {r["status"] for r in results.values()} == {"keep"}
    assert out["study"]["best"]["value"] == 5.0
    assert out["study"]["best"]["surface"]["score.py"] == score(x=7, y=-2)
    log = cli_json(repo, "log")
    assert [r["experiment"] for r in log] == [0, 1, 2]
    verify(repo)


def test_kill9_of_the_server_mid_experiment_then_resume(repo: Path, hold: dict[str, str]) -> None:
    pids, hold_file = Path(hold["HOLD_PIDS"]), Path(hold["HOLD_FILE"])

    async def first() -> None:
        try:
            async with agent(repo, hold) as s:
                await held_experiment(s, hold)
                server = server_process()
                os.kill(server.pid, signal.SIGKILL)
                server.wait(10)
                await anyio.sleep(0.2)
        except Exception:  # the client sees its server die; that is the point
            pass

    anyio.run(first)
    orphan = int(pids.read_text().split()[0])
    # The run dies with its server (its reaper is told); the experiment stays pending.
    gone, alive = psutil.wait_procs([psutil.Process(orphan)] if psutil.pid_exists(orphan)
                                    else [], timeout=10)  # fmt: skip
    assert not alive, alive
    assert cli_json(repo, "status")["pending"] == [1]

    async def second() -> dict:
        async with agent(repo, hold) as s:
            # Experiment 1 is re-run under its number.
            await until(lambda: lines(pids) == 2)
            st = await call(s, "study")
            assert [r["experiment"] for r in st["running"]] == [1]
            hold_file.unlink()
            first = await decided(s, 1)
            assert first["status"] == "keep" and first["value"] == 7.0
            nxt = await call(s, "submit", files={"score.py": score(6)}, description="X → 6")
            assert (nxt["experiment"], nxt["status"]) == (2, "keep")
            return await call(s, "stop")

    stopped = anyio.run(second)
    assert stopped["status"]["pending"] == []
    log = cli_json(repo, "log")
    assert [(r["experiment"], r["status"]) for r in log] == [(0, "keep"), (1, "keep"), (2, "keep")]
    assert git(repo, "rev-parse", "overnight/t") == log[-1]["commit"]
    assert not list((repo / ".git").rglob("*.lock"))
    verify(repo)


def test_the_client_going_away_stops_like_ctrl_c(repo: Path, hold: dict[str, str]) -> None:
    pids, hold_file = Path(hold["HOLD_PIDS"]), Path(hold["HOLD_FILE"])

    async def scenario() -> None:
        async with agent(repo, hold) as s:
            await held_experiment(s, hold)
        # the client closed the connection with experiment 1 running

    anyio.run(scenario)
    run_pid = int(pids.read_text().split()[0])
    deadline = time.monotonic() + 30
    while psutil.pid_exists(run_pid) and psutil.Process(run_pid).status() != "zombie":
        assert time.monotonic() < deadline, "the run outlived its session"
        time.sleep(0.05)
    st = cli_json(repo, "status")
    assert st["pending"] == [1]  # re-run under its number by the next session or `run`
    hold_file.unlink()
    out = run_cli(repo, "run", "-n", "1", "--plain", "--proposer", "tune")
    assert out.returncode == 0, out.stderr
    assert [(r["experiment"], r["status"]) for r in cli_json(repo, "log")][:2] == [
        (0, "keep"), (1, "keep")]
    verify(repo)


def test_limits_end_the_session_and_usage_errors_exit_2(repo: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with agent(repo, None, "--experiments", "1") as s:
            await ready(s)
            for other in (("run", "-n", "1"), ("mcp",)):  # one session per study at a time
                out = run_cli(repo, *other)
                assert out.returncode == 2 and "already running" in out.stderr, out.stderr
            one = await call(s, "submit", files={"score.py": score(8)}, description="X → 8")
            assert one["status"] == "keep"
            text = await refused(s, "submit", files={"score.py": score(7)}, description="more")
            assert "ran 1 experiment(s) as asked" in text
            await until(lambda: _over(s))
            assert (await call(s, "stop"))["reason"] == "ran 1 experiment(s) as asked"

    anyio.run(scenario)
    assert [r["experiment"] for r in cli_json(repo, "log")] == [0, 1]

    async def terminated() -> None:
        async with agent(repo) as s:
            await ready(s)
            server = server_process()
            server.send_signal(signal.SIGTERM)  # as a client or a supervisor stops it
            server.wait(30)  # it ends, though the client is still connected

    anyio.run(terminated)
    assert "overnight: stopped by SIGTERM" in (repo.parent / "server.log").read_text()

    out = run_cli(repo, "mcp", "--hours", "0")
    assert out.returncode == 2 and "--hours" in out.stderr and "Traceback" not in out.stderr
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    out = run_cli(outside, "mcp")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    # Without the SDK: one line, exit 2 (a stand-in `mcp` package that cannot be imported).
    fake = tmp_path / "nosdk" / "mcp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no SDK here')\n")
    out = run_cli(repo, "mcp", env={"PYTHONPATH": f"{fake.parent}{os.pathsep}"
                                    f"{overnight_env()['PYTHONPATH']}"})  # fmt: skip
    assert out.returncode == 2 and "pip install 'overnight[mcp]'" in out.stderr


def test_a_failing_baseline_is_told_to_the_agent(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": "raise SystemExit('no data here')\n", "overnight.toml": CONFIG,
    })  # fmt: skip

    async def scenario() -> tuple[dict, str]:
        async with agent(repo) as s:
            st = await until(lambda: _error(s))
            text = await refused(s, "submit", files={"score.py": score(1)}, description="x")
            return st, text

    st, text = anyio.run(scenario)
    assert "the baseline failed (crash)" in st["session"]["error"]
    assert "the baseline failed" in text
    assert "the baseline failed" in (repo.parent / "server.log").read_text()


async def _error(s: ClientSession) -> dict | None:
    st = await call(s, "study")
    return st if st["session"].get("error") else None


async def _over(s: ClientSession) -> bool:
    return (await call(s, "study"))["session"]["state"] == "over"
