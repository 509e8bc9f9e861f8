#!/usr/bin/env node
// Interop check: the official TypeScript MCP client 2.x
// (`@modelcontextprotocol/client`, `versionNegotiation: {mode: 'auto'}`)
// through the relay, in any mode (tests/interop_ts2.rs).
//
// Usage:
//     node ts2_client.mjs stdio RELAY_BIN RELAY_ARG...   (the client spawns the relay)
//     node ts2_client.mjs http URL                       (the relay listens at URL)
//
// INTEROP_SERVER names the server behind the relay, which decides the tools
// each step uses: `echo` (examples/echo_server), `everything`
// (@modelcontextprotocol/server-everything), `mcpserver`
// (tests/interop/mcpserver_v2.py) or `fastmcp` (tests/interop/fastmcp_server.py).
// INTEROP_EXPECT is the protocol version the client must negotiate (default
// 2026-07-28). INTEROP_SKIP lists steps not to run (comma-separated; the
// harness says why). The SDK is loaded from target/test-deps/node/node_modules
// (INTEROP_NODE_MODULES overrides it).
//
// Steps, each run even when an earlier one failed (so one run shows the whole
// row of the matrix):
//   tools      tools/list names the profile's tools
//   progress   a call with a progress callback: every progress step, in order
//              (the SDK runs notification handlers a microtask late, so a
//              last progress notification read in the same chunk as the
//              result reaches it after the call is settled, as "a progress
//              notification for an unknown token" on onerror, also with no
//              relay in between, whenever the client reads late: those
//              count as received, in order)
//   input      a call during which the server asks the client (elicitation):
//              a real request in the handshake era, an InputRequiredResult
//              round in 2026-07-28; the answer must reach the result
//   subscribe  2026-07-28: subscriptions/listen for a resource; handshake
//              era: resources/subscribe. A tool call then makes the server
//              announce an update, which must arrive within 10 s
//   cancel     a call that would not end soon is aborted (AbortSignal): the
//              call must reject at once and the next call must work. That
//              the server saw the cancellation is checked by the harness
//              where the server records it.
//
// Prints `negotiated VERSION era ERA server NAME`, one `step NAME: ok|skipped|FAILED: why`
// line per step, then `interop ok: ...` and exits 0 when every step run
// passed; else exits 1.

import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const OVERALL_TIMEOUT_MS = 90_000;
const REQUEST_TIMEOUT_MS = 20_000;
const EVENT_WAIT_MS = 10_000;

const overall = setTimeout(() => {
  console.error(`interop[ts2]: FAILED: overall timeout of ${OVERALL_TIMEOUT_MS} ms exceeded`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

const log = (msg) => console.error(`interop[ts2]: ${msg}`);
const show = (v) => JSON.stringify(v);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const texts = (result) => (result?.content || []).filter((c) => c.type === "text").map((c) => c.text);

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${typeof msg === "function" ? msg() : msg}`);
}

/// Rejects after `ms` with `what` in the message.
function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// What each server offers the steps.
const PROFILES = {
  echo: {
    tools: ["echo"],
    probe: { name: "echo", arguments: { text: "still there" }, text: "still there" },
    progress: { name: "echo", arguments: { text: "with progress", progress: 3, interval_ms: 10 }, steps: 3, text: "with progress" },
    // The echo server never asks the client anything and has no resources.
    input: null,
    subscribe: null,
    cancel: { name: "echo", arguments: { text: "never answered", hang: true } },
  },
  everything: {
    // trigger-elicitation-request is listed only to a client that declared
    // elicitation: the input step looks for it.
    tools: ["echo", "trigger-long-running-operation", "toggle-subscriber-updates"],
    probe: { name: "echo", arguments: { message: "still there" }, text: "Echo: still there" },
    progress: { name: "trigger-long-running-operation", arguments: { duration: 0.4, steps: 4 }, steps: 4, contains: "completed" },
    input: { name: "trigger-elicitation-request", arguments: {}, contains: "relay" },
    subscribe: {
      uri: "demo://resource/static/document/architecture.md",
      // Sends one update at once, then one every 5 s until toggled off.
      trigger: { name: "toggle-subscriber-updates", arguments: {} },
      stop: { name: "toggle-subscriber-updates", arguments: {} },
    },
    cancel: { name: "trigger-long-running-operation", arguments: { duration: 60, steps: 60 } },
  },
  mcpserver: {
    tools: ["echo", "count_with_progress", "ask", "touch", "slow"],
    probe: { name: "echo", arguments: { text: "still there" }, text: "still there" },
    progress: { name: "count_with_progress", arguments: { steps: 3 }, steps: 3, text: "counted to 3" },
    input: { name: "ask", arguments: {}, text: "hello relay" },
    subscribe: { uri: "file:///note", trigger: { name: "touch", arguments: {} } },
    cancel: { name: "slow", arguments: { seconds: 60 } },
  },
  fastmcp: {
    tools: ["echo", "count_with_progress", "ask", "touch", "slow"],
    probe: { name: "echo", arguments: { message: "still there" }, text: "Echo: still there" },
    progress: { name: "count_with_progress", arguments: { steps: 3 }, steps: 3, text: "counted to 3" },
    input: { name: "ask", arguments: {}, text: "hello relay" },
    subscribe: { uri: "file:///note", trigger: { name: "touch", arguments: {} } },
    cancel: { name: "slow", arguments: { seconds: 60 } },
  },
};

function parseArgv() {
  const [kind, ...rest] = process.argv.slice(2);
  const profile = PROFILES[process.env.INTEROP_SERVER];
  if (!profile || !((kind === "stdio" && rest.length >= 1) || (kind === "http" && rest.length === 1))) {
    console.error(
      `usage: INTEROP_SERVER=${Object.keys(PROFILES).join("|")} node ${path.basename(process.argv[1])} ` +
        "stdio RELAY_BIN RELAY_ARG... | http URL",
    );
    process.exit(2);
  }
  return { kind, rest, profile };
}

async function loadSdk() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const nodeModules =
    process.env.INTEROP_NODE_MODULES || path.resolve(here, "../../target/test-deps/node/node_modules");
  const dist = path.join(nodeModules, "@modelcontextprotocol/client/dist");
  const load = (rel) => import(pathToFileURL(path.join(dist, rel)).href);
  const [index, stdio] = await Promise.all([load("index.mjs"), load("stdio.mjs")]);
  return { ...index, StdioClientTransport: stdio.StdioClientTransport };
}

async function call(client, spec, options = {}) {
  const result = await client.callTool(
    { name: spec.name, arguments: spec.arguments },
    { timeout: REQUEST_TIMEOUT_MS, ...options },
  );
  assert(!result.isError, () => `${spec.name} returned an error: ${show(result)}`);
  return result;
}

function checkText(spec, result) {
  const got = texts(result);
  if (spec.text !== undefined) assert(show(got) === show([spec.text]), () => `${spec.name}: ${show(got)}`);
  if (spec.contains !== undefined) {
    assert(got.some((t) => t.includes(spec.contains)), () => `${spec.name}: no ${show(spec.contains)} in ${show(got)}`);
  }
}

async function run({ kind, rest, profile }) {
  const sdk = await loadSdk();
  const expect = process.env.INTEROP_EXPECT || "2026-07-28";
  const skip = new Set((process.env.INTEROP_SKIP || "").split(",").filter(Boolean));

  const transport =
    kind === "stdio"
      ? new sdk.StdioClientTransport({ command: rest[0], args: rest.slice(1), env: { ...process.env }, stderr: "inherit" })
      : new sdk.StreamableHTTPClientTransport(new URL(rest[0]));
  const client = new sdk.Client(
    { name: "mcp-relay-interop-ts2", version: "2.0.0" },
    { capabilities: { elicitation: {} }, versionNegotiation: { mode: "auto" } },
  );
  const errors = [];
  client.onerror = (e) => {
    errors.push(String(e));
    log(`client/transport error (not fatal by itself): ${e}`);
  };

  const elicited = [];
  client.setRequestHandler("elicitation/create", async (request) => {
    elicited.push(request.params.message);
    return { action: "accept", content: { name: "relay" } };
  });
  const updates = [];
  let updated = () => {};
  client.setNotificationHandler("notifications/resources/updated", (n) => {
    updates.push(n.params.uri);
    updated(n.params.uri);
  });

  await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
  const version = client.getNegotiatedProtocolVersion();
  const era = client.getProtocolEra();
  const info = client.getServerVersion();
  console.log(`negotiated ${version} era ${era} server ${info?.name}`);
  assert(version === expect, `negotiated ${version}, expected ${expect}`);
  const modern = era === "modern";

  const steps = {
    async tools() {
      const { tools } = await client.listTools(undefined, { timeout: REQUEST_TIMEOUT_MS });
      const names = tools.map((t) => t.name);
      for (const want of profile.tools) assert(names.includes(want), () => `no ${want} in ${show(names)}`);
      return `${names.length} tools`;
    },
    async progress() {
      const spec = profile.progress;
      const seen = [];
      const errorsBefore = errors.length;
      const result = await call(client, spec, { onprogress: (p) => seen.push(p.progress) });
      checkText(spec, result);
      await sleep(50);
      // The SDK's late dispatch (see the header): the notification came, after the result.
      const late = errors
        .slice(errorsBefore)
        .filter((e) => e.includes("progress notification for an unknown token"))
        .map((e) => JSON.parse(e.slice(e.indexOf("{"))).params.progress);
      const want = Array.from({ length: spec.steps }, (_, i) => i + 1);
      assert(show([...seen, ...late]) === show(want), () => `progress ${show(seen)} then late ${show(late)}, expected ${show(want)}`);
      return `progress ${show(seen)}${late.length ? ` + ${show(late)} settled late by the SDK` : ""}`;
    },
    async input() {
      const spec = profile.input;
      if (!spec) return "none: the server makes no request";
      const { tools } = await client.listTools(undefined, { timeout: REQUEST_TIMEOUT_MS });
      assert(tools.some((t) => t.name === spec.name), () => `no ${spec.name} in ${show(tools.map((t) => t.name))}`);
      const before = elicited.length;
      const result = await call(client, spec);
      checkText(spec, result);
      assert(elicited.length === before + 1, () => `elicitation handler ran ${elicited.length - before} times`);
      return `elicitation answered (${modern ? "InputRequiredResult round" : "server request"})`;
    },
    async subscribe() {
      const spec = profile.subscribe;
      if (!spec) return "none: the server has no resources";
      const arrived = new Promise((resolve) => {
        updated = (uri) => uri === spec.uri && resolve();
      });
      let sub;
      if (modern) {
        sub = await client.listen({ resourceSubscriptions: [spec.uri] }, { timeout: REQUEST_TIMEOUT_MS });
        assert(
          show(sub.honoredFilter.resourceSubscriptions) === show([spec.uri]),
          () => `listen honored ${show(sub.honoredFilter)}`,
        );
      } else {
        await client.subscribeResource({ uri: spec.uri }, { timeout: REQUEST_TIMEOUT_MS });
      }
      try {
        await call(client, spec.trigger);
        await within(EVENT_WAIT_MS, `notifications/resources/updated for ${spec.uri}`, arrived);
      } finally {
        updated = () => {};
        if (spec.stop) await call(client, spec.stop).catch((e) => log(`stopping updates: ${e}`));
        if (sub) await sub.close();
        else await client.unsubscribeResource({ uri: spec.uri }, { timeout: REQUEST_TIMEOUT_MS });
      }
      return `update received via ${modern ? "subscriptions/listen" : "resources/subscribe"}`;
    },
    async cancel() {
      const spec = profile.cancel;
      const abort = new AbortController();
      const started = performance.now();
      // Abort once the server is surely working on it: at its first progress
      // notification if it sends any, else after 300 ms.
      const timer = setTimeout(() => abort.abort("test cancels"), 300);
      const outcome = await client
        .callTool(
          { name: spec.name, arguments: spec.arguments },
          {
            timeout: REQUEST_TIMEOUT_MS,
            signal: abort.signal,
            onprogress: () => {
              clearTimeout(timer);
              abort.abort("test cancels");
            },
          },
        )
        .then(
          (r) => ({ result: r }),
          (e) => ({ error: e }),
        );
      clearTimeout(timer);
      const ms = performance.now() - started;
      assert(outcome.error, () => `the call ended on its own instead: ${show(outcome.result)}`);
      assert(ms < 5_000, () => `the aborted call took ${ms.toFixed(0)} ms to reject`);
      // The connection (and, for the harness, the server) carries on.
      checkText(profile.probe, await call(client, profile.probe));
      return `aborted after ${ms.toFixed(0)} ms (${outcome.error?.message ?? outcome.error}), next call ok`;
    },
  };

  const report = [];
  const failed = [];
  for (const [name, step] of Object.entries(steps)) {
    if (skip.has(name)) {
      console.log(`step ${name}: skipped`);
      report.push(`${name}=skipped`);
      continue;
    }
    try {
      const what = await within(REQUEST_TIMEOUT_MS + EVENT_WAIT_MS, `step ${name}`, step());
      console.log(`step ${name}: ok: ${what}`);
      report.push(`${name}=ok`);
    } catch (e) {
      console.log(`step ${name}: FAILED: ${e?.stack ?? e}`);
      failed.push(name);
    }
  }
  await client.close();
  if (failed.length) throw new Error(`steps failed: ${failed.join(", ")}`);
  return `version ${version} (${era}), server ${info?.name}, ${report.join(" ")}`;
}

try {
  const summary = await run(parseArgv());
  clearTimeout(overall);
  console.log(`interop ok: ${summary}`);
  process.exit(0);
} catch (e) {
  console.error(`interop[ts2]: FAILED: ${e?.stack ?? e}`);
  process.exit(1);
}
