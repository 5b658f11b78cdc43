"""The real `tune` proposer, plus a report of its Optuna study when the run ends (written to
$OVERNIGHT_TUNE_PROBE), so an end-to-end test can check the history it kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

from overnight.proposers.tune.tune import TuneProposer


class ProbedTune(TuneProposer):
    def close(self) -> None:
        study = self.study
        trials = [] if study is None else study.get_trials(deepcopy=False)
        report = {
            "states": [t.state.name for t in trials],
            "pending": len(self._pending),
            "told": sorted(self._told),
        }
        Path(os.environ["OVERNIGHT_TUNE_PROBE"]).write_text(json.dumps(report))
        super().close()
