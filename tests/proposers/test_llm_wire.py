"""The fake provider speaks the wire formats the official SDKs (and the agent CLIs built on
them) read: streamed and unstreamed, with text and tool calls, and measures tokens."""

from __future__ import annotations

import anthropic
import openai
from support.fake_llm import FakeLLM, Reply, ToolCall

CALL = ToolCall("Read", {"file_path": "/repo/train.py"}, "toolu_1")


def test_anthropic_messages_streamed_with_tool_use() -> None:
    with FakeLLM([Reply("Reading it.", tool_calls=[CALL])]) as fake:
        client = anthropic.Anthropic(base_url=fake.url, api_key="k")
        with client.messages.stream(model="m", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            message = stream.get_final_message()
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"file_path": "/repo/train.py"}
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 200


def test_chat_completions_streamed_with_tool_calls_and_usage() -> None:
    with FakeLLM([Reply("ok", tool_calls=[CALL])]) as fake:
        client = openai.OpenAI(base_url=fake.openai_url, api_key="k")
        chunks = list(client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert text == "ok" and calls[0].function.name == "Read"
    assert chunks[-1].usage.prompt_tokens == 1000
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_responses_api_streamed_and_not_with_function_calls() -> None:
    with FakeLLM([Reply("", tool_calls=[CALL]), Reply("done")]) as fake:
        client = openai.OpenAI(base_url=fake.openai_url, api_key="k")
        with client.responses.stream(model="m", input="hi") as stream:
            first = stream.get_final_response()
        second = client.responses.create(model="m", input="again")
    assert [o.type for o in first.output] == ["function_call"]
    assert first.output[0].name == "Read" and first.output[0].call_id == "toolu_1"
    assert second.output_text == "done" and fake.requests[1].api == "responses"
    assert fake.requests[1].prompt == "again"


def test_measured_tokens_count_a_repeated_prefix_as_cached() -> None:
    with FakeLLM(respond=lambda seen: Reply("x" * 400), count_tokens=True) as fake:
        client = anthropic.Anthropic(base_url=fake.url, api_key="k")
        first = [{"role": "user", "content": "a long shared start " * 50}]
        for messages in (first, [*first, {"role": "assistant", "content": "y"},
                                 {"role": "user", "content": "more"}]):  # fmt: skip
            client.messages.create(model="m", max_tokens=10, system="S" * 400, messages=messages)
    one, two = (s.usage for s in fake.requests)
    assert one.cached_tokens == 0 and one.output_tokens == 100
    assert two.input_tokens > one.input_tokens and two.cached_tokens >= one.input_tokens - 2
