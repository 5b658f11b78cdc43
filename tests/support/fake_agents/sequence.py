"""Runs the k-th agent of $FAKE_PLAN (comma-separated script names) on the k-th call."""

import os
import sys
from pathlib import Path

counter = Path(os.environ["FAKE_STATE"])
k = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(k + 1))
plan = os.environ["FAKE_PLAN"].split(",")
script = Path(__file__).with_name(plan[min(k, len(plan) - 1)] + ".py")
os.execv(sys.executable, [sys.executable, str(script)])
