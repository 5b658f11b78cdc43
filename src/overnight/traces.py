"""Traces: what a run's task agent did, per task, read from `$OVERNIGHT_TRACE_DIR`.

Two formats are accepted:
- `*.jsonl`: one JSON object per task with `task` (id), `score` (0..1) or `passed` (bool), and
  optionally `input`, `output`, `expected`, `error`, `steps` (list of objects), `cost_usd`.
- Harbor's ATIF `trajectory.json`: the task id is `extra.task_id`/`task_id`, else the trial
  folder's name; the outcome is `passed`/`score`/`reward` in the file or its `extra`, else a
  `reward.txt` (or `verifier/reward.txt`) beside or above it.

Malformed files are reported in `TraceSet.problems`, never fatal.

Holdout traces never reach a prompt: only the metric runs' folders (`traces`, `traces-<n>`)
are read, and inside them files and folders whose names start with `holdout` are skipped,
so an evaluation that writes its holdout records next to its search records leaks nothing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overnight.isolation import safefs

# Trace folders of the metric runs (repeat 0, 1, …). Holdout, confirm and any other kind
# of run write to other folders and never reach a prompt.
SEARCH_DIR = re.compile(r"^traces(-\d+)?$")
# A trace file bigger than this is reported and skipped rather than read into memory.
MAX_FILE_BYTES = 64 << 20


@dataclass
class TaskTrace:
    task: str
    passed: bool | None = None
    score: float | None = None
    input: Any = None
    output: Any = None
    expected: Any = None
    error: str | None = None
    steps: list[Any] = field(default_factory=list)
    cost_usd: float | None = None
    source: str = ""

    @property
    def ok(self) -> bool | None:
        """Passed? `passed` wins; otherwise a score of 1 (or more) counts as a pass."""
        if self.passed is not None:
            return self.passed
        if self.score is not None:
            return self.score >= 1.0
        return None

    def outcome(self) -> str:
        if self.ok is None:
            return "unknown"
        text = "pass" if self.ok else "FAIL"
        return f"{text} ({self.score:g})" if self.score is not None else text

    def failure_kind(self) -> str:
        """A coarse label to spread the digest over different kinds of failure."""
        if self.error:
            first = str(self.error).strip().splitlines()[0] if str(self.error).strip() else ""
            return "error: " + re.sub(r"\d+", "N", first.split(":")[0])[:60]
        if self.expected is not None:
            # Expected and actual together: "billing, said bug" and "billing, said account"
            # are different mistakes and both deserve a slot in the digest.
            return f"wrong answer: expected {_short(self.expected)}, got {_short(self.output)}"
        return "failed"


@dataclass
class TraceSet:
    tasks: dict[str, TaskTrace] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def passed(self) -> int:
        return sum(1 for t in self.tasks.values() if t.ok)

    def failing(self) -> list[TaskTrace]:
        return [t for t in self.tasks.values() if t.ok is False]


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text[:limit]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _record(obj: dict[str, Any], source: str) -> TaskTrace:
    task = obj.get("task", obj.get("task_id", obj.get("id")))
    if task is None or not str(task).strip():
        raise ValueError("no `task` field")
    passed = obj.get("passed")
    if passed is not None and not isinstance(passed, bool):
        raise ValueError(f"`passed` must be true or false, got {passed!r}")
    steps = obj.get("steps") or []
    if not isinstance(steps, list):
        raise ValueError("`steps` must be a list")
    return TaskTrace(
        task=str(task), passed=passed, score=_num(obj.get("score")),
        input=obj.get("input"), output=obj.get("output"), expected=obj.get("expected"),
        error=None if obj.get("error") is None else str(obj.get("error")),
        steps=steps, cost_usd=_num(obj.get("cost_usd")), source=source,
    )  # fmt: skip


def _read_jsonl(path: Path, rel: str, out: TraceSet) -> None:
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            rec = _record(obj, f"{rel}:{i}")
        except (ValueError, RecursionError) as exc:
            out.problems.append(f"{rel}:{i}: {exc}")
            continue
        out.tasks[rec.task] = rec


def _reward_near(path: Path, root: Path) -> float | None:
    # Only inside the trace folder: above it lie the experiment's other files.
    for d in (path.parent, path.parent.parent):
        if d != root and root not in d.parents:
            continue
        for name in ("reward.txt", "verifier/reward.txt"):
            f = d / name
            if f.is_file():
                return _num(f.read_text().strip())
    return None


def _read_atif(path: Path, rel: str, root: Path, out: TraceSet) -> None:
    try:
        data = json.loads(path.read_text(errors="replace"))
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            raise ValueError("not an ATIF trajectory (no `steps` list)")
    except ValueError as exc:
        out.problems.append(f"{rel}: {exc}")
        return
    extra = data.get("extra") if isinstance(data.get("extra"), dict) else {}
    task = extra.get("task_id") or data.get("task_id") or data.get("task")
    if not task:
        trial = path.parent.parent if path.parent.name == "agent" else path.parent
        if root not in trial.parents:  # right in the trace folder: no trial folder to name it
            out.problems.append(f"{rel}: no task id (extra.task_id) and no trial folder")
            return
        task = trial.name.split("__")[0]
    passed = next((s.get("passed") for s in (data, extra) if isinstance(s.get("passed"), bool)),
                  None)  # fmt: skip
    score = next((_num(s.get(k)) for s in (data, extra) for k in ("score", "reward")
                  if _num(s.get(k)) is not None), None)  # fmt: skip
    if passed is None and score is None:
        score = _reward_near(path, root)
    final = data.get("final_metrics") if isinstance(data.get("final_metrics"), dict) else {}
    steps = data["steps"]
    first_user = next((s.get("message") for s in steps
                       if isinstance(s, dict) and s.get("source") == "user"), None)  # fmt: skip
    last_agent = next((s.get("message") for s in reversed(steps)
                       if isinstance(s, dict) and s.get("source") == "agent"), None)  # fmt: skip
    out.tasks[str(task)] = TaskTrace(
        task=str(task), passed=passed, score=score, input=first_user, output=last_agent,
        error=None if extra.get("error") is None else str(extra["error"]), steps=steps,
        cost_usd=_num(final.get("total_cost_usd")), source=rel,
    )  # fmt: skip


def load_traces(dirs: Iterable[Path]) -> TraceSet:
    """Every task trace under `dirs` (later files win for a repeated task id)."""
    out = TraceSet()
    for d in dirs:
        for path in sorted(safefs.walk_files(d)):  # links (to holdout traces) never followed
            rel = path.relative_to(d.parent).as_posix()
            inside = path.relative_to(d).parts
            if any(part.lower().startswith("holdout") for part in inside):
                continue
            is_jsonl = path.suffix == ".jsonl"
            if not (is_jsonl or path.name == "trajectory.json"):
                continue
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    out.problems.append(f"{rel}: larger than {MAX_FILE_BYTES >> 20} MiB, skipped")
                elif is_jsonl:
                    _read_jsonl(path, rel, out)
                else:
                    _read_atif(path, rel, d, out)
            except (OSError, RecursionError) as exc:  # unreadable, or absurdly nested JSON
                out.problems.append(f"{rel}: {type(exc).__name__}: {exc}")
    return out


def search_trace_dirs(exp_dir: Path, first_repeat_only: bool = True) -> list[Path]:
    """The folders of the metric runs' traces; holdout traces are never among them."""
    if not exp_dir.is_dir():
        return []
    dirs = [d for d in exp_dir.iterdir() if d.is_dir() and SEARCH_DIR.match(d.name)]
    # By repeat number: `traces-10` after `traces-2`.
    dirs.sort(key=lambda d: int(d.name.partition("-")[2] or 0))
    return dirs[:1] if first_repeat_only else dirs


def experiment_traces(exp_dir: Path) -> TraceSet:
    return load_traces(search_trace_dirs(exp_dir))


@dataclass
class TaskDiff:
    fixed: list[str]
    regressed: list[str]
    still_failing: list[str]
    still_passing: list[str]
    new: list[str]
    missing: list[str]


def diff_tasks(best: TraceSet, cand: TraceSet) -> TaskDiff:
    """Per-task change from `best` to `cand`."""
    b, c = best.tasks, cand.tasks
    both = sorted(set(b) & set(c))
    return TaskDiff(
        fixed=[t for t in both if b[t].ok is False and c[t].ok],
        regressed=[t for t in both if b[t].ok and c[t].ok is False],
        still_failing=[t for t in both if b[t].ok is False and c[t].ok is False],
        still_passing=[t for t in both if b[t].ok and c[t].ok],
        new=sorted(set(c) - set(b)),
        missing=sorted(set(b) - set(c)),
    )


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


def render(trace: TaskTrace, limit: int) -> str:
    parts = [f"### task {trace.task}: {trace.outcome()}"]
    for key in ("input", "expected", "output", "error"):
        value = getattr(trace, key)
        if value is not None:
            text = (
                value
                if isinstance(value, str)
                else json.dumps(value, default=str, ensure_ascii=False)
            )
            parts.append(f"{key}: {text}")
    if trace.steps:
        steps = "\n".join(json.dumps(s, default=str, ensure_ascii=False) for s in trace.steps)
        parts.append(f"steps ({len(trace.steps)}):\n{steps}")
    return _clip("\n".join(parts), limit)


def _diverse(traces: list[TaskTrace]) -> list[TaskTrace]:
    """Round-robin over failure kinds so the first traces cover different failures."""
    groups: dict[str, list[TaskTrace]] = {}
    for t in sorted(traces, key=lambda t: t.task):
        groups.setdefault(t.failure_kind(), []).append(t)
    out: list[TaskTrace] = []
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
    tasks the last experiment broke, then the best's failing tasks across failure kinds."""
    if not best.tasks and not (last and last.tasks):
        return ""
    broken: list[TaskTrace] = []
    if last is not None and last_experiment is not None and last_experiment != best_experiment:
        broken = [last.tasks[t] for t in diff_tasks(best, last).regressed]
    failing = _diverse(best.failing())
    per_trace = max(400, budget_chars // 4)
    sections: list[str] = []
    used = 0
    shown = 0
    candidates = [("broke", t) for t in broken] + [("fail", t) for t in failing]
    for i, (why, trace) in enumerate(candidates):
        room = budget_chars - used - 400  # leave room for the summary line
        if room < 200:
            break
        header = f"(broken by experiment {last_experiment}) " if why == "broke" else ""
        text = header + render(trace, min(per_trace, room))
        sections.append(text)
        used += len(text) + 2
        shown = i + 1
    left_out = len(candidates) - shown
    summary = (
        f"Traces of the best (experiment {best_experiment}): {best.passed()}/{len(best.tasks)} "
        f"tasks passed, {len(failing)} failing"
        + (f"; experiment {last_experiment} broke {len(broken)} task(s)" if broken else "")
        + f"; showing {shown} trace(s), {left_out} left out to fit {budget_chars} chars."
    )
    if best.problems:
        summary += f" ({len(best.problems)} malformed trace record(s) skipped.)"
    return _clip("\n\n".join([summary, *sections]), budget_chars)
