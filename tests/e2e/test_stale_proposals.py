"""A proposal made on a best that moved while it waited (run-ahead) is carried onto the new
best when what it touched is still there, even on the very next line, measured there and
kept; a change of the same text is still a conflict, reported with the file and the text.
The proposer is told which experiments are in flight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_repo, run_cli, score_config, write_script

SRC = """\
import os, pathlib, time
if os.environ["OVERNIGHT_EXPERIMENT"] == "2":  # see GATE below
    gate = pathlib.Path(os.environ["GATE"])
    for _ in range(6000):
        if gate.exists():
            break
        time.sleep(0.01)
C = 5
# -
# -
A = 3.0
B = 10
print(f"score: {A + B + C}")
"""


def study(tmp_path: Path, third: dict) -> list[dict]:
    """Three experiments with run-ahead. Experiment 2's run does not end before the proposal
    of experiment 3 exists (GATE: a rendezvous file the proposer writes), so "3 was proposed
    on experiment 1 while 2 ran" holds without relying on timing."""
    cfg = score_config(proposer="support.spy:SpyProposer")
    repo = make_repo(tmp_path / "repo", {"score.py": SRC, "overnight.toml": cfg})
    gate = tmp_path / "proposed-3"
    env = write_script(tmp_path / "s.json", [
        {"edit": {"score.py": ["C = 5", "C = 4"]}, "description": "C 5 → 4"},
        {"edit": {"score.py": ["A = 3.0", "A = 1.7"]}, "description": "A 3.0 → 1.7"},
        {**third, "signal": str(gate)},
    ])  # fmt: skip
    env.update(GATE=str(gate), OVERNIGHT_SPY_FILE=str(tmp_path / "spy.jsonl"))
    out = run_cli(repo, "run", "-n", "3", "--plain", "--lookahead", "1", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = json.loads(run_cli(repo, "log", "--json").stdout)
    # Experiment 3 was proposed on experiment 1 while 2 ran, and the proposer was told so.
    contexts = [json.loads(line) for line in (tmp_path / "spy.jsonl").read_text().splitlines()]
    assert contexts[2]["best_experiment"] == 1
    # (As experiment 2 once numbered, or as the proposal a slot just took: either is fine.)
    assert [r["description"] for r in contexts[2]["in_flight"]] == ["A 3.0 → 1.7"]
    return log


def test_a_change_on_the_line_below_a_moved_best_is_kept(tmp_path: Path) -> None:
    third = {"edit": {"score.py": ["B = 10", "B = 9.99999"]}, "description": "B 10 → 9.99999"}
    log = study(tmp_path, third)
    repo = tmp_path / "repo"
    assert [r["status"] for r in log] == ["keep"] * 4
    assert log[3]["value"] == pytest.approx(1.7 + 9.99999 + 4)  # measured on the new best
    assert log[3]["parent"] == log[2]["commit"]
    show = json.loads(run_cli(repo, "show", "3", "--json").stdout)
    transfer = show["meta"]["transfer"]
    assert transfer["transferred"] and transfer["how"] == "merge"
    assert (transfer["from"], transfer["onto"]) == (log[1]["commit"], 2)
    assert "\n A = 1.7\n-B = 10\n+B = 9.99999\n" in show["diff"]  # A is context, not changed
    assert "carried onto experiment 2" in run_cli(repo, "show", "3").stdout
    assert run_cli(repo, "verify").returncode == 0


def test_the_same_text_changed_meanwhile_is_still_a_conflict(tmp_path: Path) -> None:
    third = {"edit": {"score.py": ["A = 3.0", "A = 2.2"]}, "description": "A 3.0 → 2.2"}
    log = study(tmp_path, third)
    assert [r["status"] for r in log] == ["keep", "keep", "keep", "invalid"]
    reason = log[3]["reason"]
    assert "does not merge onto experiment 2" in reason
    assert ("score.py line 11: the change turns `A = 3.0` into `A = 2.2`, but here it reads "
            "`A = 1.7`") in reason  # fmt: skip
    show = json.loads(run_cli(tmp_path / "repo", "show", "3", "--json").stdout)
    (conflict,) = show["meta"]["transfer"]["conflicts"]
    assert conflict == {"path": "score.py", "line": 11, "base": "A = 3.0", "here": "A = 1.7",
                        "change": "A = 2.2"}  # fmt: skip
