#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain:
#   * the official Python MCP SDK (client side of tests/interop_forward.rs)
#   * the reference "everything" MCP server from npm, into .ci/node (git-ignored)
#   * HAProxy (tests/haproxy.rs), from apt, unless one is already on PATH
# Safe to rerun: already-present pinned versions are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_EVERYTHING_VERSION=2026.8.31
MCP_SDK_JS_VERSION=1.32.2
PY_MCP_SPEC='mcp>=1.25,<2'
NODE_PREFIX=.ci/node

echo "==> toolchain: $(python3 --version 2>&1), node $(node --version), npm $(npm --version)"

echo "==> pip: installing ${PY_MCP_SPEC}"
python3 -m pip install --quiet --root-user-action=ignore "${PY_MCP_SPEC}"
echo "==> pip: mcp $(python3 -c 'import importlib.metadata as m; print(m.version("mcp"))') installed"

# Prints the installed version of an npm package under $NODE_PREFIX, or nothing.
npm_installed_version() {
    local pj="${NODE_PREFIX}/node_modules/$1/package.json"
    [[ -f "$pj" ]] || return 0
    node -p "require(process.argv[1]).version" "$PWD/$pj" 2>/dev/null || true
}

if [[ "$(npm_installed_version @modelcontextprotocol/server-everything)" == "${SERVER_EVERYTHING_VERSION}" &&
      "$(npm_installed_version @modelcontextprotocol/sdk)" == "${MCP_SDK_JS_VERSION}" ]]; then
    echo "==> npm: @modelcontextprotocol/server-everything@${SERVER_EVERYTHING_VERSION} and @modelcontextprotocol/sdk@${MCP_SDK_JS_VERSION} already in ${NODE_PREFIX}, skipping"
else
    echo "==> npm: installing @modelcontextprotocol/server-everything@${SERVER_EVERYTHING_VERSION} @modelcontextprotocol/sdk@${MCP_SDK_JS_VERSION} into ${NODE_PREFIX}"
    mkdir -p "${NODE_PREFIX}"
    npm install --prefix "${NODE_PREFIX}" --no-audit --no-fund --save-exact \
        "@modelcontextprotocol/server-everything@${SERVER_EVERYTHING_VERSION}" \
        "@modelcontextprotocol/sdk@${MCP_SDK_JS_VERSION}"
fi

# tests/haproxy.rs runs HAProxy in front of three relays; under CI it fails
# rather than skips when haproxy is missing. CI runs as root.
if command -v haproxy >/dev/null 2>&1; then
    echo "==> apt: $(haproxy -v 2>/dev/null | head -n 1) already on PATH, skipping"
else
    echo "==> apt: installing haproxy"
    # Quiet on success; apt's own output is shown only if a step fails.
    apt_log="$(mktemp)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends haproxy; } \
           >"${apt_log}" 2>&1; then
        cat "${apt_log}" >&2
        rm -f "${apt_log}"
        echo "==> apt: installing haproxy failed" >&2
        exit 1
    fi
    rm -f "${apt_log}"
    echo "==> apt: $(haproxy -v | head -n 1) installed"
fi
