"""Q6 — stale proposals: how many proposals made on a best that moved before they ran are
lost as conflicts, with line merges (before) and with the word-level transfer (after); and
how many keeps `finish --ablate` gives a contribution number.

The study is autoresearch's situation: 15 hyperparameters on 15 consecutive lines of one
file, 4 slots with run-ahead (lookahead 4), so nearly every proposal is made on a best that
moves before it runs, and nearly every pair of changes is on neighbouring lines. The real
loop runs in-process with the fake executor (a run sleeps `--run-s`, then scores the knobs:
the sum of squared log-distances to hidden targets); the proposer is a simulated model that
moves one knob, or two neighbouring ones, by a random factor. Rows:

- line merge: the same loop with the word-level merge replaced by `git merge-file`, the
  mechanism before issue #17;
- word-level merge: `git.transfer.carry` as shipped;
- + in-flight list: the model also reads `Context.in_flight` and leaves alone the knobs of
  the experiments in flight (what the LLM prompt asks of a model); it is asked by 4 feeders
  at once, like the `llm` proposer, so proposals made at the same moment cannot see each
  other; the next row asks one proposal at a time, like the `agent` proposer;
- tune: overnight's own `tune` proposer, whose rebase re-sets its knobs.

A conflict is "same knob" when the knobs the proposal moved were moved between the best it
was made on and the best it was carried onto (a real conflict that must stay one), else
"neighbouring line" (a false conflict). Ablation coverage: the keeps of the word-level and
tune studies, with the leave-one-out variants built by line merges without the proposer's
re-application (before) and by `git.transfer.carry` (after, measured by
`finish --ablate`'s own code with real runs of `python train.py`).

Goals (issue #17): share lost < 2 %; ablation coverage 100 % when no keep depends on
another.

    python bench/stale.py [--experiments 60] [--seeds 3] [--run-s 0.05] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import math
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import make_repo, table  # noqa: E402

import overnight.git.transfer as transfer_module  # noqa: E402
import overnight.review.changes as changes_module  # noqa: E402
from overnight.executors.base import RunTask  # noqa: E402
from overnight.executors.fake import FakeExecutor, FakeRun  # noqa: E402
from overnight.experiment.loop import Loop, RunOptions  # noqa: E402
from overnight.git.tokenmerge import Clash  # noqa: E402
from overnight.proposers.base import BaseProposer, Context  # noqa: E402
from overnight.review.ablate import run_ablation  # noqa: E402
from overnight.review.changes import Changes  # noqa: E402
from overnight.review.finish import build_final, replay  # noqa: E402
from overnight.store.records import ExperimentRecord, Proposal  # noqa: E402
from overnight.store.study import Study  # noqa: E402

MODULE = "bench_stale"
NAMES = [f"K{i:02d}" for i in range(15)]
KNOB = re.compile(r"^(K\d\d) = (\S+)$", re.M)
LOSS = """\
import math
target = {targets}
loss = sum(math.log10(globals()[k] / v) ** 2 for k, v in target.items())
print(f"loss: {{loss}}")
"""
CONFIG = """\
[study]
name = "stale"
surface = ["train.py"]
budget = "60s"

[run]
command = "python train.py"

[metric]
name = "loss"
goal = "minimize"

[proposer]
kind = "{kind}"

[executor]
workers = {slots}
"""


def surface(values: dict[str, float], targets: dict[str, float]) -> str:
    knobs = "".join(f"{k} = {values[k]:.4g}\n" for k in NAMES)
    return knobs + LOSS.format(targets={k: round(v, 4) for k, v in targets.items()})


def knobs_of(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in KNOB.findall(text)}


class KnobModel(BaseProposer):
    """A simulated model: moves one knob (70 %) or two neighbouring ones by a random factor;
    with `avoid_in_flight`, it leaves alone the knobs named by experiments in flight."""

    name = "model"
    concurrent = True
    avoid_in_flight = False
    seed = 0

    def __init__(self, **_: Any) -> None:
        self.rng = random.Random(self.seed)
        self.lock = threading.Lock()

    def propose(self, ctx: Context) -> Proposal:
        text = ctx.surface["train.py"]
        values = knobs_of(text)
        busy: set[str] = set()
        if self.avoid_in_flight:
            busy = set(re.findall(r"K\d\d", " ".join(str(r["description"])
                                                       for r in ctx.in_flight)))  # fmt: skip
        with self.lock:
            free = [k for k in NAMES if k not in busy] or NAMES
            first = self.rng.choice(free)
            moved = [first]
            i = NAMES.index(first)
            if self.rng.random() < 0.3 and i + 1 < len(NAMES) and NAMES[i + 1] not in busy:
                moved.append(NAMES[i + 1])
            new = {k: float(f"{values[k] * 10 ** self.rng.gauss(0, 0.3):.4g}") for k in moved}
        for k, v in new.items():
            text = re.sub(rf"^{k} = \S+$", f"{k} = {v:.4g}", text, flags=re.M)
        desc = ", ".join(f"{k} {values[k]:.4g} → {new[k]:.4g}" for k in moved)
        return Proposal(files={"train.py": text}, description=desc, meta={"knobs": moved})


def line_merge(base: str, ours: str, theirs: str) -> tuple[str | None, list[Clash]]:
    """The mechanism before: `git merge-file` (a conflict on the same or adjacent lines)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
            (Path(tmp) / name).write_text(text)
            paths.append(str(Path(tmp) / name))
        proc = subprocess.run(["git", "merge-file", "-p", "--quiet", *paths], capture_output=True)
    if proc.returncode == 0:
        return proc.stdout.decode(), []
    return None, [Clash(0, "", "", "")]


@dataclass
class Outcome:
    label: str
    proposals: int = 0
    stale: int = 0
    lost_same: int = 0
    lost_next: int = 0
    keeps: int = 0
    seconds: float = 0.0
    study: Study | None = None


def run_study(tmp: Path, label: str, kind: str, n: int, run_s: float, seed: int, line: bool = False,
              avoid: bool = False, serial: bool = False) -> Outcome:  # fmt: skip
    rng = random.Random(seed)
    targets = {k: 10 ** rng.uniform(-2, 2) for k in NAMES}
    start = {k: float(f"{t * 10 ** rng.choice([-1, 1]) * rng.uniform(0.5, 1):.4g}")
             for k, t in targets.items()}  # fmt: skip
    repo = make_repo(tmp / label.replace(" ", "-").replace("+", "p"), {
        "train.py": surface(start, targets), "overnight.toml": CONFIG.format(kind=kind, slots=4),
    })  # fmt: skip
    study = Study.open(repo / "overnight.toml", cwd=repo)

    def behave(task: RunTask, files: dict[str, str]) -> FakeRun:
        time.sleep(run_s)
        values = knobs_of(files["train.py"])
        loss = sum(math.log10(values[k] / targets[k]) ** 2 for k in NAMES)
        return FakeRun(stdout=f"loss: {loss}\n")

    KnobModel.avoid_in_flight, KnobModel.seed, KnobModel.concurrent = avoid, seed, not serial
    saved = transfer_module.merge
    if line:
        transfer_module.merge = line_merge  # type: ignore[assignment]
    t0 = time.monotonic()
    try:
        executor = FakeExecutor(study.ws, ["train.py"], behave, slots=4)
        opts = RunOptions(experiments=n, workers=4, lookahead=4, seed=seed)
        Loop(study, opts, executor=executor).run()
    finally:
        transfer_module.merge = saved
    out = Outcome(label, seconds=time.monotonic() - t0, study=study)
    ledger = study.open_ledger()
    try:
        records = [r for r in ledger.records() if r.experiment > 0]
    finally:
        ledger.close()
    keeps = sorted((r for r in records if r.status == "keep"), key=lambda r: r.decided_at or 0)
    for rec in records:
        tally(out, study, rec, keeps)
    return out


def tally(out: Outcome, study: Study, rec: ExperimentRecord,
          keeps: list[ExperimentRecord]) -> None:  # fmt: skip
    out.proposals += 1
    out.keeps += rec.status == "keep"
    meta = rec.meta if isinstance(rec.meta, dict) else {}
    moved = meta.get("transfer")
    if not isinstance(moved, dict):
        return
    out.stale += 1
    stale = (meta.get("verdict") or {}).get("stale", "")
    lost = (rec.status == "invalid" and "does not merge" in rec.reason) or "does not merge" in stale
    if not lost:
        return
    ws = study.ws
    if rec.status == "invalid":  # did not carry onto the best before it ran
        made_on, onto = moved.get("from") or "", rec.parent or ""
    else:  # won, but did not carry onto the best kept while it was measured
        made_on = rec.parent or ""
        before = [k for k in keeps if (k.decided_at or 0) < (rec.decided_at or 0)]
        onto = before[-1].commit or "" if before else made_on
    before = knobs_of(ws.read_files(made_on, ["train.py"])["train.py"])
    after = knobs_of(ws.read_files(onto, ["train.py"])["train.py"])
    changed_meanwhile = {k for k in NAMES if before.get(k) != after.get(k)}
    mine = set(meta.get("knobs") or (meta.get("changed") or []))
    if mine & changed_meanwhile:
        out.lost_same += 1
    else:
        out.lost_next += 1


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f} %" if b else "—"


def coverage(study: Study, repeats: int) -> tuple[list[str], float]:
    """Ablation coverage before (line merges, no proposer re-application) and after."""
    result = build_final(study)
    keeps = result.series.keeps
    saved_merge, saved_reapplier = transfer_module.merge, changes_module.reapplier
    transfer_module.merge = line_merge  # type: ignore[assignment]
    changes_module.reapplier = lambda proposal: None  # type: ignore[assignment]
    try:
        changes = Changes(study, result.start)
        before = sum(
            not replay(changes, result.start, [k for k in keeps if k is not keep],
                       leave_out=True).left_out
            for keep in keeps
        )  # fmt: skip
    finally:
        transfer_module.merge, changes_module.reapplier = saved_merge, saved_reapplier
    t0 = time.monotonic()
    ablation = run_ablation(study, result, repeats, lambda msg: None)
    took = time.monotonic() - t0
    rows = ablation.rows
    own = sum(r["contribution"] is not None and not r["dependents"] for r in rows)
    grouped = sum(r["contribution"] is not None and bool(r["dependents"]) for r in rows)
    superseded = sum(bool(r["note"]) and "superseded" in r["note"] for r in rows)
    hitch = sum(r["hitchhiker"] for r in rows)
    smallest = ablation.smallest["experiments"]
    return [str(len(keeps)), pct(before, len(keeps)), pct(own + grouped, len(keeps)),
            f"{own} / {grouped}", str(superseded), str(hitch),
            f"{len(smallest)}" + (" (same code)" if ablation.smallest["same_code"] else "")
            ], took  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=60)
    ap.add_argument("--run-s", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3, help="studies per row (pooled)")
    ap.add_argument("--quick", action="store_true", help="20 experiments, 1 seed, 2 repeats")
    args = ap.parse_args()
    if args.quick:
        args.experiments, args.seeds, args.repeats = 20, 1, 2
    sys.modules[MODULE] = sys.modules[__name__]
    model = f"{MODULE}:KnobModel"
    with tempfile.TemporaryDirectory(prefix="bench-stale-") as tmp_name:
        tmp = Path(tmp_name)
        n, run_s = args.experiments, args.run_s
        configs = [("line merge (before)", model, {"line": True}),
                   ("word-level merge (after)", model, {}),
                   ("word-level + in-flight list", model, {"avoid": True}),
                   ("… one proposal at a time", model, {"avoid": True, "serial": True}),
                   ("tune (its own rebase)", "tune", {})]  # fmt: skip
        rows = [Outcome(label) for label, _, _ in configs]
        studies: dict[str, Study] = {}
        for seed in range(1, args.seeds + 1):
            for row, (label, kind, how) in zip(rows, configs, strict=True):
                o = run_study(tmp / str(seed), label, kind, n, run_s, seed, **how)
                for name in ("proposals", "stale", "lost_same", "lost_next", "keeps"):
                    setattr(row, name, getattr(row, name) + getattr(o, name))
                if o.study is not None:
                    studies.setdefault(label, o.study)
        print(f"## Q6. Stale proposals ({args.seeds} × {n} experiments per row, 4 slots, "
              "lookahead 4, 15 knobs on consecutive lines)\n")  # fmt: skip
        print(table(
            ["carried with", "proposals", "made on an older best", "lost: neighbouring line",
             "lost: same knob", "share lost", "keeps"],
            [[o.label, o.proposals, o.stale, o.lost_next, o.lost_same,
              pct(o.lost_next + o.lost_same, o.proposals), o.keeps] for o in rows],
        ))  # fmt: skip
        for after in rows[1:4]:
            lost = after.lost_next + after.lost_same
            share = lost / after.proposals if after.proposals else 0.0
            print(f"\ngoal: share lost < 2 % ({after.label}) -> "
                  f"{'met' if share < 0.02 else 'NOT met'} ({pct(lost, after.proposals)})", end="")
        print("\n")
        print("### `finish --ablate` coverage (keeps with a contribution number)\n")
        cov = []
        for label in (configs[1][0], configs[4][0]):
            cells, took = coverage(studies[label], args.repeats)
            cov.append([f"{label}, seed 1", *cells, f"{took:.0f} s"])
        print(table(
            ["study", "keeps", "before (line merge)", "after", "own / with dependents",
             "superseded", "hitchhikers", "smallest set", "ablation time"], cov,
        ))  # fmt: skip
        print(f"\n{args.repeats} runs per variant; \"with dependents\": removed together with "
              "the later keeps that changed the same text (a number for the group).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
