"""The ledger's measurements as judging reads them (judging/verdict.py `Evidence`): the
pipeline judges from what it just stored, and `overnight verify` from the same rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from overnight.judging.verdict import RunRow
from overnight.store.ledger import Ledger


class LedgerEvidence:
    """Reads measurements on demand (the pipeline: a few indexed queries per verdict), or
    all at once with `preload()` (verify replays thousands of verdicts)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._by_id: dict[int, RunRow] | None = None
        self._owner: dict[int, int] = {}
        self._by_n: dict[int, list[RunRow]] = {}

    def preload(self) -> LedgerEvidence:
        self._by_id = {}
        for row in self.ledger.all_measurements():
            run = _row(row)
            self._by_id[run.id] = run
            self._owner[run.id] = row["n"]
            self._by_n.setdefault(row["n"], []).append(run)
        return self

    def _rows(self, n: int) -> list[RunRow]:
        if self._by_id is not None:
            return self._by_n.get(n, [])
        return [_row(r) for r in self.ledger.measurements(n)]

    def values(self, ids: Sequence[int], n: int, kinds: Sequence[str]) -> list[float]:
        if not ids:
            return []
        if self._by_id is not None:
            found = {i: (self._owner.get(i), self._by_id.get(i)) for i in ids}
        else:
            rows = {r["id"]: r for r in self.ledger.measurements_by_id(ids)}
            found = {i: (rows[i]["n"], _row(rows[i])) if i in rows else (None, None) for i in ids}
        out = []
        for mid in ids:
            owner, row = found[mid]
            if row is None:
                raise LookupError(f"measurement {mid} is missing from the ledger")
            if owner != n or row.kind not in kinds:
                raise LookupError(f"measurement {mid} is a {row.kind} of experiment {owner}, "
                                  f"not a {'/'.join(kinds)} of experiment {n}")  # fmt: skip
            if row.value is None or row.exit_code != 0 or row.timed_out:
                raise LookupError(f"measurement {mid} has no value")
            out.append(row.value)
        return out

    def runs(self, n: int, kind: str) -> list[RunRow]:
        return [r for r in self._rows(n) if r.kind == kind]

    def recorded_value(self, n: int) -> float | None:
        rec = self.ledger.get(n)
        return rec.value if rec is not None else None


def _row(r: dict[str, Any]) -> RunRow:
    return RunRow(
        id=r["id"], kind=r["kind"], exit_code=r["exit_code"], timed_out=bool(r["timed_out"]),
        value=r["value"], error=r["error"], wall_s=r.get("wall_s"),
    )  # fmt: skip
