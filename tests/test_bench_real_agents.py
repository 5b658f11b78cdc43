"""bench/real_agents.py finds the doc's recipes and skips the tools that are not installed
(CI has none of them; the script is run by hand where they are)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def test_it_reads_every_recipe_from_the_docs() -> None:
    import real_agents

    found = real_agents.recipes()
    assert set(found) == {"claude", "codex", "aider"}
    for tool, recipe in found.items():
        assert set(recipe) == {"plain", "command", "resume_command"}, tool
    assert found["codex"]["plain"].startswith("codex exec --sandbox workspace-write")
    assert "--resume" in found["claude"]["resume_command"]


def test_absent_tools_are_skipped(tmp_path: Path) -> None:
    path = os.pathsep.join(str(Path(p).parent) for p in (sys.executable, shutil.which("git")))
    env = {"PATH": path, "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "real_agents.py")], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    for tool in ("claude", "codex", "aider"):
        assert f"`{tool}` not on PATH, skipped" in out.stdout
