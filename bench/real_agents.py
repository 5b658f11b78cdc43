"""The agent recipes of docs/proposers/agent.md, verified with the real CLIs (optional; not
run in CI, and skipped for a tool that is not installed).

For each of Claude Code, Codex and Aider found on PATH:

1. its `--help` is compared with the page the test stand-ins were built from
   (tests/support/fake_agents/help/), so a changed command line shows up;
2. a study on the autoresearch stand-in (tests/support/autoresearch_standin/, metric
   val_bpb) runs `overnight run` with the recipe as the doc writes it, against the model stub
   of tests/support/fake_llm.py, behind which bench/agent_brain.py makes one edit per call
   (MATRIX_LR up by 0.004, towards the stand-in's optimum at 0.06) through the tool's own
   tools;
3. `overnight run` runs under `strace -f -e trace=connect`: every connection the tool
   opens other than to the stub (127.0.0.1) is listed;
4. a recipe passes when every experiment was measured (keep or discard) and at least one
   kept, each with a description that names its change, and nothing but the stub was
   contacted.

With `--sessions`, each tool also runs its session recipe (`resume_command`) and the tokens
the stub received are compared with the plain recipe's: input tokens, the part a prefix
cache would serve, output tokens, and a cost at list prices of a Sonnet-class model
($3 / M input, $0.30 / M cached input, $15 / M output).

    PATH=~/agents/node_modules/.bin:~/agents/aider/bin:$PATH \\
        python bench/real_agents.py [--tools claude,codex,aider] [-n 3] [--sessions]

What the tools need to reach the stub is set outside the recipe: Claude Code gets
ANTHROPIC_BASE_URL and a key (`api_key_env = "ANTHROPIC_API_KEY"`); Codex gets a CODEX_HOME
whose config.toml names the stub as a `wire_api = "responses"` provider; Aider gets
OPENAI_API_BASE and, appended to the recipe as the doc says ("add --model … as usual"),
`--model openai/stub --edit-format diff --model-metadata-file …`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent / "tests"),
                str(_HERE.parent / "tests" / "support" / "fake_agents")]  # fmt: skip
import _cli  # noqa: E402
from agent_brain import KnobAgent  # noqa: E402
from common import ROOT, git, overnight_env, table  # noqa: E402
from support.fake_llm import FakeLLM  # noqa: E402

DOC = ROOT / "docs" / "proposers" / "agent.md"
STANDIN = ROOT / "tests" / "support" / "autoresearch_standin"
TOOLS = {"claude": "Claude Code", "codex": "Codex", "aider": "Aider"}
HELP_PAGES = {
    "claude": [("claude-2.1.197", ["--help"])],
    "codex": [("codex-0.171.0", ["--help"]), ("codex-exec-0.171.0", ["exec", "--help"]),
              ("codex-exec-resume-0.171.0", ["exec", "resume", "--help"])],
    "aider": [("aider-0.86.2", ["--help"])],
}  # fmt: skip
PRICES = (3.0, 0.30, 15.0)  # USD per 1M: uncached input, cached input, output
STUB_KEY = "bench-stub-not-a-key"
CONNECT = re.compile(r'connect\(\d+, \{sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), '
                     r'(?:sin_addr=inet_addr|inet_pton\(AF_INET6, )\("([^"]+)"')  # fmt: skip


def recipes() -> dict[str, dict[str, str]]:
    """tool -> {"command": …, "resume_command": …} as docs/proposers/agent.md writes them."""
    text = DOC.read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    found: dict[str, dict[str, str]] = {t: {} for t in TOOLS}
    for tool, title in TOOLS.items():
        section = text.split(f"### {title}\n", 1)[1]
        block = re.search(r"```toml\n(.*?)```", section, re.S)
        assert block, title
        found[tool]["plain"] = tomllib.loads(block.group(1))["proposer"]["command"]
    for block in blocks:
        head = block.splitlines()[0]
        for tool, title in TOOLS.items():
            if head.startswith(f"# {title}"):
                data = tomllib.loads(block)
                found[tool]["command"] = data["command"]
                found[tool]["resume_command"] = data["resume_command"]
    return found


def _names(page: str, text: str) -> set[str]:
    """The option names a help page lists, read as the stand-ins read it."""
    if page.startswith("claude"):
        return {n for o in _cli.commander_options(text) for n in o.names}
    if page.startswith("codex"):
        return {n for o in _cli.clap_options(text) for n in o.names}
    return {n for a in _cli.aider_parser(text)._actions for n in a.option_strings}


def help_drift(tool: str) -> list[str]:
    """The saved help pages whose options differ from the installed tool's `--help` (the
    wrapping and the defaults shown depend on the terminal and the directory)."""
    drift = []
    for page, argv in HELP_PAGES[tool]:
        out = subprocess.run([tool, *argv], capture_output=True, text=True, timeout=60).stdout
        if _names(page, out) != _names(page, _cli.help_text(page)):
            drift.append(page)
    return drift


def version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60)
    return (out.stdout.strip() or out.stderr.strip()).splitlines()[-1]


def study(root: Path, tool: str, command: str, resume: str, instructions: Path | None) -> Path:
    repo = root / "repo"
    shutil.copytree(STANDIN, repo, ignore=shutil.ignore_patterns("__pycache__"))
    if instructions is not None:
        shutil.copy(instructions, repo / "program.md")
    key = {"claude": "ANTHROPIC_API_KEY", "codex": "BENCH_STUB_KEY", "aider": "OPENAI_API_KEY"}
    if tool == "aider":
        meta = root / "model-metadata.json"
        meta.write_text(json.dumps({"openai/stub": {
            "max_input_tokens": 128000, "max_output_tokens": 8192, "litellm_provider": "openai",
            "input_cost_per_token": 3e-6, "output_cost_per_token": 1.5e-5, "mode": "chat"}}))
        extra = f" --model openai/stub --edit-format diff --model-metadata-file {meta}"
        command, resume = command + extra, resume + extra if resume else ""
    toml = [
        '[study]\nname = "bench"\ninstructions = "program.md"\nsurface = ["train.py"]',
        'budget = "60s"\n\n[run]\ncommand = "python train.py"',
        '[metric]\nname = "val_bpb"\ngoal = "minimize"',
        f'[proposer]\nkind = "agent"\napi_key_env = "{key[tool]}"\ntimeout = "5m"',
        f"command = {json.dumps(command)}",
    ]
    if resume:
        toml.append(f"resume_command = {json.dumps(resume)}")
    (repo / "overnight.toml").write_text("\n".join(toml) + "\n")
    git(repo, "init", "-q", "-b", "master")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "autoresearch stand-in")
    return repo


def tool_env(root: Path, tool: str, stub: FakeLLM) -> dict[str, str]:
    home = root / "home"
    home.mkdir()
    env = {**overnight_env(), "HOME": str(home)}
    if tool == "claude":
        env.update(ANTHROPIC_BASE_URL=stub.url, ANTHROPIC_API_KEY=STUB_KEY)
    elif tool == "codex":
        # Not under /tmp: Codex refuses to set up its sandbox helper there.
        codex_home = Path(tempfile.mkdtemp(prefix="codex-home-", dir=Path.home()))
        (codex_home / "config.toml").write_text(
            'model = "stub"\nmodel_provider = "stub"\n[model_providers.stub]\nname = "stub"\n'
            f'base_url = "{stub.openai_url}"\nenv_key = "BENCH_STUB_KEY"\n'
            'wire_api = "responses"\n'
        )  # fmt: skip
        env.update(CODEX_HOME=str(codex_home), BENCH_STUB_KEY=STUB_KEY)
    else:
        env.update(OPENAI_API_BASE=stub.openai_url, OPENAI_API_KEY=STUB_KEY)
    return env


def run_one(tool: str, command: str, resume: str, n: int,
            instructions: Path | None = None) -> dict[str, object]:  # fmt: skip
    brain = KnobAgent(path="train.py", knob="MATRIX_LR", step=0.004)
    with FakeLLM(respond=brain, count_tokens=True) as stub, \
            tempfile.TemporaryDirectory(prefix=f"real-{tool}-") as tmp:  # fmt: skip
        root = Path(tmp)
        repo = study(root, tool, command, resume, instructions)
        env = tool_env(root, tool, stub)
        trace = root / "connect.trace"
        argv = [sys.executable, "-m", "overnight", "run", "-n", str(n), "--plain",
                "--lookahead", "0"]  # fmt: skip
        if shutil.which("strace"):
            argv = ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace), *argv]
        done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=1800)  # fmt: skip
        log = json.loads(subprocess.run(
            [sys.executable, "-m", "overnight", "log", "--json"], cwd=repo, env=env,
            capture_output=True, text=True, check=True).stdout)  # fmt: skip
        hosts = sorted({f"{host}:{port}" for port, host in
                        CONNECT.findall(trace.read_text() if trace.exists() else "")
                        if host not in ("127.0.0.1", "::1")})  # fmt: skip
        if env.get("CODEX_HOME"):
            shutil.rmtree(env["CODEX_HOME"], ignore_errors=True)
        seen = stub.requests
        usage = [s.usage for s in seen]
        exp = repo / ".overnight" / "bench" / "experiments"
        prompts = [len((exp / str(i) / "prompt.txt").read_text()) for i in range(1, n + 1)
                   if (exp / str(i) / "prompt.txt").is_file()]  # fmt: skip
        return {
            "exit": done.returncode, "stderr": done.stderr[-2000:],
            "statuses": [r["status"] for r in log[1:]],
            "descriptions": [r["description"] for r in log[1:]],
            "reasons": [r["reason"] for r in log[1:] if r["reason"]],
            "hosts": hosts, "strace": trace.exists(), "requests": len(seen),
            "prompt_chars": prompts,
            "input": sum(u.input_tokens for u in usage),
            "cached": sum(u.cached_tokens for u in usage),
            "output": sum(u.output_tokens for u in usage),
        }  # fmt: skip


def cost(r: dict[str, object]) -> float:
    fresh = int(r["input"]) - int(r["cached"])  # type: ignore[call-overload]
    return (fresh * PRICES[0] + int(r["cached"]) * PRICES[1]  # type: ignore[call-overload]
            + int(r["output"]) * PRICES[2]) / 1e6  # type: ignore[call-overload]


def meaningful(description: str) -> bool:
    return bool(re.search(r"MATRIX_LR 0\.\d+ (->|→) 0\.\d+", description))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("-n", "--experiments", type=int, default=3)
    ap.add_argument("--sessions", action="store_true", help="also measure the session recipes")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--instructions", type=Path,
                    help="use this file as the study's program.md (a longer prompt)")
    args = ap.parse_args()
    found = recipes()
    rows, session_rows, results = [], [], {}
    failed = False
    for tool in args.tools.split(","):
        if shutil.which(tool) is None:
            print(f"{TOOLS[tool]}: `{tool}` not on PATH, skipped")
            continue
        ver, drift = version(tool), help_drift(tool)
        plain = run_one(tool, found[tool]["plain"], "", args.experiments, args.instructions)
        statuses = plain["statuses"]
        ok = (plain["exit"] == 0 and len(statuses) == args.experiments and "keep" in statuses
              and set(statuses) <= {"keep", "discard"} and not plain["hosts"]
              and all(meaningful(d) for d in plain["descriptions"]))  # fmt: skip
        failed |= not ok
        results[tool] = {"version": ver, "help_drift": drift, "plain": plain}
        rows.append([TOOLS[tool], ver, "PASS" if ok else "FAIL",
                     " ".join(plain["statuses"]), "; ".join(plain["descriptions"]),
                     ", ".join(plain["hosts"]) or ("none" if plain["strace"] else "not traced"),
                     ", ".join(drift) or "none"])  # fmt: skip
        if args.sessions:
            session = run_one(tool, found[tool]["command"], found[tool]["resume_command"],
                              args.experiments, args.instructions)  # fmt: skip
            results[tool]["session"] = session
            for label, r in (("fresh process per call", plain), ("one session", session)):
                chars = r["prompt_chars"]
                first_later = f"{chars[0]:,} / {sum(chars[1:]) // max(1, len(chars) - 1):,}" \
                    if chars else "—"  # fmt: skip
                session_rows.append([TOOLS[tool], label, " ".join(r["statuses"]), first_later,
                                     r["requests"],
                                     f"{r['input']:,}", f"{r['cached']:,}", f"{r['output']:,}",
                                     f"${cost(r):.4f}"])  # fmt: skip
    print(f"## Agent recipes with the real CLIs ({args.experiments} experiments each)\n")
    print(table(["tool", "version", "recipe", "statuses", "descriptions",
                 "connections besides the stub", "--help changed"], rows, "lllllll"))  # fmt: skip
    if session_rows:
        print(f"\n## One session vs a fresh process per call ({args.experiments} experiments)\n")
        print(table(["tool", "mode", "statuses", "overnight prompt, chars: first / later",
                     "model requests", "input tokens", "of which cached", "output tokens",
                     "cost"], session_rows, "lllrrrrrr"))  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    for tool, r in results.items():
        for key in ("plain", "session"):
            if key in r and r[key]["exit"] != 0:
                print(f"\n{tool} {key}: overnight exited {r[key]['exit']}:\n{r[key]['stderr']}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
