"""See the night: `overnight report` (progress.png + report.html) and `overnight serve`.

Heavy dependencies (matplotlib, fastapi, uvicorn) are imported inside the functions that
need them, so `import overnight.report` costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from overnight.errors import UsageError

if TYPE_CHECKING:
    from overnight.report.plot import PlotInfo
    from overnight.store.study import Study


@dataclass
class ReportFiles:
    html: Path
    png: Path
    experiments: int
    plot: PlotInfo


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(
            f"{module} is not installed; install it with: pip install 'overnight[{extra}]'"
        )


def write_report(study: Study, out_dir: Path | None = None) -> ReportFiles:
    """Write progress.png and report.html into `out_dir` (default .overnight/<name>/report).

    The default stays inside .overnight/ because the user's checkout is never touched."""
    from overnight.report import queries
    from overnight.report.html import render_report
    from overnight.report.plot import render_progress

    _require("matplotlib", "report")
    out_dir = out_dir or study.state_dir / "report"
    ledger = study.open_ledger()  # raises a clear UsageError before the first run
    try:
        # One read transaction: the plot, the table and the summary agree with each other
        # even while the controller keeps appending experiments.
        ledger.db.execute("BEGIN")
        st = queries.summary(study, ledger)
        pts = queries.points(ledger)
        keeps = queries.keeps(ledger)
        rows = queries.all_rows(ledger)
        ledger.db.execute("COMMIT")
    finally:
        ledger.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = render_progress(st, pts, keeps, out_dir / "progress.png")
    html_path = out_dir / "report.html"
    tmp = html_path.with_suffix(".html.tmp")
    tmp.write_text(render_report(st, keeps, rows, plot.path), encoding="utf-8")
    tmp.replace(html_path)
    return ReportFiles(html_path, plot.path, st["experiments"], plot)
