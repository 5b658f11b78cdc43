"""The dashboard's HTML: the live overview page (filled in by DASHBOARD_JS) and the
server-rendered experiment page. Everything user- or model-written is escaped."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overnight.isolation.capture import tail_text
from overnight.report.dashboard_js import DASHBOARD_JS
from overnight.report.queries import LOG_SUFFIXES, read_head
from overnight.report.style import (
    CSS,
    diff_html,
    duration,
    esc,
    num,
    pill,
    script_json,
    signed,
)
from overnight.store.records import STATUSES

if TYPE_CHECKING:
    from overnight.store.study import Study

LOG_TAIL = 6000  # bytes of each log shown inline; the file view has the rest
TEXT_HEAD = 100_000  # bytes of the prompt/response shown inline
TRACE_PREVIEW = 20  # lines of each trace file shown inline
TRACE_FILES = 6

EXTRA_CSS = """
.chartbox { position: relative; border: 1px solid var(--line); border-radius: 8px;
  padding: 6px; background: #fff; }
#chart { width: 100%; height: 420px; display: block; }
#tip { position: absolute; background: #1f2328; color: #fff; font-size: 12px; padding: 3px 7px;
  border-radius: 4px; pointer-events: none; max-width: 420px; }
.runbox { margin: 10px 0; padding: 10px 12px; border: 1px solid var(--line); border-radius: 8px;
  background: var(--panel); }
.progress { height: 6px; background: #eaeef2; border-radius: 3px; margin-top: 6px;
  overflow: hidden; }
#bar { height: 100%; background: #0969da; width: 0; transition: width .25s linear; }
.nav { display: flex; gap: 14px; margin: 6px 0 2px; }
.kv { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; }
.kv dt { color: var(--muted); } .kv dd { margin: 0; }
"""


def _head(title: str, extra: str = "") -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}{EXTRA_CSS}</style>{extra}</head><body><main>"
    )


def dashboard(study: Study) -> str:
    """The overview page. Static shell; the script polls the JSON API and fills it."""
    metric, goal = study.cfg.metric.name, study.cfg.metric.goal
    cfg = {"study": study.name, "metric": metric, "goal": goal}
    boxes = "".join(
        f"<label><input type='checkbox' name='status' value='{s}' checked> {pill(s)}</label>"
        for s in STATUSES
    )
    return (
        _head(f"overnight · {study.name}") + f"<h1>overnight · {esc(study.name)}</h1>"
        f"<div class='sub'><span id='headline'>{esc(metric)} ({esc(goal)})</span> · branch "
        f"<code>{esc(study.branch)}</code> · <span id='live' class='muted'>connecting…</span>"
        "</div>"
        "<div id='running' class='runbox'>…</div>"
        "<div class='progress' hidden><div id='bar'></div></div>"
        "<div id='cards' class='cards'></div>"
        "<div class='chartbox'><canvas id='chart' data-points='0'></canvas>"
        "<div id='tip' hidden></div></div><div id='legend' class='muted'></div>"
        "<h2>Experiments</h2><div class='filters'>" + boxes + "<input type='search' id='q' "
        "placeholder='filter by text or #number'></div>"
        "<div class='pager'><button id='prev'>‹ newer</button><button id='next'>older ›</button>"
        "<span id='pageinfo'></span></div>"
        "<table><thead><tr><th class='num'>#</th><th>status</th>"
        f"<th class='num'>{esc(metric)}</th><th class='num'>wall</th><th>description</th>"
        "<th>reason</th></tr></thead><tbody id='rows'></tbody></table>"
        f"<script type='application/json' id='cfg'>{script_json(cfg)}</script>"
        f"<script>{DASHBOARD_JS}</script></main></body></html>"
    )


def _kv(items: list[tuple[str, str]]) -> str:
    return "<dl class='kv'>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _file_link(n: int, rel: str) -> str:
    return f"<a href='{n}/files/{esc(rel)}'>{esc(rel)}</a>"


def _measurements(info: dict[str, Any]) -> str:
    rows = info["measurements"]
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{esc(m['kind'])}</td><td class='num'>{m['repeat']}</td>"
        f"<td class='num'>{num(m['value'])}</td><td class='num'>{esc(m['exit_code'])}</td>"
        f"<td>{'yes' if m['timed_out'] else ''}</td><td class='num'>{duration(m['wall_s'])}</td>"
        f"<td class='reason'>{esc(m['error'] or '')}</td></tr>"
        for m in rows
    )
    return (
        "<h2>Runs</h2><table><thead><tr><th>kind</th><th class='num'>repeat</th>"
        "<th class='num'>value</th><th class='num'>exit</th><th>timed out</th>"
        f"<th class='num'>wall</th><th>error</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _metrics(info: dict[str, Any], primary: str) -> str:
    metrics = {k: v for k, v in (info.get("metrics") or {}).items() if k != primary}
    if not metrics:
        return ""
    body = "".join(
        f"<tr><td>{esc(k)}</td><td class='num'>{num(v) if isinstance(v, int | float) else esc(v)}"
        "</td></tr>"
        for k, v in sorted(metrics.items())
    )
    return (
        "<h2>Secondary metrics</h2><table style='width:auto'><thead><tr><th>name</th>"
        f"<th class='num'>value</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _logs(n: int, exp_dir: Path, files: list[dict[str, Any]], failed: bool) -> str:
    logs = [f for f in files if "/" not in f["path"] and f["path"].endswith(LOG_SUFFIXES)]
    if not logs:
        return "<h2>Logs</h2><p class='muted'>(no logs)</p>"
    parts = []
    for f in logs:
        text = tail_text(exp_dir / f["path"], LOG_TAIL)
        cut = " (tail)" if f["size"] > LOG_TAIL else ""
        # Open what explains a failure; stdout of a keep is rarely worth the space.
        opened = " open" if text.strip() and (failed or f["path"].endswith(".stderr")) else ""
        parts.append(
            f"<details{opened}><summary>{esc(f['path'])}{cut} · {f['size']} bytes</summary>"
            f"<pre class='wrap'>{esc(text) or '(empty)'}</pre>"
            f"<a href='{n}/files/{esc(f['path'])}'>whole file</a></details>"
        )
    return "<h2>Logs</h2>" + "".join(parts)


def _texts(n: int, exp_dir: Path) -> str:
    parts = []
    for name, label in (("prompt.txt", "Proposer prompt"), ("response.txt", "Proposer response")):
        path = exp_dir / name
        if not path.is_file():
            continue
        text, cut = read_head(path, TEXT_HEAD)
        more = f" · <a href='{n}/files/{name}'>whole file</a>" if cut else ""
        parts.append(
            f"<details><summary>{label} ({path.stat().st_size} bytes){more}</summary>"
            f"<pre class='wrap'>{esc(text)}</pre></details>"
        )
    if not parts:
        return ""
    return "<h2>Proposer</h2>" + "".join(parts)


def _traces(n: int, exp_dir: Path, files: list[dict[str, Any]]) -> str:
    """Per-task results and traces, listed simply: a preview of the first lines of each."""
    traces = [f for f in files if f["path"].split("/")[0].startswith(("traces", "results"))]
    if not traces:
        return ""
    parts = []
    for f in traces[:TRACE_FILES]:
        text, _ = read_head(exp_dir / f["path"], 64_000)
        lines = text.splitlines()
        preview = "\n".join(line[:400] for line in lines[:TRACE_PREVIEW])
        more = f"\n… {len(lines) - TRACE_PREVIEW}+ more lines" if len(lines) > TRACE_PREVIEW else ""
        parts.append(
            f"<details><summary>{esc(f['path'])} · {f['size']} bytes</summary>"
            f"<pre>{esc(preview + more)}</pre>{_file_link(n, f['path'])}</details>"
        )
    rest = "".join(f"<li>{_file_link(n, f['path'])} · {f['size']} bytes</li>"
                   for f in traces[TRACE_FILES:])  # fmt: skip
    return (
        f"<h2>Traces and task results ({len(traces)})</h2>"
        + "".join(parts)
        + (f"<ul>{rest}</ul>" if rest else "")
    )


def experiment(study: Study, info: dict[str, Any]) -> str:
    """One experiment: verdict and reason, diff, metrics, runs, logs, proposer, traces."""
    n = info["experiment"]
    exp_dir = study.exp_dir(n)
    status = info["status"] or info["state"]
    decided = info["state"] == "decided"
    prior = info.get("prior_best")
    delta = (
        info["value"] - prior["value"]
        if prior and prior["value"] is not None and info["value"] is not None
        else None
    )
    refresh = "" if decided else "<meta http-equiv='refresh' content='3'>"
    nav = "<div class='nav'><a href='../'>← dashboard</a>"
    if info["previous"] is not None:
        nav += f"<a href='{info['previous']}'>‹ #{info['previous']}</a>"
    if info["next"] is not None:
        nav += f"<a href='{info['next']}'>#{info['next']} ›</a>"
    nav += "</div>"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["decided_at"] or 0))
    facts = [
        (esc(study.cfg.metric.name), f"<b>{num(info['value'])}</b>"),
        ("vs best before", f"{signed(delta)} (best #{prior['experiment']} = "
         f"{num(prior['value'])})" if prior else "—"),
        ("verdict", pill(status) + (f" <span class='reason'>{esc(info['reason'])}</span>"
                                    if info["reason"] else "")),
        ("wall", duration(info["wall_s"])),
        ("proposer", esc(info["proposer"])),
        ("cost", f"${info['cost_usd'] or 0:.4f}"),
        ("commit", f"<code>{esc(info['commit'] or '—')}</code>"),
        ("parent", f"<code>{esc(info['parent'] or '—')}</code>"),
        ("decided", when if info["decided_at"] else "not yet"),
    ]  # fmt: skip
    if info.get("hypothesis"):
        facts.append(("hypothesis", esc(info["hypothesis"])))
    if info.get("rationale"):
        facts.append(("rationale", f"<span style='white-space:pre-wrap'>"
                                   f"{esc(info['rationale'])}</span>"))  # fmt: skip
    usage = info.get("usage") or {}
    if usage:
        facts.append(("usage", f"<code>{esc(json.dumps(usage, sort_keys=True))}</code>"))
    failed = status in ("crash", "timeout", "rejected", "invalid")
    files = info.get("files") or []
    listing = "".join(f"<li>{_file_link(n, f['path'])} · {f['size']} bytes</li>" for f in files)
    return (
        _head(f"#{n} · {study.name}", refresh)
        + nav
        + f"<h1>#{n} {pill(status)} {esc(info['description'])}</h1>"
        + _kv(facts)
        + "<h2>Diff</h2>"
        + diff_html(info["diff"])
        + _metrics(info, study.cfg.metric.name)
        + _measurements(info)
        + _logs(n, exp_dir, files, failed)
        + _texts(n, exp_dir)
        + _traces(n, exp_dir, files)
        + (f"<h2>Files</h2><ul>{listing}</ul>" if listing else "")
        + "</main></body></html>"
    )
