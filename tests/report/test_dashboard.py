"""`overnight serve`: the live dashboard in real headless Chromium, against a real study
driven through the CLI, with a real `overnight run` appending experiments while it is open."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_repo, overnight_env, score_config
from test_report import ARTIFACTS, CRASH, build_study, launch_browser, log_json, step

from overnight.report.server import is_loopback, resolve_token

# Long enough that a 2 s dashboard poll sees it running, also on a loaded CI machine.
SLOW = "import time\ntime.sleep(6)\nX = 4\nprint(f'score: {X}')\n"


class Server:
    """`overnight serve` as a subprocess, its stdout collected for the printed token."""

    def __init__(self, repo: Path, host: str = "127.0.0.1", *args: str) -> None:
        with socket.socket() as s:
            s.bind((host if host != "0.0.0.0" else "127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "overnight", "serve", "--host", host,
               "--port", str(self.port), *args]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=repo, env=overnight_env(), text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait(self, url: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.lines)
            try:
                httpx.get(url, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("the dashboard did not come up: " + "".join(self.lines))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The last step (slow) is left for the live test to run while the page is open.
    return build_study(tmp_path_factory.mktemp("dash"), [
        step("X 10 → 7", 7), step("X 7 → 9", 9), step("crash on purpose", src=CRASH),
        step("X 7 → 5", 5), step("slow X 5 → 4", src=SLOW),
    ], n=4, budget="30s")  # fmt: skip


@pytest.fixture(scope="module")
def server(study: Path) -> Iterator[str]:
    srv = Server(study)
    url = f"http://127.0.0.1:{srv.port}/"
    srv.wait(url)
    yield url
    srv.stop()


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


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def points(page: Any) -> int:
    return int(page.get_attribute("#chart", "data-points"))


def test_chart_cards_and_table_show_every_experiment(study: Path, server: str, page: Any) -> None:
    log = log_json(study)
    page.goto(server)
    page.wait_for_function(f"document.querySelector('#chart').dataset.points === '{len(log)}'")
    chart = page.locator("#chart")
    assert chart.get_attribute("data-keeps") == str(sum(r["status"] == "keep" for r in log))
    assert chart.get_attribute("data-failed") == "1"
    # Something was drawn: count the canvas's non-blank pixels.
    inked = page.evaluate("""() => { const c = document.querySelector('#chart');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let k = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) k++; return k; }""")
    assert inked > 2000
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 5")
    assert page.locator("#rows tr").first.inner_text().startswith("#4")
    assert "10 → 5" in page.inner_text("#cards") and "50.0%" in page.inner_text("#cards")
    assert "idle" in page.inner_text("#running")
    page.uncheck("input[name=status][value=keep]")
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 2")
    page.check("input[name=status][value=keep]")
    page.fill("#q", "crash on")
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 1")
    page.fill("#q", "")
    page.wait_for_function("document.querySelectorAll('#rows tr').length === 5")
    page.hover("#chart", position={"x": 400, "y": 200})
    shot(page, "dashboard.png")


def test_a_new_experiment_appears_live(study: Path, server: str, page: Any) -> None:
    page.goto(server)
    page.wait_for_function("document.querySelector('#chart').dataset.points === '5'")
    env = {"OVERNIGHT_TEST_SCRIPT": str(study.parent / "script.json")}
    run = subprocess.Popen([sys.executable, "-m", "overnight", "run", "-n", "1", "--plain"],
                           cwd=study, env=overnight_env(env), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        # While it runs: the running experiment with its budget countdown, no reload.
        page.wait_for_function(
            "document.querySelector('#running').textContent.includes('running #5')",
            timeout=20_000,
        )
        assert "left of 30.0s budget" in page.inner_text("#running")
        shot(page, "dashboard-running.png")
        page.wait_for_function("document.querySelector('#chart').dataset.points === '6'",
                               timeout=30_000)  # fmt: skip
    finally:
        out, _ = run.communicate(timeout=60)
    assert run.returncode == 0, out
    page.wait_for_function("document.querySelector('#rows tr').textContent.startsWith('#5')")
    assert page.get_attribute("#chart", "data-keeps") == "4"
    assert "10 → 4" in page.inner_text("#cards")
    shot(page, "dashboard-after.png")


def test_experiment_page_shows_diff_verdict_logs_and_proposer(
    study: Path, server: str, page: Any
) -> None:
    exp = study / ".overnight" / "t" / "experiments" / "1"
    (exp / "prompt.txt").write_text("Make X small. <script>alert(1)</script>\n")
    (exp / "response.txt").write_text("Lower X to 7.\n")
    (exp / "traces").mkdir(exist_ok=True)
    (exp / "traces" / "task-1.jsonl").write_text('{"task": 1, "ok": true}\n')
    page.goto(server)
    page.wait_for_function("document.querySelectorAll('#rows tr').length > 0")
    page.click("#rows a:text-is('#1')")
    page.wait_for_url("**/experiments/1")
    assert "+X = 7" in page.inner_text("pre.diff .add")
    assert "-X = 10" in page.inner_text("pre.diff .del")
    body = page.inner_text("main")
    assert "keep" in body and "-3 (best #0 = 10)" in body and "step" in body  # metric step: 1
    page.click("summary:has-text('Proposer prompt')")
    assert "<script>alert(1)</script>" in page.inner_text("main")  # shown as text, not run
    assert "traces/task-1.jsonl" in body
    page.locator("ul a:text-is('traces/task-1.jsonl')").click()  # the file list's link
    assert '"task": 1' in page.inner_text("body")
    page.go_back()
    shot(page, "experiment-1.png")
    page.goto(server + "experiments/3")
    body = page.inner_text("main")
    assert "crash" in body and "code 3" in body and "boom: bad config" in body
    shot(page, "experiment-3-crash.png")


def test_api_is_paged_read_only_and_guards_files(server: str) -> None:
    page = httpx.get(server + "api/experiments?limit=2&offset=1").json()
    assert page["total"] >= 5 and len(page["rows"]) == 2
    assert page["rows"][0]["experiment"] == page["rows"][1]["experiment"] + 1
    crashes = httpx.get(server + "api/experiments?status=crash").json()
    assert [r["experiment"] for r in crashes["rows"]] == [3]
    assert httpx.post(server + "api/status").status_code == 405
    assert httpx.get(server + "api/experiments/99").status_code == 404
    # Escapes from the experiment folder (%2F reaches the handler as "/"; a plain "../" is
    # already resolved by the client and lands on another route).
    for rel in ("..%2F..%2Fledger.sqlite", "../../ledger.sqlite", "%2Fetc%2Fpasswd"):
        r = httpx.get(server + f"experiments/1/files/{rel}")
        assert r.status_code in (404, 422) and "SQLite" not in r.text and "root:" not in r.text
    # A loopback server answers only loopback Host names (no DNS rebinding).
    assert httpx.get(server, headers={"Host": "attacker.example"}).status_code == 403


def non_loopback_address() -> str | None:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for addr in out:
        if ":" in addr or is_loopback(addr):
            continue
        with socket.socket() as s:
            try:
                s.bind((addr, 0))
                return addr
            except OSError:
                continue
    return None


def test_non_loopback_needs_the_token(study: Path, page: Any) -> None:
    addr = non_loopback_address()
    # Without such an address, bind everywhere and come in through 127.0.0.1: the rule is
    # about the bind address, so the token is still required.
    srv = Server(study, addr or "0.0.0.0")
    base = f"http://{addr or '127.0.0.1'}:{srv.port}/"
    try:
        srv.wait(base)
        printed = "".join(srv.lines)
        assert "token required; open" in printed, printed
        token = printed.split("?token=")[1].split()[0]
        response = page.goto(base)
        assert response.status == 401
        shot(page, "token-refused.png")
        assert page.goto(base + "?token=wrong").status == 403
        assert httpx.get(base + "api/status").status_code == 401
        assert (
            httpx.get(base + "api/status", headers={"Authorization": "Bearer x"}).status_code == 403
        )
        ok = httpx.get(base + "api/status", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["experiments"] >= 5
        assert page.goto(base + f"?token={token}").status == 200
        page.wait_for_function("+document.querySelector('#chart').dataset.points >= 5")
        # The first visit leaves a cookie: links and polling work without the token in the URL.
        assert page.goto(base + "experiments/1").status == 200
        assert "+X = 7" in page.inner_text("pre.diff")
    finally:
        srv.stop()


def test_token_rules() -> None:
    assert resolve_token("127.0.0.1", None) == (None, False)
    assert resolve_token("localhost", None) == (None, False)
    assert resolve_token("::1", None) == (None, False)
    for host in ("0.0.0.0", "::", "192.0.2.7", "example.com"):
        token, generated = resolve_token(host, None)
        assert token and len(token) >= 20 and generated
    assert resolve_token("127.0.0.1", "s3cret") == ("s3cret", False)
    with pytest.raises(Exception, match="non-empty"):
        resolve_token("0.0.0.0", " ")


def test_dashboard_of_a_study_that_has_not_run(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from overnight.report.server import create_app
    from overnight.store.study import Study

    repo = make_repo(tmp_path / "repo", {"score.py": "print('score: 1')\n",
                                         "overnight.toml": score_config()})  # fmt: skip
    client = TestClient(create_app(Study.open(cwd=repo)), base_url="http://127.0.0.1")
    assert client.get("/").status_code == 200
    assert client.get("/api/status").json()["started"] is False
    assert client.get("/api/points").json()["n"] == []
    assert client.get("/api/experiments/0").status_code == 404
    # An explicit token is required even on loopback.
    guarded = TestClient(create_app(Study.open(cwd=repo), token="t0k"), base_url="http://127.0.0.1")
    assert guarded.get("/api/status").status_code == 401
    assert guarded.get("/api/status?token=t0k").status_code == 200
    assert guarded.get("/api/status").status_code == 200  # the cookie from the first visit
