"""JSON as overnight prints it: strict, so that every consumer can parse it.

Python's encoder writes `NaN` and `Infinity` for non-finite floats by default, which is not
JSON; a run that printed `aux: nan` must not make `log --json` unreadable. Non-finite
numbers become null (the record says elsewhere why a value is missing), and the encoder
is told to refuse any that slipped through.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """A copy of `value` with NaN and infinities (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, *, checked: bool = False, **kwargs: Any) -> str:
    """Strict JSON of `value`. `checked`: it holds only finite floats already (skips the
    copy, still refuses a non-finite number)."""
    return json.dumps(value if checked else finite(value), allow_nan=False,
                      default=str, **kwargs)  # fmt: skip
