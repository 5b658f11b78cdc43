"""Starter files written by `overnight init`: a commented `overnight.toml` and `program.md`.

The config template shows every section of the contract (DESIGN §4.1) so users discover the
options by reading the file; optional ones are commented out (`#key = value`, no space after
`#`) so that uncommenting a line is all it takes to turn it on.
"""

from __future__ import annotations

import json


def _q(value: str) -> str:
    """A TOML basic string: JSON's escapes are a subset of TOML's."""
    return json.dumps(value, ensure_ascii=False)


def _array(values: list[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def render_config(
    *, name: str, surface: list[str], run: str, metric: str, goal: str, budget: str
) -> str:
    """The text of a commented `overnight.toml` with the given triplet filled in."""
    return f"""\
# overnight.toml: one study = one surface, one metric, one fixed budget per run.
# Durations are written like "90s", "5m" or "1h30m". Lines starting with "#key" or "#[" are
# optional settings (defaults, or examples where the default is empty); remove the "#" to use.

[study]
name = {_q(name)}
# Plain-English guidance for the proposer: what to try, what to leave alone.
instructions = "program.md"
# The only files a proposal may change (globs allowed). Everything else tracked is locked.
surface = {_array(surface)}
# Extra untracked paths that must stay byte-identical after every run (e.g. datasets).
protect = []
# Wall-clock limit of one run; the whole process tree is killed when it is exceeded.
budget = {_q(budget)}
# A proposal whose surface is larger than max(this, 4x the current best's) is invalid.
max_surface = "1M"

[run]
# The experiment, run in the candidate's worktree; it prints "{metric}: <number>".
command = {_q(run)}
# Variables whose names look secret (KEY, TOKEN, ...) are withheld unless listed here.
pass_env = []

[metric]
name = {_q(metric)}
goal = {_q(goal)}
# Optional trusted evaluator run after [run]; the metric is then read from ITS stdout only.
# It sees the candidate commit, the protected files and $OVERNIGHT_ARTIFACT_DIR: nothing
# else the run left in the worktree.
command = ""
# Required gain over the best: an absolute number, or a relative one like "0.5%".
min_improvement = 0
# Runs per candidate; with more than one, noise is taken into account.
repeats = 1
# Re-run a would-be keep once more before keeping it.
confirm = false
# Keep a change that is not worse within noise and makes the surface shorter.
prefer_simpler = false
# Significance level of the noise-aware comparison when repeats > 1.
#alpha = 0.05
# Re-measure the best every N experiments to track drift (0: never).
#remeasure_every = 0

# A cheap gate (tests, lint) run before the metric run; it must exit 0.
#[check]
#command = "pytest -x -q"

# A second metric the proposer never sees, run on would-be keeps; it must not regress.
#[holdout]
#command = "python eval_holdout.py"
#name = "holdout_accuracy"
#goal = "maximize"
#tolerance = 0
#budget = 0                    # holdout runs allowed per night (0: no limit); then keeps are held

# Checks on the verdicts (docs/trust.md): a live false-keep rate and implausibility sentinels.
#[judge]
#controls = 0                  # every N experiments, one is the unchanged best resubmitted blind
#wall_ratio = 0.1              # a keep whose runs took < this share of the baseline's is held
#max_jump = 0                  # a keep gaining more than this (or "50%") is held (0: no bound)

# A secondary metric that must stay in range (max and/or min); repeat the block for more.
#[[constraint]]
#name = "peak_vram_mb"
#max = 70000
#min = 0

# How much of the runs' traces (files under $OVERNIGHT_TRACE_DIR) the proposer reads.
#[traces]
#prompt_chars = 20000

# Who invents the changes: auto | llm | agent | tune | "package.module:Class".
#[proposer]
#kind = "auto"
#provider = "anthropic"
#model = ""
#base_url = ""
#api_key_env = ""
#command = ""
#resume_command = ""
#max_tokens = 8192
#temperature = 0.7
#timeout = "5m"
#max_retries = 5
#prices = {{ "my-model" = [3.0, 15.0] }}
#context_tokens = 0            # llm: the model's context window (0: ask the server)
#formats = ["search_replace", "whole_file", "json"]   # llm: `overnight check-model` suggests
# tune (no model): which knobs it searches (globs; *SEED* is left alone unless included) and
# how; the same words work in a comment on the knob's own line: `LR = 0.04  # tune: 1e-4..0.1`
#include = []                 # only these knobs
#exclude = []                 # never these, e.g. ["*_PEAK_FLOPS", "EVAL_*"]
#knobs = {{ LR = "1e-4..0.1 log", BATCH = "pow2, divides TOTAL_BATCH", DROPOUT = "0..0.5" }}

# Where runs happen: local slots (one GPU each via `gpus`) or a ray cluster.
#[executor]
#kind = "local"
#workers = 1
#gpus = []
#address = ""
#num_cpus = 1
#num_gpus = 0

# Isolation of runs; network = false makes overnight refuse to run without a sandbox.
#[sandbox]
#network = true
#memory = "auto"               # a run's processes may hold 90% of RAM; "8G"; "none"
#pids = 0
#hide = []                     # paths hidden from runs (holdout labels); [holdout] sees them
#expose = []                   # paths in your home a run may read ("~/.cache/x", ":rw" to write)

# Circuit breakers: a night that goes wrong stops by itself (exit code 3) with the reason
# and what to fix, instead of filling the ledger with failures. 0 turns one off. A failure
# is an invalid, rejected, crash or timeout experiment; counted from each `overnight run`.
# (A proposer that can propose nothing at all, e.g. tune without knobs, always stops it.)
#[stop]
#max_failures_in_row = 10      # failures in a row
#max_same_failure = 5          # failures in a row with the same reason (numbers, paths aside)
#failure_window = 50           # over the last 50 experiments...
#max_failure_share = 0.9       # ...this share of failures
"""


def render_program(*, name: str, surface: list[str], metric: str, goal: str, budget: str) -> str:
    """The text of a `program.md` the user completes with guidance for the proposer."""
    files = ", ".join(f"`{s}`" for s in surface)
    direction = "lower" if goal == "minimize" else "higher"
    return f"""\
# {name}

Guidance for the proposer of this study. Each experiment changes {files}, runs for at most
{budget}, and is kept only if `{metric}` gets {direction}. Replace every line in angle
brackets; keep it short and concrete.

## Goal

Make `{metric}` as {direction} as possible ({goal}) within the fixed budget of {budget} per run.
<What does the code do, and what does a better `{metric}` mean for it?>

## What you may change

Only {files}. <Which parts are fair game: hyper-parameters, architecture, algorithms, ...>

## What you must not change

- Anything outside {files}: the evaluation, the data and every other file are locked.
- The way `{metric}` is computed or printed.
- <Anything else that must stay fixed: interfaces, output format, dependencies, ...>

## Ideas worth trying

- <An idea you have not had time to test>
- <A paper, trick or setting that might help>

## Things that did not work

- <Something already tried, and why it failed, so it is not proposed again>
"""
