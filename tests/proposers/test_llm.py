"""The `llm` proposer end to end: `overnight run` drives the real anthropic and openai SDKs
against a fake provider on 127.0.0.1; plus unit tests of its parts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import git, make_repo, run_cli, score_config
from support.fake_llm import FakeLLM, Reply

from overnight.config import config_from_dict
from overnight.errors import UsageError
from overnight.isolation.redact import Redactor
from overnight.proposers.base import Context
from overnight.proposers.llm.formats import FORMATS
from overnight.proposers.llm.llm import LLMProposer
from overnight.proposers.llm.pricing import cost_usd, price_for
from overnight.proposers.llm.prompts import (
    LEVELS,
    agent_prompt,
    llm_prompt,
    parse_fields,
    volatile_sections,
)
from overnight.proposers.llm.providers import (
    CallFailed,
    Completion,
    Fault,
    call_with_retries,
    parse_retry_after,
    retry_delay,
)
from overnight.proposers.registry import resolve_kind
from overnight.store.records import ExperimentRecord, Proposal
from overnight.store.study import Study

CANARY = "test-canary-not-a-key-4b1d9e6f0c2a7358"
KEY_ENV = "OVN_CANARY_LLM"  # no secret word in the name: only the loop's drop removes it
SCORE = "import os\nX = 10\nprint(f'score: {X}')\n"
DUMP_ENV = (
    "import json, os\n"
    "path = os.path.join(os.environ['ENV_DUMP_DIR'], f\"env-{os.environ['OVERNIGHT_EXPERIMENT']}"
    '-{os.getpid()}.json")\n'
    "json.dump(dict(os.environ), open(path, 'w'))\n"
)


def reply(
    search: str, replace: str, path: str = "score.py", desc: str = "", extra: str = ""
) -> str:
    return (
        f"LESSON: lesson about the last result ({desc})\n"
        f"HYPOTHESIS: {desc or 'a change'} lowers the score\n"
        f"DESCRIPTION: {desc or 'change X'}\n"
        f"RATIONALE: the score is X. {extra}\n\n"
        f"{path}\n```python\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```\n"
    )


def llm_repo(root: Path, proposer: str, dump: Path | None = None) -> Path:
    cfg = score_config(proposer="llm") + proposer
    files = {"score.py": SCORE, "program.md": "Make X small.\n", "helper.txt": "locked\n"}
    if dump is not None:
        cfg = cfg.replace('"python score.py"', '"python dump_env.py && python score.py"')
        files["dump_env.py"] = DUMP_ENV
    return make_repo(root, {**files, "overnight.toml": cfg})


def env_for(dump: Path | None = None, **extra: str) -> dict[str, str]:
    env = {KEY_ENV: CANARY, "OVERNIGHT_LLM_BACKOFF_S": "0.01", **extra}
    if dump is not None:
        env["ENV_DUMP_DIR"] = str(dump)
    return env


def cli_json(repo: Path, *args: str) -> object:
    out = run_cli(repo, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def study(repo: Path) -> Study:
    # Reads go through the library in-process: a CLI call per read would cost a second.
    return Study.open(repo / "overnight.toml")


def log_of(repo: Path) -> list[dict]:
    return [r.public() for r in study(repo).log()]


def files_containing(root: Path, needle: str) -> list[str]:
    return [
        str(p.relative_to(root)) for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and needle.encode() in p.read_bytes()
    ]  # fmt: skip


def test_openai_outcomes_cost_prompt_and_secrets(tmp_path: Path) -> None:
    replies = [
        reply("X = 10", "X = 7", desc="X 10 to 7", extra="key={KEY}"),
        "DESCRIPTION: broken\n\nscore.py\n<<<<<<< SEARCH\nX = 7\n",  # cut-off block
        reply("X = 99", "X = 1", desc="X from a file that is not there"),  # its repair turn
        reply("locked", "unlocked", path="helper.txt", desc="edit the helper"),
        Reply(reply("X = 7", "X = 6", desc="X 7 to 6"), truncated=True),  # its repair turn
        reply("   X = 7   ", "   X = 5", desc="X 7 to 5"),  # whitespace-tolerant match
    ]
    dump = tmp_path / "env"
    dump.mkdir()
    with FakeLLM(replies) as server:
        repo = llm_repo(tmp_path / "repo", (
            f'provider = "openai"\nmodel = "gpt-4o"\nbase_url = "{server.openai_url}"\n'
            f'api_key_env = "{KEY_ENV}"\nmax_retries = 0\n'
            'formats = ["search_replace", "whole_file"]\n'
        ), dump)  # fmt: skip
        out = run_cli(repo, "run", "-n", "4", "--plain", env=env_for(dump))
        assert out.returncode == 0, out.stderr + out.stdout
    assert "proposer: llm" in out.stdout
    log = log_of(repo)
    statuses = [r["status"] for r in log]
    assert statuses == ["keep", "keep", "invalid", "invalid", "keep"]
    reasons = [r["reason"] for r in log]
    # The repair turn's reply is the one judged; the reason says there was one.
    assert reasons[2].startswith("unusable search_replace reply: block 1 for score.py: its "
                                 "SEARCH text matches nothing")  # fmt: skip
    assert "closest line is 2: `X = 7`" in reasons[2] and "(after a repair turn)" in reasons[2]
    assert "cut off at the output limit of" in reasons[3] and "stop reason 'length'" in reasons[3]
    assert [r["value"] for r in log if r["status"] == "keep"] == [10, 7, 5]
    # Knob changes are described exactly, as tune's are (the model's words: its hypothesis).
    assert log[1]["description"] == "X 10 → 7" and log[4]["description"] == "X 7 → 5"
    assert git(repo, "show", "overnight/t:score.py") == SCORE.replace("10", "5").strip()

    # The repair turn shows the model its own reply and the parse error.
    repair = server.requests[2].body["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2]["content"].startswith("DESCRIPTION: broken")
    assert "the reply ends before '=======' (cut off?)" in repair[3]["content"]
    # A failed try (a reply and its repair turn) demotes SEARCH/REPLACE: the next proposal is
    # asked for the whole file, and a SEARCH/REPLACE block there is not taken for the file
    # (its own error, an edit outside the surface, stands). With every format demoted the
    # last one is used, and a SEARCH/REPLACE reply is still accepted then.
    shown = [study(repo).show(n)["meta"] for n in range(1, 5)]
    assert [m["format"] for m in shown] == ["search_replace"] * 2 + ["whole_file"] * 2
    assert [m["format_ok"] for m in shown] == [True, False, False, True]
    assert "complete new content of the file" in server.requests[5].body["messages"][0]["content"]

    # Each prompt carries the context, including why the previous replies were unusable;
    # the stable part (instructions, surface) comes before the history.
    assert len(server.requests) == 6
    assert all(r.path == "/v1/chat/completions" and r.key == CANARY for r in server.requests)
    last = server.requests[5].prompt
    for expected in (
        "Make X small.", "Metric: score, goal: minimize", "killed after 10 seconds",
        "\nX = 7\n", "#1 keep", "hypothesis: X 10 to 7 lowers the score", "#2 invalid",
        "closest line is 2", "cut off at the output limit", "(after #2) lesson about the last",
        "DESCRIPTION:",
    ):  # fmt: skip
        assert expected in last, expected
    assert "   2| " not in last  # no line-number gutter
    assert last.index("Make X small.") < last.index("## score.py") < last.index("# History")
    body = server.requests[0].body
    assert body["model"] == "gpt-4o" and body["temperature"] == 0.7
    # The output limit is what the context leaves (a local server that does not say: 4096).
    budget = shown[0]["budget"]
    assert budget["context"] == 4096 and body["max_tokens"] == budget["max_tokens"]
    assert budget["prompt_tokens"] + body["max_tokens"] <= 4096

    # Cost: 6 calls of 1000 input and 200 output tokens (the cut-off one: all its max_tokens)
    # at gpt-4o's $2.5 / $10 per 1M; the repair turns are counted with their experiment.
    status = cli_json(repo, "status")
    assert isinstance(status, dict)
    cut = server.requests[4].body["max_tokens"]
    assert status["cost_usd"] == pytest.approx((6 * 1000 * 2.5 + (5 * 200 + cut) * 10) / 1e6)
    one, two = study(repo).show(1), study(repo).show(2)
    assert one["cost_usd"] == pytest.approx(0.0045) and one["meta"]["model"] == "gpt-4o"
    assert two["cost_usd"] == pytest.approx(0.009) and json.loads(two["usage"])["calls"] == 2
    assert one["rationale"] == "the score is X. key=[REDACTED:OVN_CANARY_LLM]"

    # The full prompt and response are stored and shown on request.
    shown_cli = run_cli(repo, "show", "2", "--prompt")
    assert "--- prompt.txt ---" in shown_cli.stdout and "[system]" in shown_cli.stdout
    assert "X = 99" in shown_cli.stdout and "--- repair turn ---" in shown_cli.stdout
    assert "format: search_replace" in shown_cli.stdout

    # The key is nowhere under .overnight/ (ledger bytes included) nor in any run's env.
    assert files_containing(repo / ".overnight", CANARY) == []
    envs = [json.loads(p.read_text()) for p in dump.glob("env-*.json")]
    assert len(envs) == 3 and all(KEY_ENV not in e for e in envs)


def test_anthropic_faults_are_retried_and_then_reported(tmp_path: Path) -> None:
    replies = [
        Reply(status=429, retry_after="1"),
        Reply(status=500),
        Reply(reply("X = 10", "X = 8", desc="X to 8"), delay=2.5),  # past the 1s timeout
        Reply(reply("X = 10", "X = 8", desc="X to 8")),
        Reply(reply("X = 8", "X = 6", desc="X to 6"), truncated=True),
        Reply(reset=True),  # repeated: every retry fails
    ]
    with FakeLLM(replies) as server:
        repo = llm_repo(tmp_path / "repo", (
            f'provider = "anthropic"\nmodel = "claude-sonnet-4-5"\nbase_url = "{server.url}"\n'
            f'api_key_env = "{KEY_ENV}"\ntimeout = "1s"\nmax_retries = 3\n'
        ))  # fmt: skip
        out = run_cli(repo, "run", "-n", "3", "--plain", env=env_for())
        assert out.returncode == 0, out.stderr + out.stdout
    seen = server.requests
    assert len(seen) == 4 + 1 + 4 and all(r.path == "/v1/messages" for r in seen)
    assert seen[0].key == CANARY
    assert "temperature" not in seen[0].body  # the model's default unless configured
    # Retry-After: 1 was honoured (and not much more); the 500 was retried after ~10 ms.
    assert 1.0 <= seen[1].at - seen[0].at < 1.6
    assert seen[2].at - seen[1].at < 0.5

    log = log_of(repo)
    assert [r["status"] for r in log] == ["keep", "keep", "invalid", "invalid"]
    assert "stop reason 'max_tokens'" in log[2]["reason"]
    assert log[3]["reason"].startswith("model call failed after 4 attempt(s): connection failed")
    one = study(repo).show(1)
    assert one["meta"]["attempts"] == 4
    errors = [r["error"] for r in one["meta"]["retries"]]
    assert errors[0].startswith("HTTP 429") and errors[1].startswith("HTTP 500")
    assert errors[2] == "no answer within the timeout of 1s"
    # Two calls returned usage (the keep, and the cut-off reply with all its max_tokens) at
    # $3 / $15 per 1M.
    status = study(repo).status()
    cut = seen[4].body["max_tokens"]
    assert status["cost_usd"] == pytest.approx((2 * 1000 * 3 + (200 + cut) * 15) / 1e6)


def test_max_cost_stops_before_a_call_could_exceed_it(tmp_path: Path) -> None:
    # Each call: 1000 in + 500 out at $10 / $100 per 1M = $0.06, and each proposal takes two
    # (prose, then its repair turn): $0.12. The estimate of the next proposal is two calls of
    # 1100 in + 1000 (max_tokens) out = $0.222, so with $0.50 the fourth proposal
    # (0.36 + 0.222 > 0.5) is never asked for; the old rule would have spent $0.60.
    with FakeLLM([Reply("no edit here", input_tokens=1000, output_tokens=500)]) as server:
        repo = llm_repo(tmp_path / "repo", (
            f'provider = "openai"\nmodel = "house-model"\nbase_url = "{server.openai_url}"\n'
            f'api_key_env = "{KEY_ENV}"\nmax_tokens = 1000\n'
            'prices = { "house-model" = [10.0, 100.0] }\n'
        ))  # fmt: skip
        out = run_cli(repo, "run", "-n", "10", "--max-cost", "0.5", "--plain", env=env_for())
        assert out.returncode == 0, out.stderr + out.stdout
    assert len(server.requests) == 6
    assert "cost limit reached" in out.stdout
    status = study(repo).status()
    assert status["cost_usd"] == pytest.approx(0.36) and status["experiments"] == 4
    reason = study(repo).log()[1].reason
    assert reason == ("unusable search_replace reply: the reply contains no SEARCH/REPLACE "
                      "block (found prose only, 1 line) (after a repair turn)")  # fmt: skip


def test_missing_key_is_a_usage_error_and_auto_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = llm_repo(tmp_path / "repo", 'provider = "openai"\napi_key_env = "OVN_NOT_SET"\n')
    out = run_cli(repo, "run", "-n", "1")
    assert out.returncode == 2
    assert "OVN_NOT_SET" in out.stderr and "not set" in out.stderr
    assert not (repo / ".overnight" / "t" / "ledger.sqlite").exists()

    cfg = (repo / "overnight.toml").read_text().replace('kind = "llm"', 'kind = "auto"')
    (repo / "overnight.toml").write_text(cfg)
    git(repo, "commit", "-qam", "auto")
    out = run_cli(repo, "run", "-n", "0", "--plain", env={"OVN_NOT_SET": CANARY})
    assert out.returncode == 0, out.stderr
    assert "proposer: llm (auto: $OVN_NOT_SET is set; openai gpt-4.1)" in out.stdout
    monkeypatch.delenv("OVN_NOT_SET", raising=False)
    kind, why = resolve_kind("auto", study(repo).cfg)
    assert (kind, why) == ("tune", "proposer: tune (auto: $OVN_NOT_SET is not set, so no LLM)")


# --- unit tests ----------------------------------------------------------------------------


def test_retry_after_parsing_and_delays() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after({"retry-after": date}, now=1445412480 - 5) == pytest.approx(5)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    rng = random.Random(1)
    for _ in range(50):
        assert 2.0 <= retry_delay(0, 2.0, 1.0, rng) <= 2.2  # never less than asked
        assert 2.0 <= retry_delay(2, None, 1.0, rng) <= 4.0  # base * 2**2, jittered
        assert retry_delay(20, None, 1.0, rng) <= 60.0
        assert retry_delay(0, 10_000, 1.0, rng) <= 330.0


def test_call_with_retries_counts_attempts() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> Completion:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("busy")
        return Completion("ok", "stop", False)

    def retry(exc: BaseException) -> Fault:
        return Fault(str(exc), True, 0.5 if len(calls) == 1 else None)

    done, attempts = call_with_retries(flaky, retry, 5, 0.1, random.Random(0), waits.append)
    assert done.text == "ok" and attempts == 3 and len(waits) == 2
    assert 0.5 <= waits[0] <= 0.55 and 0.1 <= waits[1] <= 0.2

    def fatal(exc: BaseException) -> Fault:
        return Fault(f"HTTP 401: {exc}", False)

    calls.clear()
    with pytest.raises(CallFailed) as err:
        call_with_retries(flaky, fatal, 5, 0.1, random.Random(0), waits.append)
    assert err.value.attempts == 1 and str(err.value) == "HTTP 401: busy"
    calls.clear()
    with pytest.raises(CallFailed) as err:
        call_with_retries(flaky, retry, 1, 0.0, random.Random(0), lambda s: None)
    assert err.value.attempts == 2


def test_prices() -> None:
    assert price_for("claude-sonnet-4-5-20250929") == (3.0, 15.0)
    assert price_for("gpt-4o-mini-2024-07-18") == (0.15, 0.6)  # longest prefix wins
    assert price_for("openai/gpt-4.1") == (2.0, 8.0)
    assert price_for("anthropic/claude-haiku-4.5") == (1.0, 5.0)
    assert price_for("llama3.1:8b") is None
    assert price_for("gpt-4o", {"gpt-4o": [1.0, 2.0]}) == (1.0, 2.0)
    assert price_for("my-model-v2", {"my-model": [1.0, 2.0]}) == (1.0, 2.0)
    usage = {"input_tokens": 1_000_000, "output_tokens": 100_000,
             "cache_read_input_tokens": 1_000_000}  # fmt: skip
    assert cost_usd(usage, (3.0, 15.0)) == pytest.approx(3 + 1.5 + 0.3)
    assert cost_usd(usage, None) == 0.0


def test_redactor() -> None:
    r = Redactor({"K": "sk-secret-123456", "SHORT": "abc"})
    assert r.text("a sk-secret-123456 b") == "a [REDACTED:K] b"
    assert r.text("abc stays") == "abc stays"  # too short to redact safely
    p = Proposal(files={"a.py": "KEY = 'sk-secret-123456'\n"}, description="sk-secret-123456",
                 meta={"log": [{"error": "bad key sk-secret-123456"}]})  # fmt: skip
    r.proposal(p)
    assert p.files["a.py"] == "KEY = '[REDACTED:K]'\n" and p.description == "[REDACTED:K]"
    assert p.meta["log"][0]["error"] == "bad key [REDACTED:K]"
    assert not Redactor({})


def record(n: int, status: str, value: float | None, **kw: object) -> ExperimentRecord:
    defaults: dict = dict(metrics={}, commit=None, parent=None, description=f"exp {n}",
                          reason="", wall_s=1.0, proposer="llm")  # fmt: skip
    defaults.update(kw)
    return ExperimentRecord(n, status, value, **defaults)


def rich_context() -> Context:
    history = [record(0, "keep", 10.0, reason="baseline")]
    history += [record(n, "discard", 11.0 + n, reason=f"not better {n}") for n in range(1, 25)]
    history += [
        record(25, "keep", 8.0, hypothesis="smaller X helps", meta={"lesson": "X matters",
               "lesson_about": 24}),
        record(26, "invalid", None, reason="unusable edit: block 1 matches nothing"),
        record(27, "crash", None, reason="run command exited with code 1"),
    ]  # fmt: skip
    return Context(
        study="s", instructions="Be bold.", surface={"score.py": SCORE}, metric="score",
        goal="minimize", budget_s=300, best_experiment=25, best_value=8.0,
        baseline_value=10.0, history=history, last_crash_log="Traceback: ZeroDivisionError",
        trace_digest="run 25: 3 tool calls", constraints=[{"name": "mem_mb", "max": 100.0}],
        best_metrics={"mem_mb": 50.0, "holdout_acc": 0.9},
    )  # fmt: skip


def test_prompt_has_everything_a_researcher_wants() -> None:
    ctx = rich_context()
    fmt = FORMATS["search_replace"]
    prompt = llm_prompt(ctx, lambda fill: fmt.instructions(fill, ctx.surface), {"holdout_acc"})
    assert "<<<<<<< SEARCH" in prompt.system and "Reply in exactly this format" in prompt.system
    user = prompt.user
    for expected in (
        "Be bold.", "goal: minimize (lower is better)", "killed after 5 minutes",
        "experiment 25 with score = 8", "mem_mb = 50", "mem_mb <= 100",
        "#25 keep · score=8 (Δ -2 vs best, better)", "hypothesis: smaller X helps",
        "#26 invalid", "block 1 matches nothing", "#27 crash", "ZeroDivisionError",
        "run 25: 3 tool calls", "(after #24) X matters", "\nX = 10\n",
        "11 older ones omitted",
    ):  # fmt: skip
        assert expected in user, expected
    assert "holdout_acc" not in user and "#11 discard" not in user and "#12 discard" in user
    assert "   2| X = 10" not in user  # no line-number gutter
    # Stable first: the surface and instructions before anything that changes per experiment.
    assert prompt.stable.endswith("```") and "Be bold." in prompt.stable
    assert "# History" in prompt.volatile and "# History" not in prompt.stable
    whole = FORMATS["whole_file"].instructions({"reply_format": "R", "example_path": "p"}, {})
    assert "complete new content" in whole
    agent = agent_prompt(ctx, "/tmp/d.txt")
    assert "# Your task" in agent and "/tmp/d.txt" in agent and "X = 10" not in agent


def test_history_compacts_and_collapses_repeated_failures() -> None:
    ctx = rich_context()
    ctx.history += [record(n, "invalid", None, reason="unusable reply: no block")
                    for n in range(28, 33)]  # fmt: skip
    ctx.in_flight = [{"experiment": 33, "description": "try a cosine schedule"}]
    full = volatile_sections(ctx, LEVELS[0])
    text = "\n".join(full)
    assert "#28–#32 invalid ×5 (the same each time) · reason: unusable reply: no block" in text
    assert "#29 invalid" not in text
    assert '- #33: "try a cosine schedule"' in text
    least = "\n".join(volatile_sections(ctx, LEVELS[-1]))
    assert len(least) < len(text) / 3
    assert "#25 keep" in least  # the best is always there
    assert "ZeroDivisionError" not in least and "X matters" not in least
    sizes = [len("\n".join(volatile_sections(ctx, lv))) for lv in LEVELS]
    assert sizes == sorted(sizes, reverse=True)


def test_reply_fields() -> None:
    fields = parse_fields(
        "**LESSON:** bigger was worse\nHypothesis: halving LR helps\n"
        "DESCRIPTION: halve LR\nRATIONALE: first line\nsecond line\n\nscore.py\n"
    )
    assert fields == {"LESSON": "bigger was worse", "HYPOTHESIS": "halving LR helps",
                      "DESCRIPTION": "halve LR", "RATIONALE": "first line second line"}  # fmt: skip


def config(proposer: dict) -> object:
    return config_from_dict({
        "study": {"name": "t", "surface": ["score.py"], "budget": "10s"},
        "run": {"command": "python score.py"}, "metric": {"name": "score"},
        "proposer": proposer,
    })  # fmt: skip


def test_llm_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVN_K", CANARY)
    with pytest.raises(UsageError, match=r"\[proposer\].model: missing"):
        LLMProposer(config=config({"kind": "llm", "provider": "openai",
                                   "base_url": "http://127.0.0.1:9/v1"}))  # fmt: skip
    with pytest.raises(UsageError, match="from 0 to 1"):
        LLMProposer(config=config({"kind": "llm", "api_key_env": "OVN_K", "temperature": 1.5}))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY"):
        LLMProposer(config=config({"kind": "llm"}))
    # A key-less local server is fine: Ollama needs no key.
    local = LLMProposer(config=config({"kind": "llm", "provider": "openai", "model": "qwen",
                                       "base_url": "http://127.0.0.1:9/v1"}))  # fmt: skip
    assert local.describe() == "llm (openai qwen at http://127.0.0.1:9/v1)"
    assert local.next_cost_estimate() == 0.0  # no price known: free
    kind, why = resolve_kind("auto", config({"provider": "openai", "model": "qwen",
                                             "base_url": "http://127.0.0.1:9/v1"}))  # fmt: skip
    assert kind == "llm" and "needs no key" in why


def test_prompt_lists_the_experiments_in_flight() -> None:
    ctx = rich_context()
    def user_of(ctx: Context) -> str:
        fmt = FORMATS["search_replace"]
        return llm_prompt(ctx, lambda fill: fmt.instructions(fill, ctx.surface)).user

    user = user_of(ctx)
    assert "in flight" not in user  # nothing running: no section
    ctx.in_flight = [{"experiment": 28, "description": "X 8 → 6"},
                     {"experiment": None, "description": "Y 2 → 1"}]  # fmt: skip
    user = user_of(ctx)
    section = user.split("# Experiments in flight\n", 1)[1].split("\n\n", 1)[0]
    assert "Do not propose them again" in section
    assert section.splitlines()[1:] == ['- #28: "X 8 → 6"', '- next: "Y 2 → 1"']
    assert user.index("# History") < user.index("# Experiments in flight")
