#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK client talking to the reference
"everything" server through `mcp-relay forward`.

Usage:
    python3 forward_everything.py RELAY_BIN -- SERVER_ARGV...

Example:
    python3 tests/interop/forward_everything.py target/debug/mcp-relay -- \
        node target/test-deps/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio

Set INTEROP_DIRECT=1 to bypass the relay and spawn SERVER_ARGV directly
(RELAY_BIN is then ignored); useful to tell relay bugs from client/server ones.

Exercises, over stdio:
  * initialize
  * tools/list (echo + trigger-long-running-operation present)
  * tools/call echo (client -> server request/response)
  * tools/call trigger-long-running-operation with a progressToken
    (server -> client notifications/progress interleaved before the response)
  * roots/list (server -> client request, answered by the client; the server
    then confirms with a notifications/message log entry)

Prints `interop ok: ...` and exits 0 on success; any failure raises (traceback,
non-zero exit).
"""

from __future__ import annotations

import os
import sys
import time

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.shared.context import RequestContext

ECHO_TOOL = "echo"
LONG_TOOL = "trigger-long-running-operation"
LONG_DURATION_S = 1.0
LONG_STEPS = 4
OVERALL_TIMEOUT_S = 60
ROOTS_WAIT_S = 10
ROOT_URI = "file:///tmp/mcp-relay-interop-root"


def parse_argv(argv: list[str]) -> tuple[str, list[str]]:
    usage = f"usage: {os.path.basename(argv[0])} RELAY_BIN -- SERVER_ARGV..."
    if len(argv) < 4 or argv[2] != "--":
        sys.exit(usage)
    return argv[1], argv[3:]


def server_params(relay_bin: str, server_argv: list[str]) -> tuple[StdioServerParameters, str]:
    # Pass the full environment through (the SDK default keeps only a handful of
    # variables), so RUST_LOG etc. reach the relay when debugging.
    env = dict(os.environ)
    if os.environ.get("INTEROP_DIRECT") == "1":
        mode = "direct (relay bypassed)"
        params = StdioServerParameters(command=server_argv[0], args=server_argv[1:], env=env)
    else:
        mode = f"via {relay_bin} forward"
        params = StdioServerParameters(
            command=relay_bin, args=["forward", "--", *server_argv], env=env
        )
    return params, mode


async def run(relay_bin: str, server_argv: list[str]) -> str:
    params, mode = server_params(relay_bin, server_argv)
    print(f"interop: spawning {params.command} {' '.join(params.args)}", file=sys.stderr)

    roots_requested = anyio.Event()
    roots_ack_logged = anyio.Event()
    log_messages: list[str] = []

    async def list_roots(_ctx: RequestContext) -> types.ListRootsResult:
        roots_requested.set()
        return types.ListRootsResult(
            roots=[types.Root(uri=ROOT_URI, name="interop-root")]  # type: ignore[arg-type]
        )

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        text = str(params.data)
        log_messages.append(text)
        if "Roots updated" in text:
            roots_ack_logged.set()

    t0 = time.monotonic()
    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with stdio_client(params) as (read, write):
            async with ClientSession(
                read,
                write,
                list_roots_callback=list_roots,
                logging_callback=on_log,
            ) as session:
                init = await session.initialize()
                server_name = init.serverInfo.name
                assert init.capabilities.tools is not None, f"server has no tools capability: {init}"
                print(
                    f"interop: initialized {server_name} {init.serverInfo.version} "
                    f"protocol {init.protocolVersion}",
                    file=sys.stderr,
                )

                tools = await session.list_tools()
                names = {t.name for t in tools.tools}
                for want in (ECHO_TOOL, LONG_TOOL):
                    assert want in names, f"tool {want!r} missing from tools/list: {sorted(names)}"

                message = "hello through mcp-relay ✓ \"quoted\" \\ backslash"
                echo = await session.call_tool(ECHO_TOOL, {"message": message})
                assert not echo.isError, f"echo returned error: {echo}"
                texts = [c.text for c in echo.content if isinstance(c, types.TextContent)]
                assert any(message in t for t in texts), f"echo text mismatch: {texts!r}"

                progress: list[tuple[float, float | None]] = []

                async def on_progress(p: float, total: float | None, _msg: str | None) -> None:
                    progress.append((p, total))

                long = await session.call_tool(
                    LONG_TOOL,
                    {"duration": LONG_DURATION_S, "steps": LONG_STEPS},
                    progress_callback=on_progress,
                )
                assert not long.isError, f"{LONG_TOOL} returned error: {long}"
                long_texts = [c.text for c in long.content if isinstance(c, types.TextContent)]
                assert any("completed" in t for t in long_texts), f"unexpected result: {long_texts!r}"
                # The server awaits each notification before the final response and
                # the SDK runs progress callbacks inline in its receive loop, so an
                # order-preserving relay delivers every one before call_tool returns.
                assert len(progress) >= 1, "no notifications/progress received"
                assert len(progress) == LONG_STEPS, (
                    f"expected {LONG_STEPS} progress notifications, got {len(progress)}: {progress}"
                )
                assert [p for p, _ in progress] == [float(i) for i in range(1, LONG_STEPS + 1)], (
                    f"progress out of order: {progress}"
                )

                # Server -> client request: the server asks for roots ~350 ms after
                # notifications/initialized, and logs once it got our answer.
                with anyio.fail_after(ROOTS_WAIT_S):
                    await roots_requested.wait()
                    await roots_ack_logged.wait()

                # A final round trip after all the asynchronous traffic.
                ping = await session.send_ping()
                assert isinstance(ping, types.EmptyResult), f"unexpected ping result: {ping!r}"

    elapsed = time.monotonic() - t0
    return (
        f"{mode}: server={server_name} tools={len(names)} echo=ok "
        f"progress={len(progress)}/{LONG_STEPS} roots=ok logs={len(log_messages)} "
        f"in {elapsed:.2f}s"
    )


def main() -> int:
    relay_bin, server_argv = parse_argv(sys.argv)
    summary = anyio.run(run, relay_bin, server_argv)
    print(f"interop ok: {summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
