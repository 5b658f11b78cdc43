"""Continuing one coding-agent session across experiments (opt-in: `[proposer]
resume_command`), instead of a fresh agent process with the whole prompt at every call.

The first call of a session runs `[proposer].command` with the whole prompt; each later call
runs `resume_command` with a follow-up prompt that holds only what is new since the agent's
previous call (the experiments decided since, new lessons, a new crash log, and the
instructions or the trace digest when they changed). Both commands get
`$OVERNIGHT_SESSION_ID` (a UUID for the session, e.g. for `claude --session-id`/`--resume`)
and `$OVERNIGHT_SESSION_DIR` (a folder kept for the session outside the worktree, e.g. for an
Aider chat history). A new session starts with every `overnight run` and after any call that
failed (non-zero exit or timeout), so a broken conversation is never continued.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Collection
from pathlib import Path

from overnight.proposers.base import Context
from overnight.proposers.llm.prompts import agent_followup_prompt, agent_prompt


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class AgentSession:
    def __init__(self, resume_command: str) -> None:
        self.resume_command = resume_command
        self.id: str | None = None  # None: the next call starts a session
        self.dir: Path | None = None
        self.calls = 0  # calls made in the current session
        self._seen: set[int] = set()  # experiments the agent has been told about
        self._instructions = ""
        self._digest = ""

    @property
    def continuing(self) -> bool:
        return self.id is not None

    def command(self, first: str) -> str:
        return self.resume_command if self.continuing else first

    def prompt(self, ctx: Context, description_file: str, hidden: Collection[str]) -> str:
        """The whole prompt for a new session, the follow-up for a continued one; starts a
        session when there is none."""
        if not self.continuing:
            self._start(ctx)
            text = agent_prompt(ctx, description_file, hidden)
        else:
            text = agent_followup_prompt(
                ctx, description_file, self._seen, hidden=hidden,
                instructions=_digest(ctx.instructions) != self._instructions,
                digest=_digest(ctx.trace_digest) != self._digest,
            )  # fmt: skip
        self._seen = {r.experiment for r in ctx.history}
        self._instructions = _digest(ctx.instructions)
        self._digest = _digest(ctx.trace_digest)
        return text

    def env(self) -> dict[str, str]:
        assert self.id is not None and self.dir is not None
        return {"OVERNIGHT_SESSION_ID": self.id, "OVERNIGHT_SESSION_DIR": str(self.dir)}

    def finished(self, ok: bool) -> dict[str, object]:
        """Account for a call; a failed one ends the session. What to record about it."""
        self.calls += 1
        meta: dict[str, object] = {"id": self.id, "call": self.calls,
                                   "resumed": self.calls > 1}  # fmt: skip
        if not ok:
            self.id = None
        return meta

    def _start(self, ctx: Context) -> None:
        self.id = str(uuid.uuid4())
        self.calls = 0
        root = Path(ctx.repo_root) / ".overnight" / ctx.study / "agent-session"
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)  # the previous session's
        self.dir = root / self.id
        self.dir.mkdir(parents=True)
