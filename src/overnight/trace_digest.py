"""The trace digest for the proposer: what a meta-agent needs to read of the task agent's
trials, within a size budget.

For an ATIF trajectory that is the task (the first user message), the error, the steps that
went wrong (tool calls whose observation reads as an error), the last steps before the end
and the final answer; the system prompt, token ids, logprobs and per-step metrics are left
out. Other step lists (JSONL `steps`) are shown one JSON object a line, without the same
token-level fields. What does not fit is cut with an explicit marker.
"""

from __future__ import annotations

import json
import re
from typing import Any

from overnight.traces import TaskResult, TaskTrace, TraceSet, diff_tasks

# Token-level data: megabytes of numbers a meta-agent cannot use.
NOISE_KEYS = frozenset({"prompt_token_ids", "completion_token_ids", "logprobs", "token_ids"})
FAILED = re.compile(
    r"(?i)\b(error|exception|traceback|failed|failure|not found|no such file|denied|"
    r"timed? ?out|invalid|cannot|can't|exit(?:ed)?(?: with)?(?: code| status)?:? *[1-9])"
)
LAST_STEPS = 3  # steps before the end, always shown: where the trial ended


def _clip(text: str, limit: int) -> str:
    """Head and tail of `text` with an explicit marker where the middle was cut."""
    if len(text) <= limit:
        return text
    if limit < 40:  # no room for a marker and anything around it
        return text[:limit]
    marker = "\n… [{} chars cut] …\n"
    keep = max(0, limit - len(marker) - 6)
    head = keep * 2 // 3
    tail = keep - head
    return text[:head] + marker.format(len(text) - head - tail) + (text[-tail:] if tail else "")


def _one_line(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return _clip(" ".join(text.split()), limit)


def _strip(value: Any) -> Any:
    """`value` without token-level fields, at any depth."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in NOISE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _is_atif(steps: list[Any]) -> bool:
    return bool(steps) and all(isinstance(s, dict) and "source" in s for s in steps)


def _atif_step(step: dict[str, Any]) -> tuple[bool, str]:
    """(went wrong?, the step in a few lines)."""
    sid = step.get("step_id", "?")
    lines = []
    if step.get("message"):
        lines.append(f"[{sid}] {step.get('source')}: {_one_line(step['message'], 300)}")
    results = (step.get("observation") or {}).get("results") or []
    by_call = {r.get("source_call_id"): r for r in results if isinstance(r, dict)}
    failed = False
    for call in step.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        args = _one_line(call.get("arguments", {}), 300)
        lines.append(f"[{sid}] call {call.get('function_name')}({args})")
        seen = by_call.pop(call.get("tool_call_id"), None)
        if seen is not None:
            bad = bool(FAILED.search(str(seen.get("content", "")))) or bool(seen.get("is_error"))
            failed |= bad
            content = _one_line(seen.get("content", ""), 800 if bad else 300)
            lines.append(f"    → {'ERROR ' if bad else ''}{content}")
    for rest in by_call.values():  # observations of actions that were no tool call
        lines.append(f"    → {_one_line(rest.get('content', ''), 300)}")
    if not lines:
        lines.append(f"[{sid}] {step.get('source')}: (empty)")
    return failed, "\n".join(lines)


def _atif_steps(steps: list[dict[str, Any]], limit: int) -> str:
    """The steps that matter, in order, with the skipped ones counted where they were."""
    body = [s for s in steps if s.get("source") != "system"]
    system = len(steps) - len(body)
    if body and body[0].get("source") == "user":
        body = body[1:]  # the task: shown above
    rendered = [_atif_step(s) for s in body]
    # What to keep, most wanted first: the steps that went wrong, the last ones (where the
    # trial ended), then the rest in order, as long as they fit.
    last = range(max(0, len(body) - LAST_STEPS), len(body))
    order = [i for i, (bad, _) in enumerate(rendered) if bad]
    order += [i for i in reversed(last) if i not in order]
    order += [i for i in range(len(body)) if i not in order]
    wanted: set[int] = set()
    used = 0
    for i in order:
        size = len(rendered[i][1]) + 40  # and a gap marker, perhaps
        if used + size <= limit or not wanted:
            wanted.add(i)
            used += size
    out, gap = [], 0
    for i, (_, text) in enumerate(rendered):
        if i in wanted:
            if gap:
                out.append(f"… [{gap} step(s) left out] …")
                gap = 0
            out.append(text)
        else:
            gap += 1
    if gap:
        out.append(f"… [{gap} step(s) left out] …")
    failing = sum(1 for bad, _ in rendered if bad)
    head = f"steps ({len(body)}, {failing} with an error"
    head += "; system prompt left out)" if system else ")"
    return head + ":\n" + "\n".join(out)


def render(result: TaskResult | TaskTrace, limit: int) -> str:
    """One task as the digest shows it: its outcome over all trials, then one trial."""
    trial = result.shown() if isinstance(result, TaskResult) else result
    parts = [f"### task {result.task}: {result.outcome()}"]
    if isinstance(result, TaskResult) and len(result.trials) > 1:
        passed, known = result.counts()
        parts.append(f"trials: {passed}/{known} passed; shown: trial {trial.trial or '?'} "
                     f"({trial.outcome()})")  # fmt: skip
    elif trial.trial:
        parts.append(f"trial: {trial.trial}")
    atif = _is_atif(trial.steps)
    for key in ("input", "expected", "output", "error"):
        value = getattr(trial, key)
        if value is None:
            continue
        if atif and key in ("input", "output"):
            label = {"input": "task", "output": "final answer"}[key]
            parts.append(f"{label}: {_one_line(value, 1500)}")
        else:
            text = value if isinstance(value, str) else json.dumps(
                _strip(value), default=str, ensure_ascii=False)  # fmt: skip
            parts.append(f"{key}: {text}")
    if trial.steps:
        if atif:
            room = limit - sum(len(p) + 1 for p in parts) - 60
            parts.append(_atif_steps(trial.steps, max(200, room)))
        else:
            steps = "\n".join(json.dumps(_strip(s), default=str, ensure_ascii=False)
                              for s in trial.steps)  # fmt: skip
            parts.append(f"steps ({len(trial.steps)}):\n{steps}")
    return _clip("\n".join(parts), limit)


def _diverse(results: list[TaskResult]) -> list[TaskResult]:
    """Round-robin over failure kinds so the first traces cover different failures."""
    groups: dict[str, list[TaskResult]] = {}
    for t in sorted(results, key=lambda t: t.task):
        groups.setdefault(t.failure_kind(), []).append(t)
    out: list[TaskResult] = []
    while any(groups.values()):
        for kind in list(groups):
            if groups[kind]:
                out.append(groups[kind].pop(0))
    return out


def build_digest(
    best: TraceSet,
    best_experiment: int,
    budget_chars: int,
    last: TraceSet | None = None,
    last_experiment: int | None = None,
) -> str:
    """The trace digest for the proposer, at most `budget_chars` long: a summary line, the
    tasks the last experiment broke, the best's failing tasks across failure kinds, then
    its flaky ones (some trials passed, some failed)."""
    if not best.tasks and not (last and last.tasks):
        return ""
    broken: list[TaskResult] = []
    if last is not None and last_experiment is not None and last_experiment != best_experiment:
        broken = [last.tasks[t] for t in diff_tasks(best, last).regressed]
    failing = _diverse(best.failing())
    flaky = sorted((t for t in best.tasks.values() if t.ok and t.flaky), key=lambda t: t.task)
    candidates = [("broke", t) for t in broken] + [("fail", t) for t in [*failing, *flaky]]
    # Up to four traces share the budget; fewer get more of it each.
    per_trace = max(400, budget_chars // max(1, min(4, len(candidates))))
    sections: list[str] = []
    used = 0
    shown = 0
    for i, (why, result) in enumerate(candidates):
        room = budget_chars - used - 400  # leave room for the summary line
        if room < 200:
            break
        header = f"(broken by experiment {last_experiment}) " if why == "broke" else ""
        text = header + render(result, min(per_trace, room))
        sections.append(text)
        used += len(text) + 2
        shown = i + 1
    left_out = len(candidates) - shown
    summary = (
        f"Traces of the best (experiment {best_experiment}): {best.passed_text()}, "
        f"{len(failing)} failing"
        + (f", {len(flaky)} flaky" if flaky else "")
        + (f"; experiment {last_experiment} broke {len(broken)} task(s)" if broken else "")
        + f"; showing {shown} trace(s), {left_out} left out to fit {budget_chars} chars."
    )
    if best.problems:
        summary += f" ({len(best.problems)} malformed trace record(s) skipped.)"
    return _clip("\n\n".join([summary, *sections]), budget_chars)
