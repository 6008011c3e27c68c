#!/usr/bin/env bash
# Benchmark: what attachment scanning costs. The same messages (10 KB, 1 MB and
# 10 MB, each mostly one base64 attachment of fresh random bytes, so clamd's cache
# of clean files never helps) go to sesame's MX listener with [scan] off and on,
# against a real clamd started here on a loopback port.
#
# Reported per size and mode: p50/p99 latency from the final dot to the 250
# (that is where scanning happens), the added p50 latency of scanning next to the
# p50 of the same stream sent straight to clamd (clamd's own share), messages/s
# with several concurrent sessions, their ratio (on/off), and sesame's peak RSS.
#
# clamd loads the tests' signature database (tests/clamav/db: two signatures), so
# the figures are sesame's own cost plus clamd's parsing and streaming, not the
# matching cost of a full ClamAV database (freshclam needs the internet).
#
# Env knobs:
#   QUICK=1              small counts (smoke test)
#   BENCH_SESSIONS=N     concurrent sessions for the throughput runs (default 4)
#   BENCH_REPS=N         throughput repetitions per case, median reported (default 3)
#   BENCH_SESAME_BIN=P   run binary P instead of building target/release/sesame
#   BENCH_KEEP=1         keep state and logs under target/bench/ for inspection
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin:/sbin" ;; esac

command -v clamd >/dev/null 2>&1 || {
    echo "scan-latency: clamd not found; run scripts/install-deps.sh" >&2
    exit 1
}
if [ -z "${BENCH_SESAME_BIN:-}" ]; then
    cargo build --release >&2
fi
export SESAME_BIN="${BENCH_SESAME_BIN:-$ROOT/target/release/sesame}"
mkdir -p "$ROOT/target/bench"
# The queue must live on a real disk: fsync costs what it costs in production.
case "$(stat -f -c %T "$ROOT/target/bench")" in
    tmpfs|ramfs) echo "scan-latency: target/bench is on tmpfs; need a real disk" >&2; exit 1 ;;
esac

exec python3 - "$ROOT" <<'PY'
import json, os, shutil, signal, socket, statistics, subprocess, sys, threading, time

ROOT = sys.argv[1]
QUICK = os.environ.get("QUICK") == "1"
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "4"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
SESAME = os.environ["SESAME_BIN"]
STATE = os.path.join(ROOT, "target", "bench", f"scan.{os.getpid()}")
DOMAIN = "bench.sesame.test"
# size label, bytes, latency samples, messages per session in a throughput run
CASES = [("10KB", 10_000, 200, 100), ("1MB", 1_000_000, 40, 10), ("10MB", 10_000_000, 12, 3)]
if QUICK:
    CASES = [(l, b, max(3, n // 10), max(1, m // 5)) for l, b, n, m in CASES]
    REPS = 1

procs = []

def note(msg):
    print(f"scan-latency: {msg}", file=sys.stderr, flush=True)

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    return port

def start_clamd():
    port = free_port()
    conf = os.path.join(STATE, "clamd.conf")
    with open(conf, "w") as f:
        f.write(f"Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\n"
                f"DatabaseDirectory {ROOT}/tests/clamav/db\nTemporaryDirectory {STATE}\n"
                f"LogFile {STATE}/clamd.log\nStreamMaxLength 40M\nMaxThreads 12\n")
    p = subprocess.Popen(["clamd", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"zPING\0")
                if c.recv(16).startswith(b"PONG"):
                    return port
        except OSError:
            pass
        if p.poll() is not None:
            sys.exit("clamd exited at start; see clamd.log")
        time.sleep(0.05)
    sys.exit("clamd never answered PING")

def start_sesame(mode, clamd_port):
    base = os.path.join(STATE, mode)
    os.makedirs(base)
    cfg = os.path.join(base, "sesame.toml")
    with open(cfg, "w") as f:
        f.write(f'hostname = "bench.localhost"\ndata_dir = "{base}/data"\n'
                f'[tls]\ncert = "{base}/dev.crt"\nkey = "{base}/dev.key"\ngenerate_self_signed = true\n'
                f'[[listener]]\nname = "mx"\nkind = "mx"\nbind = "127.0.0.1:0"\n'
                f'[limits]\nmax_connections_per_ip = 1000\n'
                f'[scan]\nenabled = {"true" if mode == "on" else "false"}\n'
                f'clamd = "tcp://127.0.0.1:{clamd_port}"\nmax_part_bytes = 41943040\n')
    cli = lambda *a: subprocess.run([SESAME, "--config", cfg, *a], check=True, capture_output=True)
    cli("tenant", "create", "bench")
    cli("identity", "add", "bench", DOMAIN, "--verified")
    err = open(os.path.join(base, "sesame.log"), "w")
    p = subprocess.Popen([SESAME, "--config", cfg, "serve"], stdout=subprocess.PIPE,
                         stderr=err, text=True)
    procs.append(p)
    line = p.stdout.readline()
    if not line.startswith("ready "):
        sys.exit(f"sesame did not start ({mode}); see {base}/sesame.log")
    host, port = json.loads(line[6:])["mx"].rsplit(":", 1)
    return p, (host, int(port))

def message(size, n):
    """A message of about `size` bytes: a short text and one attachment."""
    raw = os.urandom(max(1, (size - 600) * 3 // 4))
    import base64
    b64 = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    head = (f"From: <load@source.test>\r\nTo: <bench@{DOMAIN}>\r\nSubject: bench {n}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            f"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n"
            f"Content-Type: application/octet-stream; name=\"data{n}.bin\"\r\n"
            f"Content-Disposition: attachment; filename=\"data{n}.bin\"\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n").encode()
    return head + b64 + b"--b--\r\n"

class Client:
    def __init__(self, addr):
        self.s = socket.create_connection(addr)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")
        self.reply()
        self.cmd(b"EHLO bench.test")
    def reply(self):
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("connection closed")
            if line[3:4] != b"-":
                return line.decode().strip()
    def cmd(self, line):
        self.s.sendall(line + b"\r\n")
        return self.reply()
    def send(self, body):
        """Returns seconds from the final dot to the reply."""
        assert self.cmd(b"MAIL FROM:<load@source.test>").startswith("250")
        assert self.cmd(f"RCPT TO:<bench@{DOMAIN}>".encode()).startswith("250")
        assert self.cmd(b"DATA").startswith("354")
        self.s.sendall(body)
        t0 = time.perf_counter()
        self.s.sendall(b".\r\n")
        r = self.reply()
        took = time.perf_counter() - t0
        if not r.startswith("250"):
            raise RuntimeError(f"refused: {r}")
        return took

def clamd_alone(port, size, count):
    """p50 ms of one INSTREAM of an attachment-sized stream, straight to clamd:
    the part of the added latency that is clamd's own work."""
    samples = []
    for _ in range(count):
        data = os.urandom(max(1, (size - 600) * 3 // 4))
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.perf_counter()
            c.sendall(b"zINSTREAM\0")
            for i in range(0, len(data), 1 << 20):
                chunk = data[i:i + (1 << 20)]
                c.sendall(len(chunk).to_bytes(4, "big") + chunk)
            c.sendall(b"\0\0\0\0")
            if not c.recv(64).endswith(b"OK\0"):
                raise RuntimeError("clamd did not say OK")
            samples.append(time.perf_counter() - t0)
    return percentile(samples, 50) * 1000

def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def latency(addr, size, count):
    c = Client(addr)
    bodies = [message(size, i) for i in range(count)]
    c.send(message(size, -1))  # warm-up
    samples = [c.send(b) for b in bodies]
    return percentile(samples, 50) * 1000, percentile(samples, 99) * 1000

def throughput(addr, size, per_session):
    bodies = [[message(size, s * 1000 + i) for i in range(per_session)] for s in range(SESSIONS)]
    clients = [Client(addr) for _ in range(SESSIONS)]
    errors = []
    def run(c, mine):
        try:
            for b in mine:
                c.send(b)
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=run, args=(c, b)) for c, b in zip(clients, bodies)]
    t0 = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    took = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return SESSIONS * per_session / took

def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0

def main():
    os.makedirs(STATE)
    clamd_port = start_clamd()
    note(f"clamd on 127.0.0.1:{clamd_port} (test signatures)")
    results = {}
    for label, size, count, _ in CASES:
        results[(label, "clamd")] = clamd_alone(clamd_port, size, count)
    for mode in ("off", "on"):
        p, addr = start_sesame(mode, clamd_port)
        for label, size, count, per_session in CASES:
            note(f"scan {mode}, {label}: {count} latency samples, {REPS}x{SESSIONS}x{per_session} throughput")
            p50, p99 = latency(addr, size, count)
            rate = statistics.median(throughput(addr, size, per_session) for _ in range(REPS))
            results[(label, mode)] = (p50, p99, rate)
        results[("rss", mode)] = peak_rss_mb(p.pid)
        p.send_signal(signal.SIGTERM); p.wait(60); procs.remove(p)
    print(f"\nscan latency and throughput (MX listener, {SESSIONS} sessions for msgs/s)")
    print(f"{'size':<6} {'scan':<4} {'p50 ms':>9} {'p99 ms':>9} {'added p50 ms':>13} "
          f"{'clamd alone':>12} {'msgs/s':>9} {'on/off':>7}")
    for label, *_ in CASES:
        off = results[(label, "off")]
        for mode in ("off", "on"):
            p50, p99, rate = results[(label, mode)]
            on = mode == "on"
            added = f"{p50 - off[0]:+.2f}" if on else ""
            alone = f"{results[(label, 'clamd')]:.2f}" if on else ""
            ratio = f"{rate / off[2]:.2f}" if on else ""
            print(f"{label:<6} {mode:<4} {p50:>9.2f} {p99:>9.2f} {added:>13} {alone:>12} "
                  f"{rate:>9.1f} {ratio:>7}")
    print(f"peak RSS: scan off {results[('rss', 'off')]:.0f} MB, scan on {results[('rss', 'on')]:.0f} MB")

try:
    main()
finally:
    for p in procs:
        p.terminate()
        try: p.wait(30)
        except subprocess.TimeoutExpired: p.kill()
    if os.environ.get("BENCH_KEEP") == "1":
        note(f"state kept in {STATE}")
    else:
        shutil.rmtree(STATE, ignore_errors=True)
PY
