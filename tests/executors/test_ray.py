"""The Ray executor: unit tests of the worker side, then studies driven through the CLI on a
real local Ray cluster (a head node plus a second node process, started once per module)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import git, make_repo, overnight_env, run_cli, write_script

from overnight.config import config_from_dict
from overnight.errors import UsageError
from overnight.executors.base import BaseExecutor, RunFacts, RunTask
from overnight.executors.ray import worker as ray_worker
from overnight.executors.registry import make_executor
from overnight.git.workspace import Workspace
from overnight.isolation.integrity import ProtectedFiles
from overnight.isolation.runner import MARKER_VAR

ray = pytest.importorskip("ray")

PY = sys.executable  # the runs need psutil, which the system python may lack
# Propose only after each verdict, so that every scripted proposal is judged against the
# best it was written for (run-ahead would re-apply it onto a newer best).
SERIAL = ("--lookahead", "0")


# == helpers ===============================================================================


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tagged(tag: str) -> list[psutil.Process]:
    """Processes carrying our cluster's tag in their environment, and their descendants
    (Ray's agents overwrite their environment with their process title): all it started."""
    needle = f"\0OVERNIGHT_TEST_RAY={tag}\0".encode()
    found: dict[int, psutil.Process] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, psutil.Error), open(f"/proc/{name}/environ", "rb") as fh:
            if needle in b"\0" + fh.read():
                proc = psutil.Process(int(name))
                found.update({p.pid: p for p in [proc, *proc.children(recursive=True)]})
    return list(found.values())


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        time.sleep(0.05)


def _ray_worker_of(pid: int) -> psutil.Process:
    """The Ray worker process (`ray::…`) that a run's process descends from."""
    proc: psutil.Process | None = psutil.Process(pid)
    while proc is not None:
        if proc.name().startswith("ray::") or " ".join(proc.cmdline()).startswith("ray::"):
            return proc
        proc = proc.parent()
    raise AssertionError(f"process {pid} does not run under a Ray worker")


def _log(repo: Path) -> list[dict]:
    out = run_cli(repo, "log", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _start(repo: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "overnight", "run", "--plain", *args], cwd=repo,
        env=overnight_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def score_src(x: float, body: str = "") -> str:
    return f"import os, sys, time\nX = {x}\n{body}\nprint(f'score: {{X}}')\n"


def ray_config(address: str, budget: str = "20s", extra: str = "", num_cpus: int = 1) -> str:
    return (
        textwrap.dedent(f"""\
        [study]
        name = "t"
        surface = ["score.py"]
        protect = ["data/**"]
        budget = "{budget}"

        [run]
        command = "{PY} score.py"

        [metric]
        name = "score"
        goal = "minimize"

        [proposer]
        kind = "support.scripted:ScriptedProposer"

        [executor]
        kind = "ray"
        address = "{address}"
        num_cpus = {num_cpus}
        """)
        + extra
    )


def ray_repo(root: Path, address: str, **kw: object) -> Path:
    repo = make_repo(root, {
        "score.py": score_src(10), "overnight.toml": ray_config(address, **kw),  # type: ignore[arg-type]
        "program.md": "Make X small.\n", "helper.txt": "locked\n",
    })  # fmt: skip
    (repo / "data").mkdir()
    (repo / "data" / "value.txt").write_text("10")  # untracked, protected: must travel
    return repo


# == the worker side, without Ray ==========================================================


def _base_tar(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel, text in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


def _spec(tmp: Path, files: dict[str, str], commands: list[tuple[str, str]]) -> dict:
    base = {"s.py": "print('score: 1')\n", "lock.txt": "locked\n", "gone.py": "x = 1\n"}
    task = RunTask(
        experiment=3, repeat=1, kind="run", commit="c", commands=commands,
        budget_s=10, env={"PATH": os.environ["PATH"], "OVERNIGHT_TRACE_DIR": "/nowhere/t",
                          "OVERNIGHT_ARTIFACT_DIR": "/nowhere/a"},
        exp_dir=str(tmp / "exp"), marker=f"overnight:unit:{uuid.uuid4().hex}",
    )  # fmt: skip
    manifest = {"lock.txt": ray_worker.data_digest(b"locked\n")}
    return {
        "protocol": ray_worker.PROTOCOL, "task": task.__dict__, "base_key": uuid.uuid4().hex,
        "base_ref": [None], "manifest": manifest, "files": files, "remove": ["gone.py"],
        "inputs": {}, "attempt": 0, "_tar": _base_tar(base),
    }  # fmt: skip


def test_worker_runs_the_candidate_and_sees_locked_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERNIGHT_RAY_WORKDIR", str(tmp_path / "node"))
    script = (
        "import os, pathlib\n"
        "assert not os.path.exists('gone.py')\n"
        "pathlib.Path(os.environ['OVERNIGHT_TRACE_DIR'], 'a.json').write_text('{}')\n"
        "print('x' * 3000000)\n"
        "print('score: 2')\n"
    )
    spec = _spec(tmp_path, {"s.py": script}, [("run", f"{PY} s.py")])
    tar = spec.pop("_tar")
    out = ray_worker.run_task(spec, fetch=lambda: tar)
    # Facts only: the metric is parsed by the controller from the logs sent back.
    assert out["logs"]["run-1.stdout"].endswith(b"score: 2\n")
    assert out["report"]["steps"][0]["exit_code"] == 0 and out["report"]["changed"] == []
    assert set(out["logs"]) == {"run-1.stdout", "run-1.stderr"}
    with tarfile.open(fileobj=io.BytesIO(out["dirs"]["OVERNIGHT_TRACE_DIR"])) as t:
        assert t.getnames() == ["a.json"]
    assert out["dirs"]["OVERNIGHT_ARTIFACT_DIR"] == b""

    # A run that edits a locked file, then one that deletes it; the cache stays pristine.
    for body in ("open('lock.txt', 'a').write('x')", "import os; os.remove('lock.txt')"):
        spec = _spec(tmp_path, {"s.py": body + "\nprint('score: 0')\n"}, [("run", f"{PY} s.py")])
        spec["base_key"] = _spec.__name__  # the same key each time: the cached copy is reused
        tar = spec.pop("_tar")
        out = ray_worker.run_task(spec, fetch=lambda tar=tar: tar)
        assert out["report"]["changed"] == ["lock.txt"]
    cached = tmp_path / "node" / "overnight-ray" / "base" / "_spec" / "lock.txt"
    assert cached.read_text() == "locked\n"
    # A run that tampers with the node's cache through its absolute path: re-extracted.
    cached.write_text("tampered\n")
    spec = _spec(tmp_path, {"s.py": "print(open('lock.txt').read().strip())\n"},
                 [("run", f"{PY} s.py")])  # fmt: skip
    spec["base_key"], tar = "_spec", spec.pop("_tar")
    out = ray_worker.run_task(spec, fetch=lambda: tar)
    assert out["logs"]["run-1.stdout"] == b"locked\n"
    # Every run dir is removed by its guard once the task returns.
    _wait_for(lambda: not any((tmp_path / "node" / "overnight-ray" / "runs").iterdir()), 10)


def test_worker_resets_the_copy_between_the_run_and_the_evaluator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the run plants (a shadowing module, a link, a rewritten locked file it restores
    itself later) never reaches the trusted evaluator on a node either."""
    monkeypatch.setenv("OVERNIGHT_RAY_WORKDIR", str(tmp_path / "node"))
    run = ("import os\nopen('json.py', 'w').write('print(\"score: 0\")')\n"
           "os.makedirs('__pycache__')\nos.symlink('/etc', 'etc')\n"
           "open('lock.txt', 'w').write('rewritten')\nopen('s.py', 'w').write('changed')\n")
    evaluator = ("import os, sys\nsys.path.insert(0, '.')\nimport json\n"
                 "print(sorted(os.listdir('.')), open('lock.txt').read().strip(), "
                 "open('s.py').read()[:5])\nprint('score: 1')\n")  # fmt: skip
    (tmp_path / "ev.py").write_text(evaluator)
    spec = _spec(tmp_path, {"s.py": run}, [("run", f"{PY} s.py"), ("metric", f"{PY} "
                                                                   f"{tmp_path / 'ev.py'}")])
    tar = spec.pop("_tar")
    out = ray_worker.run_task(spec, fetch=lambda: tar)
    assert [s["exit_code"] for s in out["report"]["steps"]] == [0, 0]
    seen = out["logs"]["metric-1.stdout"].decode()
    assert seen.splitlines()[0] == "['lock.txt', 's.py'] locked impor"
    assert out["report"]["changed"] == ["lock.txt", "s.py"]


def test_capped_logs_and_dirs(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(b"head\n" + b"x" * 5000 + b"\ntail\n")
    capped = ray_worker.capped_bytes(log, cap=1000)
    assert capped.startswith(b"head\n") and capped.endswith(b"\ntail\n")
    assert b"bytes cut on the Ray node" in capped and len(capped) < 1100
    d = tmp_path / "traces"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "small.txt").write_text("s")
    (d / "zbig.bin").write_bytes(b"b" * 2000)
    (d / "link").symlink_to("/etc/passwd")
    with tarfile.open(fileobj=io.BytesIO(ray_worker.pack_dir(d, cap=1000))) as t:
        assert sorted(t.getnames()) == ["OMITTED.txt", "sub/small.txt"]
        assert b"zbig.bin" in t.extractfile("OMITTED.txt").read()  # type: ignore[union-attr]


def test_guard_kills_the_run_when_its_worker_dies(tmp_path: Path) -> None:
    marker = f"overnight:unit:{uuid.uuid4().hex}@0:"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, MARKER_VAR: marker + "run"}
    sleeper = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    guard = ray_worker.start_guard(marker, run_dir, 60)
    assert guard is not None and guard.stdin is not None
    time.sleep(0.3)
    assert sleeper.poll() is None
    guard.stdin.close()  # what the kernel does when the worker holding it is killed
    sleeper.wait(timeout=10)
    guard.wait(timeout=10)
    assert not run_dir.exists()


# == choosing the executor =================================================================


def _ws(tmp_path: Path) -> tuple[Workspace, ProtectedFiles]:
    repo = make_repo(tmp_path / "r", {"score.py": "print('score: 1')\n"})
    return Workspace(repo, "t"), ProtectedFiles(repo, [], ["score.py"])


def _cfg(**executor: object) -> object:
    return config_from_dict({
        "study": {"name": "t", "surface": ["score.py"], "budget": "5s"},
        "run": {"command": "true"}, "metric": {"name": "score"}, "executor": executor,
    })  # fmt: skip


class Plugin(BaseExecutor):
    def run(self, task: RunTask) -> RunFacts:  # pragma: no cover - never run
        raise NotImplementedError


def test_make_executor_by_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws, protected = _ws(tmp_path)
    cfg = _cfg()
    local = make_executor("local", cfg, ws, ["score.py"], protected, workers=3)  # type: ignore[arg-type]
    assert type(local).__name__ == "LocalExecutor" and local.slots == 3
    plug = make_executor(f"{__name__}:Plugin", cfg, ws, ["score.py"], protected)  # type: ignore[arg-type]
    assert isinstance(plug, Plugin)
    with pytest.raises(UsageError, match="unknown executor 'nope'"):
        make_executor("nope", cfg, ws, ["score.py"], protected)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="not a subclass"):
        make_executor("json:loads", cfg, ws, ["score.py"], protected)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="num_gpus"):
        make_executor("ray", _cfg(gpus=[0]), ws, ["score.py"], protected)  # type: ignore[arg-type]
    port = _free_port()  # nothing listens there
    with pytest.raises(UsageError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        make_executor("ray", _cfg(address=f"127.0.0.1:{port}"), ws, ["score.py"], protected)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UsageError, match=r'pip install "overnight\[ray\]"'):
        make_executor("ray", cfg, ws, ["score.py"], protected)  # type: ignore[arg-type]


def test_the_skypilot_example_parses() -> None:
    yaml = pytest.importorskip("yaml")
    doc = (Path(__file__).parents[2] / "docs" / "scale-out.md").read_text()
    task = yaml.safe_load(doc.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert task["num_nodes"] > 1 and "accelerators" in task["resources"]
    check = subprocess.run(["bash", "-n"], input=task["run"], text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    assert "overnight run --executor ray" in task["run"]


# == a real cluster ========================================================================


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node (1 CPU) and a second node (2 CPUs) on 127.0.0.1; its address."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the cluster tests find processes through /proc")
    tag = uuid.uuid4().hex
    # Short: Ray's unix sockets live below it, and their paths are limited to 107 bytes.
    temp = tempfile.mkdtemp(prefix="ovr", dir="/tmp")
    env = {**os.environ, "OVERNIGHT_TEST_RAY": tag, "RAY_USAGE_STATS_ENABLED": "0",
           # else a token left in ~/.ray by another Ray session locks the second node out
           "RAY_AUTH_MODE": "disabled",
           "OVERNIGHT_RAY_WORKDIR": os.path.join(temp, "nodes")}  # fmt: skip
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    common = ["--disable-usage-stats", "--object-store-memory=80000000"]

    def start(*args: str) -> None:
        out = subprocess.run([ray_bin, "start", *args, *common], env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        if out.returncode != 0:
            pytest.fail(f"ray start {args[0]} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")

    try:
        start("--head", "--node-ip-address=127.0.0.1", f"--port={port}",
              f"--ray-client-server-port={_free_port()}", "--num-cpus=1",
              "--include-dashboard=false", f"--temp-dir={temp}")  # fmt: skip
        start(f"--address=127.0.0.1:{port}", "--num-cpus=2")
        yield f"127.0.0.1:{port}"
    finally:
        procs = _tagged(tag)  # all at once: a graceful Ray shutdown takes seconds
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_study_over_ray(cluster: str, tmp_path: Path) -> None:
    repo = ray_repo(tmp_path / "repo", cluster, budget="3s")
    start = git(repo, "rev-parse", "HEAD")
    read = "X = float(open('data/value.txt').read()) - 4"
    traced = "open(os.path.join(os.environ['OVERNIGHT_TRACE_DIR'], 't.json'), 'w').write('{}')"
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": score_src(7, f"print('cwd', os.getcwd())\n{traced}")},
         "description": "X 10 → 7"},
        {"files": {"score.py": score_src(9)}, "description": "X 7 → 9"},
        {"files": {"score.py": score_src(1, "open('helper.txt', 'w').write('hacked')")},
         "description": "edit a locked file"},
        {"files": {"score.py": score_src(1, "open('data/value.txt', 'w').write('0')")},
         "description": "edit protected data"},
        {"files": {"score.py": score_src(1, "sys.exit(3)")}, "description": "exit 3"},
        {"files": {"score.py": score_src(1, "time.sleep(100)")}, "description": "hang"},
        {"files": {"score.py": score_src(0, read)}, "description": "read the data"},
    ])  # fmt: skip
    out = run_cli(repo, "run", "-n", "7", "--plain", "--executor", "ray", *SERIAL, env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    log = _log(repo)
    assert [r["status"] for r in log] == [
        "keep", "keep", "discard", "rejected", "rejected", "crash", "timeout", "keep"
    ]  # fmt: skip
    assert "helper.txt" in log[3]["reason"] and "data/value.txt" in log[4]["reason"]
    assert "code 3" in log[5]["reason"] and "budget of 3s" in log[6]["reason"]
    assert log[7]["value"] == 6.0  # the protected data reached the node, unchanged
    keeps = [r["commit"] for r in log[1:] if r["status"] == "keep"]
    assert git(repo, "rev-list", "--reverse", f"{start}..overnight/t").split() == keeps

    # The logs, traces and node record came back into the experiment folder.
    exp1 = repo / ".overnight" / "t" / "experiments" / "1"
    stdout = (exp1 / "run.stdout").read_text()
    assert "score: 7" in stdout
    cwd = stdout.split("cwd ", 1)[1].splitlines()[0]
    assert "overnight-ray/runs/" in cwd and not cwd.startswith(str(repo))
    assert (exp1 / "traces" / "t.json").read_text() == "{}"
    assert "ran on node" in (exp1 / "executor.log").read_text()
    show = json.loads(run_cli(repo, "show", "5", "--json").stdout)
    assert show["status"] == "crash"
    # The user's checkout is untouched.
    assert (repo / "helper.txt").read_text() == "locked\n"
    assert (repo / "data" / "value.txt").read_text() == "10"
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""


def first_held(pids: Path, hold: Path, count: int = 1) -> str:
    """Run source: record the pid; the first `count` runs of the study wait while `hold`
    exists."""
    return (
        f"open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        f"if str(os.getpid()) in open({str(pids)!r}).read().split()[:{count}]:\n"
        f"    while os.path.exists({str(hold)!r}):\n        time.sleep(0.05)\n"
    )


def test_parallel_slots_share_the_cluster(cluster: str, tmp_path: Path) -> None:
    repo = ray_repo(tmp_path / "repo", cluster)
    spans = tmp_path / "spans"
    # Every candidate is worse than the baseline: no keep, so run-ahead never re-applies.
    body = (
        "t0 = time.time(); time.sleep(1.5)\n"
        f"open({str(spans)!r}, 'a').write(f'{{t0}} {{time.time()}}\\n')"
    )
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": score_src(11 + i, body)}, "description": f"worse {i}"}
        for i in range(4)
    ])  # fmt: skip
    out = run_cli(repo, "run", "-n", "4", "--plain", "--workers", "2", env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    assert [r["status"] for r in _log(repo)] == ["keep"] + ["discard"] * 4
    runs = sorted(tuple(map(float, line.split())) for line in spans.read_text().splitlines())
    overlaps = sum(b[0] < a[1] for a, b in zip(runs, runs[1:], strict=False))
    assert overlaps >= 1, runs  # two runs were in flight at once


KILL_MY_WORKER = """
import psutil
p = psutil.Process().parent()
while not " ".join(p.cmdline()).startswith("ray::"):
    p = p.parent()
p.kill()
time.sleep(30)
"""


def test_a_dead_worker_is_retried_then_a_crash(cluster: str, tmp_path: Path) -> None:
    # num_cpus = 2: only the second node can take a run.
    repo = ray_repo(tmp_path / "repo", cluster, num_cpus=2)
    once, pids, hold = tmp_path / "once", tmp_path / "pids", tmp_path / "hold"
    first_time_only = f"if not os.path.exists({str(once)!r}):\n    open({str(once)!r}, 'w')\n"
    external = first_held(pids, hold)
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": score_src(
            7, first_time_only + textwrap.indent(KILL_MY_WORKER, "    "))},
         "description": "worker dies once"},
        {"files": {"score.py": score_src(1, KILL_MY_WORKER)}, "description": "worker always dies"},
        {"files": {"score.py": score_src(6, external)}, "description": "killed from outside"},
    ])  # fmt: skip
    hold.write_text("")
    proc = _start(repo, env, "-n", "3", *SERIAL)
    try:
        try:
            _wait_for(lambda: pids.exists() and pids.read_text().strip(), 120, "the third run")
        except AssertionError:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(out + err) from None
        victim = int(pids.read_text().split()[0])
        assert psutil.Process(victim).environ()[MARKER_VAR].endswith(":3:run:0@0:run")
        _ray_worker_of(victim).kill()  # the retry does not wait for `hold`
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err + out
    # The guard killed the run whose worker died, though it was still waiting on `hold`.
    _wait_for(lambda: not _alive(victim), 10, "the orphaned run's end")
    hold.unlink()
    log = _log(repo)
    assert [r["status"] for r in log] == ["keep", "keep", "crash", "keep"]
    assert "died 3 times" in log[2]["reason"]
    exp = repo / ".overnight" / "t" / "experiments"
    assert "attempt 0 lost: WorkerCrashedError" in (exp / "1" / "executor.log").read_text()
    assert (exp / "3" / "executor.log").read_text().count("lost") == 1
    assert "score: 6" in (exp / "3" / "run.stdout").read_text()
    assert run_cli(repo, "status", "--json").returncode == 0


def test_ctrl_c_and_kill9_of_the_controller_leave_nothing_running(
    cluster: str, tmp_path: Path
) -> None:
    repo = ray_repo(tmp_path / "repo", cluster)
    pids, hold = tmp_path / "pids", tmp_path / "hold"
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": score_src(7, first_held(pids, hold, count=2))},
         "description": "held"},
        {"files": {"score.py": score_src(6)}, "description": "X 6"},
    ])  # fmt: skip
    hold.write_text("")
    held = lambda n: pids.exists() and len(pids.read_text().split()) == n  # noqa: E731

    # Ctrl-C: the task is cancelled, the run's tree killed, the experiment left pending.
    proc = _start(repo, env, "-n", "2", *SERIAL)
    _wait_for(lambda: held(1), 120, "the held run")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not _alive(int(pids.read_text().split()[0]))
    status = json.loads(run_cli(repo, "status", "--json").stdout)
    assert status["pending"] == [1]

    # kill -9: Ray ends the dead driver's workers, each run's guard kills what they ran.
    proc = _start(repo, env, "-n", "2", *SERIAL)
    _wait_for(lambda: held(2), 120, "the held re-run")
    proc.kill()
    proc.wait()
    orphan = int(pids.read_text().split()[1])
    _wait_for(lambda: not _alive(orphan), 30, "the orphaned run's end")

    out2 = run_cli(repo, "run", "-n", "2", "--plain", *SERIAL, env=env)
    assert out2.returncode == 0, out2.stderr + out2.stdout
    assert [r["status"] for r in _log(repo)] == ["keep", "keep", "keep"]


def test_recover_kills_leftovers_on_every_node(cluster: str, tmp_path: Path) -> None:
    from overnight.executors.ray.executor import RayExecutor

    ws, protected = _ws(tmp_path)
    prefix = f"overnight:test:{uuid.uuid4().hex}"
    env = {**os.environ, MARKER_VAR: f"{prefix}:1:run:0@0:run"}
    leftover = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    # ship_code: the package travels as Ray's py_modules, as for nodes without overnight.
    ex = RayExecutor(ws, ["score.py"], protected, address=cluster, ship_code=True)
    try:
        assert ex.recover(prefix) >= 1  # each node on this machine may count it
        assert leftover.wait(timeout=10) is not None
        assert ex.recover(prefix) == 0
    finally:
        ex.close()
    assert not ray.is_initialized()
