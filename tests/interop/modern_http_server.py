#!/usr/bin/env python3
"""A Python SDK 2.x `MCPServer` over Streamable HTTP, for the era interop
tests of `forward --url` and `reverse --url` (tests/interop_url_eras.rs).

Usage:
    python3 modern_http_server.py PORT

Serves http://127.0.0.1:PORT/mcp. The 2.x server serves both eras on one
endpoint: a request whose `MCP-Protocol-Version` header names 2026-07-28 is
served statelessly (no session), anything else by the handshake-era
transport (`initialize`, `Mcp-Session-Id`).

Tools:
  * echo(text)               -> text
  * count_with_progress(steps) reports progress 1..steps, then "counted to <steps>"
  * touch()                  publishes an update of `file:///note` to the
                             `subscriptions/listen` streams that asked, then "touched"

Every HTTP request is printed to stdout as one line (`upstream: METHOD PATH
session=... protocol=... method=... -> STATUS`), so the harness can tell which
era the relay spoke. Prints `modern server starting on 127.0.0.1:PORT` first.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer

TRACED = (("mcp-session-id", "session"), ("mcp-protocol-version", "protocol"), ("mcp-method", "method"))


def trace(app: Any) -> Any:
    async def traced(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        fields = " ".join(f"{label}={headers[h]!r}" for h, label in TRACED if h in headers)
        line = f"upstream: {scope['method']} {scope['path']} {fields}"

        async def send_traced(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                print(f"{line} -> {message['status']}", flush=True)
            await send(message)

        await app(scope, receive, send_traced)

    return traced


class Traced(MCPServer):
    def streamable_http_app(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        return trace(super().streamable_http_app(*args, **kwargs))


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit(f"usage: {sys.argv[0]} PORT")
    port = int(sys.argv[1])
    mcp = Traced("interop-modern-http")

    @mcp.tool()
    def echo(text: str) -> str:
        """Echoes the text."""
        return text

    @mcp.tool()
    async def count_with_progress(steps: int, ctx: Context) -> str:
        """Counts to `steps`, reporting progress at each step."""
        for i in range(1, steps + 1):
            await anyio.sleep(0.02)
            await ctx.report_progress(i, steps)
        return f"counted to {steps}"

    @mcp.tool()
    async def touch(ctx: Context) -> str:
        """Announces an update of file:///note to the listens that asked."""
        await ctx.notify_resource_updated("file:///note")
        return "touched"

    print(f"modern server starting on 127.0.0.1:{port}", flush=True)
    mcp.run(transport="streamable-http", host="127.0.0.1", port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
