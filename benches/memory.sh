#!/usr/bin/env bash
# Memory validation for `mcp-relay reverse` (docs/benchmarks.md, "Memory").
#
#   benches/memory.sh
#
# 1. Steady load: `reverse --pool session -- echo_server` runs under valgrind
#    massif (--time-unit=ms) while 16 keep-alive clients send tools/call
#    requests back to back for 60 s (examples/load.rs). The heap (massif's
#    mem_heap_B, median over the snapshots of each window) in the 5 s before
#    the 20 s mark is compared with the 5 s before the 60 s mark (marks
#    counted from the start of the load). The script FAILS (exit 1) when it
#    grew by more than 1%.
# 2. Heap per idle session, session mode: the relay under massif, 1,000
#    sessions opened and left idle; (heap idle with the sessions - heap
#    before them) / 1,000. The echo_server processes are not counted (massif
#    follows the relay only). The same again without valgrind for the RSS.
# 3. RSS with 10,000 sessions on one shared process:
#    `reverse --pool shared --max-connections 1`, no valgrind.
#
# Figures 2 and 3 are reported against their targets (8 KiB per session,
# 64 MiB) but never fail the script; a broken run (a failed request, a relay
# that does not start) exits 2.
#
# Knobs: MEM_LOAD_SECS (60), MEM_MARK1_SECS (20), MEM_CLIENTS (16),
# MEM_POOL (session), MEM_IDLE_SESSIONS (1000), MEM_SHARED_SESSIONS (10000),
# MEM_LIMIT_PCT (1), MEM_OUT (target/memory). Needs valgrind (Debian package
# valgrind); heaptrack is not used because heaptrack_print cannot cut a
# profile by time.
set -euo pipefail
cd "$(dirname "$0")/.."

LOAD_SECS=${MEM_LOAD_SECS:-60}
MARK1_SECS=${MEM_MARK1_SECS:-20}
CLIENTS=${MEM_CLIENTS:-16}
POOL=${MEM_POOL:-session}
IDLE_SESSIONS=${MEM_IDLE_SESSIONS:-1000}
SHARED_SESSIONS=${MEM_SHARED_SESSIONS:-10000}
LIMIT_PCT=${MEM_LIMIT_PCT:-1}
OUT=${MEM_OUT:-target/memory}
WINDOW_MS=5000

if ! command -v valgrind >/dev/null; then
    echo "memory.sh: valgrind is needed (apt-get install valgrind)" >&2
    exit 2
fi
mkdir -p "$OUT"

echo "==> building (cargo build --release --bin mcp-relay --example echo_server --example load)"
cargo build --release --bin mcp-relay --example echo_server --example load
RELAY=target/release/mcp-relay
ECHO=target/release/examples/echo_server
LOAD=target/release/examples/load

# Only processes this script started are ever signalled.
RELAY_PID=
cleanup() {
    if [[ -n "$RELAY_PID" ]] && kill -0 "$RELAY_PID" 2>/dev/null; then
        kill -KILL "$RELAY_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

broken() {
    echo "memory.sh: BROKEN RUN: $*" >&2
    exit 2
}

# start_relay LOG CMD...: starts CMD in the background, waits for its
# "listening on" line; sets RELAY_PID, ADDR, T0 (unix ns at start).
start_relay() {
    local log=$1
    shift
    T0=$(date +%s%N)
    "$@" 2>"$log" &
    RELAY_PID=$!
    ADDR=
    for _ in $(seq 1 600); do
        ADDR=$(sed -n 's|.*listening on http://\([0-9.:]*\)/.*|\1|p' "$log" | head -n1)
        [[ -n "$ADDR" ]] && return 0
        kill -0 "$RELAY_PID" 2>/dev/null || broken "the relay exited at start: $(tail -n 5 "$log")"
        sleep 0.1
    done
    broken "no listening address in $log after 60 s"
}

# stop_relay: SIGTERM, then wait for it (massif writes its file at exit).
stop_relay() {
    kill -TERM "$RELAY_PID"
    local st=0
    wait "$RELAY_PID" || st=$?
    RELAY_PID=
    [[ $st -eq 0 ]] || echo "    (relay exit status $st)"
}

# value KEY FILE: the value of the first KEY=VALUE token in FILE.
value() { tr ' ' '\n' <"$2" | sed -n "s/^$1=//p" | head -n1; }

# massif OUTFILE CMD...: CMD under valgrind massif. Only used as the command
# of start_relay, which runs it in the background: `exec` makes $! the
# valgrind process itself (which is the relay), not a subshell.
massif() {
    exec valgrind --tool=massif --time-unit=ms --max-snapshots=1000 --detailed-freq=1000000 \
        --massif-out-file="$1" --log-file="$1.valgrind.log" "${@:2}"
}

# ---- 1. steady load under massif ------------------------------------------------
echo
echo "==> 1. steady load: reverse --pool $POOL, $CLIENTS clients, ${LOAD_SECS}s under valgrind massif"
start_relay "$OUT/steady.relay.log" massif "$OUT/steady.massif" \
    "$RELAY" reverse --listen 127.0.0.1:0 --pool "$POOL" --max-connections "$CLIENTS" -- "$ECHO"
"$LOAD" steady --addr "$ADDR" --clients "$CLIENTS" --seconds "$LOAD_SECS" --t0-ns "$T0" \
    >"$OUT/steady.load.txt" || broken "load failed: $(tail -n 3 "$OUT/steady.load.txt")"
stop_relay
tail -n 1 "$OUT/steady.load.txt"
start_ms=$(value load_start_ms "$OUT/steady.load.txt")
m1=$((start_ms + MARK1_SECS * 1000))
m2=$((start_ms + LOAD_SECS * 1000))
set +e
"$LOAD" massif "$OUT/steady.massif" --window $((m1 - WINDOW_MS)) "$m1" \
    --window $((m2 - WINDOW_MS)) "$m2" --limit-pct "$LIMIT_PCT" | tee "$OUT/steady.heap.txt"
steady_status=${PIPESTATUS[0]}
set -e

# ---- 2. heap and RSS per idle session (session mode) ------------------------------
echo
echo "==> 2. $IDLE_SESSIONS idle sessions, session mode, under valgrind massif"
start_relay "$OUT/idle.relay.log" massif "$OUT/idle.massif" \
    "$RELAY" reverse --listen 127.0.0.1:0 --pool session \
    --max-connections $((IDLE_SESSIONS + 16)) -- "$ECHO"
"$LOAD" sessions --addr "$ADDR" --count "$IDLE_SESSIONS" --connections 8 --t0-ns "$T0" \
    >"$OUT/idle.load.txt" || broken "opening sessions failed: $(tail -n 3 "$OUT/idle.load.txt")"
stop_relay
grep '^opened=' "$OUT/idle.load.txt"
# Windows: each phase less its first second (settling) and last half second
# (massif's clock starts a little after T0; shutdown must not leak in).
"$LOAD" massif "$OUT/idle.massif" \
    --window $(($(value baseline_from_ms "$OUT/idle.load.txt") + 1000)) $(($(value baseline_to_ms "$OUT/idle.load.txt") - 500)) \
    --window $(($(value idle_from_ms "$OUT/idle.load.txt") + 1000)) $(($(value idle_to_ms "$OUT/idle.load.txt") - 500)) \
    --per "$IDLE_SESSIONS" | tee "$OUT/idle.heap.txt"
heap_per_session=$(value heap_per_unit_B "$OUT/idle.heap.txt")

echo
echo "==> 2b. $IDLE_SESSIONS idle sessions, session mode, RSS (no valgrind)"
start_relay "$OUT/idle-rss.relay.log" \
    "$RELAY" reverse --listen 127.0.0.1:0 --pool session \
    --max-connections $((IDLE_SESSIONS + 16)) -- "$ECHO"
"$LOAD" sessions --addr "$ADDR" --count "$IDLE_SESSIONS" --connections 8 --pid "$RELAY_PID" \
    --before-ms 1000 --after-ms 1000 >"$OUT/idle-rss.load.txt" ||
    broken "opening sessions failed: $(tail -n 3 "$OUT/idle-rss.load.txt")"
stop_relay
grep -E '^(opened|rss_)' "$OUT/idle-rss.load.txt"
rss_per_session=$(value rss_per_session_bytes "$OUT/idle-rss.load.txt")

# ---- 3. RSS with 10,000 sessions on one shared process -----------------------------
echo
echo "==> 3. $SHARED_SESSIONS sessions on one shared process (--pool shared --max-connections 1), RSS"
start_relay "$OUT/shared.relay.log" \
    "$RELAY" reverse --listen 127.0.0.1:0 --pool shared --max-connections 1 -- "$ECHO"
"$LOAD" sessions --addr "$ADDR" --count "$SHARED_SESSIONS" --connections 4 --pid "$RELAY_PID" \
    --before-ms 1000 --after-ms 1000 >"$OUT/shared.load.txt" ||
    broken "opening sessions failed: $(tail -n 3 "$OUT/shared.load.txt")"
stop_relay
grep -E '^(opened|rss_|vmhwm)' "$OUT/shared.load.txt"
shared_rss=$(value rss_after_kib "$OUT/shared.load.txt")

# ---- summary --------------------------------------------------------------------------
verdict() { if [[ $1 -eq 1 ]]; then echo PASS; else echo MISS; fi; }
growth=$(value heap_change_median_pct "$OUT/steady.heap.txt")
echo
echo "==> summary (files in $OUT)"
printf '  %-4s heap growth %ss -> %ss under steady load: %s%% (limit %s%%)\n' \
    "$([[ $steady_status -eq 0 ]] && echo PASS || echo FAIL)" "$MARK1_SECS" "$LOAD_SECS" "$growth" "$LIMIT_PCT"
printf '  %-4s heap per idle session (session mode): %s B (target <= 8192 B)\n' \
    "$(verdict $((heap_per_session <= 8192)))" "$heap_per_session"
printf '       RSS per idle session (session mode): %s B\n' "$rss_per_session"
printf '  %-4s RSS with %s sessions on one shared process: %s KiB = %s MiB (target <= 64 MiB)\n' \
    "$(verdict $((shared_rss <= 65536)))" "$SHARED_SESSIONS" "$shared_rss" "$((shared_rss / 1024))"
exit "$steady_status"
