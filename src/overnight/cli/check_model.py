"""`overnight check-model`: probe the configured model before a night starts."""

from __future__ import annotations

from typing import Annotated

import typer

from overnight.cli.common import ConfigOpt, JsonOpt, emit_json, open_study
from overnight.errors import UsageError


def check_model(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    formats: Annotated[
        str,
        typer.Option(help="Edit formats to try, comma-separated (default: all three)."),
    ] = "search_replace,whole_file,json",
) -> None:
    """Probe the proposer's model: context size, speed, which edit formats it can produce,
    and the settings to use. Sends a few requests; changes nothing."""
    from overnight.config import EDIT_FORMATS, resolve_surface
    from overnight.proposers.llm.check import check_model as probe
    from overnight.proposers.llm.check import probe_context, render
    from overnight.proposers.llm.llm import LLMProposer

    names = tuple(f.strip() for f in formats.split(",") if f.strip())
    unknown = [n for n in names if n not in EDIT_FORMATS]
    if unknown or not names:
        raise UsageError(f"--formats: expected names from {', '.join(EDIT_FORMATS)}, "
                         f"got {formats!r}")  # fmt: skip
    study = open_study(config)
    cfg = study.cfg
    tracked = study.ws.tracked_files("HEAD")
    paths = resolve_surface(cfg.study.surface, tracked, cfg.path.name, root=study.root)
    surface = {p: (study.root / p).read_text() for p in paths}
    instructions_path = study.root / cfg.study.instructions
    instructions = instructions_path.read_text() if instructions_path.is_file() else ""
    llm = LLMProposer(config=cfg)
    try:
        report = probe(llm, probe_context(cfg, surface, instructions), names)
    finally:
        llm.close()
    if as_json:
        emit_json(report.as_dict())
    else:
        typer.echo(render(report))
    if report.error:
        raise SystemExit(1)
