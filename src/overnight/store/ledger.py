"""The append-only record of a study: SQLite in WAL mode, plus the `results.tsv` export.

Each experiment moves through states proposed → applied → running → measured → decided
(or aborted, to be re-run). Every transition is written before the side effect that follows
it, so a controller killed at any moment can be recovered from this file alone.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from overnight.store.records import STATUSES, ExperimentRecord
from overnight.store.schema import COLUMNS, SCHEMA, migrate, readable_columns


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=True)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class Ledger:
    """One study's SQLite store. Safe to read from other processes while a run writes."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        # One connection per thread: slot threads record measurements while the controller
        # decides; SQLite's WAL serialises the writers across connections.
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._columns = COLUMNS
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db.executescript(SCHEMA)
            with self.tx() as db:
                migrate(db)
        elif path.exists():
            self._columns = readable_columns(self.db)

    def has_column(self, name: str) -> bool:
        return name in self._columns.replace(" ", "").split(",")

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            uri = f"file:{self.path}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        else:
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL keeps WAL durable across a killed process (only an OS crash can lose
            # the last transaction), at a fraction of FULL's fsync cost.
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.row_factory = sqlite3.Row
        return conn

    def close(self) -> None:
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self.db:
            yield self.db

    # -- meta -----------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def event(self, kind: str, /, **data: Any) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO events(at, kind, data) VALUES (?, ?, ?)",
                (time.time(), kind, _json(data)),
            )

    def last_event_id(self) -> int:
        row = self.db.execute("SELECT MAX(id) FROM events").fetchone()
        return int(row[0] or 0)

    def count_events(self, kind: str, after_id: int = 0) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM events WHERE kind=? AND id>?", (kind, after_id)
        ).fetchone()
        return int(row[0])

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT at, kind, data FROM events"
        rows = self.db.execute(sql + (" WHERE kind=?" if kind else ""), (kind,) if kind else ())
        return [{"at": r[0], "kind": r[1], **json.loads(r[2])} for r in rows]

    # -- experiment transitions -----------------------------------------------------------

    def next_number(self) -> int:
        row = self.db.execute("SELECT MAX(n) FROM experiments").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def add_proposed(
        self,
        n: int,
        *,
        parent: str,
        description: str,
        rationale: str = "",
        hypothesis: str = "",
        proposer: str = "",
        files: dict[str, str] | None = None,
        diff: str = "",
        surface_hash: str | None = None,
        cost_usd: float = 0.0,
        usage: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        control_of: int | None = None,
    ) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO experiments(n, state, parent, description, rationale, hypothesis,"
                " proposer, files, diff, surface_hash, cost_usd, usage, meta, created_at,"
                " control_of) VALUES (?, 'proposed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    n, parent, description, rationale, hypothesis, proposer,
                    _json(files) if files is not None else None, diff, surface_hash,
                    cost_usd, _json(usage or {}), _json(meta or {}), time.time(), control_of,
                ),
            )  # fmt: skip

    def set_state(self, n: int, state: str, **fields: Any) -> None:
        sets, args = ["state=?"], [state]
        for key, value in fields.items():
            column = "commit_sha" if key == "commit" else key
            if key in ("metrics", "meta", "usage", "files") and value is not None:
                value = _json(value)
            sets.append(f"{column}=?")
            args.append(value)
        with self.tx() as db:
            db.execute(f"UPDATE experiments SET {', '.join(sets)} WHERE n=?", (*args, n))

    def set_verdict(
        self,
        n: int,
        status: str,
        reason: str,
        value: float | None,
        metrics: dict[str, float],
        wall_s: float | None,
        meta: dict[str, Any] | None = None,
        commit: str | None = None,
    ) -> None:
        """Record the verdict (and, in the same transaction, the experiment's meta with the
        record of how it was reached, and the commit that is kept when it is not the
        candidate's own). Idempotent: recording the same verdict again changes nothing."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        extra, args = ("", ()) if meta is None else (", meta=?", (_json(meta),))
        if commit is not None:
            extra, args = extra + ", commit_sha=?", (*args, commit)
        with self.tx() as db:
            db.execute(
                "UPDATE experiments SET state='decided', status=?, reason=?, value=?, metrics=?,"
                f" wall_s=?, decided_at=COALESCE(decided_at, ?), files=NULL{extra} WHERE n=?",
                (status, reason, _finite(value), _json(metrics), wall_s, time.time(), *args, n),
            )

    def add_measurement(
        self,
        n: int,
        kind: str,
        repeat: int,
        value: float | None,
        metrics: dict[str, float],
        exit_code: int | None,
        timed_out: bool,
        wall_s: float,
        error: str | None,
    ) -> int:
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO measurements(n, kind, repeat, value, metrics, exit_code, timed_out,"
                " wall_s, error, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    n, kind, repeat, value, _json(metrics), exit_code, int(timed_out), wall_s,
                    error, time.time(),
                ),
            )  # fmt: skip
        return int(cur.lastrowid or 0)

    def retire_measurements(self, n: int) -> None:
        """Keep the runs of a candidate that was re-based onto a newer best, but out of the
        way of its new verdict (their kind gets a `stale-` prefix)."""
        with self.tx() as db:
            db.execute(
                "UPDATE measurements SET kind = 'stale-' || kind WHERE n=? AND kind NOT LIKE"
                " 'stale-%'",
                (n,),
            )

    def clear_measurements(self, n: int) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM measurements WHERE n=?", (n,))

    # -- queries --------------------------------------------------------------------------

    def measurements(self, n: int, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM measurements WHERE n=?" + (" AND kind=?" if kind else "")
        rows = self.db.execute(sql + " ORDER BY id", (n, kind) if kind else (n,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["metrics"] = json.loads(d["metrics"])
            d["timed_out"] = bool(d["timed_out"])
            out.append(d)
        return out

    def all_measurements(self) -> list[dict[str, Any]]:
        """Every measurement without its secondary metrics, oldest first (verify)."""
        rows = self.db.execute(
            "SELECT id, n, kind, repeat, value, exit_code, timed_out, wall_s, error"
            " FROM measurements ORDER BY id"
        )
        return [dict(r) for r in rows]

    def measurements_by_id(self, ids: list[int]) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            "SELECT id, n, kind, repeat, value, exit_code, timed_out, wall_s, error"
            f" FROM measurements WHERE id IN ({marks})",
            [int(i) for i in ids],
        )
        return [dict(r) for r in rows]

    def measurement_values(self) -> list[tuple[int, int, str, float | None]]:
        """(id, n, kind, value) of every measurement, oldest first, value None unless the
        run succeeded: what the noise estimate and `overnight verify` need."""
        rows = self.db.execute(
            "SELECT id, n, kind, CASE WHEN exit_code=0 AND timed_out=0 THEN value END"
            " FROM measurements ORDER BY id"
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    @staticmethod
    def _record(row: sqlite3.Row) -> ExperimentRecord:
        return ExperimentRecord(
            experiment=row["n"],
            status=row["status"],
            value=row["value"],
            metrics=json.loads(row["metrics"]),
            commit=row["commit_sha"],
            parent=row["parent"],
            description=row["description"],
            reason=row["reason"],
            wall_s=row["wall_s"],
            proposer=row["proposer"],
            rationale=row["rationale"],
            hypothesis=row["hypothesis"],
            state=row["state"],
            cost_usd=row["cost_usd"],
            created_at=row["created_at"],
            decided_at=row["decided_at"],
            meta=json.loads(row["meta"]),
            control_of=row["control_of"],
        )

    def get(self, n: int) -> ExperimentRecord | None:
        row = self.db.execute(f"SELECT {self._columns} FROM experiments WHERE n=?", (n,)).fetchone()
        return self._record(row) if row else None

    def row(self, n: int) -> dict[str, Any] | None:
        """Every stored column of one experiment (files, diff, usage included)."""
        row = self.db.execute("SELECT * FROM experiments WHERE n=?", (n,)).fetchone()
        return dict(row) if row else None

    def records(
        self, decided_only: bool = True, limit: int | None = None, offset: int = 0
    ) -> list[ExperimentRecord]:
        sql = f"SELECT {self._columns} FROM experiments"
        if decided_only:
            sql += " WHERE state='decided'"
        sql += " ORDER BY n"
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return [self._record(r) for r in self.db.execute(sql)]

    def undecided(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM experiments WHERE state!='decided' ORDER BY n")
        return [dict(r) for r in rows]

    def last_keep(self) -> ExperimentRecord | None:
        row = self.db.execute(
            f"SELECT {self._columns} FROM experiments WHERE status='keep'"
            " ORDER BY decided_at DESC, n DESC LIMIT 1"
        ).fetchone()
        return self._record(row) if row else None

    def find_hash(self, surface_hash: str, exclude: int | None = None) -> int | None:
        """An earlier experiment whose surface was identical (so the run would repeat)."""
        row = self.db.execute(
            "SELECT n FROM experiments WHERE surface_hash=? AND n!=? AND"
            " (status IS NULL OR status NOT IN ('invalid', 'rejected')) ORDER BY n LIMIT 1",
            (surface_hash, -1 if exclude is None else exclude),
        ).fetchone()
        return row[0] if row else None

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for status, count in self.db.execute(
            "SELECT status, COUNT(*) FROM experiments WHERE state='decided' GROUP BY status"
        ):
            if status in out:
                out[status] = count
        return out

    def total_cost(self) -> float:
        row = self.db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM experiments").fetchone()
        return float(row[0])

    def model_usage(self) -> dict[str, float]:
        """Model tokens, calls and prompt-cache savings summed over every experiment."""
        keys = ("input_tokens", "output_tokens", "cache_read_input_tokens", "calls",
                "cache_saved_usd")  # fmt: skip
        sums = ", ".join(f"COALESCE(SUM(json_extract(usage, '$.{k}')), 0)" for k in keys)
        row = self.db.execute(
            f"SELECT COUNT(*), {sums} FROM experiments WHERE usage != '{{}}'"  # noqa: S608
        ).fetchone()
        return {"experiments": row[0], **dict(zip(keys, row[1:], strict=True))}

    def count(self) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM experiments WHERE state='decided'").fetchone()
        return int(row[0])

    # -- exports --------------------------------------------------------------------------

    def write_tsv(self, path: Path, metric: str) -> None:
        """Rewrite `results.tsv` whole (at start-up and after recovery), in decision order."""
        lines = ["\t".join(tsv_header(metric))]
        decided = sorted(self.records(), key=lambda r: (r.decided_at or 0.0, r.experiment))
        lines += [tsv_row(r) for r in decided]
        tmp = path.with_suffix(".tsv.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)

    @staticmethod
    def append_tsv(path: Path, metric: str, rec: ExperimentRecord) -> None:
        """Add one decided experiment to `results.tsv`: constant cost per experiment however
        long the night (rows are in decision order, which parallel slots make differ from
        the experiment numbers)."""
        if not path.exists():
            path.write_text("\t".join(tsv_header(metric)) + "\n")
        with path.open("a") as fh:
            fh.write(tsv_row(rec) + "\n")


def tsv_header(metric: str) -> list[str]:
    return ["experiment", "commit", metric, "status", "description", "wall_s", "proposer"]


def tsv_value(value: float) -> str:
    """A metric value as autoresearch writes it, six decimals (`1.009125`); a value so small
    that six decimals would flatten it keeps six significant digits (`3.2e-08`), and so
    does one too large for a fixed-point column."""
    if value == 0 or 1e-3 <= abs(value) < 1e15:
        return f"{value:.6f}"
    return f"{value:.6g}"


def tsv_row(r: ExperimentRecord) -> str:
    """One line of `results.tsv` (autoresearch's columns plus ours). A failed experiment's
    metric cell is empty, never 0, so a crash cannot be mistaken for a result."""
    value = "" if r.value is None or r.status in ("crash", "timeout") else tsv_value(r.value)
    desc = " ".join(r.description.split()).replace("\t", " ")
    wall = "" if r.wall_s is None else f"{r.wall_s:.1f}"
    cells = [str(r.experiment), (r.commit or "")[:7], value, r.status or "", desc, wall,
             r.proposer]  # fmt: skip
    return "\t".join(cells)
