"""The `overnight.toml` contract (DESIGN §4.1): pydantic models, durations and clear errors.

Every mistake a user can make in the file surfaces as ONE `ConfigError` that names the file,
the key in TOML form (`[study].budget`, `[[constraint]][0].max`) and what was expected.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from overnight.errors import ConfigError
from overnight.proposers.tune.spec import parse_spec
from overnight.values import in_units, match_any, normalize_pattern, parse_amount, parse_duration

CONFIG_FILE = "overnight.toml"

# The study name becomes the ref component in `overnight/<name>`; git refuses the rest.
_BRANCH_NAME = re.compile(r"^(?!.*\.\.)(?!.*\.lock$)[A-Za-z0-9_][A-Za-z0-9_.-]*(?<!\.)$")
_PLUGIN_KIND = re.compile(r"^[A-Za-z_][\w.-]*(:[A-Za-z_][\w.]*)?$")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*([kmgt]i?b?)?$", re.IGNORECASE)


def _must(ok: Callable[[Any], object], expected: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if not ok(value):  # a falsy result or a failed regex match
            raise ValueError(expected)
        return value

    return AfterValidator(check)


NonBlank = Annotated[str, _must(lambda v: bool(v.strip()), "expected a non-empty string")]
Duration = Annotated[float, BeforeValidator(parse_duration)]
Kind = Annotated[str, _must(_PLUGIN_KIND.match, 'expected a name or "package.module:Class"')]
Goal = Literal["minimize", "maximize"]
_GIT = "expected a name of letters, digits, '-', '_' or '.' (it names a git branch)"
BranchName = Annotated[str, _must(_BRANCH_NAME.match, _GIT)]
_NAME = "expected a metric name without spaces, ':' or '=', e.g. \"val_loss\""
MetricName = Annotated[str, _must(re.compile(r"[^\s:=]+").fullmatch, _NAME)]
_PAIR = "expected [usd per 1M input tokens, usd per 1M output tokens]"
PricePair = Annotated[list[float], _must(lambda v: len(v) == 2 and min(v) >= 0, _PAIR)]
_GPUS = "expected distinct GPU indices >= 0, e.g. [0, 1]"
GpuList = Annotated[
    list[int], _must(lambda v: len(set(v)) == len(v) and min(v, default=0) >= 0, _GPUS)
]
_SIZE = 'expected a size like "8G" or "512M", "auto" (90% of the machine) or "none"'
Size = Annotated[str, _must(lambda v: _MEMORY.match(v.strip()), 'expected a size like "1M"')]
MemorySize = Annotated[str, _must(lambda v: v.strip().lower() in ("", "none", "auto")
                                  or _MEMORY.match(v.strip()), _SIZE)]  # fmt: skip


# pydantic looks for plugins in the entry points of every installed package when it builds
# a model's validator: tens of ms of every command's start in a large environment. The
# models below need none, so plugins are off while they are built (restored after Config).
_PLUGINS_ENV = "PYDANTIC_DISABLE_PLUGINS"
_plugins_setting = os.environ.get(_PLUGINS_ENV)
os.environ[_PLUGINS_ENV] = "__all__"

EDIT_FORMATS = ("search_replace", "whole_file", "json")
_FORMATS = f"expected a non-empty list of distinct names from {', '.join(EDIT_FORMATS)}"
EditFormats = Annotated[
    list[str],
    _must(lambda v: v and len(set(v)) == len(v) and set(v) <= set(EDIT_FORMATS), _FORMATS),
]
# A knob declaration of the tune proposer: "1e-4..0.1 log", "{1, 2, 4}", "pow2", "off", ...
KnobSpecText = Annotated[str, AfterValidator(lambda v: parse_spec(v) and v)]


class _Section(BaseModel):
    # strict: TOML values are typed already, so "2" for an integer is a mistake to report.
    model_config = ConfigDict(extra="forbid", strict=True)


class StudyConfig(_Section):
    name: BranchName
    instructions: str = "program.md"
    surface: Annotated[
        list[str],
        BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
        _must(bool, 'expected at least one file, e.g. ["train.py"]'),
    ]
    protect: list[str] = Field(default_factory=list)
    budget: Duration
    # A proposal's surface may be at most max(this, 4x the current best's) bytes.
    max_surface: Size = "1M"

    @field_validator("surface", "protect")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        out = [normalize_pattern(p) for p in value]
        for norm, given in zip(out, value, strict=True):
            if not norm or norm.startswith("/") or ".." in norm.split("/"):
                raise ValueError(f"expected paths relative to the repo root, got {given!r}")
        return out


class RunConfig(_Section):
    command: NonBlank
    pass_env: list[str] = Field(default_factory=list)


class MetricConfig(_Section):
    name: MetricName
    goal: Goal = "minimize"
    command: str = ""
    min_improvement: float | str = 0.0
    repeats: int = Field(default=1, ge=1)
    confirm: bool = False
    prefer_simpler: bool = False
    alpha: float = Field(default=0.05, gt=0, lt=1)
    remeasure_every: int = Field(default=0, ge=0)

    @field_validator("min_improvement", mode="before")
    @classmethod
    def _improvement(cls, value: Any) -> float | str:
        return parse_amount(value)

    @property
    def relative(self) -> bool:
        return isinstance(self.min_improvement, str)

    def threshold(self, best: float) -> float:
        """The absolute improvement over `best` a candidate needs to count as better."""
        return in_units(self.min_improvement, best)


class CheckConfig(_Section):
    command: str = ""


class HoldoutConfig(_Section):
    command: str = ""
    # validate_default: an empty name is an error only once a command is set.
    name: str = Field(default="", validate_default=True)
    goal: Goal = "maximize"
    tolerance: float = Field(default=0.0, ge=0)
    # Holdout reads allowed per `overnight run` (0: no limit); would-be keeps beyond it are
    # held as `suspect` for the morning instead of reading the holdout again.
    budget: int = Field(default=0, ge=0)

    @field_validator("name")
    @classmethod
    def _name_when_command(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("command", "").strip() and not value.strip():
            raise ValueError("missing (required when [holdout].command is set)")
        return value


class ConstraintConfig(_Section):
    name: NonBlank
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ConstraintConfig:
        if self.max is None and self.min is None:
            raise ValueError("expected max and/or min")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"expected min <= max, got min = {self.min}, max = {self.max}")
        return self


class JudgeConfig(_Section):
    """Checks on the verdicts themselves (docs/trust.md: controls and sentinels)."""

    # Every `controls` experiments, one is the unchanged best resubmitted blind (0: off).
    controls: int = Field(default=0, ge=0)
    # A keep whose runs took less than this share of the baseline's time is `suspect`
    # (0: off; never for a metric whose name says it is a time).
    wall_ratio: float = Field(default=0.1, ge=0, lt=1)
    # A keep whose gain exceeds this (metric units, or "50%" of the best) is `suspect` (0: off).
    max_jump: float | str = 0.0

    @field_validator("controls")
    @classmethod
    def _controls(cls, value: int) -> int:
        if value == 1:
            raise ValueError("expected 0 (off) or a number >= 2 (one control every N experiments)")
        return value

    @field_validator("max_jump", mode="before")
    @classmethod
    def _jump(cls, value: Any) -> float | str:
        return parse_amount(value)

    def jump(self, best: float) -> float:
        """`max_jump` in the metric's units (0: no bound)."""
        return in_units(self.max_jump, best)


class TracesConfig(_Section):
    prompt_chars: int = Field(default=20000, gt=0)


class ProposerConfig(_Section):
    kind: Kind = "auto"
    provider: Literal["anthropic", "openai"] = "anthropic"
    model: str = ""
    base_url: str = ""
    api_key_env: str = ""
    command: str = ""
    resume_command: str = ""  # agent: continues the session `command` started (opt-in)
    max_tokens: int = Field(default=8192, gt=0)
    temperature: float = Field(default=0.7, ge=0)
    timeout: Duration = 300.0
    max_retries: int = Field(default=5, ge=0)
    # model -> [usd per 1M input tokens, usd per 1M output tokens]
    prices: dict[str, PricePair] = Field(default_factory=dict)
    # The model's context window in tokens; 0: ask the server, else a safe default.
    context_tokens: int = Field(default=0, ge=0)
    # Edit formats of the llm proposer, in the order it falls back through them.
    formats: EditFormats = Field(default_factory=lambda: list(EDIT_FORMATS))
    # tune: which knobs it searches (globs on knob names) and how (docs/proposers/tune.md)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    knobs: dict[str, KnobSpecText] = Field(default_factory=dict)


class ExecutorConfig(_Section):
    kind: Kind = "local"
    workers: int = Field(default=1, ge=1)
    gpus: GpuList = Field(default_factory=list)
    address: str = ""
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)


class SandboxConfig(_Section):
    network: bool = True
    memory: MemorySize = "auto"
    pids: int = Field(default=0, ge=0)
    # Host paths hidden from every command but [holdout].command (e.g. holdout labels).
    hide: list[str] = Field(default_factory=list)
    # Paths inside the hidden home/checkout a run may read; suffix ":rw" to allow writes.
    expose: list[str] = Field(default_factory=list)


class StopConfig(_Section):
    """The circuit breakers of an unattended night (experiment/stopping.py); 0 turns one off.
    Counted from the start of each `overnight run`."""

    # Experiments in a row that were not runnable or failed (invalid, rejected, crash, timeout).
    max_failures_in_row: int = Field(default=10, ge=0)
    # Experiments in a row that failed the same way (reason with numbers and paths removed).
    max_same_failure: int = Field(default=5, ge=0)
    # The share of failures over the last `failure_window` experiments that stops the night.
    failure_window: int = Field(default=50, ge=0)
    max_failure_share: float = Field(default=0.9, gt=0, le=1)


class Config(_Section):
    study: StudyConfig
    run: RunConfig
    metric: MetricConfig
    check: CheckConfig = Field(default_factory=CheckConfig)
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)
    constraints: list[ConstraintConfig] = Field(default_factory=list, alias="constraint")
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    traces: TracesConfig = Field(default_factory=TracesConfig)
    proposer: ProposerConfig = Field(default_factory=ProposerConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    stop: StopConfig = Field(default_factory=StopConfig)

    # Private, so that `path` or `root` written in the TOML is still an unknown key.
    _path: Path = PrivateAttr(default_factory=lambda: Path(CONFIG_FILE).absolute())
    _root: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def path(self) -> Path:
        """The config file, absolute."""
        return self._path

    @property
    def root(self) -> Path:
        """The repository root: the config file's directory."""
        return self._root


if _plugins_setting is None:
    del os.environ[_PLUGINS_ENV]
else:
    os.environ[_PLUGINS_ENV] = _plugins_setting


def display_path(path: Path) -> str:
    """`path` relative to the cwd when it lies below it, else absolute: as a user would type it."""
    absolute = Path(path).absolute()
    try:
        return absolute.relative_to(Path.cwd().absolute()).as_posix()
    except ValueError:
        return str(absolute)


def load_config(path: Path) -> Config:
    """Read and validate `path`; every problem becomes one `ConfigError`."""
    path = Path(path)
    name = display_path(path)
    if not path.is_file():
        raise ConfigError(f"{name}: not found; run `overnight init` to create one")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read: {exc}") from None
    return config_from_dict(data, path=path)


def config_from_dict(data: dict[str, Any], *, path: Path = Path(CONFIG_FILE)) -> Config:
    """Validate already-parsed TOML data as if it had been read from `path`."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        # A misspelt key also shows up as the real key "missing": name the typo first.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{display_path(path)}: {_describe(errors[0])}{more}") from None
    cfg._path = Path(path).absolute()
    cfg._root = cfg._path.parent
    return cfg


def _toml_key(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "(top level)"
    key = "[[constraint]]" if loc[0] == "constraint" else f"[{loc[0]}]"
    return key + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the table that holds the unknown key at `loc`."""
    model: Any = Config
    if len(loc) > 1:
        field = next(f for n, f in Config.model_fields.items() if (f.alias or n) == loc[0])
        model = field.annotation
        model = typing.get_args(model)[0] if typing.get_origin(model) is list else model
    return [f.alias or n for n, f in model.model_fields.items()]


def _show(value: Any, quote: str = '"') -> str:
    if isinstance(value, str):
        text = repr(value) if quote == "'" else json.dumps(value, ensure_ascii=False)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = "a table" if isinstance(value, dict) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# pydantic error type minus "_type" -> what TOML value was expected
_TYPES = dict(string="a string", int="an integer", float="a number", bool="true or false")
_TYPES.update(list="an array", dict="a table", model="a table", finite_number="a finite number")
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}
_BOUNDS["less_than_equal"] = "<="


def _describe(error: Any) -> str:
    """One pydantic error as `[section].key: expected ..., got ...`."""
    kind, loc = error["type"], tuple(error["loc"])
    ctx, value, key = error.get("ctx") or {}, error.get("input"), _toml_key(loc)
    if kind == "extra_forbidden":
        what = "section" if len(loc) == 1 and isinstance(value, dict) else "key"
        return f"{key}: unknown {what} (allowed: {', '.join(_allowed_keys(loc))})"
    if kind == "missing":
        return f"{key}: missing (required)"
    if kind == "literal_error":
        expected = re.sub(r"'([^']*)'", r'"\1"', str(ctx.get("expected", "")))
        return f"{key}: expected {expected}, got {_show(value)}"
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
        if "got" not in message and not message.startswith("missing") and type(value) is not dict:
            message += f", got {_show(value, quote=chr(39))}"
        return f"{key}: {message}"
    if kind == "list_type" and loc == ("constraint",):
        return "[[constraint]]: expected an array of tables, each written [[constraint]]"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "")
        return f"{key}: expected a number {_BOUNDS[kind]} {bound}, got {_show(value)}"
    expected = _TYPES.get(kind.removesuffix("_type"))
    return f"{key}: {f'expected {expected}' if expected else error['msg']}, got {_show(value)}"


def resolve_surface(
    patterns: list[str],
    tracked: Iterable[str],
    config_name: str = CONFIG_FILE,
    *,
    root: Path | None = None,
) -> list[str]:
    """The tracked files the surface globs name, sorted; a glob that names none is an error.
    `root` (default: the cwd) is only looked at to explain a miss: untracked or absent."""
    files = sorted({normalize_pattern(t) for t in tracked})
    base = Path.cwd() if root is None else Path(root)
    found: set[str] = set()
    for pattern in patterns:
        hits = [f for f in files if match_any(f, [pattern])]
        if not hits:
            norm = normalize_pattern(pattern)
            why = f"`{norm}` does not exist"
            if norm and not norm.startswith("/") and any(base.glob(norm)):
                why = f"`{norm}` exists but is not tracked by git; `git add` and commit it first"
            raise ConfigError(f"{config_name}: [study].surface: {why}")
        found.update(hits)
    return sorted(found)
