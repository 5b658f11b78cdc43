"""The wire formats the fake model provider answers in: OpenAI Chat Completions, OpenAI
Responses and Anthropic Messages, each as one JSON body or as a server-sent event stream,
with text and tool calls, exactly as the official SDKs and the coding-agent CLIs read them.

`encode(api, reply, model, stream)` gives the bytes of one answer and its content type.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = "call_1"


@dataclass
class Usage:
    input_tokens: int = 1000
    output_tokens: int = 200
    cached_tokens: int = 0  # the part of input_tokens a provider's prompt cache served


@dataclass
class Answer:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    truncated: bool = False
    usage: Usage = field(default_factory=Usage)


def api_of(path: str) -> str | None:
    """Which API a request path belongs to."""
    path = path.split("?")[0]
    for suffix, api in (("/messages", "anthropic"), ("/chat/completions", "chat"),
                        ("/responses", "responses")):  # fmt: skip
        if path.endswith(suffix):
            return api
    return None


def error_body(api: str | None, status: int) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "api_error"
    message = f"fake provider says {status}"
    if api == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": None}}


def _sse(events: Iterator[tuple[str | None, Any]]) -> bytes:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return "".join(out).encode()


def encode(api: str, answer: Answer, model: str, stream: bool) -> tuple[bytes, str]:
    if stream:
        events = {"anthropic": _anthropic_events, "chat": _chat_events,
                  "responses": _responses_events}[api](answer, model)  # fmt: skip
        return _sse(events), "text/event-stream"
    body = {"anthropic": _anthropic_body, "chat": _chat_body,
            "responses": _responses_body}[api](answer, model)  # fmt: skip
    return json.dumps(body).encode(), "application/json"


# --- Anthropic Messages ---------------------------------------------------------------------


def _anthropic_blocks(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": answer.text}] if answer.text else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
               for c in answer.tool_calls]  # fmt: skip
    return blocks or [{"type": "text", "text": ""}]


def _anthropic_stop(answer: Answer) -> str:
    if answer.truncated:
        return "max_tokens"
    return "tool_use" if answer.tool_calls else "end_turn"


def _anthropic_usage(answer: Answer) -> dict[str, int]:
    u = answer.usage
    return {"input_tokens": u.input_tokens - u.cached_tokens, "output_tokens": u.output_tokens,
            "cache_read_input_tokens": u.cached_tokens, "cache_creation_input_tokens": 0}


def _anthropic_body(answer: Answer, model: str) -> dict[str, Any]:
    return {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": _anthropic_blocks(answer), "stop_reason": _anthropic_stop(answer),
        "stop_sequence": None, "usage": _anthropic_usage(answer),
    }  # fmt: skip


def _anthropic_events(answer: Answer, model: str) -> Iterator[tuple[str | None, Any]]:
    start = {**_anthropic_body(answer, model), "content": [], "stop_reason": None,
             "usage": {**_anthropic_usage(answer), "output_tokens": 1}}  # fmt: skip
    yield "message_start", {"type": "message_start", "message": start}
    for i, block in enumerate(_anthropic_blocks(answer)):
        if block["type"] == "text":
            opened = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            opened = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_start", {"type": "content_block_start", "index": i,
                                      "content_block": opened}  # fmt: skip
        yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    stop = {"stop_reason": _anthropic_stop(answer), "stop_sequence": None}
    yield "message_delta", {"type": "message_delta", "delta": stop,
                            "usage": {"output_tokens": answer.usage.output_tokens}}  # fmt: skip
    yield "message_stop", {"type": "message_stop"}


# --- OpenAI Chat Completions ----------------------------------------------------------------


def _chat_usage(answer: Answer) -> dict[str, Any]:
    u = answer.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}  # fmt: skip


def _chat_finish(answer: Answer) -> str:
    return "length" if answer.truncated else "tool_calls" if answer.tool_calls else "stop"


def _chat_tool_calls(answer: Answer) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in answer.tool_calls]  # fmt: skip


def _chat_body(answer: Answer, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.tool_calls:
        message["tool_calls"] = _chat_tool_calls(answer)
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": model, "usage": _chat_usage(answer),
        "choices": [{"index": 0, "message": message, "finish_reason": _chat_finish(answer)}],
    }  # fmt: skip


def _chat_events(answer: Answer, model: str) -> Iterator[tuple[str | None, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

    yield None, chunk({"role": "assistant", "content": ""})
    if answer.text:
        yield None, chunk({"content": answer.text})
    for i, call in enumerate(_chat_tool_calls(answer)):
        yield None, chunk({"tool_calls": [{"index": i, **call}]})
    yield None, chunk({}, _chat_finish(answer))
    yield None, {**chunk({}), "choices": [], "usage": _chat_usage(answer)}
    yield None, "[DONE]"


# --- OpenAI Responses -----------------------------------------------------------------------


def _responses_items(answer: Answer) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if answer.text or not answer.tool_calls:
        items.append({"type": "message", "id": "msg_fake", "status": "completed",
                      "role": "assistant", "content": [{"type": "output_text",
                                                        "text": answer.text,
                                                        "annotations": []}]})  # fmt: skip
    items += [{"type": "function_call", "id": f"fc_{c.id}", "call_id": c.id, "name": c.name,
               "arguments": json.dumps(c.arguments), "status": "completed"}
              for c in answer.tool_calls]  # fmt: skip
    return items


def _responses_body(answer: Answer, model: str) -> dict[str, Any]:
    u = answer.usage
    return {
        "id": "resp_fake", "object": "response", "created_at": int(time.time()),
        "status": "incomplete" if answer.truncated else "completed", "model": model,
        "output": _responses_items(answer), "parallel_tool_calls": True, "tool_choice": "auto",
        "tools": [], "incomplete_details": {"reason": "max_output_tokens"} if answer.truncated
        else None,
        "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                  "total_tokens": u.input_tokens + u.output_tokens,
                  "input_tokens_details": {"cached_tokens": u.cached_tokens},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }  # fmt: skip


def _responses_events(answer: Answer, model: str) -> Iterator[tuple[str | None, Any]]:
    done = _responses_body(answer, model)
    seq = iter(range(1_000_000))
    yield "response.created", {"type": "response.created", "sequence_number": next(seq),
                               "response": {**done, "status": "in_progress", "output": [],
                                            "usage": None}}  # fmt: skip
    for i, item in enumerate(done["output"]):
        yield "response.output_item.added", {"type": "response.output_item.added",
                                             "sequence_number": next(seq), "output_index": i,
                                             "item": {**item, "status": "in_progress"}}  # fmt: skip
        if item["type"] == "message" and answer.text:
            yield "response.output_text.delta", {
                "type": "response.output_text.delta", "sequence_number": next(seq),
                "item_id": item["id"], "output_index": i, "content_index": 0,
                "delta": answer.text, "logprobs": [],
            }  # fmt: skip
        yield "response.output_item.done", {"type": "response.output_item.done",
                                            "sequence_number": next(seq), "output_index": i,
                                            "item": item}  # fmt: skip
    kind = "response.incomplete" if answer.truncated else "response.completed"
    yield kind, {"type": kind, "sequence_number": next(seq), "response": done}
