"""The `overnight` command line (typer). The modules that declare commands (common, run,
inspect, serve, review) do not use `from __future__ import annotations`: typer reads every
command's signature at each start, and evaluating string annotations costs ~10 ms of it."""
