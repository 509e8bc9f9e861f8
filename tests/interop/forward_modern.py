#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 2.x client (mode='auto') talking
to a handshake-era stdio server (the bundled echo_server) through
`mcp-relay forward`, which bridges the eras (docs/eras.md).

Usage:
    python3 forward_modern.py RELAY_BIN [RELAY_FLAG...] -- SERVER_ARGV...

Asserts: the negotiated protocol version is 2026-07-28 (the client probed
`server/discover` and was answered, not sent back to `initialize`), the server
named in the discover result is the handshake-era one, tools/list and a
tools/call of `echo` work (with progress unless INTEROP_PROGRESS=0). With
INTEROP_ELICIT=1 it also calls `ask`, during which the server asks the client
for a name (`elicitation/create`): through the relay that arrives as an
`InputRequiredResult` round, which the SDK answers and retries. Set
INTEROP_EXPECT to the version the client must end on (default 2026-07-28).
With INTEROP_LISTEN=1 it opens `subscriptions/listen` (tool list changes and
`file:///note`), calls `touch` and expects both events on the listen; through
the relay that is `resources/subscribe` and the server's notifications.
Prints `interop ok: ...`; any failure raises.
"""

from __future__ import annotations

import os
import sys

import anyio
import mcp_types as types
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters

OVERALL_TIMEOUT_S = 30


def parse_argv(argv: list[str]) -> tuple[str, list[str], list[str]]:
    if "--" not in argv[2:] or len(argv) < 4:
        sys.exit(f"usage: {os.path.basename(argv[0])} RELAY_BIN [FLAG...] -- SERVER_ARGV...")
    cut = argv.index("--", 2)
    return argv[1], argv[2:cut], argv[cut + 1 :]


async def run(relay: str, flags: list[str], server: list[str]) -> str:
    expect = os.environ.get("INTEROP_EXPECT", "2026-07-28")
    params = StdioServerParameters(
        command=relay, args=["forward", *flags, "--", *server], env=dict(os.environ)
    )
    progress: list[float] = []
    elicited: list[str] = []
    want_progress = os.environ.get("INTEROP_PROGRESS", "1") != "0"
    want_elicit = os.environ.get("INTEROP_ELICIT") == "1"
    want_listen = os.environ.get("INTEROP_LISTEN") == "1"

    async def on_elicit(context, params):  # noqa: ANN001 - SDK callback shape
        elicited.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "relay"})

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with Client(params, mode="auto", elicitation_callback=on_elicit) as client:
            version = client.protocol_version
            assert version == expect, f"negotiated {version}, expected {expect}"
            info = client.server_info
            tools = await client.list_tools()
            names = [t.name for t in tools.tools]
            assert "echo" in names, names
            args = {"text": "hello across eras"}
            if want_progress:
                args.update({"progress": 3, "interval_ms": 10})
            result = await client.call_tool("echo", args, progress_callback=on_progress)
            text = result.content[0].text
            assert text == "hello across eras", text
            if want_progress:
                assert progress == [1, 2, 3], progress
            done = f"version {version}, server {info.name if info else None}, tools {names}, progress {progress}"
            if want_elicit:
                result = await client.call_tool("ask", {})
                text = result.content[0].text
                assert text == "hello relay", text
                assert elicited == ["What is your name?"], elicited
                done += f", elicitation answered: {text!r}"
            if want_listen:
                events = []
                async with client.listen(tools_list_changed=True, resource_subscriptions=["file:///note"]) as sub:
                    result = await client.call_tool("touch", {})
                    text = result.content[0].text
                    assert text == "touched ['file:///note']", text
                    with anyio.fail_after(10):
                        async for event in sub:
                            events.append(type(event).__name__)
                            if len(events) == 2:
                                break
                assert sorted(events) == ["ResourceUpdated", "ToolsListChanged"], events
                # The relay unsubscribes when the listen closes. The SDK sends
                # its cancellation in the background, so look a few times.
                with anyio.fail_after(5):
                    while True:
                        result = await client.call_tool("touch", {})
                        text = result.content[0].text
                        if text == "touched []":
                            break
                        assert text == "touched ['file:///note']", text
                        await anyio.sleep(0.05)
                done += f", listen events {events}"
            return done


def main() -> None:
    relay, flags, server = parse_argv(sys.argv)
    print("interop ok:", anyio.run(run, relay, flags, server))


if __name__ == "__main__":
    main()
