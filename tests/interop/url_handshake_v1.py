#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 1.x client (handshake era)
through `mcp-relay forward --url URL --upstream-protocol modern` to a Python
SDK 2.x server over Streamable HTTP (tests/interop/modern_http_server.py):
the relay answers `initialize` from the server's `server/discover` and stamps
every request with the 2026-07-28 envelope and headers.

Usage:
    python3 url_handshake_v1.py RELAY_BIN UPSTREAM_URL [RELAY_FLAG...]

Asserts: initialize succeeds at a handshake revision, naming the 2.x server;
tools/list names `echo`; `echo` answers its text; `count_with_progress`
reports progress 1..3 before its result. Prints `interop ok: ...`.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

OVERALL_TIMEOUT_S = 30


async def run(relay: str, url: str, flags: list[str]) -> str:
    params = StdioServerParameters(command=relay, args=["forward", "--url", url, *flags], env=dict(os.environ))
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            version = init.protocolVersion
            assert not version.startswith("2026"), version
            assert init.serverInfo.name == "interop-modern-http", init.serverInfo
            tools = await session.list_tools()
            names = sorted(t.name for t in tools.tools)
            assert "echo" in names, names
            result = await session.call_tool("echo", {"text": "old client, new server"})
            assert result.content[0].text == "old client, new server", result
            result = await session.call_tool("count_with_progress", {"steps": 3}, progress_callback=on_progress)
            assert result.content[0].text == "counted to 3", result
            assert progress == [1, 2, 3], progress
            return f"version {version}, server {init.serverInfo.name}, tools {names}, progress {progress}"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.exit(__doc__)
    done = anyio.run(run, argv[1], argv[2], argv[3:])
    print(f"interop ok: {done}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
