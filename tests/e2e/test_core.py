"""End-to-end: drive the `overnight` CLI on real temporary git repositories."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import (
    SCORE_PY,
    git,
    make_repo,
    overnight_env,
    run_cli,
    score_config,
    serial,
    write_script,
)


def score_src(x: float, body: str = "") -> str:
    return f"import os\nX = {x}\n{body}\nprint(f'score: {{X}}')\n"


def log_json(repo: Path) -> list[dict]:
    out = run_cli(repo, "log", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def status_json(repo: Path) -> dict:
    out = run_cli(repo, "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def branch_commits(repo: Path, start: str, branch: str = "overnight/t") -> list[str]:
    out = git(repo, "rev-list", "--reverse", f"{start}..{branch}")
    return out.split() if out else []


def test_improvements_stack_and_everything_agrees(score_repo: Path, tmp_path: Path) -> None:
    start = git(score_repo, "rev-parse", "HEAD")
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": score_src(7)}, "description": "X 10 → 7"},
        {"files": {"score.py": score_src(9)}, "description": "X 7 → 9"},
        {"files": {"score.py": score_src(5)}, "description": "X 7 → 5"},
        {"files": {"score.py": score_src(9)}, "description": "X 5 → 9 again"},
        {"files": {"score.py": score_src(6)}, "description": "X 5 → 6"},
        {"files": {"score.py": score_src(4.5)}, "description": "X 5 → 4.5"},
    ])  # fmt: skip
    out = run_cli(score_repo, "run", "-n", "6", "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout

    log = log_json(score_repo)
    assert [r["experiment"] for r in log] == list(range(7))
    assert [r["status"] for r in log] == [
        "keep", "keep", "discard", "keep", "invalid", "discard", "keep"
    ]  # fmt: skip
    assert "duplicate of experiment 2" in log[4]["reason"]
    assert all(r["reason"] for r in log if r["status"] != "keep")
    assert [r["value"] for r in log if r["status"] == "keep"] == [10, 7, 5, 4.5]

    # Each keep is exactly one commit on the branch, in order, and beats the previous best.
    commits = branch_commits(score_repo, start)
    kept = [r for r in log if r["status"] == "keep" and r["experiment"] > 0]
    assert commits == [r["commit"] for r in kept]
    for r in kept:
        msg = git(score_repo, "log", "-1", "--format=%B", r["commit"])
        assert msg.startswith(r["description"])
        assert f"Overnight-Experiment: {r['experiment']}" in msg
        assert r["parent"] == git(score_repo, "rev-parse", f"{r['commit']}^")
    # Discarded candidates stay reachable under refs but are not on the branch.
    for r in log:
        if r["status"] == "discard":
            ref = git(score_repo, "rev-parse", f"refs/overnight/t/{r['experiment']}")
            assert ref == r["commit"]
            is_anc = subprocess.run(
                ["git", "merge-base", "--is-ancestor", ref, "overnight/t"], cwd=score_repo
            )
            assert is_anc.returncode == 1
    assert git(score_repo, "show", "overnight/t:score.py") == score_src(4.5).strip()

    st = status_json(score_repo)
    assert st["best"] == {"experiment": 6, "value": 4.5, "commit": commits[-1]}
    assert st["baseline"] == {"experiment": 0, "value": 10}
    assert st["experiments"] == 7
    assert st["counts"] == {
        "keep": 4,
        "discard": 2,
        "crash": 0,
        "timeout": 0,
        "invalid": 1,
        "rejected": 0,
        "suspect": 0,
    }
    assert st["metric"] == {"name": "score", "goal": "minimize"}

    with open(score_repo / ".overnight" / "t" / "results.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [int(r["experiment"]) for r in rows] == list(range(7))
    assert [r["status"] for r in rows] == [r["status"] for r in log]
    assert rows[4]["score"] == ""  # invalid: no value, never 0
    assert rows[1]["commit"] == log[1]["commit"][:7]
    for key in ("commit", "score", "status", "description", "wall_s", "proposer"):
        assert key in rows[0]

    # The user's checkout is untouched: branch, files, index.
    assert git(score_repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(score_repo, "rev-parse", "HEAD") == start
    assert (score_repo / "score.py").read_text() == SCORE_PY
    assert git(score_repo, "status", "--porcelain") == ""

    show = json.loads(run_cli(score_repo, "show", "2", "--json").stdout)
    assert show["status"] == "discard" and "X = 9" in show["diff"]


def test_locked_and_protected_files_are_rejected_and_restored(tmp_path: Path) -> None:
    cfg = score_config(extra="").replace('budget = "10s"', 'budget = "10s"\nprotect = ["data/**"]')
    read_data = "X = float(open('data/value.txt').read())\n"
    repo = make_repo(tmp_path / "repo", {
        "score.py": f"import os\n{read_data}print(f'score: {{X}}')\n",
        "overnight.toml": cfg, "helper.txt": "locked\n",
    })  # fmt: skip
    (repo / "data").mkdir()
    (repo / "data" / "value.txt").write_text("10")  # untracked, protected
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": "open('helper.txt', 'w').write('hacked')\nprint('score: 1')\n"},
         "description": "edit a locked tracked file"},
        {"files": {"score.py": "open('data/value.txt', 'w').write('0')\nprint('score: 0')\n"},
         "description": "edit protected data"},
        {"files": {"score.py": "import os\nos.remove('helper.txt')\nprint('score: 0')\n"},
         "description": "delete a locked file"},
        {"files": {"score.py": f"import os\n{read_data}print(f'score: {{X - 1}}')\n"},
         "description": "honest"},
    ])  # fmt: skip
    out = run_cli(repo, "run", "-n", "4", "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    assert [r["status"] for r in log] == ["keep", "rejected", "rejected", "rejected", "keep"]
    assert "helper.txt" in log[1]["reason"]
    assert "data/value.txt" in log[2]["reason"]
    assert "helper.txt" in log[3]["reason"]
    assert log[4]["value"] == 9.0  # the protected data was restored before the honest run
    assert (repo / "helper.txt").read_text() == "locked\n"
    assert (repo / "data" / "value.txt").read_text() == "10"


def test_missing_nan_and_failing_metrics_are_crashes(score_repo: Path, tmp_path: Path) -> None:
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": "print('score: nan')\n"}, "description": "nan"},
        {"files": {"score.py": "print('score: inf')\n"}, "description": "inf"},
        {"files": {"score.py": "print('nothing here')\n"}, "description": "missing"},
        {"files": {"score.py": "print('score: 1')\nraise SystemExit(3)\n"}, "description": "exit"},
        {"files": {"score.py": "print('score: 1')\nprint('score: 2 apples')\n"},
         "description": "last metric line wins, decorated lines are not metrics"},
    ])  # fmt: skip
    out = run_cli(score_repo, "run", "-n", "5", "--plain", env=env)
    assert out.returncode == 0, out.stderr
    log = log_json(score_repo)
    assert [r["status"] for r in log[1:]] == ["crash", "crash", "crash", "crash", "keep"]
    assert "not finite" in log[1]["reason"] and "not finite" in log[2]["reason"]
    assert "not found" in log[3]["reason"]
    assert "code 3" in log[4]["reason"]
    assert all(r["value"] is None for r in log[1:5])
    assert log[5]["value"] == 1.0


def test_timeout_kills_a_tree_that_setsids_and_ignores_sigterm(
    score_repo: Path, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    body = f"""
import signal, subprocess, sys, time
child = '''
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.setsid()
if os.fork() == 0:
    os.setsid()
    open({str(pids)!r}, "a").write(str(os.getpid()) + "\\\\n")
    time.sleep(1000)
open({str(pids)!r}, "a").write(str(os.getpid()) + "\\\\n")
time.sleep(1000)
'''
subprocess.Popen([sys.executable, "-c", child])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(1000)
"""
    cfg = score_config(budget="2s")
    (score_repo / "overnight.toml").write_text(cfg)
    git(score_repo, "commit", "-qam", "budget")
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": score_src(1, body)}, "description": "hang"},
    ])  # fmt: skip
    out = run_cli(score_repo, "run", "-n", "1", "--plain", env=env)
    assert out.returncode == 0, out.stderr
    log = log_json(score_repo)
    assert log[1]["status"] == "timeout" and "budget of 2s" in log[1]["reason"]
    assert log[1]["wall_s"] >= 1.9  # killed at the budget, not before
    found = [int(p) for p in pids.read_text().split()]
    assert len(found) == 2
    time.sleep(0.2)
    assert [
        p
        for p in found
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ] == []


def test_outside_surface_and_proposer_invalid(score_repo: Path, tmp_path: Path) -> None:
    env = write_script(tmp_path / "s.json", [
        {"files": {"helper.txt": "changed\n"}, "description": "touch another file"},
        {"files": {}, "description": "broken", "invalid_reason": "edit did not apply: no match"},
        {"files": {"score.py": SCORE_PY}, "description": "no change"},
    ])  # fmt: skip
    out = run_cli(score_repo, "run", "-n", "3", "--plain", env=env)
    assert out.returncode == 0, out.stderr
    log = log_json(score_repo)
    assert [r["status"] for r in log[1:]] == ["rejected", "invalid", "invalid"]
    assert "helper.txt" in log[1]["reason"]
    assert "no match" in log[2]["reason"]
    assert "empty change" in log[3]["reason"]
    assert all(r["commit"] is None for r in log[1:])


HOLD = """
import os, time
if os.environ.get("HOLD_HELPERS") and os.fork() == 0:  # a helper process the run starts
    open(os.environ["HOLD_HELPERS"], "a").write(str(os.getpid()) + "\\n")
    while True:
        time.sleep(0.05)
open(os.environ["HOLD_PIDS"], "a").write(str(os.getpid()) + "\\n")
while os.path.exists(os.environ["HOLD_FILE"]):
    time.sleep(0.05)
"""


def _start(repo: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "overnight", *serial(["run", "--plain", *args])],
        cwd=repo, env=overnight_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _wait_for(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture
def held(score_repo: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    hold, pids = tmp_path / "hold", tmp_path / "pids"
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": score_src(7, HOLD)}, "description": "X 10 → 7 (held)"},
        {"files": {"score.py": score_src(6)}, "description": "X → 6"},
        {"files": {"score.py": score_src(5)}, "description": "X → 5"},
    ])  # fmt: skip
    env.update(HOLD_FILE=str(hold), HOLD_PIDS=str(pids))
    return tmp_path, env


def test_sigint_stops_cleanly_and_resume_continues(
    score_repo: Path, held: tuple[Path, dict[str, str]]
) -> None:
    tmp, env = held
    (tmp / "hold").write_text("")
    proc = _start(score_repo, env, "-n", "3")
    _wait_for(lambda: (tmp / "pids").exists() and (tmp / "pids").read_text().strip())
    second = run_cli(score_repo, "run", "-n", "1", "--plain", env=env)
    assert second.returncode == 2 and "already running" in second.stderr
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err  # 128 + SIGINT: a script tells it from a finished night
    run_pid = int((tmp / "pids").read_text().split()[0])
    assert not psutil.pid_exists(run_pid) or psutil.Process(run_pid).status() == "zombie"
    st = status_json(score_repo)
    assert st["pending"] == [1] and st["experiments"] == 1

    (tmp / "hold").unlink()
    out2 = run_cli(score_repo, "run", "-n", "2", "--plain", env=env)
    assert out2.returncode == 0, out2.stderr
    log = log_json(score_repo)
    assert [r["experiment"] for r in log] == [0, 1, 2]
    assert [r["status"] for r in log] == ["keep", "keep", "keep"]
    show0 = json.loads(run_cli(score_repo, "show", "0", "--json").stdout)
    assert len(show0["measurements"]) == 1  # the baseline was not re-measured


def test_kill9_during_run_then_resume(score_repo: Path, held: tuple[Path, dict[str, str]]) -> None:
    tmp, env = held
    helpers = tmp / "helpers"
    env = {**env, "HOLD_HELPERS": str(helpers)}
    (tmp / "hold").write_text("")

    # kill -9 of the controller: the run's reaper takes the whole run down with it.
    proc = _start(score_repo, env, "-n", "3")
    _wait_for(lambda: helpers.exists() and (tmp / "pids").exists()
              and (tmp / "pids").read_text().strip())  # fmt: skip
    watched = [psutil.Process(int(f.read_text().split()[0])) for f in (tmp / "pids", helpers)]
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(watched, timeout=10)
    assert not alive, alive

    # The reaper killed outright too (as the OOM killer might): the run dies with it, its
    # helper is orphaned, and recovery finds it by its marker.
    resumed = _start(score_repo, env, "-n", "3")
    _wait_for(lambda: len((tmp / "pids").read_text().split()) == 2
              and len(helpers.read_text().split()) == 2)  # fmt: skip
    run, helper = int((tmp / "pids").read_text().split()[1]), int(helpers.read_text().split()[1])
    reaper = next(p for p in psutil.Process(run).parents()
                  if "PR_SET_CHILD_SUBREAPER" in " ".join(p.cmdline()))  # fmt: skip
    resumed.send_signal(signal.SIGSTOP)  # so that it cannot clean up after its reaper
    reaper.kill()
    resumed.kill()
    resumed.wait()
    assert psutil.pid_exists(helper)  # the helper outlived its controller
    resumed = _start(score_repo, env, "-n", "3")
    # The re-run of experiment 1 starts only after recovery killed the orphan.
    _wait_for(lambda: len((tmp / "pids").read_text().split()) == 3)
    assert not psutil.pid_exists(helper) or psutil.Process(helper).status() == "zombie"
    (tmp / "hold").unlink()
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert "orphaned" in out
    log = log_json(score_repo)
    assert [r["experiment"] for r in log] == [0, 1, 2, 3]
    assert [r["status"] for r in log] == ["keep", "keep", "keep", "keep"]
    assert git(score_repo, "rev-parse", "overnight/t") == log[-1]["commit"]
    assert not list((score_repo / ".git").rglob("*.lock"))


def test_kill9_at_random_moments_keeps_the_study_consistent(
    score_repo: Path, tmp_path: Path
) -> None:
    steps = [
        {
            "files": {"score.py": score_src(10 - i * 0.5 if i % 3 else 11 + i)},
            "description": f"step {i}",
        }
        for i in range(1, 40)
    ]
    env = write_script(tmp_path / "s.json", steps)
    start = git(score_repo, "rev-parse", "HEAD")
    for delay in (0.9, 1.3, 0.6, 1.7, 1.1):
        proc = _start(score_repo, env, "-n", "40")
        time.sleep(delay)
        proc.kill()
        proc.wait()
    out = run_cli(score_repo, "run", "-n", "2", "--plain", env=env)
    assert out.returncode == 0, out.stderr
    log = log_json(score_repo)
    numbers = [r["experiment"] for r in log]
    assert numbers == list(range(len(numbers)))
    assert len(numbers) >= 3
    keeps = [r for r in log if r["status"] == "keep"]
    assert git(score_repo, "rev-parse", "overnight/t") == keeps[-1]["commit"]
    assert branch_commits(score_repo, start) == [r["commit"] for r in keeps[1:]]
    values = [r["value"] for r in keeps]
    assert values == sorted(values, reverse=True)
    assert status_json(score_repo)["pending"] == []
    tsv = (score_repo / ".overnight" / "t" / "results.tsv").read_text().splitlines()
    assert len(tsv) == len(log) + 1


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c.replace('command = "python', 'comand = "python'), "[run].comand"),
        (lambda c: c.replace('budget = "10s"', 'budget = "soon"'), "[study].budget"),
        (lambda c: c.replace('goal = "minimize"', 'goal = "smaller"'), "[metric].goal"),
        (lambda c: c.replace('["score.py"]', '["nope.py"]'), "nope.py"),
        (lambda c: c.replace('"python score.py"', '"  "'), "[run].command"),
        (lambda c: c + "\n[bogus]\nx = 1\n", "bogus"),
    ],
)
def test_bad_config_exits_2_naming_the_key(score_repo: Path, mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    cfg = score_repo / "overnight.toml"
    cfg.write_text(mutate(cfg.read_text()))
    out = run_cli(score_repo, "run", "-n", "1", "--plain")
    assert out.returncode == 2, out.stdout + out.stderr
    assert needle in out.stderr and "overnight.toml" in out.stderr
    assert not (score_repo / ".overnight" / "t" / "ledger.sqlite").exists()


def test_untracked_surface_and_not_a_repo(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"overnight.toml": score_config()})
    (repo / "score.py").write_text(SCORE_PY)
    out = run_cli(repo, "run", "-n", "1")
    assert out.returncode == 2 and "not tracked" in out.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "overnight.toml").write_text(score_config())
    out = run_cli(plain, "run", "-n", "1")
    assert out.returncode == 2 and "not inside a git repository" in out.stderr


def test_tune_improves_a_knob_end_to_end(tmp_path: Path) -> None:
    src = "A = 10\nB = 0.5\nprint(f'score: {(A - 3) ** 2 + (B - 0.05) ** 2 * 100}')\n"
    repo = make_repo(tmp_path / "repo", {
        "score.py": src, "overnight.toml": score_config(proposer="auto"),
    })  # fmt: skip
    out = run_cli(repo, "run", "-n", "12", "--plain", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert "tune" in out.stdout
    log = log_json(repo)
    assert len(log) == 13
    assert log[0]["value"] == pytest.approx(49 + 0.2025 * 100)
    st = status_json(repo)
    assert st["best"]["value"] < st["baseline"]["value"] * 0.8
    assert all(r["proposer"] == "tune" for r in log[1:])
    assert any("→" in r["description"] for r in log[1:])


def test_init_writes_a_config_that_runs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE_PY})
    out = run_cli(
        repo,
        "init",
        "--surface",
        "score.py",
        "--metric",
        "score",
        "--budget",
        "30s",
        "--name",
        "demo",
    )
    assert out.returncode == 0, out.stderr
    assert "[study]" in (repo / "overnight.toml").read_text()
    assert (repo / "program.md").exists()
    again = run_cli(repo, "init")
    assert again.returncode == 2 and "already exist" in again.stderr
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "config")
    out = run_cli(repo, "run", "-n", "2", "--plain")
    assert out.returncode == 0, out.stderr
    assert status_json(repo)["study"] == "demo"
    assert os.path.exists(repo / ".overnight" / "demo" / "ledger.sqlite")
