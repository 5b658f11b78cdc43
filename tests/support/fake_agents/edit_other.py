"""A rule-breaking agent: edits the surface, but also a locked file and adds a new one."""

from pathlib import Path

from _common import describe, lower_x, read_prompt

read_prompt()
lower_x()
Path("helper.txt").write_text("changed by the agent\n")
Path("notes.txt").write_text("a new file\n")
describe("DESCRIPTION: lower X and tidy the helper\n")
print("edited more than the surface")
