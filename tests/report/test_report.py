"""`overnight report`: progress.png and a self-contained report.html, built from real studies
driven through the CLI (minimize, maximize, failures only, failed baseline)."""

from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_repo, run_cli, score_config, write_script

from overnight.report import queries, write_report
from overnight.report.plot import MAX_LABELS, pick_labels, y_limits
from overnight.store.ledger import Ledger
from overnight.store.study import Study

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
CRASH = "import sys\nprint('boom: bad config', file=sys.stderr)\nsys.exit(3)\n"
HANG = "import time\ntime.sleep(60)\n"


def score_src(x: float) -> str:
    return f"X = {x}\nprint('step: 1')\nprint(f'score: {{X}}')\n"


def build_study(
    root: Path,
    steps: list[dict[str, Any]],
    goal: str = "minimize",
    n: int = 0,
    budget: str = "1.5s",
) -> Path:
    """A real study: a git repo whose score.py prints `score: X` (X = 10 at first), run `n`
    experiments (default: all steps) with the scripted proposer (script next to the repo)."""
    cfg = score_config(budget=budget).replace('goal = "minimize"', f'goal = "{goal}"')
    repo = make_repo(root / "repo", {"score.py": score_src(10), "overnight.toml": cfg})
    env = write_script(root / "script.json", steps)
    out = run_cli(repo, "run", "-n", str(n or len(steps)), "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    return repo


def step(description: str, x: float | None = None, src: str | None = None) -> dict[str, Any]:
    return {"files": {"score.py": src if src is not None else score_src(x or 0)},
            "description": description}  # fmt: skip


def log_json(repo: Path) -> list[dict[str, Any]]:
    """What `log --json` prints, read in-process (a CLI call costs a second under load)."""
    return [r.public() for r in Study.open(cwd=repo).log()]


def report(repo: Path) -> tuple[str, Path]:
    out_dir = repo.parent / "out"
    out = run_cli(repo, "report", "--out", str(out_dir))
    assert out.returncode == 0, out.stderr
    assert "report.html" in out.stdout
    return (out_dir / "report.html").read_text(), out_dir / "progress.png"


def embedded_rows(html: str) -> list[list[Any]]:
    found = re.search(r"<script type='application/json' id='rows'>(.*?)</script>", html, re.S)
    assert found, "the experiment table data is missing"
    return json.loads(found.group(1))


def launch_browser(playwright: Any) -> Any:
    """Debian's chromium, never a downloaded one. Missing → fail, unless explicitly skipped:
    a CI that silently skipped the browser tests would prove nothing."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    if not Path(exe).exists():
        pytest.fail("chromium not found (apt-get install chromium); "
                    "set OVERNIGHT_SKIP_BROWSER=1 to skip browser tests")  # fmt: skip
    return playwright.chromium.launch(executable_path=exe, args=BROWSER_ARGS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if os.environ.get("OVERNIGHT_SKIP_BROWSER") == "1":
        pytest.skip("OVERNIGHT_SKIP_BROWSER=1")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = launch_browser(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def minimize_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_study(tmp_path_factory.mktemp("min"), [
        step("X 10 → 7 <b>&amp;</b>", 7),
        step("X 7 → 9", 9),
        step("crash on purpose", src=CRASH),
        step("X 7 → 5", 5),
        step("hang past the budget", src=HANG),
        step("X 5 → 6", 6),
        step("X 5 → 4.5", 4.5),
    ])  # fmt: skip


@pytest.fixture(scope="module")
def minimize_report(minimize_study: Path) -> tuple[str, Path]:
    return report(minimize_study)


def test_minimize_report_contents(minimize_study: Path, minimize_report: tuple[str, Path]) -> None:
    log = log_json(minimize_study)
    assert [r["status"] for r in log] == [
        "keep", "keep", "discard", "crash", "keep", "timeout", "discard", "keep"
    ]  # fmt: skip
    html, png = minimize_report
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(png, ARTIFACTS / "report-minimize.png")
    # Summary: baseline → best, relative gain (55% better), experiments, hit rate.
    assert "10 → 4.5" in html and "55.0%" in html
    assert '<div class="k">experiments</div><div class="v">8' in html
    assert "42.9%" in html  # 3 keeps of 7 tried
    # The keeps table: every keep with its delta over the best it replaced, and its diff.
    keeps = re.search(r"<table id='keeps'>.*?</table>", html, re.S).group(0)  # type: ignore[union-attr]
    assert keeps.count("<tr class='row'>") == 4
    for delta in ("-3", "-2", "-0.5"):
        assert f"<td class='num'>{delta}</td>" in keeps
    assert '<span class="add">+X = 4.5</span>' in keeps
    # Model- and user-written text is escaped, never markup.
    assert "X 10 → 7 &lt;b&gt;&amp;amp;&lt;/b&gt;" in html and "<b>&amp;</b>" not in html
    # Every experiment, with status, reason and description, for the filterable table.
    rows = embedded_rows(html)
    assert [r[0] for r in rows] == [r["experiment"] for r in log]
    assert [r[1] for r in rows] == [r["status"] for r in log]
    assert "code 3" in rows[3][4] and "budget of 1.5s" in rows[5][4]
    assert rows[3][2] is None  # a crash has no value, never 0


def test_report_opens_offline_in_chromium(
    minimize_study: Path, minimize_report: tuple[str, Path], browser: Any
) -> None:
    html, _ = minimize_report
    # No reference to anything outside the file: scripts, styles, images, fonts.
    assert not re.search(r"https?://", html)
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!data:|#)[a-z]+:""", html, re.I)
    context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
    requested: list[str] = []
    context.route("**/*", lambda route: (requested.append(route.request.url), route.continue_()))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto((minimize_study.parent / "out" / "report.html").as_uri())
    assert all(u.startswith(("file:", "data:")) for u in requested), requested
    assert not errors
    assert page.evaluate("document.querySelector('img.plot').naturalWidth") > 1000
    assert page.locator("#all tbody tr").count() == 8
    page.fill("#q", "crash on purpose")
    assert page.locator("#all tbody tr").count() == 1
    page.fill("#q", "")
    for status in ("keep", "discard", "invalid", "rejected"):
        page.uncheck(f"input[name=status][value={status}]")
    assert page.locator("#all tbody tr").count() == 2  # the crash and the timeout
    page.check("input[name=status][value=keep]")
    page.locator("#keeps details summary").first.click()
    page.screenshot(path=str(ARTIFACTS / "report-minimize.html.png"), full_page=True)
    context.close()


def test_maximize_report(tmp_path: Path) -> None:
    repo = build_study(tmp_path, [
        step("X 10 → 12", 12), step("X 12 → 11", 11), step("X 12 → 15", 15),
    ], goal="maximize")  # fmt: skip
    files = write_report(Study.open(cwd=repo), tmp_path / "out")
    html = files.html.read_text()
    assert "10 → 15" in html and "50.0%" in html and "(maximize)" in html
    # The staircase only climbs when maximizing; both discards are drawn as points.
    assert files.plot.staircase == [10, 12, 15]
    assert files.plot.points["discard"] == 1
    assert files.plot.labels == ["X 10 → 12", "X 12 → 15"]
    assert files.plot.ylim and files.plot.ylim[0] < 10 and files.plot.ylim[1] > 15
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(files.png, ARTIFACTS / "report-maximize.png")


def test_failures_only_and_failed_baseline(tmp_path: Path) -> None:
    repo = build_study(tmp_path / "a", [step("crash", src=CRASH), step("hang", src=HANG)])
    files = write_report(Study.open(cwd=repo), tmp_path / "out")
    html = files.html.read_text()
    assert [r[1] for r in embedded_rows(html)] == ["keep", "crash", "timeout"]
    assert "10 → 10" in html and ">0.0%<" in html  # no improvement, but a readable report
    assert files.plot.points == {"keep": 1, "crash": 1, "timeout": 1}
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(files.png, ARTIFACTS / "report-failures.png")

    # A baseline that fails leaves no measured value at all; the report still explains it.
    cfg = score_config(budget="1.5s")
    broken = make_repo(tmp_path / "b" / "repo", {"score.py": CRASH, "overnight.toml": cfg})
    env = write_script(tmp_path / "b" / "s.json", [step("never", 1)])
    assert run_cli(broken, "run", "-n", "1", "--plain", env=env).returncode == 1
    files = write_report(Study.open(cwd=broken), tmp_path / "out-b")
    assert embedded_rows(files.html.read_text())[0][:3] == [0, "aborted", None]
    assert files.plot.points == {} and files.png.stat().st_size > 10_000


def test_report_before_the_first_run_is_a_usage_error(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "repo", {"score.py": score_src(1), "overnight.toml": score_config()}
    )
    out = run_cli(repo, "report")
    assert out.returncode == 2 and "has not run yet" in out.stderr


# -- the pieces, on synthetic ledgers (fast) ------------------------------------------------------

HOLDOUT_CFG = textwrap.dedent("""
    [holdout]
    command = "python holdout.py"
    name = "holdout_acc"
    goal = "maximize"
""")


def synthetic_study(
    tmp_path: Path, values: list[tuple[str, float | None]], extra: str = ""
) -> Study:
    repo = make_repo(tmp_path / "repo", {"score.py": score_src(1),
                                         "overnight.toml": score_config(extra=extra)})  # fmt: skip
    study = Study.open(cwd=repo)
    ledger = Ledger(study.ledger_path)
    for n, (status, value) in enumerate(values):
        ledger.add_proposed(n, parent="p", description=f"exp {n} 100%_done", diff=f"+X = {n}\n")
        ledger.set_verdict(n, status, "" if status == "keep" else f"why {n}", value, {}, 1.0)
    ledger.close()
    return study


def test_holdout_vs_search_metric_when_present(tmp_path: Path) -> None:
    study = synthetic_study(
        tmp_path, [("keep", 10), ("keep", 8), ("discard", 9), ("keep", 6)], HOLDOUT_CFG
    )
    ledger = Ledger(study.ledger_path)
    for n, acc in ((0, 0.70), (1, 0.74), (3, 0.73)):
        ledger.add_measurement(n, "holdout", 0, acc, {}, 0, False, 1.0, None)
    ledger.close()
    ledger = Ledger(study.ledger_path, readonly=True)
    st = queries.summary(study, ledger)
    assert st["holdout"]["name"] == "holdout_acc"
    assert (st["holdout"]["baseline"], st["holdout"]["best"]) == (0.70, 0.73)
    assert st["holdout"]["holdout_gain"] == pytest.approx(0.03 / 0.70)
    assert st["holdout"]["search_gain"] == pytest.approx(0.4)
    assert [k["holdout"] for k in queries.keeps(ledger)] == [0.70, 0.74, 0.73]
    ledger.close()
    html = write_report(study, tmp_path / "out").html.read_text()
    assert "Holdout vs search metric" in html and "holdout_acc" in html
    # Absent holdout: no section, no error.
    plain = synthetic_study(tmp_path / "plain", [("keep", 3), ("discard", 4)])
    assert "Holdout" not in write_report(plain, tmp_path / "out2").html.read_text()


def test_table_queries_filter_and_page(tmp_path: Path) -> None:
    statuses = ["keep"] + ["discard", "crash", "timeout", "invalid", "rejected"] * 20
    study = synthetic_study(tmp_path, [(s, 1.0 if s == "discard" else None) for s in statuses])
    ledger = Ledger(study.ledger_path, readonly=True)
    first = queries.page(ledger, 0, 10)
    assert first["total"] == 101 and [r["experiment"] for r in first["rows"]][:2] == [100, 99]
    crashes = queries.page(ledger, 0, 50, ["crash"])
    assert crashes["total"] == 20 and {r["status"] for r in crashes["rows"]} == {"crash"}
    # LIKE wildcards in the search text are literal.
    assert queries.page(ledger, 0, 5, None, "100%_d")["total"] == 101
    assert queries.page(ledger, 0, 5, None, "0%x")["total"] == 0
    assert queries.page(ledger, 0, 5, None, "42")["rows"][0]["experiment"] == 42
    pts = queries.points(ledger, since=95)
    assert pts["n"] == [96, 97, 98, 99, 100] and len(pts["s"]) == 5
    ledger.close()


def test_points_cursor_sees_out_of_order_decisions(tmp_path: Path) -> None:
    # With parallel workers #2 can be decided before #1; polling "above the last number"
    # would never show #1, polling by decision time does.
    study = synthetic_study(tmp_path, [("keep", 10)])
    writer = Ledger(study.ledger_path)
    reader = Ledger(study.ledger_path, readonly=True)
    first = queries.points(reader)
    assert first["n"] == [0] and first["cursor"] is not None
    for n in (1, 2):
        writer.add_proposed(n, parent="p", description=f"exp {n}")
    writer.set_verdict(2, "discard", "worse", 11.0, {}, 1.0)
    second = queries.points(reader, after=first["cursor"])
    assert 2 in second["n"] and 1 not in second["n"]
    writer.set_verdict(1, "keep", "", 9.0, {}, 1.0)
    third = queries.points(reader, after=second["cursor"])
    assert 1 in third["n"] and third["labels"] == {"1": "exp 1"}
    writer.close()
    reader.close()


def test_y_range_ignores_one_diverged_run() -> None:
    others = [5.0 + i * 0.01 for i in range(50)] + [1e9]
    lo, hi = y_limits([10, 7, 5], others, "minimize")  # type: ignore[misc]
    assert lo < 5 and 10 < hi < 100
    lo, hi = y_limits([1, 3, 5], [-1e9, 2, 4], "maximize")  # type: ignore[misc]
    assert -100 < lo < 1 and hi > 5


def test_labels_thin_out_at_thousands_of_keeps() -> None:
    keeps = [{"experiment": i * 3, "value": 100 - i * 0.01, "delta": -0.01 - (i % 7) * 0.001}
             for i in range(1500)]  # fmt: skip
    chosen = pick_labels(keeps, 4500)
    assert len(chosen) <= MAX_LABELS and 1499 in chosen and 0 not in chosen
    xs = sorted(keeps[i]["experiment"] for i in chosen)
    assert min(b - a for a, b in zip(xs, xs[1:], strict=False)) >= 4500 / 45
