"""What driving a study through `overnight mcp` adds to each experiment.

A real `overnight mcp` subprocess and the MCP SDK's own client over stdio; a trivial run
(`sed` prints the surface's number as the metric), so nearly all of the time is overnight's.
Each `submit(wait=true)` is timed at the client: round trip, and round trip minus the run's
own wall time (what the tools, the desk, the pipeline, git and the ledger add). `study()`
and `show()` are timed too, since an agent calls them between submissions.

    python bench/mcp_roundtrip.py [--submits 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import make_repo, med_iqr, overnight_env, table

CONFIG = """
[study]
name = "bench"
surface = ["knob.txt"]
budget = "30s"

[run]
command = "sed 's/^/score: /' knob.txt"

[metric]
name = "score"
goal = "minimize"
"""


async def measure(repo: Path, submits: int) -> dict[str, list[float]]:
    import json

    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "overnight", "mcp"],
                                   cwd=str(repo), env=overnight_env())  # fmt: skip
    out: dict[str, list[float]] = {"submit": [], "overhead": [], "study": [], "show": []}
    with open(repo.parent / "server.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                while json.loads((await s.call_tool("study", {})).content[0].text)[
                        "session"]["state"] != "ready":  # fmt: skip
                    await anyio.sleep(0.05)
                for i in range(submits):
                    t0 = time.perf_counter()
                    knob = 1000 - i
                    args = {"files": {"knob.txt": f"{knob}\n"}, "description": f"knob {knob}"}
                    res = await s.call_tool("submit", args)
                    took = time.perf_counter() - t0
                    verdict = json.loads(res.content[0].text)
                    assert verdict["status"] == "keep", verdict
                    out["submit"].append(took * 1000)
                    out["overhead"].append((took - verdict["wall_s"]) * 1000)
                    t0 = time.perf_counter()
                    await s.call_tool("study", {})
                    out["study"].append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    await s.call_tool("show", {"experiment": verdict["experiment"]})
                    out["show"].append((time.perf_counter() - t0) * 1000)
                await s.call_tool("stop", {})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submits", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="5 submits")
    args = ap.parse_args()
    import anyio

    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo", {"knob.txt": "1001\n", "overnight.toml": CONFIG})
        res = anyio.run(measure, repo, 5 if args.quick else args.submits)
    fmt = "{:.0f}"
    print("## Q7. Driving a study through `overnight mcp`: cost per experiment\n")
    print(table(["call (ms, median [IQR])", "value"], [
        ["submit(wait=true), round trip", med_iqr(res["submit"], fmt)],
        ["  of which not the run (tools, desk, pipeline, git, ledger)",
         med_iqr(res["overhead"], fmt)],
        ["study()", med_iqr(res["study"], fmt)],
        ["show(n)", med_iqr(res["show"], fmt)],
    ], "lr"))  # fmt: skip
    print(f"\n{len(res['submit'])} sequential keeps of a trivial run through the real server "
          "and the MCP SDK's stdio client. For comparison, `bench/overhead.py` measures the "
          "loop's own bookkeeping per experiment, in-process.")  # fmt: skip


if __name__ == "__main__":
    main()
