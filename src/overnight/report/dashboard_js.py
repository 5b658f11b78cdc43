"""The dashboard's script, inline (no CDN, no build step): a canvas progress chart fed by
incremental polls, the summary cards, the running experiment's countdown, and the paged,
filterable experiment table. The chart's functions live in chart_js.py."""

from overnight.report.chart_js import CHART_JS

DASHBOARD_JS = (
    r"""
(function () {
  'use strict';
  const CFG = JSON.parse(document.getElementById('cfg').textContent);
  const TOKEN = new URLSearchParams(location.search).get('token');
  const COLOR = {k: '#1a9850', d: '#8c8c8c', c: '#d73027', t: '#7b3294', i: '#b8860b',
                 r: '#f46d43', s: '#e6ab02'};
  const NAME = {k: 'keep', d: 'discard', c: 'crash', t: 'timeout', i: 'invalid', r: 'rejected',
                s: 'suspect'};
  const PAGE = 50, POLL_MS = 2000;
  const S = {n: [], v: [], s: '', labels: {}, seen: new Set(), cursor: null, status: null,
             offset: 0, skew: 0, layout: null, currentKey: ''};
  const $ = id => document.getElementById(id);

  function api(path) {
    const headers = TOKEN ? {Authorization: 'Bearer ' + TOKEN} : {};
    return fetch(path, {headers: headers, cache: 'no-store'}).then(r => {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    });
  }
  function fmt(v) {
    return v === null || v === undefined ? '—' : (+(+v).toPrecision(6)).toString();
  }
  function pct(v) { return v === null || v === undefined ? '—' : (v * 100).toFixed(1) + '%'; }
  function dur(s) {
    if (s === null || s === undefined) return '—';
    if (s < 60) return s.toFixed(1) + 's';
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    return h ? h + 'h' + String(m % 60).padStart(2, '0') + 'm'
             : m + 'm' + String(Math.floor(s % 60)).padStart(2, '0') + 's';
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function short(t, k) {
    t = (t || '').replace(/\s+/g, ' ');
    return t.length > k ? t.slice(0, k - 1) + '…' : t;
  }

"""
    + CHART_JS
    + r"""
  // -- summary, running experiment --------------------------------------------------------
  function card(k, v, sub, cls) {
    const c = el('div', 'card');
    c.appendChild(el('div', 'k', k));
    const val = el('div', 'v' + (cls ? ' ' + cls : ''), v);
    val.appendChild(el('br')); val.appendChild(el('small', '', sub || ''));
    c.appendChild(val); return c;
  }
  function renderStatus(st) {
    const box = $('cards'); box.textContent = '';
    if (!st.started) {
      box.appendChild(card('study', 'not started', 'run `overnight run`'));
      return;
    }
    const c = st.counts, add = (...a) => box.appendChild(card(...a));
    add('baseline → best', fmt(st.baseline.value) + ' → ' + fmt(st.best.value),
        CFG.metric + ', ' + CFG.goal);
    add('relative gain', pct(st.relative_gain),
        st.best.experiment === null ? '' : 'best is #' + st.best.experiment,
        st.relative_gain > 0 ? 'good' : '');
    add('experiments', String(st.experiments), st.improvements + ' kept');
    add('hit rate', pct(st.hit_rate), 'keeps / tried');
    add('experiments / hour', st.experiments_per_hour ? st.experiments_per_hour.toFixed(1) : '—',
        dur(st.elapsed_hours * 3600) + ' since start');
    add('failed', String(c.crash + c.timeout), c.crash + ' crash · ' + c.timeout + ' timeout · ' +
        c.invalid + ' invalid · ' + c.rejected + ' rejected');
    if (c.suspect) {
      add('held for review', String(c.suspect), 'suspect: keep with overnight accept N', 'bad');
    }
    add('cost', '$' + (st.cost_usd || 0).toFixed(2), 'model calls');
    if (st.controls && st.controls.run) {
      const k = st.controls;
      add('false-keep rate', pct(k.rate), k.would_keep + ' of ' + k.run + ' controls · CI ' +
          pct(k.interval[0]) + '–' + pct(k.interval[1]), k.high ? 'bad' : '');
    }
    if (st.holdout) {
      const hd = st.holdout;
      add('holdout ' + hd.name, fmt(hd.baseline) + ' → ' + fmt(hd.best),
          pct(hd.holdout_gain) + ' vs search ' + pct(hd.search_gain) +
          (hd.diverging ? ' ⚠ diverging' : ''), hd.diverging ? 'bad' : '');
      const rd = hd.reads;
      if (rd) add('holdout reads', rd.night + (rd.budget ? ' / ' + rd.budget : ''),
                  'this night · ' + rd.total + ' in all');
    }
    $('headline').textContent = st.best.value === null ? 'no baseline yet' :
      CFG.metric + ' ' + fmt(st.baseline.value) + ' → ' + fmt(st.best.value) +
      (st.relative_gain === null ? '' : ' (' + (st.relative_gain * 100).toFixed(2) + '% better)') +
      ' · ' + st.experiments + ' experiments';
  }
  function tick() {
    const st = S.status, box = $('running'), bar = $('bar');
    if (!st) return;
    const cur = st.current, alive = st.controller && st.controller.alive;
    if (cur && alive) {
      const now = Date.now() / 1000 + S.skew, el_s = Math.max(0, now - cur.started_at);
      const left = cur.budget_s - el_s;
      const rest = left >= 0 ? dur(left) + ' left of ' + dur(cur.budget_s) + ' budget'
        : 'past the per-run budget (repeats or metric command)';
      const others = (cur.also_running || []).map(n => '#' + n).join(', ');
      box.textContent = 'running #' + cur.experiment + ': ' + short(cur.description, 100) +
        ' — ' + dur(el_s) + ' elapsed, ' + rest + (others ? ' · also running ' + others : '');
      bar.style.width = Math.min(100, 100 * el_s / cur.budget_s) + '%';
      bar.parentElement.hidden = false;
    } else {
      box.textContent = cur
        ? 'interrupted during #' + cur.experiment + ' (no `overnight run` is running)'
        : alive ? 'between experiments (proposing…)' : 'idle: no `overnight run` is running';
      bar.parentElement.hidden = true;
    }
  }

  // -- experiment table -------------------------------------------------------------------
  function loadTable() {
    const statuses = Array.from(document.querySelectorAll('input[name=status]:checked'))
      .map(b => b.value);
    const p = new URLSearchParams({offset: S.offset, limit: PAGE, order: 'desc',
                                   q: $('q').value.trim()});
    const every = document.querySelectorAll('input[name=status]').length;
    if (statuses.length < every) p.set('status', statuses.join(',') || 'none');
    return api('api/experiments?' + p.toString()).then(data => {
      const body = $('rows'); body.textContent = '';
      for (const r of data.rows) {
        const tr = el('tr', 'row');
        const a = el('a', '', '#' + r.experiment); a.href = 'experiments/' + r.experiment;
        const td0 = el('td', 'num'); td0.appendChild(a); tr.appendChild(td0);
        const td1 = el('td');
        td1.appendChild(el('span', 'pill ' + r.status, r.status)); tr.appendChild(td1);
        tr.appendChild(el('td', 'num', fmt(r.value)));
        tr.appendChild(el('td', 'num', r.wall_s === null ? '—' : r.wall_s.toFixed(1) + 's'));
        tr.appendChild(el('td', '', r.description));
        tr.appendChild(el('td', 'reason', r.status === 'keep' ? '' : r.reason));
        body.appendChild(tr);
      }
      const pages = Math.max(1, Math.ceil(data.total / PAGE));
      $('pageinfo').textContent = data.total + ' experiments · page ' +
        (Math.floor(S.offset / PAGE) + 1) + ' / ' + pages;
      $('prev').disabled = S.offset === 0;
      $('next').disabled = S.offset + PAGE >= data.total;
    });
  }

  // -- polling ----------------------------------------------------------------------------
  function merge(pts) {
    // Points come by decision time (parallel workers decide out of order), so a poll can
    // repeat a known number or bring one lower than the last: skip the first, re-sort after.
    let fresh = false, ordered = true;
    for (let i = 0; i < pts.n.length; i++) {
      const n = pts.n[i];
      if (S.seen.has(n)) continue;
      if (S.n.length && n < S.n[S.n.length - 1]) ordered = false;
      S.seen.add(n); S.n.push(n); S.v.push(pts.v[i]); S.s += pts.s[i]; fresh = true;
    }
    if (!ordered) {
      const idx = S.n.map((_, i) => i).sort((a, b) => S.n[a] - S.n[b]);
      S.n = idx.map(i => S.n[i]); S.v = idx.map(i => S.v[i]);
      S.s = idx.map(i => S.s[i]).join('');
    }
    Object.assign(S.labels, pts.labels);
    if (pts.cursor !== null) S.cursor = pts.cursor;
    return fresh;
  }
  function poll() {
    // Status first, then points: the points are at least as new as the count, so fewer
    // points than the count means one was missed (a clock step): reload them all.
    return api('api/status').then(st => {
      const q = S.cursor === null ? '' : '?after=' + S.cursor;
      return api('api/points' + q).then(pts => [st, pts]);
    }).then(([st, pts]) => {
      S.status = st; S.skew = (st.now || Date.now() / 1000) - Date.now() / 1000;
      renderStatus(st); tick();
      const key = JSON.stringify(st.current) + '|' + st.experiments;
      const grew = merge(pts);
      if (st.started && S.n.length < st.experiments) {
        S.n = []; S.v = []; S.s = ''; S.seen = new Set(); S.cursor = null;
      }
      if (grew || !S.layout) draw();
      if (grew || key !== S.currentKey) { S.currentKey = key; loadTable(); }
      $('live').textContent = 'live · updated ' + new Date().toLocaleTimeString();
      $('live').className = 'muted';
    }).catch(err => {
      $('live').textContent = 'connection lost (' + err.message + '), retrying…';
      $('live').className = 'bad';
    });
  }
  function loop() { poll().finally(() => setTimeout(loop, POLL_MS)); }

  $('chart').addEventListener('mousemove', hover);
  $('chart').addEventListener('mouseleave', () => { $('tip').hidden = true; });
  $('chart').addEventListener('click', ev => {
    const rect = $('chart').getBoundingClientRect();
    const i = nearest(ev.clientX - rect.left, ev.clientY - rect.top);
    if (i >= 0) location.href = 'experiments/' + S.n[i];
  });
  window.addEventListener('resize', draw);
  $('prev').onclick = () => { S.offset = Math.max(0, S.offset - PAGE); loadTable(); };
  $('next').onclick = () => { S.offset += PAGE; loadTable(); };
  let typing = null;
  const restart = () => { S.offset = 0; loadTable(); };
  $('q').addEventListener('input', () => {
    clearTimeout(typing); typing = setTimeout(restart, 250);  // debounce typing
  });
  document.querySelectorAll('input[name=status]')
    .forEach(b => b.addEventListener('change', restart));
  setInterval(tick, 250);
  loop();
})();
"""
)
