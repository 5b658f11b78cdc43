"""An agent that edits the surface and then crashes: the edit must be discarded, and the
end of its error output is the reason."""

import sys

from _common import lower_x, read_prompt

read_prompt()
lower_x()
print("working on it", flush=True)
print("fake agent: internal error, giving up", file=sys.stderr)
print("Traceback (most recent call last):", file=sys.stderr)
print("RuntimeError: model overloaded", file=sys.stderr)
sys.exit(3)
