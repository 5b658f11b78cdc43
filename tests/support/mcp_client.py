"""A scripted MCP client for the tests of `overnight mcp`: the MCP SDK's own stdio client
talking to the real `overnight mcp` subprocess."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
from conftest import overnight_env
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


@asynccontextmanager
async def agent(repo: Path, env: dict[str, str] | None = None,
                *args: str) -> AsyncIterator[ClientSession]:  # fmt: skip
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "overnight", "mcp", *args], cwd=str(repo),
        env=overnight_env(env),
    )  # fmt: skip
    with open(repo.parent / "server.log", "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def call(s: ClientSession, tool: str, progress: Any = None, **args: Any) -> dict:
    res = await s.call_tool(tool, args, progress_callback=progress)
    text = res.content[0].text
    assert not res.is_error, text
    assert res.structured_content == json.loads(text)
    return json.loads(text)


async def refused(s: ClientSession, tool: str, **args: Any) -> str:
    res = await s.call_tool(tool, args)
    assert res.is_error
    return res.content[0].text


async def until(predicate: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await anyio.sleep(0.05)


async def ready(s: ClientSession) -> dict:
    async def check() -> dict | None:
        st = await call(s, "study")
        return st if st["session"]["state"] == "ready" else None

    return await until(check)


async def decided(s: ClientSession, n: int) -> dict:
    async def check() -> dict | None:
        info = await call(s, "show", experiment=n)
        return info if info["status"] else None

    return await until(check)


def server_process() -> psutil.Process:
    """The `overnight mcp` process the client started."""
    (server,) = [p for p in psutil.Process().children(recursive=True)
                 if p.cmdline()[-1:] == ["mcp"]]  # fmt: skip
    return server


def lines(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0
