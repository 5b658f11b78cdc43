"""A study on disk: its config, git workspace and ledger; the read-side public API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overnight.errors import UsageError
from overnight.git.workspace import Workspace, find_repo_root
from overnight.store.ledger import Ledger
from overnight.store.records import ExperimentRecord
from overnight.store.status import controls_status, drift_status, holdout_status, stop_status

if TYPE_CHECKING:
    from overnight.config import Config

CONFIG_NAME = "overnight.toml"


class Study:
    """Open with `Study.open()`; `run()` lives in `overnight.experiment.loop`."""

    def __init__(self, cfg: Config, root: Path) -> None:
        self.cfg = cfg
        self.root = root
        self.name = cfg.study.name
        self.state_dir = root / ".overnight" / self.name
        self.ledger_path = self.state_dir / "ledger.sqlite"
        self.tsv_path = self.state_dir / "results.tsv"
        self.experiments_dir = self.state_dir / "experiments"
        self._ws: Workspace | None = None

    @classmethod
    def open(cls, config: Path | None = None, cwd: Path | None = None, *,
             cached: bool = False) -> Study:  # fmt: skip
        """The study of `config` (default: overnight.toml at the repo root). `cached`: for
        commands that only read, the config as last validated when the file is unchanged
        (store/config_cache.py), which spares them the import of pydantic."""
        from overnight.store.config_cache import cached_config, save_config

        cwd = cwd or Path.cwd()
        if config is None:
            root = find_repo_root(cwd)
            config = root / CONFIG_NAME
            if not config.exists() and (cwd / CONFIG_NAME).exists():
                config = cwd / CONFIG_NAME
        else:
            config = config if config.is_absolute() else cwd / config
            root = find_repo_root(config.parent if config.parent.exists() else cwd)
        cfg = cached_config(config, root) if cached else None
        if cfg is None:
            from overnight.config import load_config

            cfg = load_config(config)
            save_config(cfg, root)
        return cls(cfg, root)

    @property
    def ws(self) -> Workspace:
        if self._ws is None:
            self._ws = Workspace(self.root, self.name)
        return self._ws

    @property
    def branch(self) -> str:
        return f"overnight/{self.name}"

    def exp_dir(self, n: int) -> Path:
        return self.experiments_dir / str(n)

    def open_ledger(self, readonly: bool = True) -> Ledger:
        if readonly and not self.ledger_path.exists():
            raise UsageError(
                f"study {self.name!r} has not run yet (no {self.ledger_path}); "
                "start it with `overnight run`"
            )
        return Ledger(self.ledger_path, readonly=readonly)

    # -- read side --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        ledger = self.open_ledger()
        try:
            return status_of(self, ledger)
        finally:
            ledger.close()

    def log(self) -> list[ExperimentRecord]:
        ledger = self.open_ledger()
        try:
            return ledger.records()
        finally:
            ledger.close()

    def show(self, n: int) -> dict[str, Any]:
        ledger = self.open_ledger()
        try:
            row = ledger.row(n)
            rec = ledger.get(n)
            if row is None or rec is None:
                raise UsageError(f"study {self.name!r} has no experiment {n}")
            out = rec.public()
            out.update(
                state=rec.state,
                hypothesis=rec.hypothesis,
                diff=row["diff"],
                usage=row["usage"],
                measurements=ledger.measurements(n),
                dir=str(self.exp_dir(n)),
                meta=rec.meta,
                constraints=constraint_rows(self.cfg, rec.metrics),
            )
            return out
        finally:
            ledger.close()


def status_of(study: Study, ledger: Ledger) -> dict[str, Any]:
    baseline = ledger.get(0)
    best = ledger.last_keep()
    counts = ledger.counts()
    records_n = ledger.count()
    started = ledger.get_meta("started_at")
    elapsed_h = (time.time() - float(started)) / 3600 if started else 0.0
    run_s = float(ledger.get_meta("run_seconds", "0") or 0)
    tried = records_n - (1 if baseline and baseline.status else 0)
    kept = counts["keep"] - (1 if baseline and baseline.status == "keep" else 0)
    pending = [r["n"] for r in ledger.undecided()]
    controls = controls_status(study.cfg, ledger)
    proposed = tried - (controls["run"] + controls["failed"] if controls else 0)
    return {
        "study": study.name,
        "branch": study.branch,
        "metric": {"name": study.cfg.metric.name, "goal": study.cfg.metric.goal},
        "baseline": {
            "experiment": 0 if baseline else None,
            "value": baseline.value if baseline else None,
        },
        "best": {
            "experiment": best.experiment if best else None,
            "value": best.value if best else None,
            "commit": best.commit if best else None,
        },
        "experiments": records_n,
        "counts": counts,
        "cost_usd": round(ledger.total_cost(), 6),
        "model": model_status(ledger),
        "hit_rate": (kept / proposed) if proposed > 0 else None,
        "experiments_per_hour": (tried / (run_s / 3600)) if run_s > 0 else None,
        "elapsed_hours": elapsed_h,
        "pending": pending,
        "start_commit": ledger.get_meta("start_commit"),
        "constraints": constraint_rows(study.cfg, best.metrics if best else {}),
        "holdout": holdout_status(study.cfg, ledger),
        "drift": drift_status(ledger),
        "controls": controls,
        "suspects": [n for (n,) in ledger.db.execute(
            "SELECT n FROM experiments WHERE status='suspect' ORDER BY n")],
        **stop_status(ledger),
    }  # fmt: skip


def model_status(ledger: Ledger) -> dict[str, Any]:
    """The llm proposer's tokens, and what prompt caching saved, in all and per experiment."""
    u = ledger.model_usage()
    n = int(u["experiments"])
    cached = int(u["cache_read_input_tokens"])
    prompt = int(u["input_tokens"]) + cached
    return {
        "experiments": n, "calls": int(u["calls"]), "input_tokens": prompt,
        "output_tokens": int(u["output_tokens"]), "cached_tokens": cached,
        "cached_share": cached / prompt if prompt else None,
        "saved_usd": round(float(u["cache_saved_usd"]), 6),
        "saved_usd_per_experiment": round(float(u["cache_saved_usd"]) / n, 6) if n else None,
    }  # fmt: skip


def constraint_rows(cfg: Config, metrics: dict[str, float]) -> list[dict[str, Any]]:
    """Each `[[constraint]]` with its value in `metrics` and whether it holds (`ok` is None
    when the metric was not reported)."""
    rows = []
    for c in cfg.constraints:
        value = metrics.get(c.name)
        ok = None
        if value is not None:
            ok = (c.min is None or value >= c.min) and (c.max is None or value <= c.max)
        rows.append({"name": c.name, "min": c.min, "max": c.max, "value": value, "ok": ok})
    return rows
