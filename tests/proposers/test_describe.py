"""Descriptions derived from an edit, for agents that leave no description file and for
models whose description is not about their edit."""

from __future__ import annotations

from overnight.proposers.describe import describe, describe_change, is_about

TRAIN = """\
import math
LR = 0.04
DEPTH = 8


def forward(x):
    return x * LR


class Block:
    def __init__(self):
        self.n = 1

    def go(self):
        pass
"""


def test_knob_edits_name_the_knobs_and_values() -> None:
    after = TRAIN.replace("0.04", "0.031").replace("= 8", "= 10")
    assert describe_change({"train.py": TRAIN}, {"train.py": after}) == (
        "LR 0.04 → 0.031, DEPTH 8 → 10"
    )
    conf = {"c.toml": "[opt]\nlr = 1e-3\n"}
    assert describe_change(conf, {"c.toml": "[opt]\nlr = 2e-3\n"}) == "opt.lr 1e-3 → 2e-3"


def test_other_edits_name_the_functions_or_the_lines() -> None:
    before = {"train.py": TRAIN}
    mixed = TRAIN.replace("x * LR", "x * LR * 2").replace("0.04", "0.05")
    assert describe_change(before, {"train.py": mixed}) == (
        "LR 0.04 → 0.05; train.py: edit forward()"
    )
    grown = TRAIN.replace("self.n = 1", "self.n = 2")
    grown = grown.replace("    def go(self):\n        pass\n", "")
    grown += "\n\nclass New:\n    def a(self):\n        pass\n"
    assert describe_change(before, {"train.py": grown}) == (
        "train.py: add New(); edit Block.__init__(); remove Block.go()"
    )
    assert describe_change(before, {"train.py": TRAIN.replace("import math", "import os")}) == (
        "train.py: line 1"
    )
    assert describe_change({"c.txt": "a\nb\nc\n"}, {"c.txt": "a\nB\nc\nd\n"}) == "c.txt: lines 2, 4"
    broken = TRAIN.replace("def go(self):", "def go(self)")  # not Python any more: lines
    assert describe_change(before, {"train.py": broken}) == "train.py: line 14"
    two = describe_change({"a.py": "X = 1\n", "b.py": "Y = 2\n"}, {"a.py": "X = 2\n",
                                                                   "b.py": "Y = 3\n"})
    assert two == "a.py: X 1 → 2; b.py: Y 2 → 3"
    assert len(describe_change({}, {f"f{i}.txt": "x\n" for i in range(30)})) == 120


def test_a_description_that_is_not_about_the_change_gives_way_to_the_edit() -> None:
    """Seen with SmolLM2-135M: descriptions like `{ {` or `1 experiments so far (keep).`"""
    before = {"train.py": TRAIN}
    knob = {"train.py": TRAIN.replace("LR = 0.04", "LR = 0.003")}
    for junk in ("{ {", "1 experiments so far (keep).", "Try this to see if it is better", ""):
        assert not is_about(junk, before, knob)
        assert describe(junk, before, knob) == "LR 0.04 → 0.003"
    for told in ("lower LR", "lr to 0.003", "the learning rate 0.04 was too high"):
        assert is_about(told, before, knob), told
        assert describe(told, before, knob) == told
    code = {"train.py": TRAIN.replace("return x * LR", "return math.tanh(x) * LR")}
    assert describe("squash the input with tanh", before, code) == "squash the input with tanh"
    assert describe("an idea", before, code) == "train.py: edit forward()"
