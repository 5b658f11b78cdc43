"""The validated config of a study, kept next to its ledger, so that the commands that only
read a study (`status`, `log`, `show`) start without importing pydantic (~0.15 s of CPU).

`overnight.config` stays the one place where `overnight.toml` is validated. After a command
validated the file, its result is written to `.overnight/<name>/config.json` with the
SHA-256 of the file's bytes and the version of the code that validated it; a reading
command whose file has the same bytes uses that result as a read-only view
(`cfg.metric.name`, `cfg.constraints[0].max`) and otherwise validates the file as every
other command does.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from overnight import __version__

CACHE_FILE = "config.json"


class ConfigView:
    """Attribute access to a validated config's values, read-only (the subset of `Config`
    the reading commands use: sections and their keys, plus `path` and `root`)."""

    def __init__(self, data: dict[str, Any], path: Path | None = None,
                 root: Path | None = None) -> None:  # fmt: skip
        self._data = data
        if path is not None:
            self.path, self.root = path, root

    def __getattr__(self, key: str) -> Any:
        try:
            value = self.__dict__["_data"][key]
        except KeyError:
            raise AttributeError(key) from None
        return _view(value)


def _view(value: Any) -> Any:
    if isinstance(value, dict):
        return ConfigView(value)
    if isinstance(value, list):
        return [_view(v) for v in value]
    return value


def _key(raw: bytes) -> str:
    """The file's bytes, and the code that validated them: overnight's version and the
    config module itself (a development checkout changes it without a new version)."""
    code = (Path(__file__).parent.parent / "config.py").stat()
    return f"{__version__}:{code.st_size}:{code.st_mtime_ns}:{hashlib.sha256(raw).hexdigest()}"


def _cache_path(config: Path, raw: bytes, root: Path) -> Path | None:
    """Where the cache of this file lives: under the study it names (None: no such name)."""
    try:
        name = tomllib.loads(raw.decode("utf-8"))["study"]["name"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        return None
    return root / ".overnight" / name / CACHE_FILE


def cached_config(config: Path, root: Path) -> ConfigView | None:
    """The view of `config` when its cache matches the file's bytes exactly, else None."""
    try:
        raw = config.read_bytes()
        cache = _cache_path(config, raw, root)
        if cache is None:
            return None
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != _key(raw) or data.get("path") != str(config.absolute()):
        return None
    return ConfigView(data["config"], config.absolute(), config.absolute().parent)


def save_config(cfg: Any, root: Path) -> None:
    """Remember `cfg` (a validated `Config`) for the next reading command, when its study
    has run before (the state folder exists); best effort, never an error."""
    try:
        raw = Path(cfg.path).read_bytes()
        cache = _cache_path(cfg.path, raw, root)
        if cache is None or not cache.parent.is_dir():
            return
        data = {"key": _key(raw), "path": str(Path(cfg.path).absolute()),
                "config": cfg.model_dump(mode="json")}  # fmt: skip
        tmp = cache.with_name(f".{CACHE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(cache)
    except (OSError, ValueError, TypeError):
        pass
