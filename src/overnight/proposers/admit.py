"""What a proposal must be before the loop takes it: the one gate between any proposer
(built-in, plug-in, a model's raw text) and the ledger, git and the runs.

- Well-formed: a `Proposal` whose files map paths to text; anything else becomes an invalid
  proposal that says what was wrong, instead of an exception that stops the night.
- Encodable: lone surrogates (which no UTF-8 writer accepts: SQLite, git, files) become
  U+FFFD in every text it carries, so recording it cannot fail.
- Bounded: the surface it proposes is capped (a 50 MB surface would be committed, stored
  in the ledger and diffed on every later proposal) and so are its texts; the reason names
  the cap.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from overnight.isolation.capture import human
from overnight.store.records import Proposal

# A proposal's surface may be this many times the current best's, or the configured floor
# (`[study].max_surface`), whichever is larger.
GROWTH = 4
# Texts stored with every proposal; beyond these a text is cut and says so.
TEXT_CAPS = {"description": 500, "rationale": 20_000, "hypothesis": 20_000,
             "invalid_reason": 4_000, "prompt": 4 << 20, "response": 4 << 20}  # fmt: skip


def clean_text(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (valid pairs are joined)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean(value: Any) -> Any:
    """Every string inside `value` (dict keys too) made encodable."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean(v) for v in value)
    return value


def _cut(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    note = f" … [cut: {len(text)} characters, over the cap of {cap}]"
    return text[: max(0, cap - len(note))] + note


def admit(obj: Any, best_files: dict[str, str], floor: int, proposer: str = "") -> Proposal:
    """The proposal `obj` as the loop may take it (see the module's docstring)."""
    if not isinstance(obj, Proposal):
        return Proposal(files={}, description="proposer error", proposer=proposer,
                        invalid_reason=f"the proposer returned {type(obj).__name__}, "
                        "not a Proposal")  # fmt: skip
    bad = [k for k, v in (obj.files or {}).items()
           if not isinstance(k, str) or not isinstance(v, str)]  # fmt: skip
    if not isinstance(obj.files, dict) or bad:
        obj.invalid_reason = obj.invalid_reason or (
            "the proposal's files must map paths to text, got "
            + (type(obj.files).__name__ if not isinstance(obj.files, dict) else repr(bad[:3])))
        obj.files = {}
    for f in fields(obj):
        setattr(obj, f.name, clean(getattr(obj, f.name)))
    for name, cap in TEXT_CAPS.items():
        value = getattr(obj, name)
        if isinstance(value, str):
            setattr(obj, name, _cut(value, cap))
        elif value is not None and name != "invalid_reason":
            setattr(obj, name, _cut(str(value), cap))
    if not isinstance(obj.description, str):
        obj.description = str(obj.description)
    size = sum(len(v.encode()) for v in {**best_files, **obj.files}.values())
    limit = max(floor, GROWTH * sum(len(v.encode()) for v in best_files.values()))
    if size > limit:
        obj.invalid_reason = (
            f"the proposed surface is {human(size)}, over the cap of {human(limit)} "
            f"({GROWTH}x the current best's, at least [study].max_surface = {human(floor)})"
        )
        obj.files = {}
    return obj


def admit_files(files: Any) -> dict[str, str] | None:
    """A proposer's re-based files made encodable; None when they are not path -> text."""
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        return None
    return clean(files)
