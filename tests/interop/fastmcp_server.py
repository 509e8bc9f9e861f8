#!/usr/bin/env python3
"""A small Python SDK FastMCP server for the `forward --url` interop test.

Usage:
    python3 fastmcp_server.py PORT

Serves MCP Streamable HTTP on http://127.0.0.1:PORT/mcp (FastMCP's default
path) with `mcp.run(transport="streamable-http")`. Bound to loopback, FastMCP
turns on its DNS-rebinding protection: a request whose `Host` is not
`127.0.0.1:*`, `localhost:*` or `[::1]:*` gets 421.

Tools:
  * echo(message)            -> "Echo: <message>"
  * count_with_progress(steps) reports progress 1..steps (total=steps) via
                               ctx.report_progress, then "counted to <steps>"
  * log_info(message)        sends one notifications/message (level info) via
                               ctx.info, then "logged"
  * ask()                    asks the client for a name (`elicitation/create`),
                               then "hello <name>"
  * touch()                  sends `notifications/resources/updated` for each
                               URI this session subscribed to, then
                               "touched [URIS]"
  * slow(seconds)            sleeps, then "slept"; if cancelled first,
                               records `cancelled slow`

Resource `file:///note`, subscribable (`resources/subscribe`). With
INTEROP_EVENTS=FILE every subscribe, unsubscribe and cancelled `slow` is
appended to FILE as one line.

Every HTTP request the server receives is printed to stdout as one line
(`upstream: METHOD PATH host=... session=... protocol=... -> STATUS`), so the
test harness can show what the relay actually sent and check the DELETE on
exit. Prints `fastmcp starting on 127.0.0.1:PORT` before binding; uvicorn
then logs (stderr, level INFO) `Uvicorn running on http://127.0.0.1:PORT`
once the socket is bound, plus one access-log line per request.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
from mcp import types
from mcp.server.fastmcp import Context, FastMCP
from pydantic import BaseModel

TRACED_HEADERS = (
    ("host", "host"),
    ("mcp-session-id", "session"),
    ("mcp-protocol-version", "protocol"),
    ("accept", "accept"),
    ("last-event-id", "last-event-id"),
)


def trace(app: Any) -> Any:
    """ASGI wrapper: one stdout line per HTTP request, with its final status."""

    async def traced(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        fields = " ".join(f"{label}={headers[h]!r}" for h, label in TRACED_HEADERS if h in headers)
        line = f"upstream: {scope['method']} {scope['path']} {fields}"

        async def send_traced(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                print(f"{line} -> {message['status']}", flush=True)
            await send(message)

        await app(scope, receive, send_traced)

    return traced


def record(line: str) -> None:
    path = os.environ.get("INTEROP_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class Name(BaseModel):
    name: str


class TracedFastMCP(FastMCP):
    def streamable_http_app(self):  # type: ignore[no-untyped-def]
        return trace(super().streamable_http_app())


def build(port: int) -> FastMCP:
    mcp = TracedFastMCP("interop-fastmcp", host="127.0.0.1", port=port, log_level="INFO")

    @mcp.tool()
    def echo(message: str) -> str:
        """Echoes back the input string."""
        return f"Echo: {message}"

    @mcp.tool()
    async def count_with_progress(steps: int, ctx: Context) -> str:
        """Counts to `steps`, reporting progress at each step."""
        for i in range(1, steps + 1):
            await anyio.sleep(0.05)
            await ctx.report_progress(i, steps, f"step {i}/{steps}")
        # Rarely in the same read as the result (the TypeScript SDKs
        # dispatch such a progress after settling the call).
        await anyio.sleep(0.05)
        return f"counted to {steps}"

    @mcp.tool()
    async def log_info(message: str, ctx: Context) -> str:
        """Sends `message` to the client as an info log notification."""
        await ctx.info(message)
        return "logged"

    @mcp.tool()
    async def ask(ctx: Context) -> str:
        """Asks the client for a name, then greets it."""
        result = await ctx.elicit("What is your name?", schema=Name)
        if result.action == "accept" and result.data is not None:
            return f"hello {result.data.name}"
        return f"no name: {result.action}"

    # Subscriptions are per session (HTTP serves several).
    subscribed: dict[int, set[str]] = {}

    @mcp.tool()
    async def touch(ctx: Context) -> str:
        """Announces an update of every resource this session subscribed to."""
        uris = sorted(subscribed.get(id(ctx.session), set()))
        for uri in uris:
            await ctx.session.send_resource_updated(uri)
        return f"touched {uris}"

    @mcp.tool()
    async def slow(seconds: float) -> str:
        """Sleeps `seconds`; records a cancellation."""
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            record("cancelled slow")
            raise
        return "slept"

    @mcp.resource("file:///note")
    def note() -> str:
        """A note."""
        return "a note"

    low = mcp._mcp_server

    @low.subscribe_resource()
    async def subscribe(uri) -> None:  # noqa: ANN001
        subscribed.setdefault(id(low.request_context.session), set()).add(str(uri))
        record(f"subscribe {uri}")

    @low.unsubscribe_resource()
    async def unsubscribe(uri) -> None:  # noqa: ANN001
        subscribed.get(id(low.request_context.session), set()).discard(str(uri))
        record(f"unsubscribe {uri}")

    base_capabilities = low.get_capabilities

    def capabilities(notification_options, experimental):  # noqa: ANN001 - SDK shape
        caps = base_capabilities(notification_options, experimental)
        caps.resources = types.ResourcesCapability(subscribe=True, listChanged=False)
        return caps

    low.get_capabilities = capabilities
    return mcp


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit(f"usage: {sys.argv[0]} PORT")
    port = int(sys.argv[1])
    mcp = build(port)
    print(f"fastmcp starting on 127.0.0.1:{port} (path {mcp.settings.streamable_http_path})", flush=True)
    mcp.run(transport="streamable-http")
    return 0


if __name__ == "__main__":
    sys.exit(main())
