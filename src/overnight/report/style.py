"""What report.html and the dashboard share: CSS, escaping, number and diff formatting.

Everything is inline strings so the outputs stay single files that need no network.
"""

from __future__ import annotations

import html
from typing import Any

from overnight import jsonout
from overnight.judging.rules import fmt

CSS = """
:root { --keep:#1a9850; --discard:#8c8c8c; --crash:#d73027; --timeout:#7b3294;
  --invalid:#b8860b; --rejected:#f46d43; --suspect:#e6ab02; --ink:#1f2328; --muted:#656d76;
  --line:#d0d7de; --bg:#ffffff; --panel:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: var(--bg); margin: 0; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: var(--muted); margin-bottom: 12px; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr));
  gap: 10px; margin: 12px 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 12px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 600; margin-top: 2px; word-break: break-word; }
.card .v small { font-size: 13px; font-weight: 400; color: var(--muted); }
.good { color: var(--keep); } .bad { color: var(--crash); }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: var(--panel); position: sticky; top: 0; z-index: 1; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.row:hover { background: #f3f6fa; }
.pill { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px;
  font-weight: 600; color: #fff; background: var(--discard); white-space: nowrap; }
.pill.keep { background: var(--keep); } .pill.crash { background: var(--crash); }
.pill.timeout { background: var(--timeout); } .pill.invalid { background: var(--invalid); }
.pill.rejected { background: var(--rejected); } .pill.suspect { background: var(--suspect); }
.pill.running, .pill.proposed, .pill.applied, .pill.measured { background: #0969da; }
.pill.aborted { background: #57606a; }
.reason { color: var(--muted); }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 8px 10px; overflow: auto; max-height: 520px; font-size: 12px; line-height: 1.4;
  white-space: pre; }
pre.wrap { white-space: pre-wrap; word-break: break-word; }
.diff .add { color: #116329; background: #dafbe1; display: block; }
.diff .del { color: #82071e; background: #ffebe9; display: block; }
.diff .hunk { color: #6639ba; display: block; }
.diff .file { font-weight: 700; display: block; }
.filters { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: center;
  margin: 8px 0; }
.filters label { white-space: nowrap; }
.filters input[type=search] { padding: 5px 8px; min-width: 260px; border: 1px solid var(--line);
  border-radius: 6px; }
button { padding: 4px 10px; border: 1px solid var(--line); border-radius: 6px;
  background: var(--panel); cursor: pointer; }
button:disabled { opacity: .45; cursor: default; }
.pager { display: flex; gap: 8px; align-items: center; margin: 8px 0; color: var(--muted); }
details > summary { cursor: pointer; color: #0969da; }
.muted { color: var(--muted); }
img.plot { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 8px; }
"""

# Diff lines longer than this are cut: a minified file on one line would freeze the page.
DIFF_LINE_CAP = 2000


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(value: float | None) -> str:
    return fmt(value)


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.6g}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def pill(status: str | None) -> str:
    s = status or "?"
    return f'<span class="pill {esc(s)}">{esc(s)}</span>'


def diff_html(diff: str, truncated: bool = False) -> str:
    """A unified diff as escaped, coloured <pre> content."""
    if not diff.strip():
        return '<p class="muted">(no diff)</p>'
    out = []
    for line in diff.splitlines():
        if len(line) > DIFF_LINE_CAP:
            line = line[:DIFF_LINE_CAP] + " …(line cut)"
        cls = ""
        if line.startswith(("+++", "---", "diff --git")):
            cls = "file"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        elif line.startswith("@@"):
            cls = "hunk"
        text = esc(line) or " "
        out.append(f'<span class="{cls}">{text}</span>' if cls else text + "\n")
    if truncated:
        out.append('<span class="hunk">… diff truncated; see `overnight show`</span>')
    return '<pre class="diff">' + "".join(out) + "</pre>"


def script_json(data: Any) -> str:
    """JSON safe to place inside <script>: no `</script>` or `<!--` can end the block."""
    text = jsonout.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def summary_cards(st: dict[str, Any]) -> str:
    """The summary cards both outputs open with."""
    metric, goal = st["metric"]["name"], st["metric"]["goal"]
    gain = st.get("relative_gain")
    gain_cls = "good" if gain and gain > 0 else ""
    counts = st["counts"]
    failed = counts["crash"] + counts["timeout"]
    cards = [
        ("baseline → best", f"{num(st['baseline']['value'])} → {num(st['best']['value'])}",
         f"{metric}, {goal}"),
        ("relative gain", f'<span class="{gain_cls}">{pct(gain)}</span>',
         f"best is #{st['best']['experiment']}" if st["best"]["experiment"] is not None else ""),
        ("experiments", f"{st['experiments']}", f"{st.get('improvements', 0)} kept"),
        ("hit rate", pct(st.get("hit_rate")), "keeps / tried"),
        ("experiments / hour", "—" if not st.get("experiments_per_hour")
         else f"{st['experiments_per_hour']:.1f}", duration(st.get("elapsed_hours", 0) * 3600)
         + " since start"),
        ("failed", f"{failed}", f"{counts['crash']} crash · {counts['timeout']} timeout"),
        ("cost", f"${st.get('cost_usd') or 0:.2f}", "model calls"),
    ]  # fmt: skip
    hold = st.get("holdout")
    if hold:
        cards.append((
            f"holdout {esc(hold['name'])}",
            f"{num(hold.get('baseline'))} → {num(hold.get('best'))}",
            f"{pct(hold.get('holdout_gain'))} vs search {pct(hold.get('search_gain'))}"
            + (" ⚠ diverging" if hold.get("diverging") else ""),
        ))  # fmt: skip
        reads = hold.get("reads")
        if reads:
            budget = f" / {reads['budget']}" if reads["budget"] else ""
            cards.append(("holdout reads", f"{reads['night']}{budget}",
                          f"this night · {reads['total']} in all"))  # fmt: skip
    if counts.get("suspect"):
        cards.append(("held for review", f"{counts['suspect']}",
                      "suspect: keep one with overnight accept N"))  # fmt: skip
    ctl = st.get("controls")
    if ctl and ctl.get("run"):
        low, high = ctl["interval"]
        cards.append((
            "false-keep rate", f'<span class="{"bad" if ctl["high"] else ""}">'
            f"{pct(ctl['rate'])}</span>",
            f"{ctl['would_keep']} of {ctl['run']} controls · {ctl['level']:.0%} CI "
            f"{pct(low)}–{pct(high)}" + (f" · {ctl['suggestion']}" if ctl["high"] else ""),
        ))  # fmt: skip
    stopped = st.get("stopped_because")  # how the last `overnight run` ended
    flag = "⚠ " if st.get("stopped_by") == "breaker" else ""
    ended = f'<p class="sub">last run ended: {flag}{esc(stopped)}</p>' if stopped else ""
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{k}</div><div class="v">{v}'
        f"<br><small>{esc(sub)}</small></div></div>"
        for k, v, sub in cards
    ) + "</div>" + ended  # fmt: skip
