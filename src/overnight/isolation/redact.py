"""Keep the proposer's API key out of everything overnight stores.

The key lives only in the controller's memory. The loop already drops its variable from
every run's environment; the proposers pass what they return (prompt, response, transcript,
description, rationale, reasons, files) through a `Redactor` first, so that the key's exact
value never reaches the ledger, the experiment folders or a commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from overnight.isolation import secrets
from overnight.store.records import Proposal

DEFAULT_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
# Shorter values would redact ordinary words and digits all over the logs; real API keys
# are far longer than this.
MIN_SECRET_LEN = 8


def proposer_key_env(proposer_cfg: Any) -> str:
    """The environment variable that holds the proposer's API key ("" when none applies)."""
    named = getattr(proposer_cfg, "api_key_env", "") or ""
    if named:
        return named
    return DEFAULT_KEY_ENV.get(getattr(proposer_cfg, "provider", ""), "")


class Redactor:
    """Replaces the exact values of named secrets with `[REDACTED:<NAME>]`."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        pairs = [(v, n) for n, v in secrets.items() if v and len(v) >= MIN_SECRET_LEN]
        self._pairs = sorted(pairs, key=lambda p: -len(p[0]))

    @classmethod
    def from_env(cls, *names: str, environ: Mapping[str, str] | None = None) -> Redactor:
        env = secrets.environ() if environ is None else environ
        return cls({name: env.get(name, "") for name in names if name})

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def text(self, value: str) -> str:
        for secret, name in self._pairs:
            if secret in value:
                value = value.replace(secret, f"[REDACTED:{name}]")
        return value

    def any(self, value: Any) -> Any:
        """`value` with every string inside it (dict keys too) redacted."""
        if not self._pairs:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.any(k): self.any(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.any(v) for v in value)
        return value

    def proposal(self, proposal: Proposal) -> Proposal:
        """Redact every text field of `proposal` in place (files included: a key must
        never be committed) and return it."""
        if not self._pairs:
            return proposal
        for f in fields(proposal):
            setattr(proposal, f.name, self.any(getattr(proposal, f.name)))
        return proposal


def run_environment(cfg: Any, environ: dict[str, str]) -> dict[str, str]:
    """The base environment every run gets (DESIGN §4.4): the user's, without secret-looking
    variables (unless in `[run].pass_env`) and never with the proposer's API key."""
    from overnight.isolation.runner import scrub_env

    key_env = proposer_key_env(cfg.proposer)
    return scrub_env(environ, cfg.run.pass_env, drop=[key_env] if key_env else [])
