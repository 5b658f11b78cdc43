"""The harness example: the evaluation runs fast, writes one trace per ticket and prints its
metric; tuning helps; scripted harness fixes are kept in an end-to-end study whose proposer
prompts hold failing search tickets and never a holdout ticket; the model code path works
against a local fake server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import git, run_cli, write_script

from overnight.proposers.tune.knobs import find_knobs
from overnight.traces import diff_tasks, experiment_traces, load_traces

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "harness"
STUDY_FILES = ("harness.py", "evaluate.py", "model.py", "program.md", "overnight.toml",
               "README.md", "data")  # fmt: skip
KNOBS = ["BILLING_WEIGHT", "BUG_WEIGHT", "ACCOUNT_WEIGHT", "FEATURE_WEIGHT", "ABUSE_WEIGHT",
         "REFUND_LIMIT_USD", "URGENT_MIN_HITS", "SECURITY_MIN_HITS", "SPAM_MIN_LINKS",
         "CLOSE_MAX_WORDS"]  # fmt: skip
METRIC_LINE = re.compile(r"^(\w+): (-?[0-9.]+)$")
TASK_ID = re.compile(r"T-\d{4}")


def tickets(split: str) -> list[dict[str, Any]]:
    path = EXAMPLE / "data" / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


SEARCH = tickets("search")
HOLDOUT = tickets("holdout")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OVERNIGHT_", "HARNESS_"))}  # fmt: skip
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def evaluate(folder: Path, *args: str, **env: str) -> tuple[dict[str, float], str]:
    proc = subprocess.run(
        [sys.executable, "evaluate.py", *args], cwd=folder, env=clean_env(**env), text=True,
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    metrics = {m[1]: float(m[2]) for m in map(METRIC_LINE.match, proc.stdout.splitlines()) if m}
    return metrics, proc.stdout


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    folder = tmp_path / "harness"
    folder.mkdir()
    for name in STUDY_FILES:
        src = EXAMPLE / name
        if src.is_dir():
            shutil.copytree(src, folder / name)
        else:
            shutil.copy2(src, folder / name)
    return folder


def commit(folder: Path) -> Path:
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.name", "Test User")
    git(folder, "config", "user.email", "test@example.invalid")
    git(folder, "add", "-A")
    git(folder, "commit", "-qm", "harness study")
    return folder


@pytest.fixture
def study(copy: Path) -> Path:
    return commit(copy)


# --- the evaluation ------------------------------------------------------------------------


def test_search_and_holdout_are_disjoint_and_labelled() -> None:
    search_ids = {t["id"] for t in SEARCH}
    holdout_ids = {t["id"] for t in HOLDOUT}
    assert len(search_ids) == len(SEARCH) >= 50 and len(holdout_ids) == len(HOLDOUT) >= 20
    assert not search_ids & holdout_ids
    assert not {t["subject"] for t in SEARCH} & {t["subject"] for t in HOLDOUT}
    labels = {"billing", "bug", "account", "feature", "abuse"}
    actions = {"refund", "escalate", "reply", "close"}
    for t in SEARCH + HOLDOUT:
        assert t["expected"]["label"] in labels and t["expected"]["action"] in actions
    # Every label and every action is in both sets, so the holdout measures the same policy.
    for split in (SEARCH, HOLDOUT):
        assert {t["expected"]["label"] for t in split} == labels
        assert {t["expected"]["action"] for t in split} == actions


def test_baseline_prints_its_metric_quickly_and_traces_every_ticket(
    copy: Path, tmp_path: Path
) -> None:
    trace_dir = tmp_path / "traces"
    start = time.perf_counter()
    metrics, stdout = evaluate(copy, OVERNIGHT_TRACE_DIR=str(trace_dir))
    assert time.perf_counter() - start < 10  # ~0.1 s; generous for a loaded CI machine
    assert stdout.rstrip().splitlines()[-1].startswith("pass_rate: ")
    assert 0.4 < metrics["pass_rate"] < 0.65, metrics  # poor on purpose: room to improve
    assert metrics["tasks"] == len(SEARCH) and metrics["errors"] == 0

    records = [json.loads(x) for x in (trace_dir / "search.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records] == [t["id"] for t in SEARCH]
    for r in records:
        assert set(r) >= {"task", "passed", "input", "output", "expected", "error", "steps"}
        assert "expected" not in r["input"]
        assert any(s.get("rule") for s in r["steps"])  # the decision is explained
    traces = load_traces([trace_dir])
    assert not traces.problems
    assert traces.passed() / len(traces.tasks) == pytest.approx(metrics["pass_rate"], abs=1e-4)


def test_holdout_prints_numbers_only(copy: Path, tmp_path: Path) -> None:
    metrics, stdout = evaluate(copy, "--holdout", OVERNIGHT_TRACE_DIR=str(tmp_path / "t"))
    assert all(METRIC_LINE.match(line) for line in stdout.splitlines()), stdout
    assert "pass_rate" not in metrics and 0.3 < metrics["holdout_pass_rate"] < 0.7
    assert not TASK_ID.search(stdout)
    written = load_traces([tmp_path / "t"])  # holdout.jsonl: skipped by name
    assert not written.tasks
    assert (tmp_path / "t" / "holdout.jsonl").read_text().count("\n") == len(HOLDOUT)


def test_a_crashing_harness_fails_tickets_not_the_run(copy: Path, tmp_path: Path) -> None:
    path = copy / "harness.py"
    path.write_text(path.read_text().replace(
        '    text = f"{ticket', '    if "invoice" in ticket["body"]:\n'
        '        raise RuntimeError("boom")\n    text = f"{ticket', 1,
    ))  # fmt: skip
    metrics, _ = evaluate(copy, OVERNIGHT_TRACE_DIR=str(tmp_path / "t"))
    assert metrics["errors"] > 0
    failed = load_traces([tmp_path / "t"])
    errors = [t for t in failed.tasks.values() if t.error]
    assert errors and all("RuntimeError: boom" in t.error for t in errors)
    assert all("harness.py line" in t.error for t in errors)


def test_the_knobs_are_there_and_better_thresholds_help(copy: Path) -> None:
    knobs = [k.name for k in find_knobs("harness.py", (copy / "harness.py").read_text())]
    assert knobs == KNOBS
    before, _ = evaluate(copy)
    path = copy / "harness.py"
    src = path.read_text()
    for name, value in {"URGENT_MIN_HITS": "1", "CLOSE_MAX_WORDS": "20",
                        "SECURITY_MIN_HITS": "1"}.items():  # fmt: skip
        src, n = re.subn(rf"^{name} = \S+", f"{name} = {value}", src, flags=re.M)
        assert n == 1
    path.write_text(src)
    after, _ = evaluate(copy)
    assert after["pass_rate"] > before["pass_rate"] + 0.1, (before, after)


def test_overnight_toml_pairs_the_agents_and_passes_the_task_key() -> None:
    import tomllib

    from overnight.config import load_config

    cfg = tomllib.loads((EXAMPLE / "overnight.toml").read_text())
    assert cfg["study"]["surface"] == ["harness.py"]
    # The trusted evaluator gives the metric; the agent it runs cannot print one.
    assert cfg["metric"] == {"name": "pass_rate", "goal": "maximize",
                             "command": "python evaluate.py"}  # fmt: skip
    assert cfg["holdout"]["command"] == "python evaluate.py --holdout"
    assert cfg["holdout"]["name"] == "holdout_pass_rate"
    assert cfg["run"]["pass_env"] == ["HARNESS_API_KEY"]
    assert cfg["proposer"]["kind"] == "auto" and cfg["proposer"]["model"]
    assert cfg["traces"]["prompt_chars"] > 0
    load_config(EXAMPLE / "overnight.toml")  # valid for overnight itself


# --- end to end ----------------------------------------------------------------------------

FIX_URGENT = {"description": "Escalate a bug on its first urgent word",
              "edits": [{"path": "harness.py", "old": "URGENT_MIN_HITS = 3",
                         "new": "URGENT_MIN_HITS = 1"}]}  # fmt: skip
BREAK_LABELS = {"description": "Trust bug keywords three times more",
                "edits": [{"path": "harness.py", "old": "BUG_WEIGHT = 1.0",
                           "new": "BUG_WEIGHT = 3.0"}]}  # fmt: skip
FEATURE_WORDS = ', "could you", "can you add", "we need", "would help", "appreciate"'
FIX_FEATURES = {"description": "Recognise feature requests phrased as questions",
                "edits": [{"path": "harness.py", "old": '"any plans", "support"]',
                           "new": '"any plans", "support"' + FEATURE_WORDS + "]"}]}  # fmt: skip
FIX_CHARGEBACK = {"description": "Escalate chargeback threats",
                  "edits": [{"path": "harness.py", "old": '["lawyer", "legal"]',
                             "new": '["lawyer", "legal", "chargeback"]'}]}  # fmt: skip


def prompts(repo: Path) -> dict[int, str]:
    exp = repo / ".overnight" / "harness" / "experiments"
    return {int(p.parent.name): p.read_text() for p in exp.glob("*/prompt.txt")}


def assert_no_holdout(text: str) -> None:
    holdout_ids = {t["id"] for t in HOLDOUT}
    assert not set(TASK_ID.findall(text)) & holdout_ids
    for t in HOLDOUT:
        assert t["subject"] not in text and t["body"] not in text


def test_scripted_fixes_are_kept_and_prompts_hold_search_failures_only(
    study: Path, tmp_path: Path
) -> None:
    env = write_script(tmp_path / "script.json",
                       [FIX_URGENT, BREAK_LABELS, FIX_FEATURES, FIX_CHARGEBACK])  # fmt: skip
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proposer = "support.digest_proposer:DigestProposer"
    out = run_cli(study, "run", "-n", "3", "--proposer", proposer, "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = json.loads(run_cli(study, "log", "--json").stdout)
    assert [r["status"] for r in log] == ["keep", "keep", "discard", "keep"]
    values = [r["value"] for r in log]
    assert values[0] < values[1] < values[3] and values[2] < values[1]

    exp = study / ".overnight" / "harness" / "experiments"
    traces = {n: experiment_traces(exp / str(n)) for n in range(4)}
    assert all(len(t.tasks) == len(SEARCH) and not t.problems for t in traces.values())
    digests = prompts(study)
    assert set(digests) == {1, 2, 3}
    search_ids = {t["id"] for t in SEARCH}
    for n, digest in digests.items():
        assert len(digest) <= 12000  # [traces] prompt_chars of the example
        best = n - 1 if n < 3 else 1  # the best when proposal n was made
        failing = {t.task for t in traces[best].failing()}
        shown = set(TASK_ID.findall(digest))
        assert shown and shown <= search_ids
        assert shown & failing
        assert f"Traces of the best (experiment {best})" in digest
        assert_no_holdout(digest)
    # The proposal after the discard sees what the discard broke, marked as such.
    broken = diff_tasks(traces[1], traces[2]).regressed
    assert broken
    assert "broken by experiment 2" in digests[3]
    assert all(t in digests[3] for t in broken)

    # Per-task view: against the best (experiment 3) experiment 1 lacked the feature fixes.
    shown_tasks = run_cli(study, "show", "1", "--tasks", "--json")
    assert shown_tasks.returncode == 0, shown_tasks.stderr
    info = json.loads(shown_tasks.stdout)
    assert info["best"] == 3 and info["fixed"] == [] and info["regressed"]
    assert set(info["regressed"]) == set(diff_tasks(traces[1], traces[3]).fixed)
    assert len(info["tasks"]) == len(SEARCH)
    text = run_cli(study, "show", "1", "--tasks").stdout
    assert "REGRESSED" in text and f"experiment 1: {traces[1].passed()}/{len(SEARCH)}" in text

    # A holdout run of the best (its traces kept in a folder of their own), and a careless
    # evaluation that wrote holdout records next to the search ones: the next prompt still
    # shows no holdout ticket.
    holdout_dir = exp / "3" / "traces-holdout"
    evaluate(study, "--holdout", OVERNIGHT_TRACE_DIR=str(holdout_dir))
    assert set(TASK_ID.findall((holdout_dir / "holdout.jsonl").read_text())) == {
        t["id"] for t in HOLDOUT
    }
    shutil.copy2(holdout_dir / "holdout.jsonl", exp / "3" / "traces" / "holdout.jsonl")
    out = run_cli(study, "run", "-n", "1", "--proposer", proposer, "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    digests = prompts(study)
    assert 4 in digests and "Traces of the best (experiment 3)" in digests[4]
    for digest in digests.values():
        assert_no_holdout(digest)
    for stored in exp.rglob("*"):  # nothing else stored for a proposer holds them either
        if stored.name in ("prompt.txt", "response.txt", "proposal.json"):
            assert_no_holdout(stored.read_text())


def test_tune_improves_the_pass_rate(study: Path) -> None:
    # 8 experiments to keep the test short; README.md reports 15 over several seeds.
    out = run_cli(study, "run", "-n", "8", "--proposer", "tune", "--seed", "1", "--plain",
                  env={"PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr + out.stdout
    status = json.loads(run_cli(study, "status", "--json").stdout)
    assert status["best"]["value"] > status["baseline"]["value"], status


# --- the model code path, against a local fake server ----------------------------------------


class FakeModel(BaseHTTPRequestHandler):
    """Answers like a model that follows its instructions to the letter: it knows each
    ticket's right answer but refunds only when the system prompt states the $100 limit."""

    answers = {t["subject"]: t["expected"] for t in SEARCH + HOLDOUT}
    calls: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeModel.calls.append({"path": self.path, "auth": self.headers.get("Authorization")
                                or self.headers.get("x-api-key")})  # fmt: skip
        if self.path.endswith("/chat/completions"):
            system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        else:
            system, user = body["system"], body["messages"][0]["content"]
        subject = re.search(r"^Subject: (.*)$", user, re.M)
        answer = dict(self.answers.get(subject[1] if subject else "", {}))
        if answer.get("action") == "refund" and "$100" not in system:
            answer["action"] = "escalate"
        text = json.dumps(answer)
        if self.path.endswith("/chat/completions"):
            reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": 50, "completion_tokens": 9,
                               "total_tokens": 59}}  # fmt: skip
        else:
            reply = {"id": "x", "type": "message", "role": "assistant", "model": body["model"],
                     "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                     "usage": {"input_tokens": 50, "output_tokens": 9}}  # fmt: skip
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_model() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeModel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeModel.calls.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def model_env(url: str, provider: str) -> dict[str, str]:
    return {"HARNESS_API_KEY": "task-agent-key", "HARNESS_PROVIDER": provider,
            "HARNESS_MODEL": "fake-model", "HARNESS_BASE_URL": url + ("/v1" if provider ==
            "openai" else ""), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}  # fmt: skip


def load_module(name: str) -> Any:
    """A module of the example, imported from its file under a name of its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"harness_example_{name}", EXAMPLE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_task_agent_is_paired_with_the_proposer_by_default(monkeypatch) -> None:
    model = load_module("model")
    for var in ("HARNESS_API_KEY", "HARNESS_PROVIDER", "HARNESS_MODEL", "HARNESS_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert model.settings(EXAMPLE) is None  # offline: the rules
    monkeypatch.setenv("HARNESS_API_KEY", "k")
    paired = model.settings(EXAMPLE)
    assert (paired["provider"], paired["model"]) == ("anthropic", "claude-sonnet-4-5")
    monkeypatch.setenv("HARNESS_MODEL", "claude-haiku-4-5")
    assert model.settings(EXAMPLE)["model"] == "claude-haiku-4-5"
    # Another provider than the proposer's: its default model, not the proposer's model name.
    monkeypatch.delenv("HARNESS_MODEL")
    monkeypatch.setenv("HARNESS_PROVIDER", "openai")
    assert model.settings(EXAMPLE)["model"] == model.DEFAULT_MODEL["openai"]


def test_the_run_gets_the_task_agents_key_and_never_the_proposers() -> None:
    from overnight.config import load_config
    from overnight.isolation.redact import proposer_key_env
    from overnight.isolation.runner import scrub_env

    cfg = load_config(EXAMPLE / "overnight.toml")
    user = {"HARNESS_API_KEY": "task", "ANTHROPIC_API_KEY": "meta", "OTHER_TOKEN": "t"}
    env = scrub_env(user, cfg.run.pass_env, drop=[proposer_key_env(cfg.proposer)])
    assert env == {"HARNESS_API_KEY": "task"}


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_model_mode_calls_the_model_and_follows_its_instructions(
    fake_model: str, monkeypatch, provider: str
) -> None:
    # In-process: each SDK import costs seconds in a fresh interpreter.
    pytest.importorskip(provider)
    for name, value in model_env(fake_model, provider).items():
        monkeypatch.setenv(name, value)
    model, harness = load_module("model"), load_module("harness")
    usage = model.Usage()
    complete, which = model.load_model(usage, EXAMPLE)
    assert which == f"model {provider}:fake-model"

    def run() -> list[bool]:
        results = [harness.triage({"subject": t["subject"], "body": t["body"]}, complete)
                   for t in SEARCH]  # fmt: skip
        assert all(any(s.get("tool") == "model" for s in r["steps"]) for r in results)
        return [{k: r[k] for k in ("label", "action")} == t["expected"]
                for r, t in zip(results, SEARCH, strict=True)]  # fmt: skip

    refunds = sum(t["expected"]["action"] == "refund" for t in SEARCH)
    assert sum(run()) == len(SEARCH) - refunds  # the instructions do not state the limit
    assert usage.calls == len(SEARCH) == len(FakeModel.calls)
    assert usage.input_tokens == 50 * len(SEARCH)
    assert all("task-agent-key" in (c["auth"] or "") for c in FakeModel.calls)
    # The meta-agent's kind of fix: state the policy in the instructions the model reads.
    harness.INSTRUCTIONS = harness.INSTRUCTIONS.replace(
        "Refund small billing mistakes.", "Refund billing mistakes of at most $100."
    )
    assert all(run())


def test_the_llm_proposer_rewrites_the_harness_from_the_traces(copy: Path, tmp_path: Path) -> None:
    pytest.importorskip("anthropic")
    from support.fake_llm import FakeLLM

    def reply(search: str, replace: str, desc: str) -> str:
        return (f"LESSON: none yet\nHYPOTHESIS: {desc} raises pass_rate\nDESCRIPTION: {desc}\n"
                f"RATIONALE: the traces show it.\n\nharness.py\n<<<<<<< SEARCH\n{search}\n"
                f"=======\n{replace}\n>>>>>>> REPLACE\n")  # fmt: skip

    urgent = "URGENT_MIN_HITS = 3  # urgent words needed before a bug is escalated"
    features = '                "any plans", "support"],'
    replies = [
        reply(urgent, urgent.replace("3", "1", 1), "Escalate a bug on its first urgent word"),
        reply(features, features.replace("]", FEATURE_WORDS + "]"),
              "Recognise feature requests phrased as questions"),
    ]  # fmt: skip
    with FakeLLM(replies) as server:
        toml = copy / "overnight.toml"
        toml.write_text(toml.read_text() + f'base_url = "{server.url}"\n'
                        'api_key_env = "OVN_META_KEY"\nmax_retries = 0\n')  # fmt: skip
        commit(copy)
        env = {"OVN_META_KEY": "meta-key-123456", "PYTHONDONTWRITEBYTECODE": "1"}
        out = run_cli(copy, "run", "-n", "2", "--plain", env=env)
        assert out.returncode == 0, out.stderr + out.stdout
    assert "proposer: llm" in out.stdout
    log = json.loads(run_cli(copy, "log", "--json").stdout)
    assert [r["status"] for r in log] == ["keep", "keep", "keep"]
    assert log[0]["value"] < log[1]["value"] < log[2]["value"]
    sent = [r.prompt for r in server.requests]
    stored = prompts(copy)
    assert len(sent) == 2 and set(stored) == {1, 2}
    search_ids = {t["id"] for t in SEARCH}
    for n, prompt in enumerate(sent, 1):
        assert f"Traces of the best (experiment {n - 1})" in prompt
        assert "Read the traces" in prompt  # program.md
        assert set(TASK_ID.findall(prompt)) & search_ids
        assert_no_holdout(prompt)
        assert_no_holdout(stored[n])
