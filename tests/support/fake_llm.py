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
    input_tokens: int = 1000
    output_tokens: int = 200
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


class FakeLLM:
    def __init__(
        self, replies: list[Reply | str] | None = None,
        respond: Callable[[Seen], Reply | str] | None = None, count_tokens: bool = False,
    ) -> None:  # fmt: skip
        self.replies = [Reply(r) if isinstance(r, str) else r for r in (replies or [])]
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
            index = len(self.requests)
            self.requests.append(seen)
            if not self.replies:
                return Reply("no edit")
            return self.replies[min(index, len(self.replies) - 1)]

    def _usage(self, seen: Seen, reply: Reply, text: str) -> Usage:
        if not self.count_tokens:
            return Usage(reply.input_tokens, reply.output_tokens)
        calls = json.dumps([c.arguments for c in reply.tool_calls])
        with self._lock:
            return _measured(seen.body, self._bodies, text + calls)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.path, headers, json.loads(raw or b"{}"), time.monotonic())
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
                seen.usage = fake._usage(seen, reply, text)
                answer = Answer(text, reply.tool_calls, reply.truncated, seen.usage)
                model = str(seen.body.get("model", "fake"))
                data, kind = encode(api, answer, model, bool(seen.body.get("stream")))
                self._send(200, data, kind)

            def _send(self, status: int, data: bytes, kind: str, extra: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler
