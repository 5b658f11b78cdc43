"""A scripted model for real coding-agent CLIs: behind the fake provider (tests/support/
fake_llm.py) it plays the model of Claude Code, Codex or Aider well enough to make one knob
experiment per call, through the tools each CLI offers.

Each call of the agent is one *turn*: the latest overnight prompt (the user text that names
the description file) and the tool calls made for it. The calls of a turn are told apart by
their ids, which carry a hash of the turn's prompt: a continued session's conversation holds
earlier turns, and Claude Code reorders it (the latest prompt ends the last user message,
after the tool results of the calls made for it).
The brain reads the surface through the CLI's own tools, changes `X = n` by `step`, writes
the description file the prompt names (when `describe` is set) and says what it did:

- Claude Code (Anthropic Messages, tool use): Read the surface, Edit the knob, Write the
  description file, then a final text.
- Codex (OpenAI Responses, function calls): `exec_command` with `cat`, then one with `sed`
  and `printf` into the description file, then a final message.
- Aider (OpenAI Chat Completions, no tools): a SEARCH/REPLACE block for the knob, read from
  the file content Aider put into the chat. Aider cannot write the description file.

Side requests a CLI makes besides the turn (a title, a summary) get a short text.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from typing import Any

from support.fake_llm import Reply, Seen, ToolCall

DESCRIPTION_FILE = re.compile(r"\((/[^()\s]*description\.txt)\)")
WORKDIR = re.compile(r"(?:Primary working directory|[Ww]orking directory|cwd)\W+(/\S+)")


def _turn(prompt: str, prefix: str = "call") -> str:
    """The id prefix of the tool calls made for one prompt."""
    return f"{prefix}_{hashlib.sha1(prompt.encode()).hexdigest()[:10]}_"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(c.get("text") or c.get("content") or "")
                         for c in content if isinstance(c, dict))  # fmt: skip
    return ""


class KnobAgent:
    """Changes `<knob> = n` in `path` by `step` on every turn."""

    def __init__(self, path: str = "score.py", knob: str = "X", step: float = -1,
                 describe: bool = True) -> None:  # fmt: skip
        self.path, self.knob, self.step, self.describe = path, knob, step, describe
        # `KNOB = value`, maybe with a comment, maybe behind a Read tool's line number.
        self.line = re.compile(rf"^(?:\s*\d+[\t→|]\s?)?({re.escape(knob)} = (\S+)(?:\s+#.*)?)$",
                               re.M)  # fmt: skip

    def __call__(self, seen: Seen) -> Reply:
        if not seen.body.get("tools") and seen.api != "chat":
            return Reply("Knob experiment")  # a title or summary request
        if seen.api == "anthropic":
            return self._anthropic(seen.body)
        if seen.api == "responses":
            return self._responses(seen.body)
        return self._chat(seen.body)

    # -- helpers -------------------------------------------------------------------------

    def _new(self, old: str) -> str:
        value = float(old) + self.step
        return str(int(value)) if value == int(value) and "." not in old else f"{value:g}"

    def _description(self, old: str, new: str) -> str:
        return (f"DESCRIPTION: {self.knob} {old} -> {new}\n"
                f"HYPOTHESIS: moving {self.knob} by {self.step:g} improves the metric\n")

    def _found(self, text: str) -> tuple[str, str, str] | None:
        """(the knob's whole line, its value, the line with the new value)."""
        hits = self.line.findall(text.replace("\r\n", "\n"))
        if not hits:
            return None
        line, old = hits[-1]
        new = self._new(old)
        return line, old, line.replace(f"{self.knob} = {old}", f"{self.knob} = {new}", 1)

    # -- Claude Code ---------------------------------------------------------------------

    def _anthropic(self, body: dict[str, Any]) -> Reply:
        blocks = [(m.get("role"), c) for m in body.get("messages", [])
                  for c in (m.get("content") if isinstance(m.get("content"), list)
                            else [{"type": "text", "text": m.get("content") or ""}])
                  if isinstance(c, dict)]  # fmt: skip
        prompts = [c.get("text", "") for role, c in blocks if role == "user"
                   and c.get("type") == "text" and "description.txt" in c.get("text", "")]
        prompt = prompts[-1] if prompts else ""
        turn = _turn(prompt, "toolu")
        results: dict[str, str] = {}
        calls: list[dict[str, Any]] = []
        for _, c in blocks:
            if c.get("type") == "tool_use" and str(c.get("id", "")).startswith(turn):
                calls.append(c)
            elif c.get("type") == "tool_result":
                results[c.get("tool_use_id", "")] = _text(c.get("content"))
        n = len(calls)
        system = _text(body.get("system"))
        cwd = WORKDIR.search(system + "\n" + prompt)
        target = f"{cwd.group(1) if cwd else '.'}/{self.path}"
        done = [c["name"] for c in calls]
        if "Read" not in done:
            return Reply(tool_calls=[ToolCall("Read", {"file_path": target}, f"{turn}{n + 1}")])
        read = next(c for c in calls if c["name"] == "Read")
        found = self._found(results.get(read["id"], ""))
        if found is None:
            return Reply(f"I found no `{self.knob} = …` line in {self.path}.")
        line, old, changed = found
        new = self._new(old)
        if "Edit" not in done:
            edit = {"file_path": target, "old_string": line, "new_string": changed}
            return Reply(tool_calls=[ToolCall("Edit", edit, f"{turn}{n + 1}")])
        desc = DESCRIPTION_FILE.search(prompt)
        if self.describe and desc and "Write" not in done:
            write = {"file_path": desc.group(1), "content": self._description(old, new)}
            return Reply(tool_calls=[ToolCall("Write", write, f"{turn}{n + 1}")])
        return Reply(f"Changed {self.knob} from {old} to {new} in {self.path}.")

    # -- Codex ---------------------------------------------------------------------------

    def _responses(self, body: dict[str, Any]) -> Reply:
        items = [i for i in body.get("input", []) if isinstance(i, dict)]
        prompts = [_text(i.get("content")) for i in items if i.get("type") == "message"
                   and i.get("role") == "user" and "description.txt" in _text(i.get("content"))]
        prompt = prompts[-1] if prompts else ""
        turn = _turn(prompt)
        ours = {i.get("call_id") for i in items
                if i.get("type") == "function_call" and str(i.get("call_id", "")).startswith(turn)}
        outputs = [str(i.get("output", "")) for i in items
                   if i.get("type") == "function_call_output" and i.get("call_id") in ours]
        n = len(ours)
        if not outputs:
            cat = {"cmd": f"cat {shlex.quote(self.path)}"}
            return Reply(tool_calls=[ToolCall("exec_command", cat, f"{turn}{n + 1}")])
        found = self._found(outputs[0])
        if found is None:
            return Reply(f"I found no `{self.knob} = …` line in {self.path}.")
        line, old, changed = found
        new = self._new(old)
        if len(outputs) == 1:
            script = (f"import pathlib; p = pathlib.Path({self.path!r}); "
                      f"p.write_text(p.read_text().replace({line!r}, {changed!r}, 1))")
            cmd = f"python3 -c {shlex.quote(script)}"
            desc = DESCRIPTION_FILE.search(prompt)
            if self.describe and desc:
                cmd += (f" && printf '%s' {shlex.quote(self._description(old, new))} > "
                        f"{shlex.quote(desc.group(1))}")
            return Reply(tool_calls=[ToolCall("exec_command", {"cmd": cmd}, f"{turn}{n + 1}")])
        return Reply(f"Changed {self.knob} from {old} to {new} in {self.path}.")

    # -- Aider ---------------------------------------------------------------------------

    def _chat(self, body: dict[str, Any]) -> Reply:
        shown = "\n".join(_text(m.get("content")) for m in body.get("messages", [])
                          if m.get("role") in ("user", "system"))  # fmt: skip
        found = self._found(shown)
        if found is None:
            return Reply("Ok.")
        line, old, changed = found
        new = self._new(old)
        block = (f"{self.path}\n```python\n<<<<<<< SEARCH\n{line}\n=======\n{changed}\n"
                 ">>>>>>> REPLACE\n```\n")
        return Reply(f"Change {self.knob} from {old} to {new}.\n\n{block}")


def dump(seen: list[Seen]) -> str:
    """The requests a run made, for debugging a recipe."""
    return "\n".join(json.dumps({"path": s.path, "body": s.body})[:2000] for s in seen)
