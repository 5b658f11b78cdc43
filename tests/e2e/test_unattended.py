"""An unattended night that stops well: circuit breakers, exit codes of a stopped and an
interrupted night, and no silent dirty tree. Driven through the CLI on real git repos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import TESTS, git, make_repo, overnight_env, run_cli, score_config, write_script

FAKE_BIN = TESTS / "support" / "fake_agents" / "bin"


def status_json(repo: Path) -> dict:
    out = run_cli(repo, "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def night(repo: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """What the issue saw: `--hours 8` left alone. The test's timeout is the safety net."""
    return run_cli(repo, "run", "--hours", "8", "--plain", env=env, timeout=240)


def assert_stopped_by_breaker(repo: Path, out: subprocess.CompletedProcess[str],
                              *fix: str) -> dict:  # fmt: skip
    assert out.returncode == 3, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    st = status_json(repo)
    assert st["experiments"] < 20
    assert st["stopped_by"] == "breaker"
    assert st["stopped_because"].startswith("stopped by a circuit breaker")
    for words in fix:  # the reason says what to fix, in the output, status and its JSON
        assert words in st["stopped_because"] and words in out.stdout
    text = run_cli(repo, "status").stdout
    assert "last run ended: stopped by a circuit breaker" in text
    return st


def test_a_surface_without_knobs_stops_at_once_and_says_how_to_declare_them(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": "def f():\n    return 3\n\n\nprint(f'score: {f()}')\n",
        "overnight.toml": score_config(proposer="tune"), "program.md": "Make it small.\n",
    })  # fmt: skip
    out = night(repo)
    st = assert_stopped_by_breaker(repo, out, "UPPER_CASE numeric constants", "LR = 0.01")
    assert st["experiments"] == 2  # the baseline and the one proposal that said so
    assert st["counts"]["invalid"] == 1
    report = run_cli(repo, "report", "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report" / "report.html").read_text()
    assert "last run ended: ⚠ stopped by a circuit breaker" in html and "LR = 0.01" in html


def test_an_always_failing_agent_stops_after_the_same_failure_five_times(
    tmp_path: Path,
) -> None:
    """A recipe with a flag the agent CLI does not know (its shim rejects it like the real
    `claude`): every proposal fails the same way."""
    command = "claude -p --permission-mode acceptEdits --frobnicate"
    cfg = score_config(proposer="agent") + f"command = {json.dumps(command)}\n"
    repo = make_repo(tmp_path / "repo", {
        "score.py": "X = 10\nprint(f'score: {X}')\n", "overnight.toml": cfg,
        "program.md": "Make X small.\n",
    })  # fmt: skip
    env = {"PATH": f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}"}
    out = night(repo, env)
    st = assert_stopped_by_breaker(repo, out, "unknown option '--frobnicate'", "[proposer]")
    assert st["experiments"] == 6 and st["counts"]["invalid"] == 5
    assert "the last 5 experiments failed the same way" in st["stopped_because"]


def test_an_always_failing_run_stops_and_points_at_the_log(tmp_path: Path) -> None:
    """The baseline runs; every change the proposer makes breaks the run."""
    score = "X = 10\nassert X == 10, 'X is pinned to 10'\nprint(f'score: {X}')\n"
    repo = make_repo(tmp_path / "repo", {
        "score.py": score, "overnight.toml": score_config(proposer="tune"),
        "program.md": "Make X small.\n",
    })  # fmt: skip
    out = night(repo)
    st = assert_stopped_by_breaker(repo, out, "X is pinned to 10", "overnight show")
    assert st["counts"]["crash"] == 5


def test_breaker_keys_come_from_the_stop_section(tmp_path: Path) -> None:
    score = "X = 10\nassert X == 10, 'X is pinned to 10'\nprint(f'score: {X}')\n"
    extra = "\n[stop]\nmax_same_failure = 2\n"
    repo = make_repo(tmp_path / "repo", {
        "score.py": score, "overnight.toml": score_config(proposer="tune", extra=extra),
    })  # fmt: skip
    out = night(repo)
    assert out.returncode == 3
    assert status_json(repo)["counts"]["crash"] == 2


def test_a_failed_baseline_says_so_in_status(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": "raise SystemExit('no data')\n",
        "overnight.toml": score_config(proposer="tune"),
    })  # fmt: skip
    out = run_cli(repo, "run", "-n", "3", "--plain")
    assert out.returncode == 1 and "the baseline failed" in out.stderr
    text = run_cli(repo, "status")
    assert text.returncode == 0, text.stderr
    assert "interrupted experiment(s) [0]" not in text.stdout
    assert "last run ended: the baseline failed" in text.stdout
    assert status_json(repo)["stopped_by"] == "error"


# -- interrupted nights: 130 / 143 -----------------------------------------------------------

HOLD = (
    "import os, time\nX = 10\n"
    "if os.environ['OVERNIGHT_EXPERIMENT'] != '0':\n    time.sleep(60)\n"
    "print(f'score: {X}')\n"
)


def test_sigterm_ends_the_night_cleanly_with_143(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": HOLD, "overnight.toml": score_config(proposer="tune", budget="90s"),
    })  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "overnight", "run", "-n", "5", "--plain"], cwd=repo,
        env=overnight_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started = repo / ".overnight" / "t" / "experiments" / "1" / "run.stdout"
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, out + err
    assert "Traceback" not in err
    st = status_json(repo)
    assert st["stopped_by"] == "signal" and st["stopped_because"] == "stopped by SIGTERM"
    assert st["pending"] == [1]  # re-run on resume


# -- no silent dirty tree --------------------------------------------------------------------


def score_repo_at(root: Path, config: bool = True) -> Path:
    files = {"score.py": "X = 10\nprint(f'score: {X}')\n", "program.md": "Make X small.\n"}
    if config:
        files["overnight.toml"] = score_config(proposer="tune")
    return make_repo(root, files)


def test_uncommitted_surface_stops_run_and_changes_nothing(tmp_path: Path) -> None:
    repo = score_repo_at(tmp_path / "repo")
    (repo / "score.py").write_text("X = 3\nprint(f'score: {X}')\n")
    out = run_cli(repo, "run", "-n", "1", "--plain")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "uncommitted changes: score.py" in out.stderr and "--allow-dirty" in out.stderr
    assert not (repo / ".overnight" / "t" / "ledger.sqlite").exists()
    assert git(repo, "branch", "--list", "overnight/t") == ""


def test_an_uncommitted_config_stops_run(tmp_path: Path) -> None:
    repo = score_repo_at(tmp_path / "repo", config=False)
    (repo / "overnight.toml").write_text(score_config(proposer="tune"))
    out = run_cli(repo, "run", "-n", "1", "--plain")
    assert out.returncode == 2 and "overnight.toml" in out.stderr
    assert "not recorded in git" in out.stderr


def test_allow_dirty_says_the_committed_version_is_used(tmp_path: Path) -> None:
    repo = score_repo_at(tmp_path / "repo")
    (repo / "score.py").write_text("X = 3\nprint(f'score: {X}')\n")
    out = run_cli(repo, "run", "-n", "0", "--plain", "--allow-dirty")
    assert out.returncode == 0, out.stderr
    assert "the runs use the committed version of score.py" in out.stdout
    assert status_json(repo)["baseline"]["value"] == 10  # not the uncommitted X = 3


def test_resume_says_when_the_checkout_moved_on(tmp_path: Path) -> None:
    repo = score_repo_at(tmp_path / "repo")
    assert run_cli(repo, "run", "-n", "1", "--plain").returncode == 0
    # Looking at the study's own branch is not moving on.
    git(repo, "checkout", "-q", "overnight/t")
    assert run_cli(repo, "run", "-n", "0", "--plain").returncode == 0
    git(repo, "checkout", "-q", "main")
    (repo / "score.py").write_text("X = 4\nprint(f'score: {X}')\n")
    git(repo, "commit", "-qam", "a better start")
    out = run_cli(repo, "run", "-n", "1", "--plain")
    assert out.returncode == 2
    assert "moved on" in out.stderr and "score.py" in out.stderr
    out = run_cli(repo, "run", "-n", "0", "--plain", "--allow-dirty")
    assert out.returncode == 0
    assert "without your newer commits to score.py" in out.stdout


def test_the_proposer_is_told_what_is_left(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": "X = 10\nprint(f'score: {X}')\n",
        "overnight.toml": score_config(proposer="support.spy:SpyProposer"),
    })  # fmt: skip
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": f"X = {x}\nprint(f'score: {{X}}')\n"}} for x in (9, 8, 7)
    ])  # fmt: skip
    env["OVERNIGHT_SPY_FILE"] = str(tmp_path / "contexts.jsonl")
    out = run_cli(repo, "run", "-n", "3", "--hours", "2", "--max-cost", "5", "--plain", env=env)
    assert out.returncode == 0, out.stderr
    left = [json.loads(line)["remaining"] for line in (tmp_path / "contexts.jsonl").open()]
    # Asked for each experiment as it starts: what is left after it.
    assert [x["experiments"] for x in left] == [2, 1, 0]
    assert all(7000 < x["seconds"] <= 7200 and x["usd"] == 5.0 for x in left)


def test_a_config_kept_out_of_git_on_purpose_is_fine(tmp_path: Path) -> None:
    """An unchanged upstream checkout (docs/autoresearch.md): the config is ignored through
    .git/info/exclude rather than committed."""
    repo = score_repo_at(tmp_path / "repo", config=False)
    (repo / "overnight.toml").write_text(score_config(proposer="tune"))
    with (repo / ".git" / "info" / "exclude").open("a") as fh:
        fh.write("overnight.toml\n")
    out = run_cli(repo, "run", "-n", "0", "--plain")
    assert out.returncode == 0, out.stderr
