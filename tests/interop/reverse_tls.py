#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 1.x client over Streamable
HTTP on HTTPS (`mcp-relay reverse --tls-cert ... -- echo_server`).

Usage:
    SSL_CERT_FILE=ca.pem python3 reverse_tls.py https://localhost:PORT/mcp

httpx (under the SDK) trusts the CA in SSL_CERT_FILE only, so the handshake
verifies the relay's certificate for `localhost`. Asserts: initialize,
tools/list (`echo`), two tools/call of `echo` on the one session. Prints
`interop ok: ...`; any failure raises.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamablehttp_client

OVERALL_TIMEOUT_S = 30


async def run(url: str) -> str:
    assert url.startswith("https://"), url
    assert os.environ.get("SSL_CERT_FILE"), "SSL_CERT_FILE names the test CA"
    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with streamablehttp_client(url) as (read, write, _sid):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                tools = await session.list_tools()
                names = [t.name for t in tools.tools]
                assert names == ["echo"], names
                for text in ("over https", "and again"):
                    result = await session.call_tool("echo", {"text": text})
                    got = result.content[0].text
                    assert got == text, got
                return f"version {init.protocolVersion}, server {init.serverInfo.name}, tools {names}"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {os.path.basename(sys.argv[0])} URL")
    print("interop ok:", anyio.run(run, sys.argv[1]))


if __name__ == "__main__":
    main()
