"""The orchestrator: one readable method per step of an experiment.

propose → apply (candidate commit) → check gate → measure (executor) → judge → record.
The controller is the only writer of git and the ledger; every state transition is written
before the side effect that follows it, so `kill -9` at any moment is recoverable.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from overnight.config import resolve_surface
from overnight.constraints import check_constraints
from overnight.context import build_context
from overnight.decide import Decider
from overnight.errors import OvernightError, UsageError
from overnight.executors.registry import make_executor
from overnight.guard import ProtectedFiles, outside_surface, surface_hash
from overnight.judge import Verdict
from overnight.ledger import Ledger
from overnight.lock import study_lock
from overnight.measure import Interrupted, Measurer
from overnight.proposers.base import BaseProposer, Context
from overnight.proposers.registry import load_proposer
from overnight.records import ExperimentRecord, Proposal
from overnight.runner import kill_marked, scrub_env
from overnight.sandbox import Sandbox
from overnight.study import Study, status_of
from overnight.view import NullView, View

DEFAULT_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


@dataclass
class RunOptions:
    experiments: int | None = None  # new experiments in this invocation (baseline excluded)
    hours: float | None = None
    patience: int | None = None  # stop after this many experiments in a row without a keep
    proposer: str | None = None
    seed: int = 0
    max_cost: float | None = None
    workers: int | None = None
    executor: str | None = None


@dataclass
class RunSummary:
    stopped_because: str
    ran: int = 0
    kept: int = 0
    status: dict[str, Any] = field(default_factory=dict)


def diff_text(old: dict[str, str], new: dict[str, str]) -> str:
    import difflib

    out: list[str] = []
    for path in sorted(new):
        a, b = old.get(path, ""), new[path]
        if a != b:
            out += difflib.unified_diff(
                a.splitlines(keepends=True), b.splitlines(keepends=True), f"a/{path}", f"b/{path}"
            )
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


class Loop:
    def __init__(self, study: Study, options: RunOptions, view: View | None = None) -> None:
        self.study = study
        self.cfg = study.cfg
        self.opts = options
        self.view = view or NullView()
        self.ws = study.ws
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.marker_prefix = (
            "overnight:"
            + hashlib.sha1(str(study.root).encode()).hexdigest()[:10]
            + f":{study.name}"
        )

    # == the whole run ======================================================================

    def run(self) -> RunSummary:
        with study_lock(self.study.state_dir, self.study.name):
            self._setup()
            previous = self._install_signals()
            try:
                self._recover()
                self._baseline()
                ran, kept, streak = 0, 0, 0
                t0 = time.monotonic()
                for item in self._pending:
                    if self.stop_event.is_set():
                        break
                    rec = self._resume_experiment(item)
                    ran, kept = ran + 1, kept + (rec.status == "keep")
                while (why := self._should_stop(ran, streak, t0)) is None:
                    rec = self._one_experiment()
                    if rec is None:
                        continue
                    ran += 1
                    kept += rec.status == "keep"
                    streak = 0 if rec.status == "keep" else streak + 1
                summary = RunSummary(why or self.stop_reason or "stopped", ran, kept)
            except Interrupted:
                summary = RunSummary(self.stop_reason or "interrupted")
            finally:
                self._restore_signals(previous)
                self._teardown()
            summary.status = status_of(self.study, self.ledger)
            self.view.finished(summary.stopped_because, summary.status)
            self.ledger.close()
            return summary

    # == set-up and recovery ================================================================

    def _setup(self) -> None:
        cfg = self.cfg
        # Validate everything before the first write, so a usage error changes nothing.
        fresh = not self.study.ledger_path.exists()
        self.ledger = Ledger(self.study.ledger_path, readonly=True) if not fresh else None  # type: ignore[assignment]
        try:
            start = None if fresh else self.ledger.get_meta("start_commit")
        except sqlite3.OperationalError:  # killed while creating the ledger: no tables yet
            self.ledger.close()
            self.ledger, fresh, start = None, True, None  # type: ignore[assignment]
        if start is None or self.ledger is None or self.ledger.last_keep() is None:
            start = self.ws.user_head()
        elif not self.ws.commit_exists(start):
            raise UsageError(
                f"study {self.study.name!r} started at commit {start[:12]}, which no longer "
                "exists in this repository; start a new study with another [study].name"
            )
        self.start_commit = start
        signature = f"{cfg.metric.name}:{cfg.metric.goal}"
        old = None if fresh else self.ledger.get_meta("metric")
        if old is not None and old != signature:
            raise UsageError(
                f"{cfg.path.name}: [metric] changed from {old!r} to {signature!r} since study "
                f"{self.study.name!r} began; verdicts would not be comparable. Use a new "
                "[study].name for the new metric."
            )
        tracked = self.ws.tracked_files(start)
        self.surface = resolve_surface(
            cfg.study.surface, tracked, cfg.path.name, root=self.study.root
        )
        self.protected = ProtectedFiles(self.study.root, cfg.study.protect, tracked)
        # Refuses (exit 2, nothing written) when the sandbox was asked for and cannot work.
        sandbox = Sandbox(cfg.sandbox, self.study.root, dict(os.environ))
        sandbox.check()
        self.executor = make_executor(
            self.opts.executor or cfg.executor.kind, cfg, self.ws, self.surface, self.protected,
            workers=self.opts.workers, sandbox=sandbox,
        )  # fmt: skip
        kind = self.opts.proposer or cfg.proposer.kind
        self.proposer: BaseProposer
        self.proposer, why = load_proposer(kind, cfg, seed=self.opts.seed)
        key_env = cfg.proposer.api_key_env or DEFAULT_KEY_ENV.get(cfg.proposer.provider, "")
        self.base_env = scrub_env(os.environ, cfg.run.pass_env, drop=[key_env] if key_env else [])
        if self.ledger is not None:
            self.ledger.close()
        self.ws.ensure_excluded()
        self.ledger = Ledger(self.study.ledger_path)
        self.measure = Measurer(
            self.study, self.executor, self.ledger, self.base_env, self.opts.seed,
            self.marker_prefix, lambda: self.stop_reason,
        )  # fmt: skip
        self.decider = Decider(self.study, self.ledger, self.measure, self.ws, self.surface)
        self.view.message(why)
        self._run_clock = time.monotonic()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum: int, _frame: Any) -> None:
            if self.stop_event.is_set():
                raise KeyboardInterrupt  # second Ctrl-C: stop waiting for the cleanup
            self.stop_reason = f"stopped by {signal.Signals(signum).name}"
            self.stop_event.set()
            self.executor.stop()
            self.view.message(f"{self.stop_reason}: ending the current experiment…")

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def _teardown(self) -> None:
        self._account_time()
        self.ledger.set_meta("current", "")
        self.proposer.close()
        self.executor.close()

    def _recover(self) -> None:
        """Undo what a killed controller left: orphan runs, git locks, half-done rows."""
        killed = kill_marked(self.marker_prefix + ":")  # not a study whose name extends ours
        if killed:
            self.view.message(f"recovery: killed {killed} orphaned process(es) of an earlier run")
        for lock in self.ws.clean_stale_locks():
            self.view.message(f"recovery: removed stale {lock.name}")
        self._pending = []
        for row in self.ledger.undecided():
            if row["n"] == 0:
                continue  # the baseline is re-measured by _baseline
            self._pending.append(row)
            self.ledger.event("resume", experiment=row["n"], state=row["state"])
        keep = self.ledger.last_keep()
        head = self.ws.branch_head()
        if keep is not None and keep.commit and head != keep.commit:
            # The keep was recorded but the branch move did not happen (or the user moved it).
            self.ws.set_branch(keep.commit)
            self.view.message(
                f"recovery: branch {self.ws.branch} reset to experiment "
                f"{keep.experiment} ({keep.commit[:7]})"
            )

    # == the baseline =======================================================================

    def _baseline(self) -> None:
        base = self.ledger.get(0)
        if base is not None and base.status == "keep":
            self._load_best()
            return
        if base is None:
            head = self.ws.branch_head()
            if head is not None and head != self.start_commit:
                raise UsageError(
                    f"branch {self.ws.branch} already exists and is not part of this study; "
                    f"delete it (`git branch -D {self.ws.branch}`) or choose another "
                    "[study].name"
                )
            self.ledger.add_proposed(0, parent="", description="baseline", proposer="baseline")
        self.ledger.set_meta("start_commit", self.start_commit)
        self.ledger.set_meta("metric", f"{self.cfg.metric.name}:{self.cfg.metric.goal}")
        if self.ledger.get_meta("started_at") is None:
            self.ledger.set_meta("started_at", str(time.time()))
        self.ledger.set_state(0, "applied", commit=self.start_commit, parent=None)
        self.ws.set_experiment_ref(0, self.start_commit)
        self._started(0, "baseline")
        reports = self.measure.measure(0, self.start_commit)
        verdict = self.measure.failure(reports)
        if verdict is not None:
            self.ledger.set_state(0, "aborted", reason=verdict.reason)
            raise OvernightError(
                f"the baseline failed ({verdict.status}): {verdict.reason}\n"
                f"logs: {self.study.exp_dir(0)}\nFix the run so the unchanged code produces "
                f"the metric {self.cfg.metric.name!r}, then run again."
            )
        value, metrics, wall = self.measure.aggregate(reports)
        self.decider.baseline(self.start_commit, reports)
        self.ledger.decide(0, "keep", "baseline", value, metrics, wall)
        self.ws.set_branch(self.start_commit)
        self._load_best()
        self._after_decision(0)

    def _load_best(self) -> None:
        keep = self.ledger.last_keep()
        assert keep is not None and keep.commit
        self.best = keep
        self.best_files = self.ws.read_files(keep.commit, self.surface)
        self.best_hash = surface_hash(self.best_files)

    # == one experiment =====================================================================

    def _one_experiment(self) -> ExperimentRecord | None:
        n = self.ledger.next_number()
        if note := self.decider.maybe_remeasure(self.best, n):
            self.view.message(note)
        proposal = self._propose(n)
        if proposal is None:
            return None
        return self._try(n, proposal)

    def _resume_experiment(self, row: dict[str, Any]) -> ExperimentRecord:
        n = row["n"]
        self.view.message(f"resuming experiment {n} (was {row['state']})")
        if row["commit_sha"] and row["parent"] == self.best.commit:
            self.ledger.clear_measurements(n)
            return self._run_candidate(n, row["commit_sha"], row["description"])
        files = json.loads(row["files"]) if row["files"] else {}
        if not row["commit_sha"] and files:
            proposal = Proposal(
                files=files,
                description=row["description"],
                rationale=row["rationale"],
                proposer=row["proposer"],
                meta=json.loads(row["meta"]),
            )
            return self._try(n, proposal, existing=True)
        # Proposed against a best that has moved on: measuring it now would compare it
        # with the wrong parent.
        return self._record(
            n,
            Verdict("invalid", "interrupted, and the best has moved since; not re-run"),
            None,
            {},
            None,
        )

    def _propose(self, n: int) -> Proposal | None:
        ctx = self._context()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["p"] = self.proposer.propose(ctx)
            except Exception as exc:  # a proposer fault never stops the loop
                box["e"] = exc

        thread = threading.Thread(target=work, name="overnight-proposer", daemon=True)
        thread.start()
        self.view.proposing(n)
        while thread.is_alive():
            thread.join(0.1)
            if self.stop_event.is_set():
                raise Interrupted
        if "e" in box:
            exc = box["e"]
            return Proposal(
                files={},
                description="proposer error",
                proposer=self.proposer.name,
                invalid_reason=f"proposer failed: {type(exc).__name__}: {exc}",
            )
        proposal: Proposal = box["p"]
        proposal.proposer = proposal.proposer or self.proposer.name
        proposal.base_commit = self.best.commit or ""
        return proposal

    def _context(self) -> Context:
        return build_context(self.study, self.ledger, self.best, self.best_files, self.opts.seed)

    def _try(self, n: int, proposal: Proposal, existing: bool = False) -> ExperimentRecord:
        """Apply a proposal as candidate commit `n`, then gate, measure and decide it."""
        files = {**self.best_files, **proposal.files}
        new_hash = surface_hash(files)
        if not existing:
            self.ledger.add_proposed(
                n, parent=self.best.commit or "", description=proposal.description,
                rationale=proposal.rationale, hypothesis=proposal.hypothesis,
                proposer=proposal.proposer, files=proposal.files,
                diff=diff_text(self.best_files, proposal.files), surface_hash=new_hash,
                cost_usd=proposal.cost_usd, usage=proposal.usage, meta=proposal.meta,
            )  # fmt: skip
            self._save_proposal(n, proposal)
        verdict = self._screen(n, proposal, files, new_hash)
        if verdict is not None:
            return self._record(n, verdict, None, {}, None)
        commit = self.ws.make_commit(
            self.best.commit or "", proposal.files, self.ws.message(proposal.description, n)
        )
        self.ledger.set_state(n, "applied", commit=commit)
        self.ws.set_experiment_ref(n, commit)
        return self._run_candidate(n, commit, proposal.description)

    def _screen(
        self, n: int, proposal: Proposal, files: dict[str, str], new_hash: str
    ) -> Verdict | None:
        """Reasons a proposal must not run at all."""
        if proposal.invalid_reason:
            return Verdict("invalid", proposal.invalid_reason)
        outside = sorted(
            set(proposal.outside_surface) | set(outside_surface(proposal.files, self.surface))
        )
        if outside:
            return Verdict("rejected", "changed files outside the surface: " + ", ".join(outside))
        if not proposal.files or new_hash == self.best_hash:
            return Verdict(
                "invalid",
                "empty change: the surface is identical to the current "
                f"best (experiment {self.best.experiment})",
            )
        dup = self.ledger.find_hash(new_hash, exclude=n)
        if dup is not None:
            return Verdict(
                "invalid", f"duplicate of experiment {dup}: that surface was already measured"
            )
        return None

    def _run_candidate(self, n: int, commit: str, description: str) -> ExperimentRecord:
        self._started(n, description)
        if self.cfg.check.command:
            gate = [("check", self.cfg.check.command)]
            report = self.measure.execute(n, commit, 0, "check", gate, "")
            if report.exit_code != 0:
                why = "timed out" if report.timed_out else f"exit {report.exit_code}"
                tail = report.output_tail.strip().splitlines()[-3:]
                return self._record(
                    n,
                    Verdict("invalid", f"[check] failed ({why}): " + " | ".join(tail)),
                    None,
                    {},
                    report.wall_s,
                )
        self.ledger.set_state(n, "running")
        reports = self.measure.measure(n, commit)
        verdict = self.measure.failure(reports)
        value, metrics, wall = self.measure.aggregate(reports)
        if verdict is None:
            verdict = check_constraints(metrics, self.cfg.constraints)
        # The noise-aware rule, the confirming re-run and the holdout gate (decide.py).
        verdict = self.decider.verdict(n, commit, reports, verdict, self.best, self.best_files)
        return self._record(n, verdict, value, metrics, wall, commit=commit)

    # == measuring ==========================================================================

    # == recording ==========================================================================

    def _record(
        self,
        n: int,
        verdict: Verdict,
        value: float | None,
        metrics: dict[str, float],
        wall_s: float | None,
        commit: str | None = None,
    ) -> ExperimentRecord:
        if verdict.status in ("crash", "timeout"):
            value = None  # a failed run has no result, whatever it printed before failing
        self.ledger.decide(n, verdict.status, verdict.reason, value, metrics, wall_s)
        if verdict.status == "keep" and commit:
            self.ws.set_branch(commit, expected_old=self.best.commit)
            self._load_best()
        return self._after_decision(n)

    def _after_decision(self, n: int) -> ExperimentRecord:
        self._account_time()
        self.ledger.write_tsv(self.study.tsv_path, self.cfg.metric.name)
        rec = self.ledger.get(n)
        assert rec is not None
        if n > 0:
            try:
                self.proposer.observe(rec)
            except Exception as exc:  # learning is best-effort; never stop the loop
                self.view.message(f"proposer.observe failed: {exc}")
        self.view.decided(rec, status_of(self.study, self.ledger))
        return rec

    def _started(self, n: int, description: str) -> None:
        # Published for `status` and the dashboard, which read the ledger from other processes.
        current = {"experiment": n, "description": description, "started_at": time.time(),
                   "budget_s": self.cfg.study.budget}  # fmt: skip
        self.ledger.set_meta("current", json.dumps(current))
        self.view.experiment_started(n, description, self.cfg.study.budget)

    def _account_time(self) -> None:
        now = time.monotonic()
        total = float(self.ledger.get_meta("run_seconds", "0") or 0) + now - self._run_clock
        self._run_clock = now
        self.ledger.set_meta("run_seconds", f"{total:.3f}")

    def _save_proposal(self, n: int, proposal: Proposal) -> None:
        d = self.study.exp_dir(n)
        d.mkdir(parents=True, exist_ok=True)
        info = {
            "description": proposal.description, "rationale": proposal.rationale,
            "hypothesis": proposal.hypothesis, "proposer": proposal.proposer,
            "invalid_reason": proposal.invalid_reason, "outside_surface": proposal.outside_surface,
            "usage": proposal.usage, "cost_usd": proposal.cost_usd, "meta": proposal.meta,
            "base_commit": proposal.base_commit,
        }  # fmt: skip
        (d / "proposal.json").write_text(json.dumps(info, indent=2, default=str))
        if proposal.prompt is not None:
            (d / "prompt.txt").write_text(proposal.prompt)
        if proposal.response is not None:
            (d / "response.txt").write_text(proposal.response)

    # == stopping ===========================================================================

    def _should_stop(self, ran: int, streak: int, t0: float) -> str | None:
        o = self.opts
        if self.stop_event.is_set():
            return self.stop_reason or "stopped"
        if o.experiments is not None and ran >= o.experiments:
            return f"ran {ran} experiment(s) as asked"
        if o.hours is not None and time.monotonic() - t0 >= o.hours * 3600:
            return f"time limit of {o.hours:g} h reached"
        if o.patience is not None and streak >= o.patience:
            return f"no keep in the last {streak} experiments (patience {o.patience})"
        if o.max_cost is not None and self.ledger.total_cost() >= o.max_cost:
            return f"cost limit reached (${self.ledger.total_cost():.2f} of ${o.max_cost:.2f})"
        if o.max_cost is not None:
            # Stop BEFORE a call that could cross the cap: proposers that pay per call say
            # what the next one may cost at most (llm: its prompt and a max_tokens reply).
            estimate = getattr(self.proposer, "next_cost_estimate", None)
            spent, upcoming = self.ledger.total_cost(), float(estimate() if estimate else 0.0)
            if spent + upcoming > o.max_cost:
                return (
                    f"cost limit reached (${spent:.2f} spent of ${o.max_cost:.2f}; the next "
                    f"model call could cost up to ${upcoming:.2f})"
                )
        return None


def run_study(study: Study, options: RunOptions, view: View | None = None) -> RunSummary:
    return Loop(study, options, view).run()
