"""What every command that runs the experiment needs before its first run: the surface, the
locked files, the sandbox (refusing when it was asked for and cannot work), the runs'
environment and the marker that finds a run's processes again. One place, used by the loop
and by `finish --ablate`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from overnight.config import resolve_surface
from overnight.isolation import secrets
from overnight.isolation.integrity import ProtectedFiles
from overnight.isolation.redact import run_environment
from overnight.isolation.sandbox import Sandbox
from overnight.store.study import Study


@dataclass
class RunSetup:
    surface: list[str]
    protected: ProtectedFiles
    sandbox: Sandbox
    base_env: dict[str, str]
    marker_prefix: str  # overnight:<repo digest>:<study>


def marker_prefix(study: Study) -> str:
    digest = hashlib.sha1(str(study.root).encode()).hexdigest()[:10]
    return f"overnight:{digest}:{study.name}"


def prepare_runs(study: Study, start_commit: str) -> RunSetup:
    """Validate and gather; raises UsageError (nothing written) on a bad study."""
    cfg = study.cfg
    tracked = study.ws.tracked_files(start_commit)
    surface = resolve_surface(cfg.study.surface, tracked, cfg.path.name, root=study.root)
    protected = ProtectedFiles(study.root, cfg.study.protect, tracked)
    # The same isolation for every run of a study: numbers measured under other conditions
    # would not be comparable, and `network = false` is a promise, not a preference.
    # The environment the controller started with: a sealed `pass_env` secret still reaches
    # the runs that were given it.
    environ = secrets.environ()
    sandbox = Sandbox(cfg.sandbox, study.root, environ)
    sandbox.check()
    return RunSetup(surface, protected, sandbox, run_environment(cfg, environ),
                    marker_prefix(study))  # fmt: skip
