"""What the `llm` and `agent` proposers tell the model, and how its reply's fields are read.

The prompt gives what a good researcher would want before the next experiment: the user's
instructions, the metric, its goal and the budget, the history (every keep and the most
recent other experiments, each with status, value, delta, description, reason and the
hypothesis it tested), the lessons written so far, the log tail of the latest crash, the
trace digest, the constraints, and the current best surface.

Order for caching: what stays the same from call to call comes first (the rules and reply
format, the study, the instructions, the best surface), what changes every experiment last
(history, lessons, logs, traces), so a server's prefix cache and provider prompt caching
reuse the long stable part. The history is compacted to a LEVEL that fits the budget.

Lessons: with every proposal the model states a HYPOTHESIS (stored in the ledger with the
experiment, and shown next to its outcome in the history) and a LESSON line about the
previous experiment's result, stored in the proposal's `meta["lesson"]`. Both survive a
restart because the prompt is rebuilt from the ledger each time.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from overnight.judging.rules import fmt
from overnight.proposers.base import Context
from overnight.store.records import ExperimentRecord

RECENT = 15  # non-kept experiments shown besides every keep
MAX_LESSONS = 20
REASON_CHARS = 160  # a reason in the history is cut to this (the ledger keeps it whole)


@dataclass(frozen=True)
class Level:
    """How much of the history a prompt carries; LEVELS go from everything to the least."""

    keeps: int | None  # the latest N keeps (None: every keep)
    recent: int  # the latest N other experiments
    lessons: int
    hypotheses: bool
    crash_chars: int  # of the latest crash's log tail
    trace_chars: int  # of the trace digest


LEVELS = (
    Level(None, RECENT, MAX_LESSONS, True, 3000, 20000),
    Level(10, 8, 10, True, 1500, 4000),
    Level(5, 4, 5, False, 600, 1000),
    Level(2, 2, 2, False, 0, 0),
    Level(1, 0, 0, False, 0, 0),
)
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


def _history_line(r: ExperimentRecord, best_before: float | None, ctx: Context, why: bool) -> str:
    metric = ctx.metric
    value = f"{metric}={fmt(r.value)}" if r.value is not None else f"{metric}=—"
    if r.value is not None and best_before is not None and r.experiment > 0:
        delta = r.value - best_before
        gained = -delta if ctx.goal == "minimize" else delta
        word = "better" if gained > 0 else "worse" if gained < 0 else "same"
        value += f" (Δ {delta:+.4g} vs best, {word})"
    parts = [f"#{r.experiment} {r.status or r.state}", value, f'"{one_line(r.description, 100)}"']
    if r.status != "keep" and r.reason:
        parts.append(f"reason: {one_line(r.reason, REASON_CHARS)}")
    if why and r.hypothesis:
        parts.append(f"hypothesis: {one_line(r.hypothesis, 200)}")
    return "- " + " · ".join(parts)


def _collapsed(r: ExperimentRecord, first: int, n: int) -> str:
    """A run of `n` failures with the same status and reason, as one line."""
    return (f"- #{first}–#{r.experiment} {r.status} ×{n} (the same each time) · "
            f"reason: {one_line(r.reason, REASON_CHARS)}")  # fmt: skip


def _rows(ctx: Context) -> list[tuple[ExperimentRecord, float | None]]:
    """Each experiment with the best value of its time."""
    rows: list[tuple[ExperimentRecord, float | None]] = []
    best: float | None = None
    for r in ctx.history:
        rows.append((r, best))
        if r.status == "keep" and r.value is not None:
            best = r.value
    return rows


def history_section(ctx: Context, level: Level = LEVELS[0]) -> str:
    """Keeps and the latest others, with the delta against the best of the time; a run of
    identical failures is one line, and the rest is summarised as a count."""
    rows = _rows(ctx)
    keeps = [r.experiment for r, _ in rows if r.status == "keep"]
    others = [r.experiment for r, _ in rows if r.status != "keep"]
    shown = set(others[-level.recent :]) if level.recent else set()
    shown |= set(keeps if level.keeps is None else keeps[-level.keeps :])
    shown.add(ctx.best_experiment)
    lines: list[str] = []
    run: list[ExperimentRecord] = []

    def flush() -> None:
        if len(run) > 2:
            lines.append(_collapsed(run[-1], run[0].experiment, len(run)))
        else:
            lines.extend(_history_line(x, None, ctx, level.hypotheses) for x in run)
        run.clear()

    for r, b in rows:
        if r.experiment not in shown:
            continue
        same = run and (r.status, r.reason) == (run[-1].status, run[-1].reason)
        if r.status in ("invalid", "crash", "timeout", "rejected") and r.reason:
            if not same:
                flush()
            run.append(r)
            continue
        flush()
        lines.append(_history_line(r, b, ctx, level.hypotheses))
    flush()
    counts: dict[str, int] = {}
    for r in ctx.history:
        counts[r.status or "?"] = counts.get(r.status or "?", 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    head = f"{len(ctx.history)} experiments so far ({summary})."
    hidden = len(ctx.history) - len(shown & {r.experiment for r in ctx.history})
    if hidden > 0:
        head += f" {hidden} older ones omitted."
    return head + "\n" + "\n".join(lines)


def lessons(ctx: Context, limit: int = MAX_LESSONS) -> list[str]:
    """The lessons of the context plus those the model wrote with earlier proposals."""
    if limit <= 0:
        return []
    found = [str(x) for x in ctx.lessons]
    for r in ctx.history:
        meta: dict[str, Any] = r.meta if isinstance(r.meta, dict) else {}
        text = str(meta.get("lesson") or "").strip()
        if text:
            about = meta.get("lesson_about")
            where = f"after #{about}" if about is not None else f"at #{r.experiment}"
            found.append(f"({where}) {one_line(text, 300)}")
    return found[-limit:]


def _overview(ctx: Context, hidden: set[str], best: bool = True) -> str:
    better = _better(ctx.goal)
    lines = [
        f"# Study {ctx.study}",
        f"Metric: {ctx.metric}, goal: {ctx.goal} ({better} is better). Each run is killed "
        f"after {_budget(ctx.budget_s)}.",
        f"Baseline (experiment 0): {ctx.metric} = {fmt(ctx.baseline_value)}.",
    ]
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
    if best:
        lines.append(_best_line(ctx, hidden))
    return "\n".join(lines)


def _best_line(ctx: Context, hidden: set[str]) -> str:
    line = (f"Current best: experiment {ctx.best_experiment} with {ctx.metric} = "
            f"{fmt(ctx.best_value)}.")  # fmt: skip
    metrics = {k: v for k, v in ctx.best_metrics.items() if k not in hidden and k != ctx.metric}
    if metrics:
        shown = ", ".join(f"{k} = {fmt(v)}" for k, v in sorted(metrics.items()))
        line += f" Other numbers the best run printed: {shown}"
    return line


def _cut(text: str, chars: int) -> str:
    text = text.strip()
    return text if len(text) <= chars else "…" + text[-chars:]


def in_flight_section(ctx: Context) -> list[str]:
    """The experiments being measured while this one is proposed (run-ahead, parallel
    slots): any of them may become the best before this proposal runs."""
    if not ctx.in_flight:
        return []
    rows = [f'- {"#" + str(r["experiment"]) if r["experiment"] else "next"}: '
            f'"{one_line(str(r["description"]), 100)}"' for r in ctx.in_flight]
    return ["# Experiments in flight\nBeing measured now; any may become the best before your "
            "change runs. Do not propose them again:\n" + "\n".join(rows)]  # fmt: skip


def _left(ctx: Context) -> list[str]:
    """What is left of this run's time, experiments and money; last, so that the prompt
    before it stays the same from call to call (provider prompt caches)."""
    left = ctx.remaining.describe()
    return [left.capitalize() + "."] if left else []


def volatile_sections(ctx: Context, level: Level = LEVELS[0]) -> list[str]:
    """What changes from one experiment to the next, compacted to `level`."""
    sections = ["# History\n" + history_section(ctx, level)]
    learned = lessons(ctx, level.lessons)
    if learned:
        sections.append("# Lessons so far\n" + "\n".join(f"- {x}" for x in learned))
    sections += in_flight_section(ctx)
    if ctx.last_crash_log.strip() and level.crash_chars:
        sections.append("# Log tail of the most recent crash or timeout\n```text\n"
                        + _cut(ctx.last_crash_log, level.crash_chars) + "\n```")  # fmt: skip
    if ctx.trace_digest.strip() and level.trace_chars:
        sections.append("# Traces (what the runs wrote about their own behaviour)\n"
                        + _cut(ctx.trace_digest, level.trace_chars))  # fmt: skip
    return sections


def context_sections(ctx: Context, hidden: Collection[str] = ()) -> list[str]:
    """The agent's context: overview, instructions, then everything that changes."""
    sections = [_overview(ctx, set(hidden))]
    if ctx.instructions.strip():
        sections.append("# Instructions from the user\n" + ctx.instructions.strip())
    return sections + volatile_sections(ctx)


def _surface_section(ctx: Context, hidden: set[str]) -> str:
    parts = [f"# Current best surface (experiment {ctx.best_experiment})", _best_line(ctx, hidden)]
    for path in sorted(ctx.surface):
        parts.append(f"## {path}\n```\n{ctx.surface[path].rstrip()}\n```")
    return "\n\n".join(parts)


def _fill(ctx: Context) -> dict[str, str]:
    paths = ", ".join(sorted(ctx.surface)) or "(none)"
    better = _better(ctx.goal)
    return {
        "paths": paths, "metric": ctx.metric, "better": better,
        "budget": _budget(ctx.budget_s),
        "reply_format": REPLY_FORMAT.format(metric=ctx.metric, better=better),
        "example_path": sorted(ctx.surface)[0] if ctx.surface else "train.py",
    }  # fmt: skip


@dataclass
class Prompt:
    """One request's text: the system message and a user message whose `stable` head stays
    the same from call to call (until a keep) and whose `volatile` tail does not."""

    system: str
    stable: str
    volatile: str
    level: int = 0

    @property
    def user(self) -> str:
        return self.stable + "\n\n" + self.volatile

    def text(self) -> str:
        return f"[system]\n{self.system}\n\n[user]\n{self.user}\n"


def llm_prompt(
    ctx: Context,
    instructions: Callable[[dict[str, str]], str],
    hidden: Collection[str] = (),
    level: int = 0,
    redact: Any = None,
    note: str = "",
) -> Prompt:
    """The `llm` proposer's prompt; `instructions(fill)` writes the edit format's reply
    format, `note` follows the surface. `redact` (str -> str) is applied to every part."""
    fill = _fill(ctx)
    hide = set(hidden)
    system = SYSTEM.format(**fill) + instructions(fill)
    stable = [_overview(ctx, hide, best=False)]
    if ctx.instructions.strip():
        stable.append("# Instructions from the user\n" + ctx.instructions.strip())
    stable.append(_surface_section(ctx, hide))
    if note:
        stable.append(note)
    tail = [*volatile_sections(ctx, LEVELS[level]), "Propose the next experiment now, in the "
            "reply format.", *_left(ctx)]  # fmt: skip
    parts = [system, "\n\n".join(stable), "\n\n".join(tail)]
    if redact is not None:
        parts = [redact(p) for p in parts]
    return Prompt(*parts, level=level)


def agent_prompt(ctx: Context, description_file: str, hidden: Collection[str] = ()) -> str:
    """The whole prompt for a coding agent, which reads the surface from its worktree."""
    task = AGENT_TASK.format(description_file=description_file, **_fill(ctx))
    return "\n\n".join([*context_sections(ctx, hidden), task, *_left(ctx)]) + "\n"


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
    lines = [_history_line(r, b, ctx, True) for r, b in _rows(ctx) if r.experiment not in seen]
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
