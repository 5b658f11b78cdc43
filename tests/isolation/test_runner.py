import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from overnight.isolation.capture import output_tail, tail_text
from overnight.isolation.runner import RunOutcome, kill_marked, run_command, scrub_env

PY = sys.executable

# Forks a child that leaves the session with setsid() and double-forks a daemon; every
# process involved ignores SIGTERM. The daemon writes its pid to argv[1].
NASTY = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    while True:
        time.sleep(0.05)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
print("daemon started", flush=True)
if sys.argv[2] == "hang":
    time.sleep(60)
"""


def marked(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes carrying this run marker."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("OVERNIGHT_RUN_MARKER") == marker:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except psutil.Error:
            continue
    return found


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def run(tmp_path: Path, command: str, budget_s: float = 2.0, **kw: object) -> RunOutcome:
    marker = kw.pop("marker", None) or f"test/{uuid.uuid4().hex}"
    outcome = run_command(
        command,
        cwd=tmp_path,
        env=os.environ,
        budget_s=budget_s,
        stdout_path=tmp_path / "logs" / "stdout.log",
        stderr_path=tmp_path / "logs" / "stderr.log",
        marker=str(marker),
        **kw,  # type: ignore[arg-type]
    )
    assert marked(str(marker)) == []
    return outcome


@pytest.fixture
def nasty(tmp_path: Path) -> Path:
    script = tmp_path / "nasty.py"
    script.write_text(NASTY)
    return script


# --- scrub_env ---------------------------------------------------------------------------


def test_scrub_env_removes_secrets_case_insensitively() -> None:
    base = {
        "PATH": "/bin",
        "OPENAI_API_KEY": "x",
        "github_token": "x",
        "DB_Password": "x",
        "MY_SECRET_THING": "x",
        "AWS_CREDENTIALS_FILE": "x",
        "HOME": "/h",
    }
    assert scrub_env(base) == {"PATH": "/bin", "HOME": "/h"}


def test_scrub_env_pass_env_keeps_and_drop_always_removes() -> None:
    base = {"HF_TOKEN": "a", "ANTHROPIC_API_KEY": "b", "PLAIN": "c"}
    kept = scrub_env(base, pass_env=["HF_TOKEN", "ANTHROPIC_API_KEY"], drop=["ANTHROPIC_API_KEY"])
    assert kept == {"HF_TOKEN": "a", "PLAIN": "c"}
    assert scrub_env(base, drop=["PLAIN"]) == {}


# --- normal runs -------------------------------------------------------------------------


def test_exit_code_output_files_and_marker(tmp_path: Path) -> None:
    outcome = run(
        tmp_path,
        'echo "out $OVERNIGHT_RUN_MARKER"; echo err >&2; pwd; exit 3',
        marker="study/42",
    )
    assert outcome.exit_code == 3
    assert not outcome.timed_out and not outcome.interrupted
    assert outcome.stdout_path.read_text() == f"out study/42\n{tmp_path}\n"
    assert outcome.stderr_path.read_text() == "err\n"
    assert outcome.output_tail == f"out study/42\n{tmp_path}\n\n[stderr]\nerr\n"
    assert 0 <= outcome.wall_s < 1.5


def test_stdin_is_empty(tmp_path: Path) -> None:
    outcome = run(tmp_path, "cat; echo done")
    assert outcome.exit_code == 0
    assert outcome.stdout_path.read_text() == "done\n"


def test_success_and_signal_exit(tmp_path: Path) -> None:
    assert run(tmp_path, "true").exit_code == 0
    assert run(tmp_path, "kill -9 $$").exit_code == -9


def test_output_tail_is_bounded_for_big_output(tmp_path: Path) -> None:
    cmd = f"{PY} -c \"print('HEAD'); print('x' * 200_000); print('TAIL')\"; echo oops >&2"
    outcome = run(tmp_path, cmd)
    tail = outcome.output_tail
    assert len(tail) < 17_000
    assert tail.startswith("HEAD\n")
    assert tail.endswith("TAIL\n\n[stderr]\noops\n")
    assert "bytes omitted] ..." in tail
    total = 200_000 + 5 + 1 + 5 + len("\n[stderr]\n") + 5
    assert f"[{total - 4096 - 12288} bytes omitted]" in tail


def test_output_tail_of_missing_files(tmp_path: Path) -> None:
    assert output_tail(tmp_path / "a", tmp_path / "b") == ""


def test_tail_text(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("hello é world")
    assert tail_text(path, 100) == "hello é world"
    assert tail_text(path, 7) == " world"  # the cut 'é' is dropped, not garbled
    assert tail_text(tmp_path / "missing", 10) == ""


def test_wall_time_is_measured(tmp_path: Path) -> None:
    outcome = run(tmp_path, "sleep 0.3")
    assert outcome.exit_code == 0
    assert 0.3 <= outcome.wall_s < 1.0


# --- killing -----------------------------------------------------------------------------


def test_budget_kills_setsid_double_forked_term_ignoring_tree(tmp_path: Path, nasty: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    marker = f"test/{uuid.uuid4().hex}"
    start = time.monotonic()
    outcome = run(
        tmp_path, f"{PY} {nasty} {pidfile} hang", budget_s=1.0, marker=marker, grace_s=0.2
    )
    elapsed = time.monotonic() - start
    assert outcome.timed_out and not outcome.interrupted
    assert outcome.exit_code is None
    assert 1.0 <= outcome.wall_s < 2.5 and elapsed < 3.0
    assert "daemon started" in outcome.stdout_path.read_text()
    assert dead(int(pidfile.read_text()))
    assert marked(marker) == []


def test_daemon_of_a_normal_run_is_killed(tmp_path: Path, nasty: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    outcome = run(tmp_path, f"{PY} {nasty} {pidfile} exit", grace_s=0.2)
    assert outcome.exit_code == 0 and not outcome.timed_out
    assert dead(int(pidfile.read_text()))


def test_background_child_without_marker_is_killed_through_the_group(tmp_path: Path) -> None:
    # `env -i` wipes the marker; the process group still holds the child.
    outcome = run(tmp_path, "env -i /bin/sleep 30 & echo $! > bg.pid")
    assert outcome.exit_code == 0
    assert dead(int((tmp_path / "bg.pid").read_text()))


def test_descendant_seen_while_polling_is_killed(tmp_path: Path) -> None:
    # setsid + env -i escape both the group and the marker; only tracking catches it.
    outcome = run(tmp_path, "setsid env -i /bin/sleep 30 & echo $! > bg.pid; sleep 0.4")
    assert outcome.exit_code == 0
    assert dead(int((tmp_path / "bg.pid").read_text()))


def test_stop_event_interrupts(tmp_path: Path) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    try:
        outcome = run(tmp_path, "sleep 30", budget_s=10, stop=stop)
    finally:
        timer.cancel()
    assert outcome.interrupted and not outcome.timed_out
    assert outcome.exit_code is None
    assert outcome.wall_s < 1.5


def test_cannot_start_raises(tmp_path: Path) -> None:
    from overnight.errors import OvernightError

    with pytest.raises(OvernightError, match="cannot start"):
        run(tmp_path, "true", wrap=[str(tmp_path / "no-such-wrapper")])


def test_wrap_prefixes_the_command(tmp_path: Path) -> None:
    outcome = run(tmp_path, "echo inside", wrap=["/usr/bin/env", "WRAPPED=1"])
    assert outcome.exit_code == 0
    assert outcome.stdout_path.read_text() == "inside\n"


def test_kill_marked_removes_orphans_by_prefix(tmp_path: Path) -> None:
    study = f"study-{uuid.uuid4().hex}/"
    env = {**os.environ, "OVERNIGHT_RUN_MARKER": study + "7"}
    other_env = {**os.environ, "OVERNIGHT_RUN_MARKER": f"other-{uuid.uuid4().hex}/1"}
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
    orphan = subprocess.Popen([PY, "-c", ignore], env=env, start_new_session=True)
    bystander = subprocess.Popen(["sleep", "30"], env=other_env, start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while not marked(study + "7") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert kill_marked(study, grace_s=0.2) == 1
        orphan.wait(timeout=2)
        assert bystander.poll() is None
        assert kill_marked(study) == 0
    finally:
        for proc in (orphan, bystander):
            proc.kill()
            proc.wait()


def test_kill_marked_spares_the_caller_and_its_ancestors(tmp_path: Path) -> None:
    # A controller running inside another overnight run carries a marker itself.
    code = "from overnight.isolation.runner import kill_marked; print(kill_marked('nest/'))"
    outcome = run(tmp_path, f'{PY} -c "{code}"; echo alive', marker="nest/1")
    assert outcome.exit_code == 0
    assert outcome.stdout_path.read_text() == "0\nalive\n"


def test_many_short_lived_children_do_not_pile_up(tmp_path: Path) -> None:
    outcome = run(tmp_path, "for i in $(seq 40); do /bin/true & sleep 0.005; done; wait")
    assert outcome.exit_code == 0


def test_a_run_dies_with_its_controller(tmp_path: Path) -> None:
    """kill -9 of the controller: the run's reaper is told and takes the whole tree down,
    a double-forked daemon with a cleared environment included."""
    pids = tmp_path / "pids"
    naptime = f"60.{os.getpid()}"  # recognisable among the machine's processes
    command = (
        f"{sys.executable} -c \"import os, time\nif os.fork() == 0:\n    os.setsid()\n"
        f"    if os.fork() == 0:\n        os.execve('/bin/sleep', ['sleep', '{naptime}'], {{}})\n"
        f"    os._exit(0)\ntime.sleep(60)\" & echo $! >> {pids}; wait"
    )
    controller = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from overnight.isolation.runner import "
        "run_command; p = Path(sys.argv[1]); run_command(sys.argv[2], cwd=p, env={'PATH': "
        "'/usr/bin:/bin'}, budget_s=60, stdout_path=p / 'o', stderr_path=p / 'e', marker='m')"
    ), str(tmp_path), command])  # fmt: skip
    deadline = time.monotonic() + 20
    while not (pids.exists() and pids.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    run = psutil.Process(int(pids.read_text().split()[0]))
    sleepers = lambda: [p for p in psutil.process_iter(["cmdline"])  # noqa: E731
                        if p.info["cmdline"] == ["sleep", naptime]]  # fmt: skip
    deadline = time.monotonic() + 10
    while not sleepers() and time.monotonic() < deadline:
        time.sleep(0.05)
    daemons = sleepers()
    assert daemons, "the daemon did not start"
    controller.kill()
    controller.wait()
    gone, alive = psutil.wait_procs([run, *daemons], timeout=10)
    assert not alive, alive


# A daemon no net but the reaper can catch: double-forked, setsid, environment cleared (no
# marker), and started after the last poll could see it. It writes its pid, then lives.
SCRUBBED = """
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); " \\
               "time.sleep(60)"
        os.execve(sys.executable, [sys.executable, "-c", code, sys.argv[1]], {})
    os._exit(0)
"""


def test_the_reaper_catches_a_scrubbed_setsid_daemon(tmp_path: Path) -> None:
    (tmp_path / "d.py").write_text(SCRUBBED)
    proof = tmp_path / "daemon.pid"
    # The run waits for the daemon's pid file, so the daemon exists before the run ends.
    outcome = run(tmp_path, f"{PY} d.py {proof}; while [ ! -s {proof} ]; do sleep 0.01; done")
    assert outcome.exit_code == 0
    assert dead(int(proof.read_text()))


def test_logs_are_capped_head_and_tail_with_the_cut_named(tmp_path: Path) -> None:
    code = ("import sys\nsys.stdout.write('HEAD\\n')\nfor i in range(3000):\n"
            "    sys.stdout.write(f'line {i:06d} ' + 'x' * 1000 + '\\n')\n"
            "sys.stdout.write('error: 7\\n')\nsys.stderr.write('e' * 10)\n")  # fmt: skip
    (tmp_path / "chatty.py").write_text(code)
    outcome = run(tmp_path, f"{PY} chatty.py", log_cap=1 << 20)
    assert outcome.exit_code == 0
    data = outcome.stdout_path.read_bytes()
    assert len(data) < (1 << 20) + 400 and data.startswith(b"HEAD\n")
    assert data.endswith(b"error: 7\n")  # the last metric line survives the cap
    assert b"not kept: logs keep the first 256 KiB and the last 768 KiB" in data
    assert outcome.stderr_path.read_bytes() == b"e" * 10
    assert len(outcome.notes) == 1 and "stdout.log" in outcome.notes[0]


def test_a_planted_log_link_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "stdout.log").symlink_to(target)
    os.mkfifo(tmp_path / "logs" / "stderr.log")  # would block an open() for writing
    outcome = run(tmp_path, "echo hello; echo oops >&2")
    assert target.read_text() == "keep me"
    assert outcome.stdout_path.read_text() == "hello\n"
    assert outcome.stderr_path.read_text() == "oops\n"
    # Reading refuses links too: a log that is a link shows nothing.
    outcome.stdout_path.unlink()
    outcome.stdout_path.symlink_to(target)
    assert tail_text(outcome.stdout_path, 100) == ""
    assert "keep me" not in output_tail(outcome.stdout_path, outcome.stderr_path)


def test_output_order_is_the_order_of_writes(tmp_path: Path) -> None:
    """A child that reopens its parent's stdout through /proc and writes past the end of
    the file would land after the parent's last line; through a pipe it cannot."""
    child = ("import os\nfd = os.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)\n"
             "try:\n    os.lseek(fd, 1 << 20, 0)\nexcept OSError:\n    pass\n"
             "os.write(fd, b'\\nerror: 0\\n')\n")  # fmt: skip
    parent = (f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}], "
              "stdout=subprocess.DEVNULL)\nprint('error: 5')\n")  # fmt: skip
    (tmp_path / "evaluator.py").write_text(parent)
    outcome = run(tmp_path, f"{PY} evaluator.py")
    assert outcome.exit_code == 0
    assert outcome.stdout_path.read_text().rstrip().splitlines()[-1] == "error: 5"


def test_memory_over_the_limit_is_killed_with_the_reason(tmp_path: Path) -> None:
    hog = "import time\nblock = bytearray(300 << 20)\nblock[::4096] = b'x' * len(block[::4096])\n"
    (tmp_path / "hog.py").write_text(hog + "time.sleep(30)\n")
    outcome = run(tmp_path, f"{PY} hog.py", budget_s=30, max_rss=100 << 20)
    assert outcome.exit_code is None and not outcome.timed_out
    assert "over the limit of 100 MiB" in outcome.killed_because
