"""The dashboard's progress chart, drawn on a canvas (100,000 dots stay fast where SVG
would not): the same picture as progress.png — faint discards, keeps on the running-best
staircase with sloped labels, crashes and timeouts in a strip under the axis — plus hover
and click. A fragment of DASHBOARD_JS: it uses that script's state `S` and helpers."""

CHART_JS = r"""
  // -- chart ----------------------------------------------------------------------------------
  function ticks(lo, hi, count) {
    const span = hi - lo || 1, raw = span / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / mag;
    const step = (f >= 7.5 ? 10 : f >= 3.5 ? 5 : f >= 1.5 ? 2 : 1) * mag;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
      out.push(+t.toPrecision(12));
    return out;
  }
  function most(xs, sign) {  // Math.max(...xs) overflows the call stack at 100k values
    let m = xs[0];
    for (const x of xs) if ((x - m) * sign > 0) m = x;
    return m;
  }
  function yRange() {
    // Same rule as progress.png: every keep, discards on the worse side up to their 90th
    // percentile, so one diverged run does not flatten the staircase.
    const keep = [], other = [];
    for (let i = 0; i < S.n.length; i++) {
      const v = S.v[i]; if (v === null) continue;
      if (S.s[i] === 'k') keep.push(v); else if ('drs'.includes(S.s[i])) other.push(v);
    }
    let vals = keep.slice();
    const mini = CFG.goal === 'minimize';
    if (other.length) {
      const sorted = other.slice().sort((a, b) => a - b);
      let cut = sorted[Math.floor((mini ? 0.9 : 0.1) * (sorted.length - 1))];
      if (keep.length) {
        const kmax = most(keep, 1), kmin = most(keep, -1);
        const span = (kmax - kmin) || Math.abs(keep[0]) * 0.1 || 1;
        cut = mini ? Math.min(cut, kmax + 3 * span) : Math.max(cut, kmin - 3 * span);
      }
      vals = vals.concat(other.filter(v => mini ? v <= cut : v >= cut));
    }
    if (!vals.length) return null;
    const lo = most(vals, -1), hi = most(vals, 1);
    const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 1;
    return [lo - pad, hi + pad];
  }
  function pickLabels(keeps, X, zone) {
    // Like progress.png: never the baseline; all keeps when few; else the biggest steps,
    // spaced apart on screen, and right of `zone` only the best.
    keeps = keeps.filter(k => k.n !== 0);
    if (!keeps.length) return keeps;
    let pool = keeps;
    if (keeps.length > 8) {
      pool = [keeps[keeps.length - 1]];
      const order = keeps.filter(k => X(k.n) < zone)
        .sort((a, b) => Math.abs(b.delta) - Math.abs(a.delta));
      for (const k of order) {
        if (pool.length >= 14) break;
        if (pool.every(c => Math.abs(X(c.n) - X(k.n)) >= 110)) pool.push(k);
      }
    }
    // Labels right of `zone` run left from their point; a right-running label must end
    // before they start, or the two would cross.
    const lefts = pool.filter(k => X(k.n) >= zone).map(k => X(k.n));
    const stop = lefts.length ? Math.min(...lefts) - 230 : Infinity;
    return pool.filter(k => X(k.n) >= zone || X(k.n) < stop);
  }
  function draw() {
    const cv = $('chart'), dpr = window.devicePixelRatio || 1;
    const w = cv.clientWidth, h = cv.clientHeight;
    cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr);
    const ctx = cv.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const N = S.n.length;
    const counts = {k: 0, d: 0, c: 0, t: 0, i: 0, r: 0};
    for (let i = 0; i < N; i++) counts[S.s[i]]++;
    cv.dataset.points = N; cv.dataset.keeps = counts.k;
    cv.dataset.failed = counts.c + counts.t; cv.dataset.last = N ? S.n[N - 1] : -1;
    $('legend').textContent = Object.keys(NAME).filter(c => counts[c]).map(
      c => NAME[c] + ' ' + counts[c]).join(' · ');
    ctx.font = '12px system-ui, sans-serif';
    if (!N) {
      ctx.fillStyle = '#656d76'; ctx.fillText('no experiments yet', w / 2 - 50, h / 2);
      return;
    }
    // Bottom margin: a strip for crashes and timeouts (they have no value), then the axis.
    const P = {l: 68, r: 18, t: 14, b: 70}, pw = w - P.l - P.r, ph = h - P.t - P.b;
    const x0 = Math.min(0, S.n[0]), x1 = Math.max(S.n[N - 1], x0 + 1);
    const yr = yRange() || [0, 1], [y0, y1] = yr;
    const X = n => P.l + (n - x0) / (x1 - x0) * pw;
    const Y = v => P.t + (y1 - v) / (y1 - y0) * ph;
    ctx.strokeStyle = '#eaeef2'; ctx.fillStyle = '#656d76'; ctx.lineWidth = 1;
    ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
    for (const t of ticks(y0, y1, 6)) {
      const y = Math.round(Y(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(P.l, y); ctx.lineTo(w - P.r, y); ctx.stroke();
      ctx.fillText(fmt(t), P.l - 6, y);
    }
    ctx.textAlign = 'center'; ctx.textBaseline = 'top';
    for (const t of ticks(x0, x1, 10)) {
      if (t !== Math.round(t)) continue;
      ctx.fillText(String(t), X(t), h - P.b + 30);
    }
    ctx.fillText('experiment', P.l + pw / 2, h - 16);
    const failY = {t: h - P.b + 10, c: h - P.b + 21};  // as in progress.png
    ctx.font = '10px system-ui, sans-serif'; ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
    ctx.fillText('crash', P.l - 6, failY.c); ctx.fillText('timeout', P.l - 6, failY.t);
    ctx.font = '12px system-ui, sans-serif';
    ctx.save(); ctx.translate(14, P.t + ph / 2); ctx.rotate(-Math.PI / 2);
    const better = CFG.goal === 'minimize' ? ' (lower is better)' : ' (higher is better)';
    ctx.fillText(CFG.metric + better, 0, -6);
    ctx.restore();
    const r = N > 3000 ? 1.5 : N > 300 ? 2.2 : 3.2;
    const edge = CFG.goal === 'minimize' ? P.t + 3 : P.t + ph - 3;
    const keeps = [];
    let prev = null;
    for (let i = 0; i < N; i++) {
      const c = S.s[i], v = S.v[i], x = X(S.n[i]);
      if (c === 'k') {
        if (v !== null) {
          keeps.push({n: S.n[i], v: v, delta: prev === null ? 0 : v - prev});
          prev = v;
        }
        continue;
      }
      if (c === 'c' || c === 't') {
        const fy = failY[c];
        ctx.strokeStyle = COLOR[c]; ctx.globalAlpha = N > 3000 ? 0.2 : 0.75; ctx.lineWidth = 1.3;
        ctx.beginPath();
        if (c === 'c') {  // a cross for a crash, a bar for a timeout
          ctx.moveTo(x - 3, fy - 3); ctx.lineTo(x + 3, fy + 3);
          ctx.moveTo(x + 3, fy - 3); ctx.lineTo(x - 3, fy + 3);
        } else { ctx.moveTo(x, fy - 4); ctx.lineTo(x, fy + 4); }
        ctx.stroke(); continue;
      }
      if (v === null) continue;
      const off = v < y0 || v > y1;
      ctx.globalAlpha = c === 'd' ? (N > 300 ? 0.3 : 0.5) : 0.6;
      ctx.fillStyle = COLOR[c];
      const y = off ? edge : Y(v);
      if (c === 'r' || c === 's') ctx.fillRect(x - r, y - r, 2 * r, 2 * r);
      else { ctx.beginPath(); ctx.arc(x, y, off ? r * 0.8 : r, 0, 2 * Math.PI); ctx.fill(); }
    }
    ctx.globalAlpha = 1;
    if (keeps.length) {
      ctx.strokeStyle = COLOR.k; ctx.lineWidth = 2; ctx.beginPath();
      keeps.forEach((k, j) => {
        if (j === 0) ctx.moveTo(X(k.n), Y(k.v));
        else { ctx.lineTo(X(k.n), Y(keeps[j - 1].v)); ctx.lineTo(X(k.n), Y(k.v)); }
      });
      ctx.lineTo(X(S.n[N - 1]), Y(keeps[keeps.length - 1].v)); ctx.stroke();
      const kr = keeps.length > 200 ? 3 : 4.5;
      for (const k of keeps) {  // the baseline hollow, every other keep filled
        const base = k.n === 0;
        ctx.fillStyle = base ? '#fff' : COLOR.k; ctx.strokeStyle = base ? COLOR.k : '#fff';
        ctx.lineWidth = base ? 2 : 1;
        ctx.beginPath(); ctx.arc(X(k.n), Y(k.v), kr, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
      }
      // Sloped labels rising into the worse side (up when minimizing), running right, or
      // left near the right edge; one that would leave the chart slopes the other way.
      ctx.fillStyle = '#1b5e20'; ctx.font = '11px system-ui, sans-serif';
      ctx.textBaseline = 'middle';
      const up = CFG.goal === 'minimize', zone = P.l + pw * 0.75;
      for (const k of pickLabels(keeps, X, zone)) {
        const text = short(S.labels[k.n] || ('#' + k.n), 30);
        const x = X(k.n), y = Y(k.v), right = x < zone;
        const room = up ? y - P.t : P.t + ph - y;
        const rises = up === room > 70;
        ctx.save();
        ctx.translate(x + (right ? 6 : -6), y + (rises ? -6 : 6));
        ctx.rotate((right === rises ? -1 : 1) * 0.4);
        ctx.textAlign = right ? 'left' : 'right';
        ctx.fillText(text, 0, 0); ctx.restore();
      }
    }
    S.layout = {X: X, Y: Y, x0: x0, x1: x1, pw: pw, P: P, failY: failY, edge: edge, y0: y0, y1: y1};
  }
  function nearest(mx, my) {
    const L = S.layout; if (!L || !S.n.length) return -1;
    const lo = L.x0 + (mx - 8 - L.P.l) / L.pw * (L.x1 - L.x0);
    const hi = L.x0 + (mx + 8 - L.P.l) / L.pw * (L.x1 - L.x0);
    let a = 0, b = S.n.length;
    while (a < b) { const m = (a + b) >> 1; if (S.n[m] < lo) a = m + 1; else b = m; }
    let best = -1, bd = 81;
    for (let i = a; i < S.n.length && S.n[i] <= hi; i++) {
      const c = S.s[i], v = S.v[i];
      let y;
      if (c === 'c' || c === 't') y = L.failY[c];
      else if (v === null) continue;
      else y = (v < L.y0 || v > L.y1) ? L.edge : L.Y(v);
      const d = Math.pow(L.X(S.n[i]) - mx, 2) + Math.pow(y - my, 2);
      if (d < bd || (d === bd && c === 'k')) { bd = d; best = i; }
    }
    return best;
  }
  function hover(ev) {
    const rect = $('chart').getBoundingClientRect();
    const i = nearest(ev.clientX - rect.left, ev.clientY - rect.top), tip = $('tip');
    $('chart').style.cursor = i >= 0 ? 'pointer' : 'default';
    if (i < 0) { tip.hidden = true; return; }
    const label = S.labels[S.n[i]];
    tip.textContent = '#' + S.n[i] + ' ' + NAME[S.s[i]] + ' ' + fmt(S.v[i]) +
      (label ? ' — ' + short(label, 80) : '');
    tip.style.left = (ev.clientX - rect.left + 12) + 'px';
    tip.style.top = (ev.clientY - rect.top + 12) + 'px';
    tip.hidden = false;
  }

"""
