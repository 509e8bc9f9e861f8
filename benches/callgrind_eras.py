#!/usr/bin/env python3
"""Instruction counts of the relay per request, 2026-07-28 vs handshake era
(issue 13, docs/benchmarks.md "Instructions per request").

Starts `mcp-relay reverse --pool shared --max-connections 2 -- echo_server`
under callgrind, opens one handshake-era session, then measures six
windows of N sequential keep-alive `tools/call` echo requests (handshake,
2026-07-28, same-length handshake, twice over; each after `warm`
unmeasured ones), and a seventh of N one-call handshake-era sessions (see
below): callgrind's counters are zeroed before a window and
dumped after it, so start-up, sessions and warm-up are not counted.
Wall-clock free: the figures are the same on a loaded machine.

The same-length handshake-era request carries the 2026-07-28 request's
`_meta` members, which the handshake-era path passes on untouched: the
2026-07-28 request against it is the cost of the era's own work, against
the plain one the cost of the era's work and of its longer body.

The last window measures what a handshake-era client pays for one call
when it opens a session for it (initialize, initialized, the call,
DELETE): a 2026-07-28 request has no such overhead, and the script
prints at how many calls a session the two eras cost the same.

Usage: benches/callgrind_eras.py [--modern-server] [--processes P] RELAY ECHO_SERVER N [WARM]
  e.g. benches/callgrind_eras.py target/release/mcp-relay \
           target/release/examples/echo_server 2000

--modern-server: the other meaningful pairing, each era end to end: the
handshake-era windows run against a relay in front of `echo_server` (as
above), the 2026-07-28 windows against a second relay in front of
`echo_server --modern` (a dual-era server the relay drives in the modern
era: requests pass with their envelope, nothing bridged). Each relay is
measured on its own, with the same windows and warm-up.

--processes P: a pool of P processes (`--max-connections P --min-idle P`)
instead of 2, all started before the windows: what a request costs as the
pool grows (the loop's work per turn must not grow with it).

The last line, `RESULT {...}`, is the figures as JSON (Ir a request, Ir
a call for `session`), for the bench suite (`benches/common/callgrind.rs`).

Needs valgrind (callgrind_control). Bounded: every socket read has a 30 s
timeout; each relay is started at most 60 s before giving up."""
import atexit, socket, subprocess, sys, time, os, glob, re, json

args = sys.argv[1:]
modern_server = "--modern-server" in args
args = [a for a in args if a != "--modern-server"]
procs_n = 2
if "--processes" in args:
    i = args.index("--processes"); procs_n = int(args[i + 1]); del args[i:i + 2]
pool_args = ["--max-connections", str(procs_n)] + (["--min-idle", str(procs_n)] if procs_n > 2 else [])
relay, echo, n = args[0], args[1], int(args[2])
warm = int(args[3]) if len(args) > 3 else 200
out = os.environ.get("CALLGRIND_OUT", "target/callgrind-eras")
os.makedirs(out, exist_ok=True)
# valgrind's gdbserver files (the channel callgrind_control talks through)
# go with the profiles, not to /tmp, so a killed run leaves nothing behind.
VGDB = os.path.join(os.path.abspath(out), "vgdb")
for f in glob.glob(out + "/callgrind.out*"): os.remove(f)
procs = []
# Whatever happens below (a failed check, a timeout), no relay outlives us.
atexit.register(lambda: [q.kill() for q in procs if q.poll() is None])
p = c = None
def start(server):
    """Starts a relay under callgrind in front of `server` (argv) and
    connects to it; sets the globals p (the relay) and c (the socket)."""
    global p, c, buf
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out.%p",
                          f"--vgdb-prefix={VGDB}",
                          relay, "reverse", "--listen", f"127.0.0.1:{port}", "--pool", "shared",
                          *pool_args, "--", *server],
                         stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    procs.append(p)
    deadline = time.time() + 60
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port)); break
        except OSError:
            if time.time() > deadline: p.kill(); sys.exit("no listen")
            time.sleep(0.2)
    c.settimeout(30)
    buf = b""
def stop():
    c.close(); p.terminate(); p.wait(30)
buf = b""
def req(body, extra="", method="POST"):
    global buf
    b = body.encode()
    c.sendall((f"{method} /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Accept: application/json, text/event-stream\r\n{extra}Content-Length: {len(b)}\r\n\r\n").encode() + b)
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d: sys.exit("closed")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    hs = head.decode().split("\r\n")
    status = int(hs[0].split()[1])
    h = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in hs[1:])}
    ln = int(h.get("content-length", "0"))
    while len(rest) < ln:
        d = c.recv(65536)
        if not d: sys.exit("closed")
        rest += d
    buf = rest[ln:]
    return status, h, rest[:ln]

PV = "2025-06-18"
sh = ""
def session():
    """Opens the handshake-era session the legacy windows use."""
    global sh
    st, h, b = req('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"%s","capabilities":{},"clientInfo":{"name":"mcp-relay-bench","version":"0.1.0"}}}' % PV)
    sid = h["mcp-session-id"]
    sh = f"mcp-session-id: {sid}\r\nmcp-protocol-version: {PV}\r\n"
    req('{"jsonrpc":"2.0","method":"notifications/initialized"}', sh)
def one_call_session(i):
    """What a handshake-era client does for one call: its whole session
    (initialize, initialized, the call, DELETE), on the same connection.
    The session windows divide by the calls, not the HTTP requests."""
    st, h, b = req('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"%s","capabilities":{},"clientInfo":{"name":"mcp-relay-bench","version":"0.1.0"}}}' % PV)
    assert st == 200, (st, b)
    own = f"mcp-session-id: {h['mcp-session-id']}\r\nmcp-protocol-version: {PV}\r\n"
    st, _, _ = req('{"jsonrpc":"2.0","method":"notifications/initialized"}', own)
    assert st == 202, st
    st, h, b = req('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"%s"}}}' % (i, text), own)
    assert st == 200 and b'"id":%d' % i in b, (st, b)
    st, _, _ = req("", own, "DELETE")
    assert st in (200, 202, 204), st
text = "x" * 32
def legacy(i):
    st, h, b = req('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"%s"}}}' % (i, text), sh)
    assert st == 200 and b'"id":%d' % i in b, (st, b)
META = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp-relay-bench","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{}}'
def legacy_sized(i):
    """A handshake-era request as long as the 2026-07-28 one: the same
    `_meta` members, which the handshake-era path passes on untouched."""
    st, h, b = req('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"%s"},%s}}' % (i, text, META), sh)
    assert st == 200 and b'"id":%d' % i in b, (st, b)
MH = "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\n"
def modern(i):
    st, h, b = req('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"%s"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp-relay-bench","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}' % (i, text), MH)
    assert st == 200 and b'"id":%d' % i in b and b'"resultType":"complete"' in b, (st, b)

def ctl(*a):
    subprocess.run(["callgrind_control", f"--vgdb-prefix={VGDB}", *a, str(p.pid)],
                   stdout=subprocess.DEVNULL, check=True)
def total(tag):
    ctl("-d", tag)
    time.sleep(0.5)
    fs = sorted(glob.glob(out + f"/callgrind.out.{p.pid}.*"), key=os.path.getmtime)
    txt = open(fs[-1]).read()
    m = re.search(r"^(?:summary|totals): (\d+)", txt, re.M)
    return int(m.group(1)), fs[-1]

res = {}
def window(name, f):
    for i in range(warm): f(10 + i)
    ctl("-z")
    for i in range(n): f(100000 + i)
    tot, fn = total(name)
    res[name] = tot / n
    # The session window's unit is a call: four HTTP requests.
    unit = "call" if name == "session" else "request"
    print(f"{name}: {tot} Ir / {n} = {tot/n:.0f} Ir/{unit}  ({fn})", flush=True)
LEGACY = (("legacy", legacy), ("sized", legacy_sized), ("legacy2", legacy), ("sized2", legacy_sized),
          ("session", one_call_session))
MODERN = (("modern", modern), ("modern2", modern))
if not modern_server:
    start([echo]); session()
    # Both eras once before any window: the pool's second process (spawned
    # on the first 2026-07-28 requests) is there for every window alike.
    for i in range(warm): modern(10 + i)
    for (a, fa), (b, fb), m in zip(LEGACY[0::2], LEGACY[1::2], MODERN):
        window(a, fa); window(*m); window(b, fb)
    window(*LEGACY[4])
    stop()
else:
    # Each era against its own server; the windows alternate relays the
    # same way (a relay's figures do not depend on the other's).
    start([echo]); session()
    for name, f in LEGACY: window(name, f)
    stop()
    start([echo, "--modern"])
    for name, f in MODERN: window(name, f)
    stop()
    print("(handshake-era client + handshake-era server vs 2026-07-28 client + modern-capable server)")
print(f"modern/legacy: {res['modern']/res['legacy']*100:.1f} %  (second pass {res['modern2']/res['legacy2']*100:.1f} %)")
print(f"modern/legacy of the same length: {res['modern']/res['sized']*100:.1f} %  (second pass {res['modern2']/res['sized2']*100:.1f} %)")
# A handshake-era session's own cost (initialize, initialized, DELETE)
# spread over the calls it makes: at how many calls a session the two
# eras cost the same. An estimate: it takes the call inside a new session
# to cost what one in the long-lived session of the first window does.
overhead = res["session"] - res["legacy"]
extra = res["modern"] - res["legacy"]
print(f"one-call handshake-era session: {res['session']:.0f} Ir a call; modern/that: "
      f"{res['modern']/res['session']*100:.1f} %")
if extra > 0:
    print(f"session overhead {overhead:.0f} Ir: the eras cost the same at {overhead/extra:.1f} calls a session")
else:
    print(f"session overhead {overhead:.0f} Ir: a modern request costs no more at any session length")
print("RESULT " + json.dumps({k: round(v, 1) for k, v in res.items()}), flush=True)
