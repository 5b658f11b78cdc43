"""In process, with the fake executor: a winner whose best moved while it was measured is
carried onto the new best (its change sits on the line next to the new keep's), measured
again there and kept; the record says it was transferred, how, and in which round."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import make_repo, score_config, write_script

from overnight.executors.base import RunTask
from overnight.executors.fake import FakeExecutor, FakeRun
from overnight.experiment.loop import Loop, RunOptions
from overnight.store.study import Study

SRC = "A = 3.0\nB = 10\nprint(f'score: {A + B}')\n"


def test_a_winner_is_carried_onto_a_best_that_moved_on_the_next_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = score_config() + "\n[executor]\nworkers = 2\n"
    repo = make_repo(tmp_path / "repo", {"score.py": SRC, "overnight.toml": cfg})
    env = write_script(tmp_path / "s.json", [
        {"edit": {"score.py": ["A = 3.0", "A = 1.7"]}, "description": "A 3.0 → 1.7"},
        {"edit": {"score.py": ["B = 10", "B = 9"]}, "description": "B 10 → 9"},
    ])  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    study = Study.open(repo / "overnight.toml", cwd=repo)
    calls: list[tuple[int, str]] = []

    def decided(n: int) -> bool:
        ledger = study.open_ledger()
        try:
            rec = ledger.get(n)
            return rec is not None and rec.status is not None
        finally:
            ledger.close()

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        text = files["score.py"]
        if task.experiment == 1 and not calls.count((1, text)):
            # Rendezvous: experiment 1's first run ends only once experiment 2 is decided.
            deadline = time.monotonic() + 60
            while not decided(2) and time.monotonic() < deadline:
                time.sleep(0.01)
        calls.append((task.experiment, text))
        a, b = (float(re.search(rf"^{k} = (\S+)$", text, re.M)[1]) for k in "AB")  # type: ignore[index]
        return FakeRun(stdout=f"score: {a + b}\n")

    executor = FakeExecutor(study.ws, ["score.py"], behave, slots=2)
    Loop(study, RunOptions(experiments=2, workers=2, lookahead=2), executor=executor).run()

    ledger = study.open_ledger()
    try:
        one, two = ledger.get(1), ledger.get(2)
    finally:
        ledger.close()
    assert one is not None and two is not None
    assert (two.status, two.value) == ("keep", 12.0)
    # Experiment 1 beat the baseline it was built on, then was carried onto experiment 2 and
    # measured again there: A = 1.7 next to B = 9.
    assert (one.status, one.value) == ("keep", pytest.approx(10.7))
    assert one.parent == two.commit
    first = SRC.replace("A = 3.0", "A = 1.7")
    assert [text for n, text in calls if n == 1] == [first, first.replace("B = 10", "B = 9")]
    transfer = one.meta["verdict"]["transfer"]
    assert (transfer["how"], transfer["rounds"], transfer["onto"]) == ("merge", 1, 2)
    assert transfer["transferred"] and json.dumps(transfer)
