"""The `llm` proposer against small models: context windows learned from the server (and from
its refusals), prompts that fit, edit formats with fallback and constrained decoding, the
repair turn, no resend of a timed-out local request, and prompt caching's savings.

The proposer runs in-process against `FakeLLM` on 127.0.0.1 acting like llama.cpp's
llama-server, llama-cpp-python's server or Ollama (their context reports, error bodies and
response_format rules), through the real openai and anthropic SDKs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import make_repo, run_cli, score_config
from support.fake_llm import FakeLLM, Reply

from overnight.config import config_from_dict
from overnight.proposers.base import Context
from overnight.proposers.llm.budget import TokenCounter, is_local, parse_overflow
from overnight.proposers.llm.edits import EditError
from overnight.proposers.llm.formats import FAIL_STREAK, FORMATS, RETRY_AFTER, choose
from overnight.proposers.llm.llm import LLMProposer
from overnight.proposers.llm.pricing import cost_usd, saved_usd
from overnight.store.records import ExperimentRecord
from overnight.store.study import Study

pytest.importorskip("openai")

TRAIN = (
    '"""A tiny trainer."""\n\n'
    "LEARNING_RATE = 0.001  # step size\n"
    "HIDDEN = 4  # units\n"
    "STEPS = 300\n\n\n"
    "def main():\n"
    "    loss = 1.0 / (LEARNING_RATE * HIDDEN * STEPS)\n"
    '    print(f"val_loss: {loss}")\n\n\n'
    "main()\n"
)
PROGRAM = "Lower val_loss. " + " ".join(f"Idea {n}: try changing the knobs." for n in range(20))


def knob_json(knob: str = "LEARNING_RATE", value: float = 0.01, **extra: Any) -> str:
    return json.dumps({"lesson": "none yet", "hypothesis": f"{knob} {value} trains faster",
                       "description": f"Set {knob} to {value}",
                       "edits": [{"knob": knob, "value": value}], **extra})  # fmt: skip


def record(n: int, status: str, value: float | None, **meta: Any) -> ExperimentRecord:
    return ExperimentRecord(n, status, value, {}, None, None, f"exp {n}", "" if status == "keep"
                            else f"reason {n}", 1.0, "llm", meta=meta)  # fmt: skip


def long_history(n: int = 40) -> list[ExperimentRecord]:
    """A night's worth of history: too much for a 1,200-token window in full."""
    rows = [record(0, "keep", 0.8)]
    for i in range(1, n):
        r = record(i, "discard", 0.9 + i / 100)
        r.hypothesis = f"changing knob number {i} by a factor of two helps the loss go down"
        rows.append(r)
    return rows


def context(history: list[ExperimentRecord] | None = None, program: str = PROGRAM) -> Context:
    return Context(
        study="t", instructions=program, surface={"train.py": TRAIN}, metric="val_loss",
        goal="minimize", budget_s=20, best_experiment=0, best_value=0.8, baseline_value=0.8,
        history=history or [record(0, "keep", 0.8)],
    )  # fmt: skip


def proposer(url: str, **proposer_keys: Any) -> LLMProposer:
    cfg = config_from_dict({
        "study": {"name": "t", "surface": ["train.py"], "budget": "20s"},
        "run": {"command": "python train.py"}, "metric": {"name": "val_loss"},
        "proposer": {"kind": "llm", "provider": "openai", "model": "fake", "base_url": url,
                     "max_retries": 1, **proposer_keys},
    })  # fmt: skip
    return LLMProposer(config=cfg)


def test_llama_server_reports_its_context_and_every_request_fits() -> None:
    with FakeLLM([knob_json()], flavor="llama.cpp", n_ctx=2048) as server:
        llm = proposer(server.openai_url, formats=["json"], max_tokens=8192)
        p = llm.propose(context())
        llm.close()
    assert p.invalid_reason is None, p.invalid_reason
    assert p.files["train.py"] == TRAIN.replace("0.001  #", "0.01  #")
    assert p.description == "LEARNING_RATE 0.001 → 0.01" and p.hypothesis
    budget = p.meta["budget"]
    assert budget["context"] == 2048 and budget["source"] == "llama.cpp GET /props"
    sent = server.requests[0]
    # The output limit is what the window leaves, far below the configured 8192.
    assert sent.body["max_tokens"] == budget["max_tokens"] < 2048
    assert sent.prompt_tokens + sent.body["max_tokens"] <= 2048
    assert p.meta["format"] == "json" and p.meta["format_ok"] is True
    # Constrained decoding: one choice per knob of the surface, each held to values that
    # change it (a tenth to ten times the current one), so copying the current value is out.
    schema = sent.body["response_format"]["json_schema"]["schema"]
    choices = schema["properties"]["edits"]["items"]["anyOf"]
    knobs = {c["properties"]["knob"]["const"]: c["properties"]["value"]["enum"] for c in choices}
    assert knobs["HIDDEN"] == [1, 2, 3, 5, 8, 20, 40]
    assert knobs["LEARNING_RATE"][0] == 0.0001 and knobs["LEARNING_RATE"][-1] == 0.01
    assert 0.001 not in knobs["LEARNING_RATE"]
    assert set(knobs) == {"LEARNING_RATE", "HIDDEN", "STEPS"}
    assert sent.body["response_format"]["type"] == "json_schema"
    # The edit right after the description; lengths bounded for a local server's grammar.
    assert list(schema["properties"]) == ["description", "edits", "hypothesis", "lesson"]
    assert schema["properties"]["description"]["maxLength"] == 100
    assert schema["properties"]["edits"]["minItems"] == 1


def test_llama_cpp_python_refusal_teaches_the_window_and_the_request_is_shrunk() -> None:
    # llama-cpp-python does not report its context: the local default (4096) is too large
    # for this 1,200-token server, so the first request is refused in its words, and the
    # proposer learns the window from the message and sends a smaller request. The server
    # also refuses {"type": "json_schema"} (HTTP 500), so the schema goes as json_object.
    with FakeLLM([knob_json("HIDDEN", 32)], flavor="llama-cpp-python", n_ctx=1200) as server:
        llm = proposer(server.openai_url, formats=["json"])
        p = llm.propose(context(long_history()))
        second = llm.propose(context(long_history()))
        llm.close()
    assert p.invalid_reason is None, p.invalid_reason
    assert p.files["train.py"].count("HIDDEN = 32  # units") == 1
    statuses = [r.body.get("response_format", {}).get("type") for r in server.requests]
    assert statuses[0] == "json_schema" and set(statuses[1:]) == {"json_object"}
    assert p.meta["overflows"] == 1
    assert p.meta["budget"]["context"] == 1200
    assert p.meta["budget"]["source"] == "the server's context-length refusal"
    last = server.requests[-1 - 1]  # the accepted request of the first proposal
    assert last.prompt_tokens + last.body["max_tokens"] <= 1200
    assert p.meta["budget"]["level"] > 0  # the history was compacted to fit
    # What was learned stays: the next proposal fits at once.
    assert "overflows" not in second.meta and second.invalid_reason is None
    assert server.requests[-1].prompt_tokens + server.requests[-1].body["max_tokens"] <= 1200


def test_ollama_context_is_read_once_the_model_is_loaded() -> None:
    with FakeLLM([knob_json("STEPS", 600)], flavor="ollama", n_ctx=3000) as server:
        llm = proposer(server.openai_url, formats=["json"])
        first = llm.propose(context(program="Lower val_loss."))
        second = llm.propose(context(program="Lower val_loss."))
        llm.close()
    assert first.meta["budget"]["source"] == "Ollama's default (model not loaded yet)"
    assert first.meta["budget"]["context"] == 4096
    assert second.meta["budget"] == {**second.meta["budget"], "context": 3000,
                                     "source": "Ollama /api/ps or /api/show"}  # fmt: skip
    assert second.invalid_reason is None


def test_vllm_reports_max_model_len() -> None:
    with FakeLLM([knob_json()], flavor="vllm", n_ctx=6000) as server:
        llm = proposer(server.openai_url, formats=["json"])
        p = llm.propose(context())
        llm.close()
    assert p.meta["budget"]["context"] == 6000
    assert p.meta["budget"]["source"] == "vLLM GET /v1/models"


def test_configured_context_wins_and_a_prompt_that_cannot_fit_says_so() -> None:
    with FakeLLM([knob_json()], flavor="llama.cpp", n_ctx=8192) as server:
        llm = proposer(server.openai_url, context_tokens=300)
        p = llm.propose(context())
        llm.close()
    assert server.requests == []  # nothing sent that could not fit
    assert p.invalid_reason is not None
    assert p.invalid_reason.startswith("the prompt does not fit the model's context of 300 tokens")
    assert "[proposer].context_tokens" in p.invalid_reason


def test_prose_gets_a_repair_turn_and_two_failures_fall_back_to_json() -> None:
    prose = "I would suggest increasing the learning rate because the model is undertrained."
    fenced = "Here is my change:\n```python\nLEARNING_RATE = 0.01\n```\n"
    replies = [prose, fenced, knob_json("LEARNING_RATE", 0.001), knob_json()]
    with FakeLLM(replies, flavor="llama.cpp", n_ctx=4096) as server:
        llm = proposer(server.openai_url, formats=["search_replace", "json"])
        first = llm.propose(context())
        history = [record(0, "keep", 0.8), record(1, "invalid", None, **first.meta)]
        history.append(record(2, "invalid", None, format="search_replace", format_ok=False))
        second = llm.propose(context(history))
        llm.close()
    assert first.invalid_reason == (
        "unusable search_replace reply: the reply contains no SEARCH/REPLACE block (found a "
        "code block without a file path line above it) (after a repair turn)"
    )
    repair = server.requests[1].body["messages"]
    assert repair[2] == {"role": "assistant", "content": prose}
    assert "found prose only, 1 line" in repair[3]["content"]
    assert first.usage["calls"] == 2 and first.meta["repair"]["ok"] is False
    # Two failed SEARCH/REPLACE proposals: the next is asked for JSON; its first reply
    # changes nothing (the value is the current one) and the repair turn fixes it.
    assert second.meta["format"] == "json" and second.invalid_reason is None
    assert second.meta["repair"] == {"ok": True, "error": "the edits change nothing: "
                                     "LEARNING_RATE is already 0.001 (e.g. 0.0005 or 0.002); "
                                     "choose values that differ from the current ones"}  # fmt: skip
    # The repair turn samples a little hotter than the first try (0.7 + 0.3).
    assert server.requests[3].body["temperature"] == 1.0
    assert server.requests[2].body["temperature"] == 0.7
    # The knob list after the surface offers half and double as examples of a change.
    assert "- HIDDEN = 4 (e.g. 2 or 8)" in server.requests[2].prompt
    assert "LEARNING_RATE = 0.01  # step size" in second.files["train.py"]
    assert "response_format" not in server.requests[0].body
    assert server.requests[2].body["response_format"]["type"] == "json_schema"


def test_a_reply_cut_off_by_the_context_says_so_and_teaches_the_window() -> None:
    # The user said 4096, but llama-cpp-python runs with 1200 and silently clips max_tokens.
    rambling = "LESSON: " + "the loss is high because " * 300
    with FakeLLM([rambling, knob_json()], flavor="llama-cpp-python", n_ctx=1200) as server:
        llm = proposer(server.openai_url, context_tokens=4096, formats=["json"])
        p = llm.propose(context(program="Lower val_loss."))
        llm.close()
    assert p.invalid_reason is not None
    assert p.invalid_reason.startswith("unusable json reply: cut off: the reply filled the "
                                       "model's context window of 1200 tokens")  # fmt: skip
    assert server.answered == 1  # no repair turn for a reply that ran out of room
    assert llm.window().tokens == 1200


def test_a_timed_out_request_to_a_local_server_is_not_resent() -> None:
    with FakeLLM([Reply(knob_json(), delay=2.5)], flavor="llama.cpp", n_ctx=4096) as server:
        llm = proposer(server.openai_url, formats=["json"], timeout="1s", max_retries=3)
        p = llm.propose(context())
        llm.close()
    assert len(server.requests) == 1
    assert p.invalid_reason is not None and "not resent while the local server" in p.invalid_reason
    assert llm.busy_until > 0  # the next call first waits out the abandoned one


def test_anthropic_prompt_caching_is_marked_and_its_savings_shown(tmp_path: Path) -> None:
    pytest.importorskip("anthropic")
    edit = ("DESCRIPTION: X to 7\n\nscore.py\n<<<<<<< SEARCH\nX = 10\n=======\nX = 7\n"
            ">>>>>>> REPLACE\n")  # fmt: skip
    replies = [Reply(edit, input_tokens=300, output_tokens=100, cached_tokens=0),
               Reply(edit.replace("10", "7").replace("= 7\n>", "= 5\n>"), input_tokens=300,
                     output_tokens=100, cached_tokens=2000)]  # fmt: skip
    with FakeLLM(replies) as server:
        toml = score_config(proposer="llm") + (
            f'provider = "anthropic"\nmodel = "claude-sonnet-4-5"\nbase_url = "{server.url}"\n'
            'api_key_env = "OVN_CACHE_KEY"\n'
        )  # fmt: skip
        repo = make_repo(tmp_path / "repo", {"score.py": "X = 10\nprint(f'score: {X}')\n",
                                             "overnight.toml": toml})  # fmt: skip
        out = run_cli(repo, "run", "-n", "2", "--plain", env={"OVN_CACHE_KEY": "k-123456789"})
        assert out.returncode == 0, out.stderr + out.stdout
    body = server.requests[1].body
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    user = body["messages"][0]["content"]
    assert user[0]["cache_control"] == {"type": "ephemeral"} and "cache_control" not in user[1]
    assert "X = 7" in user[0]["text"] and "# History" in user[1]["text"]
    status = Study.open(repo / "overnight.toml").status()
    # 2000 tokens read from the cache at 10% of $3 per 1M instead of 100%: $0.0054 saved.
    assert status["model"]["cached_tokens"] == 2000 and status["model"]["calls"] == 2
    assert status["model"]["saved_usd"] == pytest.approx(2000 * 3 * 0.9 / 1e6)
    text = run_cli(repo, "status").stdout
    assert "prompt cache 2,000 tokens (77%), saved $0.0054 ($0.0027 per experiment)" in text


# --- units ---------------------------------------------------------------------------------


def test_overflow_messages_of_each_server() -> None:
    said = parse_overflow(
        "This model's maximum context length is 4096 tokens. However, you requested 12303 "
        "tokens (4111 in the messages, 8192 in the completion). Please reduce the length."
    )
    assert said is not None and (said.context, said.prompt) == (4096, 4111)
    said = parse_overflow("request (4476 tokens) exceeds the available context size (4096 tokens)")
    assert said is not None and (said.context, said.prompt) == (4096, 4476)
    said = parse_overflow("the input length exceeds the context length")
    assert said is not None and (said.context, said.prompt) == (None, None)
    said = parse_overflow("prompt is too long: 215000 tokens > 200000 maximum")
    assert said is not None and (said.context, said.prompt) == (200000, 215000)
    assert parse_overflow("rate limit reached, retry later") is None


def test_token_counter_calibrates_to_the_densest_text() -> None:
    counter = TokenCounter()
    before = counter.estimate("x" * 2800)
    assert before >= 1000  # uncalibrated: pessimistic
    counter.observe(4000, 1000 + 24)  # 4 chars a token
    assert counter.estimate("x" * 4000) == pytest.approx(1000 * 1.06 + 12, abs=2)
    counter.observe(3000, 1000 + 24)  # denser text wins
    counter.observe(8000, 1000 + 24)  # sparser text does not loosen the estimate
    assert counter.chars_per_token == pytest.approx(3.0)


def test_is_local() -> None:
    assert is_local("http://127.0.0.1:8012/v1") and is_local("http://localhost:11434/v1")
    assert is_local("http://192.168.1.20:8080/v1")
    assert not is_local("https://openrouter.ai/api/v1") and not is_local("")


def test_json_edits_knobs_and_lines() -> None:
    fmt = FORMATS["json"]
    surface = {"train.py": TRAIN}
    parsed = fmt.parse("```json\n" + knob_json("HIDDEN", 16.0) + "\n```", surface)
    assert "HIDDEN = 16  # units" in parsed.files["train.py"]
    assert parsed.fields["DESCRIPTION"] == "Set HIDDEN to 16.0"
    with pytest.raises(EditError, match="no knob named 'DEPTH'"):
        fmt.parse(knob_json("DEPTH", 3), surface)
    with pytest.raises(EditError, match="must be a number"):
        fmt.parse(knob_json("HIDDEN", "wide"), surface)  # type: ignore[arg-type]
    raw = '{"description": "two\nlines", "edits": [{"knob": "STEPS", "value": 900}]}'
    assert "STEPS = 900" in fmt.parse(raw, surface).files["train.py"]  # a raw newline is fine
    remote = json.dumps(fmt.schema(surface))  # OpenAI's strict mode refuses maxLength
    assert "maxLength" not in remote and '"enum": ["HIDDEN", "LEARNING_RATE", "STEPS"]' in remote
    with pytest.raises(EditError, match="does not parse"):
        fmt.parse('{"edits": [}', surface)
    with pytest.raises(EditError, match="no JSON object"):
        fmt.parse("I think so.", surface)
    plain = {"run.sh": "echo 1\nsleep 2\n"}  # no knobs: whole-line edits
    assert "old" in fmt.schema(plain)["properties"]["edits"]["items"]["properties"]
    edit = json.dumps({"edits": [{"old": "sleep 2", "new": "sleep 1"}]})
    assert fmt.parse(edit, plain).files == {"run.sh": "echo 1\nsleep 1\n"}
    with pytest.raises(EditError, match="matches no line"):
        fmt.parse(json.dumps({"edits": [{"old": "sleep 9", "new": "x"}]}), plain)


def test_whole_file_accepts_a_single_bare_code_block() -> None:
    fmt = FORMATS["whole_file"]
    reply = "DESCRIPTION: wider\n```python\n" + TRAIN.replace("= 4 ", "= 8 ") + "```\n"
    assert fmt.parse(reply, {"train.py": TRAIN}).files == {
        "train.py": TRAIN.replace("= 4 ", "= 8 ")}  # fmt: skip
    assert not fmt.usable({"big.py": "x = 1\n" * 500})
    # A single block holding a SEARCH/REPLACE edit is not the file: its own error stands.
    outside = "helper.txt\n```\n<<<<<<< SEARCH\nlocked\n=======\nopen\n>>>>>>> REPLACE\n```\n"
    with pytest.raises(EditError, match="helper.txt"):
        fmt.parse(outside, {"train.py": TRAIN})


def test_format_choice_falls_back_and_retries_later() -> None:
    order = ["search_replace", "whole_file", "json"]
    fits = dict.fromkeys(order, True)
    bad = [record(n, "invalid", None, format="search_replace", format_ok=False)
           for n in range(1, FAIL_STREAK + 1)]  # fmt: skip
    assert choose(order, [record(0, "keep", 1.0)], fits).name == "search_replace"
    assert choose(order, bad, fits).name == "whole_file"
    assert choose(order, bad, {**fits, "whole_file": False}).name == "json"
    later = bad + [record(10 + n, "discard", 1.0, format="json", format_ok=True)
                   for n in range(RETRY_AFTER)]  # fmt: skip
    assert choose(order, later, {**fits, "whole_file": False}).name == "search_replace"
    assert choose(order, [], {}) is None
    # The retry failed too: the next one waits twice as long, and so on.
    again = later + [record(30, "invalid", None, format="search_replace", format_ok=False)]
    def json_runs(start: int, k: int) -> list:
        return [record(start + n, "discard", 1.0, format="json", format_ok=True)
                for n in range(k)]  # fmt: skip
    no_whole = {**fits, "whole_file": False}
    assert choose(order, again + json_runs(40, RETRY_AFTER), no_whole).name == "json"
    assert choose(order, again + json_runs(40, 2 * RETRY_AFTER), no_whole).name == (
        "search_replace")
    # One usable reply ends the demotion.
    healed = again + [record(80, "keep", 0.5, format="search_replace", format_ok=True)]
    assert choose(order, healed, no_whole).name == "search_replace"


def test_cache_savings_arithmetic() -> None:
    usage = {"input_tokens": 100, "cache_read_input_tokens": 1000,
             "cache_creation_input_tokens": 400, "output_tokens": 10}  # fmt: skip
    # Reads save 90%; the write costs 25% more than plain input.
    assert saved_usd(usage, (3.0, 15.0)) == pytest.approx((1000 * 0.9 - 400 * 0.25) * 3 / 1e6)
    # OpenAI's gpt-4.1 bills cached tokens at a quarter.
    assert cost_usd({"input_tokens": 0, "cache_read_input_tokens": 1000}, (2.0, 8.0), 0.25) == (
        pytest.approx(1000 * 2 * 0.25 / 1e6))  # fmt: skip


def test_rebase_applies_the_edit_again_on_a_newer_best() -> None:
    with FakeLLM([knob_json("HIDDEN", 32)], flavor="llama.cpp", n_ctx=4096) as server:
        llm = proposer(server.openai_url, formats=["json"])
        p = llm.propose(context())
        llm.close()
    # Meanwhile a keep changed the neighbouring line: a line merge would conflict.
    newer = TRAIN.replace("LEARNING_RATE = 0.001", "LEARNING_RATE = 0.01")
    rebased = llm.rebase(p, {"train.py": newer})
    assert rebased == {"train.py": newer.replace("HIDDEN = 4 ", "HIDDEN = 32 ")}
    already = newer.replace("HIDDEN = 4 ", "HIDDEN = 32 ")
    assert llm.rebase(p, {"train.py": already}) is None  # nothing left to change: the merge says so
    p.meta["format"] = "whole_file"
    assert llm.rebase(p, {"train.py": newer}) is None


def test_a_change_already_in_flight_or_measured_gets_a_turn_asking_for_another() -> None:
    """Run-ahead: a weak model proposes the very change that is running now (seen with
    SmolLM2-135M as `empty change` and `duplicate` experiments). It is told, once."""
    ctx = context()
    ctx.in_flight = [{"experiment": 3, "description": "LEARNING_RATE 0.001 → 0.01"}]
    with FakeLLM([knob_json(), knob_json("HIDDEN", 8)], flavor="llama.cpp") as server:
        llm = proposer(server.openai_url, formats=["json"])
        p = llm.propose(ctx)
        llm.close()
    assert p.invalid_reason is None, p.invalid_reason
    assert p.files["train.py"] == TRAIN.replace("HIDDEN = 4", "HIDDEN = 8")
    assert p.description == "HIDDEN 4 → 8" and "repeat" not in p.meta
    assert p.meta["repair"]["ok"] is True
    assert "experiment 3 (being measured now) already makes this change" in (
        p.meta["repair"]["error"])
    turn = server.requests[1].body["messages"][-1]["content"]
    assert "with a different change" in turn and "LEARNING_RATE 0.001 → 0.01" in turn
    # Measured since the best, and repeated again after the turn: invalid, saying why.
    history = [record(0, "keep", 0.8), record(1, "discard", 0.9)]
    history[1].description = "LEARNING_RATE 0.001 → 0.01"
    with FakeLLM([knob_json(), knob_json()], flavor="llama.cpp") as server:
        llm = proposer(server.openai_url, formats=["json"])
        p = llm.propose(context(history))
        llm.close()
    assert p.invalid_reason == ("repeated change: it repeats experiment 1, already measured "
                                "(discard) (after a repair turn)")  # fmt: skip
    assert p.meta["format_ok"] is True  # the format worked: it is not demoted for this
    # A different change made on the same best is not a repeat.
    history[1].description = "HIDDEN 4 → 8"
    with FakeLLM([knob_json()], flavor="llama.cpp") as server:
        llm = proposer(server.openai_url, formats=["json"])
        p = llm.propose(context(history))
        llm.close()
    assert p.invalid_reason is None and len(server.requests) == 1
    # Part of a change in flight is a repeat too (nothing would be left once it lands); an
    # invalid experiment's change was never measured.
    ctx = context(history)
    ctx.in_flight = [{"experiment": 5, "description": "LEARNING_RATE 0.001 → 0.01, HIDDEN 4 → 2"}]
    history[1].description, history[1].status = "HIDDEN 4 → 8", "invalid"
    with FakeLLM([knob_json(), knob_json("HIDDEN", 8)], flavor="llama.cpp") as server:
        llm = proposer(server.openai_url, formats=["json"])
        p = llm.propose(ctx)
        llm.close()
    assert p.invalid_reason is None and p.description == "HIDDEN 4 → 8"
    assert "experiment 5 (being measured now)" in p.meta["repair"]["error"]
