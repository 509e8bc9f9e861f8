#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 2.x client (mode='auto')
through `mcp-relay reverse --url` (or `forward --url`) to a handshake-era
Python SDK 1.x server over Streamable HTTP (tests/interop/handshake_http_v1.py),
which the relay bridges (docs/eras.md, "Over HTTP").

Usage:
    python3 url_bridged.py reverse RELAY_MCP_URL
    python3 url_bridged.py forward RELAY_BIN UPSTREAM_URL [RELAY_FLAG...]

Asserts: 2026-07-28 negotiated; `echo` answers; `ask` (the server elicits a
name on the call's stream) works through an `InputRequiredResult` round;
a `subscriptions/listen` for tool list changes and `file:///note` hears
both events when `touch` runs, and closing it unsubscribes; a `hang` call
abandoned by the client is cancelled at the server. Prints
`interop ok: ...`; any failure raises.
"""

from __future__ import annotations

import os
import sys

import anyio
import mcp_types as types
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters

OVERALL_TIMEOUT_S = 40


async def run(server: object) -> str:
    elicited: list[str] = []

    async def on_elicit(context, params):  # noqa: ANN001 - SDK callback shape
        elicited.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "relay"})

    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with Client(server, mode="auto", elicitation_callback=on_elicit) as client:
            version = client.protocol_version
            assert version == "2026-07-28", f"negotiated {version}"
            result = await client.call_tool("echo", {"text": "bridged over http"})
            assert result.content[0].text == "bridged over http", result
            result = await client.call_tool("ask", {})
            assert result.content[0].text == "hello relay", result
            assert elicited == ["What is your name?"], elicited
            events = []
            async with client.listen(tools_list_changed=True, resource_subscriptions=["file:///note"]) as sub:
                result = await client.call_tool("touch", {})
                assert result.content[0].text == "touched ['file:///note']", result
                with anyio.fail_after(10):
                    async for event in sub:
                        events.append(type(event).__name__)
                        if len(events) == 2:
                            break
            assert sorted(events) == ["ResourceUpdated", "ToolsListChanged"], events
            with anyio.fail_after(5):
                while True:
                    result = await client.call_tool("touch", {})
                    text = result.content[0].text
                    if text == "touched []":
                        break
                    assert text == "touched ['file:///note']", text
                    await anyio.sleep(0.05)
            with anyio.move_on_after(0.5):
                await client.call_tool("hang", {})
                raise AssertionError("hang answered")
            with anyio.fail_after(5):
                while True:
                    result = await client.call_tool("cancellations", {})
                    if result.content[0].text == "1":
                        break
                    await anyio.sleep(0.05)
            return f"version {version}, elicited {elicited}, listen events {events}, hang cancelled"


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
    print(f"interop ok: {anyio.run(run, server)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
