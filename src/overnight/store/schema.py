"""The ledger's schema, and how a ledger written by an older overnight is brought up to it:
a writer adds what is missing in place when it opens one; a reader of a ledger no writer
has opened since sees the added columns as NULL."""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    n INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    status TEXT,
    value REAL,
    metrics TEXT NOT NULL DEFAULT '{}',
    commit_sha TEXT,
    parent TEXT,
    description TEXT NOT NULL DEFAULT '',
    rationale TEXT NOT NULL DEFAULT '',
    hypothesis TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    wall_s REAL,
    proposer TEXT NOT NULL DEFAULT '',
    cost_usd REAL NOT NULL DEFAULT 0,
    usage TEXT NOT NULL DEFAULT '{}',
    files TEXT,
    diff TEXT NOT NULL DEFAULT '',
    surface_hash TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    decided_at REAL,
    control_of INTEGER
);
CREATE INDEX IF NOT EXISTS experiments_status ON experiments(status);
CREATE INDEX IF NOT EXISTS experiments_hash ON experiments(surface_hash);
-- Read side at 100k experiments: counts, cost and the chart's points come from this covering
-- index instead of scanning rows that carry whole diffs; the partial index finds the few
-- undecided rows (`state!='decided'`) without a scan; decided_at is the dashboard's cursor.
CREATE INDEX IF NOT EXISTS experiments_decided ON experiments(state, n, status, value, cost_usd);
CREATE INDEX IF NOT EXISTS experiments_undecided ON experiments(n) WHERE state!='decided';
CREATE INDEX IF NOT EXISTS experiments_decided_at ON experiments(decided_at);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    n INTEGER NOT NULL,
    kind TEXT NOT NULL,
    repeat INTEGER NOT NULL DEFAULT 0,
    value REAL,
    metrics TEXT NOT NULL DEFAULT '{}',
    exit_code INTEGER,
    timed_out INTEGER NOT NULL DEFAULT 0,
    wall_s REAL,
    error TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_n ON measurements(n);
CREATE INDEX IF NOT EXISTS measurements_kind ON measurements(kind, n);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
"""

COLUMNS = (
    "n, state, status, value, metrics, commit_sha, parent, description, rationale, hypothesis,"
    " reason, wall_s, proposer, cost_usd, meta, created_at, decided_at, control_of"
)
# Columns added since the first release: (name, SQL type).
ADDED_COLUMNS = (("control_of", "INTEGER"),)
ADDED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS experiments_controls ON experiments(n)"
    " WHERE control_of IS NOT NULL",
)


def _present(db: sqlite3.Connection) -> set[str]:
    return {r[1] for r in db.execute("PRAGMA table_info(experiments)")}


def migrate(db: sqlite3.Connection) -> None:
    """Bring the ledger open on `db` up to this schema (inside the caller's transaction)."""
    present = _present(db)
    for name, kind in ADDED_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE experiments ADD COLUMN {name} {kind}")
    for sql in ADDED_INDEXES:
        db.execute(sql)


def readable_columns(db: sqlite3.Connection) -> str:
    """`COLUMNS` for a read-only ledger, the added columns it lacks read as NULL."""
    try:
        present = _present(db)
    except sqlite3.Error:
        return COLUMNS
    if not present:  # no table yet (a controller is creating the ledger)
        return COLUMNS
    missing = {name for name, _ in ADDED_COLUMNS if name not in present}
    names = [c.strip() for c in COLUMNS.split(",")]
    return ", ".join(f"NULL AS {c}" if c in missing else c for c in names)
