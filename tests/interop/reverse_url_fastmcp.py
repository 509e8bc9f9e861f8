#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK client (Streamable HTTP) talking
to a Python SDK FastMCP server (tests/interop/fastmcp_server.py) through
`mcp-relay reverse --url`.

Usage:
    python3 reverse_url_fastmcp.py BASE_URL

BASE_URL is the relay's root (e.g. http://127.0.0.1:8080): the MCP endpoint is
BASE_URL/mcp and the metrics BASE_URL/metrics. The relay and the server must
already be running, e.g.:

    python3 tests/interop/fastmcp_server.py 3002 &
    target/debug/mcp-relay reverse --listen 127.0.0.1:8080 --url http://127.0.0.1:3002/mcp

Exercises, over Streamable HTTP:
  * initialize (+ the SDK's GET stream after notifications/initialized); the
    relay's Mcp-Session-Id is logged as `session <id>` for the harness
  * tools/list (echo, count_with_progress, log_info present), tools/call echo
  * tools/call count_with_progress with a progress callback: progress 1..4 of
    4, in order, before the result
  * tools/call log_info: its notifications/message reaches the logging
    callback
  * ping
  * session end: the SDK sends DELETE on exit (terminate_on_close); the old
    Mcp-Session-Id must then get 404 and the relay's session gauge must be
    back to 0

Prints `interop ok: ...` and exits 0 on success; any failure raises (traceback,
non-zero exit). Logs what it sees on stderr.
"""

from __future__ import annotations

import faulthandler
import json
import re
import sys
import time
import warnings

import anyio
import httpx
from mcp import ClientSession, types

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from mcp.client.streamable_http import streamablehttp_client

STEPS = 4
OVERALL_TIMEOUT_S = 45
HARD_TIMEOUT_S = OVERALL_TIMEOUT_S + 5
LOG_WAIT_S = 5
METRICS_WAIT_S = 10


def log(msg: str) -> None:
    print(f"interop[python→fastmcp]: {msg}", file=sys.stderr, flush=True)


def texts(content) -> list[str]:
    return [c.text for c in content if isinstance(c, types.TextContent)]


async def relay_sessions(http: httpx.AsyncClient, base: str) -> float:
    r = await http.get(f"{base}/metrics")
    r.raise_for_status()
    total = 0.0
    for line in r.text.splitlines():
        m = re.match(r"^mcp_relay_sessions(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            total += float(m.group(2))
    return total


async def run(base: str) -> str:
    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with httpx.AsyncClient(timeout=10) as http:
            return await run_with(http, base)


async def run_with(http: httpx.AsyncClient, base: str) -> str:
    url = f"{base}/mcp"
    t0 = time.monotonic()
    logs: list[object] = []
    got_log = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)
        got_log.set()

    async with streamablehttp_client(url, timeout=10, sse_read_timeout=30) as (read, write, get_session_id):
        async with ClientSession(read, write, logging_callback=on_log) as session:
            init = await session.initialize()
            session_id = get_session_id()
            server = f"{init.serverInfo.name} {init.serverInfo.version}"
            log(f"initialized {server}, protocol {init.protocolVersion}, session {session_id}")
            assert session_id, "no Mcp-Session-Id from the relay"
            assert init.capabilities.tools is not None, f"no tools capability: {init}"

            tools = await session.list_tools()
            names = {t.name for t in tools.tools}
            for want in ("echo", "count_with_progress", "log_info"):
                assert want in names, f"tool {want!r} missing from tools/list: {sorted(names)}"

            message = 'hello through mcp-relay reverse --url ✓ "quoted" \\ backslash'
            echo = await session.call_tool("echo", {"message": message})
            assert not echo.isError, f"echo returned error: {echo}"
            assert texts(echo.content) == [f"Echo: {message}"], f"echo mismatch: {texts(echo.content)!r}"

            progress: list[tuple[float, float | None]] = []

            async def on_progress(p: float, total: float | None, _msg: str | None) -> None:
                progress.append((p, total))

            counted = await session.call_tool("count_with_progress", {"steps": STEPS}, progress_callback=on_progress)
            assert not counted.isError, f"count_with_progress returned error: {counted}"
            assert texts(counted.content) == [f"counted to {STEPS}"], texts(counted.content)
            assert progress == [(float(i), float(STEPS)) for i in range(1, STEPS + 1)], (
                f"expected progress 1..{STEPS} of {STEPS} in order, got {progress}"
            )

            logged = await session.call_tool("log_info", {"message": "a log line via the relay"})
            assert texts(logged.content) == ["logged"], texts(logged.content)
            with anyio.move_on_after(LOG_WAIT_S):
                await got_log.wait()
            log(f"log messages received: {logs}")
            assert "a log line via the relay" in logs, f"no notifications/message within {LOG_WAIT_S}s: {logs}"

            ping = await session.send_ping()
            assert isinstance(ping, types.EmptyResult), f"unexpected ping result: {ping!r}"
    # Leaving streamablehttp_client sent DELETE (terminate_on_close).

    probe = await http.post(
        url,
        headers={
            "mcp-session-id": session_id,
            "mcp-protocol-version": init.protocolVersion,
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
        },
        content=json.dumps({"jsonrpc": "2.0", "id": 99, "method": "ping"}),
    )
    log(f"POST with the terminated session id: {probe.status_code}")
    assert probe.status_code == 404, (
        f"session {session_id} still answers after DELETE: {probe.status_code} {probe.text!r}"
    )

    deadline = time.monotonic() + METRICS_WAIT_S
    while (sessions := await relay_sessions(http, base)) != 0 and time.monotonic() < deadline:
        await anyio.sleep(0.1)
    assert sessions == 0, f"relay still counts {sessions} session(s) after DELETE"

    elapsed = time.monotonic() - t0
    return (
        f"python sdk → reverse --url → fastmcp: server={server} protocol={init.protocolVersion} "
        f"tools={len(names)} echo=ok progress={len(progress)}/{STEPS} logs={len(logs)} ping=ok "
        f"terminated=404 sessions_after=0 in {elapsed:.2f}s"
    )


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} BASE_URL")
    base = sys.argv[1].rstrip("/")
    faulthandler.dump_traceback_later(HARD_TIMEOUT_S, exit=True)
    summary = anyio.run(run, base)
    faulthandler.cancel_dump_traceback_later()
    print(f"interop ok: {summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
