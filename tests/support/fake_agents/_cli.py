"""Command-line parsing of the stand-ins for Claude Code, Codex and Aider, built from the
real tools' own `--help` output (help/*.txt, saved from the versions the recipes were
verified with) so that the stand-ins accept exactly the options the real ones accept and
refuse everything else with the same error text and exit code:

- Claude Code parses with commander.js: `error: unknown option '--x'`, exit 1;
- Codex parses with clap: `error: unexpected argument '--x' found` (with a tip, the usage
  and `For more information, try '--help'.`), exit 2;
- Aider parses with Python's argparse: `aider: error: unrecognized arguments: --x` after the
  usage, exit 2 (here by argparse itself).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

HELP = Path(__file__).resolve().parent / "help"
VERSIONS = {"claude": "2.1.197", "codex": "0.171.0", "aider": "0.86.2"}


def help_text(name: str) -> str:
    return (HELP / f"{name}.txt").read_text()


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclass
class Option:
    names: list[str]
    spec: str  # as the help writes it, e.g. "--model <model>" or "-s, --sandbox <SANDBOX_MODE>"
    value: bool = False  # takes a value
    optional: bool = False  # the value may be left out (commander's `[value]`)
    many: bool = False  # takes values up to the next option (`<x...>`)
    choices: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return max(self.names, key=len).lstrip("-")


def _option_blocks(text: str, section: str, end: str) -> list[tuple[str, str]]:
    """(option line, its description, joined) of one section of a help text."""
    body = text.split(f"\n{section}\n", 1)[1].split(f"\n{end}", 1)[0]
    blocks: list[tuple[str, str]] = []
    for line in body.splitlines():
        if re.match(r"^ {2,6}-", line):
            head, _, desc = line.strip().partition("  ")
            blocks.append((head.strip(), desc.strip()))
        elif blocks and line.strip():
            blocks[-1] = (blocks[-1][0], f"{blocks[-1][1]} {line.strip()}")
    return blocks


# --- Claude Code (commander.js) ------------------------------------------------------------


def commander_options(text: str) -> list[Option]:
    options = []
    for head, desc in _option_blocks(text, "Options:", "Commands:"):
        names = re.findall(r"(?<![\w<\[])(--?[\w-]+)", head.split("<")[0].split("[")[0])
        m = re.search(r"([<\[])[^>\]]*?(\.\.\.)?[>\]]", head)
        choices = re.search(r"\(choices: ([^)]*)\)", desc)
        options.append(Option(
            names, head, value=m is not None, optional=bool(m and m.group(1) == "["),
            many=bool(m and m.group(2)),
            choices=re.findall(r'"([^"]*)"', choices.group(1)) if choices else [],
        ))  # fmt: skip
    return options


def parse_commander(argv: list[str], options: list[Option]) -> tuple[dict, list[str]]:
    by_name = {n: o for o in options for n in o.names}
    got: dict[str, object] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        opt = by_name.get(name if name.startswith("--") else arg)
        if opt is None:
            raise CliError(f"error: unknown option '{arg}'", 1)
        if not opt.value:
            got[opt.key] = True
            continue
        values = [inline] if eq else []
        while (not values or opt.many) and i < len(argv) and not argv[i].startswith("-"):
            values.append(argv[i])
            i += 1
        if not values and not opt.optional:
            raise CliError(f"error: option '{opt.spec}' argument missing", 1)
        for v in values:
            if opt.choices and v not in opt.choices:
                raise CliError(f"error: option '{opt.spec}' argument '{v}' is invalid. Allowed "
                               f"choices are {', '.join(opt.choices)}.", 1)  # fmt: skip
        got[opt.key] = values if opt.many else (values[0] if values else True)
    return got, rest


# --- Codex (clap) --------------------------------------------------------------------------


def clap_options(text: str) -> list[Option]:
    options = []
    for head, desc in _option_blocks(text, "Options:", "\n\n\n"):
        names = re.findall(r"(--?[\w-]+)", head.split("<")[0])
        m = re.search(r"<([^>]*)>(\.\.\.)?", head)
        choices = re.search(r"\[possible values: ([^\]]*)\]", desc)
        options.append(Option(
            names, f"{names[-1]} <{m.group(1)}>" if m else names[-1], value=m is not None,
            many=bool(m and m.group(2)),
            choices=[c.strip() for c in choices.group(1).split(",")] if choices else [],
        ))  # fmt: skip
    if "  -h, --help" in text and not any("--help" in o.names for o in options):
        options.append(Option(["-h", "--help"], "--help"))
    return options


def clap_usage(text: str) -> str:
    usage = text.split("Usage: ", 1)[1].split("\n\n", 1)[0]
    return f"Usage: {usage}"


def _clap_error(message: str, usage: str | None = None) -> CliError:
    tail = f"\n\n{usage}" if usage else ""
    return CliError(f"error: {message}{tail}\n\nFor more information, try '--help'.", 2)


def parse_clap(
    argv: list[str], options: list[Option], usage: str, positionals: int,
    commands: tuple[str, ...] = (),
) -> tuple[dict, list[str], list[str]]:  # fmt: skip
    """(options, positionals, the arguments from a subcommand's name on)."""
    by_name = {n: o for o in options for n in o.names}
    got: dict[str, object] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            rest += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            if not rest and arg in commands:
                return got, rest, argv[i - 1 :]
            rest.append(arg)
            if len(rest) > positionals:
                raise _clap_error(f"unexpected argument '{arg}' found", usage)
            continue
        name, eq, inline = arg.partition("=")
        opt = by_name.get(name)
        if opt is None:
            raise _clap_error(f"unexpected argument '{arg}' found\n\n  tip: to pass '{arg}' "
                              f"as a value, use '-- {arg}'", usage)  # fmt: skip
        if not opt.value:
            got[opt.key] = True
            continue
        possible = f"\n  [possible values: {', '.join(opt.choices)}]" if opt.choices else ""
        if eq:
            value = inline
        elif i < len(argv) and not argv[i].startswith("-"):
            value = argv[i]
            i += 1
        else:
            raise _clap_error(f"a value is required for '{opt.spec}' but none was "
                              f"supplied{possible}")  # fmt: skip
        if opt.choices and value not in opt.choices:
            raise _clap_error(f"invalid value '{value}' for '{opt.spec}'{possible}")
        previous = got.get(opt.key)
        got[opt.key] = [*previous, value] if isinstance(previous, list) else [value]
    return got, rest, []


# --- Aider (argparse) ----------------------------------------------------------------------


def aider_parser(text: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aider", add_help=False)
    for head, _ in _option_blocks(text, "options:", "\n\n\n"):
        parts = [p.strip() for p in head.split(", ")]
        names = [p.split()[0] for p in parts]
        metavar = parts[0].split()[1] if len(parts[0].split()) > 1 else None
        if names == ["-h", "--help"]:
            parser.add_argument(*names, action="help")
        elif metavar is None and len(names) % 2 == 0 and all(
            "--no-" + n[2:] in names for n in names[::2]
        ):  # `--x, --no-x[, --y, --no-y]`: a switch with aliases
            parser.add_argument(*names[::2], action=argparse.BooleanOptionalAction, default=None)
        elif metavar is None:
            parser.add_argument(*names, action="store_true")
        elif metavar.startswith("{"):
            parser.add_argument(*names, choices=metavar.strip("{}").split(","))
        else:
            parser.add_argument(*names, metavar=metavar, action="append")
    parser.add_argument("files", nargs="*", metavar="FILE")
    return parser


def fail(error: CliError) -> None:
    print(error.message, file=sys.stderr)
    sys.exit(error.code)
