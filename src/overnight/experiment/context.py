"""The proposer's context, built from the ledger and the study branch alone, so a restarted
controller proposes exactly as well as one that never stopped."""

from __future__ import annotations

from collections.abc import Mapping
from types import EllipsisType
from typing import Any

from overnight.isolation.capture import tail_text
from overnight.proposers.base import Context, Remaining
from overnight.store.records import ExperimentRecord
from overnight.store.study import Study
from overnight.trace_digest import build_digest
from overnight.traces import experiment_traces


def last_crash_log(study: Study, crash: ExperimentRecord | None, max_bytes: int = 3000) -> str:
    """The log tail of `crash` (the most recent crash or timeout), so the proposer can fix
    its bug."""
    if crash is None:
        return ""
    d = study.exp_dir(crash.experiment)
    parts = []
    for name in ("run.stderr", "run.stdout", "metric.stderr", "metric.stdout"):
        text = tail_text(d / name, max_bytes)
        if text.strip():
            parts.append(f"--- experiment {crash.experiment} {name} (tail) ---\n{text}")
    return "\n".join(parts)


def trace_digest(study: Study, history: list[ExperimentRecord], best: ExperimentRecord) -> str:
    """Digest of the best's task traces plus what the latest experiment broke; only the
    metric runs' trace folders are read, so holdout traces never reach a prompt."""
    last = history[-1] if history else None
    last_set = None
    if last is not None and last.experiment != best.experiment:
        last_set = experiment_traces(study.exp_dir(last.experiment))
    return build_digest(
        experiment_traces(study.exp_dir(best.experiment)), best.experiment,
        study.cfg.traces.prompt_chars, last_set, last.experiment if last else None,
    )  # fmt: skip


def in_flight(running: Mapping[int, str], queued: Mapping[int, str]) -> list[dict[str, Any]]:
    """What may become the best before a new proposal runs: the experiments running now
    (by number) and the proposals waiting for a slot (no number yet)."""
    out: list[dict[str, Any]] = [{"experiment": n, "description": d}
                                 for n, d in sorted(running.items()) if n > 0]  # fmt: skip
    return out + [{"experiment": None, "description": d} for d in queued.values()]


def build_context(
    study: Study,
    history: list[ExperimentRecord],
    best: ExperimentRecord,
    best_files: dict[str, str],
    seed: int,
    running: Mapping[int, str] | None = None,
    queued: Mapping[int, str] | None = None,
    remaining: Remaining | None = None,
    last_failure: ExperimentRecord | None | EllipsisType = ...,
) -> Context:
    """`history`: every decided experiment (the recorder keeps it in step with the ledger);
    `running`: the experiments in flight, number -> description, and `queued`: proposals
    made ahead that wait for a slot (the recorder's); `remaining`: what is left of this
    run's time, experiments and money. `history` is in experiment-number order (the
    recorder keeps it so); `last_failure`, its highest-numbered crash or timeout, is found
    in it unless given."""
    cfg = study.cfg
    history = list(history)  # a copy: the recorder goes on appending to its own
    if last_failure is ...:
        last_failure = next((r for r in reversed(history) if r.status in ("crash", "timeout")),
                            None)  # fmt: skip
    instructions_path = study.root / cfg.study.instructions
    # Read on every proposal: users edit program.md during the night to steer the search.
    instructions = instructions_path.read_text() if instructions_path.is_file() else ""
    return Context(
        study=study.name,
        instructions=instructions,
        surface=dict(best_files),
        metric=cfg.metric.name,
        goal=cfg.metric.goal,
        budget_s=cfg.study.budget,
        best_experiment=best.experiment,
        best_value=best.value,
        baseline_value=history[0].value if history else None,
        history=history,
        seed=seed,
        best_commit=best.commit or "",
        repo_root=str(study.root),
        last_crash_log=last_crash_log(study, last_failure),
        constraints=[c.model_dump() for c in cfg.constraints],
        best_metrics=dict(best.metrics),
        trace_digest=trace_digest(study, history, best),
        in_flight=in_flight(running or {}, queued or {}),
        remaining=remaining or Remaining(),
    )
