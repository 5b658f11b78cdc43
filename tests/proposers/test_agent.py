"""The `agent` proposer end to end: fake coding-agent executables drive `overnight run`."""

from __future__ import annotations

import dataclasses
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
    # 3: a crashed agent's half-done edit is discarded; the end of its output is the reason.
    assert log[3]["reason"] == (
        "the agent exited with code 3; its edits were discarded; its output ended: "
        "fake agent: internal error, giving up | Traceback (most recent call last): | "
        "RuntimeError: model overloaded"
    )
    # 4: without a description file the edit describes itself; its chatter never does.
    assert log[4]["description"] == "X 9 → 8" and log[4]["value"] == 8
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


DOC = TESTS.parent / "docs" / "proposers" / "agent.md"
QUIET = "--no-check-update --no-analytics --no-show-release-notes"
AIDER = (
    f"LITELLM_LOCAL_MODEL_COST_MAP=True aider --yes-always --no-auto-commits --no-gitignore {QUIET}"
)
CLAUDE = (
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 claude -p --permission-mode acceptEdits "
    '--add-dir "$(dirname "$OVERNIGHT_DESCRIPTION_FILE")"'
)
RECIPES = {  # tool -> (command, description it leads to)
    "claude": (CLAUDE, "claude: lower X to 9"),
    "codex": ("codex exec --sandbox workspace-write --disable plugins --ephemeral -",
              "codex: lower X to 9"),
    "aider": (f'{AIDER} --message-file "$OVERNIGHT_PROMPT_FILE" $OVERNIGHT_SURFACE', "X 10 → 9"),
}  # fmt: skip
SESSION_RECIPES = {  # tool -> (command, resume_command)
    "claude": (f'{CLAUDE} --session-id "$OVERNIGHT_SESSION_ID"',
               f'{CLAUDE} --resume "$OVERNIGHT_SESSION_ID"'),
    "codex": ("codex exec --sandbox workspace-write --disable plugins -",
              "codex exec resume --last -c sandbox_mode=workspace-write --disable plugins -"),
    "aider": (f'{AIDER} --chat-history-file "$OVERNIGHT_SESSION_DIR/chat.md" --message-file '
              '"$OVERNIGHT_PROMPT_FILE" $OVERNIGHT_SURFACE',
              f'{AIDER} --chat-history-file "$OVERNIGHT_SESSION_DIR/chat.md" '
              '--restore-chat-history --message-file "$OVERNIGHT_PROMPT_FILE" $OVERNIGHT_SURFACE'),
}  # fmt: skip


def in_docs(command: str, key: str = "command") -> bool:
    text = DOC.read_text()
    return f"{key} = '{command}'" in text or f'{key} = "{command}"' in text


def context_at_head(repo: Path) -> Context:
    baseline = ExperimentRecord(0, "keep", 10.0, {}, None, None, "baseline", "", 0.1, "")
    return Context(
        study="t", instructions="Make X small.", surface={"score.py": SCORE}, metric="score",
        goal="minimize", budget_s=10, best_experiment=0, best_value=10.0, baseline_value=10.0,
        history=[baseline], best_commit=git(repo, "rev-parse", "HEAD"), repo_root=str(repo),
    )  # fmt: skip


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-ins of the real CLIs on PATH, with a home of their own; returns the log of
    connections they would have opened besides the model's."""
    monkeypatch.setenv("PATH", f"{FAKE / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CODEX_HOME", raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home" / ".fake-agents-network.log"


def propose_with(repo: Path, command: str, resume: str = "") -> AgentProposer:
    cfg = Study.open(repo / "overnight.toml").cfg
    cfg.proposer.command, cfg.proposer.resume_command = command, resume
    return AgentProposer(config=cfg)


@pytest.mark.parametrize("tool", sorted(RECIPES))
def test_documented_recipes_run(tool: str, tmp_path: Path, stand_ins: Path) -> None:
    """The commands of docs/proposers/agent.md, against stand-ins that parse arguments like
    the real CLIs, through the real proposer in-process (the CLI path is covered above):
    a valid proposal, a meaningful description, no connection but the model's."""
    command, description = RECIPES[tool]
    assert in_docs(command)
    repo = agent_repo(tmp_path / "repo", command)
    proposal = propose_with(repo, command).propose(context_at_head(repo))
    assert proposal.invalid_reason is None, proposal.response
    assert proposal.outside_surface == []  # aider's history files are no edit
    assert proposal.files == {"score.py": SCORE.replace("10", "9")}
    assert proposal.description == description
    assert not stand_ins.exists(), stand_ins.read_text()  # nothing phoned home


@pytest.mark.parametrize(("command", "reason"), [
    # Codex 0.171 has no --full-auto: clap refuses it, and the whole error is the reason.
    ("codex exec --full-auto -",
     "the agent exited with code 2; its edits were discarded; its output ended: error: "
     "unexpected argument '--full-auto' found | tip: to pass '--full-auto' as a value, use "
     "'-- --full-auto' | Usage: codex exec [OPTIONS] [PROMPT] | codex exec [OPTIONS] "
     "<COMMAND> [ARGS] | For more information, try '--help'."),
    ("codex exec --sandbox workspace_write -",
     "the agent exited with code 2; its edits were discarded; its output ended: error: "
     "invalid value 'workspace_write' for '--sandbox <SANDBOX_MODE>' | [possible values: "
     "read-only, workspace-write, danger-full-access] | For more information, try '--help'."),
    # `exec resume` has no --sandbox: a resume command must set the sandbox with -c.
    ("codex exec resume --last --sandbox workspace-write -", "unexpected argument '--sandbox'"),
    ("codex exec --disable plugin -", "Error: Unknown feature flag: plugin"),
    ("codex exec -", "changed nothing in the surface; its output ended: The sandbox is "
                     "read-only, so I could not edit score.py."),
    ("claude -p --permission-mode accept-edits", "error: option '--permission-mode <mode>' "
                                                 "argument 'accept-edits' is invalid."),
    ("claude -p --yes", "error: unknown option '--yes'"),
    ("claude -p", "changed nothing in the surface; its output ended: I need your permission"),
    ('aider --yes --message-file "$OVERNIGHT_PROMPT_FILE" --no-auto-commit --no-git-ignore '
     "$OVERNIGHT_SURFACE", "aider: error: unrecognized arguments: --no-git-ignore"),
    ('aider --yes-always --message-file "$OVERNIGHT_PROMPT_FILE" --model', "aider: error: "
     "argument --model: expected one argument"),
])  # fmt: skip
def test_broken_recipes_fail_like_the_real_tools(
    command: str, reason: str, tmp_path: Path, stand_ins: Path
) -> None:
    repo = agent_repo(tmp_path / "repo", command)
    proposal = propose_with(repo, command).propose(context_at_head(repo))
    assert proposal.invalid_reason is not None and reason in proposal.invalid_reason, (
        proposal.invalid_reason
    )
    assert proposal.files == {} or "changed nothing" not in reason


def test_the_old_recipes_leak_files_descriptions_and_connections(
    tmp_path: Path, stand_ins: Path
) -> None:
    """What the recipes of the previous docs did with the real tools: Aider without
    --no-gitignore edits .gitignore (rejected), and phones home; Claude Code cannot write
    the description file without --add-dir, and sends telemetry."""
    repo = agent_repo(tmp_path / "repo", "x")
    aider = propose_with(repo, 'aider --yes-always --no-auto-commits --message-file '
                               '"$OVERNIGHT_PROMPT_FILE" $OVERNIGHT_SURFACE')  # fmt: skip
    proposal = aider.propose(context_at_head(repo))
    assert proposal.outside_surface == [".gitignore"]
    assert "Tokens:" in proposal.response and proposal.description == "X 10 → 9"
    hosts = {line.split("\t")[1] for line in stand_ins.read_text().splitlines()}
    assert hosts == {"us.i.posthog.com", "pypi.org", "raw.githubusercontent.com"}
    stand_ins.unlink()
    claude = propose_with(repo, "claude -p --permission-mode acceptEdits")
    proposal = claude.propose(context_at_head(repo))
    assert proposal.invalid_reason is None
    assert "haven't granted it yet" in proposal.response and proposal.description == "X 10 → 9"
    assert stand_ins.read_text().split("\t")[1] == "statsig.anthropic.com"


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


def decided(ctx: Context, n: int, status: str, value: float | None, reason: str = "") -> Context:
    """`ctx` after experiment n was decided."""
    rec = ExperimentRecord(n, status, value, {}, None, None, f"try {n}", reason, 0.1, "agent")
    return dataclasses.replace(ctx, history=[*ctx.history, rec])


@pytest.mark.parametrize("tool", sorted(SESSION_RECIPES))
def test_one_session_continued_across_calls(tool: str, tmp_path: Path, stand_ins: Path) -> None:
    """With resume_command the first call starts a session and later calls continue it
    with a follow-up prompt; a failed call ends it, and the next call starts anew."""
    command, resume = SESSION_RECIPES[tool]
    assert in_docs(command) and in_docs(resume, "resume_command")
    repo = agent_repo(tmp_path / "repo", command)
    proposer = propose_with(repo, command, resume)
    ctx = context_at_head(repo)
    first = proposer.propose(ctx)
    ctx = decided(ctx, 1, "discard", 9.0, "not better than the best")
    second = proposer.propose(ctx)
    ctx = decided(ctx, 2, "crash", None, "exit 1")
    third = proposer.propose(ctx)
    for p in (first, second, third):
        assert p.invalid_reason is None and p.files == {"score.py": SCORE.replace("10", "9")}
    sessions = [p.meta["session"] for p in (first, second, third)]
    assert [s["call"] for s in sessions] == [1, 2, 3] and len({s["id"] for s in sessions}) == 1
    assert [p.meta["command"] for p in (first, second, third)] == [command, resume, resume]
    # The follow-up holds what is new, not the instructions and history again.
    assert "Make X small." in first.prompt and "Make X small." not in second.prompt
    assert "# Decided since your last proposal\n- #1 discard" in second.prompt
    assert "reason: not better than the best" in second.prompt and "#1 discard" not in third.prompt
    assert "#2 crash" in third.prompt and len(second.prompt) < len(first.prompt)
    # The tool kept one conversation of three turns.
    turns = {"claude": "turn 3 of this session", "codex": "session id: ",
             "aider": "(2 earlier messages restored)"}  # fmt: skip
    assert turns[tool] in third.response
    if tool == "codex":
        ids = {line.split(": ")[1] for p in (first, second, third)
               for line in p.response.splitlines() if line.startswith("session id: ")}
        assert len(ids) == 1  # `--last` found the session the first call started
    # A call that fails ends the session: the next one starts a new one with `command`.
    proposer.session.resume_command = "exit 7"
    failed = proposer.propose(decided(ctx, 3, "discard", 9.0))
    assert "exited with code 7" in failed.invalid_reason
    fresh = proposer.propose(decided(ctx, 4, "invalid", None))
    assert fresh.meta["command"] == command and fresh.meta["session"]["call"] == 1
    assert fresh.meta["session"]["id"] != sessions[0]["id"] and "Make X small." in fresh.prompt
    assert not stand_ins.exists()


def test_sessions_through_overnight_run(tmp_path: Path) -> None:
    """`overnight run` with the Claude session recipe: kept experiments, one session."""
    command, resume = SESSION_RECIPES["claude"]
    extra = f"resume_command = {json.dumps(resume)}\n"
    repo = agent_repo(tmp_path / "repo", command, extra=extra)
    (tmp_path / "home").mkdir()
    env = {"PATH": f"{FAKE / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "HOME": str(tmp_path / "home"), "ENV_DUMP_DIR": str(tmp_path)}  # fmt: skip
    out = run_cli(repo, "run", "-n", "3", "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = log_json(repo)
    assert [r["status"] for r in log] == ["keep"] * 4
    assert [r["description"] for r in log[1:]] == [f"claude: lower X to {n}" for n in (9, 8, 7)]
    metas = [show(repo, n)["meta"]["session"] for n in (1, 2, 3)]
    assert [m["call"] for m in metas] == [1, 2, 3] and len({m["id"] for m in metas}) == 1
    transcript = (repo / ".overnight" / "t" / "experiments" / "3" / "response.txt").read_text()
    assert "--resume" in transcript and "turn 3 of this session" in transcript


def test_the_follow_up_prompt_reports_experiments_decided_out_of_order(tmp_path: Path) -> None:
    """Parallel slots decide experiments out of order: one decided late is still reported."""
    from overnight.proposers.llm.prompts import agent_followup_prompt

    repo = agent_repo(tmp_path / "repo", "true")
    ctx = decided(decided(context_at_head(repo), 2, "discard", 9.5), 1, "keep", 9.0)
    text = agent_followup_prompt(ctx, "/d/description.txt", {0, 2}, instructions=False,
                                 digest=False)  # fmt: skip
    assert "- #1 keep" in text and "#2 discard" not in text and "#0" not in text
    assert "Make X small." not in text and "(/d/description.txt)" in text
    changed = agent_followup_prompt(ctx, "/d/description.txt", {0, 1, 2}, instructions=True,
                                    digest=False)  # fmt: skip
    assert "Nothing yet" in changed and "# Instructions from the user (changed)" in changed
