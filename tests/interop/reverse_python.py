#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK client (Streamable HTTP) talking
to the reference "everything" server through `mcp-relay reverse`.

Usage:
    python3 reverse_python.py BASE_URL MODE

BASE_URL is the relay's root (e.g. http://127.0.0.1:8080): the MCP endpoint is
BASE_URL/mcp and the metrics BASE_URL/metrics. MODE is the relay's pool mode,
`session` or `shared`, or `url` for a relay in front of the "everything"
server in streamableHttp mode (`reverse --url`, no process pool); it decides
which post-session checks apply. The relay must already be running, e.g.:

    target/debug/mcp-relay reverse --listen 127.0.0.1:8080 --pool session -- \
        node target/test-deps/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio

    PORT=3001 node target/test-deps/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js streamableHttp &
    target/debug/mcp-relay reverse --listen 127.0.0.1:8080 --url http://127.0.0.1:3001/mcp

Exercises, over Streamable HTTP:
  * initialize (+ the SDK's GET stream after notifications/initialized)
  * logging/setLevel, then the `toggle-simulated-logging` tool: the server logs
    once right away (a notification tied to no request) and every 5 s after;
    at least one notifications/message must reach the client
  * tools/list (echo + trigger-long-running-operation present), tools/call echo
  * resources/list + resources/read of a static document
  * prompts/list + prompts/get (simple-prompt, no arguments; args-prompt, one)
  * tools/call trigger-long-running-operation with a progress callback: 4
    notifications/progress, in order, before the result
  * session end: the SDK sends DELETE on exit (terminate_on_close); the old
    Mcp-Session-Id must then get 404; in session mode the server process must
    be closed (metrics: leased back to 0, upstream_exited_total up); in every
    mode the relay's session gauge must be back to 0

Prints `interop ok: ...` and exits 0 on success; any failure raises (traceback,
non-zero exit). Logs what it sees on stderr.
"""

from __future__ import annotations

import contextlib
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

ECHO_TOOL = "echo"
LONG_TOOL = "trigger-long-running-operation"
LOG_TOOL = "toggle-simulated-logging"
LONG_DURATION_S = 1.0
LONG_STEPS = 4
OVERALL_TIMEOUT_S = 60
# Hard stop (tracebacks of every thread, then exit) should anyio's deadline
# not get through.
HARD_TIMEOUT_S = OVERALL_TIMEOUT_S + 5
# The first simulated log is sent at once, the next ones every 5 s.
LOG_WAIT_S = 8
LOG_PERIOD_S = 5
METRICS_WAIT_S = 10
STATIC_DOC_PREFIX = "demo://resource/static/document/"


def log(msg: str) -> None:
    print(f"interop[python]: {msg}", file=sys.stderr, flush=True)


def parse_argv(argv: list[str]) -> tuple[str, str]:
    if len(argv) != 3 or argv[2] not in ("session", "shared", "url"):
        sys.exit(f"usage: {argv[0]} BASE_URL session|shared|url")
    return argv[1].rstrip("/"), argv[2]


# --- /metrics ------------------------------------------------------------------

METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric_sum(samples, name: str, **want: str) -> float:
    return sum(
        v for n, labels, v in samples if n == name and all(labels.get(k) == x for k, x in want.items())
    )


async def scrape(http: httpx.AsyncClient, base: str):
    r = await http.get(f"{base}/metrics")
    r.raise_for_status()
    return parse_metrics(r.text)


def pool_state(samples) -> dict[str, float]:
    state = {
        s: metric_sum(samples, "mcp_relay_upstream_connections", state=s)
        for s in ("starting", "idle", "leased", "closing")
    }
    state["spawned"] = metric_sum(samples, "mcp_relay_upstream_spawned_total")
    state["exited"] = metric_sum(samples, "mcp_relay_upstream_exited_total")
    state["sessions"] = metric_sum(samples, "mcp_relay_sessions")
    return state


# --- the session -----------------------------------------------------------------


def texts(content) -> list[str]:
    return [c.text for c in content if isinstance(c, types.TextContent)]


async def run(base: str, mode: str) -> str:
    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with httpx.AsyncClient(timeout=10) as http:
            return await run_with(http, base, mode)


async def run_with(http: httpx.AsyncClient, base: str, mode: str) -> str:
    url = f"{base}/mcp"
    t0 = time.monotonic()
    # (seconds since the logger was started, level, data) per session.
    log_messages: list[tuple[float, str, object]] = []
    observer_logs: list[tuple[float, str, object]] = []
    got_log = anyio.Event()
    toggled_at = [t0]

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        log_messages.append((time.monotonic() - toggled_at[0], params.level, params.data))
        got_log.set()

    async def on_observer_log(params: types.LoggingMessageNotificationParams) -> None:
        observer_logs.append((time.monotonic() - toggled_at[0], params.level, params.data))

    before = pool_state(await scrape(http, base))
    log(f"pool before: {before}")

    async with streamablehttp_client(url, timeout=10, sse_read_timeout=30) as (read, write, get_session_id):
        async with ClientSession(read, write, logging_callback=on_log) as session:
            init = await session.initialize()
            session_id = get_session_id()
            server = f"{init.serverInfo.name} {init.serverInfo.version}"
            log(f"initialized {server}, protocol {init.protocolVersion}, session {session_id}")
            assert session_id, "no Mcp-Session-Id from the relay"
            assert init.capabilities.tools is not None, f"no tools capability: {init}"
            assert init.capabilities.logging is not None, f"no logging capability: {init}"

            during = pool_state(await scrape(http, base))
            log(f"pool during: {during}")
            if mode == "session":
                assert during["leased"] >= 1, f"no leased process during the session: {during}"

            async with contextlib.AsyncExitStack() as observer_stack:
                if mode == "shared":
                    r2, w2, observer_id = await observer_stack.enter_async_context(
                        streamablehttp_client(url, timeout=10, sse_read_timeout=30)
                    )
                    observer = await observer_stack.enter_async_context(
                        ClientSession(r2, w2, logging_callback=on_observer_log)
                    )
                    await observer.initialize()
                    log(f"observer session {observer_id()} open (idle from here on)")

                # Logging: level first, then start the simulated logger.
                await session.set_logging_level("debug")
                toggled_at[0] = time.monotonic()
                toggled = await session.call_tool(LOG_TOOL, {})
                assert not toggled.isError, f"{LOG_TOOL} returned error: {toggled}"
                log(f"{LOG_TOOL}: {texts(toggled.content)}")
                assert any("Started" in t for t in texts(toggled.content)), (
                    f"{LOG_TOOL} did not start logging: {texts(toggled.content)}"
                )

                tools = await session.list_tools()
                names = {t.name for t in tools.tools}
                for want in (ECHO_TOOL, LONG_TOOL, LOG_TOOL):
                    assert want in names, f"tool {want!r} missing from tools/list: {sorted(names)}"

                message = 'hello through mcp-relay reverse ✓ "quoted" \\ backslash'
                echo = await session.call_tool(ECHO_TOOL, {"message": message})
                assert not echo.isError, f"echo returned error: {echo}"
                assert texts(echo.content) == [f"Echo: {message}"], f"echo mismatch: {texts(echo.content)!r}"

                resources = await session.list_resources()
                docs = [r for r in resources.resources if str(r.uri).startswith(STATIC_DOC_PREFIX)]
                assert docs, f"no static document in resources/list: {[str(r.uri) for r in resources.resources]}"
                doc = next((r for r in docs if str(r.uri).endswith("/instructions.md")), docs[0])
                read_res = await session.read_resource(doc.uri)
                assert len(read_res.contents) == 1, f"resources/read: {read_res}"
                content = read_res.contents[0]
                assert isinstance(content, types.TextResourceContents), f"not text: {content!r}"
                assert str(content.uri) == str(doc.uri), f"uri mismatch: {content.uri} != {doc.uri}"
                assert len(content.text) > 0, f"empty resource {doc.uri}"

                prompts = await session.list_prompts()
                pnames = {p.name for p in prompts.prompts}
                for want in ("simple-prompt", "args-prompt"):
                    assert want in pnames, f"prompt {want!r} missing: {sorted(pnames)}"
                simple = await session.get_prompt("simple-prompt")
                simple_texts = [m.content.text for m in simple.messages if isinstance(m.content, types.TextContent)]
                assert simple_texts == ["This is a simple prompt without arguments."], simple_texts
                args = await session.get_prompt("args-prompt", {"city": "Zürich", "state": "ZH"})
                args_texts = [m.content.text for m in args.messages if isinstance(m.content, types.TextContent)]
                assert args_texts == ["What's weather in Zürich, ZH?"], args_texts

                progress: list[tuple[float, float | None]] = []

                async def on_progress(p: float, total: float | None, _msg: str | None) -> None:
                    progress.append((p, total))

                long = await session.call_tool(
                    LONG_TOOL,
                    {"duration": LONG_DURATION_S, "steps": LONG_STEPS},
                    progress_callback=on_progress,
                )
                assert not long.isError, f"{LONG_TOOL} returned error: {long}"
                assert any("completed" in t for t in texts(long.content)), texts(long.content)
                assert progress == [(float(i), float(LONG_STEPS)) for i in range(1, LONG_STEPS + 1)], (
                    f"expected progress 1..{LONG_STEPS} of {LONG_STEPS} in order, got {progress}"
                )

                # At least one log message; the first was sent during the
                # toggle call, the next come every 5 s on their own.
                with anyio.move_on_after(LOG_WAIT_S):
                    await got_log.wait()
                log(f"log messages received: {log_messages}")
                assert log_messages, (
                    f"no notifications/message within {LOG_WAIT_S}s of starting simulated logging ({mode} mode)"
                )

                if mode == "shared":
                    # One periodic message too (sent while no request is in
                    # flight), then report where each one went.
                    deadline = toggled_at[0] + LOG_PERIOD_S + 3
                    periodic = lambda logs: [m for m in logs if m[0] >= LOG_PERIOD_S - 1]  # noqa: E731
                    while not (periodic(log_messages) or periodic(observer_logs)) and time.monotonic() < deadline:
                        await anyio.sleep(0.05)
                    await anyio.sleep(0.2)  # let a broadcast reach the other session too
                    first = lambda logs: [m for m in logs if m[0] < LOG_PERIOD_S - 1]  # noqa: E731
                    log(
                        "shared-mode log routing: first message (sent during the caller's tools/call) -> "
                        f"caller {len(first(log_messages))}, idle observer {len(first(observer_logs))}; "
                        "periodic messages (no request in flight) -> "
                        f"caller {len(periodic(log_messages))}, idle observer {len(periodic(observer_logs))}"
                    )
                    log(f"observer log messages: {observer_logs}")
                    assert first(log_messages), f"the caller did not get the first log message: {log_messages}"

                # Stop the logger (it lives on in a shared process).
                stopped = await session.call_tool(LOG_TOOL, {})
                assert any("Stopped" in t for t in texts(stopped.content)), texts(stopped.content)

                ping = await session.send_ping()
                assert isinstance(ping, types.EmptyResult), f"unexpected ping result: {ping!r}"
            # The observer (if any) has been terminated here.
    # Leaving streamablehttp_client sent DELETE (terminate_on_close).

    # The terminated session id is unknown now: 404 (MCP Streamable HTTP).
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

    # Session mode: the session's process is closed once the session ends.
    deadline = time.monotonic() + METRICS_WAIT_S
    while True:
        after = pool_state(await scrape(http, base))
        done = after["sessions"] == 0
        if mode == "session":
            done = done and after["leased"] == 0 and after["exited"] > before["exited"]
        if done or time.monotonic() > deadline:
            break
        await anyio.sleep(0.1)
    log(f"pool after: {after}")
    assert after["sessions"] == 0, f"session still counted after DELETE: {after}"
    if mode == "session":
        assert after["leased"] == 0, f"process still leased {METRICS_WAIT_S}s after DELETE: {after}"
        assert after["exited"] > before["exited"], (
            f"no upstream process exited within {METRICS_WAIT_S}s of DELETE: before {before}, after {after}"
        )

    elapsed = time.monotonic() - t0
    extra = f" observer_logs={len(observer_logs)}" if mode == "shared" else ""
    return (
        f"python sdk, {mode} pool: server={server} protocol={init.protocolVersion} tools={len(names)} echo=ok "
        f"resource={doc.uri} prompts=ok progress={len(progress)}/{LONG_STEPS} logs={len(log_messages)}{extra} "
        f"terminated=404 pool_after=leased:{after['leased']:g},exited:{after['exited']:g} in {elapsed:.2f}s"
    )


def main() -> int:
    base, mode = parse_argv(sys.argv)
    faulthandler.dump_traceback_later(HARD_TIMEOUT_S, exit=True)
    summary = anyio.run(run, base, mode)
    faulthandler.cancel_dump_traceback_later()
    print(f"interop ok: {summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
