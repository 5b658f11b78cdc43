"""A fake model provider for tests: a real HTTP server on 127.0.0.1 (http.server in a thread)
that speaks the OpenAI Chat Completions, OpenAI Responses and Anthropic Messages wire formats
(JSON or streamed as server-sent events, text and tool calls; see `llm_wire`), so the official
SDKs and coding-agent CLIs can be driven against it end to end.

Replies are scripted, one per request, in order (the last one repeats once the script is
used up), or computed per request by a `respond(seen)` callable (a scripted agent that reads
the conversation and answers with tool calls). Replies can inject faults: an HTTP error
status with Retry-After, a slow answer (past the client's timeout), a dropped connection, or
a reply cut off at the token limit. Every request is recorded with its headers, body and
arrival time.

A reply text may contain `{KEY}`, replaced by the API key the request carried: a model
that echoes the key, for redaction tests.

With `flavor` and `n_ctx` it acts like a small model behind a real local server: it counts
tokens (4 characters each, plus 8 per message: a stand-in tokenizer), refuses a prompt that
does not fit its context in that server's own words and HTTP status, cuts a reply off where
the output limit or the context ends (finish_reason "length"), and reports its context where
that server does:
- "llama.cpp" (llama-server): GET /props -> default_generation_settings.n_ctx; an overflow is
  HTTP 400 {"error": {"code": 400, "message": "request (N tokens) exceeds the available
  context size (C tokens)", "type": "exceed_context_size_error", "n_prompt_tokens": N,
  "n_ctx": C}}.
- "llama-cpp-python" (python -m llama_cpp.server): reports nothing; an overflow is HTTP 400
  "This model's maximum context length is C tokens. However, you requested T tokens (P in the
  messages, M in the completion). ..." with code "context_length_exceeded"; response_format
  takes {"type": "json_object", "schema": ...} only: any other type is HTTP 500 with the
  request's validation error as the message (as llama-cpp-python 0.3.36 answers).
- "vllm": GET /v1/models -> data[].max_model_len.
- "ollama": GET /api/ps -> models[].context_length of the loaded model (loaded by the first
  chat request), POST /api/show -> parameters; an overflow is HTTP 400 "the input length
  exceeds the context length" in its OpenAI-compatible error shape.

With `count_tokens=True` the usage each answer reports is measured from the request instead
of scripted: input tokens ~ characters / 4 of the body, and the part of it that repeats the
start of an earlier request counts as cached, the way a provider's prefix cache bills it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .llm_wire import Answer, ToolCall, Usage, api_of, encode, error_body

__all__ = ["FakeLLM", "Reply", "Seen", "ToolCall"]


@dataclass
class Reply:
    text: str = ""
    status: int = 200  # an error status (429, 500, ...) to answer with instead of a reply
    retry_after: str | None = None
    delay: float = 0.0  # seconds to wait before answering
    truncated: bool = False  # finish_reason "length" / stop_reason "max_tokens"
    reset: bool = False  # drop the connection without answering
    input_tokens: int | None = None  # default: counted when simulating a model, else 1000
    output_tokens: int | None = None  # default: counted when simulating a model, else 200
    # Prompt tokens read from the cache: OpenAI's usage.prompt_tokens_details.cached_tokens
    # (part of prompt_tokens), Anthropic's usage.cache_read_input_tokens (not in input_tokens).
    cached_tokens: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    reply: Reply = field(default_factory=Reply)
    usage: Usage = field(default_factory=Usage)

    @property
    def api(self) -> str | None:
        return api_of(self.path)

    @property
    def key(self) -> str:
        auth = self.headers.get("authorization", "")
        return self.headers.get("x-api-key") or auth.removeprefix("Bearer ").strip()

    @property
    def prompt_tokens(self) -> int:
        """The request's size in the stand-in tokenizer, 8 tokens of template a message."""
        messages = len(self.body.get("messages", [])) + (1 if self.body.get("system") else 0)
        return tokens(self.prompt) + 8 * messages

    @property
    def prompt(self) -> str:
        """System and user text of the request, as one string (every wire format)."""
        body = self.body
        parts = [body[k] for k in ("system", "instructions") if isinstance(body.get(k), str)]
        if isinstance(body.get("system"), list):
            parts += [b.get("text", "") for b in body["system"] if isinstance(b, dict)]
        items = body.get("messages") or body.get("input") or []
        for message in items if isinstance(items, list) else [{"content": items}]:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [c.get("text", "") for c in content if isinstance(c, dict)]
        return "\n".join(p for p in parts if p)


def _measured(body: dict[str, Any], earlier: list[str], output: str) -> Usage:
    """Usage of one request, measured: ~4 characters a token; the longest prefix shared with
    an earlier request is what a prefix cache would have served."""
    # In the order providers cache a prompt: tools, system, then the conversation.
    text = json.dumps([body.get(k) for k in ("tools", "system", "instructions", "messages",
                                             "input")])  # fmt: skip
    shared = 0
    for other in earlier:
        n = min(len(text), len(other))
        i = next((j for j in range(n) if text[j] != other[j]), n)
        shared = max(shared, i)
    earlier.append(text)
    return Usage(input_tokens=max(1, len(text) // 4), cached_tokens=shared // 4,
                 output_tokens=max(1, len(output) // 4))


def tokens(text: str) -> int:
    """The stand-in tokenizer: 4 characters a token."""
    return -(-len(text) // 4)


def _overflow(flavor: str, prompt: int, n_ctx: int, max_tokens: int) -> dict[str, Any]:
    if flavor == "llama.cpp":
        message = (f"request ({prompt} tokens) exceeds the available context size "
                   f"({n_ctx} tokens)")  # fmt: skip
        return {"error": {"code": 400, "message": message, "type": "exceed_context_size_error",
                          "n_prompt_tokens": prompt, "n_ctx": n_ctx}}  # fmt: skip
    if flavor == "llama-cpp-python":
        message = (f"This model's maximum context length is {n_ctx} tokens. However, you "
                   f"requested {prompt + max_tokens} tokens ({prompt} in the messages, "
                   f"{max_tokens} in the completion). Please reduce the length of the "
                   "messages or completion.")  # fmt: skip
        return {"error": {"message": message, "type": "invalid_request_error",
                          "param": "messages", "code": "context_length_exceeded"}}  # fmt: skip
    return {"error": {"message": "the input length exceeds the context length",
                      "type": "invalid_request_error", "param": None, "code": None}}  # fmt: skip


class FakeLLM:
    def __init__(
        self, replies: list[Reply | str] | None = None,
        respond: Callable[[Seen], Reply | str] | None = None, count_tokens: bool = False,
        flavor: str = "", n_ctx: int = 0,
    ) -> None:  # fmt: skip
        self.replies = [Reply(r) if isinstance(r, str) else r for r in (replies or [])]
        self.flavor = flavor
        self.n_ctx = n_ctx
        self.loaded = False  # Ollama: a model is loaded by its first chat request
        self.answered = 0
        self.respond = respond
        self.count_tokens = count_tokens
        self.requests: list[Seen] = []
        self._bodies: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The Anthropic base_url; the OpenAI one is `openai_url`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, seen: Seen) -> Reply:
        if self.respond is not None:
            with self._lock:
                self.requests.append(seen)
            reply = self.respond(seen)
            return Reply(reply) if isinstance(reply, str) else reply
        with self._lock:
            index = self.answered  # refused requests do not use up the script
            self.answered += 1
            self.requests.append(seen)
            if not self.replies:
                return Reply("no edit")
            return self.replies[min(index, len(self.replies) - 1)]

    def _usage(self, seen: Seen, reply: Reply, text: str, counts: tuple[int, int]) -> Usage:
        if not self.count_tokens:
            # Anthropic reports cache reads beside its input tokens, OpenAI within them.
            extra = reply.cached_tokens if seen.api == "anthropic" else 0
            return Usage(counts[0] + extra, counts[1], reply.cached_tokens)
        calls = json.dumps([c.arguments for c in reply.tool_calls])
        with self._lock:
            return _measured(seen.body, self._bodies, text + calls)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if fake.flavor == "llama.cpp" and self.path == "/props":
                    settings = {"n_ctx": fake.n_ctx, "temperature": 0.8, "n_predict": -1}
                    self._json(200, {"default_generation_settings": settings,
                                     "total_slots": 1, "model_path": "fake.gguf"})  # fmt: skip
                elif fake.flavor == "ollama" and self.path == "/api/ps":
                    models = [{"name": "fake:latest", "model": "fake:latest", "size": 1,
                               "context_length": fake.n_ctx}] if fake.loaded else []  # fmt: skip
                    self._json(200, {"models": models})
                elif fake.flavor == "vllm" and self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model",
                               "owned_by": "vllm", "max_model_len": fake.n_ctx}]})  # fmt: skip
                elif fake.flavor == "llama-cpp-python" and self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model",
                               "owned_by": "me", "permissions": []}]})  # fmt: skip
                else:
                    self._json(404, {"detail": "Not Found"} if fake.flavor else
                               {"error": {"message": f"no route {self.path}"}})  # fmt: skip

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.path, headers, json.loads(raw or b"{}"), time.monotonic())
                if fake.flavor == "ollama" and self.path == "/api/show":
                    self._json(200, {"parameters": "stop \"<|im_end|>\"", "model_info": {
                        "llama.context_length": 8192}})  # fmt: skip
                    return
                refusal = self._refusal(seen)
                if refusal is not None:
                    with fake._lock:
                        fake.requests.append(seen)
                    self._json(*refusal)
                    return
                reply = fake._next(seen)
                seen.reply = reply
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.reset:
                    self.close_connection = True
                    self.connection.close()
                    return
                try:
                    self._answer(reply, seen)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before we answered

            def _answer(self, reply: Reply, seen: Seen) -> None:
                api = seen.api
                if reply.status != 200:
                    body = json.dumps(error_body(api, reply.status)).encode()
                    extra = {"retry-after": reply.retry_after} if reply.retry_after else {}
                    self._send(reply.status, body, "application/json", extra)
                    return
                if api is None:
                    data = json.dumps({"error": {"message": f"no route {self.path}"}}).encode()
                    self._send(404, data, "application/json")
                    return
                text = reply.text.replace("{KEY}", seen.key)
                text, counts, finish = self._limit(reply, seen, text)
                seen.usage = fake._usage(seen, reply, text, counts)
                answer = Answer(text, reply.tool_calls, finish == "length", seen.usage)
                if api == "chat":
                    fake.loaded = True
                model = str(seen.body.get("model", "fake"))
                data, kind = encode(api, answer, model, bool(seen.body.get("stream")))
                self._send(200, data, kind)

            def _refusal(self, seen: Seen) -> tuple[int, dict[str, Any]] | None:
                """What the simulated server refuses before generating, in its own words."""
                fmt = seen.body.get("response_format")
                if fake.flavor == "llama-cpp-python" and isinstance(fmt, dict):
                    if fmt.get("type") not in ("text", "json_object"):
                        message = (
                            "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
                            "'response_format', 'type'), 'msg': \"Input should be 'text' or "
                            f"'json_object'\", 'input': '{fmt.get('type')}', 'ctx': {{'expected': "
                            "\"'text' or 'json_object'\"}}\n\n  File \"llama_cpp/server/app.py\","
                            " line 376, in create_chat_completion\n    POST /v1/chat/completions"
                        )
                        return 500, {"error": {"message": message, "type": "internal_server_error",
                                               "param": None, "code": None}}  # fmt: skip
                if not fake.n_ctx or not seen.path.endswith("/chat/completions"):
                    return None
                prompt = seen.prompt_tokens
                if prompt >= fake.n_ctx:
                    max_tokens = int(seen.body.get("max_tokens") or 0)
                    return 400, _overflow(fake.flavor, prompt, fake.n_ctx, max_tokens)
                return None

            def _limit(self, reply: Reply, seen: Seen, text: str) -> tuple[str, tuple[int, int],
                                                                             str]:  # fmt: skip
                """The reply as the model's limits leave it: cut off at max_tokens or where the
                context ends, with the token counts a server reports."""
                if not fake.n_ctx:
                    # A reply cut off at max_tokens has used all of them.
                    cut = int(seen.body.get("max_tokens") or 200) if reply.truncated else 200
                    counts = (reply.input_tokens or 1000, reply.output_tokens or cut)
                    return text, counts, "length" if reply.truncated else "stop"
                prompt = seen.prompt_tokens
                room = fake.n_ctx - prompt
                asked = seen.body.get("max_tokens")
                limit = min(room, int(asked)) if asked else room
                out = tokens(text)
                if out > limit or reply.truncated:
                    text, out = text[: limit * 4], min(out, limit)
                    return text, (prompt, out), "length"
                return text, (reply.input_tokens or prompt, reply.output_tokens or out), "stop"

            def _send(self, status: int, body: dict[str, Any], extra: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _json(self, status: int, body: dict[str, Any]) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, data: bytes, kind: str, extra: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler
