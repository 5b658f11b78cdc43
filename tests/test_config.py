"""The `overnight.toml` contract: loading, every error message, durations, globs, templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from overnight.cli.templates import render_config, render_program
from overnight.config import Config, config_from_dict, load_config, resolve_surface
from overnight.errors import ConfigError, UsageError
from overnight.values import match_any, parse_duration

BASE = """\
[study]
name = "quickstart"
surface = ["train.py"]
budget = "5m"

[run]
command = "python train.py"

[metric]
name = "val_bpb"
"""

FULL = """\
[study]
name = "full-study_1.0"
instructions = "notes.md"
surface = ["train.py", "src/**/*.py"]
protect = ["data/**"]
budget = "1h30m"

[run]
command = "python train.py"
pass_env = ["WANDB_API_KEY"]

[metric]
name = "val_bpb"
goal = "maximize"
command = "python eval.py"
min_improvement = "0.5%"
repeats = 3
confirm = true
prefer_simpler = true
alpha = 0.1
remeasure_every = 10

[check]
command = "pytest -x -q"

[holdout]
command = "python holdout.py"
name = "holdout_acc"
goal = "minimize"
tolerance = 0.01

[[constraint]]
name = "peak_vram_mb"
max = 70000

[[constraint]]
name = "tokens_per_s"
min = 1000.5

[traces]
prompt_chars = 5000

[proposer]
kind = "llm"
provider = "openai"
model = "gpt-4o"
base_url = "http://localhost:8000/v1"
api_key_env = "MY_KEY"
command = "claude -p"
max_tokens = 4096
temperature = 0.2
timeout = "2m"
max_retries = 2
prices = { "gpt-4o" = [2.5, 10.0] }

[executor]
kind = "ray"
workers = 2
gpus = [0, 1]
address = "ray://head:10001"
num_cpus = 4
num_gpus = 1

[sandbox]
network = false
memory = "8G"
pids = 512
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Error messages name the file relative to the cwd, so tests run from the repo root.
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "overnight.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.study.instructions == "program.md"
    assert cfg.study.protect == [] and cfg.study.budget == 300.0
    assert cfg.study.max_surface == "1M"
    assert cfg.run.pass_env == []
    m = cfg.metric
    assert (m.goal, m.command, m.min_improvement, m.repeats) == ("minimize", "", 0.0, 1)
    assert (m.confirm, m.prefer_simpler, m.alpha, m.remeasure_every) == (False, False, 0.05, 0)
    assert cfg.check.command == "" and cfg.holdout.goal == "maximize" and cfg.holdout.name == ""
    assert cfg.constraints == [] and cfg.traces.prompt_chars == 20000
    p = cfg.proposer
    assert (p.kind, p.provider, p.model, p.base_url, p.api_key_env) == (
        "auto",
        "anthropic",
        "",
        "",
        "",
    )
    assert (p.command, p.max_tokens, p.timeout) == ("", 8192, 300.0)
    assert (p.temperature, p.max_retries, p.prices) == (0.7, 5, {})
    e = cfg.executor
    assert (e.kind, e.workers, e.gpus, e.address) == ("local", 1, [], "")
    assert (e.num_cpus, e.num_gpus) == (1.0, 0.0)
    assert (cfg.sandbox.network, cfg.sandbox.memory, cfg.sandbox.pids) == (True, "auto", 0)
    assert cfg.path == tmp_path / "overnight.toml"
    assert cfg.root == tmp_path


def test_full_config_with_every_section_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.study.name == "full-study_1.0"
    assert cfg.study.surface == ["train.py", "src/**/*.py"]
    assert cfg.study.protect == ["data/**"] and cfg.study.budget == 5400.0
    assert cfg.run.pass_env == ["WANDB_API_KEY"]
    assert cfg.metric.goal == "maximize" and cfg.metric.relative
    assert (cfg.metric.repeats, cfg.metric.alpha, cfg.metric.remeasure_every) == (3, 0.1, 10)
    assert cfg.check.command == "pytest -x -q"
    h = cfg.holdout
    assert (h.command, h.name, h.goal, h.tolerance) == (
        "python holdout.py",
        "holdout_acc",
        "minimize",
        0.01,
    )
    assert [(c.name, c.max, c.min) for c in cfg.constraints] == [
        ("peak_vram_mb", 70000.0, None),
        ("tokens_per_s", None, 1000.5),
    ]
    assert cfg.traces.prompt_chars == 5000
    assert cfg.proposer.provider == "openai" and cfg.proposer.timeout == 120.0
    assert cfg.proposer.prices == {"gpt-4o": [2.5, 10.0]}
    assert cfg.executor.gpus == [0, 1] and cfg.executor.num_cpus == 4.0
    assert (cfg.sandbox.network, cfg.sandbox.memory, cfg.sandbox.pids) == (False, "8G", 512)


def test_single_surface_string_and_plugin_kinds(tmp_path: Path) -> None:
    text = BASE.replace('["train.py"]', '"./train.py"')
    text += '[proposer]\nkind = "my_pkg.props:MyProposer"\n[executor]\nkind = "cluster"\n'
    cfg = load_config(write(tmp_path, text))
    assert cfg.study.surface == ["train.py"]
    assert cfg.proposer.kind == "my_pkg.props:MyProposer" and cfg.executor.kind == "cluster"


DURATIONS = {90: 90, 90.5: 90.5, "90": 90, "90s": 90, "5m": 300, "1h30m": 5400, "1h 30m": 5400}
DURATIONS |= {"2h": 7200, "1m30s": 90, "500ms": 0.5, " 1.5h ": 5400, "1d": 86400, "2M": 120}


@pytest.mark.parametrize(("value", "seconds"), DURATIONS.items())
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "  ", "-5", "-5m", 0, "0s", -1, "soon", "5x", "m", "inf"])
def test_parse_duration_rejects(value: str | float) -> None:
    with pytest.raises(ValueError, match=re.escape("expected a duration like '90s'")):
        parse_duration(value)


def test_parse_duration_rejects_bool() -> None:
    with pytest.raises(ValueError):
        parse_duration(True)


def _set(section: str, line: str) -> str:
    """BASE with `line` added to `[section]` (appended as a new section when absent)."""
    header = f"[{section}]\n"
    if header in BASE:
        return BASE.replace(header, header + line + "\n")
    return BASE + f"\n{header}{line}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            _set("metric", 'goal = "smaller"'),
            'overnight.toml: [metric].goal: expected "minimize" or "maximize", got "smaller"',
        ),
        (
            _set("run", 'comand = "x"'),
            "overnight.toml: [run].comand: unknown key (allowed: command, pass_env)",
        ),
        (
            BASE.replace('"5m"', '"soon"'),
            "overnight.toml: [study].budget: expected a duration like '90s', '5m' or '1h30m', "
            "got 'soon'",
        ),
        (
            BASE.replace('surface = ["train.py"]\n', ""),
            "overnight.toml: [study].surface: missing (required)",
        ),
        (BASE.replace('budget = "5m"\n', ""), "overnight.toml: [study].budget: missing (required)"),
        (BASE.split("[run]")[0], "overnight.toml: [run]: missing (required)"),
        (BASE + "[studdy]\n", "overnight.toml: [studdy]: unknown section (allowed: study, run,"),
        (BASE.replace('name = "val_bpb"', ""), "overnight.toml: [metric].name: missing"),
        (_set("study", "path = 'x'"), "[study].path: unknown key"),
        (BASE.replace("quickstart", "my study"), "[study].name: expected a name of letters"),
        (BASE.replace("quickstart", "a..b"), "[study].name: expected a name"),
        (BASE.replace("quickstart", ""), "[study].name: expected a name"),
        (BASE.replace('["train.py"]', "[]"), "[study].surface: expected at least one file"),
        (BASE.replace('["train.py"]', '["../x.py"]'), "[study].surface: expected paths relative"),
        (BASE.replace('["train.py"]', "[1]"), "[study].surface[0]: expected a string, got 1"),
        (BASE.replace('"5m"', "-3"), "[study].budget: expected a duration"),
        (BASE.replace('"python train.py"', '"  "'), "[run].command: expected a non-empty string"),
        (_set("run", "pass_env = 'X'"), '[run].pass_env: expected an array, got "X"'),
        (_set("metric", "repeats = 0"), "[metric].repeats: expected a number >= 1, got 0"),
        (_set("metric", 'repeats = "2"'), '[metric].repeats: expected an integer, got "2"'),
        (_set("metric", "confirm = 1"), "[metric].confirm: expected true or false, got 1"),
        (_set("metric", "alpha = 1.5"), "[metric].alpha: expected a number < 1"),
        (_set("metric", "alpha = 0"), "[metric].alpha: expected a number > 0"),
        (_set("metric", "remeasure_every = -1"), "[metric].remeasure_every: expected a number >="),
        (_set("metric", 'min_improvement = "lots"'), "[metric].min_improvement: expected a number"),
        (_set("metric", "min_improvement = -1"), "[metric].min_improvement: expected a number"),
        (BASE.replace('"val_bpb"', '"val loss"'), "[metric].name: expected a metric name"),
        (_set("check", "command = 3"), "[check].command: expected a string, got 3"),
        (_set("holdout", 'command = "x"'), "[holdout].name: missing (required when"),
        (_set("holdout", "tolerance = -1"), "[holdout].tolerance: expected a number >= 0"),
        (_set("holdout", 'goal = "up"'), '[holdout].goal: expected "minimize" or "maximize"'),
        (BASE + '[[constraint]]\nname = "v"\n', "[[constraint]][0]: expected max and/or min"),
        (BASE + '[[constraint]]\nname = "v"\nmax = "x"\n', "[[constraint]][0].max: expected a"),
        (
            BASE + '[[constraint]]\nname = "a"\nmax = 1\n[[constraint]]\nmax = 2\n',
            "[[constraint]][1].name: missing (required)",
        ),
        (BASE + '[[constraint]]\nname = "v"\nmin = 2\nmax = 1\n', "expected min <= max"),
        (BASE + "[[constraint]]\nname = 'v'\nmx = 1\n", "[[constraint]][0].mx: unknown key"),
        (BASE + '[constraint]\nname = "v"\n', "[[constraint]]: expected an array of tables"),
        (_set("traces", "prompt_chars = 0"), "[traces].prompt_chars: expected a number > 0"),
        (_set("proposer", 'provider = "gemini"'), '[proposer].provider: expected "anthropic"'),
        (_set("proposer", 'kind = "a b"'), "[proposer].kind: expected a name"),
        (_set("proposer", 'timeout = "later"'), "[proposer].timeout: expected a duration"),
        (_set("proposer", "max_tokens = 0"), "[proposer].max_tokens: expected a number > 0"),
        (_set("proposer", 'prices = { "m" = [1] }'), "[proposer].prices.m: expected [usd per 1M"),
        (_set("proposer", 'prices = { "m" = [1, "a"] }'), "[proposer].prices.m[1]: expected a"),
        (_set("executor", "workers = 0"), "[executor].workers: expected a number >= 1, got 0"),
        (_set("executor", "gpus = [0, 0]"), "[executor].gpus: expected distinct GPU indices"),
        (_set("executor", 'gpus = ["0"]'), "[executor].gpus[0]: expected an integer"),
        (_set("sandbox", 'network = "no"'), '[sandbox].network: expected true or false, got "no"'),
        (_set("sandbox", 'memory = "lots"'), "[sandbox].memory: expected a size like"),
        (_set("sandbox", "pids = -1"), "[sandbox].pids: expected a number >= 0"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith("overnight.toml: ")
    assert expected in message


def test_several_errors_report_the_first_and_a_count(tmp_path: Path) -> None:
    message = error_of(tmp_path, _set("metric", 'goal = "up"\nrepeats = 0'))
    assert message.startswith("overnight.toml: [metric].goal:")
    assert "(and 1 more)" in message


def test_config_error_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Path("overnight.toml"))
    assert str(info.value) == "overnight.toml: not found; run `overnight init` to create one"


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = BASE + "\nthis is not toml\n"
    message = error_of(tmp_path, text)
    assert message.startswith("overnight.toml: invalid TOML")
    assert f"line {text.splitlines().index('this is not toml') + 1}" in message


def test_file_outside_cwd_is_named_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, _set("metric", 'goal = "up"'), "other.toml")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: [metric].goal")):
        load_config(path)


def test_nested_file_is_named_relative_to_cwd(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    path = write(tmp_path, _set("metric", "repeats = 0"), "cfg/o.toml")
    with pytest.raises(ConfigError, match=re.escape("cfg/o.toml: [metric].repeats")):
        load_config(path)
    cfg = load_config(write(tmp_path, BASE, "cfg/ok.toml"))
    assert cfg.root == tmp_path / "cfg" and cfg.path == tmp_path / "cfg" / "ok.toml"


def test_config_from_dict_uses_the_same_messages() -> None:
    data = {"study": {"name": "x", "surface": "a.py", "budget": 1}, "run": {"command": "c"}}
    with pytest.raises(ConfigError, match=r"^o\.toml: \[metric\]: missing \(required\)$"):
        config_from_dict(data, path=Path("o.toml"))
    data["metric"] = {"name": "m"}
    assert isinstance(config_from_dict(data), Config)


def _metric(tmp_path: Path, value: str) -> Config:
    return load_config(write(tmp_path, _set("metric", f"min_improvement = {value}")))


def test_min_improvement_absolute(tmp_path: Path) -> None:
    metric = _metric(tmp_path, "0.01").metric
    assert not metric.relative
    assert metric.threshold(3.0) == pytest.approx(0.01)
    assert metric.threshold(-50.0) == pytest.approx(0.01)
    assert _metric(tmp_path, "2").metric.threshold(1.0) == 2.0


def test_min_improvement_relative(tmp_path: Path) -> None:
    metric = _metric(tmp_path, '"0.5%"').metric
    assert metric.relative and metric.min_improvement == "0.5%"
    assert metric.threshold(200.0) == pytest.approx(1.0)
    assert metric.threshold(-200.0) == pytest.approx(1.0)
    assert metric.threshold(0.0) == 0.0
    assert _metric(tmp_path, '"10 %"').metric.threshold(3.0) == pytest.approx(0.3)


def test_default_min_improvement_requires_any_gain(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE)).metric.threshold(1.23) == 0.0


TEMPLATE_ARGS = dict(name="quickstart", surface=["train.py", "model/*.py"], metric="val_bpb")
TEMPLATE_ARGS |= dict(run='python train.py --tag "a b"', goal="maximize", budget="90s")


def test_rendered_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, render_config(**TEMPLATE_ARGS)))
    assert cfg.study.name == "quickstart"
    assert cfg.study.surface == ["train.py", "model/*.py"]
    assert cfg.run.command == 'python train.py --tag "a b"'
    assert (cfg.metric.name, cfg.metric.goal, cfg.study.budget) == ("val_bpb", "maximize", 90.0)
    assert cfg.check.command == "" and cfg.constraints == []


def test_rendered_config_mentions_every_section_and_key() -> None:
    text = render_config(**TEMPLATE_ARGS)
    for section in ("study", "run", "metric", "check", "holdout", "traces", "proposer"):
        assert f"[{section}]" in text
    assert "[[constraint]]" in text and "[executor]" in text and "[sandbox]" in text
    for model in Config.model_fields.values():
        annotation = model.annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        for key in getattr(inner, "model_fields", {}):
            assert re.search(rf"^#?{key} = ", text, re.M), key


def test_uncommented_config_template_is_valid(tmp_path: Path) -> None:
    # Every optional line must be valid as written, so uncommenting it is all a user does.
    text = render_config(**TEMPLATE_ARGS)
    uncommented = re.sub(r"^#(?=\[|\w+ = )", "", text, flags=re.M)
    cfg = load_config(write(tmp_path, uncommented))
    assert cfg.check.command == "pytest -x -q"
    assert cfg.holdout.name and cfg.constraints[0].max == 70000
    assert cfg.proposer.prices == {"my-model": [3.0, 15.0]}


def test_rendered_program_has_headings_and_values() -> None:
    text = render_program(
        name="quickstart", surface=["train.py"], metric="val_bpb", goal="minimize", budget="5m"
    )
    headings = ["Goal", "What you may change", "What you must not change", "Ideas worth trying"]
    for heading in [*headings, "Things that did not work"]:
        assert f"## {heading}" in text
    assert "`train.py`" in text and "`val_bpb`" in text and "5m" in text and "lower" in text


TRACKED = ["train.py", "README.md", "src/a.py", "src/pkg/b.py", "src/pkg/c.txt", "data/x.bin"]


def test_resolve_surface_globs() -> None:
    assert resolve_surface(["train.py"], TRACKED) == ["train.py"]
    assert resolve_surface(["src/*.py"], TRACKED) == ["src/a.py"]
    assert resolve_surface(["src/**/*.py"], TRACKED) == ["src/a.py", "src/pkg/b.py"]
    assert resolve_surface(["**/*.py"], TRACKED) == ["src/a.py", "src/pkg/b.py", "train.py"]
    assert resolve_surface(["src/pkg"], TRACKED) == ["src/pkg/b.py", "src/pkg/c.txt"]
    both = ["src/a.py", "train.py"]
    assert resolve_surface(["src/?.py", "./src/a.py", "train.py"], TRACKED) == both


def test_resolve_surface_untracked_file(tmp_path: Path) -> None:
    (tmp_path / "new.py").write_text("x = 1\n")
    with pytest.raises(ConfigError) as info:
        resolve_surface(["new.py"], TRACKED, root=tmp_path)
    message = str(info.value)
    assert message.startswith("overnight.toml: [study].surface: `new.py` exists but is not")
    assert "`git add` and commit it first" in message
    with pytest.raises(ConfigError, match="`lib/\\*.py` exists but is not tracked"):
        (tmp_path / "lib").mkdir()
        (tmp_path / "lib" / "m.py").write_text("")
        resolve_surface(["lib/*.py"], TRACKED, root=tmp_path)


def test_resolve_surface_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_surface(["train.py", "nope.py"], TRACKED, "cfg.toml", root=tmp_path)
    assert str(info.value) == "cfg.toml: [study].surface: `nope.py` does not exist"


def test_match_any() -> None:
    assert match_any("data/x.bin", ["data/**"])
    assert match_any("data/deep/x.bin", ["data"])
    assert match_any("data/deep/x.bin", ["data/"])
    assert not match_any("database.py", ["data"])
    assert match_any("a/b/c.py", ["**/c.py"]) and match_any("c.py", ["**/c.py"])
    assert not match_any("src/pkg/b.py", ["src/*.py"])
    assert match_any("src/pkg/b.py", ["src/*/b.py"])
    assert not match_any("train.py", [])
    assert not match_any("Train.py", ["train.py"])
