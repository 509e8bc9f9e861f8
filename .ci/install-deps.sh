#!/usr/bin/env bash
# Provisions what the test suite needs beyond the Rust toolchain, project-local
# under target/test-deps/ (override with MCP_RELAY_TEST_DEPS=DIR):
#
#   venv/      a Python virtualenv with the official MCP SDK (the client of
#              the interop tests, and FastMCP) and prometheus_client (whose
#              parser checks /metrics in the tests)
#   venv2/     a second virtualenv with the MCP SDK 2.x (the 2026-07-28
#              client of tests/interop_eras.rs)
#   node/      an npm prefix with the reference "everything" MCP server, the
#              TypeScript SDK 1.x (@modelcontextprotocol/sdk) and the 2.x
#              client (@modelcontextprotocol/client, the 2026-07-28 client of
#              tests/interop_ts2.rs; it needs Node.js 20+)
#   bin/haproxy  HAProxy (tests/haproxy.rs): the one on PATH or /usr/sbin if
#              any; else Debian's package, installed with apt-get when root,
#              or fetched with `apt-get download` and unpacked with `dpkg -x`
#              under target/test-deps/haproxy-root/ when not
#
# The tests run this themselves (tests/common/interop.rs, once per test
# binary) before anything that needs a peer, so `cargo test` on a fresh
# machine provisions and then really runs every test; `.ci/run` needs no step
# of its own. No global pip or npm installs. Runs from any cwd.
#
# Idempotent and cached: a stamp (the hash of this script) makes a rerun with
# everything in place a no-op. Safe in parallel: one provisioner at a time
# (flock on target/test-deps.lock); the others wait, then find the stamp.
# Exits non-zero, saying what to install, if something cannot be provisioned.
set -euo pipefail
SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "$SCRIPT")/.."

SERVER_EVERYTHING_VERSION=2026.8.31
MCP_SDK_JS_VERSION=1.32.2
MCP_CLIENT_JS_VERSION=2.4.0
PY_REQUIREMENTS=('mcp>=1.25,<2' 'prometheus_client>=0.20,<1')
PY2_REQUIREMENTS=('mcp>=2,<3')

DEPS="${MCP_RELAY_TEST_DEPS:-$PWD/target/test-deps}"
mkdir -p "$DEPS"
DEPS="$(cd "$DEPS" && pwd)"
VENV="$DEPS/venv"
VENV2="$DEPS/venv2"
NODE_PREFIX="$DEPS/node"
STAMP="$DEPS/.stamp"

exec 9>"$DEPS.lock"
if ! flock -w 1200 9; then
    echo "==> test deps: another provisioner held $DEPS.lock for 20 minutes" >&2
    exit 1
fi

want="$(sha256sum "$SCRIPT" | cut -d' ' -f1)"
everything_js="$NODE_PREFIX/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
sdk_js="$NODE_PREFIX/node_modules/@modelcontextprotocol/sdk/package.json"
client_js="$NODE_PREFIX/node_modules/@modelcontextprotocol/client/package.json"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" && -x "$VENV2/bin/python" &&
      -f "$everything_js" && -f "$sdk_js" && -f "$client_js" && -x "$DEPS/bin/haproxy" ]]; then
    echo "==> test deps: up to date in $DEPS"
    exit 0
fi
rm -f "$STAMP"

fail() {
    echo "==> test deps: $*" >&2
    exit 1
}

is_root() { [[ "$(id -u)" == 0 ]]; }

apt_updated=
# apt-get install as root (quiet unless it fails).
apt_install() {
    is_root && command -v apt-get >/dev/null 2>&1 || return 1
    local log
    log="$(mktemp)"
    if [[ -z "$apt_updated" ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; return 1; }
        apt_updated=1
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# ---- Python: a virtualenv under target/ ------------------------------------
if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-venv ||
        fail "python3 not found: install Python 3.10+ with venv (Debian: apt-get install python3 python3-venv)"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "==> test deps: creating virtualenv $VENV ($(python3 --version 2>&1))"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        apt_install python3-venv && python3 -m venv "$VENV" ||
            fail "python3 cannot create a virtualenv: install venv support (Debian: apt-get install python3-venv)"
    fi
fi
echo "==> test deps: pip install ${PY_REQUIREMENTS[*]} into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}" ||
    fail "pip could not install ${PY_REQUIREMENTS[*]} into $VENV (is PyPI reachable?)"
"$VENV/bin/python" -c 'import mcp, prometheus_client' ||
    fail "the virtualenv $VENV cannot import mcp and prometheus_client"
if [[ ! -x "$VENV2/bin/python" ]]; then
    echo "==> test deps: creating virtualenv $VENV2 (MCP SDK 2.x)"
    rm -rf "$VENV2"
    python3 -m venv "$VENV2" || fail "python3 cannot create the virtualenv $VENV2"
fi
echo "==> test deps: pip install ${PY2_REQUIREMENTS[*]} into $VENV2"
"$VENV2/bin/python" -m pip install --quiet --disable-pip-version-check "${PY2_REQUIREMENTS[@]}" ||
    fail "pip could not install ${PY2_REQUIREMENTS[*]} into $VENV2 (is PyPI reachable?)"
"$VENV2/bin/python" -c 'import mcp_types, mcp.client.client' ||
    fail "the virtualenv $VENV2 cannot import the MCP SDK 2.x (mcp_types)"

# ---- Node: an npm prefix under target/ --------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm ||
        fail "node and npm not found: install Node.js 20+ with npm (Debian: apt-get install nodejs npm)"
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
(( node_major >= 20 )) || fail "node $(node --version) is too old: install Node.js 20 or later (the 2.x TypeScript client needs it)"
# Prints the installed version of an npm package under $NODE_PREFIX, or nothing.
npm_installed_version() {
    local pj="$NODE_PREFIX/node_modules/$1/package.json"
    [[ -f "$pj" ]] || return 0
    node -p "require(process.argv[1]).version" "$pj" 2>/dev/null || true
}
if [[ "$(npm_installed_version @modelcontextprotocol/server-everything)" == "$SERVER_EVERYTHING_VERSION" &&
      "$(npm_installed_version @modelcontextprotocol/sdk)" == "$MCP_SDK_JS_VERSION" &&
      "$(npm_installed_version @modelcontextprotocol/client)" == "$MCP_CLIENT_JS_VERSION" ]]; then
    echo "==> test deps: npm packages already in $NODE_PREFIX"
else
    echo "==> test deps: npm install server-everything@$SERVER_EVERYTHING_VERSION sdk@$MCP_SDK_JS_VERSION client@$MCP_CLIENT_JS_VERSION into $NODE_PREFIX"
    mkdir -p "$NODE_PREFIX"
    npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --save-exact --loglevel=error \
        "@modelcontextprotocol/server-everything@$SERVER_EVERYTHING_VERSION" \
        "@modelcontextprotocol/sdk@$MCP_SDK_JS_VERSION" \
        "@modelcontextprotocol/client@$MCP_CLIENT_JS_VERSION" >/dev/null ||
        fail "npm could not install the MCP packages into $NODE_PREFIX (is the npm registry reachable?)"
fi
[[ -f "$everything_js" && -f "$sdk_js" && -f "$client_js" ]] ||
    fail "npm install left no $everything_js, $sdk_js or $client_js"

# ---- HAProxy ------------------------------------------------------------------
find_haproxy() {
    local p
    for p in "$(command -v haproxy 2>/dev/null || true)" /usr/sbin/haproxy /usr/local/sbin/haproxy \
             "$DEPS/haproxy-root/usr/sbin/haproxy"; do
        if [[ -n "$p" && -x "$p" ]] && "$p" -v >/dev/null 2>&1; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
if ! haproxy="$(find_haproxy)"; then
    if is_root; then
        echo "==> test deps: apt-get install haproxy"
        apt_install haproxy || fail "apt-get install haproxy failed"
    else
        echo "==> test deps: apt-get download haproxy, unpacked under $DEPS/haproxy-root"
        rm -rf "$DEPS/haproxy-deb" "$DEPS/haproxy-root"
        mkdir -p "$DEPS/haproxy-deb"
        (cd "$DEPS/haproxy-deb" && apt-get download haproxy >/dev/null 2>&1) &&
            dpkg -x "$DEPS"/haproxy-deb/haproxy_*.deb "$DEPS/haproxy-root" ||
            fail "cannot fetch Debian's haproxy package as a normal user: install haproxy (apt-get install haproxy)"
    fi
    haproxy="$(find_haproxy)" ||
        fail "haproxy does not run (missing libraries?): install haproxy (apt-get install haproxy)"
fi
mkdir -p "$DEPS/bin"
ln -sfn "$haproxy" "$DEPS/bin/haproxy"
echo "==> test deps: $("$DEPS/bin/haproxy" -v | head -n 1) ($haproxy)"

echo "$want" >"$STAMP"
echo "==> test deps: ready in $DEPS"
