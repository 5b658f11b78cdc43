"""`overnight verify`: every verdict recomputes from the ledger, and tampering shows.

Two studies are run once (module fixtures) and their ledgers copied per test:
- "full": repeats = 3, confirm, a holdout, a constraint, a crash and an invalid proposal;
- "pooled": repeats = 1 with the best re-measured after every experiment, so that later
  decisions use the pooled noise estimate (the path with the most to replay).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_repo, run_cli, write_script

from overnight.judging.replay import verify_ledger
from overnight.store.ledger import Ledger
from overnight.store.study import Study

PY = sys.executable
NOISY = """\
import os, random
MU = 10.0
rng = random.Random(f"{os.environ['OVERNIGHT_SEED']}-{os.environ['OVERNIGHT_EXPERIMENT']}")
print(f"score: {MU + rng.gauss(0, 0.3)}")
print("vram: 100")
"""


def _study(root: Path, metric: str, extra: str, steps: list[dict]) -> Path:
    toml = (
        textwrap.dedent(f"""\
        [study]
        name = "t"
        surface = ["score.py"]
        budget = "20s"

        [run]
        command = "{PY} score.py"

        [metric]
        name = "score"
        goal = "minimize"
        """)
        + metric
        + '\n[proposer]\nkind = "support.scripted:ScriptedProposer"\n'
        + extra
    )
    repo = make_repo(root / "repo", {"score.py": NOISY, "overnight.toml": toml,
                                     "holdout.py": "print('acc: 0.5')\n"})  # fmt: skip
    env = write_script(root / "s.json", steps)
    out = run_cli(repo, "run", "-n", str(len(steps)), "--plain", env=env, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    return repo


def _variant(mu: float, body: str = "") -> dict:
    return {"files": {"score.py": NOISY.replace("MU = 10.0", f"MU = {mu}") + body},
            "description": f"mu {mu}{' +' if body else ''}"}  # fmt: skip


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    extra = (f'\n[holdout]\ncommand = "{PY} holdout.py"\nname = "acc"\n\n'
             '[[constraint]]\nname = "vram"\nmax = 150\n')  # fmt: skip
    steps = [
        _variant(9.0),  # keep, confirmed
        _variant(9.01),  # discard: noise
        _variant(8.0, "raise SystemExit(1)\n"),  # crash
        _variant(7.0, "print('vram: 999')\n"),  # constraint broken: rejected
        {"files": {}, "description": "nothing", "invalid_reason": "edit did not apply"},
        _variant(7.5),  # keep
    ]
    return _study(tmp_path_factory.mktemp("full"), "repeats = 3\nconfirm = true\n", extra, steps)


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    steps = [_variant(10.0, f"# {i}\n") for i in range(6)] + [_variant(8.0)]
    return _study(tmp_path_factory.mktemp("pooled"), "remeasure_every = 1\n", "", steps)


def ledger_copy(repo: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ledger.sqlite"
    src = repo / ".overnight" / "t" / "ledger.sqlite"
    with sqlite3.connect(src) as db:  # checkpoint the WAL into the copy
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(src, dst)
    return dst


def verify(path: Path) -> dict:
    ledger = Ledger(path, readonly=True)
    try:
        return verify_ledger(ledger).as_dict()
    finally:
        ledger.close()


def test_a_real_study_verifies(full: Path) -> None:
    log = json.loads(run_cli(full, "log", "--json").stdout)
    assert [r["status"] for r in log] == [
        "keep", "keep", "discard", "crash", "rejected", "invalid", "keep"
    ]  # fmt: skip
    out = run_cli(full, "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verified 6 verdict(s), 1 not recomputable: all agree" in out.stdout
    data = json.loads(run_cli(full, "verify", "--json").stdout)
    assert data["ok"] and data["skipped"] == [{"experiment": 5, "why": "nothing was measured"}]


def test_pooled_noise_decisions_verify(pooled: Path, tmp_path: Path) -> None:
    log = Study.open(pooled / "overnight.toml").log()
    methods = [r.meta["verdict"]["method"] for r in log[1:]]
    assert methods[0] == "greedy" and methods[-1] == "pooled"  # noise learnt from re-runs
    assert log[-1].status == "keep"  # a ~7σ gain passes the pooled test
    assert verify(ledger_copy(pooled, tmp_path))["ok"]
    # Changing one re-measurement changes the noise estimate the decisions relied on.
    db_path = ledger_copy(pooled, tmp_path)
    with sqlite3.connect(db_path) as db:
        last = "SELECT MAX(id) FROM measurements WHERE kind = 'remeasure' AND n = 0"
        db.execute(f"UPDATE measurements SET value = value + 3 WHERE id = ({last})")
    result = verify(db_path)
    assert not result["ok"]
    assert any("noise" in d["problem"] for d in result["disagreements"])


@pytest.mark.parametrize(
    ("sql", "experiment", "needle"),
    [
        # A discarded candidate's runs edited to look like a clear win.
        ("UPDATE measurements SET value = value - 5 WHERE n = 2 AND kind = 'run'", 2,
         "recomputed"),
        # The stored value no longer matches the runs.
        ("UPDATE experiments SET value = 1 WHERE n = 1", 1, "not the mean of its runs"),
        # A verdict flipped in the ledger.
        ("UPDATE experiments SET status = 'keep' WHERE n = 2", 2, "ledger says keep"),
        # A measurement deleted.
        ("DELETE FROM measurements WHERE n = 1 AND kind = 'confirm' AND repeat = 3", 1,
         "missing"),
        # A crash that did not crash.
        ("UPDATE measurements SET exit_code = 0 WHERE n = 3", 3, "every stored run succeeded"),
        # The holdout of a keep edited to a regression.
        ("UPDATE measurements SET value = 0.1 WHERE n = 6 AND kind = 'holdout'", 6,
         "recomputed rejected"),
    ],
)  # fmt: skip
def test_tampering_is_reported(full: Path, tmp_path: Path, sql: str, experiment: int,
                               needle: str) -> None:  # fmt: skip
    db_path = ledger_copy(full, tmp_path)
    with sqlite3.connect(db_path) as db:
        db.execute(sql)
    result = verify(db_path)
    assert not result["ok"]
    problems = {d["experiment"]: d["problem"] for d in result["disagreements"]}
    assert experiment in problems and needle in problems[experiment], problems


def test_verify_exits_1_on_disagreement(full: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(full, repo)
    db = repo / ".overnight" / "t" / "ledger.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE experiments SET status = 'discard' WHERE n = 6")
    out = run_cli(repo, "verify")
    assert out.returncode == 1
    assert "experiment 6: recomputed keep, but the ledger says discard" in out.stdout
    assert "1 verdict(s) do not follow" in out.stderr
