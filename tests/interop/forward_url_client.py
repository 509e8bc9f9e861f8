#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK stdio client talking, through
`mcp-relay forward --url URL`, to a remote MCP Streamable HTTP server.

Usage:
    python3 forward_url_client.py PROFILE RELAY_BIN -- RELAY_ARG...

PROFILE names the upstream server and so the steps run:
  everything  @modelcontextprotocol/server-everything in streamableHttp mode
  fastmcp     tests/interop/fastmcp_server.py (Python SDK FastMCP)

RELAY_ARG... are the relay's arguments, passed as given, e.g.:
    python3 tests/interop/forward_url_client.py everything target/debug/mcp-relay -- \
        forward --url http://127.0.0.1:3001/mcp --log-level debug

Set INTEROP_DIRECT=1 to bypass the relay and connect the SDK's own Streamable
HTTP client to the `--url` found in RELAY_ARG...; useful to tell relay bugs
from client/server ones. The relay's stderr is the script's stderr.

Steps (both profiles):
  * initialize (prints the negotiated protocol version)
  * tools/list (the profile's tools present)
  * tools/call echo: `{message}` -> "Echo: <message>"
  * a tool reporting progress, called with a progress callback: every
    notifications/progress arrives, in order, before the result
  * everything: roots/list, a server -> client request the server sends ~350 ms
    after notifications/initialized with no related request (so over the GET
    stream), answered by the client; the server confirms with a log entry
  * fastmcp: a tool logging via ctx.info: its notifications/message reaches
    the logging callback before the result
  * ping, then exit: the relay must exit by itself, status 0, within the
    SDK's grace period after its stdin closes (else the SDK terminates it)

Prints `interop ok: ...` and exits 0 on success; any failure raises (traceback,
non-zero exit). The whole run is bounded by a 60 s timeout.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio
import mcp.client.stdio as sdk_stdio
from mcp import ClientSession, StdioServerParameters, types
from mcp.shared.context import RequestContext

OVERALL_TIMEOUT_S = 60
ROOTS_WAIT_S = 10
ROOT_URI = "file:///tmp/mcp-relay-interop-root"
ECHO_MESSAGE = "hello through mcp-relay --url ✓ \"quoted\" \\ backslash"
PROGRESS_STEPS = 4
LOG_MESSAGE = "interop log line ✓"


class Profile:
    def __init__(self, name: str, progress_tool: str, progress_args: dict[str, Any], extra_tools: tuple[str, ...]):
        self.name = name
        self.progress_tool = progress_tool
        self.progress_args = progress_args
        self.tools = ("echo", progress_tool, *extra_tools)


PROFILES = {
    "everything": Profile(
        "everything",
        "trigger-long-running-operation",
        {"duration": 1, "steps": PROGRESS_STEPS},
        (),
    ),
    "fastmcp": Profile(
        "fastmcp",
        "count_with_progress",
        {"steps": PROGRESS_STEPS},
        ("log_info",),
    ),
}


def log(msg: str) -> None:
    print(f"interop: {msg}", file=sys.stderr, flush=True)


def parse_argv(argv: list[str]) -> tuple[Profile, str, list[str]]:
    usage = f"usage: {os.path.basename(argv[0])} {{{'|'.join(PROFILES)}}} RELAY_BIN -- RELAY_ARG..."
    if len(argv) < 5 or argv[3] != "--" or argv[1] not in PROFILES:
        sys.exit(usage)
    return PROFILES[argv[1]], argv[2], argv[4:]


def url_of(relay_args: list[str]) -> str:
    for i, arg in enumerate(relay_args):
        if arg == "--url" and i + 1 < len(relay_args):
            return relay_args[i + 1]
        if arg.startswith("--url="):
            return arg.removeprefix("--url=")
    sys.exit("INTEROP_DIRECT=1 needs `--url URL` among the relay arguments")


class RelayProcess:
    """Captures the process the SDK's stdio_client spawns, to check how it ended."""

    def __init__(self) -> None:
        self.process: Any = None

    def install(self) -> None:
        original = getattr(sdk_stdio, "_create_platform_compatible_process", None)
        if original is None:
            raise RuntimeError(
                "mcp.client.stdio._create_platform_compatible_process is gone: "
                "this SDK version hides the process, adapt RelayProcess"
            )

        async def capture(*args: Any, **kwargs: Any) -> Any:
            self.process = await original(*args, **kwargs)
            return self.process

        sdk_stdio._create_platform_compatible_process = capture  # type: ignore[attr-defined]


@asynccontextmanager
async def connect(relay_bin: str, relay_args: list[str], relay: RelayProcess) -> AsyncIterator[tuple[Any, Any, str]]:
    if os.environ.get("INTEROP_DIRECT") == "1":
        import mcp.client.streamable_http as sdk_http

        url = url_of(relay_args)
        client = getattr(sdk_http, "streamable_http_client", None) or sdk_http.streamablehttp_client
        log(f"connecting directly to {url} (relay bypassed)")
        async with client(url) as (read, write, _get_session_id):
            yield read, write, f"direct to {url}"
        return

    # Pass the full environment through (the SDK default keeps only a handful
    # of variables), so RUST_LOG etc. reach the relay when debugging.
    params = StdioServerParameters(command=relay_bin, args=relay_args, env=dict(os.environ))
    log(f"spawning {relay_bin} {' '.join(relay_args)}")
    relay.install()
    async with sdk_stdio.stdio_client(params) as (read, write):
        yield read, write, f"via {os.path.basename(relay_bin)} {relay_args[0] if relay_args else ''} --url"


async def run(profile: Profile, relay_bin: str, relay_args: list[str]) -> str:
    relay = RelayProcess()
    roots_requested = anyio.Event()
    roots_ack_logged = anyio.Event()
    log_messages: list[types.LoggingMessageNotificationParams] = []

    async def list_roots(_ctx: RequestContext) -> types.ListRootsResult:
        roots_requested.set()
        return types.ListRootsResult(
            roots=[types.Root(uri=ROOT_URI, name="interop-root")]  # type: ignore[arg-type]
        )

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        log_messages.append(params)
        log(f"log notification: level={params.level} logger={params.logger} data={params.data!r}")
        if "Roots updated" in str(params.data):
            roots_ack_logged.set()

    t0 = time.monotonic()
    notes: list[str] = []
    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with connect(relay_bin, relay_args, relay) as (read, write, mode):
            async with ClientSession(
                read,
                write,
                list_roots_callback=list_roots,
                logging_callback=on_log,
            ) as session:
                init = await session.initialize()
                server = f"{init.serverInfo.name} {init.serverInfo.version}"
                assert init.capabilities.tools is not None, f"server has no tools capability: {init}"
                log(f"initialized {server}, protocol {init.protocolVersion} (client asked {types.LATEST_PROTOCOL_VERSION})")
                notes.append(f"protocol={init.protocolVersion}")

                tools = await session.list_tools()
                names = {t.name for t in tools.tools}
                for want in profile.tools:
                    assert want in names, f"tool {want!r} missing from tools/list: {sorted(names)}"

                echo = await session.call_tool("echo", {"message": ECHO_MESSAGE})
                assert not echo.isError, f"echo returned error: {echo}"
                texts = [c.text for c in echo.content if isinstance(c, types.TextContent)]
                assert texts == [f"Echo: {ECHO_MESSAGE}"], f"echo text mismatch: {texts!r}"

                progress: list[tuple[float, float | None, str | None]] = []

                async def on_progress(p: float, total: float | None, msg: str | None) -> None:
                    progress.append((p, total, msg))

                result = await session.call_tool(
                    profile.progress_tool, profile.progress_args, progress_callback=on_progress
                )
                assert not result.isError, f"{profile.progress_tool} returned error: {result}"
                result_texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
                log(f"{profile.progress_tool}: {result_texts!r}, progress {progress}")
                # Both servers await each notification before the result, on the
                # same SSE response, and the SDK runs progress callbacks inline in
                # its receive loop: an order-preserving relay delivers every one
                # before call_tool returns.
                assert len(progress) == PROGRESS_STEPS, (
                    f"expected {PROGRESS_STEPS} progress notifications, got {len(progress)}: {progress}"
                )
                assert [p for p, _, _ in progress] == [float(i) for i in range(1, PROGRESS_STEPS + 1)], (
                    f"progress out of order: {progress}"
                )
                assert all(t == PROGRESS_STEPS for _, t, _ in progress), f"unexpected totals: {progress}"
                notes.append(f"progress={len(progress)}/{PROGRESS_STEPS}")

                if profile.name == "everything":
                    assert any("completed" in t for t in result_texts), f"unexpected result: {result_texts!r}"
                    # Server -> client request with no related request: it can only
                    # travel on the session's GET stream.
                    with anyio.fail_after(ROOTS_WAIT_S):
                        await roots_requested.wait()
                        await roots_ack_logged.wait()
                    notes.append("roots=ok")

                if profile.name == "fastmcp":
                    assert result_texts == [f"counted to {PROGRESS_STEPS}"], f"unexpected result: {result_texts!r}"
                    before = len(log_messages)
                    logged = await session.call_tool("log_info", {"message": LOG_MESSAGE})
                    assert not logged.isError, f"log_info returned error: {logged}"
                    new = log_messages[before:]
                    assert [(m.level, m.data) for m in new] == [("info", LOG_MESSAGE)], (
                        f"expected one info log {LOG_MESSAGE!r} before the log_info result, got {new}"
                    )
                    notes.append("log=ok")

                ping = await session.send_ping()
                assert isinstance(ping, types.EmptyResult), f"unexpected ping result: {ping!r}"
                closing = time.monotonic()
        closed_in = time.monotonic() - closing

    if relay.process is not None:
        code = relay.process.returncode
        log(f"relay exit status {code}, {closed_in:.2f}s after the session closed")
        # The SDK closes the relay's stdin, waits PROCESS_TERMINATION_TIMEOUT
        # (2 s) for it to exit and then terminates it (SIGTERM, SIGKILL).
        grace = getattr(sdk_stdio, "PROCESS_TERMINATION_TIMEOUT", 2.0)
        assert closed_in < grace, (
            f"relay did not exit within {grace}s of stdin EOF (the SDK terminated it); status {code}"
        )
        assert code == 0, f"relay exited with status {code}"
        notes.append(f"relay_exit=0 in {closed_in:.2f}s")

    elapsed = time.monotonic() - t0
    return (
        f"{profile.name} {mode}: server={server} tools={len(names)} echo=ok "
        f"{' '.join(notes)} logs={len(log_messages)} in {elapsed:.2f}s"
    )


def main() -> int:
    profile, relay_bin, relay_args = parse_argv(sys.argv)
    summary = anyio.run(run, profile, relay_bin, relay_args)
    print(f"interop ok: {summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
