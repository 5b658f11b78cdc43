"""The checks on the verdicts from the command line: controls and the false-keep rate in
`status`, suspects held for the morning and `overnight accept`, effect sizes in `git log`,
`verify` replaying all of it. Real repositories, real runs, the real CLI."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from conftest import git, make_repo, run_cli, write_script

PY = sys.executable
SCORE = """\
import os, random
X = 10
rng = random.Random(f"{os.environ['OVERNIGHT_SEED']}-{os.environ['OVERNIGHT_EXPERIMENT']}")
print(f"score: {X + rng.gauss(0, 0.01)}")
"""


def build(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    toml = textwrap.dedent(f"""\
        [study]
        name = "t"
        surface = ["score.py"]
        budget = "20s"

        [run]
        command = "{PY} score.py"

        [metric]
        name = "score"
        goal = "minimize"
        repeats = 2

        [judge]
        controls = 2
        max_jump = "30%"

        [proposer]
        kind = "support.scripted:ScriptedProposer"
        """)
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE, "overnight.toml": toml})
    # 10 → 9 and 9 → 8.5 are kept; 8.5 → 5 gains more than 30% of the best: suspect.
    steps = [{"files": {"score.py": SCORE.replace("X = 10", f"X = {x}")},
              "description": f"X = {x}"} for x in (9, 8.5, 5)]  # fmt: skip
    return repo, write_script(tmp_path / "s.json", steps)


def test_controls_suspects_accept_and_gains_from_the_command_line(tmp_path: Path) -> None:
    repo, env = build(tmp_path)
    out = run_cli(repo, "run", "-n", "6", "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = json.loads(run_cli(repo, "log", "--json").stdout)
    controls = [r for r in log if r["control_of"] is not None]
    real = [r for r in log if r["control_of"] is None and r["experiment"] > 0]
    assert len(controls) == 3 and [r["status"] for r in real] == ["keep", "keep", "suspect"]
    suspect = real[2]["experiment"]
    assert "more than [judge] max_jump" in real[2]["reason"]
    assert all(r["status"] == "discard" and r["reason"].startswith("control (") for r in controls)

    st = json.loads(run_cli(repo, "status", "--json").stdout)
    c = st["controls"]
    assert (c["run"], c["would_keep"], c["rate"]) == (3, 0, 0.0)
    assert c["interval"][0] == 0.0 and 0.5 < c["interval"][1] < 0.75  # 0 of 3, exact CI
    assert st["counts"]["suspect"] == 1 and st["suspects"] == [suspect]
    assert st["hit_rate"] == 2 / 3  # controls are not proposals
    text = run_cli(repo, "status").stdout
    assert "false-keep rate 0.0%: 0 of 3 controls would have been kept" in text
    assert f"held for your review (suspect): {suspect}" in text
    assert "\tsuspect\t" in (repo / ".overnight/t/results.tsv").read_text()

    # The branch: the two keeps, each with its gain; no control, no suspect.
    branch = git(repo, "rev-list", "overnight/t").split()
    assert not {r["commit"] for r in controls + [real[2]]} & set(branch)
    gains = git(repo, "log", "--format=%(trailers:key=Overnight-Gain,valueonly)", "overnight/t")
    values = [float(g.split()[0]) for g in gains.split("\n") if g.strip()]
    assert len(values) == 2 and abs(values[0] - 0.5) < 0.05 and abs(values[1] - 1) < 0.05

    assert run_cli(repo, "verify").returncode == 0
    refused = run_cli(repo, "accept", str(real[0]["experiment"]))
    assert refused.returncode == 2 and "not suspect" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    control = run_cli(repo, "apply", str(controls[0]["experiment"]))
    assert control.returncode == 2 and "is a control" in control.stderr

    accepted = run_cli(repo, "accept", str(suspect))
    assert accepted.returncode == 0, accepted.stderr
    assert f"accepted experiment {suspect}" in accepted.stdout
    st = json.loads(run_cli(repo, "status", "--json").stdout)
    assert st["best"]["experiment"] == suspect and st["counts"]["suspect"] == 0
    assert git(repo, "rev-parse", "overnight/t") == st["best"]["commit"]
    assert git(repo, "show", "overnight/t:score.py").startswith("import os")
    assert "X = 5" in git(repo, "show", "overnight/t:score.py")
    message = git(repo, "log", "-1", "--format=%B", "overnight/t")
    trailer = message.split(f"Overnight-Experiment: {suspect}\nOvernight-Gain: ")[1]
    assert abs(float(trailer.split()[0]) - 3.5) < 0.05  # 8.5 → 5
    verified = run_cli(repo, "verify")
    assert verified.returncode == 0, verified.stdout
    # A resumed night goes on from the accepted best.
    out = run_cli(repo, "run", "-n", "1", "--plain", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    assert run_cli(repo, "verify").returncode == 0
