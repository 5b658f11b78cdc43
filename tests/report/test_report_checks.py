"""The report shows the checks on the verdicts: the false-keep rate of the controls, the
holdout reads against their budget, suspects held for review."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_script
from support.inprocess import exact_with_holdout, make_study, run_study, study_toml

from overnight.report import write_report


def test_the_report_shows_controls_holdout_reads_and_suspects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = [{"files": {"score.py": f"X = {x}\n"}, "description": f"X = {x}"} for x in (9, 8)]
    for key, value in write_script(tmp_path / "s.json", steps).items():
        monkeypatch.setenv(key, value)
    extra = ('\n[holdout]\ncommand = "python h.py"\nname = "acc"\nbudget = 2\n'
             "\n[judge]\ncontrols = 2\n")  # fmt: skip
    study = make_study(tmp_path / "repo",
                       study_toml(extra=extra, proposer="support.scripted:ScriptedProposer"))
    run_study(study, exact_with_holdout, 4)
    st = study.status()
    assert st["counts"]["suspect"] == 1 and st["controls"]["run"] == 2
    html = write_report(study, tmp_path / "out").html.read_text()
    assert "false-keep rate" in html and "0 of 2 controls" in html
    assert "holdout reads" in html and "2 / 2" in html
    assert "held for review" in html and '"suspect"' in html  # the card, the table's rows
