"""Evaluate the task agent (harness.py) on the tickets. LOCKED: do not change this file.

    python evaluate.py             the search set: prints `pass_rate: <x>` (the metric)
    python evaluate.py --holdout   the holdout set: prints `holdout_pass_rate: <x>` only

A ticket passes when both the label and the action match the expected ones. One JSON trace
record per ticket goes to $OVERNIGHT_TRACE_DIR (or --trace-dir): `search.jsonl` or
`holdout.jsonl`, with the ticket (input), the agent's answer (output), the expected answer,
any error, and the agent's steps. overnight shows the proposer the search traces only;
holdout traces are kept with the experiment but never reach a prompt, and the holdout run
prints nothing but aggregate numbers.

This process is the trusted evaluator (overnight's `[metric].command` and
`[holdout].command`); the agent it evaluates is code a proposal wrote. So the agent runs in
a child process (`evaluate.py --agent`) that gets the tickets without their answers and
replies with its own; this process checks them, writes the traces, and prints the numbers
last, on stdout, once it has killed everything the agent started (it adopts the agent's
orphans: Linux's child subreaper). Whatever the agent prints, wherever, and however long its
daemons wait, it cannot put a number after the evaluator's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = {"search": HERE / "data" / "search.jsonl", "holdout": HERE / "data" / "holdout.jsonl"}


def load_tickets(split: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA[split].read_text().splitlines() if line.strip()]


# -- the child: the task agent, which never sees an expected answer -------------------------


def run_one(triage: Any, ticket: dict[str, Any], model: Any) -> dict[str, Any]:
    """The agent's answer to one ticket. A crash of the agent fails this ticket, not the run."""
    record: dict[str, Any] = {"task": ticket["id"], "output": None, "error": None, "steps": []}
    start = time.perf_counter()
    try:
        result = triage({"subject": ticket["subject"], "body": ticket["body"]}, model)
        if not isinstance(result, dict):
            raise TypeError(f"triage() returned {type(result).__name__}, expected a dict")
        record["output"] = {"label": result.get("label"), "action": result.get("action")}
        steps = result.get("steps", [])
        record["steps"] = steps if isinstance(steps, list) else [steps]
    except Exception as exc:  # the agent's bug: recorded in the trace for the proposer
        # The deepest line of the harness, even when the error was raised in a library.
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
                 if Path(f.filename).name == "harness.py"]  # fmt: skip
        where = f" (harness.py line {lines[-1]})" if lines else ""
        record["error"] = f"{type(exc).__name__}: {exc}{where}"
    record["seconds"] = round(time.perf_counter() - start, 4)
    return record


def serve_agent(workers: int) -> None:
    """`--agent`: tickets (id, subject, body) as one JSON line on stdin; one JSON line back
    on stdout with the agent's answers, which model it used and what that cost."""
    answer = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr  # the agent's own prints must not corrupt the answer
    sys.path.insert(0, str(HERE))
    import harness  # the surface, imported in this child only
    from model import Usage, load_model

    usage = Usage()
    model, which = load_model(usage, HERE)
    tickets = json.loads(sys.stdin.readline())
    if model is None:  # the rules are instant; threads would only reorder nothing
        records = [run_one(harness.triage, t, None) for t in tickets]
    else:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            records = list(pool.map(lambda t: run_one(harness.triage, t, model), tickets))
    usage_out = {"calls": usage.calls, "input_tokens": usage.input_tokens,
                 "output_tokens": usage.output_tokens}  # fmt: skip
    answer.write(json.dumps({"which": which, "usage": usage_out, "records": records},
                            default=str, ensure_ascii=False) + "\n")  # fmt: skip
    answer.flush()


# -- the evaluator ---------------------------------------------------------------------------


def adopt_orphans() -> None:
    """Become a child subreaper: what the agent forks stays our descendant (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def kill_descendants() -> None:
    """Kill whatever the agent left running; its orphans were adopted by this process."""
    for _ in range(1000):
        kids = []
        for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []:
            try:
                with open(f"/proc/self/task/{tid}/children") as fh:
                    kids += [int(k) for k in fh.read().split()]
            except OSError:
                pass
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass


def ask_agent(tickets: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    given = [{"id": t["id"], "subject": t["subject"], "body": t["body"]} for t in tickets]
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--agent",
                              "--workers", str(workers)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, encoding="utf-8")  # fmt: skip
    out, _ = child.communicate(json.dumps(given) + "\n")
    kill_descendants()
    try:
        reply = json.loads(out.splitlines()[0])
        assert isinstance(reply, dict) and isinstance(reply.get("records"), list)
    except (ValueError, IndexError, AssertionError):
        sys.exit(f"the agent process failed (exit {child.returncode}; see its error above)")
    return reply


def check(ticket: dict[str, Any], record: Any) -> dict[str, Any]:
    """The trace record of one ticket: the agent's answer judged against the expected one."""
    record = record if isinstance(record, dict) else {"error": "no answer for this ticket"}
    output = record.get("output")
    if not (isinstance(output, dict) and set(output) == {"label", "action"}):
        output = None
    steps = record.get("steps")
    return {
        "task": ticket["id"], "passed": output == ticket["expected"],
        "input": {"subject": ticket["subject"], "body": ticket["body"]}, "output": output,
        "expected": ticket["expected"], "error": record.get("error"),
        "steps": steps if isinstance(steps, list) else [], "seconds": record.get("seconds"),
    }  # fmt: skip


def write_traces(records: list[dict[str, Any]], trace_dir: str, split: str) -> None:
    if not trace_dir:
        return
    out = Path(trace_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{split}.jsonl").open("w") as fh:
        for r in records:
            fh.write(json.dumps(r, default=str, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holdout", action="store_true", help="evaluate on the holdout set")
    parser.add_argument("--trace-dir", default=os.environ.get("OVERNIGHT_TRACE_DIR", ""))
    parser.add_argument("--workers", type=int, default=8, help="parallel model calls")
    parser.add_argument("--agent", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent:
        serve_agent(args.workers)
        return
    adopt_orphans()
    split = "holdout" if args.holdout else "search"
    tickets = load_tickets(split)
    reply = ask_agent(tickets, args.workers)
    answers = {str(r.get("task")): r for r in reply["records"] if isinstance(r, dict)}
    records = [check(t, answers.get(t["id"])) for t in tickets]
    write_traces(records, args.trace_dir, split)

    usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
    n = len(records)
    passed = sum(r["passed"] for r in records)
    label_ok = sum(bool(r["output"]) and r["output"]["label"] == r["expected"]["label"]
                   for r in records)  # fmt: skip
    errors = sum(r["error"] is not None for r in records)
    prefix = "holdout_" if args.holdout else ""
    print(f"agent: {reply.get('which')}", file=sys.stderr)
    if not args.holdout:
        for r in records:
            if not r["passed"]:
                got = r["error"] or json.dumps(r["output"])
                print(f"FAIL {r['task']}: expected {json.dumps(r['expected'])}, got {got}")
    print(f"{prefix}tasks: {n}")
    print(f"{prefix}label_accuracy: {label_ok / n:.4f}")
    print(f"{prefix}errors: {errors}")
    if usage.get("calls"):
        for key in ("calls", "input_tokens", "output_tokens"):
            name = "model_calls" if key == "calls" else key
            print(f"{prefix}{name}: {int(usage.get(key) or 0)}")
    print(f"{prefix}pass_rate: {passed / n:.4f}")


if __name__ == "__main__":
    main()
