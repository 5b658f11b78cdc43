"""No silent dirty tree: a study starts from what the user sees.

Candidates are commits made from the study's start commit, so an edit that is not
committed is silently left out of every run. `overnight run` therefore stops (exit 2) with
the list of such files, unless `--allow-dirty`, which says plainly what is used instead:

- code: a tracked file (the surface or a locked file) changed in the checkout or the index;
  the runs use its committed version;
- settings: the config and the instructions, which are read from the checkout as they are,
  but are not committed as they are (an untracked one that git ignores, e.g. through
  `.git/info/exclude`, is kept out of git on purpose and does not count);
- moved on (a resumed study): the checkout's commit changed code since the study began;
  the study goes on from its own branch without those commits.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from overnight.errors import UsageError
from overnight.git.workspace import git


@dataclass
class CheckoutState:
    code: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    head: str = ""

    @property
    def clean(self) -> bool:
        return not (self.code or self.settings or self.moved)


def _relative(root: Path, path: Path) -> str | None:
    try:
        return Path(path).absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return None  # a config outside the repository: not ours to judge


def checkout_state(root: Path, start: str, branch: str, settings: list[Path]) -> CheckoutState:
    """What the checkout at `root` holds that the study (started at `start`, its best on
    `branch`) would not run. `settings`: the config and instructions files."""
    state = CheckoutState(head=git("rev-parse", "HEAD", cwd=root).strip())
    names = {rel for p in settings if p.exists() and (rel := _relative(root, p)) is not None}
    out = git("status", "--porcelain=v1", "-z", "--untracked-files=no", cwd=root)
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry, i = entries[i], i + 1
        if len(entry) < 4:
            continue
        if entry[0] in "RC":
            i += 1  # a rename's second field is its old path
        path = entry[3:]
        (state.settings if path in names else state.code).append(path)
    if names:  # untracked settings count unless git ignores them: a choice, not an oversight
        args = ("ls-files", "--others", "--exclude-standard", "-z", "--", *sorted(names))
        loose = set(git(*args, cwd=root).split("\0")) & names
        state.settings += sorted(loose - set(state.settings))
    if state.head != start and not _on_study_line(root, start, state.head, branch):
        changed = git("diff", "--name-only", "-z", start, state.head, cwd=root).split("\0")
        state.moved = sorted(p for p in changed if p and p not in names)
    state.code.sort()
    state.settings.sort()
    return state


def _on_study_line(root: Path, start: str, head: str, branch: str) -> bool:
    """Whether `head` lies between the start commit and the study's branch (the user
    checked out the study branch, or one of its keeps)."""

    def ancestor(a: str, b: str) -> bool:
        cmd = ["git", "merge-base", "--is-ancestor", a, b]
        return subprocess.run(cmd, cwd=root, capture_output=True).returncode == 0

    return ancestor(start, head) and ancestor(head, branch)


def check_checkout(state: CheckoutState, study: str, allow_dirty: bool) -> str | None:
    """Raise a UsageError listing what would be left out, or with `allow_dirty` return the
    line that says what is used instead (None: the checkout is clean)."""
    if state.clean:
        return None
    code, settings, moved = (_list(x) for x in (state.code, state.settings, state.moved))
    if not allow_dirty:
        parts = []
        if state.code:
            parts.append(f"{code} (runs use the committed version)")
        if state.settings:
            parts.append(f"{settings} (read as it is, but not recorded in git)")
        if parts:
            raise UsageError(f"uncommitted changes: {', '.join(parts)}; commit or stash them, "
                             "or pass --allow-dirty to run anyway")  # fmt: skip
        raise UsageError(
            f"your checkout moved on since study {study!r} began: commits changed {moved}, "
            "which the study does not use (it goes on from its own branch); start a new study "
            "(another [study].name) to use them, or pass --allow-dirty to go on without them"
        )
    lines = []
    if state.code:
        lines.append(f"the runs use the committed version of {code}, not your changes")
    if state.settings:
        lines.append(f"{settings}: used as in your checkout, uncommitted")
    if state.moved:
        lines.append(f"the study goes on from its own branch, without your newer commits to "
                     f"{moved}")  # fmt: skip
    return "--allow-dirty: " + "; ".join(lines)


def _list(paths: list[str], most: int = 8) -> str:
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")
