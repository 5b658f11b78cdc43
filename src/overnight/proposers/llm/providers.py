"""Model calls through the official SDKs (anthropic, openai), and their retries.

The SDKs' own retries are switched off (`max_retries=0`): overnight retries itself so that
every attempt is counted and logged with the proposal, waits with exponential backoff and
jitter, and honours the server's Retry-After. The SDKs are imported lazily: they are heavy,
and optional (`pip install 'overnight[llm]'`).
"""

from __future__ import annotations

import contextlib
import email.utils
import importlib
import importlib.util
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from overnight.errors import UsageError
from overnight.proposers.llm.budget import Overflow, parse_overflow

BACKOFF_CAP_S = 60.0
# A server may ask for a long pause; beyond this we would rather fail the experiment and
# let the loop go on (the next proposal tries again).
RETRY_AFTER_CAP_S = 300.0
SDK_MISSING = (
    "[proposer].provider = {provider!r} needs the {package!r} package: pip install 'overnight[llm]'"
)


@dataclass
class Completion:
    text: str
    finish_reason: str  # the provider's word: "stop"/"length" or "end_turn"/"max_tokens"
    truncated: bool  # stopped by the output token limit: the reply is incomplete
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class Request:
    """One call: the system message, the user message in a stable head and a volatile tail
    (prompt caching marks the end of the head), and for a repair turn the model's own reply
    and what was wrong with it."""

    system: str
    stable: str
    volatile: str
    max_tokens: int
    temperature: float | None = None
    schema: dict[str, Any] | None = None  # constrain the reply to this JSON schema
    turns: list[tuple[str, str]] = field(default_factory=list)  # (role, text) after the user
    cache: bool = True  # mark the stable prefix for provider prompt caching

    @property
    def user(self) -> str:
        return self.stable + "\n\n" + self.volatile

    def chars(self) -> int:
        return len(self.system) + len(self.user) + sum(len(t) for _, t in self.turns)


@dataclass
class Fault:
    message: str
    retryable: bool
    retry_after: float | None = None
    overflow: Overflow | None = None  # the request did not fit the model's context


class CallFailed(Exception):
    """The call failed for good: not retryable, or still failing after the retries."""

    def __init__(self, message: str, attempts: int, fault: Fault | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.fault = fault


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_delay(
    attempt: int, retry_after: float | None, base_s: float, rng: random.Random
) -> float:
    """The wait after failed attempt `attempt` (0-based): the server's Retry-After plus up to
    10% (never less than asked), else exponential backoff with jitter in [50%, 100%]."""
    if retry_after is not None:
        return min(RETRY_AFTER_CAP_S, retry_after) * (1 + 0.1 * rng.random())
    return min(BACKOFF_CAP_S, base_s * 2**attempt) * (0.5 + 0.5 * rng.random())


def call_with_retries(
    request: Callable[[], Completion],
    classify: Callable[[BaseException], Fault],
    max_retries: int,
    base_s: float,
    rng: random.Random,
    sleep: Callable[[float], Any] = time.sleep,
    log: list[dict[str, Any]] | None = None,
) -> tuple[Completion, int]:
    """The completion and how many attempts it took; CallFailed when it never came."""
    log = [] if log is None else log
    for attempt in range(max_retries + 1):
        try:
            return request(), attempt + 1
        except Exception as exc:  # classified below; a bug reads as a non-retryable fault
            fault = classify(exc)
            entry: dict[str, Any] = {"attempt": attempt + 1, "error": fault.message}
            log.append(entry)
            if not fault.retryable or attempt == max_retries:
                raise CallFailed(fault.message, attempt + 1, fault) from exc
            wait = retry_delay(attempt, fault.retry_after, base_s, rng)
            entry["wait_s"] = round(wait, 3)
            if fault.retry_after is not None:
                entry["retry_after"] = fault.retry_after
            sleep(wait)
    raise AssertionError("unreachable")


def _error_text(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(exc, "message", "") or exc)


class Provider(ABC):
    """One SDK client; `complete` makes one attempt, `classify` judges its failures.

    The SDK is imported in a background thread from the start: importing it takes a second
    or two, which then overlaps with the baseline run instead of delaying the first call."""

    def __init__(self, api_key: str, base_url: str, timeout: float, local: bool = False) -> None:
        self.timeout = timeout
        self.base_url = base_url
        # A local server keeps computing a request its client gave up on: a timed-out
        # request is not sent again (it would queue behind the abandoned one).
        self.local = local
        self._api_key = api_key
        self._client: Any = None
        self._sdk: Any = None
        self._lock = threading.Lock()

    def _start(self, package: str, cls: str) -> None:
        if importlib.util.find_spec(package) is None:
            raise UsageError(SDK_MISSING.format(provider=package, package=package))
        self._package, self._cls = package, cls
        threading.Thread(target=self._warm, name=f"import-{package}", daemon=True).start()

    def _warm(self) -> None:
        # A failure here is repeated by the first call, which reports it with the proposal.
        with contextlib.suppress(Exception):
            self._load()

    def _load(self) -> None:
        with self._lock:  # the warm-up thread and the first call may both get here
            if self._client is not None:
                return
            sdk = importlib.import_module(self._package)
            kwargs: dict[str, Any] = {
                "api_key": self._api_key, "timeout": self.timeout, "max_retries": 0,
            }  # fmt: skip
            if self.base_url:
                kwargs["base_url"] = self.base_url
            self._client = getattr(sdk, self._cls)(**kwargs)
            self._sdk = sdk

    @property
    def client(self) -> Any:
        self._load()
        return self._client

    @property
    def sdk(self) -> Any:
        self._load()
        return self._sdk

    @abstractmethod
    def complete(self, model: str, request: Request) -> Completion:
        """One attempt; `request.temperature` None leaves the model's default."""

    def classify(self, exc: BaseException) -> Fault:
        sdk = self.sdk
        if isinstance(exc, sdk.APITimeoutError):
            if self.local:
                return Fault(
                    f"no answer within the timeout of {self.timeout:g}s; not resent "
                    "while the local server may still be computing it",
                    False,
                )
            return Fault(f"no answer within the timeout of {self.timeout:g}s", True)
        if isinstance(exc, sdk.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            return Fault(f"connection failed ({detail})", True)
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            headers = getattr(getattr(exc, "response", None), "headers", None)
            text = " ".join(_error_text(exc).split())
            overflow = parse_overflow(text)
            if overflow is not None:  # llama-cpp-python answers 500 on some overflows
                return Fault(f"HTTP {status}: {text[:300]}", False, overflow=overflow)
            retryable = status in (408, 409, 429) or status >= 500
            return Fault(f"HTTP {status}: {text[:300]}", retryable, parse_retry_after(headers))
        return Fault(f"{type(exc).__name__}: {exc}", False)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class OpenAIProvider(Provider):
    """Chat Completions: OpenAI itself, or any compatible server through `base_url`.

    A JSON schema goes as `response_format` {"type": "json_schema"} (OpenAI, llama.cpp's
    llama-server, Ollama, vLLM, LM Studio); a server that refuses that form gets
    {"type": "json_object", "schema": ...} (llama-cpp-python, which turns it into a llama.cpp
    grammar; it refuses the other form with HTTP 500), and one that refuses both gets the
    prompt's instructions alone."""

    # Reasoning models take max_completion_tokens and only the default temperature.
    REASONING = ("o1", "o3", "o4", "gpt-5")
    SCHEMA_MODES = ("json_schema", "json_object", "none")

    def __init__(self, api_key: str, base_url: str, timeout: float, local: bool = False) -> None:
        super().__init__(api_key, base_url, timeout, local)
        self.schema_mode = self.SCHEMA_MODES[0]
        self._start("openai", "OpenAI")

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        if self.schema_mode == "json_schema":
            return {"type": "json_schema",
                    "json_schema": {"name": "edit", "schema": schema, "strict": True}}  # fmt: skip
        if self.schema_mode == "json_object":
            return {"type": "json_object", "schema": schema}
        return None

    def complete(self, model: str, request: Request) -> Completion:
        messages = [
            {"role": "system", "content": request.system},
            {"role": "user", "content": request.user},
            *({"role": role, "content": text} for role, text in request.turns),
        ]
        params: dict[str, Any] = {"model": model, "messages": messages}
        official = not self.base_url
        if official and model.startswith(self.REASONING):
            params["max_completion_tokens"] = request.max_tokens
        else:
            # Compatible servers (Ollama, vLLM, llama.cpp) all know max_tokens.
            params["max_tokens"] = request.max_tokens
            if request.temperature is not None:
                params["temperature"] = request.temperature
        while True:
            fmt = self._response_format(request.schema) if request.schema else None
            if fmt is not None:
                params["response_format"] = fmt
            try:
                resp = self.client.chat.completions.create(**params)
                break
            except self.sdk.APIStatusError as exc:
                if fmt is None or not self._refused_format(exc):
                    raise
                params.pop("response_format", None)
                self.schema_mode = self.SCHEMA_MODES[self.SCHEMA_MODES.index(self.schema_mode) + 1]
        choice = resp.choices[0] if resp.choices else None
        text = (choice.message.content or "") if choice is not None else ""
        finish = (choice.finish_reason or "") if choice is not None else "no choices"
        usage: dict[str, int] = {}
        if resp.usage is not None:
            details = getattr(resp.usage, "prompt_tokens_details", None)
            cached = int(getattr(details, "cached_tokens", 0) or 0)
            usage = {
                "input_tokens": int(resp.usage.prompt_tokens or 0) - cached,
                "output_tokens": int(resp.usage.completion_tokens or 0),
            }
            if cached:
                usage["cache_read_input_tokens"] = cached
        return Completion(text, finish, finish == "length", usage)

    @staticmethod
    def _refused_format(exc: Any) -> bool:
        """An error about the response_format itself, not about the prompt: a 400 or 422, or
        llama-cpp-python's 500 wrapping its request validation error."""
        text = _error_text(exc).lower() + str(getattr(exc, "body", "")).lower()
        return (
            exc.status_code in (400, 422, 500)
            and ("response_format" in text or "json_schema" in text)
            and parse_overflow(text) is None
        )


class AnthropicProvider(Provider):
    """The Messages API, with the system message and the prompt's stable head marked for
    prompt caching (`cache_control`), so repeated calls read them at a tenth of the price."""

    def __init__(self, api_key: str, base_url: str, timeout: float, local: bool = False) -> None:
        super().__init__(api_key, base_url, timeout, local)
        self._start("anthropic", "Anthropic")

    def complete(self, model: str, request: Request) -> Completion:
        extra: dict[str, Any] = {}
        if request.temperature is not None:
            # Recent SDKs no longer list `temperature`; the API still reads it from the body.
            extra["extra_body"] = {"temperature": request.temperature}
        mark = {"cache_control": {"type": "ephemeral"}} if request.cache else {}
        system = [{"type": "text", "text": request.system, **mark}]
        user = [{"type": "text", "text": request.stable, **mark},
                {"type": "text", "text": request.volatile}]  # fmt: skip
        messages: list[dict[str, Any]] = [{"role": "user", "content": user}]
        messages += [{"role": role, "content": text} for role, text in request.turns]
        resp = self.client.messages.create(
            model=model, system=system, messages=messages, max_tokens=request.max_tokens,
            **extra,
        )  # fmt: skip
        text = "".join(getattr(b, "text", "") for b in resp.content if b.type == "text")
        u = resp.usage
        usage = {
            "input_tokens": int(u.input_tokens or 0),
            "output_tokens": int(u.output_tokens or 0),
        }
        for key in ("cache_creation_input_tokens", "cache_read_input_tokens"):
            if getattr(u, key, None):
                usage[key] = int(getattr(u, key))
        finish = resp.stop_reason or ""
        return Completion(text, finish, finish == "max_tokens", usage)


PROVIDERS: dict[str, type[Provider]] = {"openai": OpenAIProvider, "anthropic": AnthropicProvider}


def make_provider(
    name: str, api_key: str, base_url: str, timeout: float, local: bool = False
) -> Provider:
    if name not in PROVIDERS:
        raise UsageError(
            f"[proposer].provider: expected one of {', '.join(PROVIDERS)}, got {name!r}"
        )
    return PROVIDERS[name](api_key, base_url, timeout, local)
