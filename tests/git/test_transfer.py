"""The one change-transfer mechanism (git/transfer.py, git/tokenmerge.py): edits on
neighbouring lines carry, the same text changed on both sides is a conflict with its text,
the proposer's own re-application goes first."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from conftest import git, make_repo

from overnight.git.tokenmerge import merge, tokens
from overnight.git.transfer import carry, decode, encode, merge_file
from overnight.git.workspace import Workspace
from overnight.proposers.registry import reapplier
from overnight.store.records import Proposal

BASE = "import os\nA = 3.0\nB = 10\nprint(f'score: {A + B}')\n"


def git_merge_file(tmp: Path, base: str, ours: str, theirs: str) -> int:
    """The real `git merge-file`: its exit status is the number of conflicts."""
    for name, text in (("base", base), ("ours", ours), ("theirs", theirs)):
        (tmp / name).write_text(text)
    args = [str(tmp / name) for name in ("ours", "base", "theirs")]
    proc = subprocess.run(["git", "merge-file", "-p", "--quiet", *args], capture_output=True)
    return proc.returncode


@pytest.mark.parametrize("text", [
    "", "x", "a\r\nb\rc\n", "\tdef f(x):\n    return x**2  # ü 😀\n", "a  \x0b b\u2028c\x00d",
])  # fmt: skip
def test_tokens_give_the_text_back(text: str) -> None:
    assert "".join(tokens(text)) == text


def test_adjacent_lines_merge_where_git_merge_file_conflicts(tmp_path: Path) -> None:
    ours = BASE.replace("A = 3.0", "A = 1.7")  # the best moved on the line above
    theirs = BASE.replace("B = 10", "B = 9.99999")  # the change made on the older best
    # Why git's own machinery is not enough: a line merge calls adjacent lines a conflict.
    assert git_merge_file(tmp_path, BASE, ours, theirs) == 1
    merged, clashes = merge(BASE, ours, theirs)
    assert clashes == []
    assert merged == BASE.replace("A = 3.0", "A = 1.7").replace("B = 10", "B = 9.99999")


def test_the_same_text_changed_on_both_sides_is_a_conflict_with_its_text() -> None:
    here = BASE.replace("B = 10", "B = 8")
    out, conflicts = merge_file("score.py", BASE, here, BASE.replace("B = 10", "B = 6"))
    assert out is None
    (c,) = conflicts
    assert (c.path, c.line, c.base, c.here, c.change) == ("score.py", 3, "B = 10", "B = 8", "B = 6")
    assert c.describe() == ("score.py line 3: the change turns `B = 10` into `B = 6`, but here "
                            "it reads `B = 8`")  # fmt: skip


def test_a_number_or_a_dotted_name_is_one_word() -> None:
    # "3.0 → 3.5" and "3.0 → 4.0" change the same number; joined they would say 4.5.
    merged, clashes = merge("A = 3.0\n", "A = 3.5\n", "A = 4.0\n")
    assert merged is None and len(clashes) == 1
    merged, _ = merge("x = torch.float32\n", "x = np.float32\n", "x = torch.float16\n")
    assert merged is None
    assert tokens("lr=1e-3*x.y") == ["lr", "=", "1e-3", "*", "x.y"]


def test_different_words_of_one_line_merge_and_touching_edits_do_not() -> None:
    base = "opt = Adam(lr=0.01, betas=(0.9, 0.95))\n"
    merged, _ = merge(base, base.replace("0.01", "0.02"), base.replace("0.95", "0.99"))
    assert merged == "opt = Adam(lr=0.02, betas=(0.9, 0.99))\n"
    # No unchanged token between the two edits: decided together, and they differ.
    merged, clashes = merge("x = ab\n", "x = abc\n", "x = ab;\n")
    assert merged is None and clashes[0].base == "x = ab"


def test_identical_changes_are_taken_once_and_inserts_at_one_place_conflict() -> None:
    same = BASE.replace("B = 10", "B = 9")
    assert merge(BASE, same, same) == (same, [])
    base = "a\nb\nc\n"
    assert merge(base, "a\nX\nb\nc\n", "a\nb\nY\nc\n") == ("a\nX\nb\nY\nc\n", [])
    merged, clashes = merge(base, "a\nX\nb\nc\n", "a\nY\nb\nc\n")
    assert merged is None and (clashes[0].ours, clashes[0].theirs) == ("X", "Y")


def test_random_knob_edits_merge_exactly_when_they_touch_different_knobs() -> None:
    rng = random.Random(7)
    names = [f"K{i}" for i in range(15)]  # 15 consecutive knob lines, as in autoresearch
    base = "".join(f"{k} = {i}\n" for i, k in enumerate(names))

    def edit(values: dict[str, int]) -> str:
        return "".join(f"{k} = {values.get(k, i)}\n" for i, k in enumerate(names))

    for _ in range(200):
        mine = {k: rng.randrange(100, 200) for k in rng.sample(names, rng.randint(1, 3))}
        theirs = {k: rng.randrange(200, 300) for k in rng.sample(names, rng.randint(1, 3))}
        merged, clashes = merge(base, edit(mine), edit(theirs))
        if set(mine) & set(theirs):
            assert merged is None and {c.line for c in clashes} == {
                names.index(k) + 1 for k in set(mine) & set(theirs)
            }
        else:
            assert merged == edit({**mine, **theirs}) and clashes == []


def test_files_added_deleted_or_binary_carry_only_when_the_target_is_untouched() -> None:
    assert merge_file("new.py", None, None, "x = 1\n") == ("x = 1\n", [])
    assert merge_file("old.py", "x = 1\n", "x = 1\n", None) == (None, [])
    out, (c,) = merge_file("old.py", "x = 1\n", "x = 2\n", None)
    assert out is None and (c.here, c.change) == ("x = 2\n", "(absent)")
    blob = decode(b"\x00\xff\xfe")
    assert merge_file("w.bin", blob, blob, "new") == ("new", [])
    out, (c,) = merge_file("w.bin", blob, blob + "x", "new")
    assert c.base == "(binary)" and encode(blob) == b"\x00\xff\xfe"


def test_carry_tries_the_proposers_own_reapplication_first() -> None:
    before, after = {"s.py": BASE}, {"s.py": BASE.replace("B = 10", "B = 6")}
    target = {"s.py": BASE.replace("B = 10", "B = 8")}
    done = carry(before, after, target)
    assert done.files is None and done.paths == ["s.py"] and "B = 8" in done.reason()
    done = carry(before, after, target, lambda t: {"s.py": t["s.py"].replace("B = 8", "B = 6")},
                 by="tune")  # fmt: skip
    assert (done.how, done.by, done.files) == ("proposer", "tune", after)
    for fallback in (lambda t: None, lambda t: 1 / 0):  # cannot, or a bug: the merge decides
        done = carry(before, after, {"s.py": BASE.replace("A = 3.0", "A = 2")}, fallback)
        assert done.how == "merge" and done.files == {
            "s.py": BASE.replace("A = 3.0", "A = 2").replace("B = 10", "B = 6")
        }


def test_tune_and_llm_proposals_are_reapplied_by_their_own_rules() -> None:
    knobs = "LR = 0.04\nWD = 0.1\n"
    tune = Proposal(files={"t.py": "LR = 0.02\nWD = 0.1\n"}, description="LR 0.04 → 0.02",
                    proposer="tune", meta={"changed": ["LR"], "params": {"LR": 0.02, "WD": 0.1}})
    redo = reapplier(tune)
    assert redo is not None
    # The same knob moved meanwhile: a text merge would conflict; tune sets its value.
    assert redo({"t.py": "LR = 0.03\nWD = 0.2\n"}) == {"t.py": "LR = 0.02\nWD = 0.2\n"}
    assert tune.description == "LR 0.03 → 0.02"
    assert redo({"t.py": "WD = 0.2\n"}) is None  # its knob is gone: not its to decide
    reply = "DESCRIPTION: x\nt.py\n<<<<<<< SEARCH\nWD = 0.1\n=======\nWD = 0.3\n>>>>>>> REPLACE\n"
    llm = Proposal(files={}, description="WD", proposer="llm", response=reply)
    redo = reapplier(llm)
    assert redo is not None
    assert redo({"t.py": "LR = 1\nWD = 0.1\n"}) == {"t.py": "LR = 1\nWD = 0.3\n"}
    assert redo({"t.py": knobs.replace("WD = 0.1", "WD = 0.2")}) is None  # SEARCH is gone
    assert reapplier(Proposal(files={}, description="", proposer="agent")) is None


def test_trees_with_deletions_and_the_changed_paths(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.py": "a\n", "pkg/b.py": "b\n", "pkg/c.py": "c\n"})
    ws = Workspace(repo, "t")
    head = git(repo, "rev-parse", "HEAD")
    tree = ws.tree_with(head, {"pkg/b.py": None, "pkg/c.py": None, "d.py": b"d\n"})
    assert ws.read_bytes(tree, ["a.py", "pkg/b.py", "d.py"]) == {
        "a.py": b"a\n", "pkg/b.py": None, "d.py": b"d\n"
    }  # fmt: skip
    assert git(repo, "ls-tree", "-r", "--name-only", tree).split() == ["a.py", "d.py"]
    assert ws.changed_paths(head, tree) == ["d.py", "pkg/b.py", "pkg/c.py"]
    assert ws.tree_id(tree) == tree
