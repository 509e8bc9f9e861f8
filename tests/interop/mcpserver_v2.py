#!/usr/bin/env python3
"""A Python SDK 2.x `MCPServer` with one of each feature the era matrix
checks (tests/interop_ts2.rs, tests/interop_py2_stdio.rs), over stdio or
Streamable HTTP. It serves both eras: a 2.x server decides per connection
(stdio) or per request (HTTP) from what the client sends.

Usage:
    python3 mcpserver_v2.py stdio
    python3 mcpserver_v2.py http PORT      (http://127.0.0.1:PORT/mcp)

Tools:
  * echo(text)                 -> text
  * count_with_progress(steps) reports progress 1..steps, then "counted to <steps>"
  * ask()                      asks the client for a name (`Elicit`: a real
                               `elicitation/create` request in the handshake
                               era, an `InputRequiredResult` round in
                               2026-07-28), then "hello <name>"
  * touch()                    announces an update of `file:///note`: on
                               `subscriptions/listen` streams (2026-07-28) and
                               to a handshake-era client that sent
                               `resources/subscribe` for it; then
                               "touched <era>"
  * slow(seconds)              sleeps, then "slept"; if cancelled first,
                               records `cancelled slow`

Resource `file:///note` (subscribable in both eras).

With INTEROP_EVENTS=FILE every subscribe, unsubscribe and cancelled `slow`
is appended to FILE as one line, so a harness can see what reached the
server whichever process served it (pools start several).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import anyio
import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve
from pydantic import BaseModel

NOTE = "file:///note"
# URIs handshake-era clients subscribed to (one set per process: the touching
# client is told, when it subscribed).
subscribed: set[str] = set()


def record(line: str) -> None:
    path = os.environ.get("INTEROP_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class Name(BaseModel):
    name: str


async def ask_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


def build() -> MCPServer:
    mcp = MCPServer("interop-mcpserver-v2")

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
        # The TypeScript SDKs dispatch a notification a microtask after
        # reading it, but settle a response at once: a last progress read
        # in the same chunk as the result arrives after the call ended (the
        # clients count it; the pause makes it rare).
        await anyio.sleep(0.05)
        return f"counted to {steps}"

    @mcp.tool()
    async def ask(name: Annotated[Name, Resolve(ask_name)]) -> str:
        """Asks the client for a name, then greets it."""
        return f"hello {name.name}"

    @mcp.tool()
    async def touch(ctx: Context) -> str:
        """Announces an update of file:///note to whoever subscribed."""
        era = ctx.protocol_version or "unknown"
        if era.startswith("2026"):
            await ctx.notify_resource_updated(NOTE)
        elif NOTE in subscribed:
            # On the call's own stream: over HTTP this server delivers
            # nothing on the session's GET stream.
            await ctx.session.send_notification(
                types.ResourceUpdatedNotification(params=types.ResourceUpdatedNotificationParams(uri=NOTE)),
                related_request_id=ctx.request_context.request_id,
            )
        return f"touched {era}"

    @mcp.tool()
    async def slow(seconds: float) -> str:
        """Sleeps `seconds`; records a cancellation."""
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            record("cancelled slow")
            raise
        return "slept"

    @mcp.resource(NOTE)
    def note() -> str:
        """A note."""
        return "a note"

    async def subscribe(ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:  # noqa: ANN001
        subscribed.add(str(params.uri))
        record(f"subscribe {params.uri}")
        return types.EmptyResult()

    async def unsubscribe(ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:  # noqa: ANN001
        subscribed.discard(str(params.uri))
        record(f"unsubscribe {params.uri}")
        return types.EmptyResult()

    low = mcp._lowlevel_server
    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)
    return mcp


def main(argv: list[str]) -> int:
    mcp = build()
    if argv[1:] == ["stdio"]:
        mcp.run("stdio")
    elif len(argv) == 3 and argv[1] == "http" and argv[2].isdigit():
        print(f"mcpserver v2 starting on 127.0.0.1:{argv[2]}", flush=True)
        mcp.run(transport="streamable-http", host="127.0.0.1", port=int(argv[2]))
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
