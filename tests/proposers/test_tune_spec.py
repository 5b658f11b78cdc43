"""What a user states about a knob (spec.py) and where tune searches it (space.py)."""

from __future__ import annotations

import math

import pytest

from overnight.proposers.tune.knobs import Knob, find_knobs
from overnight.proposers.tune.search import TrustRegion, repair
from overnight.proposers.tune.space import build_space
from overnight.proposers.tune.spec import KnobSpec, comment_spec, config_spec, parse_spec, tuned


def test_spec_words() -> None:
    assert parse_spec("1e-4..0.1 log") == KnobSpec(low=1e-4, high=0.1, scale="log")
    assert parse_spec("16..1024, pow2") == KnobSpec(low=16, high=1024, scale="pow2")
    assert parse_spec("{1, 2, 4}") == KnobSpec(choices=(1, 2, 4))
    assert parse_spec("{0.5 1}").choices == (0.5, 1)
    assert parse_spec("0..0.5 linear int") == KnobSpec(low=0, high=0.5, scale="linear",
                                                       integer=True)  # fmt: skip
    assert parse_spec("off").tune is False and parse_spec("on").tune is True
    assert parse_spec("pow2 divides TOTAL_BATCH_SIZE") == KnobSpec(
        scale="pow2", divides="TOTAL_BATCH_SIZE"
    )
    assert parse_spec("2**4..2**10 pow2") == KnobSpec(low=16, high=1024, scale="pow2")
    assert parse_spec("-1..1") == KnobSpec(low=-1, high=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1e-4..0.1 lgo", "unknown word 'lgo'"),
        ("0.1..0.01", "expected LOW < HIGH"),
        ("0..1 log", "a log scale needs a range above 0"),
        ("{}", "expected at least one value"),
        ("1..2 ???", "cannot read '???'"),
    ],
)
def test_bad_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re_escape(message)):
        parse_spec(text)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_specs_are_read_from_the_knobs_own_line_comment() -> None:
    src = (
        "LR = 0.04  # Adam step size; tune: 1e-4..0.1 log\n"
        "WIDTH = 256  # tune: off\n"
        "DEPTH = 4  # layers (no spec)\n"
        "BETAS = (0.9, 0.95)  # tune: 0.5..0.999\n"
    )
    specs = {k.name: comment_spec(k.comment) for k in find_knobs("t.py", src)}
    assert specs["LR"] == KnobSpec(low=1e-4, high=0.1, scale="log")
    assert specs["WIDTH"] == KnobSpec(tune=False) and specs["DEPTH"] is None
    assert specs["BETAS[0]"] == specs["BETAS[1]"] == KnobSpec(low=0.5, high=0.999)
    toml = "[optim]\nlr = 3e-4  # tune: 1e-5..1e-2\n"
    assert comment_spec(find_knobs("c.toml", toml)[0].comment) == KnobSpec(low=1e-5, high=1e-2)
    yaml = "optim:\n  lr: 0.0003  # tune: 1e-5..1e-2\n"
    assert comment_spec(find_knobs("c.yaml", yaml)[0].comment) == KnobSpec(low=1e-5, high=1e-2)


def test_config_specs_by_name_or_glob_and_over_the_comment() -> None:
    specs = {"LR": parse_spec("1e-3..1e-2"), "*_RATIO": parse_spec("0.2..0.8"),
             "BETAS": parse_spec("0.8..0.99")}  # fmt: skip
    assert config_spec("LR", specs) == specs["LR"]
    assert config_spec("WARMUP_RATIO", specs) == specs["*_RATIO"]
    assert config_spec("BETAS[1]", specs) == specs["BETAS"]  # a tuple's elements
    assert config_spec("a.py:LR", specs) == specs["LR"]  # a name found in two files
    assert config_spec("OTHER", specs) is None
    merged = specs["LR"].over(parse_spec("1e-5..1 log"))
    assert merged == KnobSpec(low=1e-3, high=1e-2, scale="log")


def test_which_knobs_are_tuned() -> None:
    none = KnobSpec()
    assert not tuned("SEED", none) and not tuned("DATA_SEED", none)
    assert not tuned("H100_BF16_PEAK_FLOPS", none) and not tuned("seed", none)
    assert tuned("LR", none) and tuned("SEED", KnobSpec(tune=True))
    assert tuned("SEED", none, include=["SEED"]) and not tuned("LR", none, include=["SEED"])
    assert not tuned("LR", none, exclude=["L*"]) and not tuned("LR", KnobSpec(tune=False))
    assert tuned("SEED", KnobSpec(low=1, high=8))  # a declared range asks for it
    assert not tuned("DEPTH", KnobSpec(low=1, high=8), include=["LR"])  # include decides
    assert not tuned("LR", KnobSpec(tune=True), exclude=["LR"])  # exclude always wins


def knob(name: str, value: int | float, text: str = "") -> Knob:
    return Knob(name, "t.py", value, "int" if isinstance(value, int) else "float",
                text=text or str(value))  # fmt: skip


def values_of(space, n: int = 400) -> set:  # type: ignore[no-untyped-def]
    return {space.from_unit(i / (n - 1)) for i in range(n)}


def test_default_spaces_keep_what_a_knob_means() -> None:
    lr = build_space(knob("LR", 0.04), KnobSpec())
    assert (lr.scale, lr.low, lr.high) == ("log", 0.004, 0.4)
    ratio = build_space(knob("WARMDOWN_RATIO", 0.803), KnobSpec())
    assert ratio.scale == "linear" and max(values_of(ratio)) <= 1.0 and min(values_of(ratio)) >= 0
    dropout = build_space(knob("DROPOUT", 0.1), KnobSpec())
    assert max(values_of(dropout)) <= 1.0
    batch = build_space(knob("DEVICE_BATCH_SIZE", 128), KnobSpec())
    assert batch.scale == "pow2" and values_of(batch) == {32, 64, 128, 256, 512}
    tokens = build_space(knob("TOTAL_BATCH_SIZE", 2**19, "2**19"), KnobSpec())
    assert all(math.log2(v).is_integer() for v in values_of(tokens))
    depth = build_space(knob("DEPTH", 4), KnobSpec())  # small ints are counts, not pow2
    assert depth.scale == "log" and values_of(depth) == set(range(1, 17))
    zero = build_space(knob("WEIGHT_DECAY", 0.0), KnobSpec())
    assert (zero.scale, zero.low, zero.high) == ("linear", 0.0, 1.0)


def test_declared_spaces_are_hard_limits() -> None:
    lr = build_space(knob("LR", 0.04), parse_spec("1e-3..1e-2 log"))
    assert lr.fixed and lr.inner(0.04) is None and not lr.grow(0.01)
    assert min(values_of(lr)) == 1e-3 and max(values_of(lr)) == 1e-2
    width = build_space(knob("WIDTH", 100), parse_spec("16..1000 pow2"))
    assert values_of(width) == {16, 32, 64, 128, 256, 512}
    act = build_space(knob("ACT", 1), parse_spec("{0, 1, 2}"))
    assert values_of(act) == {0, 1, 2} and act.distribution().choices == (0, 1, 2)
    steps = build_space(knob("STEPS", 300.0), parse_spec("100..1000 int"))
    assert all(v == int(v) and isinstance(v, float) for v in values_of(steps))


def test_default_ranges_grow_past_an_edge_but_not_past_their_meaning() -> None:
    lr = build_space(knob("LR", 0.04), KnobSpec())
    assert lr.grow(0.4) and (lr.low, lr.high) == (0.004, 4.0)
    assert not lr.grow(0.04)  # not on an edge
    ratio = build_space(knob("WARMUP_RATIO", 0.05), KnobSpec())
    assert ratio.high == 0.5 and ratio.grow(0.5) and ratio.high == 1.0
    assert not ratio.grow(1.0)  # a fraction stops at 1
    batch = build_space(knob("BATCH", 64), KnobSpec())
    assert batch.grow(256) and values_of(batch) == {16, 32, 64, 128, 256, 512, 1024}


def test_divisors_are_repaired() -> None:
    space = build_space(knob("DEVICE_BATCH_SIZE", 96), parse_spec("8..512"))
    params = {"DEVICE_BATCH_SIZE": 73, "TOTAL": 2**10 * 3}
    fixed = repair(params, {"DEVICE_BATCH_SIZE": space}, {"DEVICE_BATCH_SIZE": "TOTAL"})
    assert fixed["DEVICE_BATCH_SIZE"] in (64, 96)
    assert fixed["TOTAL"] % fixed["DEVICE_BATCH_SIZE"] == 0


def test_trust_region_grows_shrinks_and_restarts() -> None:
    region = TrustRegion(radius=0.1)
    region.update("better", knobs=4)
    assert region.radius == 0.2
    for _ in range(4):
        region.update("worse", knobs=4)
    assert region.radius == 0.1
    region.update("tie", knobs=4)
    assert region.radius == 0.1 and region.failures == 0
    for _ in range(40):
        region.update("worse", knobs=4)
    assert region.restarts >= 1 and region.radius >= 1 / 64
