#!/usr/bin/env python3
"""The handshake-era server of handshake_server_v1.py (Python SDK 1.x,
FastMCP: `echo`, `ask` with elicitation, `file:///note` with
`resources/subscribe`, `touch`) served over Streamable HTTP on
http://127.0.0.1:PORT/mcp, for tests/interop_url_eras.rs. Adds:

- tool `hang`: waits up to 60 s; a cancellation (`notifications/cancelled`
  for its request) ends it early and is counted;
- tool `cancellations`: the number of `hang` calls cancelled so far.

Usage: python3 handshake_http_v1.py PORT
"""

import os
import sys

import anyio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import handshake_server_v1 as base  # noqa: E402

cancelled: list[str] = []


@base.mcp.tool()
async def hang() -> str:
    """Waits until cancelled (at most 60 s)."""
    try:
        await anyio.sleep(60)
    except anyio.get_cancelled_exc_class():
        cancelled.append("hang")
        raise
    return "not cancelled"


@base.mcp.tool()
async def cancellations() -> str:
    """How many `hang` calls were cancelled."""
    return str(len(cancelled))


if __name__ == "__main__":
    base.mcp.settings.host = "127.0.0.1"
    base.mcp.settings.port = int(sys.argv[1])
    print(f"handshake-v1 http on 127.0.0.1:{sys.argv[1]}", flush=True)
    base.mcp.run("streamable-http")
