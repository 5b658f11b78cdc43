import math
from pathlib import Path

import pytest

from overnight import metrics
from overnight.metrics import parse_metric_lines, primary_value, read_metrics


def test_both_separators_and_prefix() -> None:
    text = "val_bpb: 1.25\npeak_vram_mb=70000\nMETRIC loss/train: 3e-2\n  acc.top1 = .5  \n"
    assert parse_metric_lines(text) == {
        "val_bpb": 1.25,
        "peak_vram_mb": 70000.0,
        "loss/train": 0.03,
        "acc.top1": 0.5,
    }


def test_last_occurrence_wins() -> None:
    text = "val: 3\nother: 1\nval: 2\nval=1.5\n"
    assert parse_metric_lines(text) == {"val": 1.5, "other": 1.0}


def test_lines_with_extra_text_are_not_metrics() -> None:
    text = (
        "step 5 loss: 0.3\n"
        "loss: 0.3 (best)\n"
        "time: 12:30\n"
        "1st: 4\n"
        "url=http://x\n"
        "note: fine\n"
        "ratio: 1.2.3\n"
    )
    assert parse_metric_lines(text) == {}


def test_signs_exponents_and_non_finite() -> None:
    text = "a: -1\nb: +2.5E3\nc: nan\nd: INF\ne: -inf\nf: 7.\n"
    found = parse_metric_lines(text)
    assert found["a"] == -1.0 and found["b"] == 2500.0 and found["f"] == 7.0
    assert math.isnan(found["c"])
    assert found["d"] == math.inf and found["e"] == -math.inf


def test_carriage_return_ends_a_line() -> None:
    text = "progress 10%\rprogress 100%\rval: 0.9\r\nloss: 1\r\n"
    assert parse_metric_lines(text) == {"val": 0.9, "loss": 1.0}


def test_primary_value_reasons() -> None:
    metrics = {"val_loss": 0.5, "bad": math.nan, "worse": -math.inf}
    assert primary_value(metrics, "val_loss") == (0.5, None)
    assert primary_value(metrics, "missing") == (
        None,
        "metric 'missing' not found in the output",
    )
    assert primary_value(metrics, "bad") == (None, "metric 'bad' is not finite (nan)")
    assert primary_value(metrics, "worse") == (None, "metric 'worse' is not finite (-inf)")


def test_read_metrics_later_files_win_and_missing_is_empty(tmp_path: Path) -> None:
    out = tmp_path / "stdout.log"
    err = tmp_path / "stderr.log"
    out.write_text("val: 1\nonly_out: 2\n")
    err.write_text("val: 3\n")
    assert read_metrics(out, err) == {"val": 3.0, "only_out": 2.0}
    assert read_metrics(tmp_path / "nope.log") == {}


def test_read_metrics_large_file_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    with path.open("wb") as fh:
        for i in range(60_000):
            fh.write(f"step {i} loss: {i}\nval: {i}\n".encode())
        fh.write(b"x" * (3 << 20))  # one huge line with no newline in several chunks
        fh.write(b"val: 99\n")  # still part of that huge line
        fh.write(b"final: 1\n")
    assert read_metrics(path) == {"val": 59_999.0, "final": 1.0}


def test_read_metrics_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"\xff\xfe garbage\nval: 2")
    assert read_metrics(path) == {"val": 2.0}


def test_every_chunk_boundary_gives_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = b"a: 1\r\nMETRIC b=2\nnoise x: 3\n  c : -4e1 \rprogress\rd: nan\ne: 5"
    path = tmp_path / "out.log"
    path.write_bytes(text)
    expected = parse_metric_lines(text.decode())
    assert set(expected) == {"a", "b", "c", "d", "e"}
    for size in range(1, len(text) + 2):
        monkeypatch.setattr(metrics, "_CHUNK", size)
        found = read_metrics(path)
        assert found.keys() == expected.keys(), size
        assert all(
            found[k] == expected[k] or (math.isnan(found[k]) and math.isnan(expected[k]))
            for k in found
        ), size


AUTORESEARCH_OUTPUT = (
    "Vocab size: 8,192\n"
    "Model config: {'sequence_len': 2048, 'n_layer': 8}\n"
    "Parameter counts:\n"
    "  wte                     : 4,194,304\n"
    "  value_embeds            : 16,777,216\n"
    "  scalars                 : 16\n"
    "  total                   : 50,331,664\n"
    "Estimated FLOPs per token: 3.019899e+08\n"
    "Time budget: 300s\n"
    "\rstep 00000 (0.0%) | loss: 9.010000 | lrm: 1.00 | dt: 812ms | tok/sec: 645,277 | mfu: 1.2% "
    "| epoch: 0 | remaining: 300s    "
    "\rstep 00001 (0.3%) | loss: 8.750000 | lrm: 1.00 | dt: 402ms | tok/sec: 1,304,226 | mfu: 2.4% "
    "| epoch: 0 | remaining: 299s    \n"
    "---\n"
    "val_bpb:          0.997900\n"
    "num_params_M:     50.3\n"
    "depth:            8\n"
)


def test_a_listing_under_a_heading_is_not_metrics() -> None:
    """autoresearch prints its parameter counts as `  {name:24s}: {count:,}` under
    `Parameter counts:`; `scalars: 16` there names part of the model, not a result."""
    found = parse_metric_lines(AUTORESEARCH_OUTPUT)
    assert found == {"val_bpb": 0.9979, "num_params_M": 50.3, "depth": 8.0}
    # `\r`-separated step lines hold `loss: …` among other text: not metric lines either.
    assert "loss" not in found and "step" not in found


def test_indented_lines_without_a_heading_are_metrics() -> None:
    text = "results\n  acc: 0.5\nSummary:\n  hidden: 1\n\n  after_blank: 2\ndone\n  own: 3\n"
    # A blank line does not end a listing; a line that is no heading does.
    assert parse_metric_lines(text) == {"acc": 0.5, "own": 3.0}
    crlf = "Parameter counts:\r\n  scalars: 16\r\nval: 1\r\n  extra: 2\r\n"
    assert parse_metric_lines(crlf) == {"val": 1.0, "extra": 2.0}


def test_a_listing_continues_across_read_chunks(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "run.log"
    pad = "x" * 50 + "\n"
    path.write_text(pad * 20 + "Parameter counts:\n" + "  part: 1\n" * 40 + "val: 2\n  own: 3\n")
    monkeypatch.setattr(metrics, "_CHUNK", 64)  # headings and entries in different chunks
    assert read_metrics(path) == {"val": 2.0, "own": 3.0}
