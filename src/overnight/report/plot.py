"""progress.png: the autoresearch progress plot.

Every decided experiment is a faint dot, keeps are highlighted on the running-best staircase
with short labels, crashes and timeouts are ticks along the bottom axis. matplotlib is an
optional dependency (`overnight[report]`), imported only here and only when called.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overnight.judging.rules import fmt

KEEP = "#1a9850"
DISCARD = "#8c8c8c"
CRASH = "#d73027"
TIMEOUT = "#7b3294"
REJECTED = "#f46d43"
SUSPECT = "#e6ab02"
MAX_LABELS = 24
RIGHT_ZONE = 0.78  # beyond this fraction of the x range, labels run left
LABEL_CHARS = 38
STATUS_NAME = {"k": "keep", "d": "discard", "c": "crash", "t": "timeout", "i": "invalid",
               "r": "rejected", "s": "suspect"}  # fmt: skip


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * (len(ordered) - 1))))]


def y_limits(kept: list[float], others: list[float], goal: str) -> tuple[float, float] | None:
    """A y range that shows every keep and most discards. One diverged run (1e9) must not
    flatten the staircase: on the worse side, discards count up to their 90th percentile and
    never beyond three times the keeps' span past the worst keep; the rest is drawn pinned
    to the edge."""
    if not kept and not others:
        return None
    vals = list(kept)
    if others:
        minimize = goal == "minimize"
        cut = _percentile(others, 0.9 if minimize else 0.1)
        if kept:
            span = (max(kept) - min(kept)) or abs(kept[0]) * 0.1 or 1.0
            cut = min(cut, max(kept) + 3 * span) if minimize else max(cut, min(kept) - 3 * span)
        vals += [v for v in others if (v <= cut if minimize else v >= cut)]
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


def pick_labels(keeps: list[dict[str, Any]], x_span: float) -> list[int]:
    """Indices of the keeps to label. All of them when few; otherwise the biggest steps,
    greedily skipping any closer than 1/45 of the width to one already chosen, and in the
    right-hand zone (where labels run left) only the best."""
    # The baseline is marked by its own symbol and named in the title.
    first = 1 if keeps and keeps[0]["experiment"] == 0 else 0
    zone = x_span * RIGHT_ZONE
    if len(keeps) - first <= 12:
        chosen = list(range(first, len(keeps)))
    else:
        min_dx = x_span / 45
        order = sorted(range(len(keeps)), key=lambda i: -abs(keeps[i].get("delta") or 0.0))
        chosen = [len(keeps) - 1]  # the best is always named
        for i in order:
            x = keeps[i]["experiment"]
            if len(chosen) >= MAX_LABELS:
                break
            if i < first or i in chosen or x >= zone:
                continue
            if all(abs(x - keeps[j]["experiment"]) >= min_dx for j in chosen):
                chosen.append(i)
    # A right-running label must end before the left-running ones start, or they cross.
    lefts = [keeps[i]["experiment"] for i in chosen if keeps[i]["experiment"] >= zone]
    stop = min(lefts) - x_span * 0.2 if lefts else math.inf
    return sorted(
        i for i in chosen if keeps[i]["experiment"] >= zone or keeps[i]["experiment"] < stop
    )


def title_of(st: dict[str, Any]) -> str:
    metric = st["metric"]["name"]
    base, best = st["baseline"]["value"], st["best"]["value"]
    gain = st.get("relative_gain")
    # `+ 0.0` turns -0.0 into 0.0: "−0.00% better" reads like a regression.
    gain_text = f" ({gain * 100 + 0.0:+.2f}% better)" if gain is not None else ""
    head = f"{st['study']}: {metric} baseline {fmt(base)} → best {fmt(best)}{gain_text}"
    kept = st.get("improvements", 0)
    return f"{head}\n{st['experiments']} experiments, {kept} kept improvements"


@dataclass
class PlotInfo:
    """What the plot shows, for the report's caption and for tests."""

    path: Path
    points: dict[str, int] = field(default_factory=dict)  # status -> experiments drawn
    staircase: list[float] = field(default_factory=list)  # kept values in order
    labels: list[str] = field(default_factory=list)
    ylim: tuple[float, float] | None = None


def render_progress(
    st: dict[str, Any], pts: dict[str, Any], keeps: list[dict[str, Any]], path: Path
) -> PlotInfo:
    """Write the plot to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # never a display: report runs on headless servers
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    goal = st["metric"]["goal"]
    ns, vs, codes = pts["n"], pts["v"], pts["s"]
    total = len(ns)
    dense = total > 300
    # Failures have no value: they get their own strip under the chart, so they can never
    # hide a point and stay readable as a rug at 100k experiments.
    fig, (ax, strip) = plt.subplots(
        2, 1, figsize=(14, 7.5), dpi=110, sharex=True,
        gridspec_kw={"height_ratios": [12, 1], "hspace": 0.04},
    )  # fmt: skip
    fig.subplots_adjust(left=0.07, right=0.98, top=0.89, bottom=0.09)

    measured = [k for k in keeps if k["value"] is not None]
    kept_x = [k["experiment"] for k in measured]
    kept_y = [k["value"] for k in measured]
    disc = [(n, v) for n, v, c in zip(ns, vs, codes, strict=True) if c == "d" and v is not None]
    rej = [(n, v) for n, v, c in zip(ns, vs, codes, strict=True) if c == "r" and v is not None]
    sus = [(n, v) for n, v, c in zip(ns, vs, codes, strict=True) if c == "s" and v is not None]
    lim = y_limits(kept_y, [v for _, v in disc + rej + sus], goal)
    size = 2.2 if total > 3000 else 3.2 if dense else 5

    def draw(pairs: list[tuple[int, float]], **style: Any) -> list[int]:
        """Plot the points inside the y range; return the experiments beyond it."""
        inside = [(n, v) for n, v in pairs if not lim or lim[0] <= v <= lim[1]]
        if inside:
            ax.plot([n for n, _ in inside], [v for _, v in inside], ms=size, mec="none",
                    zorder=2, **style)  # fmt: skip
        return [n for n, v in pairs if lim and not lim[0] <= v <= lim[1]]

    out = draw(disc, marker="o", ls="none", color=DISCARD, alpha=0.22 if dense else 0.45,
               label=f"discarded ({len(disc)})")  # fmt: skip
    out += draw(rej, marker="s", ls="none", color=REJECTED, alpha=0.3 if dense else 0.6,
                label=f"rejected ({len(rej)})")  # fmt: skip
    out += draw(sus, marker="D", ls="none", color=SUSPECT, alpha=0.9,
                label=f"held for review ({len(sus)})")  # fmt: skip
    if lim and out:
        worse_edge = lim[1] if goal == "minimize" else lim[0]
        ax.plot(out, [worse_edge] * len(out), "^" if goal == "minimize" else "v", ms=size,
                color=DISCARD, alpha=0.5, clip_on=False, ls="none",
                label=f"off the chart ({len(out)})", zorder=2)  # fmt: skip
    labels: list[str] = []
    if kept_x:
        last_x = max(ns) if ns else kept_x[-1]
        # Parallel slots can keep a lower-numbered experiment after a higher one, so the
        # staircase is the best so far by experiment number, not the raw keep values.
        better = min if goal == "minimize" else max
        stair = list(itertools.accumulate(kept_y, better))
        ax.step(kept_x + [last_x], stair + [stair[-1]], where="post", color=KEEP, lw=2,
                alpha=0.9, label="running best", zorder=3)  # fmt: skip
        if len(kept_x) > 1:
            ax.plot(kept_x[1:], kept_y[1:], "o", ms=7 if len(kept_x) < 200 else 4, color=KEEP,
                    mec="white", mew=0.8, ls="none", label=f"kept ({len(kept_x) - 1})",
                    zorder=4)  # fmt: skip
        ax.plot(kept_x[:1], kept_y[:1], "D", ms=7, color="white", mec=KEEP, mew=2, ls="none",
                label="baseline", zorder=4)  # fmt: skip
        labels = _label_keeps(ax, measured, float(max(1, last_x)), goal, lim or (0.0, 1.0))

    _failure_strip(strip, ns, codes, size)
    if lim:
        ax.set_ylim(*lim)
    if total:
        pad = max(1.0, total * 0.01)
        ax.set_xlim(min(ns) - pad, max(ns) + pad)
    strip.set_xlabel("experiment")
    strip.xaxis.set_major_locator(MaxNLocator(integer=True))
    better = "lower" if goal == "minimize" else "higher"
    ax.set_ylabel(f"{st['metric']['name']} ({better} is better)")
    ax.set_title(title_of(st), fontsize=12, loc="left")
    ax.grid(True, alpha=0.25)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if not total:
        ax.text(0.5, 0.5, "no experiments yet", transform=ax.transAxes, ha="center")
    elif not kept_y and not disc:
        ax.set_yticks([])
        ax.text(0.5, 0.55, "no measured value yet: every experiment failed", ha="center",
                transform=ax.transAxes, color=CRASH, fontsize=13)  # fmt: skip
    handles, _ = ax.get_legend_handles_labels()
    handles += strip.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, loc="upper right" if goal == "minimize" else "lower right",
                  fontsize=8, framealpha=0.9)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    drawn = {STATUS_NAME[c]: codes.count(c) for c in set(codes)}
    # Measured keeps are on the staircase; discards/rejects only when they have a value.
    drawn.update(discard=len(disc), rejected=len(rej), keep=len(kept_x))
    return PlotInfo(path, {k: v for k, v in drawn.items() if v}, kept_y, labels, lim)


def _label_keeps(
    ax: Any, keeps: list[dict[str, Any]], x_span: float, goal: str, lim: tuple[float, float]
) -> list[str]:
    """Label keeps autoresearch-style: sloped text starting at the point and rising into the
    worse side (up when minimizing, down when maximizing). Along a staircase that moves the
    other way, neighbouring labels stay parallel and apart instead of colliding. In the
    right-hand zone labels run left so they are not cut off; a label that would leave the
    chart at the top (bottom) slopes the other way."""
    up = goal == "minimize"
    texts = []
    for i in pick_labels(keeps, x_span):
        k = keeps[i]
        text = _short(k["description"] or f"#{k['experiment']}")
        texts.append(text)
        right = k["experiment"] < x_span * RIGHT_ZONE
        room = (lim[1] - k["value"]) if up else (k["value"] - lim[0])
        rises = up == (room > 0.15 * (lim[1] - lim[0]))
        ax.annotate(
            text, (k["experiment"], k["value"]),
            xytext=(5 if right else -5, 5 if rises else -5), textcoords="offset points",
            fontsize=7.5, color="#1b5e20", rotation=28 if right == rises else -28,
            rotation_mode="anchor", ha="left" if right else "right",
            va="bottom" if rises else "top", zorder=5, annotation_clip=True, clip_on=True,
            bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.7},
        )  # fmt: skip
    return texts


def _failure_strip(strip: Any, ns: list[int], codes: str, size: float) -> None:
    rows = (("c", CRASH, "x", "crash"), ("t", TIMEOUT, "|", "timeout"))
    dense = len(ns) > 3000
    for y, (code, color, marker, name) in enumerate(rows):
        xs = [n for n, c in zip(ns, codes, strict=True) if c == code]
        if xs:
            strip.plot(xs, [y] * len(xs), marker, ms=5 if not dense else 4, mew=1.1,
                       color=color, alpha=0.15 if dense else 0.8, ls="none",
                       label=f"{name} ({len(xs)})")  # fmt: skip
    strip.set_ylim(-0.7, 1.7)
    strip.set_yticks([0, 1], ["crash", "timeout"], fontsize=7)
    strip.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        strip.spines[side].set_visible(False)
    strip.grid(True, axis="x", alpha=0.25)
