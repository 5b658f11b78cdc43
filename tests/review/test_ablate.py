"""`overnight finish --ablate`: a real keep and a keep that only won by noise.

The no-op keep is made deterministic: during the study, an external "noise" file makes the
machine look faster exactly while the comment-only change is measured, so the greedy loop
keeps it. In the morning the noise is gone, and ablation must see that removing the real
keep costs 3 while removing the no-op costs nothing."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import git, make_repo, run_cli, score_config, write_script

from overnight.store.lock import study_lock

SRC = """\
import os
X = 10
# -
# -
# -
noise = os.environ.get("NOISE_FILE")
print(f"score: {X + (float(open(noise).read()) if noise else 0.0)}")
"""


def test_ablation_tells_the_real_keep_from_the_lucky_one(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"score.py": SRC, "overnight.toml": score_config()})
    noise = tmp_path / "noise.txt"
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": SRC.replace("X = 10", "X = 7")}, "description": "X 10 → 7"},
        {"files": {"score.py": "{BEST}# tidy up\n"}, "description": "a comment"},
    ])  # fmt: skip
    env["NOISE_FILE"] = str(noise)
    noise.write_text("0")
    assert run_cli(repo, "run", "-n", "1", "--plain", env=env).returncode == 0
    noise.write_text("-0.5")  # the machine "got faster" while experiment 2 ran
    assert run_cli(repo, "run", "-n", "1", "--plain", env=env).returncode == 0
    log = json.loads(run_cli(repo, "log", "--json").stdout)
    assert [(r["status"], r["value"]) for r in log] == [
        ("keep", 10.0), ("keep", 7.0), ("keep", 6.5)
    ]  # fmt: skip

    # A running study holds the lock: ablation refuses and writes nothing.
    with study_lock(repo / ".overnight" / "t", "t"):
        out = run_cli(repo, "finish", "--ablate", env=env)
    assert out.returncode == 2 and "cannot ablate now" in out.stderr
    assert git(repo, "branch", "--list", "overnight/t-final") == ""

    noise.write_text("0")
    out = run_cli(repo, "finish", "--ablate", "--json", env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert "3 variants × 3 repeats = 9 runs" in out.stderr
    by_n = {r["experiment"]: r for r in rows}
    real, lucky = by_n[1], by_n[2]
    assert real["contribution"] == 3.0 and not real["negligible"] and real["effect"] == "helps"
    assert real["values"] == [10.0] * 3 and real["final_values"] == [7.0] * 3
    assert lucky["contribution"] == 0.0 and lucky["negligible"]
    assert lucky["stderr"] == 0.0
    table = json.loads((repo / ".overnight" / "t" / "ablation.json").read_text())
    assert [(r["experiment"], r["negligible"]) for r in table] == [(1, False), (2, True)]
    for key in ("description", "contribution", "stderr", "values"):
        assert key in table[0]
    # The ablation's own worktree is gone, and the user's checkout was never touched.
    assert not (repo / ".overnight" / "worktrees" / "t-ablate").exists()
    assert git(repo, "status", "--porcelain") == ""

    # The human-readable table names the negligible keep and suggests dropping it.
    out = run_cli(repo, "finish", "--ablate", "--repeats", "1", env=env)
    assert out.returncode == 0, out.stderr
    assert "negligible: experiment(s) 2" in out.stdout and "--drop 2" in out.stdout
    assert "3 variants × 1 repeat = 3 runs" in out.stderr


def test_repeats_needs_ablate(score_repo: Path) -> None:
    out = run_cli(score_repo, "finish", "--repeats", "2")
    assert out.returncode == 2 and "--repeats" in out.stderr


def test_a_keep_that_a_later_keep_builds_on_is_measured_with_it(tmp_path: Path) -> None:
    """Keep 2 changes the very text keep 1 wrote: without 1 it has nothing to change, so
    leaving 1 out leaves 2 out too, and the row says so with a number for the pair."""
    src = "X = 10\n# -\nY = 5\nprint(f'score: {X + Y}')\n"
    repo = make_repo(tmp_path / "repo", {"score.py": src, "overnight.toml": score_config()})
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": src.replace("X = 10", "X = 7")}, "description": "X 10 → 7"},
        {"files": {"score.py": src.replace("X = 10", "X = 6")}, "description": "X 7 → 6"},
        {"files": {"score.py": src.replace("X = 10", "X = 6").replace("Y = 5", "Y = 4")},
         "description": "Y 5 → 4"},
    ])  # fmt: skip
    assert run_cli(repo, "run", "-n", "3", "--plain", env=env).returncode == 0
    out = run_cli(repo, "finish", "--ablate", "--json", "--repeats", "2", env=env)
    assert out.returncode == 0, out.stderr
    by_n = {r["experiment"]: r for r in json.loads(out.stdout)}
    first, second, third = by_n[1], by_n[2], by_n[3]
    assert first["dependents"] == [2] and first["contribution"] == 4.0  # 1 and 2 together
    assert "removed together with experiment(s) 2" in first["note"]
    assert "X = 7" in first["note"]  # the text that ties them
    assert second["dependents"] == [] and second["contribution"] == 1.0
    assert third["contribution"] == 1.0 and third["ci95"] == 0.0
    assert all(r["in_smallest_set"] for r in by_n.values())
