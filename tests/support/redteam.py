"""The red-team studies' common shape: a surface `model.py` run by this interpreter, a
trusted `evaluate.py` printing `error` (minimize), a holdout scorer outside the repository
hidden by the sandbox, and the spy proposer that records every context it is given."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

PY = sys.executable


def study_toml(secret: Path, protect: str, budget: str, sandbox: bool) -> str:
    toml = textwrap.dedent(f"""\
        [study]
        name = "rt"
        surface = ["model.py"]
        protect = ["{protect}"]
        budget = "{budget}"

        [run]
        command = "{PY} model.py"

        [metric]
        name = "error"
        goal = "minimize"
        command = "{PY} evaluate.py"

        [holdout]
        command = "{PY} {secret}/score_holdout.py"
        name = "holdout_error"
        goal = "minimize"

        [proposer]
        kind = "support.spy:SpyProposer"

        [stop]  # every exploit is meant to fail: no circuit breaker may end the night early
        max_failures_in_row = 0
        max_same_failure = 0
        failure_window = 0
        """)
    if sandbox:
        toml += f'\n[sandbox]\nnetwork = false\nhide = ["{secret}"]\n'
    return toml
