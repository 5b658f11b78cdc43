"""What the `llm` and `agent` proposers tell the model, and how its reply's fields are read.

The prompt gives what a good researcher would want before the next experiment: the user's
instructions, the metric, its goal and the budget, the history (every keep and the most
recent other experiments, each with status, value, delta, description, reason and the
hypothesis it tested), the lessons written so far, the log tail of the latest crash, the
trace digest, the constraints, and the current best surface with line numbers.

Lessons: with every proposal the model states a HYPOTHESIS (stored in the ledger with the
experiment, and shown next to its outcome in the history) and a LESSON line about the
previous experiment's result, stored in the proposal's `meta["lesson"]`. Both survive a
restart because the prompt is rebuilt from the ledger each time.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection
from typing import Any

from overnight.judging.rules import fmt
from overnight.proposers.base import Context
from overnight.store.records import ExperimentRecord

RECENT = 15  # non-kept experiments shown besides every keep
MAX_LESSONS = 20
_FIELD = re.compile(
    r"^\s*[*_#>-]*\s*(LESSON|HYPOTHESIS|DESCRIPTION|RATIONALE)\s*[*_]*\s*:\s*[*_]*\s*(.*?)\s*$",
    re.IGNORECASE,
)
_STOP = re.compile(r"^\s*(<{5,9} ?SEARCH|`{3,}|~{3,})")

REPLY_FORMAT = """\
LESSON: <one line: what the most recent experiment's result taught you>
HYPOTHESIS: <one sentence: what you change and why you expect {metric} to get {better}>
DESCRIPTION: <one line of at most 72 characters, imperative mood; it becomes the commit subject>
RATIONALE: <a few sentences of reasoning>"""

SYSTEM = """\
You are a meticulous research engineer improving a codebase one experiment at a time inside \
an automated loop. You propose ONE change to the surface ({paths}); the loop commits it, runs \
the experiment under a fixed time budget, measures one metric, and keeps the change only if \
the metric gets better. Otherwise the change is discarded. Hundreds of experiments run while \
nobody watches, so every proposal must run as it is.

Rules:
- Change only the surface: {paths}. An edit of any other file is refused.
- One idea per experiment, small enough that its effect can be attributed to it.
- Never game the measurement (fake metric lines, changed timing, skipped work, special cases \
for the evaluation data): integrity checks reject such changes and waste an experiment.
- Each run is killed after {budget}; a change that makes it much slower will time out.
- Learn from the history: do not repeat discarded, crashed or invalid ideas; build on keeps. \
Read the reasons of invalid experiments: they say exactly what was wrong with the reply.

Reply in exactly this format:
{reply_format}

Then the edit, as one or more SEARCH/REPLACE blocks:

{example_path}
<<<<<<< SEARCH
<lines copied exactly from the current file, without the line numbers>
=======
<the new lines>
>>>>>>> REPLACE

- The line above each block is the path of a surface file, relative to the repository root.
- SEARCH must match the current file exactly and in one place only: quote whole lines, \
enough of them to be unique, never the line-number gutter.
- Several blocks are applied in order; each sees the result of the ones before it.
{whole_file}- Write nothing after the last block."""

WHOLE_FILE = """\
- For a rewrite of most of a file you may instead write its path line followed by a fenced \
code block holding the complete new content (and no SEARCH/REPLACE markers).
"""

AGENT_TASK = """\
# Your task
You are running inside an automated experiment loop. Your working directory is a scratch git \
worktree of the repository at the current best commit. Implement ONE experiment by editing \
the surface: {paths}. The loop measures your change afterwards and keeps it only if {metric} \
gets {better}.
- Change only {paths}. Changing, creating or deleting any other file gets the proposal \
rejected without being run.
- Do not commit, and do not run the full experiment yourself (each run takes up to {budget}; \
the loop runs it under controlled conditions). A quick syntax check is fine.
- Never game the measurement (fake metric lines, changed timing, skipped work).
- When you are done, write these lines to the file named by $OVERNIGHT_DESCRIPTION_FILE \
({description_file}):
{reply_format}"""


AGENT_FOLLOWUP = """\
# Your task
This continues your session: the loop has run your earlier proposals, and your working \
directory has been reset to the current best commit (experiment {best}). Implement ONE new \
experiment by editing {paths}, under the same rules as before: change only {paths}, do not \
commit, do not run the full experiment (up to {budget}), never game the measurement. When you \
are done, write these lines to the file named by $OVERNIGHT_DESCRIPTION_FILE \
({description_file}):
{reply_format}"""


def number_lines(text: str) -> str:
    """`text` with a line-number gutter ("  12| code"), which edits.GUTTER can undo."""
    lines = text.splitlines()
    width = max(4, len(str(len(lines))))
    return "\n".join(f"{n:>{width}}| {line}" for n, line in enumerate(lines, 1))


def parse_fields(reply: str) -> dict[str, str]:
    """LESSON / HYPOTHESIS / DESCRIPTION / RATIONALE lines of a reply (first of each).
    RATIONALE runs on over the following lines up to a blank line, field or edit."""
    out: dict[str, str] = {}
    lines = reply.splitlines()
    for i, line in enumerate(lines):
        m = _FIELD.match(line)
        if m is None or m.group(1).upper() in out:
            continue
        key, value = m.group(1).upper(), m.group(2).strip()
        if key == "RATIONALE":
            more = []
            for nxt in lines[i + 1 :]:
                if not nxt.strip() or _FIELD.match(nxt) or _STOP.match(nxt):
                    break
                more.append(nxt.strip())
            value = " ".join([value, *more]).strip()
        out[key] = value
    return out


def one_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _better(goal: str) -> str:
    return "lower" if goal == "minimize" else "higher"


def _budget(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} seconds"


def _history_line(r: ExperimentRecord, best_before: float | None, metric: str, goal: str) -> str:
    value = f"{metric}={fmt(r.value)}" if r.value is not None else f"{metric}=—"
    if r.value is not None and best_before is not None and r.experiment > 0:
        delta = r.value - best_before
        gained = -delta if goal == "minimize" else delta
        word = "better" if gained > 0 else "worse" if gained < 0 else "same"
        value += f" (Δ {delta:+.4g} vs best, {word})"
    parts = [f"#{r.experiment} {r.status or r.state}", value, f'"{one_line(r.description, 100)}"']
    if r.status != "keep" and r.reason:
        parts.append(f"reason: {one_line(r.reason, 300)}")
    if r.hypothesis:
        parts.append(f"hypothesis: {one_line(r.hypothesis, 200)}")
    return "- " + " · ".join(parts)


def _rows(ctx: Context) -> list[tuple[ExperimentRecord, float | None]]:
    """Each experiment with the best value of its time."""
    rows: list[tuple[ExperimentRecord, float | None]] = []
    best: float | None = None
    for r in ctx.history:
        rows.append((r, best))
        if r.status == "keep" and r.value is not None:
            best = r.value
    return rows


def history_section(ctx: Context, recent: int = RECENT) -> str:
    """Every keep plus the `recent` latest others, with the delta against the best of the
    time; the rest is summarised as a count so the prompt stays bounded."""
    rows = _rows(ctx)
    others = [r.experiment for r, _ in rows if r.status != "keep"]
    shown = set(others[-recent:]) if recent else set()
    lines = [
        _history_line(r, b, ctx.metric, ctx.goal)
        for r, b in rows
        if r.status == "keep" or r.experiment in shown
    ]
    counts: dict[str, int] = {}
    for r in ctx.history:
        counts[r.status or "?"] = counts.get(r.status or "?", 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    head = f"{len(ctx.history)} experiments so far ({summary})."
    hidden = len(others) - len(shown)
    if hidden > 0:
        head += f" Shown: every keep and the {len(shown)} latest others ({hidden} older omitted)."
    return head + "\n" + "\n".join(lines)


def lessons(ctx: Context, limit: int = MAX_LESSONS) -> list[str]:
    """The lessons of the context plus those the model wrote with earlier proposals."""
    found = [str(x) for x in ctx.lessons]
    for r in ctx.history:
        meta: dict[str, Any] = r.meta if isinstance(r.meta, dict) else {}
        text = str(meta.get("lesson") or "").strip()
        if text:
            about = meta.get("lesson_about")
            where = f"after #{about}" if about is not None else f"at #{r.experiment}"
            found.append(f"({where}) {one_line(text, 300)}")
    return found[-limit:]


def _overview(ctx: Context, hidden: set[str]) -> str:
    better = _better(ctx.goal)
    lines = [
        f"# Study {ctx.study}",
        f"Metric: {ctx.metric}, goal: {ctx.goal} ({better} is better). Each run is killed "
        f"after {_budget(ctx.budget_s)}.",
        f"Baseline (experiment 0): {ctx.metric} = {fmt(ctx.baseline_value)}. Current best: "
        f"experiment {ctx.best_experiment} with {ctx.metric} = {fmt(ctx.best_value)}.",
    ]
    metrics = {k: v for k, v in ctx.best_metrics.items() if k not in hidden and k != ctx.metric}
    if metrics:
        shown = ", ".join(f"{k} = {fmt(v)}" for k, v in sorted(metrics.items()))
        lines.append(f"Other numbers the best run printed: {shown}")
    bounds = []
    for c in ctx.constraints:
        if c.get("name") in hidden:
            continue
        rule = " and ".join(
            f"{c['name']} {op} {fmt(c[k])}" for k, op in (("min", ">="), ("max", "<="))
            if c.get(k) is not None
        )  # fmt: skip
        bounds.append(rule)
    if bounds:
        lines.append("Constraints (a candidate that breaks one is rejected): " + "; ".join(bounds))
    return "\n".join(lines)


def context_sections(ctx: Context, hidden: Collection[str] = ()) -> list[str]:
    """The sections shared by both proposers' prompts; `hidden` names metrics the model must
    not see (the holdout's)."""
    sections = [_overview(ctx, set(hidden))]
    if ctx.instructions.strip():
        sections.append("# Instructions from the user\n" + ctx.instructions.strip())
    sections.append("# History\n" + history_section(ctx))
    sections += in_flight_section(ctx)
    learned = lessons(ctx)
    if learned:
        sections.append("# Lessons so far\n" + "\n".join(f"- {x}" for x in learned))
    if ctx.last_crash_log.strip():
        sections.append("# Log tail of the most recent crash or timeout\n```text\n"
                        + ctx.last_crash_log.strip() + "\n```")  # fmt: skip
    if ctx.trace_digest.strip():
        sections.append("# Traces (what the runs wrote about their own behaviour)\n"
                        + ctx.trace_digest.strip())  # fmt: skip
    return sections


def _surface_section(ctx: Context) -> str:
    parts = [f"# Current best surface (experiment {ctx.best_experiment})"]
    for path in sorted(ctx.surface):
        parts.append(f"## {path}\n```\n{number_lines(ctx.surface[path])}\n```")
    return "\n\n".join(parts)


def _fill(ctx: Context) -> dict[str, str]:
    paths = ", ".join(sorted(ctx.surface)) or "(none)"
    better = _better(ctx.goal)
    return {
        "paths": paths, "metric": ctx.metric, "better": better,
        "budget": _budget(ctx.budget_s),
        "reply_format": REPLY_FORMAT.format(metric=ctx.metric, better=better),
    }  # fmt: skip


def llm_prompt(ctx: Context, whole_file: bool, hidden: Collection[str] = ()) -> tuple[str, str]:
    """(system, user) messages for the `llm` proposer."""
    fill = _fill(ctx)
    system = SYSTEM.format(
        example_path=sorted(ctx.surface)[0] if ctx.surface else "train.py",
        whole_file=WHOLE_FILE if whole_file else "",
        **fill,
    )
    user = "\n\n".join(
        [
            *context_sections(ctx, hidden),
            _surface_section(ctx),
            "Propose the next experiment now, in the reply format.",
            *_left(ctx),
        ]
    )
    return system, user


def _left(ctx: Context) -> list[str]:
    """What is left of this run's time, experiments and money; last, so that the prompt
    before it stays the same from call to call (provider prompt caches)."""
    left = ctx.remaining.describe()
    return [left.capitalize() + "."] if left else []


def agent_prompt(ctx: Context, description_file: str, hidden: Collection[str] = ()) -> str:
    """The whole prompt for a coding agent, which reads the surface from its worktree."""
    task = AGENT_TASK.format(description_file=description_file, **_fill(ctx))
    return "\n\n".join([*context_sections(ctx, hidden), task, *_left(ctx)]) + "\n"


def in_flight_section(ctx: Context) -> list[str]:
    """The experiments being measured while this one is proposed (run-ahead, parallel
    slots): any of them may become the best before this proposal runs."""
    if not ctx.in_flight:
        return []
    rows = [f'- {"#" + str(r["experiment"]) if r["experiment"] else "next"}: '
            f'"{one_line(str(r["description"]), 100)}"' for r in ctx.in_flight]
    return ["# Experiments in flight\nBeing measured now; any may become the best before your "
            "change runs. Do not propose them again:\n" + "\n".join(rows)]  # fmt: skip


def agent_followup_prompt(
    ctx: Context, description_file: str, seen: Collection[int], *, instructions: bool,
    digest: bool, hidden: Collection[str] = (),
) -> str:  # fmt: skip
    """The prompt of a continued agent session, whose conversation already holds earlier
    prompts: the experiments decided since (those not in `seen`, which parallel slots may
    decide out of order), the lessons and crash log that came with them, the instructions
    and the trace digest only when they changed, and the task."""
    sections = [_overview(ctx, set(hidden))]
    if instructions and ctx.instructions.strip():
        sections.append("# Instructions from the user (changed)\n" + ctx.instructions.strip())
    lines = [_history_line(r, b, ctx.metric, ctx.goal) for r, b in _rows(ctx)
             if r.experiment not in seen]  # fmt: skip
    sections.append("# Decided since your last proposal\n"
                    + ("\n".join(lines) or "Nothing yet (the runs are still going)."))  # fmt: skip
    recent = [r for r in ctx.history if r.experiment not in seen]
    learned = lessons(dataclasses.replace(ctx, history=recent, lessons=[]))
    if learned:
        sections.append("# New lessons\n" + "\n".join(f"- {x}" for x in learned))
    crash = next((r for r in reversed(ctx.history) if r.status in ("crash", "timeout")), None)
    if crash is not None and crash.experiment not in seen and ctx.last_crash_log.strip():
        sections.append("# Log tail of the most recent crash or timeout\n```text\n"
                        + ctx.last_crash_log.strip() + "\n```")  # fmt: skip
    if digest and ctx.trace_digest.strip():
        sections.append("# Traces (changed)\n" + ctx.trace_digest.strip())
    task = AGENT_FOLLOWUP.format(description_file=description_file, best=ctx.best_experiment,
                                 **_fill(ctx))  # fmt: skip
    return "\n\n".join([*sections, *in_flight_section(ctx), task, *_left(ctx)]) + "\n"
