"""An agent that edits the surface and then crashes: the edit must be discarded."""

import sys

from _common import lower_x, read_prompt

read_prompt()
lower_x()
print("fake agent: internal error, giving up", file=sys.stderr)
sys.exit(3)
