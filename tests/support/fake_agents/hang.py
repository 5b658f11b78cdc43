"""An agent that never finishes, with a child process; writes their pids to $FAKE_PIDS."""

import os
import subprocess
import sys
import time
from pathlib import Path

from _common import lower_x, read_prompt

read_prompt()
lower_x()  # a half-done edit that must never be used
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
Path(os.environ["FAKE_PIDS"]).write_text(f"{os.getpid()} {child.pid}\n")
print("thinking very hard...", flush=True)
time.sleep(600)
