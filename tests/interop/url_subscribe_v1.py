#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 1.x client (handshake era)
subscribing to a resource through `mcp-relay` to a Python SDK 2.x server
over Streamable HTTP (tests/interop/modern_http_server.py, 2026-07-28 only
as the relay speaks to it): the relay folds `resources/subscribe` into a
`subscriptions/listen` toward the server.

Usage:
    python3 url_subscribe_v1.py forward RELAY_BIN UPSTREAM_URL [RELAY_FLAG...]
    python3 url_subscribe_v1.py reverse RELAY_MCP_URL

Asserts: `resources/subscribe` of `file:///note` is answered; `touch` makes
the server publish an update, which reaches the client as
`notifications/resources/updated`; after `resources/unsubscribe` another
`touch` brings none. Prints `interop ok: ...`; any failure raises.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client

OVERALL_TIMEOUT_S = 30


async def exercise(session: ClientSession, updates: list[str], changed: anyio.Event) -> str:
    init = await session.initialize()
    assert not init.protocolVersion.startswith("2026"), init.protocolVersion
    await session.subscribe_resource("file:///note")
    with anyio.fail_after(10):
        # The relay's listen may still be opening: touch until an update comes.
        while not updates:
            result = await session.call_tool("touch", {})
            assert result.content[0].text == "touched", result
            with anyio.move_on_after(0.5):
                await changed.wait()
    assert updates[0] == "file:///note", updates
    await session.unsubscribe_resource("file:///note")
    # The relay closes its listen; once it is gone, touching brings nothing.
    await anyio.sleep(0.3)
    seen = len(updates)
    await session.call_tool("touch", {})
    await anyio.sleep(0.5)
    assert len(updates) == seen, updates
    return f"version {init.protocolVersion}, updates {updates[:1]}, none after unsubscribe"


async def run(argv: list[str]) -> str:
    updates: list[str] = []
    changed = anyio.Event()

    async def on_message(message) -> None:  # noqa: ANN001 - SDK callback shape
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            updates.append(str(message.root.params.uri))
            changed.set()

    with anyio.fail_after(OVERALL_TIMEOUT_S):
        if argv[1] == "forward":
            relay, url, flags = argv[2], argv[3], argv[4:]
            params = StdioServerParameters(
                command=relay, args=["forward", "--url", url, *flags], env=dict(os.environ)
            )
            async with stdio_client(params) as (read, write), ClientSession(
                read, write, message_handler=on_message
            ) as session:
                return await exercise(session, updates, changed)
        async with streamablehttp_client(argv[2]) as (read, write, _), ClientSession(
            read, write, message_handler=on_message
        ) as session:
            return await exercise(session, updates, changed)


def main(argv: list[str]) -> int:
    if not ((len(argv) >= 4 and argv[1] == "forward") or (len(argv) == 3 and argv[1] == "reverse")):
        sys.exit(__doc__)
    print(f"interop ok: {anyio.run(run, argv)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
