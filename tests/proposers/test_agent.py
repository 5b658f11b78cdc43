"""The `agent` proposer end to end: fake coding-agent executables drive `overnight run`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import TESTS, git, make_repo, run_cli, score_config

from overnight.proposers.agent import AgentProposer
from overnight.proposers.base import Context
from overnight.store.records import ExperimentRecord
from overnight.store.study import Study

FAKE = TESTS / "support" / "fake_agents"
CANARY = "test-canary-not-a-key-7f3a9c2e51d04b8b"
SCORE = "import os\nX = 10\nprint(f'score: {X}')\n"
DUMP_ENV = (
    "import json, os\n"
    "path = os.path.join(os.environ['ENV_DUMP_DIR'], f\"env-{os.environ['OVERNIGHT_EXPERIMENT']}"
    '-{os.getpid()}.json")\n'
    "json.dump(dict(os.environ), open(path, 'w'))\n"
)


def agent_repo(root: Path, command: str, extra: str = "", timeout: str = "20s") -> Path:
    cfg = score_config(proposer="agent", extra=extra).replace(
        'command = "python score.py"', 'command = "python dump_env.py && python score.py"'
    )
    cfg += f"command = {json.dumps(command)}\ntimeout = {json.dumps(timeout)}\n"
    return make_repo(root, {
        "score.py": SCORE, "overnight.toml": cfg, "program.md": "Make X small.\n",
        "helper.txt": "locked\n", "dump_env.py": DUMP_ENV,
    })  # fmt: skip


# Reads go through the library in-process: a CLI call per read would cost a second.
def log_json(repo: Path) -> list[dict]:
    return [r.public() for r in Study.open(repo / "overnight.toml").log()]


def show(repo: Path, n: int) -> dict:
    return Study.open(repo / "overnight.toml").show(n)


def files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def dumped_envs(dump: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(dump.glob("env-*.json"))]


def test_agent_outcomes_keep_reject_invalid_and_timeout(tmp_path: Path) -> None:
    """One study through five agents: edit → keep, other files → rejected (never run),
    crash → invalid, no description file → last line, hang → killed at the timeout."""
    repo = agent_repo(tmp_path / "repo", f"{sys.executable} {FAKE / 'sequence.py'}", timeout="2s")
    start = git(repo, "rev-parse", "HEAD")
    dump = tmp_path / "env"
    dump.mkdir()
    env = {
        "FAKE_PLAN": "edit_surface,edit_other,crash,last_line,hang",
        "FAKE_STATE": str(tmp_path / "counter"), "FAKE_PIDS": str(tmp_path / "pids"),
        "ENV_DUMP_DIR": str(dump), "ANTHROPIC_API_KEY": CANARY,
    }  # fmt: skip
    out = run_cli(repo, "run", "-n", "5", "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "proposer: agent" in out.stdout

    log = log_json(repo)
    assert [r["status"] for r in log] == ["keep", "keep", "rejected", "invalid", "keep", "invalid"]
    assert all(r["proposer"] == "agent" for r in log[1:])
    # 1: the description file names the change; hypothesis and lesson are kept.
    assert log[1]["description"] == "lower X from 10 to 9"
    one = show(repo, 1)
    assert one["hypothesis"].startswith("the score is X itself")
    assert one["meta"]["lesson"] == "lowering X has worked so far"
    assert log[1]["value"] == 9
    # 2: changes outside the surface are listed and the candidate never ran.
    assert log[2]["reason"] == "changed files outside the surface: helper.txt, notes.txt"
    exp = repo / ".overnight" / "t" / "experiments"
    assert not (exp / "2" / "run.stdout").exists()
    # 3: a crashed agent's half-done edit is discarded.
    assert "exited with code 3" in log[3]["reason"] and "internal error" in log[3]["reason"]
    # 4: without a description file, the last output line describes the change.
    assert log[4]["description"] == "Set X to 8 (was 9)" and log[4]["value"] == 8
    # 5: the hung agent and its child are killed at [proposer].timeout.
    assert "did not finish within [proposer].timeout = 2s" in log[5]["reason"]
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    deadline = time.monotonic() + 5
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids):
        assert time.monotonic() < deadline, "the agent's process tree survived its timeout"
        time.sleep(0.05)

    # The transcript is stored as the proposal's trace; the prompt reached the agent.
    transcript = (exp / "1" / "response.txt").read_text()
    assert "done editing" in transcript and "--- stderr ---" in transcript
    names = next(ln for ln in transcript.splitlines() if ln.startswith("env-names: "))
    assert "OVERNIGHT_PROMPT_FILE" in names and "OVERNIGHT_DESCRIPTION_FILE" in names
    assert "ANTHROPIC_API_KEY" not in names  # the proposer's key is not the agent's
    prompt = (exp / "4" / "prompt.txt").read_text()
    assert "Make X small." in prompt and "# Your task" in prompt
    assert "#2 rejected" in prompt and "helper.txt" in prompt  # it learns from rejections
    assert "#3 invalid" in prompt and "exited with code 3" in prompt

    # Nothing leaks, and nothing of the agent's is left in its worktree or the checkout.
    assert files_containing(repo / ".overnight", CANARY) == []
    assert all("ANTHROPIC_API_KEY" not in e for e in dumped_envs(dump))
    worktree = repo / ".overnight" / "worktrees" / "t-agent"
    assert git(worktree, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "HEAD") == start and git(repo, "status", "--porcelain") == ""
    assert git(repo, "show", "overnight/t:score.py") == SCORE.replace("10", "8").strip()


def test_agent_key_passed_only_when_named_and_always_redacted(tmp_path: Path) -> None:
    extra = 'api_key_env = "OVN_AGENT_CRED"\n'
    repo = agent_repo(tmp_path / "repo", f"{sys.executable} {FAKE / 'edit_surface.py'}", extra)
    dump = tmp_path / "env"
    dump.mkdir()
    env = {"OVN_AGENT_CRED": CANARY, "FAKE_ECHO_KEY": "OVN_AGENT_CRED", "ENV_DUMP_DIR": str(dump)}
    out = run_cli(repo, "run", "-n", "1", "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    assert log[1]["status"] == "keep"
    # The agent had the key (named explicitly), echoed it, and it was redacted everywhere.
    assert log[1]["description"] == "lower X from 10 to 9 [REDACTED:OVN_AGENT_CRED]"
    transcript = (repo / ".overnight" / "t" / "experiments" / "1" / "response.txt").read_text()
    assert "key seen by the agent: [REDACTED:OVN_AGENT_CRED]" in transcript
    assert files_containing(repo / ".overnight", CANARY) == []
    assert CANARY not in git(repo, "log", "--format=%B", "overnight/t")
    # Runs never get it.
    envs = dumped_envs(dump)
    assert len(envs) == 2 and all("OVN_AGENT_CRED" not in e for e in envs)


RECIPES = {
    "claude": "claude -p --permission-mode acceptEdits",
    "codex": "codex exec --full-auto -",
    "aider": (
        "aider --yes-always --no-auto-commits --no-gitignore --no-check-update "
        '--message-file "$OVERNIGHT_PROMPT_FILE" $OVERNIGHT_SURFACE'
    ),
}


def context_at_head(repo: Path) -> Context:
    baseline = ExperimentRecord(0, "keep", 10.0, {}, None, None, "baseline", "", 0.1, "")
    return Context(
        study="t", instructions="Make X small.", surface={"score.py": SCORE}, metric="score",
        goal="minimize", budget_s=10, best_experiment=0, best_value=10.0, baseline_value=10.0,
        history=[baseline], best_commit=git(repo, "rev-parse", "HEAD"), repo_root=str(repo),
    )  # fmt: skip


@pytest.mark.parametrize("tool", sorted(RECIPES))
def test_documented_recipes_run(tool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands of docs/proposers/agent.md, against shims with each CLI's interface,
    through the real proposer in-process (the CLI path is covered above)."""
    docs = (TESTS.parent / "docs" / "proposers" / "agent.md").read_text()
    assert RECIPES[tool] in docs
    repo = agent_repo(tmp_path / "repo", RECIPES[tool])
    monkeypatch.setenv("PATH", f"{FAKE / 'bin'}{os.pathsep}{os.environ['PATH']}")
    proposer = AgentProposer(config=Study.open(repo / "overnight.toml").cfg)
    proposal = proposer.propose(context_at_head(repo))
    assert proposal.invalid_reason is None, proposal.response
    assert proposal.outside_surface == []  # aider's history files are no edit
    assert proposal.files == {"score.py": SCORE.replace("10", "9")}
    assert tool in proposal.description


def test_an_agent_that_breaks_its_git_link_never_reaches_the_users_checkout(
    tmp_path: Path,
) -> None:
    """The worktree sits inside the user's repository: with its `.git` link gone, a plain
    `git checkout -f` there would act on the user's checkout."""
    repo = agent_repo(tmp_path / "repo", "rm -f .git && sed -i 's/X = 10/X = 9/' score.py")
    (repo / "untracked.txt").write_text("the user's\n")
    proposer = AgentProposer(config=Study.open(repo / "overnight.toml").cfg)
    first = proposer.propose(context_at_head(repo))
    assert first.invalid_reason is None and first.files == {"score.py": SCORE.replace("10", "9")}
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert (repo / "untracked.txt").read_text() == "the user's\n"
    proposer.command = "git init -q && echo hi > notes.txt"  # a nested repository
    second = proposer.propose(context_at_head(repo))
    assert second.outside_surface == ["notes.txt"]
    proposer.command = f"{sys.executable} {FAKE / 'edit_surface.py'}"
    third = proposer.propose(context_at_head(repo))
    assert third.invalid_reason is None and third.files == {"score.py": SCORE.replace("10", "9")}
    worktree = repo / ".overnight" / "worktrees" / "t-agent"
    assert (worktree / ".git").is_file() and git(worktree, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"


def test_agent_without_command_is_a_usage_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": SCORE, "overnight.toml": score_config(proposer="agent"),
    })  # fmt: skip
    out = run_cli(repo, "run", "-n", "1")
    assert out.returncode == 2
    assert "[proposer].command" in out.stderr and "claude -p" in out.stderr
