"""One `overnight mcp` session: a study's loop, fed by a coding agent's submissions.

The loop is the very `Loop` of `overnight run` (same set-up, recovery, baseline, resume,
pipeline, recorder, stop rules); only its proposer differs: `DeskProposer` hands it what the
agent submitted. So numbering, `kill -9` recovery, `verify` and `finish` are those of any
study, and the surface, the locked files, the budget, the verdict and the holdout are
enforced exactly as for any proposer. The methods below are the tools' meaning, free of
the MCP wire format (`server.py` binds them).
"""

from __future__ import annotations

import os
import posixpath
import threading
import time
from pathlib import Path
from typing import Any

from overnight.agentnative.desk import SUBMISSION_KEY, DeskProposer, Submission, SubmissionDesk
from overnight.errors import OvernightError, UsageError
from overnight.experiment.context import build_context
from overnight.experiment.loop import Loop, RunOptions, RunSummary
from overnight.experiment.scheduler import Tally
from overnight.experiment.view import NullView, View
from overnight.store.records import ExperimentRecord, Proposal
from overnight.store.study import Study

HISTORY_ROWS = 30  # recent experiments in `study()`; `show` has the rest


class DeskView(View):
    """Passes the loop's events on to the view it wraps and tells the session (numbers and
    verdicts for the waiting tool calls)."""

    def __init__(self, session: AgentSession, inner: View) -> None:
        self.session, self.inner = session, inner

    def message(self, text: str) -> None:
        self.inner.message(text)

    def proposing(self, n: int) -> None:
        self.inner.proposing(n)

    def experiment_started(self, n: int, description: str, budget_s: float) -> None:
        self.session.started(n)
        self.inner.experiment_started(n, description, budget_s)

    def decided(self, rec: ExperimentRecord, status: dict[str, Any]) -> None:
        self.session.decided(rec)
        self.inner.decided(rec, status)

    def finished(self, reason: str, status: dict[str, Any]) -> None:
        self.inner.finished(reason, status)

    def close(self) -> None:
        self.inner.close()


class AgentSession:
    def __init__(self, study: Study, options: RunOptions, view: View | None = None,
                 executor: Any = None) -> None:  # fmt: skip
        self.study = study
        self.cfg = study.cfg
        self.opts = options
        self.desk = SubmissionDesk(lambda: getattr(self.loop, "slots", 1))
        self.loop = Loop(study, options, DeskView(self, view or NullView()), executor=executor,
                         proposer=DeskProposer(self.desk))  # fmt: skip
        self.tally = Tally()  # this session's experiments, for the loop's own stop rules
        self._lock = threading.Lock()
        self.finished = threading.Event()
        self.summary: RunSummary | None = None
        self.error: OvernightError | None = None
        self.stopping = ""
        # The best this session last showed the agent (study() or a verdict): what its next
        # change is made on. (experiment, commit)
        self._seen: tuple[int, str] | None = None
        self.hidden = {self.cfg.holdout.name} if self.cfg.holdout.name else set()

    # == the loop ===========================================================================

    def run(self) -> RunSummary | None:
        """Run the loop in this thread (the main thread: Ctrl-C and SIGTERM stop it as they
        stop `overnight run`) until a stop rule, `stop()` or the client going away. A usage
        error is raised; a run-time error (a failing baseline) is kept for the tools."""
        threading.Thread(target=self._watch, name="overnight-mcp-watch", daemon=True).start()
        why = "stopped"
        try:
            self.summary = self.loop.run()
            why = self.summary.stopped_because
            return self.summary
        except UsageError as exc:
            why = str(exc)
            raise
        except OvernightError as exc:
            self.error, why = exc, str(exc).splitlines()[0]
            return None
        finally:
            self.desk.end(why)
            self.finished.set()

    def _watch(self) -> None:
        """Apply the stop rules (`stop()`, `--experiments`, `--hours`, `--patience`...): refuse
        new submissions at once, and end the loop once every submission handed in is in a
        slot. Experiments in flight are finished and decided, not interrupted. (A slot that
        waits for a submission does not look at the clock, so this thread does.)"""
        while not self.finished.wait(0.1):
            why = self.stopping
            if not why and self.desk.ready.is_set():
                why = self.loop.should_stop(self.tally) or ""
            if why:
                self.desk.refuse(f"the session is over: {why}")
                if not self.desk.queued():
                    self._halt(why)

    def _halt(self, why: str, interrupt: bool = False) -> None:
        self.desk.refuse(f"the session is over: {why}")
        if self.loop.stop_event.is_set():
            return
        self.loop.stop_reason = why
        self.loop.stop_event.set()
        executor = getattr(self.loop, "executor", None)
        if interrupt and executor is not None:
            executor.stop()

    def client_gone(self) -> None:
        """The MCP client closed the connection: stop as Ctrl-C stops `overnight run` (an
        experiment in flight is left undecided and re-run on resume)."""
        if not self.finished.is_set():
            self._halt("the MCP client disconnected", interrupt=True)

    # -- what the loop tells us (from its threads) ------------------------------------------

    def started(self, n: int) -> None:
        rec = self.loop.ledger.get(n)
        self.desk.numbered(n, str(rec.meta.get(SUBMISSION_KEY, "")) if rec else None)

    def decided(self, rec: ExperimentRecord) -> None:
        if rec.experiment > 0:
            with self._lock:
                t = self.tally
                if not self.desk.ready.is_set():
                    t.started += 1  # resumed: counts towards --experiments as in `run`
                t.ran += 1
                t.kept += rec.status == "keep"
                t.streak = 0 if rec.status == "keep" else t.streak + 1
        self.desk.decided(rec)

    # == the tools ==========================================================================

    def submit(self, files: dict[str, str], description: str, hypothesis: str = "") -> Submission:
        """Hand a candidate in: `files` maps surface paths to their complete new content,
        taken as a change of the best the agent last saw (or, before it looked, of the best
        of this moment); the pipeline carries it onto the current best if that moved."""
        if self.error is not None:
            raise UsageError(f"the session is over: {self.error}")
        rec = getattr(self.loop, "rec", None)
        base = self._seen[1] if self._seen is not None else ""
        if rec is not None and not base:
            with rec.lock:
                base = rec.best.commit if rec.best is not None else ""
        proposal = Proposal(
            files={self._path(p): text for p, text in files.items()},
            description=" ".join(description.split()), hypothesis=hypothesis.strip(),
            proposer="mcp", base_commit=base,
        )  # fmt: skip
        with self._lock:  # the stop rules see every submission handed in before this one
            if self.desk.ready.is_set():
                why = self.loop.should_stop(self.tally)
                if why is not None:
                    self.desk.refuse(f"the session is over: {why}")
            sub = self.desk.hand_in(proposal)
            self.tally.started += 1
        return sub

    def _path(self, path: str) -> str:
        """A path as the agent wrote it, relative to the repository root (an absolute path
        inside the repository, `./x`, `a/../x` are accepted). Anything else is left as given
        and is rejected by the surface check like any edit outside the surface."""
        p = path
        if os.path.isabs(p):
            try:
                p = Path(p).resolve().relative_to(self.study.root.resolve()).as_posix()
            except ValueError:
                return path
        p = posixpath.normpath(p.replace(os.sep, "/"))
        return path if p.startswith("../") or p in ("..", ".") else p

    def result(self, sub: Submission, numbered_only: bool = False) -> dict[str, Any]:
        if sub.ended and sub.record is None:
            raise UsageError(sub.ended)
        out: dict[str, Any] = {"experiment": sub.experiment}
        if numbered_only or sub.record is None:
            return out
        r = sub.record
        out.update(status=r.status, value=r.value, reason=r.reason,
                   metrics=self._visible(r.metrics), description=r.description,
                   wall_s=r.wall_s)  # fmt: skip
        with self.loop.rec.lock:
            best = self.loop.rec.best
        assert best is not None
        out["best"] = {"experiment": best.experiment, "value": best.record.value}
        seen = self._seen[0] if self._seen is not None else None
        if seen is not None and best.experiment not in (seen, r.experiment):
            out["note"] = (f"the best moved to experiment {best.experiment} since you last "
                           "looked: start the next change from its surface (study() returns "
                           "it)")  # fmt: skip
        self._seen = (best.experiment, best.commit)
        return out

    def progress(self, sub: Submission) -> str:
        budget = self.cfg.study.budget
        if sub.experiment is None:
            if not self.desk.ready.is_set():
                return "waiting for the study to start (baseline or resumed experiments)"
            return "waiting for a free slot"
        if sub.started is None:
            return f"experiment {sub.experiment}: being screened"
        ran = time.monotonic() - sub.started
        return f"experiment {sub.experiment}: running for {ran:.0f}s (budget {budget:g}s per run)"

    def show(self, n: int) -> dict[str, Any]:
        """What `overnight show N --json` prints, without the holdout (never shown to a
        proposer)."""
        info = self.study.show(n)
        info["metrics"] = self._visible(info.get("metrics") or {})
        info["measurements"] = [m for m in info.get("measurements") or []
                                if "holdout" not in m["kind"]]  # fmt: skip
        verdict = (info.get("meta") or {}).get("verdict")
        if isinstance(verdict, dict):
            verdict.pop("holdout", None)
        rec = getattr(self.loop, "rec", None)
        if info["status"] == "keep" and rec is not None:
            with rec.lock:
                best = rec.best
            if best is not None and best.experiment == n:
                self._seen = (n, best.commit)  # polled to its keep: the agent builds on it
        return info

    def status(self) -> dict[str, Any]:
        """`overnight status --json`, less the holdout's numbers."""
        out = self.study.status()
        out.pop("holdout", None)
        return out

    def stop(self) -> None:
        """Accept no more submissions; the loop ends once the experiments in flight are
        decided (`finished` is set then)."""
        if self.finished.is_set():
            return
        self.stopping = self.stopping or "stopped by the agent (stop())"
        self.desk.refuse(f"the session is over: {self.stopping}")

    def ended_because(self) -> str:
        if self.summary is not None:
            return self.summary.stopped_because
        return str(self.error) if self.error is not None else self.desk.refusing

    def study_view(self) -> dict[str, Any]:
        """The study as the agent needs it to propose: what a proposer's context holds
        (instructions, best surface, history, traces digest, last crash log), plus what is
        running and what is left."""
        cfg = self.cfg
        out: dict[str, Any] = {
            "study": self.study.name,
            "branch": self.study.branch,
            "triplet": {
                "surface": list(getattr(self.loop, "surface", cfg.study.surface)),
                "metric": {"name": cfg.metric.name, "goal": cfg.metric.goal,
                           "min_improvement": cfg.metric.min_improvement,
                           "repeats": cfg.metric.repeats},
                "budget_s": cfg.study.budget,
                "command": cfg.run.command,
            },
            "session": self._state(),
        }  # fmt: skip
        rec = getattr(self.loop, "rec", None)
        best = None
        if rec is not None:
            with rec.lock:  # one snapshot; a keep moves the best under this lock
                best = rec.best
                history = list(rec.proposer_history)  # controls stay blind
                running = sorted(rec.running.items())
                counts = dict(rec.tallies.counts)
        if rec is None or best is None:
            path = self.study.root / cfg.study.instructions
            out["instructions"] = path.read_text() if path.is_file() else ""
            return out
        ctx = build_context(self.study, history, best.record, best.files, self.opts.seed)
        self._seen = (best.experiment, best.commit)
        out.update(
            instructions=ctx.instructions,
            baseline={"experiment": 0, "value": ctx.baseline_value},
            best={"experiment": best.experiment, "value": best.record.value,
                  "commit": best.commit, "surface": dict(best.files)},
            experiments=len(history), counts=counts,
            history=[self._row(r) for r in ctx.history[-HISTORY_ROWS:]],
            running=[{"experiment": n, "description": d} for n, d in running],
            left=self._left(), constraints=ctx.constraints,
            trace_digest=ctx.trace_digest, last_crash_log=ctx.last_crash_log,
        )  # fmt: skip
        return out

    # == helpers ============================================================================

    def _state(self) -> dict[str, Any]:
        slots = getattr(self.loop, "slots", None)
        state = "starting"
        if self.finished.is_set():
            state = "over"
        elif self.desk.refusing:
            state = "stopping"
        elif self.desk.ready.is_set():
            state = "ready"
        elif getattr(self.loop, "rec", None) is not None:
            state = "measuring the baseline or resuming interrupted experiments"
        out: dict[str, Any] = {"state": state, "slots": slots,
                               "open_submissions": self.desk.outstanding(),
                               "queued": self.desk.queued()}  # fmt: skip
        if self.desk.refusing:
            out["reason"] = self.desk.refusing
        if self.error is not None:
            out["error"] = str(self.error)
        return out

    def _left(self) -> dict[str, Any]:
        o, t = self.opts, self.tally
        seconds = None
        if o.hours is not None:
            since = self.desk.ready_at
            spent = time.monotonic() - since if since is not None else 0.0
            seconds = max(0.0, o.hours * 3600 - spent)
        return {
            "experiments": None if o.experiments is None else max(0, o.experiments - t.started),
            "seconds": seconds,
            "non_keeps_before_patience_stops": (None if o.patience is None
                                                else max(0, o.patience - t.streak)),
            "free_slots": max(0, (getattr(self.loop, "slots", 1)) - self.desk.outstanding()),
        }  # fmt: skip

    def _row(self, r: ExperimentRecord) -> dict[str, Any]:
        return {"experiment": r.experiment, "status": r.status, "value": r.value,
                "description": r.description, "hypothesis": r.hypothesis, "reason": r.reason,
                "metrics": self._visible(r.metrics), "proposer": r.proposer}  # fmt: skip

    def _visible(self, metrics: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in metrics.items() if k not in self.hidden}
