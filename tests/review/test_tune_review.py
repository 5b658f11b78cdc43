"""The morning review of a `tune` study whose knobs sit on consecutive lines (as in
autoresearch's train.py): `apply N` carries every keep onto a clean checkout at the study's
start, and `finish --ablate` gives every keep a contribution with an interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import git, make_repo, run_cli, score_config

from overnight.proposers.tune.knobs import find_knobs

TRAIN = """\
import math
LR = 0.04
WD = 0.1
BETA = 0.9
WARMUP = 10
DEPTH = 4
WIDTH = 64
best = {"LR": 0.25, "WD": 0.01, "BETA": 0.3, "WARMUP": 40, "DEPTH": 12, "WIDTH": 200}
loss = sum(math.log10(globals()[k] / v) ** 2 for k, v in best.items())
print(f"score: {loss}")
"""


def knob_values(text: str) -> dict[str, float]:
    return {k.name: k.value for k in find_knobs("score.py", text)}


@pytest.fixture(scope="module")
def tune_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    repo = make_repo(tmp_path_factory.mktemp("tune") / "repo",
                     {"score.py": TRAIN, "overnight.toml": score_config(proposer="tune")})
    # Run-ahead (the default): proposals are made on a best that may move before they run.
    out = run_cli(repo, "run", "-n", "16", "--plain", "--lookahead", "1", timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    log = json.loads(run_cli(repo, "log", "--json").stdout)
    keeps = [r for r in log[1:] if r["status"] == "keep"]
    assert len(log) == 17 and len(keeps) >= 3, [(r["status"], r["description"]) for r in log]
    return repo, keeps


def test_apply_carries_every_keep_onto_the_start(tune_study: tuple[Path, list[dict]]) -> None:
    repo, keeps = tune_study
    status = json.loads(run_cli(repo, "status", "--json").stdout)
    assert git(repo, "rev-parse", "HEAD") == status["start_commit"]
    start = knob_values(TRAIN)
    for keep in keeps:
        git(repo, "reset", "-q", "--hard")
        n = keep["experiment"]
        out = run_cli(repo, "apply", str(n))
        assert out.returncode == 0, f"apply {n}: {out.stderr}"
        assert "re-applied by the tune proposer" in out.stdout
        meta = json.loads(run_cli(repo, "show", str(n), "--json").stdout)["meta"]
        now = knob_values((repo / "score.py").read_text())
        expected = {**start, **{k: meta["params"][k] for k in meta["changed"]}}
        assert now == pytest.approx(expected), (n, keep["description"])
        assert git(repo, "diff", "--cached") == ""  # unstaged, as always
    git(repo, "reset", "-q", "--hard")


def test_ablation_gives_every_keep_a_contribution_with_an_interval(
    tune_study: tuple[Path, list[dict]],
) -> None:
    repo, keeps = tune_study
    out = run_cli(repo, "finish", "--ablate", "--repeats", "3", "--json", timeout=600)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert sorted(r["experiment"] for r in rows) == sorted(k["experiment"] for k in keeps)
    for r in rows:
        assert r["contribution"] is not None and r["ci95"] is not None, r
        assert r["effect"] in ("helps", "hurts", "negligible") and r["dependents"] == []
        assert r["hitchhiker"] == (r["effect"] == "negligible")
    # Deterministic runs: a keep whose knobs later keeps re-set contributes exactly nothing.
    for r in rows:
        if r["note"] and "superseded" in r["note"]:
            assert r["contribution"] == 0.0 and r["values"] == r["final_values"]
    # Every keep that helps is in the smallest set; the others can be dropped, and the
    # final branch without them is the same code (tune's knob re-sets supersede them).
    members = {r["experiment"] for r in rows if r["in_smallest_set"]}
    assert {r["experiment"] for r in rows if r["effect"] == "helps"} <= members
    others = sorted({r["experiment"] for r in rows} - members)
    if others:
        out = run_cli(repo, "finish", "--drop", ",".join(map(str, others)))
        assert out.returncode == 0, out.stderr
        assert git(repo, "rev-parse", "overnight/t-final^{tree}") == git(
            repo, "rev-parse", "overnight/t^{tree}"
        )
    human = run_cli(repo, "finish", "--ablate", "--repeats", "2", timeout=600)
    assert human.returncode == 0, human.stderr
    assert "table written to" in human.stdout
