"""report.html: one self-contained file to share the morning after.

The plot is embedded as a base64 PNG, CSS and JS are inline, and the full experiment table
travels as compact JSON rendered page by page in the browser, so the file opens offline and
stays usable at 100,000 experiments. Only keeps carry diffs (they are few).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from overnight.report.style import (
    CSS,
    diff_html,
    esc,
    num,
    pct,
    pill,
    script_json,
    signed,
    summary_cards,
)
from overnight.store.records import STATUSES

# The table script: filters by status and text, pages through the rows, never builds more
# than one page of DOM. Rows are [n, status, value, description, reason, wall_s].
TABLE_JS = r"""
(function () {
  const rows = JSON.parse(document.getElementById('rows').textContent);
  const body = document.querySelector('#all tbody');
  const info = document.getElementById('pageinfo');
  const q = document.getElementById('q');
  const boxes = Array.from(document.querySelectorAll('input[name=status]'));
  const newest = document.getElementById('newest');
  const PAGE = 100;
  let page = 0, shown = rows;
  function fmt(v) { return v === null ? '—' : (+v.toPrecision(6)).toString(); }
  function cell(tr, text, cls) {
    const td = document.createElement('td'); td.textContent = text;
    if (cls) td.className = cls; tr.appendChild(td); return td;
  }
  function apply() {
    const on = new Set(boxes.filter(b => b.checked).map(b => b.value));
    const text = q.value.trim().toLowerCase();
    const known = %STATUSES%;
    shown = rows.filter(r => on.has(known.includes(r[1]) ? r[1] : 'other'));
    if (text) shown = shown.filter(r => String(r[0]) === text ||
      (r[3] || '').toLowerCase().includes(text) || (r[4] || '').toLowerCase().includes(text));
    if (newest.checked) shown = shown.slice().reverse();
    page = 0; render();
  }
  function render() {
    body.textContent = '';
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    for (const r of shown.slice(page * PAGE, (page + 1) * PAGE)) {
      const tr = document.createElement('tr'); tr.className = 'row';
      cell(tr, r[0], 'num');
      const st = cell(tr, ''); const p = document.createElement('span');
      p.className = 'pill ' + r[1]; p.textContent = r[1]; st.appendChild(p);
      cell(tr, fmt(r[2]), 'num');
      cell(tr, r[5] === null ? '—' : r[5].toFixed(1) + 's', 'num');
      cell(tr, r[3]);
      cell(tr, r[1] === 'keep' ? '' : r[4], 'reason');
      body.appendChild(tr);
    }
    info.textContent = shown.length + ' of ' + rows.length + ' experiments · page ' +
      (page + 1) + ' / ' + pages;
    document.getElementById('prev').disabled = page === 0;
    document.getElementById('next').disabled = page >= pages - 1;
  }
  document.getElementById('prev').onclick = () => { page--; render(); };
  document.getElementById('next').onclick = () => { page++; render(); };
  q.addEventListener('input', apply);
  boxes.forEach(b => b.addEventListener('change', apply));
  newest.addEventListener('change', apply);
  apply();
})();
"""


def _holdout_section(st: dict[str, Any]) -> str:
    hold = st.get("holdout")
    if not hold:
        return ""
    rows = "".join(
        f'<tr><td class="num">{h["experiment"]}</td><td class="num">{num(h["value"])}</td>'
        f'<td class="num">{num(h["holdout"])}</td></tr>'
        for h in (hold.get("keeps") or [])[-200:]
    )
    warning = (
        "<p class='bad'>⚠ diverging: the search metric improved, the holdout did not "
        "(overfitting to the search metric?)</p>"
        if hold.get("diverging")
        else ""
    )
    refused = (
        f" {hold['rejected']} keep(s) were refused by the holdout." if hold.get("rejected") else ""
    )
    return (
        f"<h2>Holdout vs search metric</h2><p class='sub'>The holdout "
        f"<b>{esc(hold['name'])}</b> ({esc(hold['goal'])}) is never shown to the proposer. "
        f"From the baseline to the best it moved {num(hold.get('baseline'))} → "
        f"{num(hold.get('best'))} ({pct(hold.get('holdout_gain'))} better) while the search "
        f"metric moved {num(st['baseline']['value'])} → {num(st['best']['value'])} "
        f"({pct(hold.get('search_gain'))} better).{refused}</p>{warning}"
        f"<table style='width:auto'><thead><tr><th class='num'>keep #</th>"
        f"<th class='num'>{esc(st['metric']['name'])}</th><th class='num'>{esc(hold['name'])}"
        f"</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _keeps_section(st: dict[str, Any], keeps: list[dict[str, Any]]) -> str:
    has_hold = any(k.get("holdout") is not None for k in keeps)
    head = (
        "<tr><th class='num'>#</th><th class='num'>" + esc(st["metric"]["name"]) + "</th>"
        "<th class='num'>Δ vs previous best</th>"
        + ("<th class='num'>holdout</th>" if has_hold else "")
        + "<th>description</th><th>commit</th></tr>"
    )
    rows = []
    for k in keeps:
        diff = (
            f"<details><summary>diff</summary>{diff_html(k['diff'], k['diff_truncated'])}</details>"
            if k.get("diff")
            else ""
        )
        rationale = f"<div class='reason'>{esc(k['rationale'])}</div>" if k["rationale"] else ""
        rows.append(
            f"<tr class='row'><td class='num'>{k['experiment']}</td>"
            f"<td class='num'>{num(k['value'])}</td><td class='num'>{signed(k['delta'])}</td>"
            + (f"<td class='num'>{num(k['holdout'])}</td>" if has_hold else "")
            + f"<td>{esc(k['description'])}{rationale}{diff}</td>"
            f"<td><code>{esc((k['commit'] or '')[:10])}</code></td></tr>"
        )
    return (
        f"<h2>Keeps ({len(keeps)})</h2><p class='sub'>Each keep is one commit on "
        f"<code>{esc(st['branch'])}</code>; Δ is against the best it replaced.</p>"
        f"<table id='keeps'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _table_section(st: dict[str, Any], rows: list[list[Any]]) -> str:
    counts = st["counts"]
    others = sum(1 for r in rows if r[1] not in STATUSES)
    boxes = "".join(
        f"<label><input type='checkbox' name='status' value='{s}' checked> {pill(s)} "
        f"{counts.get(s, 0)}</label>"
        for s in STATUSES
    )
    if others:
        boxes += (
            f"<label><input type='checkbox' name='status' value='other' checked> "
            f"undecided {others}</label>"
        )
    return (
        "<h2>Every experiment</h2><div class='filters'>" + boxes + "<input type='search' id='q' "
        "placeholder='filter by text or #number'><label><input type='checkbox' id='newest'> "
        "newest first</label></div><div class='pager'><button id='prev'>‹ prev</button>"
        "<button id='next'>next ›</button><span id='pageinfo'></span></div>"
        "<table id='all'><thead><tr><th class='num'>#</th><th>status</th>"
        f"<th class='num'>{esc(st['metric']['name'])}</th><th class='num'>wall</th>"
        "<th>description</th><th>reason</th></tr></thead><tbody></tbody></table>"
        f"<script type='application/json' id='rows'>{script_json(rows)}</script>"
        f"<script>{TABLE_JS.replace('%STATUSES%', script_json(list(STATUSES)))}</script>"
    )


def render_report(
    st: dict[str, Any],
    keeps: list[dict[str, Any]],
    rows: list[list[Any]],
    png: Path,
) -> str:
    """The whole report.html as a string."""
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.get("now") or time.time()))
    start = (st.get("start_commit") or "")[:10]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>overnight · {esc(st['study'])}</title><style>{CSS}</style></head><body><main>"
        f"<h1>overnight · {esc(st['study'])}</h1>"
        f"<div class='sub'>{esc(st['metric']['name'])} ({esc(st['metric']['goal'])}) · branch "
        f"<code>{esc(st['branch'])}</code> from <code>{esc(start)}</code> · generated {when}"
        "</div>"
        + summary_cards(st)
        + f"<img class='plot' alt='progress plot' src='data:image/png;base64,{image}'>"
        + _holdout_section(st)
        + _keeps_section(st, keeps)
        + _table_section(st, rows)
        + "</main></body></html>"
    )
