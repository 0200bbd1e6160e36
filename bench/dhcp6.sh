#!/usr/bin/env bash
# bench/dhcp6.sh: DHCPv6 server CPU per exchange, rackboot (crates/rackboot-dhcp6,
# examples/dhcp6_server, leases in SQLite, committed before each Reply) against Kea's
# kea-dhcp6 (memfile with persistence), at one fixed perfdhcp -6 rate for both, in the
# same run and the same namespace setup: two network namespaces joined by a veth pair,
# the server in one, perfdhcp -6 (Solicit/Advertise/Request/Reply, distinct clients) in
# the other. CPU is the server process's utime+stime over the run (/proc/PID/stat),
# divided by the 4-way exchanges perfdhcp completed. Medians of --repeat rounds, the
# servers interleaved round by round.
#
# Run as root:  bench/dhcp6.sh [--rate N] [--secs S] [--repeat R] [--out FILE] [--no-build]
#               bench/dhcp6.sh --splice SECTION_FILE DOC_FILE
# --out FILE gets a Markdown section (default: stdout); the log goes to stderr. --splice
# puts such a section into DOC_FILE in place of the previous one (between its marker
# comments) or appends it (bench/run --only dhcp6 does this for docs/benchmarks.md).
# Everything started here is killed by PID, the namespaces deleted, on exit; every
# client run is bounded by its count and `timeout`. Takes about 1-2 minutes.
set -euo pipefail

BEGIN_MARK='<!-- bench/dhcp6.sh: begin -->'
END_MARK='<!-- bench/dhcp6.sh: end -->'
if [ "${1:-}" = --splice ]; then
    [ $# = 3 ] && [ -s "$2" ] || { echo "usage: bench/dhcp6.sh --splice SECTION_FILE DOC_FILE" >&2; exit 2; }
    if [ -f "$3" ] && grep -qF "$BEGIN_MARK" "$3" && grep -qF "$END_MARK" "$3"; then
        awk -v b="$BEGIN_MARK" -v e="$END_MARK" -v sec="$2" '
            $0 == b { while ((getline line < sec) > 0) print line; skip = 1; next }
            $0 == e { skip = 0; next }
            !skip' "$3" >"$3.tmp"
        mv "$3.tmp" "$3"
    else
        { echo; cat "$2"; } >>"$3"
    fi
    exit 0
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RATE=1000
SECS=10
REPEAT=3
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) RATE="$2"; shift 2 ;;
        --secs) SECS="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "bench/dhcp6.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ "$RATE" =~ ^[0-9]+$ ]] && [ "$RATE" -ge 10 ] && [ "$RATE" -le 20000 ] || { echo "bench/dhcp6.sh: --rate must be 10-20000" >&2; exit 2; }
[[ "$SECS" =~ ^[0-9]+$ ]] && [ "$SECS" -ge 2 ] && [ "$SECS" -le 120 ] || { echo "bench/dhcp6.sh: --secs must be 2-120" >&2; exit 2; }
[[ "$REPEAT" =~ ^[0-9]+$ ]] && [ "$REPEAT" -ge 1 ] && [ "$REPEAT" -le 10 ] || { echo "bench/dhcp6.sh: --repeat must be 1-10" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench/dhcp6.sh: must run as root (network namespaces)" >&2; exit 1; }

log() { printf '[dhcp6 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
for c in perfdhcp:kea-admin kea-dhcp6:kea-dhcp6-server ip:iproute2 bc:bc; do
    command -v "${c%%:*}" >/dev/null || die "${c%%:*} is missing: apt-get install ${c#*:}"
done

SERVER_BIN="$REPO/target/release/examples/dhcp6_server"
if [ "$BUILD" = 1 ]; then
    log "building the dhcp6_server example (release)"
    (cd "$REPO" && cargo build -q --release -p rackboot-dhcp6 --example dhcp6_server) \
        >"${TMPDIR:-/tmp}/rackboot-dhcp6-bench-build.log" 2>&1 \
        || die "build failed; see ${TMPDIR:-/tmp}/rackboot-dhcp6-bench-build.log"
fi
[ -x "$SERVER_BIN" ] || die "no $SERVER_BIN (cargo build --release -p rackboot-dhcp6 --example dhcp6_server)"

WORK="$(mktemp -d /tmp/rackboot-dhcp6-bench.XXXXXX)"
NS_S="rbb6s-$$" NS_C="rbb6c-$$" VS=rb6s VC=rb6c
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2>/dev/null || true
    [ -n "$SERVER_PID" ] && wait "$SERVER_PID" 2>/dev/null || true
    ip netns del "$NS_S" 2>/dev/null || true
    ip netns del "$NS_C" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "$NS_S" "$NS_C"; do
    ip netns add "$ns"; ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip -n "$NS_S" link add "$VS" type veth peer name "$VC" netns "$NS_C"
ip -n "$NS_S" addr add 2001:db8:78::1/64 dev "$VS"
ip -n "$NS_S" link set "$VS" up; ip -n "$NS_C" link set "$VC" up
sleep 2
POOL="2001:db8:78::1:0-2001:db8:78::ffff:ffff"
CLIENTS=$((RATE * SECS * 2))   # perfdhcp -R: distinct clients, more than one run's exchanges

cat >"$WORK/rackboot.toml" <<EOF2
[router_advertisements]
enabled = false
[[subnets]]
prefix = "2001:db8:78::/64"
ranges = ["$POOL"]
preferred_lifetime_secs = 3600
valid_lifetime_secs = 7200
EOF2
cat >"$WORK/kea.json" <<EOF2
{ "Dhcp6": {
  "interfaces-config": { "interfaces": [ "$VS/2001:db8:78::1" ] },
  "lease-database": { "type": "memfile", "persist": true, "name": "$WORK/kea-leases6.csv", "lfc-interval": 0 },
  "server-id": { "type": "LL", "persist": false },
  "preferred-lifetime": 3600, "valid-lifetime": 7200,
  "subnet6": [ { "id": 1, "subnet": "2001:db8:78::/64", "interface": "$VS",
                 "pools": [ { "pool": "${POOL/-/ - }" } ] } ],
  "loggers": [ { "name": "kea-dhcp6", "severity": "WARN", "output_options": [ { "output": "$WORK/kea.log" } ] } ]
} }
EOF2

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

start() { # start NAME
    rm -f "$WORK"/rackboot.db* "$WORK/kea-leases6.csv"
    case "$1" in
        rackboot)
            ip netns exec "$NS_S" "$SERVER_BIN" "$VS" "$WORK/rackboot.toml" "sqlite:$WORK/rackboot.db" \
                >"$WORK/rackboot.out" 2>"$WORK/rackboot.err" &
            SERVER_PID=$! ;;
        kea)
            KEA_LOCKFILE_DIR="$WORK" KEA_PIDFILE_DIR="$WORK" ip netns exec "$NS_S" \
                kea-dhcp6 -c "$WORK/kea.json" >"$WORK/kea.out" 2>&1 &
            SERVER_PID=$! ;;
    esac
    for _ in $(seq 50); do
        ip netns exec "$NS_S" ss -Hlun "sport = :547" | grep -q . && return 0
        sleep 0.1
    done
    die "$1 did not start"
}

stop() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# round NAME: one perfdhcp run against a fresh server; prints "US_PER_EXCHANGE EXCHANGES_PER_S DROP_PCT".
round() {
    start "$1"
    sleep 0.5
    local before after ex sent hz us drop
    hz=$(getconf CLK_TCK)
    before=$(cpu_ticks "$SERVER_PID")
    ip netns exec "$NS_C" timeout $((SECS + 20)) perfdhcp -6 -l "$VC" -r "$RATE" -p "$SECS" -R "$CLIENTS" \
        >"$WORK/perf-$1.log" 2>&1 || true
    after=$(cpu_ticks "$SERVER_PID")
    log "$1: pid $SERVER_PID ($(cat /proc/$SERVER_PID/comm)) cpu ticks $before -> $after"
    stop
    # The second exchange (Request/Reply) block's counts.
    sent=$(grep -E '^sent packets:' "$WORK/perf-$1.log" | sed -n 2p | awk '{ print $3 }')
    ex=$(grep -E '^received packets:' "$WORK/perf-$1.log" | sed -n 2p | awk '{ print $3 }')
    [ -n "$ex" ] && [ "$ex" -gt 0 ] || { echo "n/a 0 100"; return; }
    us=$(echo "scale=1; ($after - $before) * 1000000 / $hz / $ex" | bc)
    drop=$(echo "scale=2; 100 * ($sent - $ex) / $sent" | bc)
    echo "$us $(echo "$ex / $SECS" | bc) $drop"
}

declare -A ROUNDS
for r in $(seq "$REPEAT"); do
    for s in rackboot kea; do
        line=$(round "$s")
        ROUNDS[$s]+="$line"$'\n'
        log "round $r $s: $line (us/exchange, exchanges/s, % Requests unanswered)"
    done
done
median() { # median COLUMN NAME
    printf '%s' "${ROUNDS[$2]}" | awk -v c="$1" 'NF { print $c }' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
each() { printf '%s' "${ROUNDS[$2]}" | awk -v c="$1" 'NF { printf "%s%s", (n++ ? ", " : ""), $c }'; }

KEA_VERSION=$(kea-dhcp6 -v 2>/dev/null | head -1)
section() {
    echo "$BEGIN_MARK"
    echo "## DHCPv6: server CPU per exchange, rackboot vs Kea"
    echo
    echo "\`bench/dhcp6.sh --rate $RATE --secs $SECS --repeat $REPEAT\`, $(date -u +%Y-%m-%d), $(nproc) vCPUs."
    echo "perfdhcp -6 at $RATE Solicit/s for $SECS s ($CLIENTS distinct DUIDs), 4-way exchanges"
    echo "(Solicit, Advertise, Request, Reply) over a veth pair between two namespaces; each"
    echo "round starts the server afresh with an empty lease store. CPU is the server process's"
    echo "user+system time over the run divided by the completed exchanges; medians of $REPEAT rounds."
    echo
    echo "| server | leases | CPU per exchange (us) | rounds | exchanges/s | Requests unanswered (%) |"
    echo "|---|---|---|---|---|---|"
    echo "| rackboot (dhcp6_server example, release) | SQLite, committed before each Reply (group commit) | $(median 1 rackboot) | $(each 1 rackboot) | $(median 2 rackboot) | $(median 3 rackboot) |"
    echo "| Kea kea-dhcp6 $KEA_VERSION | memfile, persisted | $(median 1 kea) | $(each 1 kea) | $(median 2 kea) | $(median 3 kea) |"
    echo
    echo "$END_MARK"
}
if [ -n "$OUT" ]; then section >"$OUT"; log "wrote $OUT"; else section; fi
