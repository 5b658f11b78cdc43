"""How `status`, `log --json`, the dashboard and `report` scale with the ledger.

Builds a synthetic study with N experiments (default 100,000) — realistic row sizes: a
~1.5 KB diff, a rationale, secondary metrics and one measurement per experiment — then times:

- `overnight status --json` and `overnight log --json` as a user runs them (subprocess,
  Python start-up included),
- dashboard requests against a real uvicorn server: the page, /api/status, table pages
  (first, deep, filtered, text search), the experiment page, and the full chart payload,
- `overnight report` (subprocess).

Usage: python bench/report_scale.py [--n 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from overnight.store.ledger import Ledger  # noqa: E402

CONFIG = """\
[study]
name = "scale"
surface = ["train.py"]
budget = "5m"

[run]
command = "python train.py"

[metric]
name = "val_loss"
goal = "minimize"
"""
STATUS_WEIGHTS = {"discard": 70, "crash": 12, "timeout": 5, "invalid": 8, "rejected": 3}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "bench")
    git(root, "config", "user.email", "bench@example.invalid")
    (root / "overnight.toml").write_text(CONFIG)
    (root / "train.py").write_text("LR = 0.04\nprint('val_loss: 1.0')\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    return root


def fake_diff(n: int, rng: random.Random) -> str:
    body = "".join(f" context line {i} of the training script, unchanged\n" for i in range(12))
    edits = "".join(
        f"-LAYER_{i} = {rng.random():.4f}\n+LAYER_{i} = {rng.random():.4f}\n" for i in range(6)
    )
    return (
        f"diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n"
        f"@@ -{n % 90 + 1},24 +{n % 90 + 1},24 @@\n{body}{edits}{body}"
    )


def build_ledger(repo: Path, n_total: int, seed: int = 0) -> Path:
    """Write the ledger directly (one transaction): the loop would take weeks."""
    rng = random.Random(seed)
    path = repo / ".overnight" / "scale" / "ledger.sqlite"
    ledger = Ledger(path)  # the writer creates the schema and its indexes
    statuses = list(STATUS_WEIGHTS)
    weights = list(STATUS_WEIGHTS.values())
    best, t0 = 3.2, time.time() - n_total * 30.0
    exp_rows, meas_rows = [], []
    for n in range(n_total):
        if n == 0:
            status, value = "keep", best
        elif rng.random() < 0.02:
            # Improvements shrink as the night goes on, as they do in real studies.
            best -= rng.random() * 0.02 * (best - 2.0)
            status, value = "keep", best
        else:
            status = rng.choices(statuses, weights)[0]
            worse = best * (1 + abs(rng.gauss(0, 0.02)))
            value = worse if status in ("discard", "rejected") else None
        reason = (
            ""
            if status == "keep"
            else f"{status}: synthetic reason for experiment {n}, "
            + ("val_loss did not improve on the best by the minimum improvement")
        )
        created = t0 + n * 30.0
        metrics = {"peak_vram_mb": 40000 + rng.random() * 1000, "tokens_per_s": 1e5 * rng.random()}
        exp_rows.append((
            n, "decided", status, value, json.dumps(metrics), f"{n:040x}", f"{max(0, n - 1):040x}",
            f"try variant {n}: tweak layer {n % 37} learning rate and warmup schedule",
            "The loss curve suggests the learning rate is too high late in training; " * 3,
            reason, 28.0 + rng.random() * 4, "llm" if n else "baseline", 0.002 * (n > 0),
            fake_diff(n, rng), created, created + 29.0,
        ))  # fmt: skip
        if status == "keep":  # a holdout value for every keep, used with --holdout
            meas_rows.append((n, "holdout", 0, 0.5 + n / n_total / 4, "{}", 0, 0, 5.0, None,
                              created))  # fmt: skip
        if status not in ("invalid",):
            meas_rows.append((n, "run", 0, value, json.dumps(metrics), 0 if value else 1,
                              int(status == "timeout"), 29.0, None, created))  # fmt: skip
    with ledger.tx() as db:
        db.executemany(
            "INSERT INTO experiments(n, state, status, value, metrics, commit_sha, parent,"
            " description, rationale, reason, wall_s, proposer, cost_usd, diff, created_at,"
            " decided_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            exp_rows,
        )
        db.executemany(
            "INSERT INTO measurements(n, kind, repeat, value, metrics, exit_code, timed_out,"
            " wall_s, error, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            meas_rows,
        )
    ledger.set_meta("started_at", str(t0))
    ledger.set_meta("run_seconds", str(n_total * 30.0))
    ledger.set_meta("start_commit", "0" * 40)
    current = {"experiment": n_total, "description": "running one", "started_at": time.time(),
               "budget_s": 300.0}  # fmt: skip
    ledger.set_meta("current", json.dumps(current))
    ledger.close()
    return path


def timed(label: str, fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    print(f"  {label:<44} {best * 1000:9.1f} ms")
    return best


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "overnight", *args]
    out = subprocess.run(cmd, cwd=repo, capture_output=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"overnight {' '.join(args)} failed: {out.stderr.decode()[-2000:]}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_dashboard(repo: Path, n_total: int) -> None:
    import httpx
    import uvicorn

    from overnight.report.server import create_app
    from overnight.store.study import Study

    study = Study.open(cwd=repo)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(study), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=60) as client:

        def get(path: str) -> None:
            r = client.get(path)
            r.raise_for_status()

        timed("dashboard page /", lambda: get("/"))
        timed("GET /api/status", lambda: get("/api/status"))
        timed("GET /api/experiments (first page)", lambda: get("/api/experiments?limit=50"))
        deep = n_total // 2
        timed(f"GET /api/experiments (offset {deep})",
              lambda: get(f"/api/experiments?limit=50&offset={deep}"))  # fmt: skip
        timed("GET /api/experiments?status=keep",
              lambda: get("/api/experiments?limit=50&status=keep"))  # fmt: skip
        timed("GET /api/experiments?q=layer 7 (text scan)",
              lambda: get("/api/experiments?limit=50&q=layer%207"))  # fmt: skip
        timed(f"experiment page /experiments/{deep}", lambda: get(f"/experiments/{deep}"))
        timed("GET /api/points?since=<last-10>",
              lambda: get(f"/api/points?since={n_total - 10}"))  # fmt: skip
        cursor = client.get("/api/points?since=0").json()["cursor"]
        timed("GET /api/points?after=<cursor> (poll)",
              lambda: get(f"/api/points?after={cursor}"))  # fmt: skip
        timed("GET /api/points (whole chart, first load)", lambda: get("/api/points"))
    server.should_exit = True
    thread.join(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="experiments in the ledger")
    ap.add_argument("--keep", type=Path, help="build the study here and leave it")
    ap.add_argument("--holdout", action="store_true", help="configure a [holdout] section")
    args = ap.parse_args()
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="overnight-scale-")
    repo = make_repo((args.keep or Path(tmp.name)) / "repo")  # type: ignore[union-attr]
    if args.holdout:
        with (repo / "overnight.toml").open("a") as fh:
            fh.write('\n[holdout]\ncommand = "python eval.py"\nname = "acc"\n')
    t = time.perf_counter()
    path = build_ledger(repo, args.n)
    size_mb = path.stat().st_size / 1e6
    print(f"built {args.n} experiments in {time.perf_counter() - t:.1f}s ({size_mb:.0f} MB)")
    print("CLI (subprocess, Python start-up included):")
    timed("overnight --help (start-up alone)", lambda: cli(repo, "--help"))
    timed("overnight status --json", lambda: cli(repo, "status", "--json"))
    timed("overnight log --json", lambda: cli(repo, "log", "--json"), repeat=1)
    print("dashboard (uvicorn, one request at a time):")
    bench_dashboard(repo, args.n)
    print("report:")
    timed("overnight report", lambda: cli(repo, "report", "--out", str(repo / "out")), repeat=1)
    html = repo / "out" / "report.html"
    print(f"  report.html {html.stat().st_size / 1e6:.1f} MB, progress.png "
          f"{(repo / 'out' / 'progress.png').stat().st_size / 1e3:.0f} kB")  # fmt: skip
    if tmp:
        tmp.cleanup()
    else:
        print(f"study left in {repo}")


if __name__ == "__main__":
    main()
