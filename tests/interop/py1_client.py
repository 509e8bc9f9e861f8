#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 1.x client (handshake era,
unchanged) through the relay to the Python SDK 2.x `MCPServer` of
tests/interop/mcpserver_v2.py (tests/interop_py2_server.rs).

Usage:
    python3 py1_client.py stdio RELAY_BIN RELAY_ARG...   (spawns the relay)
    python3 py1_client.py http URL                       (the relay listens at URL)

Steps, each run even when an earlier one failed (INTEROP_SKIP lists steps
not to run, comma-separated; the harness says why):
  tools      initialize at a handshake revision, naming the 2.x server;
             tools/list names echo, count_with_progress, ask, touch, slow
  progress   count_with_progress(3) reports progress 1..3 before its result
  input      ask: the server's elicitation/create reaches the callback, whose
             answer reaches the result ("hello relay")
  subscribe  resources/subscribe file:///note, then touch: the
             notifications/resources/updated must arrive within 10 s
  cancel     slow(60) is cancelled with notifications/cancelled after
             300 ms (the 1.x SDK sends none by itself), then echo works; the
             harness checks the server recorded the cancellation

Prints one `step NAME: ok|skipped|FAILED: why` line per step, then
`interop ok: ...` when every step run passed (else exits 1).
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import asynccontextmanager

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client

OVERALL_TIMEOUT_S = 80
STEP_TIMEOUT_S = 25
NOTE = "file:///note"


@asynccontextmanager
async def streams(argv: list[str]):
    if len(argv) >= 3 and argv[1] == "stdio":
        params = StdioServerParameters(command=argv[2], args=argv[3:], env=dict(os.environ))
        async with stdio_client(params) as (read, write):
            yield read, write
    elif len(argv) == 3 and argv[1] == "http":
        async with streamablehttp_client(argv[2]) as (read, write, _):
            yield read, write
    else:
        sys.exit(__doc__)


async def run(argv: list[str]) -> str:
    skip = {s for s in os.environ.get("INTEROP_SKIP", "").split(",") if s}
    elicited: list[str] = []
    updates: list[str] = []
    updated = anyio.Event()

    async def on_elicit(context, params):  # noqa: ANN001 - SDK callback shape
        elicited.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "relay"})

    async def on_message(message) -> None:  # noqa: ANN001 - SDK callback shape
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            updates.append(str(message.root.params.uri))
            updated.set()

    async with streams(argv) as (read, write), ClientSession(
        read, write, elicitation_callback=on_elicit, message_handler=on_message
    ) as session:
        init = await session.initialize()
        version = init.protocolVersion
        server = init.serverInfo.name

        async def tools() -> str:
            assert not version.startswith("2026"), version
            assert server == "interop-mcpserver-v2", init.serverInfo
            names = [t.name for t in (await session.list_tools()).tools]
            for want in ("echo", "count_with_progress", "ask", "touch", "slow"):
                assert want in names, names
            return f"version {version}, {len(names)} tools"

        async def progress() -> str:
            seen: list[float] = []

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                seen.append(p)

            result = await session.call_tool("count_with_progress", {"steps": 3}, progress_callback=on_progress)
            assert result.content[0].text == "counted to 3", result
            assert seen == [1, 2, 3], seen
            return f"progress {seen}"

        async def input() -> str:
            result = await session.call_tool("ask", {})
            assert not result.isError, result
            assert result.content[0].text == "hello relay", result
            assert elicited == ["What is your name?"], elicited
            return "elicitation answered"

        async def subscribe() -> str:
            await session.subscribe_resource(NOTE)
            result = await session.call_tool("touch", {})
            assert not result.isError, result
            with anyio.fail_after(10):
                await updated.wait()
            assert updates == [NOTE], updates
            await session.unsubscribe_resource(NOTE)
            return f"update received ({result.content[0].text})"

        async def cancel() -> str:
            outcome: list[object] = []
            request_id = session._request_id  # the id the next request gets

            async def slow() -> None:
                try:
                    outcome.append(await session.call_tool("slow", {"seconds": 60}))
                except Exception as e:  # noqa: BLE001 - reported below
                    outcome.append(e)

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                await anyio.sleep(0.3)
                await session.send_notification(
                    types.ClientNotification(
                        types.CancelledNotification(
                            params=types.CancelledNotificationParams(requestId=request_id, reason="test cancels")
                        )
                    )
                )
                await anyio.sleep(0.2)
                tg.cancel_scope.cancel()
            assert outcome == [], f"the cancelled call was answered: {outcome}"
            result = await session.call_tool("echo", {"text": "still there"})
            assert result.content[0].text == "still there", result
            return "cancelled, next call ok"

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
                with anyio.fail_after(STEP_TIMEOUT_S):
                    what = await step()
                print(f"step {name}: ok: {what}", flush=True)
                report.append(f"{name}=ok")
            except BaseException as e:  # noqa: BLE001 - every step reports
                if isinstance(e, anyio.get_cancelled_exc_class()):
                    raise
                print(f"step {name}: FAILED: {traceback.format_exc()}", flush=True)
                failed.append(name)
        if failed:
            raise SystemExit(f"steps failed: {failed}")
        return f"version {version}, server {server}, {' '.join(report)}"


def main() -> None:
    async def bounded() -> str:
        with anyio.fail_after(OVERALL_TIMEOUT_S):
            return await run(sys.argv)

    print("interop ok:", anyio.run(bounded), flush=True)


if __name__ == "__main__":
    main()
