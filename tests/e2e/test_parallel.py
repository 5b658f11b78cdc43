"""Parallel slots and the run-ahead proposer, end to end on real temp git repos."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
from conftest import git, make_repo, overnight_env, run_cli, score_config, write_script

TWO_KNOBS = "import os, time\nX = {x}\n\nY = {y}\n{body}\nprint(f'score: {{X + Y}}')\n"


def two(x: float, y: float, body: str = "") -> str:
    return TWO_KNOBS.format(x=x, y=y, body=body)


# Each run logs "start/end <experiment> <slot GPU>" to $RUN_LOG and holds its GPU in
# $BUSY_DIR while it runs (an exclusive file: two runs on one GPU would collide). Orderings
# are forced by waiting for conditions (bounded by WAIT_S), never by sleeping.
LOGGED = textwrap.dedent("""
    log, busy = os.environ["RUN_LOG"], os.environ.get("BUSY_DIR")
    n = int(os.environ["OVERNIGHT_EXPERIMENT"])
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "-")
    def wait_for(check, what):
        for _ in range(int(float(os.environ.get("WAIT_S", "60")) * 20)):
            if check():
                return True
            time.sleep(0.05)
        open(log, "a").write(f"gave-up {n} {what}\\n")
    if busy:
        os.makedirs(busy, exist_ok=True)
        try:
            os.close(os.open(os.path.join(busy, gpu), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            open(log, "a").write(f"shared {n} {gpu}\\n")
    open(log, "a").write(f"start {n} {gpu}\\n")
    if busy and 1 <= n <= int(os.environ.get("TOGETHER", "0")):
        wait_for(lambda: len(os.listdir(busy)) >= int(os.environ["TOGETHER"]), "together")
    after = globals().get("AFTER_DECIDED")  # set in a candidate: wait until that is decided
    if after and os.environ.get("OVERNIGHT_EXPERIMENT") != "0":
        tsv = os.path.join(os.environ["OVERNIGHT_TRACE_DIR"], "..", "..", "..", "results.tsv")
        wait_for(lambda: os.path.exists(tsv) and after in open(tsv).read(), "decided")
    if os.environ.get("AHEAD_LOG") and n >= 1:
        calls = lambda: len(open(os.environ["AHEAD_LOG"]).read().splitlines())
        if os.environ.get("EXPECT_AHEAD") == "1":
            wait_for(lambda: calls() >= n + 1, "ahead")
        else:
            before = calls()
            time.sleep(0.3)
            if calls() != before:
                open(log, "a").write(f"asked-during {n}\\n")
    open(log, "a").write(f"end {n} {gpu}\\n")
    if busy:
        os.unlink(os.path.join(busy, gpu))
""")


# A candidate whose run waits until the other candidate (its description says "first") is
# decided: it then beat a best that moved while it ran.
HELD = 'AFTER_DECIDED = "(first)"\n'


def parallel_repo(tmp_path: Path, workers: int, extra: str = "") -> Path:
    cfg = score_config() + f"\n[executor]\nworkers = {workers}\n" + extra
    return make_repo(tmp_path / "repo", {"score.py": two(10, 10, LOGGED), "overnight.toml": cfg})


def run_events(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()]


def log_json(repo: Path) -> list[dict]:
    out = run_cli(repo, "log", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def check_branch(repo: Path, log: list[dict]) -> None:
    """The branch is linear, one commit per keep, each keep better than the one before it
    (keeps land in the order they were decided, which parallel slots make differ from the
    experiment numbers)."""
    start = git(repo, "rev-list", "--max-parents=0", "overnight/t")
    keeps = sorted((r for r in log if r["status"] == "keep"), key=lambda r: -r["value"])
    chain = git(repo, "rev-list", "--first-parent", "--reverse", "overnight/t").split()
    assert chain[0] == start == keeps[0]["commit"]
    assert chain[1:] == [r["commit"] for r in keeps[1:]]
    assert git(repo, "rev-list", "--merges", "overnight/t") == ""
    assert len({r["value"] for r in keeps}) == len(keeps)
    for r in keeps[1:]:
        assert git(repo, "rev-parse", f"{r['commit']}^") == r["parent"]
    # Every verdict, also those judged against a best that moved meanwhile, replays.
    verified = run_cli(repo, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_slots_run_at_once_and_the_branch_stays_linear(tmp_path: Path) -> None:
    repo = parallel_repo(tmp_path, workers=3, extra="gpus = [0, 1, 2]\n")
    steps = [{"files": {"score.py": two(10 - i, 10, LOGGED) if i % 2 else two(10, 10 - i, LOGGED)},
              "description": f"step {i}"} for i in range(1, 10)]  # fmt: skip
    env = write_script(tmp_path / "s.json", steps)
    # Experiments 1-3 each wait until three GPUs are busy at once: only parallel slots pass.
    env.update(RUN_LOG=str(tmp_path / "runs.log"), BUSY_DIR=str(tmp_path / "busy"),
               TOGETHER="3")  # fmt: skip
    out = run_cli(repo, "run", "-n", "9", "--plain", "--lookahead", "3", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    assert [r["experiment"] for r in log] == list(range(10))
    check_branch(repo, log)
    events = run_events(tmp_path / "runs.log")
    assert [e for e in events if e[0] in ("gave-up", "shared")] == []  # never one GPU twice
    assert {e[2] for e in events if e[0] == "start"} == {"0", "1", "2"}


def test_two_winners_from_one_parent(tmp_path: Path) -> None:
    """Both candidates beat their common parent; the first one's run ends only once the
    second is decided. Changes to different lines: the first is re-applied onto the new
    best and measured again, then kept too."""
    repo = parallel_repo(tmp_path, workers=2)
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": HELD + two(5, 10, LOGGED)}, "description": "X 10 → 5 (held)"},
        {"files": {"score.py": two(10, 8, LOGGED)}, "description": "Y 10 → 8 (first)"},
    ])  # fmt: skip
    env.update(RUN_LOG=str(tmp_path / "runs.log"))
    out = run_cli(repo, "run", "-n", "2", "--plain", "--lookahead", "2", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    by_desc = {r["description"]: r for r in log}
    first, held = by_desc["Y 10 → 8 (first)"], by_desc["X 10 → 5 (held)"]
    assert first["status"] == "keep" and first["value"] == 18
    # The held winner was rebuilt on the first one's commit and measured there.
    assert held["status"] == "keep" and held["value"] == 13
    assert held["parent"] == first["commit"]
    assert "re-measuring" in out.stdout
    check_branch(repo, log)
    show = json.loads(run_cli(repo, "show", str(held["experiment"]), "--json").stdout)
    assert any(m["kind"].startswith("stale-") for m in show["measurements"])


def test_racing_winners_on_the_same_line_give_one_keep(tmp_path: Path) -> None:
    repo = parallel_repo(tmp_path, workers=2)
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": HELD + two(6, 10, LOGGED)}, "description": "X 10 → 6 (held)"},
        {"files": {"score.py": two(8, 10, LOGGED)}, "description": "X 10 → 8 (first)"},
    ])  # fmt: skip
    env.update(RUN_LOG=str(tmp_path / "runs.log"))
    out = run_cli(repo, "run", "-n", "2", "--plain", "--lookahead", "2", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    statuses = {r["description"]: (r["status"], r["reason"]) for r in log[1:]}
    assert statuses["X 10 → 8 (first)"][0] == "keep"
    assert statuses["X 10 → 6 (held)"][0] == "discard"
    assert "does not merge" in statuses["X 10 → 6 (held)"][1]
    check_branch(repo, log)


class_proposer = '''
import os
from overnight.proposers.base import BaseProposer
from overnight.store.records import Proposal

class LoggingProposer(BaseProposer):
    """Logs each call to $AHEAD_LOG."""
    name = "logging"

    def __init__(self, **_):
        self.i = 0

    def propose(self, ctx):
        self.i += 1
        open(os.environ["AHEAD_LOG"], "a").write(f"call {self.i}\\n")
        src = ctx.surface["score.py"] + f"# variant {len(ctx.history)}-{self.i}\\n"
        return Proposal(files={"score.py": src}, description=f"variant {self.i}")
'''


def test_the_proposer_runs_ahead_of_a_single_slot(tmp_path: Path) -> None:
    repo = parallel_repo(tmp_path, workers=1)
    support = tmp_path / "plug"
    support.mkdir()
    (support / "logprop.py").write_text(class_proposer)
    calls = tmp_path / "calls.log"
    calls.write_text("")
    env = {
        "PYTHONPATH": str(support) + ":" + overnight_env()["PYTHONPATH"],
        "AHEAD_LOG": str(calls), "RUN_LOG": str(tmp_path / "runs.log"), "EXPECT_AHEAD": "1",
    }  # fmt: skip
    (repo / "overnight.toml").write_text(
        (repo / "overnight.toml").read_text().replace(
            "support.scripted:ScriptedProposer", "logprop:LoggingProposer"))  # fmt: skip
    git(repo, "commit", "-qam", "logging proposer")
    # Run k ends only once the proposal for k + 1 was asked for: run-ahead provides it.
    out = run_cli(repo, "run", "-n", "4", "--plain", "--lookahead", "1", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    events = run_events(tmp_path / "runs.log")
    assert [e for e in events if e[0] == "gave-up"] == []
    assert sum(1 for e in events if e[0] == "end") == 5

    # --lookahead 0: the proposer is never asked while a run is in flight.
    calls.write_text("")
    (tmp_path / "runs.log").unlink()
    env["EXPECT_AHEAD"] = "0"
    out = run_cli(repo, "run", "-n", "3", "--plain", "--lookahead", "0", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    events = run_events(tmp_path / "runs.log")
    assert [e for e in events if e[0] == "asked-during"] == []
    assert len(calls.read_text().splitlines()) == 3


def test_kill9_during_a_parallel_study_then_resume(tmp_path: Path) -> None:
    repo = parallel_repo(tmp_path, workers=3)
    steps = [{"files": {"score.py": two(10 - i, 10, LOGGED) if i % 2 else two(10, 10 - i, LOGGED)},
              "description": f"step {i}"} for i in range(1, 30)]  # fmt: skip
    env = write_script(tmp_path / "s.json", steps)
    # Experiments 1-3 wait for a fourth GPU that never comes (until killed).
    env.update(RUN_LOG=str(tmp_path / "runs.log"), BUSY_DIR=str(tmp_path / "busy"),
               TOGETHER="4", WAIT_S="120")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "overnight", "run", "-n", "20", "--plain"], cwd=repo,
        env=overnight_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = tmp_path / "runs.log"
        if log.exists() and log.read_text().count("start") >= 4:  # baseline + 3 slots
            break
        time.sleep(0.05)
    worktrees = str(repo / ".overnight" / "worktrees")
    runs = [p for p in psutil.process_iter(["cwd"])
            if (p.info["cwd"] or "").startswith(worktrees)]  # this study's runs only
    assert runs, "the runs should be going"
    proc.kill()
    proc.wait()
    # Every slot's run dies with its controller (its reaper is told), none is left behind.
    gone, alive = psutil.wait_procs(runs, timeout=10)
    assert not alive, alive
    env.update(TOGETHER="0", BUSY_DIR="")
    out = run_cli(repo, "run", "-n", "4", "--plain", "--lookahead", "3", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    numbers = [r["experiment"] for r in log]
    assert numbers == list(range(len(numbers))) and len(numbers) >= 5, out.stdout
    check_branch(repo, log)
    st = json.loads(run_cli(repo, "status", "--json").stdout)
    assert st["pending"] == []
