"""A fake model provider for tests: a real HTTP server on 127.0.0.1 (http.server in a thread)
that speaks the OpenAI Chat Completions and Anthropic Messages wire formats, so the official
SDKs can be driven against it end to end.

Replies are scripted, one per request, in order (the last one repeats once the script is
used up), and can inject faults: an HTTP error status with Retry-After, a slow answer (past
the client's timeout), a dropped connection, or a reply cut off at the token limit. Every
request is recorded with its headers, body and arrival time.

A reply text may contain `{KEY}`, replaced by the API key the request carried: a model
that echoes the key, for redaction tests.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    reply: Reply = field(default_factory=Reply)

    @property
    def key(self) -> str:
        auth = self.headers.get("authorization", "")
        return self.headers.get("x-api-key") or auth.removeprefix("Bearer ").strip()

    @property
    def prompt(self) -> str:
        """System and user text of the request, as one string."""
        system = self.body.get("system")
        parts = [system] if isinstance(system, str) else []
        if isinstance(system, list):
            parts += [c.get("text", "") for c in system if isinstance(c, dict)]
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [c.get("text", "") for c in content if isinstance(c, dict)]
        return "\n".join(parts)


def _openai_body(reply: Reply, model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length" if reply.truncated else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
        },
    }


def _anthropic_body(reply: Reply, model: str, text: str) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if reply.truncated else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
    }


def _error_body(path: str, status: int) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "api_error"
    message = f"fake provider says {status}"
    if path.endswith("/messages"):
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": None}}


class FakeLLM:
    def __init__(self, replies: list[Reply | str] | None = None) -> None:
        self.replies = [Reply(r) if isinstance(r, str) else r for r in (replies or [])]
        self.requests: list[Seen] = []
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
        with self._lock:
            index = len(self.requests)
            self.requests.append(seen)
            if not self.replies:
                return Reply("no edit")
            return self.replies[min(index, len(self.replies) - 1)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
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
                if reply.status != 200:
                    body = _error_body(self.path, reply.status)
                    extra = {"retry-after": reply.retry_after} if reply.retry_after else {}
                    self._send(reply.status, body, extra)
                    return
                model = str(seen.body.get("model", "fake"))
                text = reply.text.replace("{KEY}", seen.key)
                if self.path.endswith("/messages"):
                    self._send(200, _anthropic_body(reply, model, text))
                elif self.path.endswith("/chat/completions"):
                    self._send(200, _openai_body(reply, model, text))
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def _send(self, status: int, body: dict[str, Any], extra: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler
