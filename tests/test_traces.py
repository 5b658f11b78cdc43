"""Traces: JSONL and ATIF ingestion, per-task diffs, the size-bounded digest for the
proposer, holdout exclusion, and `overnight show N --tasks`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from conftest import make_repo, run_cli, score_config, write_script

from overnight import traces as tr
from overnight.experiment.context import trace_digest
from overnight.store.records import ExperimentRecord
from overnight.traces import (
    TaskTrace,
    TraceSet,
    build_digest,
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
    t1 = ts.tasks["t1"]
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
    assert t.input == "sum column B" and t.output == "=SUM(B:B)"
    assert len(t.steps) == 3 and t.cost_usd == 0.25
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
    return TraceSet({t: TaskTrace(t, passed=ok, error=errors.get(t))
                     for t, ok in outcomes.items()})  # fmt: skip


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
        ts.tasks[t.task] = t
    for i in range(n_pass):
        ts.tasks[f"p{i:03d}"] = TaskTrace(f"p{i:03d}", passed=True, steps=[{"ok": True}])
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
        last.tasks[t] = TaskTrace(t, passed=False, error="AssertionError: regressed")
    digest = build_digest(best, 2, 20000, last, 5)
    assert "experiment 5 broke 2 task(s)" in digest.splitlines()[0]
    assert shown_tasks(digest)[:2] == ["p001", "p003"]
    assert digest.count("(broken by experiment 5)") == 2
    # The last experiment is the best: nothing to mark.
    assert "broken by" not in build_digest(best, 2, 20000, last, 2)


def test_digest_stays_within_budget_and_says_what_it_left_out() -> None:
    best = many(40, steps=30)
    last = many(40, steps=30)
    last.tasks["p000"] = TaskTrace("p000", passed=False, error="ValueError: " + "v" * 5000)
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
    ts = TraceSet({"long": t})
    digest = build_digest(ts, 0, 6000)
    assert len(digest) <= 6000
    assert "chars cut]" in digest
    head, _, tail = digest.partition("chars cut]")
    assert "### task long: FAIL" in head and "THE-INPUT" in head  # the head: what was asked
    assert '"i": 299' in tail  # the tail: where it ended
    assert tr._clip("abcdef" * 10, 20) == ("abcdef" * 10)[:20]  # too small for a marker


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
