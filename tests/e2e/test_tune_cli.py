"""`overnight run --proposer tune` end to end: what it may touch, and the history it keeps
while run-ahead proposals are re-based onto new bests."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import git, make_repo, run_cli, score_config

from overnight.proposers.tune.knobs import find_knobs

SCORE = """\
SEED = 7
A = 10
B = 0.5  # tune: 0.1..0.9
C = 3.0
D = 64
print(f"score: {(A - 3) ** 2 + (B - 0.05) ** 2 * 100 + (C - 1) ** 2 + abs(D - 100) / 10}")
"""
# [proposer] is the config's last table, so the extra line lands in it.
CONFIG = score_config(name="t", budget="30s", proposer="tune", extra='exclude = ["C"]\n')


def test_tune_respects_declarations_and_keeps_one_trial_per_experiment(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE, "overnight.toml": CONFIG})
    probe = tmp_path / "probe.json"
    out = run_cli(repo, "run", "-n", "16", "--seed", "3", "--plain", "--lookahead", "1",
                  "--proposer", "support.tune_probe:ProbedTune",
                  env={"OVERNIGHT_TUNE_PROBE": str(probe)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    log = json.loads(run_cli(repo, "log", "--json").stdout)
    assert len(log) == 17
    rebased = 0
    for row in log[1:]:
        if row["commit"] is None:
            continue
        text = git(repo, "show", f"refs/overnight/t/{row['experiment']}:score.py")
        values = {k.name: k.value for k in find_knobs("score.py", text)}
        assert values["SEED"] == 7 and values["C"] == 3.0  # default and config exclusions
        assert 0.1 <= values["B"] <= 0.9 or values["B"] == 0.5  # declared in the comment
        assert values["D"] in (16, 32, 64, 128, 256, 512, 1024)  # a power of two stays one
        shown = json.loads(run_cli(repo, "show", str(row["experiment"]), "--json").stdout)
        transfer = shown["meta"].get("verdict", {}).get("transfer") or {}
        rebased += transfer.get("how") == "proposer"
        # What the proposer learned is what ran: the recorded params are the commit's knobs.
        assert shown["meta"]["params"] == values
    assert rebased >= 1  # run-ahead proposals were re-based onto a newer best
    report = json.loads(probe.read_text())
    states = report["states"]
    # One trial per experiment (the baseline included), none left RUNNING but the
    # proposal prepared ahead that never ran.
    assert states.count("RUNNING") == report["pending"] <= 1
    assert len(states) - report["pending"] == len(log)
    assert report["told"] == list(range(len(log)))
