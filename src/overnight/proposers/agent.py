"""The `agent` proposer: a coding-agent CLI (Claude Code, Codex, Aider, ...) edits the surface
in its own worktree, and overnight enforces the rules the agent is only asked to follow.

Each call: reset `.overnight/worktrees/<study>-agent` to the best commit, write the prompt to
a private temporary file, run `[proposer].command` there with the prompt on stdin and in
$OVERNIGHT_PROMPT_FILE under `[proposer].timeout` (the whole process tree is killed), then
read what changed. Surface changes become the proposal; a change to any other file lists it
in `outside_surface`, so the loop records the proposal as `rejected` and never runs it. A
timeout or a non-zero exit makes the proposal `invalid` with the tail of what the agent
printed as the reason: a half-done edit is never used.

The description is the agent's own (`$OVERNIGHT_DESCRIPTION_FILE`), else one derived from
the edit (`describe.py`), never a line of the agent's chatter. With `[proposer]
resume_command`, one agent session is continued across calls (`agent_session.py`).

The agent's environment is the user's, minus the proposer's API key variable unless the
user named it in `[proposer].api_key_env` (then it is the agent's own key, and passed). The
key's value is redacted from the prompt, the transcript and everything else returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from overnight.errors import OvernightError, UsageError
from overnight.git.workspace import git
from overnight.isolation import secrets
from overnight.isolation.redact import Redactor, proposer_key_env
from overnight.isolation.runner import RunOutcome, run_command
from overnight.proposers.agent_session import AgentSession
from overnight.proposers.base import BaseProposer, Context
from overnight.proposers.describe import describe_change
from overnight.proposers.llm.prompts import agent_prompt, one_line, parse_fields
from overnight.store.records import Proposal

# New untracked files that are an agent's or a tool's own bookkeeping, not an edit.
NOISE = (
    "*/__pycache__/*", "__pycache__/*", "*.pyc", ".aider*", ".pytest_cache/*",
    ".ruff_cache/*", ".mypy_cache/*", ".DS_Store", "*/.DS_Store",
)  # fmt: skip
TRANSCRIPT_BYTES = 256 * 1024  # per stream; the head and the tail are kept
RECIPE_HINT = (
    'e.g. command = "claude -p --permission-mode acceptEdits"; recipes: docs/proposers/agent.md'
)
TAIL_LINES, TAIL_CHARS = 12, 1500  # of a failed agent's output, kept as the reason


def _read_capped(path: Path, limit: int = TRANSCRIPT_BYTES) -> str:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ""
    with path.open("rb") as fh:
        if size <= limit:
            return fh.read().decode("utf-8", "replace")
        head = fh.read(limit // 4)
        fh.seek(size - (limit - limit // 4))
        tail = fh.read()
    cut = size - len(head) - len(tail)
    return (head.decode("utf-8", "replace") + f"\n... [{cut} bytes omitted] ...\n"
            + tail.decode("utf-8", "replace"))  # fmt: skip


def _tail(stdout: str, stderr: str) -> str:
    """The end of what a failed agent printed, on one line (` | ` between lines): its error
    output when it wrote any, else its standard output."""
    lines = [ln.strip() for ln in (stderr.strip() or stdout).splitlines() if ln.strip()]
    text = " | ".join(lines[-TAIL_LINES:])
    return text if len(text) <= TAIL_CHARS else "…" + text[-(TAIL_CHARS - 1) :]


class AgentProposer(BaseProposer):
    """Runs an external coding agent as the proposer."""

    name = "agent"

    def __init__(self, seed: int = 0, config: Any = None) -> None:
        if config is None:
            raise UsageError("the agent proposer needs the study configuration")
        p = config.proposer
        if not p.command.strip():
            raise UsageError(
                f'{config.path.name}: [proposer].command: missing (required with kind = "agent"'
                f"; {RECIPE_HINT})"
            )
        self.command: str = p.command
        self.timeout: float = p.timeout
        self.key_env = proposer_key_env(p)
        # Named explicitly, the variable is the agent's own credential: it may have it.
        self.pass_key = bool(p.api_key_env)
        self.redactor = Redactor.from_env(self.key_env)
        self.hidden = {config.holdout.name} if config.holdout.name else set()
        resume = p.resume_command.strip()
        self.session = AgentSession(p.resume_command) if resume else None
        self._stop = threading.Event()

    def describe(self) -> str:
        sessions = ", one session continued across experiments" if self.session else ""
        return f"agent ({self.command}{sessions})"

    def close(self) -> None:
        self._stop.set()  # kills a running agent's tree (run_command watches it)

    # -- one call ----------------------------------------------------------------------------

    def propose(self, ctx: Context) -> Proposal:
        try:
            return self.redactor.proposal(self._propose(ctx))
        except Exception as exc:  # never stop the loop; record why instead
            return self.redactor.proposal(
                Proposal(files={}, description="agent proposer error", proposer=self.name,
                         invalid_reason=f"agent proposer failed: {type(exc).__name__}: {exc}")
            )  # fmt: skip

    def _propose(self, ctx: Context) -> Proposal:
        root = Path(ctx.repo_root)
        tree = AgentWorktree(root, ctx.study)
        worktree = tree.reset(ctx.best_commit)
        # Outside the repository: files the agent reads or writes there are no edit.
        with tempfile.TemporaryDirectory(prefix="overnight-agent-") as tmp:
            tmpdir = Path(tmp)
            prompt_file, description_file = tmpdir / "prompt.md", tmpdir / "description.txt"
            command = self.session.command(self.command) if self.session else self.command
            if self.session is not None:
                text = self.session.prompt(ctx, str(description_file), self.hidden)
            else:
                text = agent_prompt(ctx, str(description_file), self.hidden)
            prompt = self.redactor.text(text)
            prompt_file.write_text(prompt)
            env = self._env(ctx, prompt_file, description_file)
            marker = self._marker(root, ctx.study)
            # `exec <` gives every part of the command (pipes, `;`) the prompt on stdin.
            script = f'exec < "$OVERNIGHT_PROMPT_FILE"\n{command}\n'
            outcome = run_command(
                script, cwd=worktree, env=env, budget_s=self.timeout, marker=marker,
                stdout_path=tmpdir / "stdout", stderr_path=tmpdir / "stderr", stop=self._stop,
            )  # fmt: skip
            stdout, stderr = _read_capped(outcome.stdout_path), _read_capped(outcome.stderr_path)
            written = ""
            if description_file.is_file():
                written = description_file.read_text(errors="replace")
        session = None
        if self.session is not None:
            ok = not (outcome.timed_out or outcome.interrupted or outcome.exit_code)
            session = self.session.finished(ok)
        try:
            return self._proposal(ctx, tree, outcome, command, prompt, stdout, stderr, written,
                                  session)  # fmt: skip
        finally:
            # Leave nothing the agent wrote lying around under .overnight/. An agent that
            # broke its worktree beyond that gets a new one on the next call.
            with contextlib.suppress(OvernightError, OSError):
                tree.reset(ctx.best_commit, create=False)

    def _proposal(
        self, ctx: Context, tree: AgentWorktree, outcome: RunOutcome, command: str, prompt: str,
        stdout: str, stderr: str, written: str, session: dict[str, Any] | None,
    ) -> Proposal:  # fmt: skip
        status = "timed out" if outcome.timed_out else f"exit {outcome.exit_code}"
        transcript = (
            f"$ {command}\n[{status}, {outcome.wall_s:.1f}s]\n"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )
        # Fields come from the description file only: agents echo the prompt, which holds
        # the template of those very lines.
        fields = parse_fields(written)
        first = next((ln.strip() for ln in written.splitlines() if ln.strip()), "")
        if parse_fields(first):
            first = ""  # the file holds only fields; DESCRIPTION (if any) names the change
        description = one_line(fields.get("DESCRIPTION") or first, 120)
        meta: dict[str, Any] = {"command": command, "exit_code": outcome.exit_code,
                                "agent_wall_s": round(outcome.wall_s, 3)}  # fmt: skip
        if session is not None:
            meta["session"] = session
        if fields.get("LESSON"):
            meta["lesson"] = one_line(fields["LESSON"], 300)
            previous = [r.experiment for r in ctx.history if r.experiment > 0]
            meta["lesson_about"] = previous[-1] if previous else 0
        proposal = Proposal(
            files={}, description=description or "agent edit", proposer=self.name,
            hypothesis=one_line(fields.get("HYPOTHESIS", ""), 500),
            rationale=fields.get("RATIONALE", ""), prompt=prompt, response=transcript, meta=meta,
        )  # fmt: skip
        if outcome.interrupted:
            proposal.invalid_reason = "the agent was stopped (overnight is shutting down)"
        elif outcome.timed_out:
            proposal.invalid_reason = (
                f"the agent did not finish within [proposer].timeout = {self.timeout:g}s; its "
                "process tree was killed and its edits discarded"
            )
        elif outcome.exit_code != 0:
            tail = _tail(stdout, stderr)
            proposal.invalid_reason = (
                f"the agent exited with code {outcome.exit_code}; its edits were discarded"
                + (f"; its output ended: {tail}" if tail else "")
            )
        if proposal.invalid_reason:
            return proposal
        changed = tree.changed(ctx.best_commit)
        surface = set(ctx.surface)
        proposal.outside_surface = sorted(p for p in changed if p not in surface)
        for path in sorted(p for p in changed if p in surface):
            file = tree.path / path
            if not file.is_file():
                proposal.invalid_reason = f"the agent deleted the surface file {path}"
                return proposal
            proposal.files[path] = file.read_text(errors="replace")
        if not proposal.files and not proposal.outside_surface:
            tail = _tail(stdout, "")
            proposal.invalid_reason = "the agent changed nothing in the surface" + (
                f"; its output ended: {tail}" if tail else ""
            )
        if not description and proposal.files:
            proposal.description = describe_change(ctx.surface, proposal.files)
        return proposal

    # -- the agent's worktree and environment ------------------------------------------------

    def _env(self, ctx: Context, prompt_file: Path, description_file: Path) -> dict[str, str]:
        env = secrets.environ()  # the agent CLI may need its own credentials
        if self.key_env and not self.pass_key:
            env.pop(self.key_env, None)
        env.update(
            OVERNIGHT_PROMPT_FILE=str(prompt_file),
            OVERNIGHT_DESCRIPTION_FILE=str(description_file),
            OVERNIGHT_SURFACE=" ".join(sorted(ctx.surface)),
            OVERNIGHT_STUDY=ctx.study,
            OVERNIGHT_BEST_COMMIT=ctx.best_commit,
        )
        if self.session is not None:
            env.update(self.session.env())
        return env

    @staticmethod
    def _marker(root: Path, study: str) -> str:
        # The loop's marker prefix, so that a restarted controller kills an orphaned agent.
        return f"overnight:{hashlib.sha1(str(root).encode()).hexdigest()[:10]}:{study}:agent"


class AgentWorktree:
    """The agent's scratch worktree, `.overnight/worktrees/<study>-agent`.

    Every git command overnight runs there names the worktree's git dir and work tree
    explicitly. The worktree lies inside the user's repository, so if an agent deleted or
    replaced its `.git` link, a plain `git checkout -f` there would reach the user's own
    checkout. The link is also restored before each call, so that the agent's own git
    commands stay in its worktree."""

    def __init__(self, root: Path, study: str) -> None:
        self.root = root
        self.path = root / ".overnight" / "worktrees" / f"{study}-agent"
        self.admin: Path | None = None  # <git common dir>/worktrees/<name>

    def _git(self, *args: str) -> str:
        assert self.admin is not None
        env = {**os.environ, "GIT_DIR": str(self.admin), "GIT_WORK_TREE": str(self.path)}
        return git(*args, cwd=self.path, env=env)

    def _find_admin(self) -> Path | None:
        common = Path(git("rev-parse", "--git-common-dir", cwd=self.root).strip())
        common = common if common.is_absolute() else (self.root / common).resolve()
        target = (self.path / ".git").resolve()
        for admin in sorted((common / "worktrees").glob("*")):
            with contextlib.suppress(OSError):
                if Path((admin / "gitdir").read_text().strip()).resolve() == target:
                    return admin
        return None

    def _relink(self) -> None:
        dot = self.path / ".git"
        if dot.is_symlink() or dot.is_file():
            dot.unlink()
        elif dot.is_dir():  # the agent ran `git init` here
            shutil.rmtree(dot)
        dot.write_text(f"gitdir: {self.admin}\n")

    def reset(self, commit: str, create: bool = True) -> Path:
        """The worktree, checked out cleanly at `commit` (made anew when it is broken)."""
        if not self.path.is_symlink() and self.path.is_dir():
            self.admin = self.admin or self._find_admin()
            if self.admin is not None:
                try:
                    self._relink()
                    self._git("checkout", "-q", "-f", "--detach", commit)
                    self._git("clean", "-fdq")
                    return self.path
                except (OvernightError, OSError):
                    if not create:
                        raise
        if not create:
            raise OvernightError(f"the agent's worktree {self.path} is broken")
        if self.path.is_symlink() or self.path.is_file():
            self.path.unlink()
        elif self.path.exists():
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        git("worktree", "prune", cwd=self.root)
        git("worktree", "add", "--force", "--detach", str(self.path), commit, cwd=self.root)
        self.admin = self._find_admin()
        if self.admin is None:
            raise OvernightError(f"git made the worktree {self.path} but not its admin dir")
        return self.path

    def changed(self, base: str) -> list[str]:
        """Files that differ from `base`: edited, deleted, committed by the agent, or new."""
        tracked = self._git("diff", "--name-only", "-z", "--no-renames", base)
        untracked = self._git("ls-files", "--others", "--exclude-standard", "-z")
        new = [p for p in untracked.split("\0") if p and not any(fnmatchcase(p, n) for n in NOISE)]
        return sorted({p for p in tracked.split("\0") if p} | set(new))
