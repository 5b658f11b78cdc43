"""Read-side queries shared by `overnight report` and `overnight serve`.

Everything here reads a ledger that a running controller may be writing. The ledger is in
WAL mode, so a read-only connection sees a consistent snapshot without ever blocking the
writer; callers open one connection per report or per HTTP request and close it at once.
Queries select only the columns they need: at 100,000 experiments the `diff` column alone
is hundreds of megabytes, so diffs are loaded for keeps or for one experiment, never in bulk.
"""

from __future__ import annotations

import json
import math
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overnight.isolation import safefs
from overnight.store.ledger import Ledger

if TYPE_CHECKING:
    from overnight.store.study import Study

# One letter per status keeps the points payload small (100k points ~ 1.5 MB of JSON).
STATUS_CODE = {
    "keep": "k",
    "discard": "d",
    "crash": "c",
    "timeout": "t",
    "invalid": "i",
    "rejected": "r",
    "suspect": "s",
}
TABLE_COLUMNS = "n, state, status, value, description, reason, wall_s, proposer, decided_at"
TEXT_CAP = 400  # characters of description/reason per table row; the page shows the rest


def open_ledger(study: Study) -> Ledger | None:
    """A read-only connection, or None while the study has not run yet."""
    if not study.ledger_path.exists():
        return None
    return Ledger(study.ledger_path, readonly=True)


def _clip(text: str | None, cap: int = TEXT_CAP) -> str:
    text = text or ""
    return text if len(text) <= cap else text[: cap - 1] + "…"


def better(a: float, b: float, goal: str) -> bool:
    return a < b if goal == "minimize" else a > b


def relative_gain(base: float | None, best: float | None, goal: str) -> float | None:
    """Improvement over the baseline as a fraction, positive when better for either goal."""
    if base is None or best is None or base == 0:
        return None
    change = (best - base) / abs(base)
    return (-change if goal == "minimize" else change) + 0.0  # never -0.0


# -- chart points -------------------------------------------------------------------------------


def points(ledger: Ledger, since: int = -1, after: float | None = None) -> dict[str, Any]:
    """Decided experiments as parallel arrays, for the chart: those numbered above `since`,
    or, with `after`, those decided at or after that time (a poll's cursor).

    Polling by decision time rather than by number matters with parallel workers: #7 can be
    decided before #6, and a client asking for "above 7" would never see #6. `cursor` is
    the latest decision time, read before the rows so nothing decided in between is lost
    (rows at exactly the cursor come again; the client ignores numbers it has).
    `s` is a string of status letters (see STATUS_CODE); `v` holds null for failures. Keeps
    carry their descriptions for labels and tooltips (keeps are few; discards are many).
    """
    # decided_at is set only by a decision and never cleared: MAX is one index lookup.
    cursor = ledger.db.execute("SELECT MAX(decided_at) FROM experiments").fetchone()[0]
    if after is None:
        where, args = "state='decided' AND n>?", (since,)
    else:
        where, args = "decided_at>=? AND state='decided'", (after,)
    rows = ledger.db.execute(
        f"SELECT n, status, value FROM experiments WHERE {where} ORDER BY n", args
    ).fetchall()
    ns, vs, codes = [], [], []
    for n, status, value in rows:
        ns.append(n)
        vs.append(value if value is not None and math.isfinite(value) else None)
        codes.append(STATUS_CODE.get(status or "", "i"))
    labels = {
        str(n): desc
        for n, desc in ledger.db.execute(
            f"SELECT n, description FROM experiments WHERE {where} AND status='keep' ORDER BY n",
            args,
        )
    }
    return {"n": ns, "v": vs, "s": "".join(codes), "labels": labels, "cursor": cursor}


# -- summary ------------------------------------------------------------------------------------


def current(ledger: Ledger) -> dict[str, Any] | None:
    """The running experiment published by the controller in meta "current", if any."""
    raw = ledger.get_meta("current") or ""
    if not raw:
        return None
    try:
        cur = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(cur, dict):
        return None
    # With several slots, "current" is the latest to start; name the others too.
    rows = ledger.db.execute("SELECT n FROM experiments WHERE state='running' ORDER BY n")
    cur["also_running"] = [n for (n,) in rows if n != cur.get("experiment")]
    return cur


def holdout(ledger: Ledger) -> dict[int, float]:
    """Experiment → its holdout value: the last successful holdout measurement, as
    `status` counts it (overnight.store.status). Empty without a [holdout] (the common case)."""
    rows = ledger.db.execute(
        "SELECT n, value FROM measurements WHERE kind='holdout' AND exit_code=0"
        " AND value IS NOT NULL ORDER BY id"
    )
    return {n: value for n, value in rows}


def summary(study: Study, ledger: Ledger) -> dict[str, Any]:
    """`status --json` plus what the report and the dashboard add: relative gain, the
    running experiment, holdout vs search metric, and the server's clock for countdowns."""
    from overnight.store.study import status_of

    st = status_of(study, ledger)
    goal = st["metric"]["goal"]
    st["relative_gain"] = relative_gain(st["baseline"]["value"], st["best"]["value"], goal)
    kept = st["counts"]["keep"]
    st["improvements"] = max(0, kept - 1)  # the baseline counts as a keep
    st["current"] = current(ledger)
    st["now"] = time.time()
    # `status` reports the holdout (baseline and best, keeps, diverging); add the relative
    # gains so the report can set the holdout's movement next to the search metric's.
    hold = st.get("holdout")
    if hold:
        hold["holdout_gain"] = relative_gain(hold.get("baseline"), hold.get("best"), hold["goal"])
        hold["search_gain"] = st["relative_gain"]
    return st


# -- keeps --------------------------------------------------------------------------------------


def keeps(ledger: Ledger, with_diffs: bool = True, diff_cap: int = 60_000) -> list[dict[str, Any]]:
    """Every keep in order with its delta over the previous keep (the best it replaced)."""
    cols = "n, value, description, commit_sha, wall_s, decided_at, rationale"
    cols += ", substr(diff, 1, ?) AS diff, length(diff) AS diff_len" if with_diffs else ""
    args = (diff_cap,) if with_diffs else ()
    rows = ledger.db.execute(
        f"SELECT {cols} FROM experiments WHERE status='keep' ORDER BY n", args
    ).fetchall()
    hold = holdout(ledger)
    out: list[dict[str, Any]] = []
    prev: float | None = None
    for r in rows:
        d = dict(r)
        d["experiment"] = d.pop("n")
        d["commit"] = d.pop("commit_sha")
        d["delta"] = None if prev is None or d["value"] is None else d["value"] - prev
        d["holdout"] = hold.get(d["experiment"])
        if with_diffs:
            d["diff_truncated"] = (d.pop("diff_len") or 0) > diff_cap
        prev = d["value"] if d["value"] is not None else prev
        out.append(d)
    return out


# -- experiment table ---------------------------------------------------------------------------


def _filters(statuses: list[str] | None, q: str | None) -> tuple[str, list[Any]]:
    where, args = [], []
    if statuses:
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        args += statuses
    if q:
        # LIKE is a full scan, but only a typed search pays for it; paging alone stays indexed.
        where.append("(description LIKE ? ESCAPE '\\' OR reason LIKE ? ESCAPE '\\'"
                     " OR CAST(n AS TEXT) = ?)")  # fmt: skip
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        args += [pattern, pattern, q.strip()]
    return (" WHERE " + " AND ".join(where)) if where else "", args


def _table_row(r: Any) -> dict[str, Any]:
    return {
        "experiment": r["n"],
        "status": r["status"] or r["state"],
        "decided": r["state"] == "decided",
        "value": r["value"],
        "description": _clip(r["description"]),
        "reason": _clip(r["reason"]),
        "wall_s": r["wall_s"],
        "proposer": r["proposer"],
        "decided_at": r["decided_at"],
    }


def page(
    ledger: Ledger,
    offset: int = 0,
    limit: int = 50,
    statuses: list[str] | None = None,
    q: str | None = None,
    newest_first: bool = True,
) -> dict[str, Any]:
    """One page of the experiment table, newest first, with the filtered total."""
    where, args = _filters(statuses, q)
    order = "DESC" if newest_first else "ASC"
    rows = ledger.db.execute(
        f"SELECT {TABLE_COLUMNS} FROM experiments{where} ORDER BY n {order} LIMIT ? OFFSET ?",
        (*args, max(1, min(limit, 500)), max(0, offset)),
    ).fetchall()
    total = ledger.db.execute(f"SELECT COUNT(*) FROM experiments{where}", args).fetchone()[0]
    return {"total": total, "offset": offset, "rows": [_table_row(r) for r in rows]}


def all_rows(ledger: Ledger) -> list[list[Any]]:
    """Every experiment as a compact row [n, status, value, description, reason, wall_s],
    for the report's client-side table (arrays, not objects: 100k rows stay a few MB)."""
    rows = ledger.db.execute(
        "SELECT n, COALESCE(status, state), value, substr(description, 1, ?),"
        " substr(reason, 1, ?), wall_s FROM experiments ORDER BY n",
        (TEXT_CAP, TEXT_CAP),
    )
    return [list(r) for r in rows]


# -- one experiment -----------------------------------------------------------------------------


def experiment(study: Study, ledger: Ledger, n: int) -> dict[str, Any] | None:
    """One experiment in full: the `show --json` fields plus the best it was judged against."""
    row = ledger.row(n)
    if row is None:
        return None
    rec = ledger.get(n)
    assert rec is not None
    out = rec.public()
    prior = ledger.db.execute(
        "SELECT n, value FROM experiments WHERE status='keep' AND n<? ORDER BY n DESC LIMIT 1",
        (n,),
    ).fetchone()
    out.update(
        state=rec.state,
        hypothesis=rec.hypothesis,
        diff=row["diff"] or "",
        usage=json.loads(row["usage"] or "{}"),
        measurements=ledger.measurements(n),
        meta=rec.meta,
        created_at=rec.created_at,
        decided_at=rec.decided_at,
        prior_best={"experiment": prior[0], "value": prior[1]} if prior else None,
        previous=n - 1 if n > 0 else None,
        next=n + 1 if ledger.row(n + 1) is not None else None,
    )
    return out


# -- experiment folder --------------------------------------------------------------------------

LOG_SUFFIXES = (".stdout", ".stderr")
MAX_LISTED = 500


def exp_files(exp_dir: Path) -> list[dict[str, Any]]:
    """Files in an experiment folder (logs, traces, artifacts), relative paths and sizes."""
    if not exp_dir.is_dir():
        return []
    out: list[dict[str, Any]] = []
    # os.walk, not sorted(rglob): an artifacts folder with 100k files must not be listed
    # in full just to show the first few hundred.
    for folder, dirs, files in os.walk(exp_dir):
        dirs.sort()
        base = Path(folder)
        for name in sorted(files):
            path = base / name
            try:
                st = os.lstat(path)
            except OSError:  # removed while we looked (a run still writing)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # a link a run planted (to /proc/self/environ, a hidden file)
            size = st.st_size
            out.append({"path": path.relative_to(exp_dir).as_posix(), "size": size})
            if len(out) >= MAX_LISTED:
                return out
    return out


def safe_child(exp_dir: Path, rel: str) -> Path | None:
    """`exp_dir/rel` when it is a regular file inside `exp_dir` reached through no link."""
    path = safefs.inside(exp_dir, rel)
    if path is None or not safefs.link_free(exp_dir, path) or not path.is_file():
        return None
    return path


def read_head(path: Path, max_bytes: int) -> tuple[str, bool]:
    """The first `max_bytes` of a text file and whether it was cut ("" for a link)."""
    try:
        data = safefs.read_bytes(path.parent, path.name, max_bytes + 1)
    except OSError:
        return "", False
    return data[:max_bytes].decode("utf-8", "replace"), len(data) > max_bytes
