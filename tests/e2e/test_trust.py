"""End-to-end trust features on real temporary repositories: noise-aware verdicts over
repeats, confirming re-runs, simplicity, drift, the holdout, and the speedup example.

Runs are tiny Python scripts whose noise comes from OVERNIGHT_SEED (and, where a run must
not repeat its predecessor's numbers, OVERNIGHT_EXPERIMENT); they call this interpreter
directly, because a pyenv shim costs ~0.4 s per start.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import textwrap
from pathlib import Path

from conftest import make_repo, run_cli, write_script

from overnight.judging.replay import verify_ledger
from overnight.store.study import Study

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]

# score = MU + sd 1 noise, different for every run of every experiment.
NOISY = """\
import os, random
MU = 10.0
rng = random.Random(f"{os.environ['OVERNIGHT_SEED']}-{os.environ['OVERNIGHT_EXPERIMENT']}")
print(f"score: {MU + rng.gauss(0, 1)}")
"""


def study(tmp_path: Path, score: str, metric: str = "", extra: str = "", budget: str = "20s",
          files: dict[str, str] | None = None) -> Path:  # fmt: skip
    toml = (
        textwrap.dedent(f"""\
        [study]
        name = "t"
        surface = ["score.py"]
        budget = "{budget}"

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
    return make_repo(
        tmp_path / "repo", {"score.py": score, "overnight.toml": toml, **(files or {})}
    )


def run(repo: Path, tmp_path: Path, steps: list[dict], extra_env: dict | None = None) -> list:
    env = write_script(tmp_path / "s.json", steps)
    env.update(extra_env or {})
    out = run_cli(repo, "run", "-n", str(len(steps)), "--plain", env=env, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    return [r.public() for r in Study.open(repo / "overnight.toml").log()]


# The read side in-process: a CLI start costs ~0.3 s, and these tests read a lot.
def status(repo: Path) -> dict:
    return Study.open(repo / "overnight.toml").status()


def show(repo: Path, n: int) -> dict:
    return Study.open(repo / "overnight.toml").show(n)


def verify_ok(repo: Path) -> None:
    ledger = Study.open(repo / "overnight.toml").open_ledger()
    try:
        result = verify_ledger(ledger)
    finally:
        ledger.close()
    assert result.ok and result.checked > 1, result.as_dict()


def test_aa_study_keeps_no_noise_but_keeps_a_real_2_sigma_gain(tmp_path: Path) -> None:
    """A small real A/A study: 10 changes that do nothing (comments), then a true 2σ gain.
    With greedy single runs ~5 of the 10 would be kept; with k = 5 and Welch, ~alpha."""
    repo = study(tmp_path, NOISY, "repeats = 5\n")
    steps = [{"files": {"score.py": NOISY.replace("MU = 10.0", f"MU = 10.0  # variant {i}")},
              "description": f"A/A {i}"} for i in range(10)]  # fmt: skip
    steps.append({"files": {"score.py": NOISY.replace("MU = 10.0", "MU = 8.0")},
                  "description": "2 sigma better"})  # fmt: skip
    log = run(repo, tmp_path, steps)
    aa = [r for r in log if r["description"].startswith("A/A")]
    assert sum(r["status"] == "keep" for r in aa) <= 1, [r["reason"] for r in aa]
    assert all("Welch" in r["reason"] for r in aa)
    assert log[-1]["status"] == "keep", log[-1]["reason"]
    info = show(repo, 11)
    assert [m["kind"] for m in info["measurements"]] == ["run"] * 5
    rule = info["meta"]["verdict"]
    assert rule["method"] == "welch" and rule["rule"]["alpha"] == 0.05
    base = show(repo, 0)
    assert len(base["measurements"]) == 5  # the baseline is measured k times too
    verify_ok(repo)


def test_confirm_rejects_a_keep_that_does_not_hold(tmp_path: Path) -> None:
    base = "print('score: 10')\n"
    lucky = "import os\nprint('score: 9' if os.environ['OVERNIGHT_SEED'] == '0' else 'score: 11')\n"
    flaky = "import os\nassert os.environ['OVERNIGHT_SEED'] == '0'\nprint('score: 9')\n"
    repo = study(tmp_path, base, "confirm = true\n")
    log = run(repo, tmp_path, [
        {"files": {"score.py": lucky}, "description": "lucky once"},
        {"files": {"score.py": flaky}, "description": "crashes when re-run"},
        {"files": {"score.py": "print('score: 8')\n"}, "description": "really better"},
    ])  # fmt: skip
    assert [r["status"] for r in log[1:]] == ["rejected", "rejected", "keep"]
    assert "confirming re-run did not hold" in log[1]["reason"]
    assert "confirming re-run failed (crash)" in log[2]["reason"]
    assert "confirmed by a re-run" in log[3]["reason"]
    kinds = [m["kind"] for m in show(repo, 3)
             ["measurements"]]  # fmt: skip
    assert kinds == ["run", "confirm"]
    verify_ok(repo)


def test_prefer_simpler_keeps_a_shorter_change_that_is_not_worse(tmp_path: Path) -> None:
    # Noise from the seed only: the same seed gives the same number, as in deterministic
    # training with a fixed seed; a change that does not matter measures identically.
    src = ("import os, random\nrng = random.Random(int(os.environ['OVERNIGHT_SEED']))\n"
           "unused = [i * i for i in range(10)]\nalso_unused = sum(unused)\n"
           "print(f'score: {10 + rng.gauss(0, 1)}')\n")  # fmt: skip
    shorter = src.replace("unused = [i * i for i in range(10)]\nalso_unused = sum(unused)\n", "")
    longer = src + "# a comment\nextra = 1\n"
    steps = [{"files": {"score.py": longer}, "description": "longer, same"},
             {"files": {"score.py": shorter}, "description": "delete dead code"}]  # fmt: skip
    repo = study(tmp_path, src, "repeats = 3\nprefer_simpler = true\n")
    log = run(repo, tmp_path, steps)
    assert [r["status"] for r in log[1:]] == ["discard", "keep"]
    assert "simpler (5 → 3 lines)" in log[2]["reason"] and "within noise" in log[2]["reason"]
    verify_ok(repo)
    # Without the option the same change is noise, and discarded.
    shutil.rmtree(tmp_path / "repo")
    repo = study(tmp_path, src, "repeats = 3\n")
    assert [r["status"] for r in run(repo, tmp_path, steps)[1:]] == ["discard", "discard"]


def test_remeasuring_the_best_records_drift(tmp_path: Path) -> None:
    # The "machine" slows down as it works: every run adds 0.2 to the score.
    drifting = textwrap.dedent("""\
        import os, random
        path = os.environ["DRIFT_FILE"]
        with open(path, "a") as fh:
            fh.write("x")
        runs = os.path.getsize(path)
        rng = random.Random(f"{os.environ['OVERNIGHT_SEED']}-{os.environ['OVERNIGHT_EXPERIMENT']}")
        print(f"score: {10 + 0.2 * runs + rng.gauss(0, 0.05)}")
        """)
    repo = study(tmp_path, drifting, "repeats = 3\nremeasure_every = 2\n")
    steps = [{"files": {"score.py": drifting + f"# {i}\n"}, "description": f"noop {i}"}
             for i in range(4)]  # fmt: skip
    log = run(repo, tmp_path, steps, {"DRIFT_FILE": str(tmp_path / "drift")})
    # Against a stale baseline every candidate would look worse; all are discarded anyway.
    assert all(r["status"] == "discard" for r in log[1:])
    st = status(repo)
    assert st["drift"]["remeasured"] >= 1 and st["drift"]["last"]["significant"] is True
    assert st["drift"]["last"]["after"] > st["drift"]["last"]["before"]
    text = run_cli(repo, "status").stdout
    assert "drift: best (experiment 0) re-measured" in text and "significant" in text
    kinds = [m["kind"] for m in show(repo, 0)
             ["measurements"]]  # fmt: skip
    assert kinds[:3] == ["run"] * 3 and "remeasure" in kinds
    # Decisions after the re-measurement compare with the fresh values.
    ref = show(repo, 4)["meta"]["verdict"]["reference"]
    remeasured = [m["id"] for m in show(repo, 0)
                  ["measurements"] if m["kind"] == "remeasure"]  # fmt: skip
    assert set(ref["ids"]) <= set(remeasured)
    verify_ok(repo)


def test_holdout_side_by_side_and_divergence(tmp_path: Path) -> None:
    holdout = "import re\nprint(f'acc: 0.9')\n"  # the hidden metric never moves
    extra = f'\n[holdout]\ncommand = "{PY} holdout.py"\nname = "acc"\ngoal = "maximize"\n'
    repo = study(tmp_path, "print('score: 10')\n", extra=extra, files={"holdout.py": holdout})
    log = run(repo, tmp_path, [{"files": {"score.py": "print('score: 9')\n"},
                                "description": "better on the search metric"}])  # fmt: skip
    assert log[1]["status"] == "keep"
    st = status(repo)
    h = st["holdout"]
    assert (h["name"], h["baseline"], h["best"], h["diverging"]) == ("acc", 0.9, 0.9, True)
    assert [k["holdout"] for k in h["keeps"]] == [0.9, 0.9]
    text = run_cli(repo, "status").stdout
    assert "holdout acc 0.9 → 0.9" in text and "diverging" in text
    # The user sees the holdout in `show`; the proposer's records do not carry it.
    assert "holdout 0.9" in run_cli(repo, "show", "1").stdout
    rec = Study.open(repo / "overnight.toml").log()[1]  # as a proposer's history holds it
    assert "acc" not in json.dumps(dataclasses.asdict(rec), default=str)
    verify_ok(repo)


def test_speedup_example_baseline_runs(tmp_path: Path) -> None:
    src = ROOT / "examples" / "speedup"
    files = {p.relative_to(src).as_posix(): p.read_text()
             for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip
    # This interpreter rather than whatever `python` is on PATH (a slow shim, or none).
    files["overnight.toml"] = files["overnight.toml"].replace('"python ', f'"{PY} ')
    repo = make_repo(tmp_path / "speedup", files)
    out = run_cli(repo, "run", "-n", "0", "--plain", timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    st = status(repo)
    assert st["baseline"]["value"] is not None and st["baseline"]["value"] > 0
    assert len(show(repo, 0)["measurements"]) == 3  # repeats = 3
