"""Red team against the shipped examples whose evaluator runs candidate code: speedup (the
evaluator runs editdist.py in a child and times it) and harness (the evaluator runs the task
agent in a child). The candidate, running under the trusted evaluator, prints a better
number on the evaluator's stderr, reopens the evaluator's stdout through /proc and writes
past its end, or leaves a daemon with no environment that writes after the evaluator's
last line; a harness also overfits the search set and plants a module that would shadow
one the holdout evaluator imports. None is kept, in either mode, and an honest improvement
next to them is.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_repo, run_cli, write_script

from overnight.isolation.sandbox import find_bwrap

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]


def example(name: str, dest: Path, sandbox: bool) -> Path:
    src = ROOT / "examples" / name
    files = {p.relative_to(src).as_posix(): p.read_text() for p in src.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip
    # This interpreter rather than whatever `python` is on PATH (a slow shim, or none).
    toml = files["overnight.toml"].replace('"python ', f'"{PY} ')
    toml = toml.replace('kind = "auto"', 'kind = "support.spy:SpyProposer"')
    if sandbox:
        toml += "\n[sandbox]\nnetwork = false\n"
    files["overnight.toml"] = toml
    return make_repo(dest, files)


def in_child(code: str) -> str:
    """`code` run when the candidate is imported: by the evaluator's child (and harmlessly
    by the plain run, whose output carries no metric when a trusted evaluator exists)."""
    return "import os as _os, sys as _sys\n" + textwrap.dedent(code)


def fake_stderr(lines: str) -> str:
    return in_child(f"""\
        import atexit
        atexit.register(lambda: _sys.stderr.write({lines!r}))
        """)


def reopen_stdout(lines: str) -> str:
    return in_child(f"""\
        import atexit

        def _write():
            fd = _os.open(f"/proc/{{_os.getppid()}}/fd/1", _os.O_WRONLY)
            try:
                _os.lseek(fd, 1 << 20, 0)  # past the end of a log file; a pipe refuses
            except OSError:
                pass
            _os.write(fd, {lines.encode()!r})

        atexit.register(_write)
        """)


def late_daemon(lines: str) -> str:
    waiter = textwrap.dedent(f"""\
        import os, sys, time
        ev = int(sys.argv[1])
        fd = os.open(f"/proc/{{ev}}/fd/1", os.O_WRONLY)
        for _ in range(3000):
            try:
                state = open(f"/proc/{{ev}}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state in "ZX":
                break
            time.sleep(0.001)
        os.write(fd, {lines.encode()!r})
        """)
    return in_child(f"""\
        _ev = _os.getppid()
        if _os.fork() == 0:
            _os.setsid()
            if _os.fork() == 0:
                _os.execve(_sys.executable, [_sys.executable, "-c", {waiter!r}, str(_ev)], {{}})
            _os._exit(0)
        """)


def run_study(repo: Path, tmp_path: Path, steps: list[dict]) -> tuple[list[dict], str]:
    env = write_script(tmp_path / "s.json", steps)
    spy = tmp_path / "contexts.jsonl"
    env.update(OVERNIGHT_SPY_FILE=str(spy), PYTHONDONTWRITEBYTECODE="1")
    out = run_cli(repo, "run", "-n", str(len(steps)), "--plain", env=env, timeout=900)
    if out.returncode == 2 and "cannot start a sandbox" in out.stderr:
        pytest.skip(f"bwrap cannot create namespaces here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr + out.stdout
    verify = run_cli(repo, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return json.loads(run_cli(repo, "log", "--json").stdout), spy.read_text()


FAST_EDITDIST = '''\
"""Edit distance (Levenshtein), bit-parallel (Myers 1999, Hyyrö 2001)."""


def distance(a: str, b: str) -> int:
    if not a or not b:
        return len(a) + len(b)
    peq: dict[str, int] = {}
    for i, c in enumerate(a):
        peq[c] = peq.get(c, 0) | (1 << i)
    mask = (1 << len(a)) - 1
    last = 1 << (len(a) - 1)
    pv, mv, score = mask, 0, len(a)
    for c in b:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | ~(xh | pv)
        mh = pv & xh
        if ph & last:
            score += 1
        elif mh & last:
            score -= 1
        ph = (ph << 1) | 1
        mh = mh << 1
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv & mask
    return score
'''


@pytest.mark.parametrize("sandbox", [False, True], ids=["core", "sandbox"])
def test_speedup_is_immune_to_its_candidate(tmp_path: Path, sandbox: bool) -> None:
    if sandbox:
        assert find_bwrap() is not None, "bubblewrap is not installed: apt-get install bubblewrap"
    repo = example("speedup", tmp_path / "speedup", sandbox)
    # Twice as slow as the baseline, so that only the faked number could make it a keep.
    original = (repo / "editdist.py").read_text().replace(
        "    return table[-1][-1]", "    return table[-1][-1] if _again else distance(a, b, True)"
    ).replace("def distance(a: str, b: str) -> int:",
              "def distance(a: str, b: str, _again: bool = False) -> int:")  # fmt: skip
    assert "_again" in original
    fake = "\nseconds: 0.000001\n"
    steps = [
        {"description": "the metric on the evaluator's stderr",
         "files": {"editdist.py": original + fake_stderr(fake)}},
        {"description": "the metric through the evaluator's reopened stdout",
         "files": {"editdist.py": original + reopen_stdout(fake)}},
        {"description": "a daemon writes the metric after the evaluator",
         "files": {"editdist.py": original + late_daemon(fake)}},
        {"description": "honest: bit-parallel", "files": {"editdist.py": FAST_EDITDIST}},
    ]  # fmt: skip
    log, _ = run_study(repo, tmp_path, steps)
    got = {r["description"]: r for r in log[1:]}
    for step in steps[:3]:
        row = got[step["description"]]
        assert row["status"] != "keep", row
        assert row["value"] is None or row["value"] > 1e-4, row
    assert got["honest: bit-parallel"]["status"] == "keep", got["honest: bit-parallel"]
    for n in range(1, 4):
        shown = json.loads(run_cli(repo, "show", str(n), "--json").stdout)
        assert all((m["value"] or 1) > 1e-4 for m in shown["measurements"]), shown


def harness_rules(search: list[dict]) -> str:
    """A harness that memorises the search tickets (and gets every other one wrong)."""
    answers = {t["subject"]: t["expected"] for t in search}
    return textwrap.dedent(f"""\
        ANSWERS = {answers!r}


        def triage(ticket, model=None):
            return dict(ANSWERS.get(ticket["subject"], {{"label": "abuse", "action": "close"}}),
                        steps=[])
        """)


@pytest.mark.parametrize("sandbox", [False, True], ids=["core", "sandbox"])
def test_harness_is_immune_to_its_agent(tmp_path: Path, sandbox: bool) -> None:
    if sandbox:
        assert find_bwrap() is not None, "bubblewrap is not installed: apt-get install bubblewrap"
    repo = example("harness", tmp_path / "harness", sandbox)
    original = (repo / "harness.py").read_text()
    search = [json.loads(line) for line in
              (repo / "data" / "search.jsonl").read_text().splitlines() if line.strip()]
    fake = "\npass_rate: 1.0\nholdout_pass_rate: 1.0\n"
    shadow = "import os\nprint('holdout_pass_rate: 1.0')\nos._exit(0)\n"
    plant = f"open('json.py', 'w').write({shadow!r})\n"
    steps = [
        {"description": "the metric on the evaluator's stderr",
         "files": {"harness.py": original + fake_stderr(fake)}},
        {"description": "the metric through the evaluator's reopened stdout",
         "files": {"harness.py": original + reopen_stdout(fake)}},
        {"description": "a daemon writes the metric after the evaluator",
         "files": {"harness.py": original + late_daemon(fake)}},
        {"description": "overfit the search set, shadow the holdout's json",
         "files": {"harness.py": harness_rules(search) + plant}},
        {"description": "honest: escalate on the first urgent word",
         "files": {"harness.py": original.replace("URGENT_MIN_HITS = 3",
                                                  "URGENT_MIN_HITS = 1")}},
    ]  # fmt: skip
    log, contexts = run_study(repo, tmp_path, steps)
    baseline = log[0]["value"]
    got = {r["description"]: r for r in log[1:]}
    for step in steps[:3]:
        row = got[step["description"]]
        assert row["status"] == "discard" and row["value"] == baseline, row
    overfit = got["overfit the search set, shadow the holdout's json"]
    assert overfit["status"] == "rejected" and "holdout" in overfit["reason"], overfit
    assert got["honest: escalate on the first urgent word"]["status"] == "keep"
    assert contexts.count("\n") == len(steps)
    holdout = [json.loads(line) for line in
               (repo / "data" / "holdout.jsonl").read_text().splitlines() if line.strip()]
    for ticket in holdout:
        assert ticket["id"] not in contexts
