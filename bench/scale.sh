#!/usr/bin/env bash
# bench/scale.sh: rackboot with 100,000 machines. One `rackboot serve` (API and
# boot HTTP on loopback, no DHCP or TFTP, SQLite in a temporary state directory)
# is filled by `rackboot machine import` in stages (1,000, 10,000, 100,000
# machines); at each size it measures, over HTTP with keep-alive (a Python client,
# one request at a time):
#   - a machine write: PATCH /api/v1/machines/NAME (a label), p50/p99;
#   - a boot-script render: GET /boot/ipxe/MAC of an enrolled machine, p50/p99;
#   - list pages: GET /api/v1/machines?limit=1000, the first page and a page deep
#     into the list (by cursor), p50/p99; and following every page to the end;
#   - the server's RSS (VmRSS).
# and the time of each import stage (one POST /api/v1/machines:bulk and one store
# transaction per 1,000 machines).
#
# Run from anywhere (no root needed):  bench/scale.sh [--machines N] [--ops K]
#               [--out FILE] [--no-build] [--rackboot PATH]
#               bench/scale.sh --splice SECTION_FILE DOC_FILE
# --out FILE gets a Markdown section (default: stdout); the log goes to stderr.
# --splice puts such a section into DOC_FILE in place of the previous one (between
# its marker comments) or appends it. The server is killed by PID and the state
# directory removed on exit. Takes about 3-6 minutes at 100,000 machines.
set -euo pipefail

BEGIN_MARK='<!-- bench/scale.sh: begin -->'
END_MARK='<!-- bench/scale.sh: end -->'
if [ "${1:-}" = --splice ]; then
    [ $# = 3 ] && [ -s "$2" ] || { echo "usage: bench/scale.sh --splice SECTION_FILE DOC_FILE" >&2; exit 2; }
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
MACHINES=100000
OPS=300
OUT=""
BUILD=1
RACKBOOT_BIN="$REPO/target/release/rackboot"
while [ $# -gt 0 ]; do
    case "$1" in
        --machines) MACHINES="$2"; shift 2 ;;
        --ops) OPS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --rackboot) RACKBOOT_BIN="$2"; BUILD=0; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "bench/scale.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ "$MACHINES" =~ ^[0-9]+$ ]] && [ "$MACHINES" -ge 1000 ] && [ "$MACHINES" -le 1000000 ] \
    || { echo "bench/scale.sh: --machines must be 1000-1000000" >&2; exit 2; }
[[ "$OPS" =~ ^[0-9]+$ ]] && [ "$OPS" -ge 10 ] && [ "$OPS" -le 10000 ] \
    || { echo "bench/scale.sh: --ops must be 10-10000" >&2; exit 2; }

log() { printf '[scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v python3 >/dev/null || die "python3 is needed (the HTTP client)"

if [ "$BUILD" = 1 ]; then
    log "building rackboot (release)"
    (cd "$REPO" && cargo build --release -p rackboot >&2)
fi
[ -x "$RACKBOOT_BIN" ] || die "no rackboot binary at $RACKBOOT_BIN"

WORK="$(mktemp -d /tmp/rackboot-scale.XXXXXX)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PORT="$(free_port)"
BASE="http://127.0.0.1:$PORT"
STATE="$WORK/state"
mkdir -p "$STATE"
log "starting rackboot serve on 127.0.0.1:$PORT (state in $STATE)"
RUST_LOG=warn "$RACKBOOT_BIN" serve --api-listen "127.0.0.1:$PORT" --tftp-listen off \
    --state-dir "$STATE" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    [ -s "$STATE/admin-token" ] && curl -fsS -o /dev/null -H "Authorization: Bearer $(cat "$STATE/admin-token")" "$BASE/api/v1/status" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server exited"; }
    sleep 0.1
done
TOKEN="$(cat "$STATE/admin-token")"
export RACKBOOT_URL="$BASE" RACKBOOT_TOKEN="$TOKEN"
# A profile for the renders: every machine boots it through a selector-free intent.
curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/profiles/linux" \
    -d '{"kernel": "https://example.invalid/vmlinuz", "initrds": ["https://example.invalid/initrd"], "cmdline": "console=ttyS0 host={{ machine.name }}"}' \
    || die "creating the profile failed"

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 * 1024 / 1e6 }' "/proc/$SERVER_PID/status"; }

# machines FROM TO > CSV: names node-000000.., MACs 02:00:xx:xx:xx:xx, profile linux.
machines_csv() {
    python3 - "$1" "$2" <<'EOF'
import sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
print("name,macs,labels,profile")
for i in range(lo, hi):
    b = i.to_bytes(4, "big")
    print(f"node-{i:06d},02:00:{b[0]:02x}:{b[1]:02x}:{b[2]:02x}:{b[3]:02x},rack=r{i // 40:04d},linux")
EOF
}

# measure N: the HTTP measurements at the current size, one JSON line.
measure() {
    python3 - "$PORT" "$TOKEN" "$1" "$OPS" <<'EOF'
import http.client, json, random, statistics, sys, time
port, token, n, ops = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
conn = http.client.HTTPConnection("127.0.0.1", port)
auth = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def call(method, path, body=None):
    t = time.perf_counter()
    conn.request(method, path, body=body, headers=auth)
    r = conn.getresponse()
    data = r.read()
    dt = time.perf_counter() - t
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return dt, r, data
def mac(i):
    b = i.to_bytes(4, "big")
    return f"02:00:{b[0]:02x}:{b[1]:02x}:{b[2]:02x}:{b[3]:02x}"
def q(samples):
    s = sorted(samples)
    return {"p50": s[len(s) // 2] * 1e3, "p99": s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3,
            "mean": statistics.fmean(s) * 1e3}
rng = random.Random(n)
writes, renders, first_pages, deep_pages = [], [], [], []
for k in range(ops):
    i = rng.randrange(n)
    dt, _, _ = call("PATCH", f"/api/v1/machines/node-{i:06d}", json.dumps({"labels": {"rack": f"r{i // 40:04d}", "touched": str(k)}}))
    writes.append(dt)
for k in range(ops):
    i = rng.randrange(n)
    dt, _, body = call("GET", f"/boot/ipxe/{mac(i)}")
    if b"kernel" not in body:
        raise SystemExit(f"render of {mac(i)} has no kernel line: {body[:200]!r}")
    renders.append(dt)
pages = max(10, ops // 10)
deep = f"node-{(n * 3 // 4):06d}"
for k in range(pages):
    dt, _, _ = call("GET", "/api/v1/machines?limit=1000")
    first_pages.append(dt)
    dt, _, _ = call("GET", f"/api/v1/machines?limit=1000&cursor={deep}")
    deep_pages.append(dt)
t = time.perf_counter()
cursor, listed = None, 0
while True:
    path = "/api/v1/machines?limit=1000" + (f"&cursor={cursor}" if cursor else "")
    _, r, body = call("GET", path)
    listed += len(json.loads(body))
    cursor = r.getheader("X-Next-Cursor")
    if not cursor:
        break
all_secs = time.perf_counter() - t
if listed != n:
    raise SystemExit(f"listed {listed} machines, expected {n}")
print(json.dumps({"machines": n, "write": q(writes), "render": q(renders),
                  "first_page": q(first_pages), "deep_page": q(deep_pages),
                  "list_all_secs": all_secs}))
EOF
}

STAGES=()
for s in 1000 10000 100000 1000000; do
    [ "$s" -le "$MACHINES" ] && STAGES+=("$s")
done
[ "${STAGES[-1]}" = "$MACHINES" ] || STAGES+=("$MACHINES")
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
have=0
START_EPOCH=$(date +%s)
for size in "${STAGES[@]}"; do
    machines_csv "$have" "$size" >"$WORK/stage.csv"
    log "importing machines $have-$size"
    t0=$(date +%s.%N)
    "$RACKBOOT_BIN" machine import "$WORK/stage.csv" >/dev/null
    t1=$(date +%s.%N)
    import_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    have=$size
    rss_import=$(rss_mb)
    log "measuring at $size machines (import took ${import_secs}s, RSS ${rss_import} MB)"
    line=$(measure "$size")
    rss_after=$(rss_mb)
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(import_secs=float(sys.argv[2]), rss_import=float(sys.argv[3]), rss_after=float(sys.argv[4])); print(json.dumps(d))' \
        "$line" "$import_secs" "$rss_import" "$rss_after" >>"$RESULTS"
done
ELAPSED=$(( $(date +%s) - START_EPOCH ))
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
NCPU=$(nproc)
COMMIT=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$REPO" && git status --porcelain 2>/dev/null | grep -q . && echo " plus uncommitted changes" || true)

section() {
    python3 - "$RESULTS" "$MACHINES" "$OPS" "$CPU_MODEL" "$NCPU" "$COMMIT$DIRTY" "$ELAPSED" <<'EOF'
import json, sys, datetime
path, machines, ops, cpu, ncpu, commit, elapsed = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print("<!-- bench/scale.sh: begin -->")
print(f"## Scale: {int(machines):,} machines on one server ({now})")
print()
print(f"Written by `bench/scale.sh --machines {machines} --ops {ops}`; {ncpu} CPUs ({cpu}), "
      f"rackboot release build at git {commit}, SQLite in a temporary state directory, "
      "API and boot HTTP on 127.0.0.1, no DHCP or TFTP. The machine is shared with other builds, "
      "so figures vary between runs. Requests are one at a time over one keep-alive HTTP "
      "connection (a Python client), so latencies include the client's own time (~0.1 ms).")
print()
print("Enrolment with `rackboot machine import FILE.csv` (one `POST /api/v1/machines:bulk` "
      "and one store transaction per 1,000 machines), in stages:")
print()
print("| machines | import of the stage | per machine | server RSS after |")
print("|---|---|---|---|")
prev = 0
for r in rows:
    n = r["machines"]; added = n - prev
    print(f"| {prev:,} → {n:,} | {r['import_secs']:.1f} s | {r['import_secs'] / added * 1e3:.2f} ms | {r['rss_import']:.0f} MB |")
    prev = n
print()
print(f"Latency at each size ({ops} requests each, p50 / p99 in ms):")
print()
print("| machines | machine write (PATCH labels) | boot-script render (GET /boot/ipxe/MAC) | "
      "list, first page of 1,000 | list, page of 1,000 at 75% | all pages | RSS |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    f = lambda k: f"{r[k]['p50']:.2f} / {r[k]['p99']:.2f}"
    print(f"| {r['machines']:,} | {f('write')} | {f('render')} | {f('first_page')} | "
          f"{f('deep_page')} | {r['list_all_secs']:.1f} s | {r['rss_after']:.0f} MB |")
print()
print(f"The whole run took {elapsed} s.")
print("<!-- bench/scale.sh: end -->")
EOF
}
if [ -n "$OUT" ]; then
    section >"$OUT"
    log "wrote $OUT"
else
    section
fi
