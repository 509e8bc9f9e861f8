#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 2.x client (mode='auto')
through `mcp-relay forward --url` or `mcp-relay reverse --url` to a Python
SDK 2.x server over Streamable HTTP (tests/interop/modern_http_server.py).

Usage:
    python3 url_modern.py forward RELAY_BIN UPSTREAM_URL [RELAY_FLAG...]
    python3 url_modern.py reverse RELAY_MCP_URL

Asserts the negotiated protocol version (INTEROP_EXPECT, default
2026-07-28), that tools/list names `echo` and `count_with_progress`, that a
call of `echo` answers its text and one of `count_with_progress` reports
progress 1..3 before its result. Prints `interop ok: ...`; any failure raises.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters

OVERALL_TIMEOUT_S = 30


async def run(server: object) -> str:
    expect = os.environ.get("INTEROP_EXPECT", "2026-07-28")
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with Client(server, mode="auto") as client:
            version = client.protocol_version
            assert version == expect, f"negotiated {version}, expected {expect}"
            tools = await client.list_tools()
            names = sorted(t.name for t in tools.tools)
            assert "echo" in names and "count_with_progress" in names, names
            result = await client.call_tool("echo", {"text": "hello across eras over http"})
            text = result.content[0].text
            assert text == "hello across eras over http", text
            result = await client.call_tool("count_with_progress", {"steps": 3}, progress_callback=on_progress)
            assert result.content[0].text == "counted to 3", result
            assert progress == [1, 2, 3], progress
            info = client.server_info
            return f"version {version}, server {info.name if info else None}, tools {names}, progress {progress}"


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[1] == "forward":
        relay, url, flags = argv[2], argv[3], argv[4:]
        server: object = StdioServerParameters(
            command=relay, args=["forward", "--url", url, *flags], env=dict(os.environ)
        )
    elif len(argv) == 3 and argv[1] == "reverse":
        server = argv[2]
    else:
        sys.exit(__doc__)
    done = anyio.run(run, server)
    print(f"interop ok: {done}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
