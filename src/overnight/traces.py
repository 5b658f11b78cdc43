"""Traces: what a run's task agent did, per task and per trial, read from `$OVERNIGHT_TRACE_DIR`.

Two formats are accepted:
- `*.jsonl`: one JSON object per trial with `task` (id), `score` (0..1) or `passed` (bool),
  and optionally `input`, `output`, `expected`, `error`, `steps` (list of objects), `cost_usd`.
- Harbor's trial folders (`<trial>/agent/trajectory.json` in ATIF, `<trial>/verifier/
  reward.txt` or `reward.json`, `<trial>/result.json`): the task is `result.json`'s
  `task_name` (Harbor cuts the folder name to 32 characters), else the trajectory's
  `extra.task_id`/`task_id`, else the folder's name without its `__<id>` suffix; the outcome is
  `passed`/`score`/`reward` in the trajectory, else the verifier's rewards (`result.json`,
  `reward.txt`, `reward.json`); `exception_info` (an agent timeout, say) is the error, and a
  trial that raised without a reward failed.

A task run several times keeps every trial apart: its pass rate is the share of its trials
that passed, and it counts as passed when at least half did.

Malformed files are reported in `TraceSet.problems`, never fatal. Every file is opened by
`_read` alone.

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
TRIAL_SUFFIX = re.compile(r"__[A-Za-z0-9]+$")  # Harbor's `<task[:32]>__<7 random chars>`


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text[:limit]


@dataclass
class TaskTrace:
    """One trial of a task."""

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
    trial: str = ""

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
class TaskResult:
    """Every trial of one task, in the order they were read."""

    task: str
    trials: list[TaskTrace] = field(default_factory=list)

    def counts(self) -> tuple[int, int]:
        """(trials that passed, trials with a known outcome)."""
        known = [t.ok for t in self.trials if t.ok is not None]
        return sum(1 for ok in known if ok), len(known)

    @property
    def pass_rate(self) -> float | None:
        passed, known = self.counts()
        return passed / known if known else None

    @property
    def ok(self) -> bool | None:
        """Passed when at least half of its trials with an outcome passed."""
        rate = self.pass_rate
        return None if rate is None else rate >= 0.5

    @property
    def flaky(self) -> bool:
        rate = self.pass_rate
        return rate is not None and 0 < rate < 1

    def shown(self) -> TaskTrace:
        """The trial worth reading: the first that failed, else the first."""
        return next((t for t in self.trials if t.ok is False), self.trials[0])

    @property
    def score(self) -> float | None:
        scores = [t.score for t in self.trials if t.score is not None]
        return sum(scores) / len(scores) if scores else None

    @property
    def error(self) -> str | None:
        return next((t.error for t in self.trials if t.error), None)

    @property
    def source(self) -> str:
        return self.trials[0].source

    def outcome(self) -> str:
        if len(self.trials) == 1:
            return self.trials[0].outcome()
        passed, known = self.counts()
        if not known:
            return "unknown"
        return f"{'pass' if self.ok else 'FAIL'} {passed}/{known}"

    def failure_kind(self) -> str:
        return self.shown().failure_kind()


@dataclass
class TraceSet:
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, trial: TaskTrace) -> None:
        self.tasks.setdefault(trial.task, TaskResult(trial.task)).trials.append(trial)

    def passed(self) -> int:
        return sum(1 for t in self.tasks.values() if t.ok)

    def failing(self) -> list[TaskResult]:
        return [t for t in self.tasks.values() if t.ok is False]

    def trial_counts(self) -> tuple[int, int]:
        """(trials that passed, trials) over all tasks."""
        passed = sum(t.counts()[0] for t in self.tasks.values())
        return passed, sum(len(t.trials) for t in self.tasks.values())

    def repeated(self) -> bool:
        return any(len(t.trials) > 1 for t in self.tasks.values())

    def passed_text(self, words: str = " tasks passed") -> str:
        """`2/3 tasks passed`, plus the trials when a task ran more than once."""
        text = f"{self.passed()}/{len(self.tasks)}{words}"
        if self.repeated():
            passed, trials = self.trial_counts()
            text += f" ({passed}/{trials} trials)"
        return text


# --- reading -------------------------------------------------------------------------------


def _read(path: Path, rel: str, out: TraceSet) -> str | None:
    """The text of a trace file, or None (and a problem) when it cannot or must not be read.
    Every trace file is opened here and nowhere else."""
    base = path
    for _ in Path(rel).parts:
        base = base.parent
    try:
        # Never through a link, on the way or at the end: a run may point its traces at the
        # holdout's (safefs refuses links and anything that is not a regular file).
        if safefs.size(base, rel) > MAX_FILE_BYTES:
            out.problems.append(f"{rel}: larger than {MAX_FILE_BYTES >> 20} MiB, skipped")
            return None
        return safefs.read_text(base, rel)
    except OSError as exc:
        out.problems.append(f"{rel}: {type(exc).__name__}: {exc}")
        return None


def _read_json(path: Path, rel: str, out: TraceSet) -> Any:
    """Parsed JSON, or None (and a problem) for an unreadable or malformed file."""
    text = _read(path, rel, out)
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        out.problems.append(f"{rel}: {type(exc).__name__}: {exc}")
        return None


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
        trial=str(obj.get("trial", "")),
    )  # fmt: skip


def _read_jsonl(path: Path, rel: str, out: TraceSet) -> None:
    text = _read(path, rel, out)
    for i, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            out.add(_record(obj, f"{rel}:{i}"))
        except (ValueError, RecursionError) as exc:
            out.problems.append(f"{rel}:{i}: {exc}")


def _reward(trial: Path, root: Path, result: dict[str, Any], out: TraceSet) -> float | None:
    """The verifier's reward of a trial: `result.json`'s rewards, else `reward.txt` (its first
    line) or `reward.json` (its `reward`, or its only number) in `verifier/` or beside."""
    rewards = (result.get("verifier_result") or {}).get("rewards") if result else None
    found = _pick_reward(rewards) if isinstance(rewards, dict) else None
    for d in (trial / "verifier", trial):
        if found is not None or not (d == root or root in d.parents):
            break
        txt, js = d / "reward.txt", d / "reward.json"
        if txt.is_file():
            lines = (_read(txt, _rel(txt, root), out) or "").strip().splitlines()
            found = _num(lines[0].strip()) if lines else None
        elif js.is_file():
            data = _read_json(js, _rel(js, root), out)
            found = _pick_reward(data) if isinstance(data, dict) else None
    return found


def _pick_reward(rewards: dict[str, Any]) -> float | None:
    if "reward" in rewards:
        return _num(rewards["reward"])
    numbers = [_num(v) for v in rewards.values()]
    return numbers[0] if len(numbers) == 1 else None


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root.parent).as_posix()


def _trajectory(path: Path, root: Path, out: TraceSet) -> dict[str, Any] | None:
    data = _read_json(path, _rel(path, root), out)
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        out.problems.append(f"{_rel(path, root)}: not an ATIF trajectory (no `steps` list)")
        return None
    return data


def _harbor_trial(
    trial: Path, root: Path, trajectories: list[Path], result: dict[str, Any], out: TraceSet
) -> None:
    """One trial folder (or, with no folder, one trajectory right in the trace folder)."""
    data = [d for d in (_trajectory(p, root, out) for p in trajectories) if d is not None]
    if not data and not result:
        return
    extra: dict[str, Any] = {}
    for d in data:
        extra.update(d.get("extra") if isinstance(d.get("extra"), dict) else {})
    top = data[0] if data else {}
    task = result.get("task_name") or extra.get("task_id") or top.get("task_id") or top.get("task")
    source = _rel(trajectories[0] if data else trial / "result.json", root)
    if not task:
        if trial == root:  # right in the trace folder: no trial folder to name it
            out.problems.append(f"{source}: no task id (extra.task_id) and no trial folder")
            return
        task = TRIAL_SUFFIX.sub("", trial.name) or trial.name
    passed = next((s.get("passed") for s in (top, extra) if isinstance(s.get("passed"), bool)),
                  None)  # fmt: skip
    score = next((_num(s.get(k)) for s in (top, extra) for k in ("score", "reward")
                  if _num(s.get(k)) is not None), None)  # fmt: skip
    if passed is None and score is None:
        score = _reward(trial, root, result, out)
    error = None if extra.get("error") is None else str(extra["error"])
    exc = result.get("exception_info")
    if isinstance(exc, dict) and exc.get("exception_type"):
        error = f"{exc['exception_type']}: {exc.get('exception_message') or ''}".strip()
        if passed is None and score is None:
            passed = False  # it raised and nothing graded it
    steps = [s for d in data for s in d["steps"]]
    first_user = next((s.get("message") for s in steps
                       if isinstance(s, dict) and s.get("source") == "user"), None)  # fmt: skip
    last_agent = next((s.get("message") for s in reversed(steps)
                       if isinstance(s, dict) and s.get("source") == "agent"), None)  # fmt: skip
    costs = [_num((d.get("final_metrics") or {}).get("total_cost_usd")) for d in data
             if isinstance(d.get("final_metrics"), dict)]  # fmt: skip
    cost = sum(c for c in costs if c is not None) if any(c is not None for c in costs) else None
    if cost is None and isinstance(result.get("agent_result"), dict):
        cost = _num(result["agent_result"].get("cost_usd"))
    out.add(TaskTrace(
        task=str(task), passed=passed, score=score, input=first_user, output=last_agent,
        error=error, steps=steps, cost_usd=cost, source=source,
        trial=result.get("trial_name") or (trial.name if trial != root else ""),
    ))  # fmt: skip


def _read_harbor(
    d: Path, trajectories: list[Path], results: list[Path], out: TraceSet
) -> set[Path]:
    """Group the trajectories and `result.json` files of a trace folder into trials and read
    them; returns the trial folders."""
    trials: dict[Path, dict[str, Any]] = {}
    for path in results:
        data = _read_json(path, _rel(path, d), out)
        if isinstance(data, dict) and isinstance(data.get("task_name"), str):
            trials[path.parent] = data  # a job's own result.json has no task_name
    found: dict[Path, list[Path]] = {t: [] for t in trials}
    for path in trajectories:
        owner = next((a for a in path.parents if a in trials), None)
        if owner is None:
            owner = path.parent.parent if path.parent.name == "agent" else path.parent
            if owner != d and d not in owner.parents:
                owner = d
        found.setdefault(owner, []).append(path)
    for trial in sorted(found):
        _harbor_trial(trial, d, found[trial], trials.get(trial, {}), out)
    return set(found) - {d}


def load_traces(dirs: Iterable[Path]) -> TraceSet:
    """Every task trial under `dirs`. JSONL files inside a Harbor trial folder (an agent's
    own session logs) are the trial's, not task records."""
    out = TraceSet()
    for d in dirs:
        jsonl, trajectories, results = [], [], []
        for path in sorted(safefs.walk_files(d)):  # links (to holdout traces) never followed
            inside = path.relative_to(d).parts
            if any(part.lower().startswith("holdout") for part in inside) or not path.is_file():
                continue
            if path.suffix == ".jsonl":
                jsonl.append(path)
            elif path.name == "trajectory.json":
                trajectories.append(path)
            elif path.name == "result.json":
                results.append(path)
        trials = _read_harbor(d, trajectories, results, out)
        for path in jsonl:
            if not any(a in trials for a in path.parents):
                _read_jsonl(path, _rel(path, d), out)
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
