"""An agent that writes no description file and ends its output with a token count, as
Aider does: the description must come from the edit, never from that line."""

from _common import lower_x, read_prompt

read_prompt()
old, new = lower_x()
print("Reading score.py ...")
print(f"Set X to {new} (was {old})")
print("Tokens: 14k sent, 8 received.")
print()
