"""docs/autoresearch.md, checked: overnight on a stand-in with the shapes of karpathy/
autoresearch's files (the hyperparameter block after the model code, expressions, a tuple,
a constant that is no hyperparameter, the parameter-count listing, `\r` progress lines and
the summary block), configured with the doc's own overnight.toml, maps onto autoresearch's
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
    overnight.toml left untracked and ignored through .git/info/exclude, as the doc says,
    run with `uv run train.py` where uv is installed and `python train.py` where not."""
    repo = tmp_path / "autoresearch"
    shutil.copytree(STANDIN, repo, ignore=shutil.ignore_patterns("__pycache__"))
    git(repo, "init", "-q", "-b", "master")
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "autoresearch")
    toml = doc_block("toml", "# overnight.toml for karpathy/autoresearch")
    assert 'command = "uv run train.py"' in toml and 'budget = "10m"' in toml
    if shutil.which("uv") is None:
        toml = toml.replace("uv run train.py", "python train.py")
    (repo / "overnight.toml").write_text(toml)
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

    # log --json: val_bpb is `value`, every other line of the summary block a secondary
    # metric; the parameter-count listing (`  scalars                 : 16`) and the `\r`
    # progress line (`| loss: 9.200000 |`) are not metrics.
    base = log[0]
    assert base["value"] == pytest.approx(0.959225, abs=1e-6)
    assert set(base["metrics"]) == {
        "val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
        "total_tokens_M", "num_steps", "num_params_M", "depth",
    }  # fmt: skip
    assert base["metrics"]["peak_vram_mb"] == pytest.approx(45060.2)
    run_log = (repo / ".overnight" / "mar5" / "experiments" / "0" / "run.stdout").read_bytes()
    assert b"  scalars                 : 16\n" in run_log and b"\rstep 00050" in run_log
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
    # Values as autoresearch writes them: six decimals.
    assert rows[0]["val_bpb"] == "0.959225"
    assert all(re.fullmatch(r"\d+\.\d{6}", r["val_bpb"]) for r in rows if r["val_bpb"])
    assert rows[1]["val_bpb"] == f"{log[1]['value']:.6f}"
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
    # Plus a rejected experiment that was measured (a holdout that regressed, say).
    gated = {**log[2], "commit": "f" * 40, "status": "rejected", "value": 0.97,
             "description": "measured, then refused by the holdout"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(converter)], input=json.dumps([*log, gated]), text=True,
        capture_output=True, check=True,
    )  # fmt: skip
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert lines[0] == AUTORESEARCH_HEADER
    body = {row[0]: row for row in lines[1:]}
    # Left out: the invalid experiment and the rejected one that never got a value (its run
    # edited prepare.py); nothing gets a made-up 0.000000 but the crash.
    assert log[4]["status"] == "rejected" and log[4]["value"] is None
    assert log[4]["commit"][:7] not in body and log[5]["commit"] is None
    assert len(lines) == 1 + 7, lines
    assert body[log[0]["commit"][:7]] == [log[0]["commit"][:7], "0.959225", "44.0", "keep",
                                          "baseline"]  # fmt: skip
    assert body[log[2]["commit"][:7]][3] == "discard"
    assert body["fffffff"][1:4] == ["0.970000", "44.0", "discard"]
    assert body[log[3]["commit"][:7]] == [log[3]["commit"][:7], "0.000000", "0.0", "crash",
                                          "double model width (OOM)"]  # fmt: skip
    assert all(re.fullmatch(r"\d\.\d{6}", row[1]) for row in lines[1:])


def test_tune_finds_the_knobs_the_doc_lists() -> None:
    """The doc names the knobs `tune` searches in train.py and the ones it leaves alone; the
    stand-in has the real file's assignments, so the lists are checked against it."""
    from overnight.proposers.tune.knobs import find_knobs

    text = " ".join(DOC.read_text().split())
    found = [k.name for k in find_knobs("train.py", (STANDIN / "train.py").read_text())]
    assert found[-1] == "H100_BF16_PEAK_FLOPS"
    block = text[text.index("hyperparameter block"):text.index("stays a power of two")]
    assert re.findall(r"`([A-Z0-9_]+(?:\[\d\])?)`", block) == found[:-1]
    # What the doc says tune leaves alone, it does leave alone by default.
    from overnight.proposers.tune.spec import KnobRules, KnobSpec

    rules = KnobRules.from_config(None)
    assert not rules.tuned("H100_BF16_PEAK_FLOPS", KnobSpec())
    assert all(rules.tuned(k, KnobSpec()) for k in found[:-1])
    for left_alone in ("H100_BF16_PEAK_FLOPS = 989.5e12", 'WINDOW_PATTERN = "SSSL"'):
        assert f"`{left_alone}`" in text and left_alone in (STANDIN / "train.py").read_text()
