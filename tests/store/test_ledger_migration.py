"""A ledger written by an older overnight: read as it is, brought up to date in place by
the next writer, nothing lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from overnight.store.ledger import Ledger

# The experiments table as the release before controls wrote it.
OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE experiments (
    n INTEGER PRIMARY KEY, state TEXT NOT NULL, status TEXT, value REAL,
    metrics TEXT NOT NULL DEFAULT '{}', commit_sha TEXT, parent TEXT,
    description TEXT NOT NULL DEFAULT '', rationale TEXT NOT NULL DEFAULT '',
    hypothesis TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '', wall_s REAL,
    proposer TEXT NOT NULL DEFAULT '', cost_usd REAL NOT NULL DEFAULT 0,
    usage TEXT NOT NULL DEFAULT '{}', files TEXT, diff TEXT NOT NULL DEFAULT '',
    surface_hash TEXT, meta TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL,
    decided_at REAL
);
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, kind TEXT NOT NULL,
    repeat INTEGER NOT NULL DEFAULT 0, value REAL, metrics TEXT NOT NULL DEFAULT '{}',
    exit_code INTEGER, timed_out INTEGER NOT NULL DEFAULT 0, wall_s REAL, error TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
"""


def test_an_old_ledger_is_readable_and_migrated_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute(
        "INSERT INTO experiments(n, state, status, value, parent, description, created_at,"
        " decided_at) VALUES (0, 'decided', 'keep', 1.5, '', 'baseline', 1, 2)"
    )
    db.commit()
    db.close()
    assert "control_of" not in {r[1] for r in sqlite3.connect(path).execute(
        "PRAGMA table_info(experiments)")}  # fmt: skip
    # A reader (`overnight status` while nothing runs) sees the new column as empty.
    reader = Ledger(path, readonly=True)
    (rec,) = reader.records()
    assert rec.value == 1.5 and rec.control_of is None
    assert reader.last_keep() is not None and not reader.has_column("control_of")
    reader.close()
    # The next writer adds the column and its index, in place.
    writer = Ledger(path)
    assert writer.has_column("control_of")
    writer.add_proposed(1, parent="p", description="control", control_of=0)
    assert [r.control_of for r in writer.records(decided_only=False)] == [None, 0]
    indexes = {r[1] for r in writer.db.execute("PRAGMA index_list(experiments)")}
    assert "experiments_controls" in indexes
    writer.close()
    # And once more: migrating twice changes nothing.
    again = Ledger(path)
    assert len(again.records(decided_only=False)) == 2
    again.close()
