"""The bench scripts run on their tiny settings and print their tables. No timings are
asserted: numbers belong in docs/benchmarks.md, not in pass/fail.

Nothing here needs the network: OpenEvolve's row is measured only when
bench/.venv-openevolve already exists (the tests never install it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OPENEVOLVE = BENCH / ".venv-openevolve" / "bin" / "openevolve-run"


def run_bench(*argv: str, timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    out = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"{argv} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.parametrize(
    ("script", "heading"),
    [
        ("throughput.py", "## Q2."),
        ("search_quality.py", "## Q3."),
        ("noise.py", "## Q4."),
        ("record_scale.py", "## Q5."),
        ("mcp_roundtrip.py", "## Q7."),
        ("stale.py", "## Q6."),
        ("startup.py", "## Start-up"),
    ],
)
def test_script_prints_its_table(script: str, heading: str) -> None:
    out = run_bench(str(BENCH / script), "--quick")
    assert heading in out
    assert "| --- |" in out and "---: |" in out


def test_harness_cost_without_installing() -> None:
    out = run_bench(str(BENCH / "harness_cost.py"), "--quick", "--no-install")
    assert "## Q1." in out
    row = next(line for line in out.splitlines() if line.startswith("| overnight"))
    assert "/6 |" in row and "—" not in row.split("|")[2]  # measured, not an error
    oe = next(line for line in out.splitlines() if line.startswith("| OpenEvolve"))
    if not OPENEVOLVE.exists():
        assert "skipped" in oe
    else:
        assert "ratio overnight / OpenEvolve" in out


def test_suite_writes_the_generated_part_of_the_docs(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\nprose before\n\n<!-- bench:begin -->\nold\n"
        "<!-- bench:end -->\n\nprose after\n"
    )
    out = run_bench(str(BENCH / "suite.py"), "--quick", "--only", "noise", "--write-docs", str(doc))
    assert "## Q4." in out and "### Machine" in out
    text = doc.read_text()
    assert "prose before" in text and "prose after" in text and "\nold\n" not in text
    assert "## Q4." in text and "cores (nproc)" in text
