#!/usr/bin/env bash
# Benchmark: the same smtp-source load against (a) a throwaway private Postfix
# instance and (b) sesame's MX listener, on this machine, in one run.
#
# Both keep their queue on the same real-disk directory (target/bench/), so both
# pay real fsyncs. Postfix HOLDs every message: cleanup writes and fsyncs the
# queue file exactly as usual, but nothing is ever delivered. sesame only queues.
#
# Env knobs:
#   QUICK=1              small counts (smoke test)
#   BENCH_COUNT_1K=N     messages per 1 KB case   (default 2000, QUICK 100)
#   BENCH_COUNT_100K=N   messages per 100 KB case (default 500,  QUICK 20)
#   BENCH_REPS=N         repetitions per case, median reported (default 3)
#   BENCH_SESSIONS="1 20" parallel SMTP sessions (smtp-source -s)
#   BENCH_SOURCE_OPTS    extra smtp-source flags, e.g. "-d" to reuse connections
#   BENCH_TIMEOUT=S      cap on one smtp-source run (default 600 s)
#   BENCH_POSTFIX_ONLY=1 skip sesame (e.g. while it does not build yet)
#   BENCH_SESAME_BIN=P   run binary P instead of building target/release/sesame
#   BENCH_KEEP=1         keep state/logs under target/bench/ for inspection
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# postfix, postconf and smtp-source live in /usr/sbin.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin:/sbin" ;; esac

BENCH_DIR="$ROOT/target/bench"
# BENCH_SESAME_BIN: use a prebuilt/other binary and skip the cargo build.
SESAME="${BENCH_SESAME_BIN:-$ROOT/target/release/sesame}"
DOMAIN="bench.sesame.test"
RCPT="bench@$DOMAIN"
FROM="load@source.test"

if [ "${QUICK:-0}" = 1 ]; then
    COUNT_1K="${BENCH_COUNT_1K:-100}"
    COUNT_100K="${BENCH_COUNT_100K:-20}"
else
    COUNT_1K="${BENCH_COUNT_1K:-2000}"
    COUNT_100K="${BENCH_COUNT_100K:-500}"
fi
REPS="${BENCH_REPS:-3}"
SESSIONS_LIST="${BENCH_SESSIONS:-1 20}"
TIMEOUT="${BENCH_TIMEOUT:-600}"
POSTFIX_ONLY="${BENCH_POSTFIX_ONLY:-0}"
read -r -a SOURCE_OPTS <<<"${BENCH_SOURCE_OPTS:-}"

die() { echo "postfix-compare: ERROR: $*" >&2; exit 1; }
note() { echo "postfix-compare: $*" >&2; }

for t in smtp-source postfix postconf python3 timeout nsd dig; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found; run scripts/install-deps.sh"
done
[ "$(id -u)" -eq 0 ] || die "must run as root (Postfix master needs it)"
getent passwd postfix >/dev/null || die "user 'postfix' missing; run scripts/install-deps.sh"
getent group postdrop >/dev/null || die "group 'postdrop' missing; run scripts/install-deps.sh"

# Both queues must live on a real disk so fsync costs what it costs in production.
mkdir -p "$BENCH_DIR"
fstype="$(stat -f -c %T "$BENCH_DIR")"
case "$fstype" in
    tmpfs|ramfs) die "$BENCH_DIR is on $fstype; the benchmark needs a real disk" ;;
esac

# Everything one run creates goes below $STATE and is removed at exit.
STATE="$BENCH_DIR/run.$$"
rm -rf "$STATE"
mkdir -p "$STATE"
chmod 755 "$STATE"   # the postfix user must traverse it to reach its queue

PF_CONF=""    # config dir of the running Postfix instance, if any
SES_PID=""    # pid of the running sesame, if any
SES_FD=""     # read end of sesame's stdout fifo
NSD_PID=""    # pid of the loopback nameserver sesame checks SPF/DMARC against

# SIGTERM a child and wait for it, with a SIGKILL watchdog so a hung shutdown
# cannot hang the benchmark (sesame's own grace period is 30 s by default).
# Returns the child's exit status.
term_and_wait() {
    local pid="$1" wd rc=0
    kill -TERM "$pid" 2>/dev/null || true
    # The watchdog kills its own sleep when cancelled, and holds no stdout/stderr,
    # so a pipe like `postfix-compare.sh | tee` is not kept open after we exit.
    (
        trap 'kill "$s" 2>/dev/null; exit 0' TERM
        sleep 45 & s=$!
        wait "$s"
        kill -KILL "$pid" 2>/dev/null
    ) </dev/null >/dev/null 2>&1 &
    wd=$!
    wait "$pid" 2>/dev/null || rc=$?
    kill "$wd" 2>/dev/null || true
    wait "$wd" 2>/dev/null || true
    return "$rc"
}

cleanup() {
    local rc=$?
    set +e
    [ -n "$PF_CONF" ] && postfix -c "$PF_CONF" stop >/dev/null 2>&1
    [ -n "$SES_PID" ] && term_and_wait "$SES_PID"
    [ -n "$NSD_PID" ] && term_and_wait "$NSD_PID"
    if [ "$rc" -ne 0 ]; then
        find "$STATE" -name '*.log' -exec sh -c \
            'for f; do echo "---- last lines of $f"; tail -n 20 "$f"; done' sh {} + >&2
        [ "${BENCH_KEEP:-0}" = 1 ] || note "(state removed; BENCH_KEEP=1 keeps it)"
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        note "state kept in $STATE"
    else
        rm -rf "$STATE"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now_ns() { date +%s%N; }

# ---------------------------------------------------------------- Postfix
# Start a private Postfix instance with all state in $1; sets PF_CONF, PF_PORT.
pf_start() {
    local dir="$1"
    PF_PORT="$(free_port)"
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
    chown postfix:postfix "$dir/data"
    cat >"$dir/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.localhost
mydomain = localhost
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# No local delivery, no aliases: we only accept for the bench domain as a relay domain.
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains = $DOMAIN
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# HOLD everything: the message is written to the queue (hold/) and fsynced before
# the 250 reply, as usual, but the queue manager never tries to deliver it.
smtpd_client_restrictions = check_client_access static:HOLD
# No DNS anywhere (the machine has none; loopback only).
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
# Log to a file as a real deployment logs to syslog (there is no /dev/log here).
maillog_file = $dir/postfix.log
maillog_file_prefixes = $dir
biff = no
EOF
    # Only the services Postfix needs to receive and queue mail; no chroot;
    # smtpd listens on 127.0.0.1:<free port> only (never port 25).
    cat >"$dir/etc/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    # 'check' creates the queue subdirectories with Postfix's owners/modes.
    postfix -c "$dir/etc" check >>"$dir/postfix-ctl.log" 2>&1 \
        || die "postfix check failed (see $dir/postfix-ctl.log)"
    # 'start' returns once master has bound its sockets (master -w).
    PF_CONF="$dir/etc"   # set first so the exit trap stops a half-started master
    postfix -c "$dir/etc" start >>"$dir/postfix-ctl.log" 2>&1 \
        || die "postfix start failed (see $dir/postfix-ctl.log)"
}

pf_stop() {
    postfix -c "$PF_CONF" stop >>"$(dirname "$PF_CONF")/postfix-ctl.log" 2>&1 || true
    PF_CONF=""
}

# Messages sitting in the instance's hold queue.
pf_count() { find "$1/queue/hold" -type f | wc -l; }

# ---------------------------------------------------------------- dns
# sesame checks SPF, DKIM and DMARC on everything its MX listener takes, as a
# real MX does; Postfix here checks nothing. The sender's records come from a
# real nameserver on loopback (nsd), never from the machine's resolver, so
# the lookups cost what a nearby resolver costs (sesame caches the answers).
# Sets NSD_PORT.
dns_start() {
    local dir="$STATE/dns" i
    mkdir -p "$dir"
    NSD_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    cat >"$dir/test.zone" <<EOF
\$ORIGIN test.
\$TTL 3600
@        IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
@        IN NS  ns.test.
ns       IN A   127.0.0.1
source   IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc.source IN TXT "v=DMARC1; p=none"
EOF
    cat >"$dir/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    port: $NSD_PORT
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    database: ""
    zonesdir: "$dir"
    pidfile: "$dir/nsd.pid"
    xfrdfile: "$dir/xfrd.state"
    zonelistfile: "$dir/zone.list"
remote-control:
    control-enable: no
zone:
    name: "test"
    zonefile: "test.zone"
EOF
    nsd -d -c "$dir/nsd.conf" >"$dir/nsd.log" 2>&1 &
    NSD_PID=$!
    for i in $(seq 1 100); do
        dig +short +time=1 +tries=1 -p "$NSD_PORT" @127.0.0.1 TXT source.test 2>/dev/null \
            | grep -q spf1 && return 0
        kill -0 "$NSD_PID" 2>/dev/null || die "nsd exited (see $dir/nsd.log)"
        sleep 0.1
    done
    die "nsd did not answer on 127.0.0.1:$NSD_PORT (see $dir/nsd.log)"
}

# ---------------------------------------------------------------- sesame
# Create a fresh data dir + config in $1, start serve; sets SES_PID, SES_PORT.
ses_start() {
    local dir="$1" line addr
    mkdir -p "$dir/data"
    cat >"$dir/sesame.toml" <<EOF
hostname = "sesame-bench.localhost"
region = "us-east-1"
data_dir = "$dir/data"

[tls]
cert = "$dir/bench.crt"
key = "$dir/bench.key"
generate_self_signed = true

[dns]
nameservers = ["127.0.0.1:$NSD_PORT"]

# Postfix HOLDs everything: it only accepts. So does sesame here (delivery
# into the tenant store would otherwise run alongside, with its own fsyncs).
[delivery]
enabled = false

[[listener]]
name = "mx"
kind = "mx"
bind = "127.0.0.1:0"
EOF
    "$SESAME" --config "$dir/sesame.toml" tenant create bench >>"$dir/sesame-cli.log" 2>&1 \
        || die "sesame tenant create failed (see $dir/sesame-cli.log)"
    "$SESAME" --config "$dir/sesame.toml" identity add bench "$DOMAIN" --verified \
        >>"$dir/sesame-cli.log" 2>&1 \
        || die "sesame identity add failed (see $dir/sesame-cli.log)"
    # Read the readiness line through a fifo instead of polling the port.
    mkfifo "$dir/stdout.fifo"
    "$SESAME" --config "$dir/sesame.toml" serve >"$dir/stdout.fifo" 2>>"$dir/sesame.log" &
    SES_PID=$!
    exec {SES_FD}<"$dir/stdout.fifo"
    if ! IFS= read -r -t 60 line <&"$SES_FD"; then
        die "sesame exited or printed no ready line within 60 s (see $dir/sesame.log)"
    fi
    # ready {"mx":"127.0.0.1:41234"}
    addr="$(printf '%s\n' "$line" | python3 -c '
import json, sys
line = sys.stdin.readline().strip()
assert line.startswith("ready "), line
print(json.loads(line[len("ready "):])["mx"])')" || die "bad ready line: $line"
    SES_PORT="${addr##*:}"
}

# Peak RSS (kB) of the running sesame.
ses_hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$SES_PID/status"; }

ses_stop() {
    local rc=0
    term_and_wait "$SES_PID" || rc=$?
    [ "$rc" -eq 0 ] || note "warning: sesame exited with status $rc after SIGTERM"
    exec {SES_FD}<&-
    SES_PID=""
}

ses_count() {
    "$SESAME" --config "$1/sesame.toml" queue list --json 2>>"$1/sesame-cli.log" \
        | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))'
}

# ---------------------------------------------------------------- load
# run_load PORT SIZE SESSIONS COUNT LOG -> prints msgs/s
run_load() {
    local port="$1" size="$2" sessions="$3" count="$4" log="$5" t0 t1
    t0="$(now_ns)"
    timeout "$TIMEOUT" smtp-source -4 ${SOURCE_OPTS[@]+"${SOURCE_OPTS[@]}"} \
        -s "$sessions" -m "$count" -l "$size" \
        -f "$FROM" -t "$RCPT" -M bench-client.localhost \
        "127.0.0.1:$port" >>"$log" 2>&1 \
        || die "smtp-source failed against port $port (see $log)"
    t1="$(now_ns)"
    awk -v n="$count" -v ns="$((t1 - t0))" 'BEGIN { printf "%.1f\n", n / (ns / 1e9) }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---------------------------------------------------------------- main
if [ "$POSTFIX_ONLY" != 1 ] && [ -z "${BENCH_SESAME_BIN:-}" ]; then
    note "building sesame (cargo build --release)"
    cargo build --release >&2 || die "cargo build --release failed (BENCH_POSTFIX_ONLY=1 to bench Postfix alone)"
fi
if [ "$POSTFIX_ONLY" != 1 ]; then
    [ -x "$SESAME" ] || die "$SESAME missing or not executable"
fi

note "state in $STATE ($fstype); reps=$REPS; 1KB x $COUNT_1K, 100KB x $COUNT_100K; sessions: $SESSIONS_LIST"
note "postfix $(postconf -h -d mail_version 2>/dev/null); one TCP connection per message unless BENCH_SOURCE_OPTS=-d"

[ "$POSTFIX_ONLY" = 1 ] || dns_start

ROWS=()
PEAK_KB=0
run_no=0
for size in 1024 102400; do
    if [ "$size" = 1024 ]; then count="$COUNT_1K"; label="1KB"; else count="$COUNT_100K"; label="100KB"; fi
    for sessions in $SESSIONS_LIST; do
        case_name="${label}/s${sessions}/n${count}"
        pf_rates=(); ses_rates=(); case_hwm=0
        for rep in $(seq 1 "$REPS"); do
            run_no=$((run_no + 1))

            d="$STATE/pf.$run_no"
            pf_start "$d"
            r="$(run_load "$PF_PORT" "$size" "$sessions" "$count" "$d/smtp-source.log")"
            pf_stop
            got="$(pf_count "$d")"
            [ "$got" -eq "$count" ] || die "postfix $case_name: $got messages in hold queue, expected $count"
            pf_rates+=("$r")
            [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$d"

            if [ "$POSTFIX_ONLY" != 1 ]; then
                d="$STATE/ses.$run_no"
                ses_start "$d"
                s="$(run_load "$SES_PORT" "$size" "$sessions" "$count" "$d/smtp-source.log")"
                hwm="$(ses_hwm_kb)"
                ses_stop
                got="$(ses_count "$d")"
                [ "$got" -eq "$count" ] || die "sesame $case_name: $got queue entries, expected $count"
                ses_rates+=("$s")
                [ "$hwm" -gt "$case_hwm" ] && case_hwm="$hwm"
                [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$d"
            else
                s="-"
            fi
            note "$case_name rep $rep: postfix $r msg/s, sesame $s msg/s"
        done
        pf_med="$(median "${pf_rates[@]}")"
        if [ "$POSTFIX_ONLY" != 1 ]; then
            ses_med="$(median "${ses_rates[@]}")"
            ratio="$(awk -v a="$ses_med" -v b="$pf_med" 'BEGIN { printf "%.2f", a / b }')"
            [ "$case_hwm" -gt "$PEAK_KB" ] && PEAK_KB="$case_hwm"
            hwm_mb="$(awk -v k="$case_hwm" 'BEGIN { printf "%.1f", k / 1024 }')"
        else
            ses_med="-"; ratio="-"; hwm_mb="-"
        fi
        ROWS+=("$(printf '%-18s %14s %14s %10s %16s' "$case_name" "$pf_med" "$ses_med" "$ratio" "$hwm_mb")")
    done
done

echo
echo "median of $REPS runs; msgs/s = messages / wall-clock seconds of one smtp-source run"
printf '%-18s %14s %14s %10s %16s\n' "case" "postfix msg/s" "sesame msg/s" "ses/pf" "sesame RSS MB"
printf '%s\n' "${ROWS[@]}"
if [ "$POSTFIX_ONLY" != 1 ]; then
    echo "sesame peak RSS (VmHWM, max over all runs): $((PEAK_KB / 1024)) MB ($PEAK_KB kB)"
fi
