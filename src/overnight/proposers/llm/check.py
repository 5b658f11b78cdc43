"""`overnight check-model`: probe the configured model before a night starts.

It asks the server for the context window, times two small requests (latency, output
tokens per second), then asks for one real proposal in each edit format against the study's
own surface and instructions (with a repair turn, as in a run) and checks that the edit
applies. From that it recommends `[proposer]` settings: the formats that worked, in order, the
context when the server does not report it, and a timeout with room for the slowest call.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from overnight.proposers.base import Context
from overnight.proposers.llm.formats import DEFAULT_ORDER, FORMATS
from overnight.proposers.llm.llm import LLMProposer
from overnight.proposers.llm.providers import CallFailed, Request, call_with_retries
from overnight.store.records import ExperimentRecord

REPORTED = ("llama.cpp", "vLLM", "Ollama /api")  # window sources that a server reported
SPEED_PROMPT = "Count from 1 to 60, the numbers separated by spaces, and nothing else."


@dataclass
class FormatResult:
    format: str
    fits: bool
    usable: bool = False
    repaired: bool = False
    seconds: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    reason: str = ""


@dataclass
class Report:
    model: str
    context_tokens: int
    context_source: str
    latency_s: float | None = None
    output_tokens_per_s: float | None = None
    error: str = ""
    formats: list[FormatResult] = field(default_factory=list)
    recommended: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_context(cfg: Any, surface: dict[str, str], instructions: str) -> Context:
    """The context of a study that has only its baseline: what the first proposal sees."""
    baseline = ExperimentRecord(0, "keep", None, {}, None, None, "baseline", "", None, "")
    return Context(
        study=cfg.study.name, instructions=instructions, surface=surface,
        metric=cfg.metric.name, goal=cfg.metric.goal, budget_s=cfg.study.budget,
        best_experiment=0, best_value=None, baseline_value=None, history=[baseline],
    )  # fmt: skip


def _timed(llm: LLMProposer, text: str, max_tokens: int) -> tuple[float, int]:
    request = Request("You answer briefly.", text, "", max_tokens, llm.temperature, cache=False)
    started = time.monotonic()
    done, _ = call_with_retries(
        lambda: llm.provider.complete(llm.model, request), llm.provider.classify, 0,
        llm.backoff_s, llm.rng,
    )  # fmt: skip
    return time.monotonic() - started, int(done.usage.get("output_tokens", 0))


def check_model(llm: LLMProposer, ctx: Context, formats: tuple[str, ...] = DEFAULT_ORDER) -> Report:
    window = llm.window()
    report = Report(llm.model, window.tokens, window.source)
    try:
        report.latency_s = round(_timed(llm, "Reply with the word OK.", 8)[0], 2)
        seconds, out = _timed(llm, SPEED_PROMPT, 200)
        report.output_tokens_per_s = round(out / seconds, 1) if seconds > 0 and out else None
    except CallFailed as exc:
        report.error = f"the model did not answer: {exc}"
        return report
    for name in formats:
        fmt = FORMATS[name]
        if not fmt.usable(ctx.surface) or llm.plan(ctx, fmt) is None:
            why = "the surface is too long" if not fmt.usable(ctx.surface) else (
                "the prompt and its output do not fit the context")  # fmt: skip
            report.formats.append(FormatResult(name, False, reason=why))
            continue
        llm.formats = [name]
        proposal = llm.propose(ctx)
        meta = proposal.meta
        report.formats.append(FormatResult(
            name, True, usable=proposal.invalid_reason is None,
            repaired=bool((meta.get("repair") or {}).get("ok")),
            seconds=float(meta.get("seconds") or 0.0),
            prompt_tokens=int(proposal.usage.get("input_tokens", 0))
            + int(proposal.usage.get("cache_read_input_tokens", 0)),
            output_tokens=int(proposal.usage.get("output_tokens", 0)),
            reason=proposal.invalid_reason or "",
        ))  # fmt: skip
    report.recommended = recommend(report, llm.window(), bool(llm.base_url))
    return report


def recommend(report: Report, window: Any, server: bool) -> dict[str, Any]:
    """The `[proposer]` keys to set, from what the probes showed."""
    worked = [r.format for r in report.formats if r.usable]
    out: dict[str, Any] = {"formats": worked or ["json"]}
    if server and not window.source.startswith(REPORTED):
        out["context_tokens"] = window.tokens  # the server does not say: write it down
    slowest = max((r.seconds for r in report.formats if r.fits), default=0.0)
    if slowest:
        out["timeout"] = f"{max(60, math.ceil(slowest * 3 / 60) * 60) // 60}m"
    return out


def render(report: Report) -> str:
    lines = [f"model {report.model}: context {report.context_tokens} tokens "
             f"({report.context_source})"]  # fmt: skip
    if report.error:
        return "\n".join([*lines, report.error])
    speed = f"{report.output_tokens_per_s} output tokens/s" if report.output_tokens_per_s else (
        "output speed unknown (no token counts)")  # fmt: skip
    lines.append(f"latency {report.latency_s}s, {speed}")
    for r in report.formats:
        if not r.fits:
            lines.append(f"  {r.format:<15} skipped: {r.reason}")
            continue
        verdict = "usable edit" + (" (after a repair turn)" if r.repaired else "")
        if not r.usable:
            verdict = f"NOT usable: {r.reason}"
        lines.append(f"  {r.format:<15} {verdict} · {r.seconds:.1f}s · {r.prompt_tokens} prompt + "
                     f"{r.output_tokens} output tokens")  # fmt: skip
    rec = report.recommended
    lines.append("recommended settings:\n[proposer]")
    lines.append("formats = [" + ", ".join(f'"{f}"' for f in rec.get("formats", [])) + "]")
    if "context_tokens" in rec:
        lines.append(f"context_tokens = {rec['context_tokens']}")
    if "timeout" in rec:
        lines.append(f'timeout = "{rec["timeout"]}"')
    return "\n".join(lines)
