"""docs/autoresearch.md, checked: overnight on a stand-in with karpathy/autoresearch's layout
and output block, configured with the doc's own overnight.toml, maps onto autoresearch's
results.tsv conventions as the doc's table and converter say."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git, run_cli, write_script

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "autoresearch.md"
STANDIN = ROOT / "tests" / "support" / "autoresearch_standin"
GAME_THE_EVALUATION = "open('prepare.py', 'a').write('# tweak\\n')\nprint('val_bpb: 0.5')\n"
AUTORESEARCH_HEADER = ["commit", "val_bpb", "memory_gb", "status", "description"]


def doc_block(lang: str, first_line: str) -> str:
    """The doc's fenced `lang` block whose first line starts with `first_line`."""
    for block in re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"docs/autoresearch.md has no ```{lang} block starting {first_line!r}")


def train_src(**knobs: float) -> str:
    src = (STANDIN / "train.py").read_text()
    for name, value in knobs.items():
        src, n = re.subn(rf"^{name} = \S+", f"{name} = {value}", src, flags=re.M)
        assert n == 1, name
    return src


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """An 'unchanged autoresearch checkout': the stand-in committed as it is, plus the doc's
    overnight.toml left untracked and ignored through .git/info/exclude, as the doc says
    (with `python train.py`: the test machine may lack uv)."""
    repo = tmp_path / "autoresearch"
    shutil.copytree(STANDIN, repo, ignore=shutil.ignore_patterns("__pycache__"))
    git(repo, "init", "-q", "-b", "master")
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "autoresearch")
    toml = doc_block("toml", "# overnight.toml for karpathy/autoresearch")
    assert 'command = "uv run train.py"' in toml and 'budget = "10m"' in toml
    (repo / "overnight.toml").write_text(toml.replace("uv run train.py", "python train.py"))
    assert "echo overnight.toml >>\n.git/info/exclude" in DOC.read_text()
    with (repo / ".git" / "info" / "exclude").open("a") as fh:
        fh.write("overnight.toml\n")
    return repo


def test_results_and_branch_map_to_autoresearch_conventions(checkout: Path, tmp_path: Path) -> None:
    repo = checkout
    start = git(repo, "rev-parse", "HEAD")
    tracked_before = git(repo, "ls-files")
    env = write_script(tmp_path / "script.json", [
        {"files": {"train.py": train_src(MATRIX_LR=0.06)}, "description": "raise MATRIX_LR"},
        {"files": {"train.py": train_src(MATRIX_LR=0.06, WARMDOWN_RATIO=0.1)},
         "description": "shorter warmdown"},
        {"files": {"train.py": "raise SystemExit('CUDA out of memory')\n"},
         "description": "double model width (OOM)"},
        {"files": {"train.py": GAME_THE_EVALUATION},
         "description": "edit the evaluation"},
        {"files": {"train.py": "{BEST}"}, "description": "no change"},
    ])  # fmt: skip
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    out = run_cli(repo, "run", "-n", "5", "--plain", "--proposer",
                  "support.scripted:ScriptedProposer", env=env)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    # The doc's "without an API key" path: the same study goes on with the knob tuner.
    out = run_cli(repo, "run", "-n", "2", "--plain", "--proposer", "tune", env=env)
    assert out.returncode == 0, out.stdout + out.stderr

    log = json.loads(run_cli(repo, "log", "--json").stdout)
    statuses = [r["status"] for r in log]
    assert statuses[:6] == ["keep", "keep", "discard", "crash", "rejected", "invalid"]
    assert len(log) == 8 and set(statuses[6:]) <= {"keep", "discard"}
    assert "prepare.py" in log[4]["reason"]

    # log --json: val_bpb is `value`, every other line of the block a secondary metric.
    base = log[0]
    assert base["value"] == pytest.approx(0.959225, abs=1e-6)
    for key in ("peak_vram_mb", "training_seconds", "mfu_percent", "num_steps", "depth"):
        assert key in base["metrics"], key
    assert base["metrics"]["peak_vram_mb"] == pytest.approx(45060.2)
    assert log[1]["value"] < base["value"] and log[3]["value"] is None
    for key in ("experiment", "status", "value", "metrics", "commit", "parent", "description",
                "reason", "wall_s", "proposer"):  # fmt: skip
        assert all(key in r for r in log), key

    # results.tsv: autoresearch's columns plus experiment, wall_s, proposer; crash = empty.
    with open(repo / ".overnight" / "mar5" / "results.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert list(rows[0]) == [
        "experiment", "commit", "val_bpb", "status", "description", "wall_s", "proposer"
    ]  # fmt: skip
    assert [r["status"] for r in rows] == statuses
    assert [r["commit"] for r in rows] == [(r["commit"] or "")[:7] for r in log]
    assert all(len(r["commit"]) == 7 for r in rows[:5])
    assert rows[3]["val_bpb"] == "" and rows[5]["val_bpb"] == ""
    assert float(rows[1]["val_bpb"]) == pytest.approx(log[1]["value"], rel=1e-5)
    assert rows[2]["description"] == "shorter warmdown" and rows[0]["proposer"] == "baseline"
    assert {r["proposer"] for r in rows[6:]} == {"tune"}

    # The branch: head = best kept commit, one commit per keep; every candidate has a ref.
    kept = [r for r in log if r["status"] == "keep" and r["experiment"] > 0]
    assert git(repo, "rev-list", "--reverse", f"{start}..overnight/mar5").split() == [
        r["commit"] for r in kept
    ]
    msg = git(repo, "log", "-1", "--format=%B", log[1]["commit"])
    assert msg.startswith("raise MATRIX_LR") and "Overnight-Experiment: 1" in msg
    assert git(repo, "rev-parse", "refs/overnight/mar5/2") == log[2]["commit"]

    # The checkout is unchanged: same HEAD, same tracked files, clean status.
    assert git(repo, "rev-parse", "HEAD") == start and git(repo, "ls-files") == tracked_before
    assert git(repo, "status", "--porcelain") == ""  # as before: the config is ignored

    # The doc's converter writes autoresearch's own five-column results.tsv.
    converter = tmp_path / "to_autoresearch_tsv.py"
    converter.write_text(doc_block("python", "# to_autoresearch_tsv.py"))
    done = subprocess.run(
        [sys.executable, str(converter)], input=json.dumps(log), text=True,
        capture_output=True, check=True,
    )  # fmt: skip
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert lines[0] == AUTORESEARCH_HEADER
    body = lines[1:]
    assert len(body) == 7  # the invalid experiment never ran: left out
    assert body[0] == [log[0]["commit"][:7], "0.959225", "44.0", "keep", "baseline"]
    assert body[2][3] == "discard" and body[4][3] == "discard"  # discard; rejected
    assert body[3] == [log[3]["commit"][:7], "0.000000", "0.0", "crash", "double model width (OOM)"]
    assert all(re.fullmatch(r"\d\.\d{6}", row[1]) for row in body)
