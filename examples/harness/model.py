"""The task agent's model client. LOCKED: part of the evaluation, not of the surface.

Which model the task agent uses is a setting of the study, not something a proposal may
change (a harness that switched itself to a bigger model would "improve" by spending more).
So the client lives here and `evaluate.py` hands it to `harness.triage` as `model`.

Offline (no HARNESS_API_KEY) there is no model and the harness uses its rules.

With HARNESS_API_KEY set, the provider, model and base URL come from, in order:
HARNESS_PROVIDER / HARNESS_MODEL / HARNESS_BASE_URL, else `[proposer]` in overnight.toml,
so by default the task agent is paired with the meta-agent (same provider, same model):
the meta-agent's rewrites of the instructions are tuned to the model that reads them.

The task agent has its own key variable because overnight removes the proposer's key
(ANTHROPIC_API_KEY / OPENAI_API_KEY) from every run; `[run] pass_env` lets this one in.
SDKs are imported only when a key is set, so the offline study needs neither.
"""

from __future__ import annotations

import os
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_MODEL = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4.1"}
MAX_TOKENS = 300  # a triage answer is one small JSON object; Anthropic requires a limit
# No temperature and no OpenAI token limit: reasoning models reject both, and a short JSON
# answer needs neither. Model answers vary a little between runs; see README.md.

Model = Callable[[str, str], str]


def _proposer_settings(root: Path) -> dict[str, Any]:
    path = root / "overnight.toml"
    try:
        return tomllib.loads(path.read_text()).get("proposer", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def settings(root: Path | None = None) -> dict[str, str] | None:
    """Provider, model and base URL of the task agent, or None offline."""
    key = os.environ.get("HARNESS_API_KEY", "")
    if not key:
        return None
    paired = _proposer_settings(root or Path.cwd())
    provider = os.environ.get("HARNESS_PROVIDER") or paired.get("provider") or "anthropic"
    if provider not in DEFAULT_MODEL:
        raise SystemExit(f"HARNESS_PROVIDER: expected anthropic or openai, got {provider!r}")
    if provider != (paired.get("provider") or "anthropic"):
        paired = {}  # another provider: the proposer's model name would mean nothing there
    model = os.environ.get("HARNESS_MODEL") or paired.get("model") or DEFAULT_MODEL[provider]
    base_url = os.environ.get("HARNESS_BASE_URL") or paired.get("base_url") or ""
    return {"provider": provider, "model": model, "base_url": base_url, "key": key}


class Usage:
    """Token counts over all calls of one evaluation (calls run in threads)."""

    def __init__(self) -> None:
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self._lock = threading.Lock()

    def add(self, input_tokens: int | None, output_tokens: int | None) -> None:
        with self._lock:
            self.calls += 1
            self.input_tokens += input_tokens or 0
            self.output_tokens += output_tokens or 0


def load_model(usage: Usage, root: Path | None = None) -> tuple[Model | None, str]:
    """The task agent's model as `complete(system, user) -> text`, and a line saying which."""
    s = settings(root)
    if s is None:
        return None, "rules (offline: no HARNESS_API_KEY)"
    base_url = s["base_url"] or None
    if s["provider"] == "anthropic":
        import anthropic

        anthropic_client = anthropic.Anthropic(api_key=s["key"], base_url=base_url)

        def complete(system: str, user: str) -> str:
            resp = anthropic_client.messages.create(
                model=s["model"], max_tokens=MAX_TOKENS, system=system,
                messages=[{"role": "user", "content": user}],
            )  # fmt: skip
            usage.add(resp.usage.input_tokens, resp.usage.output_tokens)
            return "".join(getattr(b, "text", "") for b in resp.content)

    else:
        import openai

        openai_client = openai.OpenAI(api_key=s["key"], base_url=base_url)

        def complete(system: str, user: str) -> str:
            resp = openai_client.chat.completions.create(
                model=s["model"],
                messages=[{"role": "system", "content": system},
                          {"role": "user", "content": user}],
            )  # fmt: skip
            u = resp.usage
            usage.add(u.prompt_tokens if u else 0, u.completion_tokens if u else 0)
            return resp.choices[0].message.content or ""

    return complete, f"model {s['provider']}:{s['model']}"
