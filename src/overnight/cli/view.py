"""What `overnight run` shows: a rich live panel in a terminal, one line per experiment
otherwise. Views only display; they never influence the loop."""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

from overnight.experiment.view import View
from overnight.judging.rules import fmt
from overnight.store.records import ExperimentRecord

STATUS_STYLE = {
    "keep": "bold green",
    "discard": "dim",
    "crash": "red",
    "timeout": "magenta",
    "invalid": "yellow",
    "rejected": "bold red",
    "suspect": "bold yellow",
}


def best_line(status: dict[str, Any]) -> str:
    base, best = status["baseline"]["value"], status["best"]["value"]
    name = status["metric"]["name"]
    if base is None or best is None:
        return f"{name}: no baseline yet"
    rel = f" ({(best - base) / abs(base) * 100:+.2f}%)" if base else ""
    return (
        f"{name} {fmt(base)} → {fmt(best)}{rel}, best is experiment {status['best']['experiment']}"
    )


def rate_line(status: dict[str, Any]) -> str:
    hit = status.get("hit_rate")
    eph = status.get("experiments_per_hour")
    parts = [f"hit rate {hit * 100:.0f}%" if hit is not None else "hit rate —"]
    parts.append(f"{eph:.0f} experiments/h" if eph else "— experiments/h")
    if status.get("cost_usd"):
        parts.append(f"${status['cost_usd']:.2f}")
    return ", ".join(parts)


def model_line(status: dict[str, Any]) -> str:
    """Model tokens and the prompt cache's savings; empty when no model was called."""
    m = status.get("model") or {}
    if not m.get("calls"):
        return ""
    line = (f"model: {m['calls']} calls, {m['input_tokens']:,} prompt and "
            f"{m['output_tokens']:,} output tokens")  # fmt: skip
    if m.get("cached_tokens"):
        line += (f"; prompt cache {m['cached_tokens']:,} tokens ({m['cached_share']:.0%}), "
                 f"saved ${m['saved_usd']:.4f} (${m['saved_usd_per_experiment']:.4f} "
                 "per experiment)")  # fmt: skip
    return line


def counts_line(status: dict[str, Any]) -> str:
    """`keep 2 (+ baseline)  discard 5  crash 0 ...`: the baseline (experiment 0, status
    keep) is named apart, so the keeps are the improvements the plot and the report count."""
    counts = dict(status["counts"])
    keep = counts.pop("keep", 0)
    first = f"keep {max(0, keep - 1)} (+ baseline)" if keep else "keep 0"
    return "  ".join([first, *(f"{k} {v}" for k, v in counts.items())])


def seconds(value: float | None) -> str:
    """A wall time as people read it: `0.99s`, `12.3s`, `—` when there is none."""
    if value is None:
        return "—"
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"


def styled(word: str, status: str | None) -> str:
    """`word` in its status's colours (STATUS_STYLE) for a terminal; `typer.echo` drops the
    colours when the output is not one."""
    import typer

    spec = STATUS_STYLE.get(status or "", "").split()
    colour = next((w for w in spec if w not in ("bold", "dim")), None)
    return typer.style(word, fg=colour, bold="bold" in spec, dim="dim" in spec)


def log_line(rec: ExperimentRecord, width: int) -> str:
    """One experiment of `overnight log`: number, status, value, wall, commit, description
    and, unless it is a keep, the reason."""
    status = styled(f"{rec.status or rec.state:<8}", rec.status)
    text = rec.description
    if rec.status != "keep" and rec.reason:
        text += f" — {rec.reason}"
    return (f"{rec.experiment:>{width}}  {status}  {fmt(rec.value):>12}  "
            f"{seconds(rec.wall_s):>7}  {(rec.commit or '')[:7]:<7}  {' '.join(text.split())}")


def shorten(text: str, width: int) -> str:
    """`text` on one line, cut at a word boundary with "…" when longer than `width`, so a
    number is never cut in half (`WEIGHT_DECAY 0.00261 → 0.`)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > width // 2 else cut).rstrip(" ,;:") + "…"


class PlainView(View):
    """One line per experiment: for logs, pipes, CI and `--plain`."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        self._print(f"overnight: {text}")

    def decided(self, rec: ExperimentRecord, status: dict[str, Any]) -> None:
        value = fmt(rec.value) if rec.value is not None else "—"
        wall = f"{rec.wall_s:.1f}s" if rec.wall_s is not None else "—"
        best = fmt(status["best"]["value"])
        line = f"[{rec.experiment:>4}] {rec.status:<8} {value:>12}  best {best:<12} {wall:>7}  "
        line += shorten(rec.description, 80)
        if rec.status not in ("keep",) and rec.reason:
            line += f"  — {shorten(rec.reason, 160)}"
        self._print(line)

    def finished(self, reason: str, status: dict[str, Any]) -> None:
        self._print(f"overnight: {reason}")
        self._print(f"overnight: {best_line(status)}")
        self._print(f"overnight: {counts_line(status)}; {rate_line(status)}")
        self._print(f"overnight: branch {status['branch']}")


class LiveView(View):
    """A rich panel: current experiment with its budget countdown, best vs baseline, counts,
    hit rate, experiments per hour and the most recent experiments."""

    def __init__(self, study: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.study = study
        self.current = "starting…"
        self.running: dict[int, tuple[str, float]] = {}
        self.budget = 0.0
        self.status: dict[str, Any] | None = None
        self.recent: deque[ExperimentRecord] = deque(maxlen=8)
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def __rich__(self) -> Any:
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold")
        grid.add_column()
        if not self.running:
            grid.add_row("now", Text(self.current))
        for n, (description, started) in sorted(self.running.items()):
            elapsed = time.monotonic() - started
            left = max(0.0, self.budget - elapsed)
            grid.add_row("now", Text(f"experiment {n}: {shorten(description, 80)}  "
                                     f"[{elapsed:5.1f}s, {left:5.1f}s left]"))  # fmt: skip
        if self.status:
            grid.add_row("best", Text(best_line(self.status)))
            grid.add_row("counts", Text(counts_line(self.status)))
            grid.add_row("rate", Text(rate_line(self.status)))
        table = Table(expand=True, box=None, pad_edge=False)
        for col in ("#", "status", "value", "wall", "description / reason"):
            table.add_column(col, no_wrap=True, overflow="ellipsis")
        for rec in self.recent:
            # The value column already tells why a discard lost; other failures need the reason.
            plain = rec.status in ("keep", "discard")
            text = rec.description if plain else f"{rec.description} — {rec.reason}"
            table.add_row(
                str(rec.experiment),
                Text(rec.status or "", style=STATUS_STYLE.get(rec.status or "", "")),
                fmt(rec.value),
                f"{rec.wall_s:.1f}s" if rec.wall_s is not None else "—",
                Text(text),  # never markup: a reason may hold "[proposer].max_tokens" or "[/tmp]"
            )
        outer = Table.grid()
        outer.add_row(grid)
        outer.add_row(table)
        return Panel(outer, title=f"overnight · {self.study}", border_style="blue")

    def message(self, text: str) -> None:
        from rich.text import Text

        self.live.console.print(Text.assemble(("overnight: ", "dim"), text))

    def proposing(self, n: int) -> None:
        self.current = f"proposing experiment {n}…"

    def experiment_started(self, n: int, description: str, budget_s: float) -> None:
        # One entry per busy slot; a re-measured experiment restarts its clock.
        self.running[n] = (description, time.monotonic())
        self.budget = budget_s

    def decided(self, rec: ExperimentRecord, status: dict[str, Any]) -> None:
        self.recent.append(rec)
        self.status = status
        self.running.pop(rec.experiment, None)
        self.current = "proposing…"

    def finished(self, reason: str, status: dict[str, Any]) -> None:
        self.status = status
        self.current = reason
        self.running.clear()
        self.close()
        from rich.text import Text

        self.console.print(Text.assemble((reason, "bold"), f" — {best_line(status)}"))
        self.console.print(Text(f"{counts_line(status)}; {rate_line(status)}; "
                                f"branch {status['branch']}"))  # fmt: skip

    def close(self) -> None:
        if self.live.is_started:
            self.live.stop()
