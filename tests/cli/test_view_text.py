"""What the terminal views print: text stays text (never rich markup), and a line that must
be cut is cut between words, never inside a number."""

from __future__ import annotations

import io

from rich.console import Console

from overnight.cli.view import LiveView, PlainView, shorten
from overnight.store.records import ExperimentRecord

STATUS = {
    "study": "t", "branch": "overnight/t", "metric": {"name": "score", "goal": "minimize"},
    "baseline": {"experiment": 0, "value": 10.0},
    "best": {"experiment": 0, "value": 10.0, "commit": "abc"},
    "counts": {"keep": 1, "discard": 0, "crash": 0, "timeout": 0, "invalid": 1, "rejected": 0},
    "cost_usd": 0.0, "hit_rate": 0.0, "experiments_per_hour": 60.0,
}  # fmt: skip
MARKUP = "try [/tmp] and [bold]x[/bold] with [proposer].max_tokens"
TUNE = "WEIGHT_DECAY 0.00261 → 0.00417, LEARNING_RATE 0.0123 → 0.0456, BATCH_SIZE 64 → 128"


def record(description: str, reason: str = "", status: str = "invalid") -> ExperimentRecord:
    return ExperimentRecord(1, status, None, {}, None, None, description, reason, None, "p")


def test_shorten_cuts_between_words() -> None:
    cut = shorten(TUNE, 40)
    assert len(cut) <= 40 and cut.endswith("…")
    assert cut.removesuffix("…") == TUNE[: len(cut) - 1].rstrip(" ,")
    assert not cut.removesuffix("…").endswith("0.")  # no number cut in half
    assert shorten("short", 40) == "short"
    assert shorten("a\nb   c", 40) == "a b c"


def test_plain_view_prints_whole_numbers_and_text_as_it_is() -> None:
    out = io.StringIO()
    view = PlainView(out)
    view.decided(record(TUNE + " " * 3 + "and more knobs to make it long", MARKUP), STATUS)
    line = out.getvalue()
    assert MARKUP in line and "0.0" in line
    assert "0.00261 → 0.00417" in line
    view.message(MARKUP)
    assert out.getvalue().endswith(f"overnight: {MARKUP}\n")


def test_live_view_renders_markup_like_text_literally() -> None:
    view = LiveView.__new__(LiveView)  # the panel alone, without starting a live display
    view.study, view.current, view.running, view.budget = "t", MARKUP, {}, 10.0
    view.status, view.recent = STATUS, [record("[/tmp] desc", MARKUP)]
    buf = io.StringIO()
    Console(file=buf, width=300, force_terminal=False).print(view)
    text = buf.getvalue()
    assert MARKUP in text and "[/tmp] desc" in text
