"""How many tokens one request may use.

The model's context window comes from the server where it tells (llama.cpp's `/props`,
vLLM's `/v1/models`, Ollama's `/api/ps` and `/api/show`), else from
`[proposer].context_tokens`, else from a safe default for the kind of endpoint; a
context-length refusal teaches the real size. Prompt
tokens are estimated from characters, calibrated on the token counts the server reports, so
that a prompt is never sent that does not fit. The output limit of a request is what the
window leaves once the prompt is placed (never more than `[proposer].max_tokens`).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Hosted APIs: the smallest window of the models their names cover.
HOSTED = {"anthropic": 200_000, "openai": 128_000}
# A local server that does not say: Ollama's and llama.cpp's default context.
LOCAL_DEFAULT = 4096
# Any other OpenAI-compatible endpoint (a router, a hosted vLLM) that does not say.
REMOTE_DEFAULT = 32_768
# Before the first measured call: fewer characters per token than English or code has in any
# common tokenizer, so the first prompt is over- rather than under-estimated.
CHARS_PER_TOKEN = 2.8
SAFETY = 1.06  # estimates are scaled up by this much on top of the calibration
PER_MESSAGE = 12  # chat-template tokens around each message
RESERVE = 32  # tokens kept free between the prompt and the output
PROBE_TIMEOUT_S = 3.0


@dataclass
class Window:
    """A context window in tokens and where the number came from."""

    tokens: int
    source: str
    # False when the server may tell more later (Ollama reports a model's context only
    # once it is loaded): ask again after the first call.
    final: bool = True


@dataclass
class Overflow:
    """What a context-length refusal said: the window and the prompt's size, when given."""

    context: int | None
    prompt: int | None


def is_local(base_url: str) -> bool:
    """Whether `base_url` is on this machine or a private network (Ollama, llama.cpp, LM
    Studio): a server that computes one request at a time and keeps computing a request its
    client gave up on."""
    host = urlsplit(base_url).hostname or ""
    if host in ("localhost", "") or host.endswith((".local", ".localhost", ".lan")):
        return bool(base_url)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def _server_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _get(url: str, body: dict[str, Any] | None = None, key: str = "") -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("content-type", "application/json")
    if key:
        request.add_header("authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


def _positive(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and value > 0 else None


def llama_cpp_context(root: str, key: str = "") -> int | None:
    """llama.cpp's `llama-server` reports the context of its slots at GET /props."""
    props = _get(root + "/props", key=key)
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    if isinstance(settings, dict) and _positive(settings.get("n_ctx")):
        return _positive(settings.get("n_ctx"))
    return _positive(props.get("n_ctx"))


def vllm_context(base_url: str, model: str, key: str = "") -> int | None:
    """vLLM lists `max_model_len` with each model at GET /v1/models."""
    listed = _get(base_url.rstrip("/") + "/models", key=key)
    data = listed.get("data") if isinstance(listed, dict) else None
    models = [m for m in data or [] if isinstance(m, dict) and _positive(m.get("max_model_len"))]
    named = [m for m in models if m.get("id") == model] or (models if len(models) == 1 else [])
    return _positive(named[0]["max_model_len"]) if named else None


def ollama_context(root: str, model: str) -> tuple[int | None, bool]:
    """Ollama: the context of the loaded model (GET /api/ps, `context_length`), else a
    `num_ctx` set in its Modelfile (POST /api/show, `parameters`). The bool says whether
    the number is the one the server runs with."""
    ps = _get(root + "/api/ps")
    if not isinstance(ps, dict):
        return None, False
    names = {model, model + ":latest"}
    for m in ps.get("models") or []:
        if isinstance(m, dict) and (m.get("name") in names or m.get("model") in names):
            found = _positive(m.get("context_length"))
            if found:
                return found, True
    show = _get(root + "/api/show", {"model": model})
    params = str(show.get("parameters") or "") if isinstance(show, dict) else ""
    m = re.search(r"^\s*num_ctx\s+(\d+)", params, re.MULTILINE)
    return (int(m.group(1)), True) if m else (None, False)


def discover(provider: str, base_url: str, model: str, configured: int, key: str = "") -> Window:
    """The context window for requests to `model`; never raises."""
    if configured:
        return Window(configured, "[proposer].context_tokens")
    if not base_url or provider == "anthropic":  # the Messages API does not say
        return Window(HOSTED.get(provider, REMOTE_DEFAULT), f"{provider}'s smallest window")
    root = _server_root(base_url)
    local = is_local(base_url)
    for ask, source in (
        (lambda: llama_cpp_context(root, key), "llama.cpp GET /props"),
        (lambda: vllm_context(base_url, model, key), "vLLM GET /v1/models"),
    ):
        try:
            found = ask()
        except Exception:  # not that kind of server, or not reachable: try the next kind
            continue
        if found:
            return Window(found, source)
    if local:
        try:
            found, sure = ollama_context(root, model)
            if found and sure:
                return Window(found, "Ollama /api/ps or /api/show")
            return Window(LOCAL_DEFAULT, "Ollama's default (model not loaded yet)", final=False)
        except Exception:
            pass
        return Window(LOCAL_DEFAULT, "default for a local server that does not report it")
    return Window(REMOTE_DEFAULT, "default for a server that does not report it")


_OVERFLOW = [
    # OpenAI, vLLM and llama-cpp-python: "This model's maximum context length is 4096
    # tokens. However, you requested 12303 tokens (4111 in the messages, 8192 in the
    # completion)."
    re.compile(r"maximum context length is (?P<ctx>\d+) tokens"),
    # llama.cpp's llama-server: "request (4476 tokens) exceeds the available context size
    # (4096 tokens)"; older builds: "the request exceeds the available context size, try
    # increasing it".
    re.compile(
        r"request \((?P<prompt>\d+) tokens\) exceeds the available context size "
        r"\((?P<ctx>\d+) tokens\)"
    ),  # fmt: skip
    re.compile(r"exceeds the available context size"),
    # Anthropic: "prompt is too long: 215000 tokens > 200000 maximum".
    re.compile(r"prompt is too long: (?P<prompt>\d+) tokens > (?P<ctx>\d+) maximum"),
    # Ollama: "the input length exceeds the context length".
    re.compile(r"input length exceeds the context length"),
    re.compile(r"context_length_exceeded|exceed_context_size_error|context window"),
]


_PROMPT_SIZE = re.compile(r"\((\d+) in the messages|messages resulted in (\d+) tokens")


def parse_overflow(message: str) -> Overflow | None:
    """The context-length refusal in an error message (of any server above), or None."""
    for pattern in _OVERFLOW:
        m = pattern.search(message)
        if m is None:
            continue
        groups = {k: v for k, v in m.groupdict().items() if v}
        prompt, ctx = groups.get("prompt"), groups.get("ctx")
        if prompt is None:
            said = _PROMPT_SIZE.search(message)
            prompt = (said.group(1) or said.group(2)) if said else None
        return Overflow(int(ctx) if ctx else None, int(prompt) if prompt else None)
    return None


class TokenCounter:
    """Token estimates from character counts, calibrated on what the server counted: the
    densest text seen so far (most tokens per character) sets the rate. Thread-safe."""

    def __init__(self) -> None:
        self.chars_per_token = CHARS_PER_TOKEN
        self.measured = False
        self._lock = threading.Lock()

    def estimate(self, *texts: str) -> int:
        chars = sum(len(t) for t in texts)
        return math.ceil(chars / self.chars_per_token * SAFETY) + PER_MESSAGE * len(texts)

    def observe(self, chars: int, tokens: int, messages: int = 2) -> None:
        """A request of `chars` characters in `messages` messages was `tokens` tokens."""
        text_tokens = tokens - PER_MESSAGE * messages
        if chars < 200 or text_tokens <= 0:
            return  # too small to say anything about the tokenizer
        rate = chars / text_tokens
        with self._lock:
            if not self.measured or rate < self.chars_per_token:
                self.chars_per_token = rate
            self.measured = True


def output_room(window: int, prompt_tokens: int, max_tokens: int) -> int:
    """The output limit for a prompt of `prompt_tokens` (estimated): what the window leaves,
    at most `max_tokens`; 0 or less when the prompt alone does not fit."""
    return min(max_tokens, window - prompt_tokens - RESERVE)
