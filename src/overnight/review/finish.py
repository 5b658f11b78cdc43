"""`overnight finish`: the kept changes as a clean series on `overnight/<name>-final`.

The study branch is already a linear chain of keeps, but its commits carry only the
proposal's one-line description. The final branch re-creates that chain on top of the start
commit with messages a reviewer can use (metric before → after, the experiment number), can
leave keeps out (`--drop`) by carrying the remaining changes over with `git.transfer.carry`
(the proposer's own re-application, else a word-level three-way merge), and can squash
everything into one commit. Nothing here touches the user's checkout or index: trees are
built in the object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overnight.errors import OvernightError, UsageError
from overnight.git.transfer import Carried
from overnight.git.workspace import TRAILER, Workspace, git
from overnight.judging.rules import describe_change, fmt
from overnight.review.changes import Changes, Recorded
from overnight.store.ledger import Ledger
from overnight.store.study import Study


@dataclass
class Keep:
    """One kept experiment and the numbers it was kept with."""

    n: int
    commit: str
    parent: str
    description: str
    before: float | None  # the best value it was compared with (the previous keep's)
    after: float | None
    proposer: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def recorded(self) -> Recorded:
        return Recorded(self.n, self.parent, self.commit, self.description, self.proposer,
                        self.meta)  # fmt: skip


@dataclass
class Series:
    """The result of re-applying a list of keeps on top of the start commit."""

    start: str
    keeps: list[Keep]
    trees: list[str]  # tree after each keep, same order as `keeps`
    skipped: list[int] = field(default_factory=list)  # keeps whose change was already there
    # Keeps that did not carry onto the series without the ones left out (they build on
    # them), when replay was asked to leave such keeps out rather than stop.
    left_out: dict[int, Carried] = field(default_factory=dict)
    tree: str = ""  # the tree at the end (the start's when no keep applied)


class ReplayConflict(OvernightError):
    """A keep's change does not carry without the keeps that were left out."""

    def __init__(self, keep: Keep, done: Carried) -> None:
        self.keep = keep
        self.files = done.paths
        super().__init__(f"experiment {keep.n} ({keep.description}) conflicts in "
                         f"{done.reason()}")  # fmt: skip


def final_branch(study: Study) -> str:
    return f"{study.branch}-final"


def load_keeps(study: Study, ledger: Ledger) -> tuple[str, list[Keep]]:
    """The start commit and every keep after the baseline, in the order they were kept."""
    start = ledger.get_meta("start_commit")
    base = ledger.get(0)
    if not start or base is None or base.status != "keep":
        raise UsageError(f"study {study.name!r} has no measured baseline yet; nothing to finish")
    keeps, before = [], base.value
    # Decision order, which parallel slots can make differ from the experiment numbers.
    for rec in sorted(ledger.records(), key=lambda r: (r.decided_at or 0.0, r.experiment)):
        if rec.experiment == 0 or rec.status != "keep" or not rec.commit:
            continue
        meta = rec.meta if isinstance(rec.meta, dict) else {}
        keeps.append(Keep(rec.experiment, rec.commit, rec.parent or "", rec.description, before,
                          rec.value, rec.proposer, meta))  # fmt: skip
        before = rec.value
    return start, keeps


def parse_drop(text: str | None, keeps: list[Keep], statuses: dict[int, str | None]) -> set[int]:
    """`--drop 3,7` as experiment numbers, each of which must be a keep."""
    if not text:
        return set()
    kept = {k.n for k in keeps}
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise UsageError(
                f"--drop: expected experiment numbers like 3,7, got {part!r}"
            ) from None
        if n == 0:
            raise UsageError("--drop 0: the baseline is the start commit, not a change")
        if n not in kept:
            status = statuses.get(n, "missing")
            raise UsageError(
                f"--drop {n}: experiment {n} is not a keep ({status or 'undecided'}); "
                f"the keeps are {', '.join(map(str, sorted(kept))) or 'none'}"
            )
        out.add(n)
    return out


def replay(changes: Changes, start: str, keeps: list[Keep], leave_out: bool = False) -> Series:
    """The trees of `keeps` carried in order onto `start`. Where the tree so far is exactly
    the keep's original parent, the keep's own tree is reused, so without drops the result
    is the study's chain byte for byte. A keep that does not carry raises ReplayConflict,
    or with `leave_out` is left out (in `Series.left_out`, with its conflicts)."""
    ws = changes.ws
    series = Series(start, [], [])
    current = ws.tree_id(start)
    for keep in keeps:
        if current == ws.tree_id(keep.parent):
            tree: str | None = ws.tree_id(keep.commit)
        else:
            tree, done = changes.onto_tree(keep.recorded(), current)
            if tree is None:
                if not leave_out:
                    raise ReplayConflict(keep, done)
                series.left_out[keep.n] = done
                continue
        if tree == current:
            series.skipped.append(keep.n)
            continue
        series.keeps.append(keep)
        series.trees.append(tree)
        current = tree
    series.tree = current
    return series


# -- commit messages ------------------------------------------------------------------------


def keep_message(study: Study, keep: Keep, dropped: set[int]) -> str:
    subject = " ".join(keep.description.split()) or f"experiment {keep.n}"
    lines = [subject, ""]
    if keep.before is not None and keep.after is not None:
        m = study.cfg.metric
        lines.append(
            f"{describe_change(m.name, keep.after, keep.before, m.goal)}, as measured in "
            f"study {study.name}."
        )
    if dropped:
        lines.append(
            f"Re-applied without experiment(s) {', '.join(map(str, sorted(dropped)))}; "
            "the numbers above are from the study."
        )
    return "\n".join(lines) + f"\n\n{TRAILER}: {keep.n}\n"


def squash_message(study: Study, series: Series, baseline: float | None, dropped: set[int]) -> str:
    m = study.cfg.metric
    last = series.keeps[-1].after
    change = f"{m.name} {fmt(baseline)} → {fmt(last)}"
    count = len(series.keeps)
    lines = [f"overnight {study.name}: {change} ({count} change{'s' * (count != 1)})", ""]
    for k in series.keeps:
        lines.append(f"- {' '.join(k.description.split())} "
                     f"(experiment {k.n}: {fmt(k.before)} → {fmt(k.after)})")  # fmt: skip
    if dropped:
        lines += ["", f"Without experiment(s) {', '.join(map(str, sorted(dropped)))}; "
                  "the numbers are from the study."]  # fmt: skip
    trailers = "".join(f"{TRAILER}: {k.n}\n" for k in series.keeps)
    return "\n".join(lines) + "\n\n" + trailers


def commit_tree(ws: Workspace, tree: str, parent: str, message: str) -> str:
    return ws.commit_tree(tree, parent, message)


# -- the branch -----------------------------------------------------------------------------


def _checked_out(ws: Workspace, ref: str) -> bool:
    out = git("worktree", "list", "--porcelain", cwd=ws.root, check=False)
    return f"branch {ref}" in out.splitlines()


def _check_writable(ws: Workspace, branch: str, start: str) -> str | None:
    """The branch's current head, after making sure overwriting it loses no one's work."""
    ref = f"refs/heads/{branch}"
    old = git("rev-parse", "--verify", "-q", ref, cwd=ws.root, check=False).strip() or None
    if old is None:
        return None
    if _checked_out(ws, ref):
        raise UsageError(
            f"{branch} is checked out; switch to another branch before `overnight finish` "
            "rewrites it"
        )
    # Every commit a previous `finish` wrote has our trailer; anything else is the user's.
    out = git("log", "--format=%H%x00%B%x01", f"{start}..{old}", cwd=ws.root, check=False)
    foreign = [e.split("\0", 1)[0].strip()[:7] for e in out.split("\x01")
               if e.strip() and f"{TRAILER}:" not in e]  # fmt: skip
    if foreign:
        raise UsageError(
            f"{branch} has commits that `overnight finish` did not write ({', '.join(foreign)}); "
            f"rename or delete that branch first (`git branch -m {branch} <new-name>`)"
        )
    return old


@dataclass
class FinishResult:
    branch: str
    head: str
    start: str
    series: Series
    commits: list[str]  # one per keep, or one for --squash
    dropped: set[int]
    previous: str | None = None
    patches: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        squash = len(self.commits) == 1 and len(self.series.keeps) > 1
        return [
            {
                "experiment": k.n,
                "description": k.description,
                "commit": self.commits[0] if squash else self.commits[i],
                "source_commit": k.commit,
                "before": k.before,
                "after": k.after,
            }
            for i, k in enumerate(self.series.keeps)
        ]


def build_final(study: Study, drop: str | None = None, squash: bool = False) -> FinishResult:
    """Re-create the kept changes as `overnight/<name>-final`; the branch is written only
    when every keep applied (a conflict raises and leaves it as it was)."""
    ledger = study.open_ledger()
    try:
        start, keeps = load_keeps(study, ledger)
        statuses = {r.experiment: r.status for r in ledger.records(decided_only=False)}
        baseline = ledger.get(0).value  # type: ignore[union-attr]
    finally:
        ledger.close()
    if not keeps:
        raise UsageError(f"study {study.name!r} has no kept experiments yet; nothing to finish")
    dropped = parse_drop(drop, keeps, statuses)
    chosen = [k for k in keeps if k.n not in dropped]
    if not chosen:
        raise UsageError("--drop leaves no keeps; nothing to finish")
    ws = study.ws
    branch = final_branch(study)
    previous = _check_writable(ws, branch, start)
    try:
        series = replay(Changes(study, start), start, chosen)
    except ReplayConflict as exc:
        raise UsageError(  # what was asked cannot be built; nothing was written
            f"cannot build {branch} without experiment(s) "
            f"{', '.join(map(str, sorted(dropped)))}: {exc}; that change builds on what was "
            f"dropped (both changed the same text): drop experiment {exc.keep.n} too, or keep "
            "what it depends on (branch not written)"
        ) from None
    if not series.keeps:
        raise UsageError("the remaining keeps change nothing; nothing to finish")
    if squash:
        commits = [commit_tree(ws, series.trees[-1], start,
                               squash_message(study, series, baseline, dropped))]  # fmt: skip
    else:
        commits, parent = [], start
        for keep, tree in zip(series.keeps, series.trees, strict=True):
            parent = commit_tree(ws, tree, parent, keep_message(study, keep, dropped))
            commits.append(parent)
    head = commits[-1]
    git("update-ref", "-m", "overnight finish", f"refs/heads/{branch}", head, cwd=ws.root)
    return FinishResult(branch, head, start, series, commits, dropped, previous)


def write_patches(study: Study, result: FinishResult, out_dir: Path) -> list[str]:
    """The series as `git format-patch` files in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = git(
        "format-patch", "-o", str(out_dir.resolve()), f"{result.start}..{result.head}",
        cwd=study.root,
    )  # fmt: skip
    return [line for line in out.splitlines() if line.strip()]
