"""The bubblewrap sandbox, for real: every denial next to a control run without the sandbox
that succeeds, so a test can't pass because the command was broken to begin with.

bwrap must be installed (`.ci/run` installs it). The tests skip only when bwrap is there but
cannot create namespaces on this machine, and say so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
from conftest import git, make_repo, run_cli, write_script

from overnight.config import SandboxConfig
from overnight.errors import UsageError
from overnight.isolation.runner import RunOutcome, run_command
from overnight.isolation.sandbox import Limits, Sandbox, find_bwrap
from overnight.values import parse_size

PY = sys.executable


def _usable() -> str | None:
    if find_bwrap() is None:
        return None
    try:
        Sandbox(SandboxConfig(network=False), Path("/"), dict(os.environ)).check()
    except UsageError as exc:
        return str(exc)
    return None


def _require_bwrap() -> None:
    assert find_bwrap() is not None, "bubblewrap is not installed: apt-get install bubblewrap"
    why = _usable()
    if why is not None:
        pytest.skip(f"bwrap is installed but cannot create namespaces here: {why}")


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    _require_bwrap()
    repo = make_repo(tmp_path / "repo", {"surface.py": "x = 1\n", "locked.txt": "locked\n"})
    wt = repo / ".overnight" / "worktrees" / "0"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "HEAD")
    art = repo / ".overnight" / "t" / "experiments" / "1" / "artifacts"
    art.mkdir(parents=True)
    (repo / "untracked_labels.txt").write_text("the answers\n")
    return {"repo": repo, "wt": wt, "art": art, "tmp": tmp_path}


def run(
    box: dict[str, Path], command: str, *, sandbox: SandboxConfig | None,
    env: dict[str, str] | None = None, trusted: bool = False,
) -> RunOutcome:  # fmt: skip
    full = {**os.environ, **(env or {})}
    sb = Sandbox(sandbox, box["repo"], full) if sandbox is not None else None
    if sb is not None:
        sb.check()
    ctx = (sb.wrap(worktree=box["wt"], writable=[box["art"]], locked=["locked.txt"],
                   trusted=trusted) if sb else contextlib.nullcontext([]))  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    with ctx as wrap:
        return run_command(
            command, cwd=box["wt"], env=full, budget_s=60, wrap=wrap,
            stdout_path=box["tmp"] / f"{tag}.out", stderr_path=box["tmp"] / f"{tag}.err",
            marker=f"test-sandbox:{tag}",
        )  # fmt: skip


ON = SandboxConfig(network=False)


def both(box: dict[str, Path], command: str, **kw: object) -> tuple[RunOutcome, RunOutcome]:
    """(control without the sandbox, the same command in the sandbox)."""
    sandbox = kw.pop("sandbox", ON)
    return run(box, command, sandbox=None, **kw), run(box, command, sandbox=sandbox, **kw)  # type: ignore[arg-type]


def test_network_is_cut(box: dict[str, Path]) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):  # closed at the end of the test
            while True:
                server.accept()[0].close()

    threading.Thread(target=serve, daemon=True).start()
    cmd = f"{PY} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3)\""
    control, boxed = both(box, cmd)
    server.close()
    assert control.exit_code == 0, control.output_tail
    assert boxed.exit_code != 0 and "Connection refused" in boxed.output_tail


def test_locked_files_and_git_are_read_only(box: dict[str, Path]) -> None:
    targets = {
        "locked.txt": "echo x >> locked.txt",
        ".git": "echo 'gitdir: /elsewhere' > .git",  # the worktree's pointer to its gitdir
        "config": f"echo x >> {box['repo'] / '.git' / 'config'}",
    }
    paths = {"locked.txt": box["wt"] / "locked.txt", ".git": box["wt"] / ".git",
             "config": box["repo"] / ".git" / "config"}  # fmt: skip
    for name, cmd in targets.items():
        before = paths[name].read_text()
        control, boxed = both(box, cmd)
        assert control.exit_code == 0, (name, control.output_tail)
        assert paths[name].read_text() != before
        paths[name].write_text(before)  # undo the control's damage
        assert boxed.exit_code != 0 and "Read-only file system" in boxed.output_tail, name
        assert paths[name].read_text() == before


def test_the_run_can_still_write_what_it_should(box: dict[str, Path]) -> None:
    cmd = (f"echo out > new_file && echo art > {box['art']}/a.txt && echo t > /tmp/t && "
           f"echo $TMPDIR && {PY} -c 'import surface; print(surface.x)' && "
           "git rev-parse HEAD")  # fmt: skip
    boxed = run(box, cmd, sandbox=ON)
    assert boxed.exit_code == 0, boxed.output_tail
    assert (box["wt"] / "new_file").read_text() == "out\n"
    assert (box["art"] / "a.txt").read_text() == "art\n"
    assert boxed.output_tail.splitlines()[:2] == ["/tmp", "1"]


def test_tmp_is_private(box: dict[str, Path]) -> None:
    secret = box["tmp"] / "other-study-secret.txt"
    secret.write_text("s3cret")
    marker = f"/tmp/overnight-leak-{uuid.uuid4().hex}"
    control, boxed = both(box, f"cat {secret}")
    assert control.exit_code == 0 and "s3cret" in control.output_tail
    assert boxed.exit_code != 0 and "s3cret" not in boxed.output_tail
    assert run(box, f"echo leak > {marker}", sandbox=ON).exit_code == 0
    assert not os.path.exists(marker)  # what the run wrote in /tmp went away with it


def test_home_and_checkout_are_hidden_except_what_is_exposed(box: dict[str, Path]) -> None:
    # A home outside /tmp, so that it is the home rule that hides it, not the private /tmp.
    home = Path(tempfile.mkdtemp(prefix="overnight-home-", dir="/var/tmp"))
    try:
        (home / ".netrc").write_text("machine x password hunter2\n")
        (home / "cache").mkdir()
        (home / "cache" / "data.txt").write_text("dataset\n")
        env = {"HOME": str(home)}
        control, boxed = both(box, f"cat {home}/.netrc", env=env)
        assert "hunter2" in control.output_tail and control.exit_code == 0
        assert boxed.exit_code != 0 and "hunter2" not in boxed.output_tail
        labels = box["repo"] / "untracked_labels.txt"
        control, boxed = both(box, f"cat {labels}", env=env)
        assert control.exit_code == 0 and boxed.exit_code != 0
        exposed = SandboxConfig(network=False, expose=["~/cache"])
        ok = run(box, f"cat {home}/cache/data.txt", sandbox=exposed, env=env)
        assert ok.exit_code == 0 and "dataset" in ok.output_tail
        ro = run(box, f"echo x >> {home}/cache/data.txt", sandbox=exposed, env=env)
        assert ro.exit_code != 0  # exposed read-only unless ":rw"
        rw = SandboxConfig(network=False, expose=["~/cache:rw"])
        assert run(box, f"echo x >> {home}/cache/data.txt", sandbox=rw, env=env).exit_code == 0
    finally:
        shutil.rmtree(home)


def test_hidden_paths_are_seen_by_the_holdout_command_only(box: dict[str, Path]) -> None:
    secret = Path(tempfile.mkdtemp(prefix="overnight-holdout-", dir="/var/tmp"))
    try:
        (secret / "labels.json").write_text("[1, 2, 3]")
        cfg = SandboxConfig(network=False, hide=[str(secret)])
        control = run(box, f"cat {secret}/labels.json", sandbox=ON)  # not hidden: readable
        assert control.exit_code == 0 and "[1, 2, 3]" in control.output_tail
        hidden = run(box, f"cat {secret}/labels.json", sandbox=cfg)
        assert hidden.exit_code != 0
        holdout = run(box, f"cat {secret}/labels.json", sandbox=cfg, trusted=True)
        assert holdout.exit_code == 0 and "[1, 2, 3]" in holdout.output_tail
    finally:
        shutil.rmtree(secret)


def test_a_daemon_dies_with_the_sandbox(box: dict[str, Path]) -> None:
    pidfile = box["art"] / "pid"
    daemon = (f"{PY} -c \"import os, time\nif os.fork() == 0:\n    os.setsid()\n"
              f"    open('{pidfile}', 'w').write(str(os.getpid()))\n"
              "    time.sleep(60)\"")  # fmt: skip
    boxed = run(box, daemon + " ; sleep 0.5", sandbox=ON)
    assert boxed.exit_code == 0
    # The pid is the one inside the sandbox's PID namespace; none of its processes is left.
    ps = subprocess.run(["pgrep", "-f", "time.sleep\\(60\\)"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""


def test_pids_limit(box: dict[str, Path]) -> None:
    spawn = (f"{PY} -c \"import subprocess, sys\nps = [subprocess.Popen(['sleep', '2']) "
             "for _ in range(40)]\n[p.kill() for p in ps]\"")  # fmt: skip
    control, boxed = both(box, spawn, sandbox=SandboxConfig(network=False, pids=20))
    assert control.exit_code == 0, control.output_tail
    assert boxed.exit_code != 0 and ("BlockingIOError" in boxed.output_tail
                                     or "Resource temporarily" in boxed.output_tail)  # fmt: skip


def test_memory_limit(box: dict[str, Path]) -> None:
    grab = f"{PY} -c \"b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096])\""
    control, boxed = both(box, grab, sandbox=SandboxConfig(network=False, memory="128M"))
    assert control.exit_code == 0, control.output_tail
    assert boxed.exit_code != 0  # MemoryError (rlimit) or killed by the OOM killer (cgroup)


def test_limits_work_without_bwrap_too(box: dict[str, Path]) -> None:
    grab = f"{PY} -c \"b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096])\""
    limited = SandboxConfig(network=True, memory="128M")
    assert run(box, grab, sandbox=limited).exit_code != 0
    assert "memory <= 128 MiB" in Sandbox(limited, box["repo"], dict(os.environ)).describe()


def test_pids_limit_refused_when_it_cannot_be_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("overnight.isolation.sandbox._cgroup_parent", lambda *a: None)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    with pytest.raises(UsageError, match="cannot be enforced"):
        Limits(None, 32)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    limits = Limits(2**30, 32)
    assert limits.rlimits == {"AS": 2**30, "NPROC": 32}
    assert limits.describe() == ["memory <= 1024 MiB (rlimit)", "pids <= 32 (rlimit)"]


def test_sizes() -> None:
    assert parse_size("512M") == 512 * 2**20 and parse_size("1.5g") == int(1.5 * 2**30)
    assert parse_size("100") == 100 and parse_size("2GiB") == 2 * 2**30
    with pytest.raises(ValueError):
        parse_size("lots")


def test_missing_or_broken_bwrap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERNIGHT_BWRAP", str(tmp_path / "nope"))
    with pytest.raises(UsageError, match="apt-get install bubblewrap"):
        Sandbox(ON, tmp_path, dict(os.environ)).check()
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("OVERNIGHT_BWRAP", str(fake))
    with pytest.raises(UsageError) as err:
        Sandbox(ON, tmp_path, dict(os.environ)).check()
    assert "No permissions to create new namespace" in str(err.value)
    assert "unprivileged_userns_clone" in str(err.value) and "unsandboxed" in str(err.value)
    # Without the sandbox, nothing is asked of bwrap.
    Sandbox(SandboxConfig(), tmp_path, dict(os.environ)).check()
    with pytest.raises(UsageError, match="needs the sandbox"):
        Sandbox(SandboxConfig(hide=["/x"]), tmp_path, dict(os.environ))


SCORE = "import os\nX = 10\nprint(f'score: {X}')\n"


def _study(tmp_path: Path, sandbox: str) -> Path:
    toml = (f'[study]\nname = "t"\nsurface = ["score.py"]\nbudget = "20s"\n\n'
            f'[run]\ncommand = "{PY} score.py"\n\n[metric]\nname = "score"\n\n'
            f'[proposer]\nkind = "support.scripted:ScriptedProposer"\n\n{sandbox}')  # fmt: skip
    return make_repo(tmp_path / "repo", {"score.py": SCORE, "overnight.toml": toml})


def test_cli_refuses_to_run_unsandboxed(tmp_path: Path) -> None:
    repo = _study(tmp_path, "[sandbox]\nnetwork = false\n")
    out = run_cli(repo, "run", "-n", "1", "--plain", env={"OVERNIGHT_BWRAP": "/no/bwrap"})
    assert out.returncode == 2, out.stdout + out.stderr
    assert "bubblewrap" in out.stderr and "apt-get install" in out.stderr
    assert not (repo / ".overnight" / "t" / "ledger.sqlite").exists()


def test_cli_records_the_isolation_of_each_experiment(tmp_path: Path) -> None:
    _require_bwrap()
    repo = _study(tmp_path, "[sandbox]\nnetwork = false\n")
    env = write_script(tmp_path / "s.json", [
        {"files": {"score.py": SCORE.replace("X = 10", "X = 7")}, "description": "better"},
        {"files": {"score.py": SCORE + "open('overnight.toml', 'a').write('#')\n"},
         "description": "write a locked file"},
    ])  # fmt: skip
    out = run_cli(repo, "run", "-n", "2", "--plain", env=env)
    assert out.returncode == 0, out.stderr
    show = run_cli(repo, "show", "1")
    assert "isolation: bwrap" in show.stdout and "no network" in show.stdout
    locked = run_cli(repo, "show", "2")
    assert "crash" in locked.stdout and "Read-only file system" in locked.stdout


def test_tools_on_path_are_exposed_but_never_the_whole_home(tmp_path: Path) -> None:
    _require_bwrap()
    home = tmp_path / "home"
    venv = home / "proj" / ".venv"
    for d in (home / "bin", home / ".local" / "bin", home / ".local" / "share" / "keyrings",
              venv / "bin"):  # fmt: skip
        d.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    path = os.pathsep.join([str(home / "bin"), str(home / ".local" / "bin"), str(venv / "bin"),
                            os.environ["PATH"]])  # fmt: skip
    sb = Sandbox(ON, tmp_path / "repo", {**os.environ, "HOME": str(home), "PATH": path})
    sb.check()
    args = sb.bwrap_args(worktree=tmp_path / "repo" / "wt", writable=[], locked=[], trusted=False)
    bound = {args[i + 1] for i, a in enumerate(args) if a == "--ro-bind"}
    assert {str(home / "bin"), str(home / ".local" / "bin"), str(venv)} <= bound
    assert str(home) not in bound and str(home / ".local") not in bound
    assert ["--tmpfs", str(home)] == args[args.index(str(home)) - 1 : args.index(str(home)) + 1]
