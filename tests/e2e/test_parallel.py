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


# Each run appends "start/end <experiment> <slot GPU> <time>" to $RUN_LOG.
SLOW = "time.sleep(1.5) or time.sleep"

LOGGED = textwrap.dedent("""
    log = os.environ["RUN_LOG"]
    n = os.environ["OVERNIGHT_EXPERIMENT"]
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "-")
    open(log, "a").write(f"start {n} {gpu} {time.time()}\\n")
    time.sleep(float(os.environ.get("RUN_SLEEP", "0.6")))
    open(log, "a").write(f"end {n} {gpu} {time.time()}\\n")
""")


def parallel_repo(tmp_path: Path, workers: int, extra: str = "") -> Path:
    cfg = score_config() + f"\n[executor]\nworkers = {workers}\n" + extra
    return make_repo(tmp_path / "repo", {"score.py": two(10, 10, LOGGED), "overnight.toml": cfg})


def intervals(log: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        what, n, gpu, at = line.split()
        out.setdefault(n, {"gpu": gpu})[what] = float(at)  # type: ignore[assignment]
    return out


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
    env["RUN_LOG"] = str(tmp_path / "runs.log")
    out = run_cli(repo, "run", "-n", "9", "--plain", "--lookahead", "3", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    assert [r["experiment"] for r in log] == list(range(10))
    check_branch(repo, log)

    runs = intervals(tmp_path / "runs.log")
    spans = sorted((v["start"], v["end"], v["gpu"]) for v in runs.values())
    overlapping = [(a, b) for a in spans for b in spans if a < b and b[0] < a[1]]
    assert overlapping, "no two runs were ever in flight together"
    # A GPU is never shared by two runs at the same moment.
    assert all(a[2] != b[2] for a, b in overlapping)
    assert {s[2] for s in spans} <= {"0", "1", "2"}


def test_two_winners_from_one_parent(tmp_path: Path) -> None:
    """Both candidates beat their common parent. Changes to different lines: the slower one
    is re-applied onto the new best and measured again, then kept too. Changes to the same
    line: exactly one keep, the other discarded with the reason."""
    repo = parallel_repo(tmp_path, workers=2)
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": two(5, 10, LOGGED.replace("time.sleep", SLOW))},
         "description": "X 10 → 5 (slow)"},
        {"files": {"score.py": two(10, 8, LOGGED)}, "description": "Y 10 → 8 (fast)"},
        {"files": {"score.py": two(10, 9, LOGGED)}, "description": "Y 10 → 9 (same line)"},
    ])  # fmt: skip
    env["RUN_LOG"] = str(tmp_path / "runs.log")
    env["RUN_SLEEP"] = "0.2"
    out = run_cli(repo, "run", "-n", "2", "--plain", "--lookahead", "2", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    by_desc = {r["description"]: r for r in log}
    fast_rec, slow_rec = by_desc["Y 10 → 8 (fast)"], by_desc["X 10 → 5 (slow)"]
    assert fast_rec["status"] == "keep" and fast_rec["value"] == 18
    # The slow winner was rebuilt on the fast one's commit and measured there.
    assert slow_rec["status"] == "keep" and slow_rec["value"] == 13
    assert slow_rec["parent"] == fast_rec["commit"]
    assert "re-measuring" in out.stdout
    check_branch(repo, log)
    show = json.loads(run_cli(repo, "show", str(slow_rec["experiment"]), "--json").stdout)
    assert any(m["kind"].startswith("stale-") for m in show["measurements"])


def test_racing_winners_on_the_same_line_give_one_keep(tmp_path: Path) -> None:
    repo = parallel_repo(tmp_path, workers=2)
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": two(6, 10, LOGGED.replace("time.sleep", SLOW))},
         "description": "X 10 → 6 (slow)"},
        {"files": {"score.py": two(8, 10, LOGGED)}, "description": "X 10 → 8 (fast)"},
    ])  # fmt: skip
    env["RUN_LOG"] = str(tmp_path / "runs.log")
    env["RUN_SLEEP"] = "0.2"
    out = run_cli(repo, "run", "-n", "2", "--plain", "--lookahead", "2", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    statuses = {r["description"]: (r["status"], r["reason"]) for r in log[1:]}
    assert statuses["X 10 → 8 (fast)"][0] == "keep"
    assert statuses["X 10 → 6 (slow)"][0] == "discard"
    assert "does not merge" in statuses["X 10 → 6 (slow)"][1]
    check_branch(repo, log)


class_proposer = '''
import json, os, time
from overnight.proposers.base import BaseProposer
from overnight.store.records import Proposal

class SlowProposer(BaseProposer):
    """Takes PROPOSE_S per proposal and logs when each call starts and ends."""
    name = "slow"

    def __init__(self, **_):
        self.i = 0

    def propose(self, ctx):
        self.i += 1
        log = os.environ["PROPOSE_LOG"]
        open(log, "a").write(f"call {self.i} {time.time()}\\n")
        time.sleep(float(os.environ["PROPOSE_S"]))
        src = ctx.surface["score.py"] + f"# variant {len(ctx.history)}-{self.i}\\n"
        return Proposal(files={"score.py": src}, description=f"variant {self.i}")
'''


def test_the_proposer_runs_ahead_of_a_single_slot(tmp_path: Path) -> None:
    repo = parallel_repo(tmp_path, workers=1)
    support = tmp_path / "plug"
    support.mkdir()
    (support / "slowprop.py").write_text(class_proposer)
    env = {
        "PYTHONPATH": str(support) + ":" + overnight_env()["PYTHONPATH"],
        "PROPOSE_LOG": str(tmp_path / "calls.log"), "PROPOSE_S": "0.3",
        "RUN_LOG": str(tmp_path / "runs.log"), "RUN_SLEEP": "0.8",
    }  # fmt: skip
    (repo / "overnight.toml").write_text(
        (repo / "overnight.toml").read_text().replace(
            "support.scripted:ScriptedProposer", "slowprop:SlowProposer"))  # fmt: skip
    git(repo, "commit", "-qam", "slow proposer")
    out = run_cli(repo, "run", "-n", "4", "--plain", "--lookahead", "1", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    runs = intervals(tmp_path / "runs.log")
    calls = [float(line.split()[2]) for line in (tmp_path / "calls.log").read_text().splitlines()]
    # The proposal for experiment k+1 was asked for before experiment k finished.
    ahead = sum(1 for k in range(1, 4) if calls[k] < runs[str(k)]["end"])
    assert ahead == 3, (calls, runs)

    # --lookahead 0: the proposer is asked only after each verdict.
    (tmp_path / "calls.log").unlink()
    (tmp_path / "runs.log").unlink()
    out = run_cli(repo, "run", "-n", "3", "--plain", "--lookahead", "0", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    runs = intervals(tmp_path / "runs.log")
    calls = [float(line.split()[2]) for line in (tmp_path / "calls.log").read_text().splitlines()]
    ends = sorted(v["end"] for v in runs.values())
    assert all(not any(s < c < e for s, e in ((v["start"], v["end"]) for v in runs.values()))
               for c in calls), (calls, ends)  # fmt: skip


def test_kill9_during_a_parallel_study_then_resume(tmp_path: Path) -> None:
    repo = parallel_repo(tmp_path, workers=3)
    steps = [{"files": {"score.py": two(10 - i, 10, LOGGED) if i % 2 else two(10, 10 - i, LOGGED)},
              "description": f"step {i}"} for i in range(1, 30)]  # fmt: skip
    env = write_script(tmp_path / "s.json", steps)
    env["RUN_LOG"] = str(tmp_path / "runs.log")
    env["RUN_SLEEP"] = "5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "overnight", "run", "-n", "20", "--plain"], cwd=repo,
        env=overnight_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
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
    env["RUN_SLEEP"] = "0.1"
    out = run_cli(repo, "run", "-n", "4", "--plain", "--lookahead", "3", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    numbers = [r["experiment"] for r in log]
    assert numbers == list(range(len(numbers))) and len(numbers) >= 5, out.stdout
    check_branch(repo, log)
    st = json.loads(run_cli(repo, "status", "--json").stdout)
    assert st["pending"] == []
