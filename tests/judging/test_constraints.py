"""`[[constraint]]` end to end: a broken limit is rejected and named, a constrained metric
that is not reported is a crash, and `status` / `show` report the limits."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_repo, run_cli, score_config, write_script

CONSTRAINTS = """
[[constraint]]
name = "mem"
max = 100

[[constraint]]
name = "acc"
min = 0.5
"""


def src(x: float, mem: float | None, acc: float = 0.9) -> str:
    mem_line = f"print('mem: {mem}')\n" if mem is not None else ""
    return f"X = {x}\n{mem_line}print('acc: {acc}')\nprint(f'score: {{X}}')\n"


def test_constraints_reject_crash_and_are_reported(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "score.py": src(10, 80), "overnight.toml": score_config(extra=CONSTRAINTS),
    })  # fmt: skip
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": src(8, 60)}, "description": "within limits"},
        {"files": {"score.py": src(1, 500)}, "description": "too much memory"},
        {"files": {"score.py": src(2, 50, acc=0.1)}, "description": "too inaccurate"},
        {"files": {"score.py": src(3, None)}, "description": "forgets to report mem"},
        {"files": {"score.py": src(9, 10)}, "description": "worse but lean"},
    ])  # fmt: skip
    out = run_cli(repo, "run", "-n", "5", "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout

    log = json.loads(run_cli(repo, "log", "--json").stdout)
    assert [r["status"] for r in log] == [
        "keep",
        "keep",
        "rejected",
        "rejected",
        "crash",
        "discard",
    ]
    assert "constraint broken: mem = 500 > max 100" in log[2]["reason"]
    assert "constraint broken: acc = 0.1 < min 0.5" in log[3]["reason"]
    assert "'mem' not reported" in log[4]["reason"] and log[4]["value"] is None

    st = json.loads(run_cli(repo, "status", "--json").stdout)
    assert st["best"]["experiment"] == 1
    assert st["constraints"] == [
        {"name": "mem", "min": None, "max": 100.0, "value": 60.0, "ok": True},
        {"name": "acc", "min": 0.5, "max": None, "value": 0.9, "ok": True},
    ]
    text = run_cli(repo, "status").stdout
    assert "constraints: mem <= 100 (best 60, ok); acc >= 0.5 (best 0.9, ok)" in text

    show = run_cli(repo, "show", "2")
    assert show.returncode == 0, show.stderr
    assert "mem <= 100 (here 500, BROKEN)" in show.stdout
    shown = json.loads(run_cli(repo, "show", "4", "--json").stdout)
    assert shown["constraints"][0] == {
        "name": "mem", "min": None, "max": 100.0, "value": None, "ok": None
    }  # fmt: skip
