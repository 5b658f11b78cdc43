"""The stand-ins of Claude Code, Codex and Aider accept exactly the options of the real
tools' saved `--help` and refuse others with the real parsers' error text and exit code,
so a recipe the real tool would refuse fails a test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TESTS

sys.path.insert(0, str(TESTS / "support" / "fake_agents"))
import _cli  # noqa: E402

BIN = TESTS / "support" / "fake_agents" / "bin"


def sample(opt: _cli.Option) -> list[str]:
    """The option as a recipe would write it, with a value it accepts."""
    name = opt.names[-1]
    if not opt.value:
        return [name]
    return [name, opt.choices[0] if opt.choices else "x"]


def test_claude_accepts_every_option_of_its_help_and_nothing_else() -> None:
    options = _cli.commander_options(_cli.help_text("claude-2.1.197"))
    names = {n for o in options for n in o.names}
    assert {"-p", "--print", "--permission-mode", "--add-dir", "--allowedTools", "--resume",
            "--session-id", "--bare", "--model"} <= names  # fmt: skip
    assert len(options) > 50
    for opt in options:
        got, _ = _cli.parse_commander(sample(opt), options)
        assert opt.key in got, opt.spec
    with pytest.raises(_cli.CliError) as err:
        _cli.parse_commander(["-p", "--dangerously-skip-permission"], options)
    assert (err.value.message, err.value.code) == (
        "error: unknown option '--dangerously-skip-permission'", 1)
    # Variadic options take values up to the next option; `--opt=value` works too.
    got, rest = _cli.parse_commander(["--add-dir", "/a", "/b", "-p", "--model=m", "hi"], options)
    assert got == {"add-dir": ["/a", "/b"], "print": True, "model": "m"} and rest == ["hi"]


@pytest.mark.parametrize("page", ["codex-0.171.0", "codex-exec-0.171.0",
                                  "codex-exec-resume-0.171.0"])  # fmt: skip
def test_codex_accepts_every_option_of_its_help_and_nothing_else(page: str) -> None:
    text = _cli.help_text(page)
    options = _cli.clap_options(text)
    assert len(options) > 10 and not any("--full-auto" in o.names for o in options)
    for opt in options:
        got, _, _ = _cli.parse_clap(sample(opt), options, _cli.clap_usage(text), 2)
        assert opt.key in got, opt.spec
    with pytest.raises(_cli.CliError) as err:
        _cli.parse_clap(["--full-auto"], options, _cli.clap_usage(text), 2)
    assert err.value.code == 2 and err.value.message.startswith(
        "error: unexpected argument '--full-auto' found\n\n  tip: to pass '--full-auto' as a "
        "value, use '-- --full-auto'\n\nUsage: codex")
    assert err.value.message.endswith("\n\nFor more information, try '--help'.")


def test_aider_accepts_every_option_of_its_help_and_nothing_else() -> None:
    parser = _cli.aider_parser(_cli.help_text("aider-0.86.2"))
    args = parser.parse_args(["--yes-always", "--no-gitignore", "--read", "a", "--read", "b",
                              "--map-refresh", "files", "score.py"])  # fmt: skip
    assert args.yes_always and args.gitignore is False and args.read == ["a", "b"]
    assert args.files == ["score.py"] and args.map_refresh == "files"
    # Every option of the usage synopsis is known (and its aliases).
    text = _cli.help_text("aider-0.86.2")
    synopsis = set(re.findall(r"(?<=[\[ |])(--?[\w-]+)", text.split("\n\n")[0]))
    known = {n for a in parser._actions for n in a.option_strings}
    assert synopsis <= known and len(synopsis) > 150


@pytest.mark.parametrize(("argv", "code", "stderr"), [
    (["claude", "-p", "--bogus"], 1, "error: unknown option '--bogus'\n"),
    (["claude", "-p", "--model"], 1, "error: option '--model <model>' argument missing\n"),
    (["codex", "exec", "--sandbox", "nope", "-"], 2,
     "error: invalid value 'nope' for '--sandbox <SANDBOX_MODE>'\n  [possible values: "
     "read-only, workspace-write, danger-full-access]\n\nFor more information, try '--help'.\n"),
    (["codex", "exec", "a", "b"], 2, "error: unexpected argument 'b' found\n\nUsage: codex exec "
     "[OPTIONS] [PROMPT]\n       codex exec [OPTIONS] <COMMAND> [ARGS]\n\nFor more "
     "information, try '--help'.\n"),
    (["aider", "--yes-always=1"], 2, "aider: error: argument --yes-always: ignored explicit "
     "argument '1'\n"),
    (["aider", "--no-telemetry"], 2, "aider: error: unrecognized arguments: --no-telemetry\n"),
])  # fmt: skip
def test_the_stand_ins_fail_like_the_real_tools(argv: list[str], code: int, stderr: str) -> None:
    done = subprocess.run([sys.executable, str(BIN / argv[0]), *argv[1:]], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == code
    assert done.stderr.endswith(stderr), done.stderr
    if argv[0] == "aider":  # argparse prints the usage first, the real one's exactly
        usage = _cli.help_text("aider-0.86.2").split("\n\n")[0]
        assert done.stderr.startswith(usage + "\naider: error: ")


def test_the_help_pages_are_the_pinned_versions() -> None:
    pages = sorted(p.name for p in Path(_cli.HELP).glob("*.txt"))
    assert pages == ["aider-0.86.2.txt", "claude-2.1.197.txt", "codex-0.171.0.txt",
                     "codex-exec-0.171.0.txt", "codex-exec-resume-0.171.0.txt",
                     "codex-features-0.171.0.txt"]  # fmt: skip
