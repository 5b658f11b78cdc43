"""A fake model provider for tests: a real HTTP server on 127.0.0.1 (http.server in a thread)
that speaks the OpenAI Chat Completions and Anthropic Messages wire formats, so the official
SDKs can be driven against it end to end.

Replies are scripted, one per request, in order (the last one repeats once the script is
used up), and can inject faults: an HTTP error status with Retry-After, a slow answer (past
the client's timeout), a dropped connection, or a reply cut off at the token limit. Every
request is recorded with its headers, body and arrival time.

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
    input_tokens: int | None = None  # default: counted when simulating a model, else 1000
    output_tokens: int | None = None  # default: counted when simulating a model, else 200
    # Prompt tokens read from the cache: OpenAI's usage.prompt_tokens_details.cached_tokens
    # (part of prompt_tokens), Anthropic's usage.cache_read_input_tokens (not in input_tokens).
    cached_tokens: int = 0


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
    def prompt_tokens(self) -> int:
        """The request's size in the stand-in tokenizer, 8 tokens of template a message."""
        messages = len(self.body.get("messages", [])) + (1 if self.body.get("system") else 0)
        return tokens(self.prompt) + 8 * messages

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


def _openai_body(
    reply: Reply, model: str, text: str, tokens: tuple[int, int], finish: str
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "total_tokens": tokens[0] + tokens[1],
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
        },
    }


def _anthropic_body(
    reply: Reply, model: str, text: str, tokens: tuple[int, int], finish: str
) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if finish == "length" else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "cache_read_input_tokens": reply.cached_tokens,
        },
    }


def _error_body(path: str, status: int) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "api_error"
    message = f"fake provider says {status}"
    if path.endswith("/messages"):
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": None}}


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
        self, replies: list[Reply | str] | None = None, flavor: str = "", n_ctx: int = 0
    ) -> None:
        self.replies = [Reply(r) if isinstance(r, str) else r for r in (replies or [])]
        self.flavor = flavor
        self.n_ctx = n_ctx
        self.loaded = False  # Ollama: a model is loaded by its first chat request
        self.answered = 0
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
            index = self.answered  # refused requests do not use up the script
            self.answered += 1
            self.requests.append(seen)
            if not self.replies:
                return Reply("no edit")
            return self.replies[min(index, len(self.replies) - 1)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if fake.flavor == "llama.cpp" and self.path == "/props":
                    settings = {"n_ctx": fake.n_ctx, "temperature": 0.8, "n_predict": -1}
                    self._send(200, {"default_generation_settings": settings,
                                     "total_slots": 1, "model_path": "fake.gguf"})  # fmt: skip
                elif fake.flavor == "ollama" and self.path == "/api/ps":
                    models = [{"name": "fake:latest", "model": "fake:latest", "size": 1,
                               "context_length": fake.n_ctx}] if fake.loaded else []  # fmt: skip
                    self._send(200, {"models": models})
                elif fake.flavor == "vllm" and self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model",
                               "owned_by": "vllm", "max_model_len": fake.n_ctx}]})  # fmt: skip
                elif fake.flavor == "llama-cpp-python" and self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model",
                               "owned_by": "me", "permissions": []}]})  # fmt: skip
                else:
                    self._send(404, {"detail": "Not Found"} if fake.flavor else
                               {"error": {"message": f"no route {self.path}"}})  # fmt: skip

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.path, headers, json.loads(raw or b"{}"), time.monotonic())
                if fake.flavor == "ollama" and self.path == "/api/show":
                    self._send(200, {"parameters": "stop \"<|im_end|>\"", "model_info": {
                        "llama.context_length": 8192}})  # fmt: skip
                    return
                refusal = self._refusal(seen)
                if refusal is not None:
                    with fake._lock:
                        fake.requests.append(seen)
                    self._send(*refusal)
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
                if reply.status != 200:
                    body = _error_body(self.path, reply.status)
                    extra = {"retry-after": reply.retry_after} if reply.retry_after else {}
                    self._send(reply.status, body, extra)
                    return
                model = str(seen.body.get("model", "fake"))
                text = reply.text.replace("{KEY}", seen.key)
                text, counts, finish = self._limit(reply, seen, text)
                if self.path.endswith("/messages"):
                    self._send(200, _anthropic_body(reply, model, text, counts, finish))
                elif self.path.endswith("/chat/completions"):
                    fake.loaded = True
                    self._send(200, _openai_body(reply, model, text, counts, finish))
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

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

        return Handler
