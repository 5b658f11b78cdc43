"""The edit formats a model may answer in, from the most expressive to the easiest to get
right: SEARCH/REPLACE blocks, a whole-file rewrite (small surfaces only), and a structured
JSON edit (the surface's numeric knobs set to new values, or whole lines replaced), which a
server with constrained decoding forces into shape.

Each format writes its part of the system prompt, says how much output it needs, offers a
JSON schema where it has one, and turns a reply into the new surface or an `EditError` that
says exactly what was wrong (shown to the model in the repair turn and in later history).

Which format the next proposal uses: the first in `[proposer].formats` that fits the
context window and has not failed its last FAIL_STREAK tries in this study (read from the
ledger's history, so a restart chooses the same); a demoted format is tried again after
RETRY_AFTER proposals in other formats.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from overnight.proposers.llm.edits import (
    FENCE,
    REPLACE,
    SEARCH,
    EditError,
    apply_edits,
    reapply_blocks,
)
from overnight.proposers.llm.prompts import one_line, parse_fields
from overnight.proposers.tune.knobs import (
    Knob,
    apply_values,
    find_knobs,
    format_value,
    round_value,
)
from overnight.store.records import ExperimentRecord, Proposal

WHOLE_FILE_LINES = 200  # surfaces up to this many lines may be rewritten whole
# A try is a reply and, when it is unusable, its repair turn: one failed try (two unusable
# replies in a row) demotes a format until its retry.
FAIL_STREAK = 1
RETRY_AFTER = 12  # proposals in other formats before a demoted format is tried again
MAX_JSON_EDITS = 4


@dataclass
class Parsed:
    """A reply turned into new file contents plus its LESSON/HYPOTHESIS/... fields."""

    files: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)


class EditFormat(ABC):
    name: str = ""
    # Asks for JSON: sent with a response_format schema where the server supports one.
    structured: bool = False

    def usable(self, surface: Mapping[str, str]) -> bool:
        return bool(surface)

    @abstractmethod
    def min_output(self, surface_tokens: int) -> int:
        """The fewest output tokens a complete reply in this format needs."""

    @abstractmethod
    def instructions(self, fill: Mapping[str, str], surface: Mapping[str, str]) -> str:
        """How to reply, for the system prompt."""

    def schema(self, surface: Mapping[str, str], bounded: bool = False) -> dict[str, Any] | None:
        """The JSON schema of a reply, for constrained decoding; `bounded` (a local server
        whose grammar takes it; OpenAI's strict mode refuses maxLength) adds string lengths
        and holds each knob to values that change it."""
        return None

    def surface_note(self, surface: Mapping[str, str]) -> str:
        """What the format adds after the surface (it changes when the surface does, so it
        stays in the prompt's stable head, not in the system message)."""
        return ""

    @abstractmethod
    def parse(self, reply: str, surface: Mapping[str, str]) -> Parsed:
        """The new surface, or EditError."""


class SearchReplace(EditFormat):
    name = "search_replace"

    def min_output(self, surface_tokens: int) -> int:
        return 350

    def instructions(self, fill: Mapping[str, str], surface: Mapping[str, str]) -> str:
        return f"""\
Reply in exactly this format:
{fill["reply_format"]}

Then the edit, as one or more SEARCH/REPLACE blocks:

{fill["example_path"]}
<<<<<<< SEARCH
<lines copied exactly from the current file>
=======
<the new lines>
>>>>>>> REPLACE

- The line above each block is the path of a surface file, relative to the repository root.
- SEARCH must match the current file exactly and in one place only: quote whole lines, \
enough of them to be unique.
- Several blocks are applied in order; each sees the result of the ones before it.
- Write nothing after the last block."""

    def parse(self, reply: str, surface: Mapping[str, str]) -> Parsed:
        small = _lines(surface) <= WHOLE_FILE_LINES
        return Parsed(apply_edits(reply, surface, whole_files=small), parse_fields(reply))


class WholeFile(EditFormat):
    name = "whole_file"

    def usable(self, surface: Mapping[str, str]) -> bool:
        return bool(surface) and _lines(surface) <= WHOLE_FILE_LINES

    def min_output(self, surface_tokens: int) -> int:
        return int(surface_tokens * 1.2) + 200

    def instructions(self, fill: Mapping[str, str], surface: Mapping[str, str]) -> str:
        return f"""\
Reply in exactly this format:
{fill["reply_format"]}

Then the complete new content of the file you change: its path on one line, then a fenced \
code block holding the whole file, every line of it, with your change made:

{fill["example_path"]}
```
<the complete new file>
```

Write nothing after the code block."""

    def parse(self, reply: str, surface: Mapping[str, str]) -> Parsed:
        try:
            files = apply_edits(reply, surface, whole_files=True)
        except EditError as exc:
            bare = _bare_fence(reply) if len(surface) == 1 else None
            if bare is None or any(SEARCH.match(x) or REPLACE.match(x) for x in bare.splitlines()):
                raise  # a SEARCH/REPLACE block is not a file: its own error stands
            files = {next(iter(surface)): bare} if bare != next(iter(surface.values())) else {}
            if not bare.strip():
                raise EditError("the code block is empty") from exc
        return Parsed(files, parse_fields(reply))


class JsonEdit(EditFormat):
    """A JSON object: the fields plus `edits`, each a knob set to a number (when the surface
    has numeric knobs) or else a whole line replaced by another."""

    name = "json"
    structured = True

    def min_output(self, surface_tokens: int) -> int:
        return 320  # the fields at their bounded lengths and a few edits

    def instructions(self, fill: Mapping[str, str], surface: Mapping[str, str]) -> str:
        if _knobs(surface):
            edit = '{"knob": "<a knob name>", "value": <its new number>}'
            what = ("Change one or two of the knobs listed after the file (a new value must "
                    "differ from the current one).")  # fmt: skip
        else:
            edit = '{"old": "<one whole line copied exactly>", "new": "<its new text>"}'
            what = "Each edit replaces one whole line of the file; copy `old` exactly."
        return f"""\
Reply with one JSON object and nothing else:
{{"description": "<one line of at most 72 characters; it becomes the commit subject>",
 "edits": [{edit}],
 "hypothesis": "<one sentence: what you change and why {fill["metric"]} gets {fill["better"]}>",
 "lesson": "<one line: what the most recent experiment's result taught you>"}}

{what}"""

    def surface_note(self, surface: Mapping[str, str]) -> str:
        knobs = _knobs(surface)
        if not knobs:
            return ""
        listed = "\n".join(
            f"- {_knob_id(k, surface)} = {k.text or k.value}{_neighbours(k)}" for k in knobs
        )
        return f"# Knobs of the surface, with their current values\n{listed}"

    def schema(self, surface: Mapping[str, str], bounded: bool = False) -> dict[str, Any]:
        def text(limit: int) -> dict[str, Any]:
            return {"type": "string", "maxLength": limit} if bounded else {"type": "string"}

        knobs = _knobs(surface)
        if knobs and bounded:
            # A grammar can hold each knob to values that change it: a weak model that would
            # copy the current value must pick a change (from 0.1x to 10x) instead.
            item = {"anyOf": [_obj({"knob": {"type": "string", "const": _knob_id(k, surface)},
                                    "value": {"type": "number", "enum": _candidates(k)}})
                              for k in knobs]}  # fmt: skip
        elif knobs:
            names = sorted({_knob_id(k, surface) for k in knobs})
            item = _obj({"knob": {"type": "string", "enum": names}, "value": {"type": "number"}})
        else:
            item = _obj({"old": text(400), "new": text(400)})
        # The edit comes right after the description: a model that rambles in the prose
        # fields has made its change before it runs out of tokens.
        return _obj({
            "description": text(100),
            "edits": {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_JSON_EDITS},
            "hypothesis": text(300), "lesson": text(300),
        })  # fmt: skip

    def parse(self, reply: str, surface: Mapping[str, str]) -> Parsed:
        data = _json_object(reply)
        fields = {k.upper(): one_line(str(data.get(k) or ""), 500)
                  for k in ("lesson", "hypothesis", "description", "rationale")}  # fmt: skip
        edits = data.get("edits")
        if isinstance(edits, dict):
            edits = [edits]
        if not isinstance(edits, list) or not edits:
            raise EditError('the JSON has no "edits" list with at least one edit')
        if len(edits) > MAX_JSON_EDITS:
            raise EditError(f"{len(edits)} edits; make at most {MAX_JSON_EDITS} per experiment")
        new = dict(surface)
        for i, edit in enumerate(edits, 1):
            if not isinstance(edit, dict):
                raise EditError(f"edit {i} is not an object")
            if "knob" in edit:
                _set_knob(new, surface, edit, i)
            elif "old" in edit:
                _replace_line(new, edit, i)
            else:
                raise EditError(f'edit {i} has neither "knob" nor "old"')
        changed = {p: t for p, t in new.items() if t != surface.get(p)}
        if not changed:
            raise EditError("the edits change nothing: " + _unchanged(edits, surface))
        return Parsed(changed, {k: v for k, v in fields.items() if v})


FORMATS: dict[str, EditFormat] = {f.name: f for f in (SearchReplace(), WholeFile(), JsonEdit())}
DEFAULT_ORDER = ("search_replace", "whole_file", "json")


def choose(
    order: Sequence[str], history: Sequence[ExperimentRecord], fits: Mapping[str, bool]
) -> EditFormat | None:
    """The format for the next proposal (see the module's docstring); None when none fits."""
    candidates = [FORMATS[n] for n in order if fits.get(n)]
    if not candidates:
        return None
    tries: dict[str, list[bool]] = {}
    since: dict[str, int] = {}
    for r in history:
        meta = r.meta if isinstance(r.meta, dict) else {}
        used = meta.get("format")
        for name in since:
            since[name] += 1
        if used in FORMATS and "format_ok" in meta:
            tries.setdefault(used, []).append(bool(meta["format_ok"]))
            since[used] = 0
    for f in candidates:
        mine = tries.get(f.name, [])
        streak = len(mine) - 1 - max((i for i, ok in enumerate(mine) if ok), default=-1)
        # Demoted after FAIL_STREAK failures in a row; each retry that fails again doubles
        # the wait before the next one (a model that cannot write a format stops paying).
        wait = RETRY_AFTER * 2 ** max(0, streak - FAIL_STREAK)
        if streak < FAIL_STREAK or since.get(f.name, 0) >= wait:
            return f
    return candidates[-1]


def loose_fields(reply: str) -> dict[str, str]:
    """The fields of a reply that did not parse: labelled lines, or a JSON object's keys."""
    fields = parse_fields(reply)
    if fields:
        return fields
    try:
        start, end = reply.find("{"), reply.rfind("}")
        data = json.loads(reply[start : end + 1]) if 0 <= start < end else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k.upper(): one_line(str(v), 500) for k, v in data.items()
            if k in ("lesson", "hypothesis", "description") and v}  # fmt: skip


# -- helpers ---------------------------------------------------------------------------------


def _lines(surface: Mapping[str, str]) -> int:
    return sum(len(t.splitlines()) for t in surface.values())


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    # Every property required and no others: what OpenAI's strict mode asks of a schema.
    return {"type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}  # fmt: skip


def _knobs(surface: Mapping[str, str]) -> list[Knob]:
    return [k for path in sorted(surface) for k in find_knobs(path, surface[path])]


def _knob_id(knob: Knob, surface: Mapping[str, str]) -> str:
    return knob.name if len(surface) == 1 else f"{knob.path}:{knob.name}"


FACTORS = (0.1, 0.2, 0.5, 0.8, 1.25, 2, 5, 10)


def _candidates(knob: Knob) -> list[int | float]:
    """Values that change a knob, from a tenth to ten times its value (a zero knob: small
    round numbers); ints stay at least 1 when they are."""
    start = knob.value or (1 if knob.kind == "int" else 0.01)
    out: list[int | float] = []
    for factor in FACTORS if knob.value else (1, 10, 100):
        value = round_value(start * factor, knob.kind)
        if knob.kind == "int" and knob.value >= 1:
            value = max(1, value)
        if value != knob.value and value not in out:
            out.append(value)
    return out


def _neighbours(knob: Knob) -> str:
    """Half and double the current value, as examples of a change: a weak model that copies
    from the prompt then copies a change rather than the current value."""
    if not knob.value:
        return ""
    half, double = (round_value(knob.value * f, knob.kind) for f in (0.5, 2))
    options = [format_value(v, knob.kind) for v in (half, double) if v != knob.value]
    return f" (e.g. {' or '.join(options)})" if options else ""


def _unchanged(edits: list[Any], surface: Mapping[str, str]) -> str:
    """Which knobs a no-op reply set to their current values, and what would change them."""
    knobs = {_knob_id(k, surface): k for k in _knobs(surface)}
    said = [f"{name} is already {knobs[name].text or knobs[name].value}{_neighbours(knobs[name])}"
            for name in (str(e.get("knob")) for e in edits if isinstance(e, dict))
            if name in knobs]  # fmt: skip
    if not said:
        return "every new value equals the current one"
    return "; ".join(said) + "; choose values that differ from the current ones"


def _set_knob(new: dict[str, str], surface: Mapping[str, str], edit: dict, i: int) -> None:
    name, value = str(edit.get("knob") or ""), edit.get("value")
    path, _, bare = name.rpartition(":")
    paths = [path] if path else sorted(surface)
    owners = [p for p in paths if any(k.name == bare for k in find_knobs(p, surface.get(p, "")))]
    if not owners:
        known = ", ".join(_knob_id(k, surface) for k in _knobs(surface))
        raise EditError(f"edit {i}: no knob named {name!r} (knobs: {known})")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EditError(f"edit {i}: the value of {bare} must be a number, got {value!r}")
    try:
        new[owners[0]] = apply_values(owners[0], new[owners[0]], {bare: value})
    except ValueError as exc:
        raise EditError(f"edit {i}: {exc}") from exc


def _replace_line(new: dict[str, str], edit: dict, i: int) -> None:
    old, text = str(edit.get("old") or ""), str(edit.get("new", ""))
    if not old.strip():
        raise EditError(f'edit {i}: "old" is empty; copy one whole line of the file')
    hits = [(p, n) for p in sorted(new) for n, line in enumerate(new[p].splitlines())
            if line.strip() == old.strip()]  # fmt: skip
    if len(hits) != 1:
        where = "matches no line" if not hits else f"matches {len(hits)} lines"
        raise EditError(f"edit {i}: the old line {one_line(old, 80)!r} {where}")
    path, n = hits[0]
    lines = new[path].splitlines(keepends=True)
    line = lines[n]
    indent = line[: len(line) - len(line.lstrip())]
    ending = line[len(line.rstrip("\r\n")) :]
    lines[n] = (text if text.startswith(indent) else indent + text.lstrip()) + ending
    new[path] = "".join(lines)


def _json_object(reply: str) -> dict[str, Any]:
    text = reply.strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise EditError(f"the reply holds no JSON object (it starts: {one_line(text, 60)!r})")
    try:
        data = json.loads(text[start : end + 1], strict=False)  # raw newlines in strings
    except json.JSONDecodeError as exc:
        raise EditError(f"the JSON does not parse: {exc.msg} at character {exc.pos}") from exc
    if not isinstance(data, dict):
        raise EditError("the reply's JSON is not an object")
    return data


def _bare_fence(reply: str) -> str | None:
    """The content of the reply's only fenced code block, when it has exactly one."""
    lines = reply.splitlines()
    opens = [i for i, line in enumerate(lines) if FENCE.match(line)]
    if len(opens) != 2:
        return None
    return "\n".join(lines[opens[0] + 1 : opens[1]]) + "\n"


# Between the two replies in a proposal's response when a repair turn was needed.
REPAIR_MARK = "\n\n--- repair turn ---\n"


def reapply(proposal: Proposal, surface: Mapping[str, str]) -> dict[str, str] | None:
    """A recorded proposal's own edits applied again to another surface (a newer best, the
    user's checkout): its SEARCH/REPLACE blocks or JSON knob/line edits, parsed from its
    reply (the repaired one when there was a repair turn). None for a whole-file reply, a
    reply without edits, or edits that no longer apply: the word-level merge takes over."""
    meta = proposal.meta if isinstance(proposal.meta, dict) else {}
    fmt = FORMATS.get(str(meta.get("format") or "search_replace"))
    if fmt is None or fmt.name == "whole_file" or not proposal.response:
        return None
    reply = proposal.response.rsplit(REPAIR_MARK, 1)[-1]
    if fmt.name == "search_replace":  # blocks only: never a whole file guessed from a fence
        return reapply_blocks(reply, surface)
    try:
        return fmt.parse(reply, dict(surface)).files
    except EditError:
        return None
