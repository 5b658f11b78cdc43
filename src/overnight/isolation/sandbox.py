"""The sandbox of a run: bubblewrap (`bwrap`) namespaces plus optional memory/pids limits.

`[sandbox] network = false` runs every command of an experiment under bwrap:
- no network (`--unshare-net`: a private loopback only),
- the filesystem read-only (`--ro-bind / /`), except the candidate worktree, the run's
  artifact and trace directories, a private /tmp and /dev/shm and an empty $HOME;
- locked files (tracked files outside the surface, `protect` files) and `.git` mounted
  read-only on top of the writable worktree, so writing them fails outright;
- the user's home and checkout hidden (the study's ledger, other experiments, untracked
  holdout data), except the interpreters on PATH and `[sandbox].expose`;
- `[sandbox].hide` hidden from every command but the trusted `[holdout].command`;
- `--die-with-parent`, `--new-session`, a private PID namespace (a daemon dies with its run).

Every run, sandboxed or not, is also watched by the runner: its processes' resident memory
may not exceed `memory` ("auto", the default: 90% of the machine's memory), or it is
killed with that reason. Explicit limits (`memory`, `pids`) are also enforced by the kernel,
with a cgroup when one can be created (root, or a delegated cgroup v2 subtree), else
rlimits: RLIMIT_AS for memory (address space, a blunt proxy) and RLIMIT_NPROC for pids
(counts all processes of the user; not enforced for root, so then the sandbox refuses to
start). If bwrap is missing or cannot start, `check()` raises a usage
error: overnight never runs silently unsandboxed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from overnight.config import SandboxConfig
from overnight.errors import UsageError
from overnight.isolation.capture import LOG_CAP, human
from overnight.isolation.runner import AUTO_MEMORY_SHARE, auto_memory_limit
from overnight.values import parse_size

INSTALL = (
    "install bubblewrap: `sudo apt-get install bubblewrap` (Debian/Ubuntu), "
    "`sudo dnf install bubblewrap` (Fedora), `sudo pacman -S bubblewrap` (Arch); "
    "or set [sandbox] network = true to run without the sandbox"
)
USERNS_HINT = (
    "bwrap could not create namespaces. Unprivileged user namespaces may be disabled: "
    "`sudo sysctl -w kernel.unprivileged_userns_clone=1` (Debian), or restricted by AppArmor "
    "(Ubuntu >= 23.10): `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`; in "
    "Docker, start the container with `--security-opt seccomp=unconfined --security-opt "
    "apparmor=unconfined` (or --privileged)"
)
# Attempts from the most to the least isolated; the first one that starts is used.
# A PID namespace needs a fresh /proc, which unprivileged containers often refuse to mount.
VARIANTS: list[tuple[str, list[str], list[str]]] = [
    ("pid namespace", ["--unshare-pid"], ["--proc", "/proc"]),
    ("user and pid namespaces", ["--unshare-user", "--unshare-pid"], ["--proc", "/proc"]),
    ("host /proc", [], []),
]

# Runs in a fresh interpreter in front of bwrap: joins the cgroups, sets the rlimits, execs.
LIMITER = """\
import json, os, resource, sys
spec = json.loads(sys.argv[1])
for path in spec["cgroups"]:
    with open(os.path.join(path, "cgroup.procs"), "w") as fh:
        fh.write(str(os.getpid()))
for name, value in spec["rlimits"].items():
    resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))
os.execvp(sys.argv[2], sys.argv[2:])
"""


def find_bwrap() -> str | None:
    """The bwrap binary: $OVERNIGHT_BWRAP when set (even to a missing path), else PATH."""
    override = os.environ.get("OVERNIGHT_BWRAP")
    if override is not None:
        return override if os.access(override, os.X_OK) else None
    return shutil.which("bwrap")


# == cgroups =================================================================================


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    out = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def _mounts() -> dict[str, str]:
    """controller (or "" for the v2 hierarchy) -> its mount point."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) < 3 or len(fields) < 5:
                continue
            if rfields[0] == "cgroup2":
                out.setdefault("", fields[4])
            elif rfields[0] == "cgroup":
                for opt in rfields[2].split(","):
                    if opt in ("memory", "pids"):
                        out.setdefault(opt, fields[4])
    return out


def _cgroup_parent(controller: str, limit_file: str) -> Path | None:
    """A directory where we may create a child cgroup that has `limit_file`, or None."""
    own, mounts = _own_cgroups(), _mounts()
    for key in (controller, ""):  # v1 hierarchy of the controller first, then v2
        if key not in mounts or key not in own:
            continue
        parent = Path(mounts[key]) / own[key].lstrip("/")
        probe = parent / f"overnight-probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            if (probe / limit_file).exists():
                return parent
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()
    return None


class Limits:
    """Memory and process-count limits of a run, by cgroup or by rlimit."""

    def __init__(self, memory: int | None, pids: int | None) -> None:
        self.memory, self.pids = memory, pids
        self.cgroups: dict[str, tuple[Path, str]] = {}  # what -> (parent dir, limit file)
        self.rlimits: dict[str, int] = {}
        wanted = [("memory", memory, "memory", ("memory.max", "memory.limit_in_bytes"), "AS"),
                  ("pids", pids, "pids", ("pids.max",), "NPROC")]  # fmt: skip
        self.how: dict[str, str] = {}
        for what, amount, controller, files, rlimit in wanted:
            if amount is None:
                continue
            for limit_file in files:
                parent = _cgroup_parent(controller, limit_file)
                if parent is not None:
                    self.cgroups[what] = (parent, limit_file)
                    self.how[what] = "cgroup"
                    break
            else:
                if what == "pids" and os.geteuid() == 0:
                    raise UsageError(
                        f"[sandbox].pids = {pids}: cannot be enforced here: no writable cgroup "
                        "with the pids controller, and RLIMIT_NPROC does not apply to root. "
                        "Run as a normal user, give overnight a delegated cgroup, or remove "
                        "[sandbox].pids."
                    )
                self.rlimits[rlimit] = amount
                self.how[what] = "rlimit"

    def __bool__(self) -> bool:
        return self.memory is not None or self.pids is not None

    def describe(self) -> list[str]:
        parts = []
        if self.memory is not None:
            parts.append(f"memory <= {self.memory // 2**20} MiB ({self.how['memory']})")
        if self.pids is not None:
            parts.append(f"pids <= {self.pids} ({self.how['pids']})")
        return parts

    @contextlib.contextmanager
    def applied(self) -> Iterator[list[str]]:
        """The argv prefix that applies the limits to what follows it; cgroups live as long
        as the context."""
        made: list[Path] = []
        try:
            for what, (parent, limit_file) in self.cgroups.items():
                d = parent / f"overnight-{uuid.uuid4().hex[:12]}"
                d.mkdir()
                made.append(d)
                (d / limit_file).write_text(str(self.memory if what == "memory" else self.pids))
                if what == "memory":  # swap would let a run exceed the limit unnoticed
                    for swap in ("memory.swap.max", "memory.memsw.limit_in_bytes"):
                        with contextlib.suppress(OSError):
                            (d / swap).write_text("0" if swap.endswith("max") else str(self.memory))
            if not made and not self.rlimits:
                yield []
                return
            spec = {"cgroups": [str(d) for d in made], "rlimits": self.rlimits}
            yield [sys.executable, "-I", "-c", LIMITER, json.dumps(spec)]
        finally:
            for d in made:
                _remove_cgroup(d)


def _remove_cgroup(d: Path) -> None:
    # The runner has killed every process of the run by now, but the kernel may take a
    # moment to drop them from the cgroup.
    for _ in range(50):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


# == bubblewrap ==============================================================================


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _python_install(directory: Path) -> bool:
    """Whether `directory` is a Python installation (venv, conda env, pyenv root, prefix)."""
    return (
        (directory / "pyvenv.cfg").exists()
        or (directory / "conda-meta").is_dir()
        or (directory / "versions").is_dir()
        and (directory / "libexec").is_dir()  # pyenv
        or any((directory / "lib").glob("python3*"))
    )


def interpreter_paths(env: dict[str, str]) -> list[Path]:
    """What a run needs to find its tools: the PATH directories, the Python installations
    they belong to (a venv, conda env or pyenv root, not a whole `~/.local` or `~/.cargo`
    with its credentials), the interpreters they resolve to, this interpreter's prefixes."""
    found: list[Path] = []
    for entry in env.get("PATH", "").split(os.pathsep):
        if not entry or not os.path.isabs(entry) or not os.path.isdir(entry):
            continue
        d = Path(entry)
        found.append(d)
        if _python_install(d.parent):
            found.append(d.parent)
        for name in ("python", "python3"):
            exe = d / name
            if exe.exists():
                real = Path(os.path.realpath(exe)).parent
                found += [real, real.parent] if _python_install(real.parent) else [real]
    for p in (sys.prefix, sys.base_prefix, env.get("VIRTUAL_ENV"), env.get("CONDA_PREFIX")):
        if p:
            found.append(Path(p))
    return found


def _expand(path: str, root: Path, home: Path | None) -> Path:
    if path.startswith("~") and home is not None:
        path = str(home) + path[1:]
    p = Path(path)
    return p if p.is_absolute() else root / p


class Sandbox:
    """Builds the argv prefix that confines one command of a run."""

    def __init__(self, cfg: SandboxConfig, root: Path, env: dict[str, str]) -> None:
        self.cfg = cfg
        self.root = Path(root).resolve()
        self.enabled = not cfg.network
        home = env.get("HOME")
        self.home = Path(home).resolve() if home and Path(home).is_dir() else None
        memory = cfg.memory.strip().lower()
        explicit = parse_size(memory) if memory not in ("", "none", "auto") else None
        self.limits = Limits(explicit, cfg.pids or None)
        # The runner's own watch (every run): "auto" is a share of this machine's memory.
        self.auto_memory = memory == "auto"
        self.max_rss: int | None = (auto_memory_limit() if self.auto_memory else explicit)
        self.expose = [self._spec(p) for p in cfg.expose]
        self.hide = [_expand(p, self.root, self.home) for p in cfg.hide]
        if not self.enabled and (cfg.hide or cfg.expose):
            key = "hide" if cfg.hide else "expose"
            raise UsageError(
                f"[sandbox].{key} needs the sandbox: set [sandbox] network = false "
                "(runs under bubblewrap) or remove it"
            )
        self.bwrap = find_bwrap() if self.enabled else None
        self.variant = VARIANTS[0]
        self.env = env

    def _spec(self, text: str) -> tuple[Path, bool]:
        writable = text.endswith(":rw")
        return _expand(text.removesuffix(":rw"), self.root, self.home), writable

    def __bool__(self) -> bool:
        return self.enabled or bool(self.limits)

    # -- start-up ----------------------------------------------------------------------------

    def check(self) -> None:
        """Refuse to run when the sandbox was asked for and cannot work (exit 2)."""
        if not self.enabled:
            return
        if self.bwrap is None:
            where = os.environ.get("OVERNIGHT_BWRAP")
            what = f"$OVERNIGHT_BWRAP={where} is not executable" if where else "bwrap not found"
            raise UsageError(f"[sandbox] network = false needs bubblewrap: {what}; {INSTALL}")
        errors = []
        for variant in VARIANTS:
            argv = [self.bwrap, *self._base(variant), "--", "/bin/true"]
            try:
                out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
                continue
            if out.returncode == 0:
                self.variant = variant
                return
            errors.append(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else
                          f"exit {out.returncode}")  # fmt: skip
        raise UsageError(
            f"[sandbox] network = false: bubblewrap ({self.bwrap}) cannot start a sandbox "
            f"here: {errors[0]}\n{USERNS_HINT}\nRefusing to run unsandboxed; {INSTALL}"
        )

    def describe(self) -> str:
        """The isolation a run gets, as recorded with each experiment."""
        parts = []
        if self.enabled:
            parts.append(
                f"bwrap ({self.variant[0]}): no network, locked files and .git read-only, "
                "private /tmp, home and checkout hidden"
            )
            if self.hide:
                parts.append("hidden: " + ", ".join(str(p) for p in self.hide))
        parts += self.limits.describe()
        if self.auto_memory and self.max_rss:
            parts.append(f"memory <= {self.max_rss // 2**20} MiB (auto: "
                         f"{AUTO_MEMORY_SHARE:.0%} of this machine, watched)")  # fmt: skip
        parts.append(f"process reaper; logs kept up to {human(LOG_CAP)} a stream")
        return "; ".join(parts)

    # -- per command -------------------------------------------------------------------------

    @staticmethod
    def _base(variant: tuple[str, list[str], list[str]]) -> list[str]:
        _, unshare, mounts = variant
        return ["--die-with-parent", "--new-session", "--unshare-net", "--unshare-ipc",
                *unshare, "--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev", *mounts,
                "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]  # fmt: skip

    def _hidden_roots(self) -> list[Path]:
        roots = [Path("/tmp")]
        if self.home is not None and self.home != Path("/"):
            roots.append(self.home)
        if self.root != Path("/"):
            roots.append(self.root)
        return roots

    def bwrap_args(
        self, *, worktree: Path, writable: Sequence[Path], locked: Sequence[str], trusted: bool
    ) -> list[str]:
        """bwrap's argv (without the command) for one command. `trusted`: the holdout
        command, which alone sees `[sandbox].hide`."""
        assert self.bwrap is not None
        args = [self.bwrap, *self._base(self.variant)]
        roots = self._hidden_roots()
        for r in roots[1:]:
            args += ["--tmpfs", str(r)]
        # What the run needs from inside the hidden places, read-only.
        needed = [(p, False) for p in interpreter_paths(self.env)] + self.expose
        needed += [(p, False) for p in self.hide] if trusted else []
        # Outermost first, so a nested path is covered by its parent's mount; a writable
        # nested path (":rw") still gets its own mount on top.
        done: list[tuple[Path, bool]] = []
        for path, rw in sorted(((Path(os.path.abspath(p)), rw) for p, rw in needed),
                               key=lambda item: len(item[0].parts)):  # fmt: skip
            if not path.exists() or not any(_under(path, r) for r in roots):
                continue
            if any(_under(r, path) for r in roots):
                continue  # never re-expose a hidden place whole (`~/bin` on PATH: not `~`)
            if any(_under(path, d) and (drw or not rw) for d, drw in done):
                continue
            done.append((path, rw))
            args += ["--bind" if rw else "--ro-bind", str(path), str(path)]
        git_dir = self.root / ".git"
        if git_dir.exists():
            args += ["--ro-bind", str(git_dir), str(git_dir)]
        args += ["--bind", str(worktree), str(worktree)]
        for rel in [*locked, ".git"]:
            p = worktree / rel
            if p.exists() and not p.is_symlink():
                args += ["--ro-bind", str(p), str(p)]
        for d in writable:
            args += ["--bind", str(d), str(d)]
        if not trusted:
            for p in self.hide:
                if p.is_dir():
                    args += ["--tmpfs", str(p)]
                elif p.exists():
                    args += ["--ro-bind", "/dev/null", str(p)]
        return [*args, "--setenv", "TMPDIR", "/tmp", "--chdir", str(worktree), "--"]

    @contextlib.contextmanager
    def wrap(
        self, *, worktree: Path, writable: Sequence[Path], locked: Sequence[str], trusted: bool
    ) -> Iterator[list[str]]:
        """The argv prefix for `runner.run_command(wrap=...)`, valid inside the context."""
        prefix: list[str] = []
        with contextlib.ExitStack() as stack:
            if self.limits:
                prefix += stack.enter_context(self.limits.applied())
            if self.enabled:
                prefix += self.bwrap_args(
                    worktree=worktree, writable=writable, locked=locked, trusted=trusted
                )
            yield prefix
