"""The `llm` proposer: a model behind an API (Anthropic, OpenAI, or any OpenAI-compatible
server through `base_url`) reads the study's context and replies with an edit in one of the
edit formats (formats.py): SEARCH/REPLACE blocks, a whole file, or structured JSON.

Every request is sized to the model's context window (budget.py): the prompt's history is
compacted until the prompt and the output the format needs fit, and the output limit is what
is left. A context-length refusal teaches the real window and the request is shrunk and sent
again. A reply that cannot be used gets one repair turn that shows the model its parse error.

Whatever goes wrong with the model becomes an `invalid` proposal with a short, precise
reason, never an exception in the loop. The API key is redacted from everything returned.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any

from overnight.errors import UsageError
from overnight.isolation import secrets
from overnight.isolation.redact import Redactor, proposer_key_env
from overnight.proposers.base import BaseProposer, Context
from overnight.proposers.describe import describe, knob_change, repeats
from overnight.proposers.llm.budget import TokenCounter, Window, discover, is_local, output_room
from overnight.proposers.llm.edits import EditError
from overnight.proposers.llm.formats import (
    FORMATS,
    REPAIR_MARK,
    EditFormat,
    Parsed,
    choose,
    loose_fields,
    reapply,
)
from overnight.proposers.llm.pricing import cache_read_factor, cost_usd, price_for, saved_usd
from overnight.proposers.llm.prompts import LEVELS, Prompt, llm_prompt, one_line
from overnight.proposers.llm.providers import (
    CallFailed,
    Completion,
    Provider,
    Request,
    call_with_retries,
    make_provider,
)
from overnight.store.records import Proposal

DEFAULT_MODEL = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4.1"}
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
OVERFLOW_RETRIES = 2  # context-length refusals answered by a smaller request
ECHO_CHARS = 1500  # of a failed reply, shown back to the model in the repair turn
REPAIR = """\
Your reply could not be used, so nothing was applied: {error}
Reply again, in the required format and nothing else, with a corrected version of the \
same idea{extra}."""
REPEATED = """\
Your change was not applied: {error}. Reply again, in the required format and nothing \
else, with a different change{extra}."""


def missing_key_message(cfg_name: str, provider: str, key_env: str) -> str:
    return (
        f"the llm proposer with provider {provider!r} ({cfg_name}: [proposer].provider) needs "
        f"an API key in the environment variable {key_env}, which is not set. Export it "
        f"(export {key_env}=...), name another variable with [proposer].api_key_env, "
        'or use the tune proposer (kind = "tune", or --proposer tune) to search without a '
        "model."
    )


class LLMProposer(BaseProposer):
    """Proposals from a chat model, in the edit format that suits it, against the best
    surface."""

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
        self._key = key
        self.redactor = Redactor({self.key_env: key})
        self.max_tokens: int = p.max_tokens
        # Anthropic's newer models reject sampling parameters, so its default is the model's
        # own; OpenAI-compatible servers get the configured value (default 0.7) as before.
        chosen = "temperature" in p.model_fields_set
        self.temperature: float | None = p.temperature
        if p.provider == "anthropic" and not chosen:
            self.temperature = None
        self.max_retries: int = p.max_retries
        self.timeout: float = p.timeout
        self.context_tokens: int = p.context_tokens
        self.formats: list[str] = list(p.formats)
        self.price = price_for(self.model, p.prices)
        self.read_factor = cache_read_factor(self.model)
        self.hidden = {config.holdout.name} if config.holdout.name else set()
        self.rng = random.Random(seed)
        self.backoff_s = float(os.environ.get(BACKOFF_ENV) or 1.0)
        self.failures = 0  # calls in a row that failed for good
        self.busy_until = 0.0  # a local server may still compute an abandoned request
        self.last_input_tokens = 0
        self.counter = TokenCounter()
        self._window: Window | None = None
        self._window_lock = threading.Lock()
        self._closed = threading.Event()
        # An OpenAI-compatible server on this machine or network (Ollama, llama.cpp).
        self.local = p.provider == "openai" and is_local(p.base_url)
        self.provider = provider or make_provider(
            p.provider, key, p.base_url, p.timeout, self.local
        )

    def describe(self) -> str:
        where = f" at {self.base_url}" if self.base_url else ""
        return f"llm ({self.provider_name} {self.model}{where})"

    def close(self) -> None:
        self._closed.set()
        self.provider.close()

    def next_cost_estimate(self) -> float:
        """The most the next proposal may cost: two calls (the repair turn's included), each
        with a prompt as large as the last one plus a margin and a reply of max_tokens. The
        loop stops before a proposal that could exceed --max-cost."""
        if self.price is None:
            return 0.0
        tokens_in = int((self.last_input_tokens or FIRST_CALL_INPUT_TOKENS) * 1.1)
        one = {"input_tokens": tokens_in, "output_tokens": self.max_tokens}
        return 2 * cost_usd(one, self.price)

    def rebase(self, proposal: Proposal, surface: dict[str, str]) -> dict[str, str] | None:
        """A proposal made on an older best, applied again to `surface`: its SEARCH/REPLACE
        blocks or JSON knob edits (neighbouring knobs would conflict in a line merge). A
        whole-file reply, or edits that no longer apply, go to the loop's three-way merge."""
        return reapply(proposal, surface)

    # -- the budget ---------------------------------------------------------------------------

    def window(self, refresh: bool = False) -> Window:
        """The model's context window, asked of the server once (again when it said it may
        know more later)."""
        with self._window_lock:
            if self._window is None or (refresh and not self._window.final):
                self._window = discover(self.provider_name, self.base_url, self.model,
                                        self.context_tokens, self._key)  # fmt: skip
            return self._window

    def learn_overflow(self, fault: Any, request: Request) -> None:
        """A context-length refusal: remember the window it named and the prompt's size."""
        overflow = fault.overflow
        with self._window_lock:
            current = self._window or Window(self.context_tokens or 4096, "default")
            if overflow.context:
                self._window = Window(overflow.context, "the server's context-length refusal")
            else:
                self._window = Window(int(current.tokens * 0.75), "shrunk after a refusal")
        if overflow.prompt:
            self.counter.observe(request.chars(), overflow.prompt, 2 + len(request.turns))

    def plan(self, ctx: Context, fmt: EditFormat, extra: tuple[str, ...] = ()) -> tuple[
        Prompt, int, int] | None:  # fmt: skip
        """(prompt, output limit, estimated prompt tokens) at the richest history level that
        leaves the format its output; None when even the leanest prompt leaves too little."""
        window = self.window().tokens
        need = fmt.min_output(self.counter.estimate(*ctx.surface.values()))
        for level in range(len(LEVELS)):
            prompt = llm_prompt(ctx, lambda fill: fmt.instructions(fill, ctx.surface),
                                self.hidden, level, self.redactor.text,
                                fmt.surface_note(ctx.surface))  # fmt: skip
            est = self.counter.estimate(prompt.system, prompt.user, *extra)
            room = output_room(window, est, self.max_tokens)
            if room >= need:
                return prompt, room, est
        return None

    # -- proposing ---------------------------------------------------------------------------

    def propose(self, ctx: Context) -> Proposal:
        record: dict[str, Any] = {"prompt": None}
        try:
            return self.redactor.proposal(self._propose(ctx, record))
        except Exception as exc:  # a bug here must not stop the loop; record it instead
            reason = f"llm proposer failed: {type(exc).__name__}: {exc}"
            return self.redactor.proposal(
                Proposal(
                    files={},
                    description="llm proposer error",
                    invalid_reason=reason,
                    prompt=record["prompt"],
                    proposer=self.name,
                )  # fmt: skip
            )

    def _propose(self, ctx: Context, record: dict[str, Any]) -> Proposal:
        started = time.monotonic()
        meta: dict[str, Any] = {"model": self.model, "provider": self.provider_name}
        if self.price is None:
            meta["cost_note"] = (
                f"no price known for model {self.model!r}: cost counted as 0 "
                "(set [proposer].prices to count it)"
            )
        if self.failures:
            self._closed.wait(min(COOLDOWN_CAP_S, self.backoff_s * 2**self.failures))
        if self.busy_until > time.monotonic():
            self._closed.wait(self.busy_until - time.monotonic())
        window = self.window()
        plans = {
            n: self.plan(ctx, FORMATS[n]) for n in self.formats if FORMATS[n].usable(ctx.surface)
        }
        fmt = choose(self.formats, ctx.history, {n: p is not None for n, p in plans.items()})
        if fmt is None:
            meta["budget"] = {"context": window.tokens, "source": window.source}
            return Proposal(
                files={}, description="prompt does not fit", proposer=self.name, meta=meta,
                invalid_reason=(
                    f"the prompt does not fit the model's context of {window.tokens} tokens "
                    f"({window.source}) even without history; give the server a larger context "
                    "or set [proposer].context_tokens"
                ),
            )  # fmt: skip
        prompt, room, est = plans[fmt.name]  # type: ignore[misc]
        record["prompt"] = prompt.text()
        meta.update(format=fmt.name, budget={"context": window.tokens, "source": window.source,
                    "prompt_tokens": est, "max_tokens": room, "level": prompt.level})  # fmt: skip
        schema = fmt.schema(ctx.surface, self.local) if fmt.structured else None
        request = Request(prompt.system, prompt.stable, prompt.volatile, room, self.temperature,
                          schema)  # fmt: skip
        calls: list[tuple[Completion, int]] = []
        done = self._call(ctx, fmt, request, meta, calls)
        if done is None:
            return self._failed(meta, record["prompt"], started)
        proposal = self._from_reply(ctx, fmt, request, done, meta, record["prompt"])
        if proposal.invalid_reason and meta.get("repairable"):
            proposal = self._repair(ctx, fmt, request, done, proposal, meta, calls)
        self._account(proposal, calls, meta)
        meta.pop("repairable", None)
        if not meta.get("repeat"):
            meta.pop("repeat", None)
        meta["seconds"] = round(time.monotonic() - started, 2)
        return proposal

    def _call(
        self, ctx: Context, fmt: EditFormat, request: Request, meta: dict[str, Any],
        calls: list[tuple[Completion, int]],
    ) -> Completion | None:  # fmt: skip
        """One request with retries; a context-length refusal shrinks it and sends it again.
        None (with meta["error"]) when it failed for good."""
        log: list[dict[str, Any]] = meta.setdefault("retries", [])
        for _ in range(OVERFLOW_RETRIES + 1):
            try:
                done, attempts = call_with_retries(
                    lambda: self.provider.complete(self.model, request),
                    self.provider.classify, self.max_retries, self.backoff_s, self.rng,
                    sleep=self._closed.wait, log=log,
                )  # fmt: skip
            except CallFailed as exc:
                meta["attempts"] = meta.get("attempts", 0) + exc.attempts
                fault = exc.fault
                if fault is not None and fault.overflow is not None:
                    meta["overflows"] = meta.get("overflows", 0) + 1
                    self.learn_overflow(fault, request)
                    if self._shrink(ctx, fmt, request, meta):
                        continue
                elif self.local and "not resent" in str(exc):
                    self.busy_until = time.monotonic() + self.timeout
                meta["error"] = f"model call failed after {meta['attempts']} attempt(s): {exc}"
                return None
            self.failures = 0
            meta["attempts"] = meta.get("attempts", 0) + attempts
            meta["finish_reason"] = done.finish_reason
            calls.append((done, attempts))
            tokens = sum(
                done.usage.get(k, 0)
                for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
            )
            if tokens:
                self.last_input_tokens = tokens
                self.counter.observe(request.chars(), tokens, 2 + len(request.turns))
            self.window(refresh=True)
            if not log:
                meta.pop("retries", None)
            return done
        meta["error"] = "model call failed: the request did not fit the model's context"
        return None

    def _shrink(
        self, ctx: Context, fmt: EditFormat, request: Request, meta: dict[str, Any]
    ) -> bool:
        """Re-plan `request` for the window just learned; False when nothing fits."""
        planned = self.plan(ctx, fmt, tuple(t for _, t in request.turns))
        if planned is None:
            return False
        prompt, room, est = planned
        request.system, request.stable, request.volatile = (
            prompt.system,
            prompt.stable,
            prompt.volatile,
        )
        request.max_tokens = room
        window = self.window()
        meta["budget"] = {
            "context": window.tokens,
            "source": window.source,
            "prompt_tokens": est,
            "max_tokens": room,
            "level": prompt.level,
        }
        return True

    def _failed(self, meta: dict[str, Any], prompt: str, started: float) -> Proposal:
        self.failures += 1
        meta["seconds"] = round(time.monotonic() - started, 2)
        log = meta.get("retries") or []
        return Proposal(
            files={}, description="model call failed", proposer=self.name, prompt=prompt,
            invalid_reason=meta.pop("error"),
            response="(no response)\n" + json.dumps(log, indent=2), meta=meta,
        )  # fmt: skip

    def _from_reply(
        self, ctx: Context, fmt: EditFormat, request: Request, done: Completion,
        meta: dict[str, Any], prompt: str,
    ) -> Proposal:  # fmt: skip
        parsed: Parsed | None = None
        error = ""
        meta["repairable"] = False
        if done.truncated:
            error = self._cut_off(done, request)
        else:
            try:
                parsed = fmt.parse(done.text, ctx.surface)
            except EditError as exc:
                error, meta["repairable"] = str(exc), True
        fields = parsed.fields if parsed is not None else loose_fields(done.text)
        if fields.get("LESSON"):
            meta["lesson"] = one_line(fields["LESSON"], 300)
            previous = [r.experiment for r in ctx.history if r.experiment > 0]
            meta["lesson_about"] = previous[-1] if previous else 0
        hypothesis = one_line(fields.get("HYPOTHESIS", ""), 500)
        description = one_line(fields.get("DESCRIPTION") or hypothesis or "llm edit", 120)
        if parsed is not None and parsed.files:
            # A knob change is described exactly (`LR 0.04 → 0.031`, as tune's are); another
            # edit by the model, unless its description is not about the edit at all (small
            # models), then by the edit. The model's words stay in the hypothesis and reply.
            change = knob_change(ctx.surface, parsed.files)
            description = one_line(change or describe(description, ctx.surface, parsed.files),
                                   120)  # fmt: skip
            # With run-ahead, a proposal made while another runs is often that very change
            # (a weak model ignores the in-flight list): worth a repair turn, not a run.
            if change:
                error = repeats(change, ctx.in_flight, ctx.history, ctx.best_experiment)
                meta["repeat"] = meta["repairable"] = bool(error)
        meta["format_ok"] = parsed is not None
        return Proposal(
            files=parsed.files if parsed is not None else {}, description=description,
            rationale=fields.get("RATIONALE", ""), hypothesis=hypothesis, prompt=prompt,
            response=done.text, proposer=self.name, meta=meta,
            invalid_reason=(None if not error else f"repeated change: {error}"
                            if meta.get("repeat") else f"unusable {fmt.name} reply: {error}"),
        )  # fmt: skip

    def _cut_off(self, done: Completion, request: Request) -> str:
        """Why a reply stopped early: the output limit, or (fewer tokens than that) the end
        of the model's context window, whose size that reveals."""
        out = done.usage.get("output_tokens", 0)
        if 0 < out < request.max_tokens - 1:
            used = out + sum(done.usage.get(k, 0) for k in ("input_tokens",
                             "cache_read_input_tokens", "cache_creation_input_tokens"))  # fmt: skip
            with self._window_lock:
                self._window = Window(used, "where a reply ran out of context")
            return (f"cut off: the reply filled the model's context window of {used} tokens "
                    f"(stop reason {done.finish_reason!r})")  # fmt: skip
        return (f"cut off at the output limit of {request.max_tokens} tokens (stop reason "
                f"{done.finish_reason!r}); make smaller edits")  # fmt: skip

    def _repair(
        self, ctx: Context, fmt: EditFormat, request: Request, first: Completion,
        failed: Proposal, meta: dict[str, Any], calls: list[tuple[Completion, int]],
    ) -> Proposal:  # fmt: skip
        """One more turn that shows the model its reply's parse error."""
        error = (failed.invalid_reason or "").split(": ", 1)[-1]
        echo = first.text if len(first.text) <= ECHO_CHARS else first.text[:ECHO_CHARS] + "\n…"
        extra = " (one JSON object)" if fmt.structured else ""
        template = REPEATED if meta.get("repeat") else REPAIR
        turns = [("assistant", echo), ("user", template.format(error=error, extra=extra))]
        planned = self.plan(ctx, fmt, tuple(t for _, t in turns))
        if planned is None:
            return failed
        prompt, room, _ = planned
        # A little hotter than the first try: a model that repeats itself gets the same error.
        hotter = None if request.temperature is None else min(1.0, request.temperature + 0.3)
        repair = Request(prompt.system, prompt.stable, prompt.volatile, room, hotter,
                         request.schema, turns)  # fmt: skip
        meta["repair"] = {"error": one_line(error, 300)}
        second = self._call(ctx, fmt, repair, meta, calls)
        if second is None:
            meta["repair"]["failed"] = meta.pop("error")
            return failed
        text = (failed.prompt or "") + "".join(f"\n[{r}]\n{t}\n" for r, t in turns)
        fixed = self._from_reply(ctx, fmt, repair, second, meta, text)
        fixed.response = f"{first.text}{REPAIR_MARK}{second.text}"
        meta["repair"]["ok"] = fixed.invalid_reason is None
        if fixed.invalid_reason:
            fixed.invalid_reason = f"{fixed.invalid_reason} (after a repair turn)"
        return fixed

    def _account(
        self, proposal: Proposal, calls: list[tuple[Completion, int]], meta: dict[str, Any]
    ) -> None:
        """Usage and cost of every call the proposal took (the repair turn's included)."""
        usage: dict[str, Any] = {}
        for done, _ in calls:
            for k, v in done.usage.items():
                usage[k] = usage.get(k, 0) + v
        usage["calls"] = meta.get("attempts", len(calls))
        proposal.cost_usd = cost_usd(usage, self.price, self.read_factor)
        saved = saved_usd(usage, self.price, self.read_factor)
        if saved:
            usage["cache_saved_usd"] = round(saved, 6)
        proposal.usage = usage
