"""A warm interpreter for the bench's experiment commands: `python train.py`, minus the
second of importing scikit-learn or numpy in every run.

    python bench/warm.py serve SOCKET [--preload numpy,sklearn.ensemble]   # the server
    python bench/warm.py run train.py [args...]                             # one run

The server imports the heavy modules once and forks a child per run; the client hands the
child its own stdin/stdout/stderr (SCM_RIGHTS over a Unix socket), its working directory,
environment and arguments, and exits with the child's exit status. So a run still prints
where overnight reads it, in the candidate's worktree, with `OVERNIGHT_SEED` and the rest of
its environment; only the imports are shared. The client finds the server through
$BENCH_WARM_SOCKET and falls back to running the script itself when it is unset.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def run(argv: list[str]) -> int:
    path = os.environ.get("BENCH_WARM_SOCKET", "")
    if not path:
        os.execv(sys.executable, [sys.executable, *argv])
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        socket.send_fds(conn, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
        reply = b""
        while chunk := conn.recv(64):
            reply += chunk
    return int(reply or b"1")


def _child(conn: socket.socket) -> None:
    header, fds, _, _ = socket.recv_fds(conn, 8, 3)
    size = int.from_bytes(header, "big")
    data = b""
    while len(data) < size:
        data += conn.recv(size - len(data))
    request = json.loads(data)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    sys.path[0] = request["cwd"]
    code = 0
    try:
        import runpy

        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a run's crash is its exit status, as in python
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    conn.sendall(str(code).encode())
    conn.close()
    os._exit(0)


def serve(path: str, preload: list[str]) -> None:
    import importlib
    import signal

    for name in preload:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(64)
        print("ready", flush=True)
        while True:
            conn, _ = server.accept()
            if os.fork() == 0:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _child(conn)
            conn.close()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        modules = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[3] == "--preload" else []
        serve(sys.argv[2], [m for m in modules if m])
    elif len(sys.argv) >= 3 and sys.argv[1] == "run":
        sys.exit(run(sys.argv[2:]))
    else:
        sys.exit(__doc__)
