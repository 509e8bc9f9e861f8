#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 2.x client (mode='auto') over
Streamable HTTP, talking to `mcp-relay reverse -- echo_server` (a
handshake-era stdio server behind the relay, either pool mode). The relay
answers `server/discover` from an `initialize` it made itself and bridges
each request (docs/eras.md), so the client negotiates 2026-07-28.

Usage:
    python3 reverse_modern.py URL

Asserts: the negotiated protocol version is INTEROP_EXPECT (default
2026-07-28), the server named is INTEROP_SERVER_NAME (default the echo
server, `echo-server`), tools/list works, a
tools/call of `echo` works with progress (three notifications), and a
second call works too (each request is leased a process on its own).
Prints `interop ok: ...`; any failure raises.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.client.client import Client

OVERALL_TIMEOUT_S = 30


async def run(url: str) -> str:
    expect = os.environ.get("INTEROP_EXPECT", "2026-07-28")
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with Client(url, mode="auto") as client:
            version = client.protocol_version
            assert version == expect, f"negotiated {version}, expected {expect}"
            info = client.server_info
            want_name = os.environ.get("INTEROP_SERVER_NAME", "echo-server")
            assert info is not None and info.name == want_name, info
            tools = await client.list_tools()
            names = [t.name for t in tools.tools]
            assert names == ["echo"], names
            result = await client.call_tool(
                "echo",
                {"text": "hello across eras", "progress": 3, "interval_ms": 10},
                progress_callback=on_progress,
            )
            text = result.content[0].text
            assert text == "hello across eras", text
            assert progress == [1, 2, 3], progress
            again = await client.call_tool("echo", {"text": "again"})
            assert again.content[0].text == "again", again
            return f"version {version}, server {info.name}, tools {names}, progress {progress}"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {os.path.basename(sys.argv[0])} URL")
    print("interop ok:", anyio.run(run, sys.argv[1]))


if __name__ == "__main__":
    main()
