"""An agent that writes no description file: its last output line describes the change."""

from _common import lower_x, read_prompt

read_prompt()
old, new = lower_x()
print("Reading score.py ...")
print(f"Set X to {new} (was {old})")
print()
