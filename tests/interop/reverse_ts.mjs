#!/usr/bin/env node
// Interop check: the official TypeScript MCP SDK client (Streamable HTTP)
// talking to the reference "everything" server through `mcp-relay reverse`.
//
// Usage:
//     node reverse_ts.mjs BASE_URL MODE
//
// BASE_URL is the relay's root (e.g. http://127.0.0.1:8080): the MCP endpoint
// is BASE_URL/mcp and the metrics BASE_URL/metrics. MODE is the relay's pool
// mode, `session` or `shared`; it decides which post-session checks apply.
// The SDK is loaded from target/test-deps/node/node_modules (provisioned by
// .ci/install-deps.sh); INTEROP_NODE_MODULES overrides that directory.
//
// Exercises the same steps as reverse_python.py: initialize (+ the SDK's GET
// stream after notifications/initialized), logging/setLevel and the
// `toggle-simulated-logging` tool (at least one notifications/message must
// arrive), tools/list, echo, resources/list + read, prompts/list + get, the
// long-running tool with progress (4 notifications, in order), then
// `transport.terminateSession()` (DELETE): the old Mcp-Session-Id must get
// 404 and, in session mode, the server process must be closed (metrics:
// leased back to 0, upstream_exited_total up).
//
// Prints `interop ok: ...` and exits 0 on success; on failure prints the
// error and exits 1. Logs what it sees on stderr.

import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const OVERALL_TIMEOUT_MS = 60_000;
const ECHO_TOOL = "echo";
const LONG_TOOL = "trigger-long-running-operation";
const LOG_TOOL = "toggle-simulated-logging";
const LONG_DURATION_S = 1;
const LONG_STEPS = 4;
// The first simulated log is sent at once, the next ones every 5 s.
const LOG_WAIT_MS = 8_000;
const METRICS_WAIT_MS = 10_000;
const STATIC_DOC_PREFIX = "demo://resource/static/document/";

const overall = setTimeout(() => {
  console.error(`interop[ts]: FAILED: overall timeout of ${OVERALL_TIMEOUT_MS} ms exceeded`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

const log = (msg) => console.error(`interop[ts]: ${msg}`);

function assert(cond, msg) {
  if (!cond) {
    throw new Error(`assertion failed: ${typeof msg === "function" ? msg() : msg}`);
  }
}

const show = (v) => JSON.stringify(v);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function parseArgv() {
  const [base, mode] = process.argv.slice(2);
  if (!base || !["session", "shared"].includes(mode) || process.argv.length !== 4) {
    console.error(`usage: node ${path.basename(process.argv[1])} BASE_URL session|shared`);
    process.exit(2);
  }
  return { base: base.replace(/\/+$/, ""), mode };
}

async function loadSdk() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const nodeModules =
    process.env.INTEROP_NODE_MODULES || path.resolve(here, "../../target/test-deps/node/node_modules");
  const esm = path.join(nodeModules, "@modelcontextprotocol/sdk/dist/esm");
  const load = (rel) => import(pathToFileURL(path.join(esm, rel)).href);
  const [client, http, types] = await Promise.all([
    load("client/index.js"),
    load("client/streamableHttp.js"),
    load("types.js"),
  ]);
  return {
    Client: client.Client,
    StreamableHTTPClientTransport: http.StreamableHTTPClientTransport,
    LoggingMessageNotificationSchema: types.LoggingMessageNotificationSchema,
  };
}

// --- /metrics ------------------------------------------------------------------

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function metricSum(samples, name, want = {}) {
  return samples
    .filter((s) => s.name === name && Object.entries(want).every(([k, v]) => s.labels[k] === v))
    .reduce((acc, s) => acc + s.value, 0);
}

async function poolState(base) {
  const r = await fetch(`${base}/metrics`);
  assert(r.ok, `GET /metrics: ${r.status}`);
  const samples = parseMetrics(await r.text());
  const state = {};
  for (const s of ["starting", "idle", "leased", "closing"]) {
    state[s] = metricSum(samples, "mcp_relay_upstream_connections", { state: s });
  }
  state.spawned = metricSum(samples, "mcp_relay_upstream_spawned_total");
  state.exited = metricSum(samples, "mcp_relay_upstream_exited_total");
  state.sessions = metricSum(samples, "mcp_relay_sessions");
  return state;
}

// --- the session -----------------------------------------------------------------

const texts = (content) => (content || []).filter((c) => c.type === "text").map((c) => c.text);

async function run({ base, mode }) {
  const sdk = await loadSdk();
  const url = new URL(`${base}/mcp`);
  const t0 = performance.now();

  const before = await poolState(base);
  log(`pool before: ${show(before)}`);

  const transportErrors = [];
  const transport = new sdk.StreamableHTTPClientTransport(url);
  const client = new sdk.Client({ name: "mcp-relay-interop-ts", version: "1.0.0" }, { capabilities: {} });
  client.onerror = (e) => {
    transportErrors.push(String(e));
    log(`client/transport error: ${e}`);
  };

  const logMessages = [];
  let logArrived;
  const gotLog = new Promise((resolve) => (logArrived = resolve));
  client.setNotificationHandler(sdk.LoggingMessageNotificationSchema, (n) => {
    logMessages.push(n.params);
    logArrived();
  });

  await client.connect(transport);
  const sessionId = transport.sessionId;
  const protocol = transport.protocolVersion;
  const info = client.getServerVersion();
  const server = `${info.name} ${info.version}`;
  log(`initialized ${server}, protocol ${protocol}, session ${sessionId}`);
  assert(sessionId, "no Mcp-Session-Id from the relay");
  const caps = client.getServerCapabilities();
  assert(caps.tools && caps.logging, () => `missing tools/logging capability: ${show(caps)}`);

  const during = await poolState(base);
  log(`pool during: ${show(during)}`);
  if (mode === "session") {
    assert(during.leased >= 1, () => `no leased process during the session: ${show(during)}`);
  }

  // Logging: level first, then start the simulated logger.
  await client.setLoggingLevel("debug");
  const toggled = await client.callTool({ name: LOG_TOOL, arguments: {} });
  assert(!toggled.isError, () => `${LOG_TOOL} returned error: ${show(toggled)}`);
  log(`${LOG_TOOL}: ${show(texts(toggled.content))}`);
  assert(
    texts(toggled.content).some((t) => t.includes("Started")),
    () => `${LOG_TOOL} did not start logging: ${show(toggled)}`,
  );

  const { tools } = await client.listTools();
  const names = new Set(tools.map((t) => t.name));
  for (const want of [ECHO_TOOL, LONG_TOOL, LOG_TOOL]) {
    assert(names.has(want), () => `tool ${want} missing from tools/list: ${show([...names].sort())}`);
  }

  const message = 'hello through mcp-relay reverse ✓ "quoted" \\ backslash';
  const echo = await client.callTool({ name: ECHO_TOOL, arguments: { message } });
  assert(!echo.isError, () => `echo returned error: ${show(echo)}`);
  assert(
    show(texts(echo.content)) === show([`Echo: ${message}`]),
    () => `echo mismatch: ${show(echo.content)}`,
  );

  const { resources } = await client.listResources();
  const docs = resources.filter((r) => r.uri.startsWith(STATIC_DOC_PREFIX));
  assert(docs.length > 0, () => `no static document in resources/list: ${show(resources.map((r) => r.uri))}`);
  const doc = docs.find((r) => r.uri.endsWith("/instructions.md")) ?? docs[0];
  const read = await client.readResource({ uri: doc.uri });
  assert(read.contents.length === 1, () => `resources/read: ${show(read)}`);
  assert(read.contents[0].uri === doc.uri, () => `uri mismatch: ${read.contents[0].uri} != ${doc.uri}`);
  assert(
    typeof read.contents[0].text === "string" && read.contents[0].text.length > 0,
    () => `empty or non-text resource ${doc.uri}: ${show(read.contents[0]).slice(0, 200)}`,
  );

  const { prompts } = await client.listPrompts();
  const pnames = new Set(prompts.map((p) => p.name));
  for (const want of ["simple-prompt", "args-prompt"]) {
    assert(pnames.has(want), () => `prompt ${want} missing: ${show([...pnames].sort())}`);
  }
  const promptTexts = (p) => p.messages.filter((m) => m.content.type === "text").map((m) => m.content.text);
  const simple = await client.getPrompt({ name: "simple-prompt" });
  assert(
    show(promptTexts(simple)) === show(["This is a simple prompt without arguments."]),
    () => `simple-prompt: ${show(simple)}`,
  );
  const args = await client.getPrompt({ name: "args-prompt", arguments: { city: "Zürich", state: "ZH" } });
  assert(
    show(promptTexts(args)) === show(["What's weather in Zürich, ZH?"]),
    () => `args-prompt: ${show(args)}`,
  );

  const progress = [];
  const long = await client.callTool(
    { name: LONG_TOOL, arguments: { duration: LONG_DURATION_S, steps: LONG_STEPS } },
    undefined,
    { onprogress: (p) => progress.push([p.progress, p.total]) },
  );
  assert(!long.isError, () => `${LONG_TOOL} returned error: ${show(long)}`);
  assert(texts(long.content).some((t) => t.includes("completed")), () => show(long));
  const wantProgress = Array.from({ length: LONG_STEPS }, (_, i) => [i + 1, LONG_STEPS]);
  assert(
    show(progress) === show(wantProgress),
    () => `expected progress 1..${LONG_STEPS} of ${LONG_STEPS} in order, got ${show(progress)}`,
  );

  // At least one log message; the first was sent during the toggle call, the
  // next come every 5 s on their own.
  await Promise.race([gotLog, sleep(LOG_WAIT_MS)]);
  log(`log messages received: ${show(logMessages.map((m) => [m.level, m.data]))}`);
  assert(
    logMessages.length > 0,
    `no notifications/message within ${LOG_WAIT_MS} ms of starting simulated logging (${mode} mode)`,
  );

  // Stop the logger (it lives on in a shared process).
  const stopped = await client.callTool({ name: LOG_TOOL, arguments: {} });
  assert(texts(stopped.content).some((t) => t.includes("Stopped")), () => show(stopped));

  await client.ping();

  await transport.terminateSession();
  assert(transport.sessionId === undefined, "terminateSession kept the session id");
  await client.close();

  // The terminated session id is unknown now: 404 (MCP Streamable HTTP).
  const probe = await fetch(url, {
    method: "POST",
    headers: {
      "mcp-session-id": sessionId,
      "mcp-protocol-version": protocol,
      accept: "application/json, text/event-stream",
      "content-type": "application/json",
    },
    body: JSON.stringify({ jsonrpc: "2.0", id: 99, method: "ping" }),
  });
  const probeBody = await probe.text();
  log(`POST with the terminated session id: ${probe.status}`);
  assert(probe.status === 404, `session ${sessionId} still answers after DELETE: ${probe.status} ${probeBody}`);

  // Session mode: the session's process is closed once the session ends.
  const deadline = performance.now() + METRICS_WAIT_MS;
  let after;
  for (;;) {
    after = await poolState(base);
    let done = after.sessions === 0;
    if (mode === "session") done = done && after.leased === 0 && after.exited > before.exited;
    if (done || performance.now() > deadline) break;
    await sleep(100);
  }
  log(`pool after: ${show(after)}`);
  assert(after.sessions === 0, () => `session still counted after DELETE: ${show(after)}`);
  if (mode === "session") {
    assert(after.leased === 0, () => `process still leased ${METRICS_WAIT_MS} ms after DELETE: ${show(after)}`);
    assert(
      after.exited > before.exited,
      () => `no upstream process exited within ${METRICS_WAIT_MS} ms of DELETE: before ${show(before)}, after ${show(after)}`,
    );
  }
  if (transportErrors.length) log(`transport errors seen (not fatal): ${show(transportErrors)}`);

  const elapsed = ((performance.now() - t0) / 1000).toFixed(2);
  return (
    `ts sdk, ${mode} pool: server=${server} protocol=${protocol} tools=${names.size} echo=ok ` +
    `resource=${doc.uri} prompts=ok progress=${progress.length}/${LONG_STEPS} logs=${logMessages.length} ` +
    `terminated=404 pool_after=leased:${after.leased},exited:${after.exited} in ${elapsed}s`
  );
}

try {
  const summary = await run(parseArgv());
  clearTimeout(overall);
  console.log(`interop ok: ${summary}`);
  process.exit(0);
} catch (e) {
  console.error(`interop[ts]: FAILED: ${e?.stack ?? e}`);
  process.exit(1);
}
