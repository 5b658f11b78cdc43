"""A command line that never crashes: every usage mistake of every command is exit 2 with
one line naming it (and a suggestion where one fits), never a traceback; and the smaller
rough edges a user meets (README "Exit codes")."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import typer
from conftest import make_repo, run_cli, score_config, write_script

from overnight import __version__
from overnight.cli.app import app

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def assert_usage_error(out: object, *words: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)  # type: ignore[attr-defined]
    err: str = out.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err and "Traceback" not in out.stdout  # type: ignore[attr-defined]
    assert err.count("\n") == 1, err  # one line
    for word in words:
        assert word in err, err


def test_every_command_is_covered() -> None:
    assert set(COMMANDS) >= {"init", "run", "status", "log", "show", "report", "serve",
                             "verify", "finish", "apply"}  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_flag_is_a_usage_error(command: str, tmp_path: Path) -> None:
    out = run_cli(tmp_path, command, "--no-such-flag")
    assert_usage_error(out, "No such option: --no-such-flag", f"overnight {command} --help")


@pytest.mark.parametrize("command", COMMANDS)
def test_short_help_works_for_every_command(command: str, tmp_path: Path) -> None:
    out = run_cli(tmp_path, command, "-h")
    assert out.returncode == 0 and out.stdout.startswith(f"Usage: overnight {command}")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["frobnicate"], ["No such command 'frobnicate'"]),
        (["stauts"], ["Did you mean 'status'?"]),
        (["run", "--experimets", "3"], ["--experimets", "did you mean --experiments?"]),
        (["show"], ["Missing argument 'N'"]),
        (["show", "abc"], ["'abc' is not a valid int"]),
        (["apply"], ["Missing argument 'N'"]),
        (["run", "--workers", "0"], ["--workers", "0 is not in the range x>=1"]),
        (["run", "--experiments", "-1"], ["--experiments", "x>=0"]),
        (["run", "--hours", "0"], ["--hours: expected a positive number"]),
        (["run", "--max-cost", "-1"], ["--max-cost"]),
        (["serve", "--port", "70000"], ["--port"]),
        (["init", "--goal", "up"], ['--goal: expected "minimize" or "maximize"']),
        (["init", "--surface", ""], ["--surface: expected a file name"]),
        (["init", "--name", "a b"], ["--name: expected a name of letters"]),
        (["init", "--metric", "val loss"], ["--metric: expected a metric name"]),
        (["run", "--patience", "0"], ["--patience", "x>=1"]),
        (["report", "--out"], ["--out", "requires an argument"]),
        (["status", "extra"], ["unexpected extra argument"]),
    ],
)  # fmt: skip
def test_usage_mistakes(args: list[str], words: list[str], tmp_path: Path) -> None:
    assert_usage_error(run_cli(tmp_path, *args), *words)


def test_bare_overnight_prints_the_help(tmp_path: Path) -> None:
    out = run_cli(tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("Usage: overnight")
    assert "status" in out.stdout and out.stderr == ""


def test_version(tmp_path: Path) -> None:
    for flag in ("--version", "--version --help"):
        out = run_cli(tmp_path, *flag.split())
        assert out.returncode == 0 and out.stdout == f"overnight {__version__}\n"


def test_errors_name_the_flag_a_value_came_from(score_repo: Path) -> None:
    out = run_cli(score_repo, "run", "--proposer", "llm", "-n", "1", env={"ANTHROPIC_API_KEY": ""})
    assert_usage_error(out, "--proposer llm:", "ANTHROPIC_API_KEY")
    assert "[proposer].kind" not in out.stderr  # the file did not choose llm; the flag did
    assert_usage_error(run_cli(score_repo, "run", "--proposer", "nope"),
                       "--proposer nope: unknown proposer 'nope'")  # fmt: skip
    assert_usage_error(run_cli(score_repo, "run", "--executor", "nope"),
                       "--executor nope: unknown executor 'nope'")  # fmt: skip
    assert not (score_repo / ".overnight" / "t" / "ledger.sqlite").exists()  # nothing changed


def test_serve_on_a_busy_port_says_so_before_any_url(score_repo: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_cli(score_repo, "serve", "--port", str(port))
    assert_usage_error(out, f"--port {port}", "already in use")
    assert "http://" not in out.stdout


def test_init_outside_a_git_repository_says_what_to_do(tmp_path: Path) -> None:
    out = run_cli(tmp_path, "init", "--surface", "train.py")
    assert out.returncode == 0, out.stderr
    assert "is not a git repository" in out.stdout and "git init" in out.stdout
    assert (tmp_path / "overnight.toml").exists()


# -- what the reading commands print -------------------------------------------------------

MARKUP = "try [/tmp] and [bold]x[/bold] with [proposer].max_tokens"


def test_log_and_run_print_markup_like_text_as_it_is(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": "X = 10\nprint(f'score: {X}')\n", "overnight.toml": score_config(),
    })  # fmt: skip
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": "X = 9\nprint(f'score: {X}')\n"}, "description": MARKUP},
        {"files": {}, "invalid_reason": MARKUP, "description": "no edit"},
    ])  # fmt: skip
    run = run_cli(repo, "run", "-n", "2", "--plain", env=env)
    assert run.returncode == 0, run.stderr
    assert MARKUP in run.stdout
    out = run_cli(repo, "log")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert MARKUP in lines[2] and lines[3].endswith(f"no edit — {MARKUP}")


def test_show_prints_times_as_people_read_them(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": "X = 10\nprint(f'score: {X}')\n", "overnight.toml": score_config(),
    })  # fmt: skip
    step = {"files": {}, "invalid_reason": "nothing to try", "description": "x"}
    env = write_script(tmp_path / "s.json", [step])
    assert run_cli(repo, "run", "-n", "1", "--plain", env=env).returncode == 0
    base = run_cli(repo, "show", "0").stdout
    assert re.search(r"wall: \d+\.\d{1,2}s ", base), base
    invalid = run_cli(repo, "show", "1").stdout
    assert "wall: —" in invalid and "None" not in invalid


def test_status_counts_keeps_apart_from_the_baseline(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": "X = 10\nprint(f'score: {X}')\n", "overnight.toml": score_config(),
    })  # fmt: skip
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": "X = 9\nprint(f'score: {X}')\n"}, "description": "X 9"},
    ])  # fmt: skip
    assert run_cli(repo, "run", "-n", "1", "--plain", env=env).returncode == 0
    text = run_cli(repo, "status").stdout
    assert "keep 1 (+ baseline)" in text  # as the report and its plot count them
