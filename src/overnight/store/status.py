"""What `status` shows about trust: the search metric next to the hidden holdout, and the
drift of the best found by re-measuring it. For the user only: nothing here reaches a
proposer (context.py builds the proposer's view from experiment records, which never hold
holdout values)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from overnight.judging.controls import ControlRow, summarize
from overnight.judging.rules import fmt, gain
from overnight.store.ledger import Ledger

if TYPE_CHECKING:
    from overnight.config import Config

# Ledger meta: why the last `overnight run` ended (experiment/stopping.py writes it).
STOPPED_META = "stopped_because"


def stop_status(ledger: Ledger) -> dict[str, Any]:
    """`stopped_because` (the sentence) and `stopped_by` (limit, breaker, signal or error)
    of the last `overnight run`; both None while one is going or before the first ends."""
    raw = ledger.get_meta(STOPPED_META) or ""
    data = json.loads(raw) if raw.startswith("{") else {}
    return {"stopped_because": data.get("reason"), "stopped_by": data.get("by")}


def holdout_status(cfg: Config, ledger: Ledger) -> dict[str, Any] | None:
    """The search metric and the holdout of the baseline and of every keep, side by side.
    `diverging`: the search metric improved on the baseline while the holdout did not.
    Three indexed queries, so `status` stays fast on a study of 100,000 experiments."""
    h = cfg.holdout
    if not h.command:
        return None
    db = ledger.db
    holdout: dict[int, float] = {}
    for n, value in db.execute(
        "SELECT n, value FROM measurements WHERE kind='holdout' AND exit_code=0"
        " AND value IS NOT NULL ORDER BY id"
    ):
        holdout[n] = value  # the latest holdout run of each experiment
    # Decision order: parallel slots can keep a lower-numbered experiment last.
    series = [
        {"experiment": n, "value": value, "holdout": holdout.get(n)}
        for n, value in db.execute(
            "SELECT n, value FROM experiments WHERE status='keep' ORDER BY decided_at, n"
        )
    ]
    base = series[0] if series else None
    best = series[-1] if series else None
    diverging = False
    if base and best and best is not base and None not in (base["value"], best["value"]):
        metric_gain = gain(best["value"], base["value"], cfg.metric.goal)
        if base["holdout"] is not None and best["holdout"] is not None:
            diverging = metric_gain > 0 and gain(best["holdout"], base["holdout"], h.goal) <= 0
    rejected = sum(
        1 for (meta,) in db.execute(
            "SELECT meta FROM experiments WHERE status='rejected' AND meta LIKE '%holdout%'"
        )
        if json.loads(meta).get("verdict", {}).get("stage") == "holdout"
    )  # fmt: skip
    return {
        "name": h.name,
        "goal": h.goal,
        "tolerance": h.tolerance,
        "baseline": base["holdout"] if base else None,
        "best": best["holdout"] if best else None,
        "diverging": diverging,
        "rejected": rejected,
        "reads": holdout_reads(cfg, ledger),
        "keeps": series,
    }


def holdout_reads(cfg: Config, ledger: Ledger) -> dict[str, Any]:
    """Every run of the holdout, this night (the latest `overnight run`) and in total,
    against `[holdout] budget` (reads per night, 0: no limit)."""
    night = json.loads(ledger.get_meta("night") or "{}")
    return {
        "night": ledger.count_events("holdout_read", int(night.get("after_event", 0))),
        "total": ledger.count_events("holdout_read"),
        "budget": cfg.holdout.budget,
        "held": sum(1 for (meta,) in ledger.db.execute(
            "SELECT meta FROM experiments WHERE status='suspect' AND meta LIKE '%\"hold\"%'")
            if json.loads(meta).get("verdict", {}).get("hold")),
    }  # fmt: skip


def controls_status(cfg: Config, ledger: Ledger) -> dict[str, Any] | None:
    """The night's measured false-keep rate (`[judge] controls`); None when no control was
    ever scheduled. One indexed query over the controls only."""
    rows = []
    if ledger.has_column("control_of"):
        for n, status, meta in ledger.db.execute(
            "SELECT n, status, meta FROM experiments WHERE control_of IS NOT NULL"
            " AND state='decided' ORDER BY n"
        ):
            c = json.loads(meta).get("control") or {}
            rows.append(ControlRow(n, c.get("verdict") or status, c.get("gain")))
    if not rows and not cfg.judge.controls:
        return None
    m = cfg.metric
    return summarize(rows, cfg.judge.controls, m.alpha, m.repeats, m.confirm)


def drift_status(ledger: Ledger) -> dict[str, Any] | None:
    """The re-measurements of the best (`remeasure_every`), the latest first."""
    events = ledger.events("drift")
    if not events:
        return None
    last = events[-1]
    return {
        "remeasured": len(events),
        "significant": sum(1 for e in events if e.get("significant")),
        "last": {
            k: last.get(k)
            for k in (
                "experiment",
                "before",
                "after",
                "shift",
                "sigma",
                "p",
                "significant",
                "error",
                "at",
            )
        },  # fmt: skip
    }


def holdout_line(status: dict[str, Any], metric: str) -> str | None:
    h = status.get("holdout")
    if not h:
        return None
    base_m = status["baseline"]["value"]
    best_m = status["best"]["value"]
    line = (f"search {metric} {fmt(base_m)} → {fmt(best_m)}  |  holdout {h['name']} "
            f"{fmt(h['baseline'])} → {fmt(h['best'])}")  # fmt: skip
    if h["rejected"]:
        line += f"  ({h['rejected']} keep(s) refused by the holdout)"
    reads = h.get("reads")
    if reads:
        budget = f" of {reads['budget']}" if reads["budget"] else ""
        line += f"  ·  {reads['night']}{budget} holdout read(s) this night, {reads['total']} in all"
        if reads["held"]:
            line += f", {reads['held']} keep(s) held: budget spent"
    if h["diverging"]:
        line += "  ⚠ diverging: the search metric improved, the holdout did not (overfitting?)"
    return line


def drift_line(status: dict[str, Any]) -> str | None:
    d = status.get("drift")
    if not d:
        return None
    last = d["last"]
    if last.get("error"):
        return f"drift: the last re-measurement of the best failed: {last['error']}"
    sigma = f", {last['sigma']:+.2f}σ" if last.get("sigma") is not None else ""
    p = f", p = {last['p']:.3g}" if last.get("p") is not None else ""
    flag = "  ⚠ significant" if last.get("significant") else ""
    return (f"drift: best (experiment {last['experiment']}) re-measured {d['remeasured']}×, "
            f"last {fmt(last['before'])} → {fmt(last['after'])}{sigma}{p}{flag}")  # fmt: skip


def controls_line(status: dict[str, Any]) -> str | None:
    c = status.get("controls")
    if not c:
        return None
    if not c["run"]:
        return f"controls: one in every {c['every']} experiments; none judged yet"
    low, high = c["interval"]
    text = (f"false-keep rate {c['rate']:.1%}: {c['would_keep']} of {c['run']} controls would "
            f"have been kept ({c['level']:.0%} CI {low:.1%}–{high:.1%}; alpha {c['alpha']:g})")
    if c["high"]:
        text += f"  ⚠ above alpha: {c['suggestion']}"
    return text  # fmt: skip
