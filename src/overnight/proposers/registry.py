"""Choose a proposer by name, by `package.module:Class`, or by entry point."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from overnight.errors import UsageError
from overnight.isolation import secrets
from overnight.proposers.base import BaseProposer
from overnight.store.records import Proposal

BUILTIN = {
    "tune": "overnight.proposers.tune.tune:TuneProposer",
    "llm": "overnight.proposers.llm.llm:LLMProposer",
    "agent": "overnight.proposers.agent:AgentProposer",
}


def _load_object(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, but also a SyntaxError in the user's plug-in
        raise UsageError(
            f"proposer {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UsageError(f"proposer {spec!r}: {module_name!r} has no {attr!r}") from exc


def resolve_kind(kind: str, cfg: Any) -> tuple[str, str]:
    """The concrete proposer for `kind` and a sentence saying why it was chosen."""
    if kind != "auto":
        return kind, f"proposer: {kind}"
    from overnight.isolation.redact import proposer_key_env

    p = getattr(cfg, "proposer", None)
    key_env = proposer_key_env(p) if p is not None else ""
    if p is None or not key_env:
        return "tune", "proposer: tune (auto: no LLM configured)"
    from overnight.proposers.llm.llm import DEFAULT_MODEL

    model = f"{p.provider} {p.model or DEFAULT_MODEL.get(p.provider, '')}".strip()
    if secrets.get(key_env):
        return "llm", f"proposer: llm (auto: ${key_env} is set; {model})"
    if p.base_url and not p.api_key_env:  # a key-less local server, configured on purpose
        return "llm", f"proposer: llm (auto: server at {p.base_url} needs no key; {model})"
    return "tune", f"proposer: tune (auto: ${key_env} is not set, so no LLM)"


def load_proposer(kind: str, cfg: Any, seed: int = 0) -> tuple[BaseProposer, str]:
    """Instantiate the proposer; returns it with a line that says which one and why."""
    concrete, why = resolve_kind(kind, cfg)
    if concrete in BUILTIN:
        spec = BUILTIN[concrete]
    elif ":" in concrete:
        spec = concrete
    else:
        found = [ep for ep in entry_points(group="overnight.proposers") if ep.name == concrete]
        if not found:
            known = ", ".join(["auto", *BUILTIN, "package.module:Class"])
            raise UsageError(f"[proposer].kind: unknown proposer {concrete!r} (expected {known})")
        spec = found[0].value
    cls = _load_object(spec)
    if not (isinstance(cls, type) and issubclass(cls, BaseProposer)):
        raise UsageError(f"proposer {spec!r} is not a subclass of overnight BaseProposer")
    try:
        proposer = cls(seed=seed, config=cfg)
    except TypeError:
        proposer = cls()
    return proposer, why


# How a built-in proposer redoes its own change on other code, for the commands that carry
# a recorded experiment without the proposer running (apply, finish --drop, --ablate).
REAPPLY = {
    "tune": "overnight.proposers.tune.rebase:reset_knobs",
    "llm": "overnight.proposers.llm.formats:reapply",
}


def reapplier(proposal: Proposal) -> Callable[[dict[str, str]], dict[str, str] | None] | None:
    """`proposal`'s own re-application onto a target surface, when its proposer has one."""
    spec = REAPPLY.get(proposal.proposer)
    if spec is None:
        return None
    fn = _load_object(spec)
    return lambda surface: fn(proposal, surface)
