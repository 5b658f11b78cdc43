"""secrets.seal: after start-up the controller's environment holds no secret, neither in
os.environ (what its children inherit) nor in /proc/<pid>/environ (what another process can
read), and the code that needs a key still gets it by name."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from overnight.isolation import secrets

KEY = "sk-test-sealed-0123456789abcdef"

CONTROLLER = """
import os, subprocess, sys, time
from overnight.isolation import secrets
secrets.seal(["MY_LLM"])
child = subprocess.run(["env"], capture_output=True, text=True).stdout
print(secrets.get("ANTHROPIC_API_KEY"), secrets.get("MY_LLM"), secrets.get("PLAIN"))
print("in child:", "sk-test" in child, "PLAIN=visible" in child)
print("environ():", secrets.environ()["GITHUB_TOKEN"] == sys.argv[1])
print(secrets.sealed())
sys.stdout.flush()
open(sys.argv[2], "w").write("sealed")
time.sleep(30)
"""


def test_sealed_secrets_leave_the_process_environment(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    env = {k: v for k, v in os.environ.items() if not secrets.looks_secret(k)}
    env.update(ANTHROPIC_API_KEY=KEY, GITHUB_TOKEN=KEY, MY_LLM=KEY, PLAIN="visible")
    proc = subprocess.Popen([sys.executable, "-c", CONTROLLER, KEY, str(ready)], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        # What another process of the same user (here: root, which may even read it) sees.
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert KEY.encode() not in environ and b"PLAIN=visible" in environ
    finally:
        proc.kill()
    out = proc.communicate()[0].splitlines()
    assert out[0] == f"{KEY} {KEY} visible"  # asked by name, every secret is still there
    assert out[1] == "in child: False True"
    assert out[2] == "environ(): True"
    assert out[3] == "['ANTHROPIC_API_KEY', 'GITHUB_TOKEN', 'MY_LLM']"
