"""results.tsv cells: metric values as autoresearch writes them; a failed experiment's cell
is empty, never 0."""

from __future__ import annotations

from overnight.store.ledger import tsv_row, tsv_value
from overnight.store.records import ExperimentRecord


def test_values_have_six_decimals_like_autoresearch() -> None:
    assert tsv_value(1.009125) == "1.009125"  # %.6g would write 1.00913
    assert tsv_value(0.9979) == "0.997900"
    assert tsv_value(45060.2) == "45060.200000"
    assert tsv_value(-2.5) == "-2.500000"
    assert tsv_value(0.0) == "0.000000"
    # Six decimals would flatten a tiny value to 0 or cut it to one digit: significant
    # digits instead, and for a value too large for a fixed-point column too.
    assert tsv_value(3.2e-8) == "3.2e-08" and tsv_value(0.000123456) == "0.000123456"
    assert tsv_value(2.5e20) == "2.5e+20"


def test_failed_experiments_have_an_empty_value_cell() -> None:
    def row(status: str, value: float | None) -> list[str]:
        rec = ExperimentRecord(3, status, value, {}, "a" * 40, None, "try\tthis", "", 1.25, "llm")
        return tsv_row(rec).split("\t")

    assert row("discard", 1.009125) == ["3", "aaaaaaa", "1.009125", "discard", "try this",
                                        "1.2", "llm"]  # fmt: skip
    assert row("crash", 0.5)[2] == "" and row("timeout", 0.5)[2] == ""
    assert row("invalid", None)[2] == ""
