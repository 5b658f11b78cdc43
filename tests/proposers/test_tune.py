"""The tune proposer and its knob finder: discovery, byte-exact rewrites, search behaviour."""

from __future__ import annotations

import difflib
import json
import math
import re
import statistics
import tomllib

import pytest
import yaml
from optuna.trial import TrialState

from overnight.proposers.base import Context
from overnight.proposers.tune.knobs import apply_values, find_knobs, format_value
from overnight.proposers.tune.tune import NO_KNOBS, TuneProposer
from overnight.store.records import ExperimentRecord

TRAIN = '''"""Toy training script."""
import math

LR = 0.04
HIDDEN = 128
DROPOUT: float = 0.1  # regularisation
WARMUP_STEPS = 100
WEIGHT_DECAY = 0.0
USE_AMP = True
name = "toy"
loss = math.sqrt(2) * LR
'''


def knobs_of(path: str, content: str) -> dict[str, int | float]:
    return {k.name: k.value for k in find_knobs(path, content)}


def changed_lines(old: str, new: str) -> list[str]:
    diff = difflib.ndiff(old.splitlines(), new.splitlines())
    return [line for line in diff if line[:2] in ("- ", "+ ")]


def record(n: int, status: str, value: float | None, meta: dict | None = None) -> ExperimentRecord:
    return ExperimentRecord(n, status, value, {}, None, None, "", "", 1.0, "tune", meta=meta or {})


def context(surface: dict[str, str], history: list[ExperimentRecord], best: int,
            goal: str = "minimize") -> Context:
    values = {r.experiment: r.value for r in history}
    return Context(
        study="s", instructions="", surface=dict(surface), metric="loss", goal=goal,
        budget_s=60.0, best_experiment=best, best_value=values.get(best),
        baseline_value=values.get(0), history=list(history),
    )


# --- knob discovery and rewriting ---------------------------------------------------------

PY = '''"""Doc with NOT_A_KNOB = 3."""
import os

LR = 0.04
HIDDEN = 128
DROPOUT: float = 0.1
OFFSET = -3
BETA_2 = -0.5
SCALE = 1e-3
USE_AMP = True
FLAG: bool = False
lowercase = 5
Mixed_Case = 6
NAME = "model"
PAIR = (1, 2)
A = B = 7
COMPLEX = 1j
EXPR = 2 * 3
MSG = "héllo"; AFTER_UNICODE = 9

if os.environ.get("X"):
    CONDITIONAL = 1

def f():
    INNER = 3

class C:
    CLASS_ATTR = 4
'''


def test_python_knobs_are_module_level_upper_case_numbers_expressions_and_tuples() -> None:
    found = {k.name: (k.value, k.kind, k.text) for k in find_knobs("train.py", PY)}
    assert found == {
        "LR": (0.04, "float", "0.04"),
        "HIDDEN": (128, "int", "128"),
        "DROPOUT": (0.1, "float", "0.1"),
        "OFFSET": (-3, "int", "-3"),
        "BETA_2": (-0.5, "float", "-0.5"),
        "SCALE": (0.001, "float", "1e-3"),
        "AFTER_UNICODE": (9, "int", "9"),
        "EXPR": (6, "int", "2 * 3"),  # constant arithmetic
        "PAIR[0]": (1, "int", "1"),  # each number of a short tuple
        "PAIR[1]": (2, "int", "2"),
    }


def test_python_rewrite_touches_only_the_values() -> None:
    new = apply_values(
        "train.py", PY,
        {"LR": 0.0312345, "DROPOUT": 2, "HIDDEN": 300.4, "BETA_2": -0.25,
         "AFTER_UNICODE": 10, "OFFSET": -3, "SCALE": 0.00003},
    )
    assert changed_lines(PY, new) == [
        "- LR = 0.04", "+ LR = 0.0312",
        "- HIDDEN = 128", "+ HIDDEN = 300",
        "- DROPOUT: float = 0.1", "+ DROPOUT: float = 2.0",
        "- BETA_2 = -0.5", "+ BETA_2 = -0.25",
        "- SCALE = 1e-3", "+ SCALE = 3e-05",
        '- MSG = "héllo"; AFTER_UNICODE = 9', '+ MSG = "héllo"; AFTER_UNICODE = 10',
    ]
    assert knobs_of("train.py", new)["DROPOUT"] == 2.0
    assert isinstance(knobs_of("train.py", new)["DROPOUT"], float)
    # A value equal to the current one keeps its spelling; no change is byte-identical.
    assert apply_values("train.py", PY, {"SCALE": 0.001, "OFFSET": -3}) == PY
    with pytest.raises(KeyError):
        apply_values("train.py", PY, {"lowercase": 1})


def test_crlf_and_unparseable_files() -> None:
    crlf = "X = 1\r\nLR = 0.5\r\n"
    assert apply_values("a.py", crlf, {"LR": 0.25}) == "X = 1\r\nLR = 0.25\r\n"
    assert find_knobs("a.py", "LR = (0.1\n") == []
    assert find_knobs("notes.txt", "LR = 0.1\n") == []
    assert find_knobs("a.toml", "lr = \n") == []
    assert find_knobs("a.json", "{") == []


def test_format_value_is_readable_and_keeps_floats_floats() -> None:
    assert format_value(0.031, "float") == "0.031"
    assert format_value(2.0, "float") == "2.0"
    assert format_value(3e-05, "float") == "3e-05"
    assert format_value(3e-05, "float", "yaml") == "3.0e-05"
    assert format_value(64, "int") == "64"


TOML = """# experiment config
title = "run"   # a string
seed = 1
[optim]
lr = 3e-4       # learning rate
betas = [0.9, 0.95]
"weight decay" = 0.1
schedule = { warmup = 10 }
nesterov = true
[model.size]
layers = 12 # depth
dim.inner = 1_024
when = 1979-05-27
neg = -2.5
doc = '''
fake = 1
'''
[[runs]]
steps = 5
"""


def test_toml_knobs_and_rewrite_keep_comments() -> None:
    found = knobs_of("c.toml", TOML)
    assert found == {
        "seed": 1, "optim.lr": 3e-4, "optim.weight decay": 0.1, "model.size.layers": 12,
        "model.size.dim.inner": 1024, "model.size.neg": -2.5,
    }
    new = apply_values(
        "c.toml", TOML, {"optim.lr": 0.000123456, "model.size.layers": 16, "seed": 2,
                         "model.size.neg": -1.0},
    )
    assert changed_lines(TOML, new) == [
        "- seed = 1", "+ seed = 2",
        "- lr = 3e-4       # learning rate", "+ lr = 0.000123       # learning rate",
        "- layers = 12 # depth", "+ layers = 16 # depth",
        "- neg = -2.5", "+ neg = -1.0",
    ]
    data = tomllib.loads(new)
    assert data["optim"]["lr"] == 0.000123 and data["runs"] == [{"steps": 5}]


JSON = """{
  "optimizer": {"lr": 0.001, "betas": [0.9, 0.999], "amsgrad": false},
  "batch_size": 32,
  "name": "x",
  "layers": [{"width": 64}],
  "offset": -1.5e-2
}
"""


def test_json_knobs_and_rewrite_preserve_formatting() -> None:
    assert knobs_of("c.json", JSON) == {
        "optimizer.lr": 0.001, "batch_size": 32, "offset": -0.015,
    }
    new = apply_values("c.json", JSON, {"optimizer.lr": 0.002, "batch_size": 48})
    assert new == JSON.replace("0.001,", "0.002,").replace("32", "48")
    assert json.loads(new)["optimizer"]["lr"] == 0.002


YAML = """# training
model:
  hidden: 256   # width
  dropout: 0.1
  act: relu
optim:
  lr: 0.0003
  amsgrad: false
  schedule:
    warmup: 100
stages:
  - epochs: 3
  - epochs: 4
notes: |
  fake: 1
seed: 7
"""


def test_yaml_knobs_are_found_by_the_parser_and_rewritten_in_place() -> None:
    assert knobs_of("c.yaml", YAML) == {
        "model.hidden": 256, "model.dropout": 0.1, "optim.lr": 0.0003,
        "optim.schedule.warmup": 100, "seed": 7,
    }
    new = apply_values("c.yml", YAML, {"optim.lr": 0.00003, "model.hidden": 300})
    assert changed_lines(YAML, new) == [
        "-   hidden: 256   # width", "+   hidden: 300   # width",
        "-   lr: 0.0003", "+   lr: 3.0e-05",
    ]
    # PyYAML reads `3e-05` as a string; `3.0e-05` stays a float.
    assert yaml.safe_load(new)["optim"]["lr"] == 3e-05
    assert find_knobs("bad.yaml", "a: [1, 2\nb: 3\n") == []  # unparseable: no knobs


def test_proposals_change_only_knob_lines_without_duplicates() -> None:
    proposer = TuneProposer(seed=3)
    history = [record(0, "keep", 1.0)]
    seen = {tuple(sorted(knobs_of("train.py", TRAIN).items()))}
    for n in range(1, 51):
        proposal = proposer.propose(context({"train.py": TRAIN}, history, best=0))
        assert proposal.invalid_reason is None and proposal.proposer == "tune"
        new = proposal.files["train.py"]
        old_values, new_values = knobs_of("train.py", TRAIN), knobs_of("train.py", new)
        moved = {k for k in old_values if old_values[k] != new_values[k]}
        assert moved and proposal.meta["move"] in ("local", "global")
        assert len(changed_lines(TRAIN, new)) == 2 * len(moved)  # nothing but knob lines
        assert proposal.meta["params"] == new_values
        parts = proposal.description.split(", ")
        assert len(parts) == len(moved)
        for part in parts:
            name, old, new_text = re.fullmatch(r"(\w+) (\S+) → (\S+)", part).groups()
            assert name in moved
            assert float(old) == old_values[name] and float(new_text) == new_values[name]
        key = tuple(sorted(new_values.items()))
        assert key not in seen
        seen.add(key)
        result = record(n, "discard", 2.0 + n, proposal.meta)
        proposer.observe(result)
        history.append(result)
    assert proposer.describe() == (
        "tune (trust region + Optuna multivariate TPE over 5 knobs, seed 3)"
    )


def test_no_knobs_is_an_invalid_proposal() -> None:
    proposer = TuneProposer()
    assert proposer.describe() == "tune (trust region + Optuna multivariate TPE, seed 0)"
    ctx = context({"run.sh": "LR=0.1\n", "x.py": "lr = 0.1\nFLAG = True\n"},
                  [record(0, "keep", 1.0)], best=0)
    proposal = proposer.propose(ctx)
    assert proposal.files == {} and proposal.invalid_reason == NO_KNOBS


def test_negative_and_zero_knobs_stay_in_their_mirrored_ranges() -> None:
    proposer = TuneProposer(seed=1)
    surface = {"a.py": "SHIFT = -0.5\nBIAS = 0.0\nTAPS = -8\n"}
    history = [record(0, "keep", 1.0)]
    for n in range(1, 31):
        proposal = proposer.propose(context(surface, history, best=0))
        values = proposal.meta["params"]
        assert -5.0 <= values["SHIFT"] <= -0.05
        assert 0.0 <= values["BIAS"] <= 1.0 and isinstance(values["BIAS"], float)
        assert -32 <= values["TAPS"] <= -2 and isinstance(values["TAPS"], int)
        history.append(record(n, "discard", 2.0, proposal.meta))


def test_same_name_in_two_files_gets_the_path_prefix() -> None:
    surface = {"a.py": "LR = 0.1\n", "b.toml": "LR = 0.2\n"}
    proposal = TuneProposer().propose(context(surface, [record(0, "keep", 1.0)], best=0))
    assert set(proposal.meta["params"]) == {"a.py:LR", "b.toml:LR"}
    moved_files = {key.split(":")[0] for key in proposal.meta["changed"]}
    assert set(proposal.files) == moved_files
    assert all(proposal.files[path] != surface[path] for path in moved_files)


# --- learning -----------------------------------------------------------------------------

OPTIMUM = {"LR": 0.006, "HIDDEN": 400}


def synthetic_loss(content: str) -> float:
    """A bowl in log(LR) and log(HIDDEN), far from the start; DROPOUT barely matters and
    the other knobs not at all."""
    v = knobs_of("train.py", content)
    return (
        math.log10(v["LR"] / OPTIMUM["LR"]) ** 2
        + 0.5 * math.log2(v["HIDDEN"] / OPTIMUM["HIDDEN"]) ** 2
        + 0.1 * (v["DROPOUT"] - 0.05) ** 2
    )


def greedy_study(proposer: TuneProposer, proposals: int, goal: str = "minimize",
                 history: list[ExperimentRecord] | None = None) -> list[ExperimentRecord]:
    """The loop in miniature: propose, measure, keep if better, observe."""
    sign = 1.0 if goal == "minimize" else -1.0
    history = history or [record(0, "keep", sign * synthetic_loss(TRAIN))]
    kept = [r for r in history if r.status == "keep"][-1]
    best, surface = kept.value, {"train.py": TRAIN}
    if kept.meta:
        surface = {"train.py": apply_values("train.py", TRAIN, kept.meta["params"])}
    for _ in range(proposals):
        n = history[-1].experiment + 1
        proposal = proposer.propose(context(surface, history, kept.experiment, goal))
        value = sign * synthetic_loss(proposal.files["train.py"])
        better = value < best if goal == "minimize" else value > best
        result = record(n, "keep" if better else "discard", value, proposal.meta)
        if better:
            best, kept, surface = value, result, dict(proposal.files)
        proposer.observe(result)
        history.append(result)
    return history


def gap_closed(history: list[ExperimentRecord]) -> float:
    base = abs(history[0].value)
    return (base - min(abs(r.value) for r in history if r.status == "keep")) / base


def test_synthetic_study_improves_for_most_seeds() -> None:
    closed = [gap_closed(greedy_study(TuneProposer(seed=s), 30)) for s in range(8)]
    assert statistics.median(closed) > 0.9  # measured: ~0.99
    assert sum(c > 0.5 for c in closed) >= 7


def test_both_kinds_of_move_from_the_start_and_the_measured_warmup() -> None:
    """By default local steps and joint suggestions both come up from the first proposals.
    The warm-up measured in Q3 (`warmup=True`): joint random draws only until the model
    has its start-up results (the baseline included), then both kinds."""
    moves = [r.meta["move"] for r in greedy_study(TuneProposer(seed=2), 40)[1:]]
    assert {"local", "global"} <= set(moves[:8])
    proposer = TuneProposer(seed=2, warmup=True)
    moves = [r.meta["move"] for r in greedy_study(proposer, 40)[1:]]
    warmup = proposer.n_startup_trials - 1
    assert moves[:warmup] == ["global"] * warmup
    assert {"local", "global"} <= set(moves[warmup:])
    # A fixed share (a measurement) has no warm-up.
    fixed = TuneProposer(seed=2, local_share=1.0, warmup=True)
    assert {r.meta["move"] for r in greedy_study(fixed, 6)[1:]} == {"local"}


def test_maximize_goal_climbs() -> None:
    proposer = TuneProposer(seed=0)
    history = greedy_study(proposer, 20, goal="maximize")
    assert proposer.study.direction.name == "MAXIMIZE"
    assert gap_closed(history) > 0.5


def test_failures_are_told_as_failed_trials() -> None:
    proposer = TuneProposer(seed=0)
    history = [record(0, "keep", 1.0)]
    for n, status in enumerate(["crash", "timeout", "discard"], start=1):
        proposal = proposer.propose(context({"train.py": TRAIN}, history, best=0))
        value = 2.0 if status == "discard" else None
        history.append(record(n, status, value, proposal.meta))
        proposer.observe(history[-1])
    states = [t.state for t in proposer.study.trials]
    assert states.count(TrialState.FAIL) == 2 and states.count(TrialState.COMPLETE) == 2


def test_restart_rebuilds_the_study_from_history() -> None:
    history = greedy_study(TuneProposer(seed=5), 15)
    fresh = TuneProposer(seed=5)
    history = greedy_study(fresh, 10, history=history)
    trials = [t for t in fresh.study.trials if t.state == TrialState.COMPLETE]
    # All 25 proposals and the baseline, each told exactly once.
    assert len(trials) == 26
    told = {round(t.value, 9) for t in trials}
    assert {round(r.value, 9) for r in history} == told
    baseline = [t for t in trials if round(t.value, 9) == round(history[0].value, 9)]
    # HIDDEN = 128 is searched as a power of two: Optuna sees its exponent.
    assert baseline[0].params["LR"] == 0.04 and baseline[0].params["HIDDEN"] == 7
    params = [tuple(sorted(r.meta["params"].items())) for r in history[1:]]
    assert len(set(params)) == len(params)  # the restarted proposer repeated nothing
    before = len(fresh.study.trials)
    fresh.observe(history[-1])
    fresh.propose(context({"train.py": TRAIN}, history, best=0))
    assert len(fresh.study.trials) == before + 1  # only the new ask, no re-told experiment


def test_exhausted_space_says_so_instead_of_repeating() -> None:
    proposer = TuneProposer(seed=0)
    history = [record(0, "keep", 1.0)]
    proposed = []
    for n in range(1, 7):
        proposal = proposer.propose(context({"a.py": "N = 1\n"}, history, best=0))
        if proposal.invalid_reason is None:
            proposed.append(proposal.meta["params"]["N"])
        history.append(record(n, "discard", 2.0, proposal.meta))
        proposer.observe(history[-1])
    assert sorted(proposed) == [2, 3, 4, 5]  # the whole space [1, 5] minus the baseline
    assert "no untried knob values" in proposal.invalid_reason


# --- knob semantics ----------------------------------------------------------------------

SEMANTIC = '''SEED = 1337
LR = 0.04  # tune: 0.01..0.05
TOTAL_BATCH_SIZE = 2**14
DEVICE_BATCH_SIZE = 96  # tune: 8..512, divides TOTAL_BATCH_SIZE
WARMDOWN_RATIO = 0.803
ADAM_BETAS = (0.8, 0.95)
HIDDEN = 256
H100_BF16_PEAK_FLOPS = 989.5e12
'''


def walk(proposer: TuneProposer, surface: dict[str, str], n: int,
         score=lambda params: 1.0) -> list[dict]:  # type: ignore[no-untyped-def]
    """A greedy study of `n` proposals on `surface` (lower `score` is better)."""
    path = next(iter(surface))
    history = [record(0, "keep", score(knobs_of(path, surface[path])))]
    best, out = history[0], []
    for i in range(1, n + 1):
        proposal = proposer.propose(context(surface, history, best.experiment))
        assert proposal.invalid_reason is None, proposal.invalid_reason
        params = knobs_of(path, proposal.files[path])
        out.append(params)
        value = score(params)
        status = "keep" if value < best.value else "discard"
        result = record(i, status, value, proposal.meta)
        if status == "keep":
            best, surface = result, dict(proposal.files)
        proposer.observe(result)
        history.append(result)
    return out


def test_declared_ranges_defaults_and_exclusions_are_respected() -> None:
    proposals = walk(TuneProposer(seed=2), {"train.py": SEMANTIC}, 60,
                     lambda p: abs(p["LR"] - 0.03) + abs(p["WARMDOWN_RATIO"] - 1.0))  # fmt: skip
    for p in proposals:
        assert p["SEED"] == 1337 and p["H100_BF16_PEAK_FLOPS"] == 989.5e12  # left alone
        assert 0.01 <= p["LR"] <= 0.05  # declared in the comment
        assert 0.0 <= p["WARMDOWN_RATIO"] <= 1.0  # a fraction stays one
        assert math.log2(p["TOTAL_BATCH_SIZE"]).is_integer()  # a power of two stays one
        assert math.log2(p["HIDDEN"]).is_integer()
        assert 8 <= p["DEVICE_BATCH_SIZE"] <= 512
        assert p["TOTAL_BATCH_SIZE"] % p["DEVICE_BATCH_SIZE"] == 0  # declared divisor
        assert 0 < p["ADAM_BETAS[0]"] <= 1 and 0 < p["ADAM_BETAS[1]"] <= 1
    moved = {k for p in proposals for k in p if p[k] != knobs_of("train.py", SEMANTIC)[k]}
    assert {"ADAM_BETAS[0]", "ADAM_BETAS[1]", "TOTAL_BATCH_SIZE", "LR"} <= moved


def test_the_rewritten_file_keeps_tuples_and_powers() -> None:
    proposer = TuneProposer(seed=0)
    for p in walk(proposer, {"train.py": SEMANTIC}, 20):
        assert set(p) == set(knobs_of("train.py", SEMANTIC))
    proposal = proposer.propose(context({"train.py": SEMANTIC}, [record(0, "keep", 1.0)], 0))
    text = proposal.files["train.py"]
    assert re.search(r"^ADAM_BETAS = \(\S+, \S+\)$", text, re.M)
    assert re.search(r"^TOTAL_BATCH_SIZE = 2\*\*\d+$", text, re.M)


def test_config_include_exclude_and_knob_specs() -> None:
    class Section:
        include = ["LR", "HIDDEN", "SEED"]
        exclude = ["HIDDEN"]
        knobs = {"LR": "0.02..0.03", "SEED": "{1, 2, 3}"}

    class Cfg:
        proposer = Section()

    proposals = walk(TuneProposer(seed=1, config=Cfg()), {"train.py": SEMANTIC}, 25)
    base = knobs_of("train.py", SEMANTIC)
    for p in proposals:
        assert {k for k in p if p[k] != base[k]} <= {"LR", "SEED"}
        assert 0.02 <= p["LR"] <= 0.03 and p["SEED"] in (1, 2, 3, 1337)


def test_a_bad_comment_spec_is_an_invalid_proposal_with_the_reason() -> None:
    surface = {"train.py": "LR = 0.1  # tune: 1..2 lgo\n"}
    proposal = TuneProposer().propose(context(surface, [record(0, "keep", 1.0)], 0))
    assert proposal.invalid_reason == (
        "train.py: LR: tune: unknown word 'lgo': expected words like 1e-4..0.1 (a range),"
        " {1, 2, 4} (a choice), log, linear, pow2, int, off, on or divides NAME"
    )


def test_every_knob_excluded_says_so() -> None:
    surface = {"train.py": "SEED = 1\nLR = 0.1  # tune: off\n"}
    proposal = TuneProposer().propose(context(surface, [record(0, "keep", 1.0)], 0))
    assert "every knob is excluded" in proposal.invalid_reason


def test_an_optimum_past_the_default_range_is_reached() -> None:
    """LR's default range is 0.004..0.4; the optimum is at 3.0, past its edge."""
    proposals = walk(TuneProposer(seed=4), {"a.py": "LR = 0.04\nB = 1.0\n"}, 60,
                     lambda p: abs(math.log(p["LR"] / 3.0)) + abs(math.log(p["B"])))  # fmt: skip
    assert max(p["LR"] for p in proposals) > 1.0


# --- one consistent history ---------------------------------------------------------------


def test_a_rebased_proposal_is_told_to_its_own_trial() -> None:
    """Run-ahead: B is proposed on experiment 0, A is kept meanwhile, the loop re-bases B
    onto A. B's result goes to B's trial, with the values B actually measured."""
    proposer = TuneProposer(seed=0, local_share=1.0)
    surface = {"train.py": TRAIN}
    history = [record(0, "keep", 5.0)]
    a = proposer.propose(context(surface, history, 0))
    b = proposer.propose(context(surface, history, 0))  # made before A's result
    history.append(record(1, "keep", 4.0, a.meta))
    proposer.observe(history[-1])
    files = proposer.rebase(b, dict(a.files))
    measured = knobs_of("train.py", files["train.py"])
    assert b.meta["params"] == measured  # what the rebase now records
    history.append(record(2, "discard", 4.5, b.meta))
    proposer.observe(history[-1])
    trials = proposer.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # baseline, A, B: no leak
    told_b = trials[-1]
    space = proposer._spaces
    assert {k: space[k].value(v) for k, v in told_b.params.items()} == {
        k: v for k, v in measured.items() if k in space
    }
    assert told_b.value == 4.5
    nxt = proposer.propose(context(dict(a.files), history, 1))
    assert nxt.invalid_reason is None
    assert len(proposer.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) == 1


def test_a_tie_moves_the_centre_of_local_moves() -> None:
    """A count metric: a discard that ties the best becomes the centre (a plateau move)."""
    surface = {"a.py": "A = 1.0\nB = 1.0\nC = 1.0\nD = 1.0\n"}
    proposer = TuneProposer(seed=1, local_share=1.0)
    history = [record(0, "keep", 3.0)]
    tie = proposer.propose(context(surface, history, 0))
    point = dict(tie.meta["params"], A=2.0, B=2.0, C=2.0, D=2.0)
    history.append(record(1, "discard", 3.0, dict(tie.meta, params=point)))
    proposer.observe(history[-1])
    for _ in range(5):
        nxt = proposer.propose(context(surface, history, 0)).meta["params"]
        assert sum(v == 2.0 for v in nxt.values()) >= 1  # unmoved knobs: the tie's values
        assert sum(v == 1.0 for v in nxt.values()) == 0
