#!/usr/bin/env node
// Interop check: the official TypeScript MCP SDK 1.x client
// (`@modelcontextprotocol/sdk`, handshake era, unchanged) through the relay
// to the Python SDK 2.x `MCPServer` of tests/interop/mcpserver_v2.py
// (tests/interop_py2_server.rs).
//
// Usage:
//     node ts1_client.mjs stdio RELAY_BIN RELAY_ARG...   (spawns the relay)
//     node ts1_client.mjs http URL                       (the relay listens at URL)
//
// The same steps as py1_client.py (INTEROP_SKIP lists steps not to run):
// tools (initialize at a handshake revision, naming the 2.x server, and
// tools/list), progress (count_with_progress 1..3, see the step for the
// SDK's late dispatch), input (ask: the
// server's elicitation/create answered by the client's handler), subscribe
// (resources/subscribe, then touch: notifications/resources/updated within
// 10 s), cancel (slow(60) aborted after 300 ms, which makes the SDK send
// notifications/cancelled; then echo works). The SDK is loaded from
// target/test-deps/node/node_modules (INTEROP_NODE_MODULES overrides it).
//
// Prints one `step NAME: ok|skipped|FAILED: why` line per step, then
// `interop ok: ...` when every step run passed (else exits 1).

import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const OVERALL_TIMEOUT_MS = 80_000;
const REQUEST_TIMEOUT_MS = 20_000;
const EVENT_WAIT_MS = 10_000;
const NOTE = "file:///note";

const overall = setTimeout(() => {
  console.error(`interop[ts1]: FAILED: overall timeout of ${OVERALL_TIMEOUT_MS} ms exceeded`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

const show = (v) => JSON.stringify(v);
const texts = (result) => (result?.content || []).filter((c) => c.type === "text").map((c) => c.text);

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${typeof msg === "function" ? msg() : msg}`);
}

function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function loadSdk() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const nodeModules =
    process.env.INTEROP_NODE_MODULES || path.resolve(here, "../../target/test-deps/node/node_modules");
  const esm = path.join(nodeModules, "@modelcontextprotocol/sdk/dist/esm");
  const load = (rel) => import(pathToFileURL(path.join(esm, rel)).href);
  const [client, stdio, http, types] = await Promise.all([
    load("client/index.js"),
    load("client/stdio.js"),
    load("client/streamableHttp.js"),
    load("types.js"),
  ]);
  return {
    Client: client.Client,
    StdioClientTransport: stdio.StdioClientTransport,
    StreamableHTTPClientTransport: http.StreamableHTTPClientTransport,
    ElicitRequestSchema: types.ElicitRequestSchema,
    ResourceUpdatedNotificationSchema: types.ResourceUpdatedNotificationSchema,
  };
}

async function run() {
  const [kind, ...rest] = process.argv.slice(2);
  if (!((kind === "stdio" && rest.length >= 1) || (kind === "http" && rest.length === 1))) {
    console.error(`usage: node ${path.basename(process.argv[1])} stdio RELAY_BIN RELAY_ARG... | http URL`);
    process.exit(2);
  }
  const skip = new Set((process.env.INTEROP_SKIP || "").split(",").filter(Boolean));
  const sdk = await loadSdk();
  const transport =
    kind === "stdio"
      ? new sdk.StdioClientTransport({ command: rest[0], args: rest.slice(1), env: { ...process.env }, stderr: "inherit" })
      : new sdk.StreamableHTTPClientTransport(new URL(rest[0]));
  const client = new sdk.Client({ name: "mcp-relay-interop-ts1", version: "1.0.0" }, { capabilities: { elicitation: {} } });
  const errors = [];
  client.onerror = (e) => {
    errors.push(String(e));
    console.error(`interop[ts1]: client/transport error (not fatal by itself): ${e}`);
  };
  const elicited = [];
  client.setRequestHandler(sdk.ElicitRequestSchema, async (request) => {
    elicited.push(request.params.message);
    return { action: "accept", content: { name: "relay" } };
  });
  let updated = () => {};
  client.setNotificationHandler(sdk.ResourceUpdatedNotificationSchema, (n) => updated(n.params.uri));

  await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
  const info = client.getServerVersion();
  const version = transport.protocolVersion ?? "(stdio: not exposed)";
  const opts = { timeout: REQUEST_TIMEOUT_MS };
  const call = async (name, args, extra = {}) => {
    const result = await client.callTool({ name, arguments: args }, undefined, { ...opts, ...extra });
    assert(!result.isError, () => `${name} returned an error: ${show(result)}`);
    return texts(result);
  };

  const steps = {
    async tools() {
      assert(info?.name === "interop-mcpserver-v2", () => `server ${show(info)}`);
      assert(!String(transport.protocolVersion ?? "").startsWith("2026"), () => `version ${version}`);
      const { tools } = await client.listTools(undefined, opts);
      const names = tools.map((t) => t.name);
      for (const want of ["echo", "count_with_progress", "ask", "touch", "slow"]) {
        assert(names.includes(want), () => `no ${want} in ${show(names)}`);
      }
      return `${names.length} tools`;
    },
    async progress() {
      const seen = [];
      const errorsBefore = errors.length;
      const got = await call("count_with_progress", { steps: 3 }, { onprogress: (p) => seen.push(p.progress) });
      assert(show(got) === show(["counted to 3"]), () => show(got));
      await new Promise((resolve) => setTimeout(resolve, 50));
      // The SDK runs notification handlers a microtask late but settles a
      // response at once: progress read in the same chunk as the result
      // reaches it after the call, as "a progress notification for an
      // unknown token" on onerror (also with no relay in between, when the
      // client is slow to read). It came, in order: it counts.
      const late = errors
        .slice(errorsBefore)
        .filter((e) => e.includes("progress notification for an unknown token"))
        .map((e) => JSON.parse(e.slice(e.indexOf("{"))).params.progress);
      assert(show([...seen, ...late]) === show([1, 2, 3]), () => `progress ${show(seen)} then late ${show(late)}`);
      return `progress ${show(seen)}${late.length ? ` + ${show(late)} settled late by the SDK` : ""}`;
    },
    async input() {
      const got = await call("ask", {});
      assert(show(got) === show(["hello relay"]), () => show(got));
      assert(show(elicited) === show(["What is your name?"]), () => show(elicited));
      return "elicitation answered";
    },
    async subscribe() {
      const arrived = new Promise((resolve) => {
        updated = (uri) => uri === NOTE && resolve();
      });
      await client.subscribeResource({ uri: NOTE }, opts);
      try {
        await call("touch", {});
        await within(EVENT_WAIT_MS, `notifications/resources/updated for ${NOTE}`, arrived);
      } finally {
        updated = () => {};
      }
      await client.unsubscribeResource({ uri: NOTE }, opts);
      return "update received";
    },
    async cancel() {
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort("test cancels"), 300);
      const started = performance.now();
      const outcome = await client
        .callTool({ name: "slow", arguments: { seconds: 60 } }, undefined, { ...opts, signal: abort.signal })
        .then(
          (r) => ({ result: r }),
          (e) => ({ error: e }),
        );
      clearTimeout(timer);
      const ms = performance.now() - started;
      assert(outcome.error, () => `the call ended on its own: ${show(outcome.result)}`);
      assert(ms < 5_000, () => `the aborted call took ${ms.toFixed(0)} ms to reject`);
      const got = await call("echo", { text: "still there" });
      assert(show(got) === show(["still there"]), () => show(got));
      return `aborted after ${ms.toFixed(0)} ms, next call ok`;
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
  return `version ${version}, server ${info?.name}, ${report.join(" ")}`;
}

try {
  const summary = await run();
  clearTimeout(overall);
  console.log(`interop ok: ${summary}`);
  process.exit(0);
} catch (e) {
  console.error(`interop[ts1]: FAILED: ${e?.stack ?? e}`);
  process.exit(1);
}
