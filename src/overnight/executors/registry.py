"""Choose the executor: `local`, `ray`, an entry point of group `overnight.executors`, or
`package.module:Class`.

A plug-in is a `BaseExecutor` subclass. When it has a classmethod
`from_config(cfg, workspace, surface, protected, workers)` that builds it; otherwise it is
called without arguments and reads what it needs itself."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from overnight.config import Config
from overnight.errors import UsageError
from overnight.executors.base import BaseExecutor
from overnight.git.workspace import Workspace
from overnight.isolation.integrity import ProtectedFiles

BUILTIN = ("local", "ray")


def _load_class(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"executor {spec!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UsageError(f"executor {spec!r}: {module_name!r} has no {attr!r}") from None


def make_executor(
    kind: str,
    cfg: Config,
    workspace: Workspace,
    surface: list[str],
    protected: ProtectedFiles,
    workers: int | None = None,
    sandbox: Any = None,
) -> BaseExecutor:
    """The executor for `kind` with `workers` slots (default `[executor].workers`).

    `sandbox` (overnight.isolation.sandbox.Sandbox) confines local runs; the ray executor refuses
    one that is switched on rather than run unconfined on the cluster."""
    ex = cfg.executor
    # `gpus = [0, 1]` without `workers` means one slot per GPU.
    slots = workers or (ex.workers if "workers" in ex.model_fields_set or not ex.gpus
                        else len(ex.gpus))  # fmt: skip
    if kind == "local":
        from overnight.executors.local import LocalExecutor

        return LocalExecutor(
            workspace, surface, protected, slots, cfg.executor.gpus, sandbox=sandbox
        )
    if kind == "ray":
        if sandbox:
            raise UsageError(
                f"{cfg.path.name}: [sandbox] confines runs on this machine and is not available "
                'with [executor] kind = "ray"; isolate runs on the cluster side (containers) '
                "or run locally"
            )
        from overnight.executors.ray.executor import RayExecutor

        return RayExecutor.from_config(cfg, workspace, surface, protected, slots)
    if ":" in kind:
        spec = kind
    else:
        found = [ep for ep in entry_points(group="overnight.executors") if ep.name == kind]
        if not found:
            known = ", ".join([*BUILTIN, "package.module:Class"])
            raise UsageError(f"[executor].kind: unknown executor {kind!r} (expected {known})")
        spec = found[0].value
    cls = _load_class(spec)
    if not (isinstance(cls, type) and issubclass(cls, BaseExecutor)):
        raise UsageError(f"executor {spec!r} is not a subclass of overnight BaseExecutor")
    if hasattr(cls, "from_config"):
        return cls.from_config(cfg, workspace, surface, protected, slots)
    return cls()
