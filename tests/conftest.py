from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Test User")
    git(root, "config", "user.email", "test@example.invalid")
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    return root


def overnight_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("OPENAI_API_KEY", None)
    env.update(extra or {})
    return env


def serial(args: tuple[str, ...] | list[str]) -> list[str]:
    """`overnight run` proposes ahead of the running experiment by default, so a proposal may
    be made before the previous verdict. End-to-end tests of verdicts replay scripts whose
    expectations assume the serial order (propose, run, decide, propose…), so they ask for
    it; run-ahead and parallel slots have their own tests (tests/e2e/test_parallel.py)."""
    args = list(args)
    if args and args[0] == "run" and "--lookahead" not in args:
        args += ["--lookahead", "0"]
    return args


def run_cli(
    repo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "overnight", *serial(args)],
        cwd=repo,
        env=overnight_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_script(path: Path, steps: list[dict]) -> dict[str, str]:
    path.write_text(json.dumps(steps))
    return {"OVERNIGHT_TEST_SCRIPT": str(path)}


SCORE_PY = """\
import os
X = 10
print("step: 1")
print(f"score: {X}")
"""


def score_config(
    name: str = "t",
    budget: str = "10s",
    proposer: str = "support.scripted:ScriptedProposer",
    extra: str = "",
) -> str:
    return (
        textwrap.dedent(f"""\
        [study]
        name = "{name}"
        surface = ["score.py"]
        budget = "{budget}"

        [run]
        command = "python score.py"

        [metric]
        name = "score"
        goal = "minimize"

        [proposer]
        kind = "{proposer}"
        """)
        + extra
    )


@pytest.fixture
def score_repo(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path / "repo",
        {
            "score.py": SCORE_PY,
            "overnight.toml": score_config(),
            "program.md": "Make X small.\n",
            "helper.txt": "locked\n",
        },
    )
