#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 2.x client (mode='auto') over
Streamable HTTP to `mcp-relay reverse -- echo_server --elicit --resources`
(a handshake-era stdio server behind the relay, either pool mode): what the
relay carries between the eras beyond requests and results (docs/eras.md).

Usage:
    python3 reverse_modern_rounds.py URL

Asserts, after negotiating 2026-07-28:
- elicitation: a call of `echo` with `ask: true` makes the server send
  `elicitation/create`; through the relay that is an `InputRequiredResult`
  round, which the SDK answers with its callback and retries; the call's
  result carries the answer;
- listen: `subscriptions/listen` for `echo://note` (and resource list
  changes) gets the server's `resources/updated` and list-changed
  notifications (the echo server sends them when subscribed);
- cancellation: a call that never ends (`hang: true`) is abandoned by the
  client after 0.5 s (its stream closed); the Rust side then checks the
  server got `notifications/cancelled`.
Prints `interop ok: ...`; any failure raises.
"""

from __future__ import annotations

import os
import sys

import anyio
import mcp_types as types
from mcp.client.client import Client

OVERALL_TIMEOUT_S = 30


async def run(url: str) -> str:
    elicited: list[str] = []

    async def on_elicit(context, params):  # noqa: ANN001 - SDK callback shape
        elicited.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": "yes"})

    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with Client(url, mode="auto", elicitation_callback=on_elicit) as client:
            version = client.protocol_version
            assert version == "2026-07-28", f"negotiated {version}"
            result = await client.call_tool("echo", {"text": "q", "ask": True})
            text = result.content[0].text
            assert text == 'q / accept {"answer":"yes"}', text
            assert elicited == ["about q?"], elicited
            events: list[str] = []
            async with client.listen(
                resources_list_changed=True, resource_subscriptions=["echo://note"]
            ) as sub:
                with anyio.fail_after(10):
                    async for event in sub:
                        events.append(type(event).__name__)
                        if len(events) == 2:
                            break
            assert events == ["ResourceUpdated", "ResourcesListChanged"], events
            with anyio.move_on_after(0.5) as scope:
                await client.call_tool("echo", {"text": "never", "hang": True})
            assert scope.cancelled_caught, "the hanging call returned"
            again = await client.call_tool("echo", {"text": "after"})
            assert again.content[0].text == "after", again
            return f"version {version}, elicited {elicited}, listen events {events}, cancelled"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {os.path.basename(sys.argv[0])} URL")
    print("interop ok:", anyio.run(run, sys.argv[1]))


if __name__ == "__main__":
    main()
