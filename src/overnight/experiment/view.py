"""What the loop tells whoever watches it. Views only display; they never influence the
loop (the terminal views are in cli/view.py)."""

from __future__ import annotations

from typing import Any

from overnight.store.records import ExperimentRecord


class View:
    def message(self, text: str) -> None: ...
    def proposing(self, n: int) -> None: ...
    def experiment_started(self, n: int, description: str, budget_s: float) -> None: ...
    def decided(self, rec: ExperimentRecord, status: dict[str, Any]) -> None: ...
    def finished(self, reason: str, status: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class NullView(View):
    pass
