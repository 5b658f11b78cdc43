"""SEARCH/REPLACE edits and whole-file rewrites: all blocks apply, or a precise reason."""

from __future__ import annotations

import pytest

from overnight.proposers.llm.edits import EditError, apply_edits, parse_blocks

TRAIN = """\
import math

LR = 0.04
BATCH = 32


def step(x):
    if x > 0:
        return x * LR
    return 0
"""
SURFACE = {"train.py": TRAIN}


def block(search: str, replace: str, path: str = "train.py") -> str:
    return f"{path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def error_of(reply: str, surface: dict[str, str] = SURFACE, whole: bool = False) -> str:
    with pytest.raises(EditError) as err:
        apply_edits(reply, surface, whole_files=whole)
    return str(err.value)


def test_exact_block_inside_a_fence_with_prose_around() -> None:
    reply = "I will halve LR.\n\n```python\n" + block("LR = 0.04", "LR = 0.02") + "```\nDone."
    assert apply_edits(reply, SURFACE, whole_files=False) == {
        "train.py": TRAIN.replace("LR = 0.04", "LR = 0.02")
    }


def test_path_line_decorations_and_fence_between_path_and_block() -> None:
    reply = "**train.py**\n```python\n<<<<<<< SEARCH\nBATCH = 32\n=======\nBATCH = 64\n" \
        ">>>>>>> REPLACE\n```\n"  # fmt: skip
    assert "BATCH = 64" in apply_edits(reply, SURFACE, whole_files=False)["train.py"]
    reply = block("BATCH = 32", "BATCH = 16", path="`./train.py`:")
    assert "BATCH = 16" in apply_edits(reply, SURFACE, whole_files=False)["train.py"]


def test_blocks_apply_in_order_and_later_blocks_see_earlier_ones() -> None:
    reply = block("LR = 0.04", "LR = 0.03") + "\n" + block("LR = 0.03\nBATCH = 32", "LR = 0.01\n")
    new = apply_edits(reply, SURFACE, whole_files=False)["train.py"]
    assert "LR = 0.01\n\n\n\ndef step" in new and "BATCH" not in new


def test_whitespace_tolerant_match_reindents_the_replacement() -> None:
    # The model dropped the function's indentation and added trailing spaces.
    search = "if x > 0:   \n    return x * LR\nreturn 0"
    replace = "if x >= 0:\n    return x * LR * 2\nreturn 0"
    new = apply_edits(block(search, replace), SURFACE, whole_files=False)["train.py"]
    assert "    if x >= 0:\n        return x * LR * 2\n    return 0\n" in new


def test_blank_lines_around_search_are_tolerated() -> None:
    new = apply_edits(block("\nLR = 0.04\n", "\nLR = 0.5\n"), SURFACE, whole_files=False)
    assert new["train.py"] == TRAIN.replace("LR = 0.04", "LR = 0.5")


def test_copied_line_number_gutter_is_stripped() -> None:
    reply = block("   3| LR = 0.04\n   4| BATCH = 32", "   3| LR = 0.1\n   4| BATCH = 32")
    assert apply_edits(reply, SURFACE, whole_files=False)["train.py"] == TRAIN.replace(
        "0.04", "0.1"
    )


def test_no_match_names_the_block_and_the_closest_line() -> None:
    reason = error_of(block("LR = 0.05", "LR = 0.02"))
    assert reason == (
        "block 1 for train.py: its SEARCH text matches nothing, not even ignoring whitespace; "
        "the closest line is 3: `LR = 0.04`"
    )


def test_nothing_applies_when_one_block_fails() -> None:
    reply = block("LR = 0.04", "LR = 0.02") + block("NOPE = 1", "NOPE = 2")
    assert error_of(reply).startswith("block 2 for train.py: its SEARCH text matches nothing")


def test_ambiguous_search_is_refused() -> None:
    surface = {"a.py": "x = 1\ny = 2\nx = 1\n"}
    reason = error_of(block("x = 1", "x = 3", path="a.py"), surface)
    assert "matches 2 places (lines 1, 3)" in reason


def test_malformed_and_cut_off_blocks() -> None:
    assert "ends before '>>>>>>> REPLACE' (cut off?)" in error_of(
        "train.py\n<<<<<<< SEARCH\nLR = 0.04\n=======\nLR = 0.02\n"
    )
    assert "ends before '======='" in error_of("train.py\n<<<<<<< SEARCH\nLR = 0.04\n")
    assert "expected '=======' before line 4" in error_of(
        "train.py\n<<<<<<< SEARCH\nLR = 0.04\n>>>>>>> REPLACE\n"
    )
    assert "without a '<<<<<<< SEARCH'" in error_of("LR = 1\n>>>>>>> REPLACE\n")
    assert error_of("I think LR should be lower.").startswith("the reply contains no SEARCH")
    assert "empty SEARCH section" in error_of(block("", "LR = 1"))


def test_paths_outside_the_surface_or_missing() -> None:
    reason = error_of(block("x", "y", path="prepare.py"))
    assert reason == (
        "block 1 (reply line 2) edits prepare.py, which is outside the surface "
        "(only train.py may change)"
    )
    two = {"a.py": "x = 1\n", "b.py": "y = 2\n"}
    assert "has no file path line" in error_of("<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n"
                                               ">>>>>>> REPLACE\n", two)  # fmt: skip
    # With a single surface file the path may be omitted; an absolute path is understood.
    one = "<<<<<<< SEARCH\nBATCH = 32\n=======\nBATCH = 8\n>>>>>>> REPLACE\n"
    assert "BATCH = 8" in apply_edits(one, SURFACE, whole_files=False)["train.py"]
    absolute = block("BATCH = 32", "BATCH = 8", path="/home/me/repo/train.py")
    assert "BATCH = 8" in apply_edits(absolute, SURFACE, whole_files=False)["train.py"]


def test_multi_file_surface_and_path_carried_over() -> None:
    surface = {"a.py": "x = 1\n", "cfg/b.toml": "y = 2\n"}
    reply = (
        block("x = 1", "x = 5", path="a.py")
        + "<<<<<<< SEARCH\nx = 5\n=======\nx = 6\n>>>>>>> REPLACE\n"  # continues a.py
        + block("y = 2", "y = 3", path="cfg/b.toml")
    )
    assert apply_edits(reply, surface, whole_files=False) == {
        "a.py": "x = 6\n",
        "cfg/b.toml": "y = 3\n",
    }


def test_whole_file_rewrite_for_small_surfaces() -> None:
    new_text = "import math\n\nLR = 0.01\n"
    reply = f"DESCRIPTION: rewrite\n\ntrain.py\n```python\n{new_text}```\n"
    assert apply_edits(reply, SURFACE, whole_files=True) == {"train.py": new_text}
    assert "not accepted for a surface this large" in error_of(reply)
    assert "(cut off?)" in error_of("train.py\n```python\nimport math\n", whole=True)
    assert "outside the surface" in error_of("setup.py\n```\nx = 1\n```\n", whole=True)
    # A fenced example under prose is no rewrite.
    assert "no SEARCH/REPLACE" in error_of("For example:\n```\nx = 1\n```\n", whole=True)


def test_line_endings_and_missing_final_newline_are_kept() -> None:
    crlf = {"w.py": "a = 1\r\nb = 2\r\n"}
    assert apply_edits(block("a = 1", "a = 3", path="w.py"), crlf, whole_files=False) == {
        "w.py": "a = 3\r\nb = 2\r\n"
    }
    bare = {"w.py": "a = 1\nb = 2"}
    assert apply_edits(block("b = 2", "b = 4\nc = 5", path="w.py"), bare, whole_files=False) == {
        "w.py": "a = 1\nb = 4\nc = 5"
    }


def test_deleting_lines_and_block_positions() -> None:
    new = apply_edits(block("BATCH = 32\n", ""), SURFACE, whole_files=False)["train.py"]
    assert "BATCH" not in new and "LR = 0.04\n\n\ndef step" in new
    blocks = parse_blocks("x\n\nfoo.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n")
    assert [(b.path, b.search, b.replace, b.number, b.line) for b in blocks] == [
        ("foo.py", ["a"], ["b"], 1, 4)
    ]
