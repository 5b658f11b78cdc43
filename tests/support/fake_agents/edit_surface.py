"""A well-behaved agent: lowers X in the surface and writes its description file."""

import os

from _common import describe, lower_x, read_prompt, report_env

read_prompt()
old, new = lower_x()
report_env()
key = os.environ.get(os.environ.get("FAKE_ECHO_KEY", ""), "")
describe(
    f"DESCRIPTION: lower X from {old} to {new} {key}\n"
    "HYPOTHESIS: the score is X itself, so a smaller X scores lower\n"
    "LESSON: lowering X has worked so far\n"
)
print("done editing")
