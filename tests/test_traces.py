"""Traces: JSONL and ATIF ingestion, per-task diffs, the size-bounded digest for the
proposer, holdout exclusion, and `overnight show N --tasks`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import make_repo, run_cli, score_config, write_script

from overnight import trace_digest as td
from overnight import traces as tr
from overnight.experiment.context import trace_digest
from overnight.store.records import ExperimentRecord
from overnight.trace_digest import build_digest
from overnight.traces import (
    TaskResult,
    TaskTrace,
    TraceSet,
    diff_tasks,
    experiment_traces,
    load_traces,
    search_trace_dirs,
)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def atif(*, extra: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A small ATIF trajectory: a user message, a tool call, an agent answer."""
    return {
        "schema_version": "ATIF-v1.2", "session_id": "s1",
        "agent": {"name": "terminus", "version": "1", "model_name": "m"},
        "steps": [
            {"step_id": 1, "timestamp": "t", "source": "user", "message": "sum column B"},
            {"step_id": 2, "timestamp": "t", "source": "agent", "message": "running",
             "tool_calls": [{"tool_call_id": "c1", "function_name": "bash",
                             "arguments": {"cmd": "ls"}}],
             "observation": {"results": [{"source_call_id": "c1", "content": "a.xlsx"}]}},
            {"step_id": 3, "timestamp": "t", "source": "agent", "message": "=SUM(B:B)"},
        ],
        "final_metrics": {"total_prompt_tokens": 10, "total_completion_tokens": 5,
                          "total_cost_usd": 0.25, "total_steps": 3},
        **({"extra": extra} if extra is not None else {}),
        **top,
    }  # fmt: skip


# --- JSONL ---------------------------------------------------------------------------------


def test_jsonl_record_with_every_field(tmp_path: Path) -> None:
    steps = [{"tool": "search", "query": "x"}, {"answer": 42}]
    write_jsonl(tmp_path / "traces" / "run.jsonl", [
        {"task": "t1", "passed": False, "score": 0.5, "input": {"q": "6*7"}, "output": "41",
         "expected": "42", "error": "off by one", "steps": steps, "cost_usd": 0.01},
        {"task": 2, "score": 1},
        {"task_id": "t3", "passed": True},
        {"id": "t4", "score": 0.99},
    ])  # fmt: skip
    ts = load_traces([tmp_path / "traces"])
    assert not ts.problems and list(ts.tasks) == ["t1", "2", "t3", "t4"]
    t1 = ts.tasks["t1"].trials[0]
    got = (t1.passed, t1.score, t1.input, t1.output, t1.expected, t1.error, t1.steps)
    assert got == (False, 0.5, {"q": "6*7"}, "41", "42", "off by one", steps)
    assert t1.cost_usd == 0.01
    assert t1.source == "traces/run.jsonl:1"
    # `passed` decides; otherwise a score of 1 is a pass and less is a fail.
    assert [t.ok for t in ts.tasks.values()] == [False, True, True, False]
    assert ts.passed() == 2 and [t.task for t in ts.failing()] == ["t1", "t4"]
    assert t1.outcome() == "FAIL (0.5)" and ts.tasks["t3"].outcome() == "pass"


def test_malformed_lines_are_reported_and_the_rest_is_read(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "traces" / "a.jsonl", [
        {"task": "good", "passed": True},
        "{not json",
        "[1, 2]",
        {"passed": True},
        {"task": "", "passed": True},
        {"task": "p", "passed": "yes"},
        {"task": "s", "steps": "not a list"},
        "[" * 100_000,  # nesting deeper than the JSON parser's recursion limit
        "",
        {"task": "last", "score": "NaN-ish"},
    ])  # fmt: skip
    ts = load_traces([path.parent])
    assert sorted(ts.tasks) == ["good", "last"]
    assert ts.tasks["last"].ok is None and ts.tasks["last"].outcome() == "unknown"
    lines = sorted(int(p.split(":")[1]) for p in ts.problems)
    assert lines == [2, 3, 4, 5, 6, 7, 8]
    assert all(p.startswith("traces/a.jsonl:") for p in ts.problems)
    assert any("passed" in p for p in ts.problems) and any("no `task`" in p for p in ts.problems)


def test_oversized_and_unreadable_files_are_reported(tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / "traces"
    write_jsonl(d / "big.jsonl", [{"task": f"t{i}", "passed": True} for i in range(50)])
    (d / "bad.jsonl").mkdir()  # a folder with a trace file's name is not a file: ignored
    (d / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
    monkeypatch.setattr(tr, "MAX_FILE_BYTES", 100)
    ts = load_traces([d, tmp_path / "missing"])
    assert not ts.tasks
    assert any("big.jsonl" in p and "larger than" in p for p in ts.problems)
    assert any("binary.jsonl:1" in p for p in ts.problems)


# --- ATIF ----------------------------------------------------------------------------------


def test_atif_in_harbor_layout_reads_task_from_folder_and_reward_from_verifier(
    tmp_path: Path,
) -> None:
    d = tmp_path / "traces"
    trial = d / "sum-column__a1b2c3"
    write_json(trial / "agent" / "trajectory.json", atif())
    (trial / "verifier").mkdir()
    (trial / "verifier" / "reward.txt").write_text("1.0\n")
    other = d / "pivot-table__x9"
    write_json(other / "agent" / "trajectory.json", atif())
    (other / "reward.txt").write_text("0\n")
    ts = load_traces([d])
    assert not ts.problems and sorted(ts.tasks) == ["pivot-table", "sum-column"]
    t = ts.tasks["sum-column"]
    assert t.ok is True and t.score == 1.0 and ts.tasks["pivot-table"].ok is False
    trial = t.trials[0]
    assert trial.input == "sum column B" and trial.output == "=SUM(B:B)"
    assert len(trial.steps) == 3 and trial.cost_usd == 0.25
    assert trial.trial == "sum-column__a1b2c3"
    assert t.source == "traces/sum-column__a1b2c3/agent/trajectory.json"


def test_atif_task_and_outcome_from_the_file(tmp_path: Path) -> None:
    d = tmp_path / "traces"
    write_json(
        d / "trial-1" / "trajectory.json",
        atif(extra={"task_id": "from-extra", "reward": 0.0, "error": {"code": 7}}),
    )
    write_json(d / "trial-2" / "trajectory.json", atif(task_id="top-level", passed=True))
    write_json(d / "trial-3" / "trajectory.json", atif(extra={"passed": False}))
    ts = load_traces([d])
    assert not ts.problems
    t = ts.tasks["from-extra"]
    assert t.ok is False and t.score == 0.0 and t.error == "{'code': 7}"
    assert t.failure_kind().startswith("error: ")
    assert ts.tasks["top-level"].ok is True
    assert ts.tasks["trial-3"].ok is False  # the trial folder names the task


def test_atif_malformed_files_are_reported(tmp_path: Path) -> None:
    exp = tmp_path / "7"
    d = exp / "traces"
    (d / "a").mkdir(parents=True)
    (d / "a" / "trajectory.json").write_text("{broken")
    write_json(d / "b" / "trajectory.json", {"no": "steps"})
    write_json(d / "c" / "trajectory.json", [1, 2])
    write_json(d / "trajectory.json", atif())  # right in the trace folder: no trial, no id
    # A reward beside the experiment's own files, outside the trace folder, is not the task's.
    write_json(d / "trajectory.json", atif(extra={"task_id": "root-task"}))
    (exp / "reward.txt").write_text("1\n")
    ts = load_traces([d])
    assert sorted(p.split(":")[0] for p in ts.problems) == [
        "traces/a/trajectory.json", "traces/b/trajectory.json", "traces/c/trajectory.json",
    ]  # fmt: skip
    assert ts.tasks["root-task"].ok is None
    write_json(d / "trajectory.json", atif())
    assert any("no task id" in p for p in load_traces([d]).problems)


# --- which folders: search runs only, never holdout -----------------------------------------


def test_search_trace_dirs_are_the_metric_runs_in_repeat_order(tmp_path: Path) -> None:
    for name in ("traces-10", "traces-2", "traces", "traces-1", "traces-holdout",
                 "traces-holdout-1", "traces-confirm", "artifacts", "traces-x"):  # fmt: skip
        (tmp_path / name).mkdir()
    (tmp_path / "traces-3").write_text("a file, not a folder")
    names = [d.name for d in search_trace_dirs(tmp_path, first_repeat_only=False)]
    assert names == ["traces", "traces-1", "traces-2", "traces-10"]
    assert [d.name for d in search_trace_dirs(tmp_path)] == ["traces"]
    assert search_trace_dirs(tmp_path / "nope") == []


def holdout_experiment(exp: Path) -> None:
    """An experiment whose holdout records lie in every place a harness might put them."""
    write_jsonl(exp / "traces" / "search.jsonl",
                [{"task": "s1", "passed": False, "expected": "a", "output": "b"},
                 {"task": "s2", "passed": True}])  # fmt: skip
    secret = {"passed": False, "input": "HOLDOUT-INPUT", "expected": "HOLDOUT-ANSWER"}
    write_jsonl(exp / "traces-holdout" / "search.jsonl", [{"task": "h1", **secret}])
    write_jsonl(exp / "traces" / "holdout.jsonl", [{"task": "h2", **secret}])
    write_jsonl(exp / "traces" / "holdout" / "x.jsonl", [{"task": "h3", **secret}])
    write_json(exp / "traces" / "holdout-trials" / "t__1" / "trajectory.json",
               atif(extra={"task_id": "h4", "passed": False}))  # fmt: skip


def test_holdout_traces_are_never_read(tmp_path: Path) -> None:
    holdout_experiment(tmp_path / "3")
    ts = experiment_traces(tmp_path / "3")
    assert sorted(ts.tasks) == ["s1", "s2"] and not ts.problems


def test_the_proposer_context_never_holds_holdout_traces(tmp_path: Path) -> None:
    for n in (0, 1):
        holdout_experiment(tmp_path / str(n))
    # Experiment 1 broke s2; it is shown, marked, next to the best's failing s1.
    write_jsonl(tmp_path / "1" / "traces" / "search.jsonl",
                [{"task": "s1", "passed": False}, {"task": "s2", "passed": False,
                                                   "error": "KeyError: 'x'"}])  # fmt: skip

    def record(n: int, status: str) -> ExperimentRecord:
        return ExperimentRecord(n, status, 0.5, {}, "c", "p", f"exp {n}", "", 1.0, "test")

    cfg = SimpleNamespace(traces=SimpleNamespace(prompt_chars=4000))
    study = SimpleNamespace(exp_dir=lambda n: tmp_path / str(n), cfg=cfg)
    history = [record(0, "keep"), record(1, "discard")]
    digest = trace_digest(study, history, history[0])  # type: ignore[arg-type]
    assert "### task s1" in digest and "### task s2" in digest
    assert "(broken by experiment 1) ### task s2" in digest
    assert not re.search(r"\bh\d\b|HOLDOUT", digest), digest


# --- per-task diffs ------------------------------------------------------------------------


def traceset(outcomes: dict[str, bool | None], **errors: str) -> TraceSet:
    ts = TraceSet()
    for t, ok in outcomes.items():
        ts.add(TaskTrace(t, passed=ok, error=errors.get(t)))
    return ts


def test_diff_tasks_between_experiments() -> None:
    best = traceset({"a": True, "b": False, "c": False, "d": True, "gone": True, "u": None})
    cand = traceset({"a": False, "b": True, "c": False, "d": True, "new": False, "u": True})
    d = diff_tasks(best, cand)
    assert (d.fixed, d.regressed, d.still_failing, d.still_passing, d.new, d.missing) == (
        ["b"], ["a"], ["c"], ["d"], ["new"], ["gone"],
    )  # fmt: skip
    same = diff_tasks(best, best)
    assert same.fixed == same.regressed == [] and same.still_failing == ["b", "c"]


# --- the digest ----------------------------------------------------------------------------


def many(n_fail: int, n_pass: int = 5, steps: int = 3) -> TraceSet:
    """Failures of three kinds: a wrong answer per expected/actual pair, and two errors."""
    ts = TraceSet()
    for i in range(n_fail):
        kind = i % 3
        t = TaskTrace(f"f{i:03d}", passed=False, input=f"question {i}",
                      steps=[{"step": j, "note": "x" * 50} for j in range(steps)])  # fmt: skip
        if kind == 0:
            t.expected, t.output = "billing", "bug"
        elif kind == 1:
            t.error = f"TimeoutError: tool call {i} took 30s"
        else:
            t.error = f"KeyError: 'field{i}'"
        ts.add(t)
    for i in range(n_pass):
        ts.add(TaskTrace(f"p{i:03d}", passed=True, steps=[{"ok": True}]))
    return ts


def shown_tasks(digest: str) -> list[str]:
    return re.findall(r"### task (\S+):", digest)


def test_digest_shows_failing_tasks_spread_over_failure_kinds() -> None:
    best = many(12)
    digest = build_digest(best, 4, 20000)
    summary = digest.splitlines()[0]
    assert summary.startswith("Traces of the best (experiment 4): 5/17 tasks passed, 12 failing")
    shown = shown_tasks(digest)
    assert shown and all(t.startswith("f") for t in shown)  # passing tasks are not shown
    kinds = [best.tasks[t].failure_kind() for t in shown]
    assert len(set(kinds[:3])) == 3  # one of each kind before any kind repeats
    assert f"showing {len(shown)} trace(s), {12 - len(shown)} left out" in summary
    assert {best.tasks[t].failure_kind() for t in shown} == {
        t.failure_kind() for t in best.failing()
    }
    # Wrong answers with different expected/actual pairs are different kinds.
    a = TaskTrace("a", passed=False, expected="billing", output="bug")
    b = TaskTrace("b", passed=False, expected="billing", output="account")
    assert a.failure_kind() != b.failure_kind()


def test_digest_puts_the_tasks_the_last_experiment_broke_first_and_marks_them() -> None:
    best = many(6, n_pass=4)
    last = many(6, n_pass=4)
    for t in ("p001", "p003"):
        last.tasks[t] = TaskResult(t, [TaskTrace(t, passed=False, error="AssertionError: x")])
    digest = build_digest(best, 2, 20000, last, 5)
    assert "experiment 5 broke 2 task(s)" in digest.splitlines()[0]
    assert shown_tasks(digest)[:2] == ["p001", "p003"]
    assert digest.count("(broken by experiment 5)") == 2
    # The last experiment is the best: nothing to mark.
    assert "broken by" not in build_digest(best, 2, 20000, last, 2)


def test_digest_stays_within_budget_and_says_what_it_left_out() -> None:
    best = many(40, steps=30)
    last = many(40, steps=30)
    last.tasks["p000"] = TaskResult("p000", [TaskTrace("p000", passed=False,
                                                       error="ValueError: " + "v" * 5000)])
    for budget in (1, 10, 39, 40, 100, 399, 600, 601, 800, 1000, 1500, 2000, 3333, 5000,
                   8000, 12000, 20000, 50000, 200000):  # fmt: skip
        digest = build_digest(best, 0, budget, last, 1)
        assert len(digest) <= budget, budget
        if budget >= 600:
            first = digest.splitlines()[0]
            assert first.startswith("Traces of the best (experiment 0): 5/45 tasks passed")
            m = re.search(r"showing (\d+) trace\(s\), (\d+) left out", first)
            assert m and int(m[1]) + int(m[2]) == 41, (budget, first)
            assert int(m[1]) == len(shown_tasks(digest)) >= 1


def test_each_trace_is_cut_at_head_and_tail_with_a_marker() -> None:
    t = TaskTrace("long", passed=False, input="THE-INPUT", error="Boom: at the end",
                  steps=[{"i": i, "pad": "y" * 80} for i in range(300)])  # fmt: skip
    ts = TraceSet()
    ts.add(t)
    digest = build_digest(ts, 0, 6000)
    assert len(digest) <= 6000
    assert "chars cut]" in digest
    head, _, tail = digest.partition("chars cut]")
    assert "### task long: FAIL" in head and "THE-INPUT" in head  # the head: what was asked
    assert '"i": 299' in tail  # the tail: where it ended
    assert td._clip("abcdef" * 10, 20) == ("abcdef" * 10)[:20]  # too small for a marker


def test_empty_traces_give_an_empty_digest() -> None:
    assert build_digest(TraceSet(), 0, 1000) == ""
    digest = build_digest(traceset({"a": True}), 0, 1000)
    assert "1/1 tasks passed, 0 failing; showing 0 trace(s), 0 left out" in digest


# --- show N --tasks, end to end -------------------------------------------------------------

TRACING_SCORE = """\
import json, os, pathlib
X = {x}
PASS = {passing}
out = pathlib.Path(os.environ["OVERNIGHT_TRACE_DIR"])
out.mkdir(parents=True, exist_ok=True)
rows = [{{"task": t, "passed": t in PASS, "expected": "ok", "output": "ok" if t in PASS
         else "no", "error": None if t in PASS else f"{{t}} failed: wanted ok"}}
        for t in ("t1", "t2", "t3", "t4")]
(out / "tasks.jsonl").write_text("\\n".join(map(json.dumps, rows)) + "\\nnot json\\n")
print(f"score: {{X}}")
"""


def tracing_score(x: int, passing: list[str]) -> str:
    return TRACING_SCORE.format(x=x, passing=passing)


def test_show_tasks_lists_outcomes_and_fixed_and_regressed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": tracing_score(10, ["t1", "t2"]),
        "overnight.toml": score_config(),
        "program.md": "Lower the score.\n",
    })  # fmt: skip
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": tracing_score(7, ["t1", "t3"])}, "description": "better"},
        {"files": {"score.py": tracing_score(9, ["t2", "t3", "t4"])}, "description": "worse"},
    ])  # fmt: skip
    out = run_cli(repo, "run", "-n", "2", "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout

    info = json.loads(run_cli(repo, "show", "2", "--tasks", "--json").stdout)
    assert info["experiment"] == 2 and info["best"] == 1
    assert info["fixed"] == ["t2", "t4"] and info["regressed"] == ["t1"]
    assert info["still_failing"] == [] and info["still_passing"] == ["t3"]
    assert {t["task"]: t["passed"] for t in info["tasks"]} == {
        "t1": False, "t2": True, "t3": True, "t4": True,
    }  # fmt: skip
    assert info["problems"] == ["traces/tasks.jsonl:5: Expecting value: line 1 column 1 (char 0)"]

    text = run_cli(repo, "show", "2", "--tasks").stdout
    assert "experiment 2: 3/4 tasks passed (best, experiment 1: 2/4)" in text
    assert re.search(r"FAIL\s+t1  \[REGRESSED\]  t1 failed: wanted ok", text), text
    assert re.search(r"pass\s+t4  \[fixed\]", text)
    assert "vs best: 2 fixed, 1 regressed, 0 still failing" in text
    assert "malformed trace: traces/tasks.jsonl:5" in text
    best_view = run_cli(repo, "show", "1", "--tasks").stdout
    assert "[fixed]" not in best_view and "vs best" not in best_view


# --- Harbor as it writes a job: trial folders, verifier rewards, result.json ----------------
# Shapes from Harbor's trial layout (TrialPaths: agent/, verifier/reward.txt|reward.json,
# result.json with TrialResult's fields, trial.log) and the ATIF v1.4 spec (steps with
# tool_calls and observation.results, per-step metrics with token ids and logprobs).

SYSTEM_PROMPT = "You are a terminal agent. " + "Follow the rules carefully. " * 180


def atif_trial(task: str, observations: list[str], final: str) -> dict[str, Any]:
    """An ATIF v1.4 trajectory: a system prompt, the task, one tool call per observation,
    a final answer; every agent step carries token ids and logprobs."""
    steps: list[dict[str, Any]] = [
        {"step_id": 1, "timestamp": "2026-01-05T10:00:00Z", "source": "system",
         "message": SYSTEM_PROMPT},
        {"step_id": 2, "timestamp": "2026-01-05T10:00:01Z", "source": "user", "message": task},
    ]  # fmt: skip
    for i, content in enumerate(observations):
        steps.append({
            "step_id": 3 + i, "timestamp": "2026-01-05T10:00:02Z", "source": "agent",
            "model_name": "m", "message": f"Running command {i}.",
            "reasoning_content": "I should look at the files.",
            "tool_calls": [{"tool_call_id": f"call_{i}", "function_name": "bash",
                            "arguments": {"keystrokes": f"cmd{i} --flag\n"}}],
            "observation": {"results": [{"source_call_id": f"call_{i}", "content": content}]},
            "metrics": {"prompt_tokens": 900, "completion_tokens": 40, "cached_tokens": 800,
                        "cost_usd": 0.001, "prompt_token_ids": list(range(900)),
                        "completion_token_ids": list(range(40)),
                        "logprobs": [-0.125] * 40},
        })  # fmt: skip
    steps.append({"step_id": 3 + len(observations), "timestamp": "2026-01-05T10:01:00Z",
                  "source": "agent", "message": final,
                  "metrics": {"prompt_token_ids": list(range(1200)), "logprobs": [-0.5] * 9}})
    return {
        "schema_version": "ATIF-v1.4", "session_id": f"{task[:20]}__agent",
        "agent": {"name": "terminus-2", "version": "2.0.0", "model_name": "m"},
        "steps": steps,
        "final_metrics": {"total_prompt_tokens": 9000, "total_completion_tokens": 300,
                          "total_cached_tokens": 8000, "total_cost_usd": 0.01,
                          "total_steps": len(steps)},
    }  # fmt: skip


def harbor_trial(
    job: Path, task: str, suffix: str, *, reward: float | None = None, how: str = "txt",
    exception: tuple[str, str] | None = None, trajectory: dict[str, Any] | None = None,
) -> Path:
    """One trial folder `<task[:32]>__<suffix>` as Harbor leaves it in a job folder."""
    name = f"{task[:32]}__{suffix}"
    trial = job / name
    (trial / "agent").mkdir(parents=True)
    (trial / "verifier").mkdir()
    (trial / "trial.log").write_text("trial log\n")
    write_json(trial / "config.json", {"task": {"path": f"tasks/{task}"}, "trial_name": name})
    if trajectory is not None:
        write_json(trial / "agent" / "trajectory.json", trajectory)
    if reward is not None and how == "txt":
        (trial / "verifier" / "reward.txt").write_text(f"{reward}\n")
    if reward is not None and how == "json":
        write_json(trial / "verifier" / "reward.json", {"reward": reward})
    (trial / "verifier" / "test-stdout.txt").write_text("===== 3 passed =====\n")
    exc = None
    if exception is not None:
        exc = {"exception_type": exception[0], "exception_message": exception[1],
               "exception_traceback": "Traceback (most recent call last): ...",
               "occurred_at": "2026-01-05T10:10:00"}  # fmt: skip
    write_json(trial / "result.json", {
        "id": f"00000000-0000-4000-8000-{suffix:0>12}"[:36], "task_name": task,
        "trial_name": name, "trial_uri": f"file://{trial}", "task_id": {"path": f"tasks/{task}"},
        "source": "terminal-bench", "task_checksum": "abc123", "config": {"trial_name": name},
        "agent_info": {"name": "terminus-2", "version": "2.0.0",
                       "model_info": {"name": "m", "provider": "p"}},
        "agent_result": {"n_input_tokens": 9000, "n_cache_tokens": 8000,
                         "n_output_tokens": 300, "cost_usd": 0.02, "metadata": None},
        "verifier_result": {"rewards": {"reward": reward}} if how == "result" else None,
        "exception_info": exc, "started_at": "2026-01-05T10:00:00",
        "finished_at": "2026-01-05T10:11:00",
    })  # fmt: skip
    return trial


def harbor_job(root: Path) -> Path:
    job = root / "traces" / "2026-01-05__10-00-00"
    job.mkdir(parents=True)
    write_json(job / "config.json", {"job_name": job.name, "n_attempts": 3})
    write_json(job / "result.json", {"id": "job", "started_at": "2026-01-05T10:00:00",
                                     "n_total_trials": 9, "stats": {"n_trials": 9}})
    return job


def test_harbor_rewards_from_reward_json_and_result_json(tmp_path: Path) -> None:
    """Outcomes written only to verifier/reward.json (or only into result.json) are read,
    and the pass count matches the metric the job reports (2 of 3)."""
    job = harbor_job(tmp_path)
    harbor_trial(job, "fix-permissions", "aB3dE5f", reward=1.0, how="json")
    harbor_trial(job, "count-lines", "Zz9yY8x", reward=0.0, how="json")
    harbor_trial(job, "parse-log", "Qq1wW2e", reward=1.0, how="result")
    # An agent's own session log inside a trial folder is no task record.
    write_jsonl(job / "count-lines__Zz9yY8x" / "agent" / "sessions" / "s.jsonl",
                [{"type": "user", "message": "count the lines"}])  # fmt: skip
    ts = load_traces([job.parent])
    assert not ts.problems, ts.problems  # the job's own result.json is no trial either
    assert {t: r.ok for t, r in ts.tasks.items()} == {
        "fix-permissions": True, "count-lines": False, "parse-log": True,
    }  # fmt: skip
    assert ts.passed() == 2 and ts.passed_text() == "2/3 tasks passed"
    assert ts.tasks["count-lines"].score == 0.0
    assert ts.tasks["count-lines"].trials[0].cost_usd == 0.02  # result.json's agent_result
    # A reward.json with several rewards: `reward` decides; with one number, that one.
    write_json(job / "count-lines__Zz9yY8x" / "verifier" / "reward.json",
               {"reward": 1, "accuracy": 0.5})  # fmt: skip
    write_json(job / "fix-permissions__aB3dE5f" / "verifier" / "reward.json", {"accuracy": 0.5})
    ts = load_traces([job.parent])
    assert ts.tasks["count-lines"].ok and ts.tasks["fix-permissions"].score == 0.5


def test_harbor_repeated_trials_are_kept_apart_with_a_pass_rate(tmp_path: Path) -> None:
    """`-k 3`: three trials of each task. None is dropped; each task has a pass rate."""
    job = harbor_job(tmp_path)
    long = "build-a-linux-kernel-module-from-source-and-load-it"  # cut at 32 in the folder
    for suffix, reward in (("aaaaaa1", 1.0), ("aaaaaa2", 0.0), ("aaaaaa3", 1.0)):
        harbor_trial(job, long, suffix, reward=reward)
    for suffix, reward in (("bbbbbb1", 0.0), ("bbbbbb2", 0.0), ("bbbbbb3", 1.0)):
        harbor_trial(job, "sqlite-recovery", suffix, reward=reward)
    ts = load_traces([job.parent])
    assert sorted(ts.tasks) == [long, "sqlite-recovery"]  # the full name, not the folder's
    kernel, sqlite = ts.tasks[long], ts.tasks["sqlite-recovery"]
    assert [t.trial for t in kernel.trials] == [f"{long[:32]}__aaaaaa{i}" for i in (1, 2, 3)]
    assert kernel.counts() == (2, 3) and kernel.pass_rate == pytest.approx(2 / 3)
    assert kernel.ok and kernel.flaky and kernel.outcome() == "pass 2/3"
    assert sqlite.ok is False and sqlite.outcome() == "FAIL 1/3"
    assert ts.passed_text() == "1/2 tasks passed (3/6 trials)"
    assert sqlite.shown().trial.endswith("bbbbbb1")  # a failing trial is the one shown
    # Without result.json the folder names the task: Harbor's `__<id>` suffix is cut, and
    # only that one (task names may hold `__` themselves).
    (job / "owner__repo__1234__cccccc1").mkdir()
    write_json(job / "owner__repo__1234__cccccc1" / "agent" / "trajectory.json",
               atif_trial("fix it", ["ok"], "done"))  # fmt: skip
    assert "owner__repo__1234" in load_traces([job.parent]).tasks


def test_harbor_exception_info_is_the_error_and_a_failure(tmp_path: Path) -> None:
    job = harbor_job(tmp_path)
    harbor_trial(job, "slow-task", "ttttttt",
                 exception=("AgentTimeoutError", "Agent execution timed out after 900 seconds"),
                 trajectory=atif_trial("do a slow thing", ["working..."], "still working"))
    harbor_trial(job, "graded-anyway", "uuuuuuu", reward=1.0,
                 exception=("AgentTimeoutError", "Agent execution timed out after 900 seconds"))
    ts = load_traces([job.parent])
    slow = ts.tasks["slow-task"]
    assert slow.ok is False
    assert slow.error == "AgentTimeoutError: Agent execution timed out after 900 seconds"
    assert slow.failure_kind() == "error: AgentTimeoutError"
    assert ts.tasks["graded-anyway"].ok is True  # the verifier's reward still decides
    assert slow.source == "traces/2026-01-05__10-00-00/slow-task__ttttttt/agent/trajectory.json"


def test_the_digest_shows_failing_tool_calls_not_token_ids(tmp_path: Path) -> None:
    """A trajectory with a long system prompt and token ids and logprobs on every step:
    the digest holds its six tool observations, the failing ones marked, the task, the
    final answer and the error, and none of the system prompt or token-level data."""
    job = harbor_job(tmp_path)
    observations = [
        "README.md  src  tests", "def parse(line):\n    return line.split()",
        "Traceback (most recent call last):\n  File \"parse.py\", line 3\nValueError: bad line",
        "collected 12 items\n12 passed", "bash: jq: command not found", "wrote out.json",
    ]
    trajectory = atif_trial("Parse the log into out.json", observations, "I wrote out.json.")
    harbor_trial(job, "parse-log", "ppppppp", reward=0.0, trajectory=trajectory,
                 exception=("NonZeroAgentExitCodeError", "exit code 1"))  # fmt: skip
    raw = json.dumps(trajectory)
    ts = load_traces([job.parent])
    digest = build_digest(ts, 0, 6000)
    assert len(digest) <= 6000 < len(raw)
    for content in observations:
        assert " ".join(content.split())[:60] in digest, content
    assert digest.count("→ ERROR") == 2  # the traceback and `command not found`
    assert "task: Parse the log into out.json" in digest
    assert "final answer: I wrote out.json." in digest
    assert "NonZeroAgentExitCodeError: exit code 1" in digest
    assert "call bash(" in digest and "system prompt left out" in digest
    for absent in ("prompt_token_ids", "logprobs", "completion_token_ids", "Follow the rules"):
        assert absent not in digest
    # Squeezed, the failing steps and the last ones stay; the rest is counted, not lost.
    small = build_digest(ts, 0, 1000)
    assert len(small) <= 1000
    assert "ValueError: bad line" in small and "jq: command not found" in small
    assert "step(s) left out" in small


def test_jsonl_steps_lose_token_level_fields_in_the_digest() -> None:
    ts = TraceSet()
    ts.add(TaskTrace("t", passed=False, steps=[
        {"tool": "search", "result": "hit", "logprobs": [-0.1] * 500,
         "usage": {"prompt_token_ids": list(range(500)), "tokens": 500}},
    ]))  # fmt: skip
    digest = build_digest(ts, 0, 20000)
    assert '"tool": "search"' in digest and '"tokens": 500' in digest
    assert "logprobs" not in digest and "prompt_token_ids" not in digest


def test_the_digest_shows_flaky_tasks_after_the_failing_ones(tmp_path: Path) -> None:
    job = harbor_job(tmp_path)
    for suffix, reward in (("f1", 0.0), ("f2", 0.0)):
        harbor_trial(job, "always-fails", suffix, reward=reward,
                     trajectory=atif_trial("a", ["Error: nope"], "gave up"))
    for suffix, reward in (("k1", 1.0), ("k2", 0.0), ("k3", 1.0)):
        harbor_trial(job, "sometimes", suffix, reward=reward,
                     trajectory=atif_trial("b", [f"run {suffix}"], "done"))
    digest = build_digest(load_traces([job.parent]), 3, 20000)
    summary = digest.splitlines()[0]
    assert "1/2 tasks passed (2/5 trials), 1 failing, 1 flaky" in summary
    assert shown_tasks(digest) == ["always-fails", "sometimes"]
    assert "trials: 2/3 passed; shown: trial sometimes__k2 (FAIL (0))" in digest
