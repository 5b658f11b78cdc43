"""The morning works after the two commands: the README's install line and `make demo`
install what `report` and `serve` need, and the demo points to both."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def extras_of(spec: str) -> set[str]:
    m = re.search(r"\[([\w,\s-]+)\]", spec)
    return {e.strip() for e in m.group(1).split(",")} if m else set()


def test_the_readme_install_line_and_make_demo_give_report_and_serve() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = deps["optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["report"])
    assert {d.split(">")[0] for d in extras["serve"]} >= {"fastapi", "uvicorn"}
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("pip install -e"))
    assert extras_of(line) >= {"report", "serve"}
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^\$\(VENV\)/\.demo:.*\n\t(.*)$", makefile, re.M)
    assert demo is not None and extras_of(demo.group(1)) >= {"report", "serve"}
    hints = (ROOT / "examples" / "quickstart" / "demo.py").read_text()
    assert '{cli} report"' in hints and '{cli} serve"' in hints


def test_typer_is_pinned_to_the_tested_range() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    typer = next(d for d in deps if d.startswith("typer"))
    assert "<" in typer
