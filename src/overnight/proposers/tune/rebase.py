"""Re-applying a `tune` proposal to other code: its moved knobs set to its values there.

Kept apart from the proposer (and its Optuna import) because the morning-review commands
carry tune's changes too (`overnight apply`, `finish --drop`, `finish --ablate`), through
`overnight.git.transfer.carry`.
"""

from __future__ import annotations

from collections import Counter

from overnight.proposers.tune.knobs import Knob, Number, apply_values, find_knobs, format_value
from overnight.store.records import Proposal


def discover(surface: dict[str, str]) -> dict[str, Knob]:
    """Knobs of all surface files by name; a name found in two files is prefixed `path:`."""
    found = [knob for path in sorted(surface) for knob in find_knobs(path, surface[path])]
    counts = Counter(knob.name for knob in found)
    return {
        (knob.name if counts[knob.name] == 1 else f"{knob.path}:{knob.name}"): knob
        for knob in found
    }


def reset_knobs(proposal: Proposal, surface: dict[str, str]) -> dict[str, str] | None:
    """The knobs a proposal changed, set to its values in another surface: knob edits on
    neighbouring lines would conflict in a line-based merge but never clash by meaning.
    None when the proposal is not a knob change or a knob it moved is not in `surface`."""
    meta = proposal.meta if isinstance(proposal.meta, dict) else {}
    changed, params = meta.get("changed"), meta.get("params")
    if not isinstance(changed, list) or not isinstance(params, dict):
        return None
    knobs = discover(surface)
    per_file: dict[str, dict[str, Number]] = {}
    for k in changed:
        if k not in knobs or k not in params:
            return None
        per_file.setdefault(knobs[k].path, {})[knobs[k].name] = params[k]
    files = {path: apply_values(path, surface[path], vals) for path, vals in per_file.items()}
    # Record the point actually measured, so Optuna learns from the right parameters, and
    # describe the change from the values it now replaces.
    meta["params"] = {k: (params[k] if k in changed else knob.value) for k, knob in knobs.items()}
    proposal.description = ", ".join(
        f"{k} {format_value(knobs[k].value, knobs[k].kind)} → "
        f"{format_value(params[k], knobs[k].kind)}"
        for k in changed
    )
    return files
