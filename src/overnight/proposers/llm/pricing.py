"""What a model call costs: a built-in price table, overridable by `[proposer].prices`.

Prices are USD per million tokens, (input, output), as published by the providers. A model
name matches the longest table entry it starts with, so dated names
("claude-sonnet-4-5-20250929") and routed names ("anthropic/claude-sonnet-4-5") find their
family. Models without a known price (local ones, typically) cost 0 and say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Price = tuple[float, float]

PRICES: dict[str, Price] = {
    # Anthropic
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-3-opus": (15.0, 75.0),
    "claude-3-haiku": (0.25, 1.25),
    # OpenAI
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.4),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "o1": (15.0, 60.0),
    "o3": (2.0, 8.0),
    "o3-mini": (1.1, 4.4),
    "o4-mini": (1.1, 4.4),
}

# Anthropic bills prompt-cache writes and reads relative to the input price.
CACHE_WRITE = 1.25
CACHE_READ = 0.1
# OpenAI caches stable prefixes itself and bills the cached part at a model-dependent share.
OPENAI_CACHE_READ = {"gpt-5": 0.1, "gpt-4.1": 0.25, "o3": 0.25, "o4": 0.25, "gpt-4o": 0.5,
                     "o1": 0.5}  # fmt: skip


def cache_read_factor(model: str) -> float:
    """The share of the input price a cached prompt token costs."""
    name = model.rsplit("/", 1)[-1]
    hits = [k for k in OPENAI_CACHE_READ if name.startswith(k)]
    return OPENAI_CACHE_READ[max(hits, key=len)] if hits else CACHE_READ


def _lookup(model: str, table: Mapping[str, Sequence[float]]) -> Price | None:
    if model in table:
        pair = table[model]
        return float(pair[0]), float(pair[1])
    hits = [name for name in table if model.startswith(name)]
    if not hits:
        return None
    pair = table[max(hits, key=len)]
    return float(pair[0]), float(pair[1])


def price_for(model: str, overrides: Mapping[str, Sequence[float]] | None = None) -> Price | None:
    """(input, output) USD per 1M tokens for `model`; the user's `overrides` win."""
    names = [model]
    if "/" in model:  # OpenRouter-style "vendor/model"
        names.append(model.rsplit("/", 1)[1])
    # Routers spell versions with dots ("claude-sonnet-4.5") where the vendor uses dashes.
    names += [n.replace(".", "-") for n in names if "." in n]
    for table in (overrides or {}, PRICES):
        for name in names:
            found = _lookup(name, table)
            if found is not None:
                return found
    return None


def cost_usd(usage: Mapping[str, Any], price: Price | None, read: float = CACHE_READ) -> float:
    """The cost of one call's `usage` (input_tokens, output_tokens and cache counts);
    `read`: the share of the input price a cache-read token costs."""
    if price is None:
        return 0.0
    p_in, p_out = price
    tokens_in = float(usage.get("input_tokens", 0) or 0)
    tokens_out = float(usage.get("output_tokens", 0) or 0)
    written = float(usage.get("cache_creation_input_tokens", 0) or 0)
    cached = float(usage.get("cache_read_input_tokens", 0) or 0)
    total = tokens_in * p_in + tokens_out * p_out
    total += written * p_in * CACHE_WRITE + cached * p_in * read
    return total / 1_000_000


def saved_usd(usage: Mapping[str, Any], price: Price | None, read: float = CACHE_READ) -> float:
    """What prompt caching saved on one call: cache reads at full price minus what they and
    the cache writes cost (a write costs more than a plain input token)."""
    if price is None:
        return 0.0
    written = float(usage.get("cache_creation_input_tokens", 0) or 0)
    cached = float(usage.get("cache_read_input_tokens", 0) or 0)
    return (cached * (1 - read) - written * (CACHE_WRITE - 1)) * price[0] / 1_000_000
