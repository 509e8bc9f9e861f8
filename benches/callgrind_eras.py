#!/usr/bin/env python3
"""Instruction counts of the relay per request, 2026-07-28 vs handshake era
(issue 13, docs/benchmarks.md "Instructions per request").

Starts `mcp-relay reverse --pool shared --max-connections 2 -- echo_server`
under callgrind, opens one handshake-era session, then measures four
windows of N sequential keep-alive `tools/call` echo requests (handshake,
modern, handshake, modern; each after `warm` unmeasured ones): callgrind's
counters are zeroed before a window and dumped after it, so start-up,
sessions and warm-up are not counted. Wall-clock free: the figures are the
same on a loaded machine.

Usage: benches/callgrind_eras.py RELAY ECHO_SERVER N [WARM]
  e.g. benches/callgrind_eras.py target/release/mcp-relay \
           target/release/examples/echo_server 2000
Needs valgrind (callgrind_control). Bounded: every socket read has a 30 s
timeout; the relay is started at most 60 s before giving up."""
import atexit, socket, subprocess, sys, time, os, glob, re

relay, echo, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
warm = int(sys.argv[4]) if len(sys.argv) > 4 else 200
out = os.environ.get("CALLGRIND_OUT", "target/callgrind-eras")
os.makedirs(out, exist_ok=True)
for f in glob.glob(out + "/callgrind.out*"): os.remove(f)
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out.%p",
                      relay, "reverse", "--listen", f"127.0.0.1:{port}", "--pool", "shared",
                      "--max-connections", "2", "--", echo], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
# Whatever happens below (a failed check, a timeout), the relay does not outlive us.
atexit.register(lambda: p.poll() is None and p.kill())
deadline = time.time() + 60
while True:
    try:
        c = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        if time.time() > deadline: p.kill(); sys.exit("no listen")
        time.sleep(0.2)
c.settimeout(30)
buf = b""
def req(body, extra=""):
    global buf
    b = body.encode()
    c.sendall((f"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
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
st, h, b = req('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"%s","capabilities":{},"clientInfo":{"name":"mcp-relay-bench","version":"0.1.0"}}}' % PV)
sid = h["mcp-session-id"]
sh = f"mcp-session-id: {sid}\r\nmcp-protocol-version: {PV}\r\n"
req('{"jsonrpc":"2.0","method":"notifications/initialized"}', sh)
text = "x" * 32
def legacy(i):
    st, h, b = req('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"%s"}}}' % (i, text), sh)
    assert st == 200 and b'"id":%d' % i in b, (st, b)
MH = "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\n"
def modern(i):
    st, h, b = req('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"%s"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp-relay-bench","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}' % (i, text), MH)
    assert st == 200 and b'"id":%d' % i in b and b'"resultType":"complete"' in b, (st, b)

def ctl(*a):
    subprocess.run(["callgrind_control", *a, str(p.pid)], stdout=subprocess.DEVNULL, check=True)
def total(tag):
    ctl("-d", tag)
    time.sleep(0.5)
    fs = sorted(glob.glob(out + f"/callgrind.out.{p.pid}.*"), key=os.path.getmtime)
    txt = open(fs[-1]).read()
    m = re.search(r"^(?:summary|totals): (\d+)", txt, re.M)
    return int(m.group(1)), fs[-1]

res = {}
for name, f in (("legacy", legacy), ("modern", modern), ("legacy2", legacy), ("modern2", modern)):
    for i in range(warm): f(10 + i)
    ctl("-z")
    for i in range(n): f(100000 + i)
    tot, fn = total(name)
    res[name] = tot / n
    print(f"{name}: {tot} Ir / {n} = {tot/n:.0f} Ir/request  ({fn})", flush=True)
print(f"modern/legacy: {res['modern']/res['legacy']*100:.1f} %  (second pass {res['modern2']/res['legacy2']*100:.1f} %)")
c.close(); p.terminate(); p.wait(30)
