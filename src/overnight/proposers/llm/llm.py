"""The `llm` proposer: a model behind an API (Anthropic, OpenAI, or any OpenAI-compatible
server through `base_url`) reads the study's context and replies with SEARCH/REPLACE edits.

Whatever goes wrong with the model becomes an `invalid` proposal with the precise reason,
never an exception in the loop: provider faults after the retries, replies cut off at the
token limit, malformed or non-matching blocks, edits outside the surface. The reason is shown
to the model in the next prompt's history. The API key is redacted from everything returned.
"""

from __future__ import annotations

import json
import os
import random
import threading
from typing import Any

from overnight.errors import UsageError
from overnight.isolation import secrets
from overnight.isolation.redact import Redactor, proposer_key_env
from overnight.proposers.base import BaseProposer, Context
from overnight.proposers.llm.edits import EditError, apply_edits, reapply_blocks
from overnight.proposers.llm.pricing import cost_usd, price_for
from overnight.proposers.llm.prompts import llm_prompt, one_line, parse_fields
from overnight.proposers.llm.providers import (
    CallFailed,
    Completion,
    Provider,
    call_with_retries,
    make_provider,
)
from overnight.store.records import Proposal

DEFAULT_MODEL = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4.1"}
# Surfaces up to this many lines may be rewritten whole instead of with blocks.
WHOLE_FILE_LINES = 200
# Base of the exponential backoff between retries, in seconds. An environment variable and
# not a config key because only tests (and the impatient) want to change it.
BACKOFF_ENV = "OVERNIGHT_LLM_BACKOFF_S"
# After a call failed for good, the next one waits base * 2**failures (capped): a dead
# server or a wrong key must not make the loop spin through thousands of experiments.
COOLDOWN_CAP_S = 600.0
# Input tokens assumed for the --max-cost estimate before the first call has been measured.
FIRST_CALL_INPUT_TOKENS = 8000
# A key-less local server (Ollama, llama.cpp) still needs some string for the SDK.
LOCAL_KEY = "not-needed"


def missing_key_message(cfg_name: str, provider: str, key_env: str) -> str:
    return (
        f"the llm proposer with provider {provider!r} ({cfg_name}: [proposer].provider) needs "
        f"an API key in the environment variable {key_env}, which is not set. Export it "
        f"(export {key_env}=...), name another variable with [proposer].api_key_env, "
        'or use the tune proposer (kind = "tune", or --proposer tune) to search without a '
        "model."
    )


class LLMProposer(BaseProposer):
    """Proposals from a chat model, as SEARCH/REPLACE blocks against the best surface."""

    name = "llm"
    concurrent = True  # independent HTTP calls; the counters it keeps tolerate races

    def __init__(self, seed: int = 0, config: Any = None, provider: Provider | None = None) -> None:
        if config is None:
            raise UsageError("the llm proposer needs the study configuration")
        p = config.proposer
        cfg_name = config.path.name
        self.provider_name: str = p.provider
        self.base_url: str = p.base_url
        self.model: str = p.model or ("" if p.base_url else DEFAULT_MODEL[p.provider])
        if not self.model:
            raise UsageError(
                f"{cfg_name}: [proposer].model: missing (required with base_url: the model "
                'name the server knows, e.g. model = "qwen2.5-coder:14b" for Ollama)'
            )
        if p.provider == "anthropic" and p.temperature > 1:
            raise UsageError(
                f"{cfg_name}: [proposer].temperature: expected a number from 0 to 1 for "
                f"provider anthropic, got {p.temperature:g}"
            )
        self.key_env = proposer_key_env(p)
        key = secrets.get(self.key_env)
        if not key:
            if not (p.base_url and not p.api_key_env):
                raise UsageError(missing_key_message(cfg_name, p.provider, self.key_env))
            key = LOCAL_KEY
        self.redactor = Redactor({self.key_env: key})
        self.max_tokens: int = p.max_tokens
        # Anthropic's newer models reject sampling parameters, so its default is the model's
        # own; OpenAI-compatible servers get the configured value (default 0.7) as before.
        chosen = "temperature" in p.model_fields_set
        self.temperature: float | None = p.temperature
        if p.provider == "anthropic" and not chosen:
            self.temperature = None
        self.max_retries: int = p.max_retries
        self.price = price_for(self.model, p.prices)
        self.hidden = {config.holdout.name} if config.holdout.name else set()
        self.rng = random.Random(seed)
        self.backoff_s = float(os.environ.get(BACKOFF_ENV) or 1.0)
        self.failures = 0  # calls in a row that failed for good
        self.last_input_tokens = 0
        self._closed = threading.Event()
        self.provider = provider or make_provider(p.provider, key, p.base_url, p.timeout)

    def describe(self) -> str:
        where = f" at {self.base_url}" if self.base_url else ""
        return f"llm ({self.provider_name} {self.model}{where})"

    def rebase(self, proposal: Proposal, surface: dict[str, str]) -> dict[str, str] | None:
        """The reply's own SEARCH/REPLACE blocks, applied again to the newer best."""
        return reapply_blocks(proposal.response, surface)

    def close(self) -> None:
        self._closed.set()
        self.provider.close()

    def next_cost_estimate(self) -> float:
        """The most the next call may cost: its prompt (as large as the last one, plus a
        margin) and a reply of max_tokens. The loop stops before a call that could exceed
        --max-cost."""
        if self.price is None:
            return 0.0
        tokens_in = int((self.last_input_tokens or FIRST_CALL_INPUT_TOKENS) * 1.1)
        return cost_usd({"input_tokens": tokens_in, "output_tokens": self.max_tokens}, self.price)

    # -- proposing ---------------------------------------------------------------------------

    def propose(self, ctx: Context) -> Proposal:
        prompt: str | None = None
        try:
            whole = sum(len(t.splitlines()) for t in ctx.surface.values()) <= WHOLE_FILE_LINES
            system, user = llm_prompt(ctx, whole, self.hidden)
            # The key never reaches the model either (a surface or program.md may hold it).
            system, user = self.redactor.text(system), self.redactor.text(user)
            prompt = f"[system]\n{system}\n\n[user]\n{user}\n"
            return self.redactor.proposal(self._propose(ctx, system, user, prompt, whole))
        except Exception as exc:  # a bug here must not stop the loop; record it instead
            reason = f"llm proposer failed: {type(exc).__name__}: {exc}"
            return self.redactor.proposal(
                Proposal(
                    files={},
                    description="llm proposer error",
                    invalid_reason=reason,
                    prompt=prompt,
                    proposer=self.name,
                )  # fmt: skip
            )

    def _propose(self, ctx: Context, system: str, user: str, prompt: str, whole: bool) -> Proposal:
        meta: dict[str, Any] = {"model": self.model, "provider": self.provider_name}
        if self.price is None:
            meta["cost_note"] = (
                f"no price known for model {self.model!r}: cost counted as 0 "
                "(set [proposer].prices to count it)"
            )
        if self.failures:
            self._closed.wait(min(COOLDOWN_CAP_S, self.backoff_s * 2**self.failures))
        log: list[dict[str, Any]] = []
        try:
            done, attempts = call_with_retries(
                lambda: self.provider.complete(
                    self.model, system, user, self.max_tokens, self.temperature
                ),
                self.provider.classify, self.max_retries, self.backoff_s, self.rng,
                sleep=self._closed.wait, log=log,
            )  # fmt: skip
        except CallFailed as exc:
            self.failures += 1
            meta.update(attempts=exc.attempts, retries=log)
            return Proposal(
                files={}, description="model call failed", proposer=self.name, prompt=prompt,
                invalid_reason=f"model call failed after {exc.attempts} attempt(s): {exc}",
                response="(no response)\n" + json.dumps(log, indent=2), meta=meta,
            )  # fmt: skip
        self.failures = 0
        self.last_input_tokens = done.usage.get("input_tokens", 0)
        meta.update(attempts=attempts, finish_reason=done.finish_reason)
        if log:
            meta["retries"] = log
        return self._from_reply(ctx, done, prompt, whole, meta, attempts)

    def _from_reply(
        self, ctx: Context, done: Completion, prompt: str, whole: bool,
        meta: dict[str, Any], attempts: int,
    ) -> Proposal:  # fmt: skip
        fields = parse_fields(done.text)
        if fields.get("LESSON"):
            meta["lesson"] = one_line(fields["LESSON"], 300)
            previous = [r.experiment for r in ctx.history if r.experiment > 0]
            meta["lesson_about"] = previous[-1] if previous else 0
        hypothesis = one_line(fields.get("HYPOTHESIS", ""), 500)
        description = one_line(fields.get("DESCRIPTION") or hypothesis or "llm edit", 120)
        usage = {**done.usage, "calls": attempts}
        proposal = Proposal(
            files={}, description=description, rationale=fields.get("RATIONALE", ""),
            hypothesis=hypothesis, prompt=prompt, response=done.text, proposer=self.name,
            cost_usd=cost_usd(done.usage, self.price), usage=usage, meta=meta,
        )  # fmt: skip
        if done.truncated:
            proposal.invalid_reason = (
                f"the reply was cut off at the output limit of {self.max_tokens} tokens "
                f"(stop reason {done.finish_reason!r}); nothing was applied. Make smaller "
                "edits, or raise [proposer].max_tokens"
            )
            return proposal
        try:
            proposal.files = apply_edits(done.text, ctx.surface, whole_files=whole)
        except EditError as exc:
            proposal.invalid_reason = f"unusable edit, nothing applied: {exc}"
        return proposal
