#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 2.x client (`Client`,
mode='auto': it probes with `server/discover` and falls back to
`initialize`) through the relay, in any mode (tests/interop_py2_client.rs).
The same steps and report as tests/interop/ts2_client.mjs.

Usage:
    python3 py2_client.py stdio RELAY_BIN RELAY_ARG...   (the client spawns the relay)
    python3 py2_client.py http URL                       (the relay listens at URL)

INTEROP_SERVER names the server behind the relay, which decides the tools
each step uses: `echo` (examples/echo_server), `everything`
(@modelcontextprotocol/server-everything), `mcpserver`
(tests/interop/mcpserver_v2.py) or `fastmcp` (tests/interop/fastmcp_server.py).
INTEROP_EXPECT is the protocol version the client must negotiate (default
2026-07-28). INTEROP_SKIP lists steps not to run (comma-separated; the
harness says why).

Steps, each run even when an earlier one failed (so one run shows the whole
row of the matrix):
  tools      tools/list names the profile's tools
  progress   a call with a progress callback: every progress step, in order,
             before the result
  input      a call during which the server asks the client (elicitation):
             a real request in the handshake era, an InputRequiredResult
             round in 2026-07-28; the answer must reach the result
  subscribe  2026-07-28: subscriptions/listen for a resource (honored);
             handshake era: resources/subscribe. A tool call then makes the
             server announce an update, which must arrive within 10 s
  cancel     a call that would not end soon is abandoned (its cancel scope
             cancelled at its first progress notification, else after
             300 ms): it must end at once and the next call must work. That
             the server saw the cancellation is checked by the harness where
             the server records it.

Prints `negotiated VERSION era ERA server NAME`, one
`step NAME: ok|skipped|FAILED: why` line per step, then `interop ok: ...`
and exits 0 when every step run passed; else exits 1.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from typing import Any

import anyio
import mcp_types as types
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.subscriptions import ResourceUpdated

OVERALL_TIMEOUT_S = 90
REQUEST_TIMEOUT_S = 20
EVENT_WAIT_S = 10

# What each server offers the steps (as in ts2_client.mjs).
PROFILES: dict[str, dict[str, Any]] = {
    "echo": {
        "tools": ["echo"],
        "probe": {"name": "echo", "arguments": {"text": "still there"}, "text": "still there"},
        "progress": {
            "name": "echo",
            "arguments": {"text": "with progress", "progress": 3, "interval_ms": 10},
            "steps": 3,
            "text": "with progress",
        },
        # The echo server never asks the client anything and has no resources.
        "input": None,
        "subscribe": None,
        "cancel": {"name": "echo", "arguments": {"text": "never answered", "hang": True}},
    },
    "everything": {
        # trigger-elicitation-request is listed only to a client that declared
        # elicitation: the input step looks for it.
        "tools": ["echo", "trigger-long-running-operation", "toggle-subscriber-updates"],
        "probe": {"name": "echo", "arguments": {"message": "still there"}, "text": "Echo: still there"},
        "progress": {
            "name": "trigger-long-running-operation",
            "arguments": {"duration": 0.4, "steps": 4},
            "steps": 4,
            "contains": "completed",
        },
        "input": {"name": "trigger-elicitation-request", "arguments": {}, "contains": "relay"},
        "subscribe": {
            "uri": "demo://resource/static/document/architecture.md",
            # Sends one update at once, then one every 5 s until toggled off.
            "trigger": {"name": "toggle-subscriber-updates", "arguments": {}},
            "stop": {"name": "toggle-subscriber-updates", "arguments": {}},
        },
        "cancel": {"name": "trigger-long-running-operation", "arguments": {"duration": 60, "steps": 60}},
    },
    "mcpserver": {
        "tools": ["echo", "count_with_progress", "ask", "touch", "slow"],
        "probe": {"name": "echo", "arguments": {"text": "still there"}, "text": "still there"},
        "progress": {"name": "count_with_progress", "arguments": {"steps": 3}, "steps": 3, "text": "counted to 3"},
        "input": {"name": "ask", "arguments": {}, "text": "hello relay"},
        "subscribe": {"uri": "file:///note", "trigger": {"name": "touch", "arguments": {}}},
        "cancel": {"name": "slow", "arguments": {"seconds": 60}},
    },
    "fastmcp": {
        "tools": ["echo", "count_with_progress", "ask", "touch", "slow"],
        "probe": {"name": "echo", "arguments": {"message": "still there"}, "text": "Echo: still there"},
        "progress": {"name": "count_with_progress", "arguments": {"steps": 3}, "steps": 3, "text": "counted to 3"},
        "input": {"name": "ask", "arguments": {}, "text": "hello relay"},
        "subscribe": {"uri": "file:///note", "trigger": {"name": "touch", "arguments": {}}},
        "cancel": {"name": "slow", "arguments": {"seconds": 60}},
    },
}


def log(msg: str) -> None:
    print(f"interop[py2]: {msg}", file=sys.stderr, flush=True)


def texts(result: types.CallToolResult) -> list[str]:
    return [c.text for c in result.content if getattr(c, "type", None) == "text"]


def check_text(spec: dict[str, Any], result: types.CallToolResult) -> None:
    got = texts(result)
    if "text" in spec:
        assert got == [spec["text"]], f"{spec['name']}: {got!r}"
    if "contains" in spec:
        assert any(spec["contains"] in t for t in got), f"{spec['name']}: no {spec['contains']!r} in {got!r}"


def parse_argv(argv: list[str]) -> tuple[object, dict[str, Any]]:
    profile = PROFILES.get(os.environ.get("INTEROP_SERVER", ""))
    if profile is not None and len(argv) >= 3 and argv[1] == "stdio":
        return StdioServerParameters(command=argv[2], args=argv[3:], env=dict(os.environ)), profile
    if profile is not None and len(argv) == 3 and argv[1] == "http":
        return argv[2], profile
    sys.exit(f"usage: INTEROP_SERVER={'|'.join(PROFILES)} {__doc__}")


async def run(server: object, profile: dict[str, Any]) -> str:
    expect = os.environ.get("INTEROP_EXPECT", "2026-07-28")
    skip = {s for s in os.environ.get("INTEROP_SKIP", "").split(",") if s}
    elicited: list[str] = []
    # Handshake era only: resources/updated notifications as they arrive.
    legacy_updates: list[str] = []

    async def on_elicit(context, params):  # noqa: ANN001 - SDK callback shape
        elicited.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "relay"})

    async def on_message(message) -> None:  # noqa: ANN001 - SDK callback shape
        note = getattr(message, "root", message)
        if isinstance(note, types.ResourceUpdatedNotification):
            legacy_updates.append(str(note.params.uri))
        elif isinstance(message, Exception):
            log(f"transport error (not fatal by itself): {message!r}")

    async def call(client: Client, spec: dict[str, Any], **kw: Any) -> types.CallToolResult:
        result = await client.call_tool(spec["name"], spec["arguments"], read_timeout_seconds=REQUEST_TIMEOUT_S, **kw)
        assert not result.is_error, f"{spec['name']} returned an error: {result!r}"
        return result

    async with Client(
        server,
        mode="auto",
        elicitation_callback=on_elicit,
        message_handler=on_message,
        client_info=types.Implementation(name="mcp-relay-interop-py2", version="2.0.0"),
        read_timeout_seconds=REQUEST_TIMEOUT_S,
    ) as client:
        version = client.protocol_version
        modern = version.startswith("2026")
        era = "modern" if modern else "handshake"
        info = client.server_info
        print(f"negotiated {version} era {era} server {info.name if info else None}", flush=True)
        assert version == expect, f"negotiated {version}, expected {expect}"

        async def tools() -> str:
            names = [t.name for t in (await client.list_tools()).tools]
            for want in profile["tools"]:
                assert want in names, f"no {want} in {names}"
            return f"{len(names)} tools"

        async def progress() -> str:
            spec = profile["progress"]
            seen: list[float] = []

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                seen.append(p)

            result = await call(client, spec, progress_callback=on_progress)
            check_text(spec, result)
            want = list(range(1, spec["steps"] + 1))
            assert seen == want, f"progress {seen}, expected {want}"
            return f"progress {seen}"

        async def input() -> str:
            spec = profile["input"]
            if spec is None:
                return "none: the server makes no request"
            names = [t.name for t in (await client.list_tools()).tools]
            assert spec["name"] in names, f"no {spec['name']} in {names}"
            before = len(elicited)
            result = await call(client, spec)
            check_text(spec, result)
            assert len(elicited) == before + 1, f"elicitation callback ran {len(elicited) - before} times"
            return f"elicitation answered ({'InputRequiredResult round' if modern else 'server request'})"

        async def subscribe() -> str:
            spec = profile["subscribe"]
            if spec is None:
                return "none: the server has no resources"
            uri = spec["uri"]
            try:
                if modern:
                    async with client.listen(resource_subscriptions=[uri]) as sub:
                        honored = list(sub.honored.resource_subscriptions or [])
                        assert honored == [uri], f"listen honored {sub.honored!r}"
                        await call(client, spec["trigger"])
                        with anyio.fail_after(EVENT_WAIT_S):
                            async for event in sub:
                                if isinstance(event, ResourceUpdated) and event.uri == uri:
                                    break
                                log(f"listen event besides the update: {event!r}")
                    return "update received via subscriptions/listen"
                legacy_updates.clear()
                await client.subscribe_resource(uri)
                try:
                    await call(client, spec["trigger"])
                    with anyio.fail_after(EVENT_WAIT_S):
                        while uri not in legacy_updates:
                            await anyio.sleep(0.02)
                finally:
                    await client.unsubscribe_resource(uri)
                return "update received via resources/subscribe"
            finally:
                if "stop" in spec:
                    try:
                        await call(client, spec["stop"])
                    except Exception as e:  # noqa: BLE001 - logged, the step's outcome stands
                        log(f"stopping updates: {e!r}")

        async def cancel() -> str:
            spec = profile["cancel"]
            outcome: list[object] = []
            started = time.monotonic()
            # Abandon it once the server is surely working on it: at its
            # first progress notification if it sends any, else after 300 ms.
            with anyio.move_on_after(0.3) as scope:

                async def on_progress(p: float, total: float | None, message: str | None) -> None:
                    scope.cancel()

                outcome.append(await client.call_tool(spec["name"], spec["arguments"], progress_callback=on_progress))
            ms = (time.monotonic() - started) * 1000
            assert not outcome, f"the call ended on its own instead: {outcome!r}"
            assert ms < 5000, f"the abandoned call took {ms:.0f} ms to end"
            # The connection (and, for the harness, the server) carries on.
            check_text(profile["probe"], await call(client, profile["probe"]))
            return f"abandoned after {ms:.0f} ms, next call ok"

        report = []
        failed = []
        for name, step in [
            ("tools", tools),
            ("progress", progress),
            ("input", input),
            ("subscribe", subscribe),
            ("cancel", cancel),
        ]:
            if name in skip:
                print(f"step {name}: skipped", flush=True)
                report.append(f"{name}=skipped")
                continue
            try:
                with anyio.fail_after(REQUEST_TIMEOUT_S + EVENT_WAIT_S):
                    what = await step()
                print(f"step {name}: ok: {what}", flush=True)
                report.append(f"{name}=ok")
            except BaseException as e:  # noqa: BLE001 - every step reports
                if isinstance(e, anyio.get_cancelled_exc_class()):
                    raise
                print(f"step {name}: FAILED: {traceback.format_exc()}", flush=True)
                failed.append(name)
        if failed:
            raise SystemExit(f"steps failed: {', '.join(failed)}")
        return f"version {version} ({era}), server {info.name if info else None}, {' '.join(report)}"


def main() -> None:
    # resources/subscribe is deprecated in the SDK (2026-07-28 replaced it);
    # the handshake-era branch of the subscribe step uses it on purpose.
    warnings.simplefilter("ignore", MCPDeprecationWarning)
    server, profile = parse_argv(sys.argv)

    async def bounded() -> str:
        with anyio.fail_after(OVERALL_TIMEOUT_S):
            return await run(server, profile)

    print("interop ok:", anyio.run(bounded), flush=True)


if __name__ == "__main__":
    main()
