#!/usr/bin/env bash
# bench/storm.sh: boot HTTP against nginx serving the same files, and a boot storm of
# N machines against one `rackboot serve`, on this machine, in one run.
#
# HTTP rows (two network namespaces joined by a veth pair; rackboot serve with boot HTTP
# on 10.81.0.1:8080, nginx on 10.81.0.1:8081 with `root`/`alias` onto the same
# directories, both running; clients in the other namespace):
#   - small files: a 300-byte file under /assets and one under /os, wrk -t2 -c50 for
#     SECS seconds (requests/s), and at one fixed rate (http-load --rate, CPU per request);
#   - boot scripts: rackboot's /boot/ipxe/MAC (rendered per request for an enrolled
#     machine) against nginx serving that script's bytes as a static file;
#   - large files: 8 parallel downloads of a LARGE-byte file (http-load, 8 connections,
#     8 requests), MiB/s over the wall time.
# Server CPU is utime+stime of the server's processes (rackboot; nginx's master and
# workers) over each run, from /proc. The servers alternate within each of ROUNDS rounds.
# Boot storm: crates/rackboot-bench's boot-storm (DHCP as the PXE ROM, TFTP of
# undionly.kpxe, DHCP as iPXE, script, kernel, initrd per machine; see its doc), once per
# round.
#
# Run as root:  bench/storm.sh [--machines 1000] [--rounds 3] [--secs 10] [--rate 2000]
#                              [--kernel-size 8M] [--initrd-size 50M] [--large-size 512M]
#                              [--only http|storm] [--out FILE] [--no-build]
#               bench/storm.sh --splice SECTION_FILE DOC_FILE
# --out FILE gets a Markdown section (default: stdout); the log goes to stderr. --splice
# puts such a section into DOC_FILE in place of the previous one (between its marker
# comments) or appends it. Installs nginx-light and wrk when they are missing.
# Everything started here is killed by PID and the namespaces deleted on exit; every
# client run is bounded by its duration or count and `timeout`.
set -euo pipefail

BEGIN_MARK='<!-- bench/storm.sh: begin -->'
END_MARK='<!-- bench/storm.sh: end -->'
if [ "${1:-}" = --splice ]; then
    [ $# = 3 ] && [ -s "$2" ] || { echo "usage: bench/storm.sh --splice SECTION_FILE DOC_FILE" >&2; exit 2; }
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

CMDLINE="bench/storm.sh${*:+ $*}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MACHINES=1000
ROUNDS=3
SECS=10
RATE=2000
KERNEL_SIZE=8M
INITRD_SIZE=50M
LARGE_SIZE=512M
ONLY=http,storm
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --machines) MACHINES="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --secs) SECS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --kernel-size) KERNEL_SIZE="$2"; shift 2 ;;
        --initrd-size) INITRD_SIZE="$2"; shift 2 ;;
        --large-size) LARGE_SIZE="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "bench/storm.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
wants() { [[ ",$ONLY," == *",$1,"* ]]; }
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] || { echo "bench/storm.sh: --rounds must be 1-10" >&2; exit 2; }
[[ "$SECS" =~ ^[0-9]+$ ]] && [ "$SECS" -ge 2 ] && [ "$SECS" -le 120 ] || { echo "bench/storm.sh: --secs must be 2-120" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench/storm.sh: must run as root (network namespaces)" >&2; exit 1; }

log() { printf '[storm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
need_pkg() { # need_pkg COMMAND PACKAGE
    if ! command -v "$1" >/dev/null 2>&1; then
        log "installing $2 (for $1)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }
    fi
}
need_pkg nginx nginx-light
need_pkg wrk wrk
need_pkg curl curl
need_pkg bc bc
need_pkg ip iproute2

RACKBOOT="$REPO/target/release/rackboot"
STORM="$REPO/target/release/boot-storm"
HTTP_LOAD="$REPO/target/release/http-load"
if [ "$BUILD" = 1 ]; then
    log "building rackboot, boot-storm and http-load (release)"
    (cd "$REPO" && cargo build -q --release -p rackboot -p rackboot-bench) \
        >"${TMPDIR:-/tmp}/rackboot-storm-build.log" 2>&1 \
        || die "build failed; see ${TMPDIR:-/tmp}/rackboot-storm-build.log"
fi
for b in "$RACKBOOT" "$STORM" "$HTTP_LOAD"; do
    [ -x "$b" ] || die "no $b (cargo build --release -p rackboot -p rackboot-bench)"
done

WORK="$(mktemp -d /tmp/rackboot-storm-bench.XXXXXX)"
chmod 755 "$WORK"
NS_S="rbsts-$$" NS_C="rbstc-$$" VS="rbsv$$" VC="rbcv$$"
SRV_IP=10.81.0.1 CLI_IP=10.81.0.2
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    for p in $(ip netns pids "$NS_S" 2>/dev/null) $(ip netns pids "$NS_C" 2>/dev/null); do
        kill -KILL "$p" 2>/dev/null || true
    done
    ip netns del "$NS_S" 2>/dev/null || true
    ip netns del "$NS_C" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
( while :; do cut -d' ' -f1 /proc/loadavg; sleep 5; done ) >"$WORK/load.samples" 2>/dev/null &
PIDS+=($!)

hz=$(getconf CLK_TCK)
# cpu_ticks PID...: utime+stime of the processes, in clock ticks.
cpu_ticks() {
    local p t=0 v
    for p in "$@"; do
        v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "n/a" }'; }
spread() { sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) print lo "-" hi; else print "n/a" }'; }

# ---------------------------------------------------------------- HTTP rows
declare -A RES   # RES[row.server] = newline-separated per-round values

http_setup() {
    ip netns add "$NS_S"; ip netns add "$NS_C"
    ip -n "$NS_S" link set lo up; ip -n "$NS_C" link set lo up
    ip -n "$NS_S" link add "$VS" type veth peer name "$VC" netns "$NS_C"
    ip -n "$NS_S" addr add "$SRV_IP/24" dev "$VS"; ip -n "$NS_C" addr add "$CLI_IP/24" dev "$VC"
    ip -n "$NS_S" link set "$VS" up; ip -n "$NS_C" link set "$VC" up

    STATE="$WORK/state"
    mkdir -p "$STATE/assets/storm" "$STATE/os/mirror/pool" "$WORK/www"
    head -c 300 /dev/urandom >"$STATE/assets/small.bin"
    head -c 300 /dev/urandom >"$STATE/os/mirror/pool/small.deb"
    head -c "$(numfmt --from=iec "$LARGE_SIZE")" /dev/urandom >"$STATE/assets/large.bin"
    head -c 4096 /dev/urandom >"$STATE/assets/storm/vmlinuz"
    head -c 4096 /dev/urandom >"$STATE/assets/storm/initrd"
    chmod -R a+rX "$WORK"
    cat >"$WORK/rackboot.toml" <<EOF
state_dir = "$STATE"
server_ip = "$SRV_IP"
[listen]
http = "$SRV_IP:8080"
tftp = "off"
EOF
    ip netns exec "$NS_S" "$RACKBOOT" serve --config "$WORK/rackboot.toml" >"$WORK/rackboot.log" 2>&1 &
    RB_PID=$!; PIDS+=("$RB_PID")
    local i
    for i in $(seq 100); do
        ip netns exec "$NS_C" curl -fsS -o /dev/null "http://$SRV_IP:8080/api/openapi.json" 2>/dev/null \
            && [ -s "$STATE/admin-token" ] && break
        sleep 0.2
    done
    [ -s "$STATE/admin-token" ] || die "rackboot serve did not start: $(tail -5 "$WORK/rackboot.log")"
    local tok; tok=$(cat "$STATE/admin-token")
    api() { ip netns exec "$NS_C" curl -fsS -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' "$@"; }
    api -X PUT "http://$SRV_IP:8080/api/v1/profiles/storm" \
        -d '{"kernel":"storm/vmlinuz","initrds":["storm/initrd"],"cmdline":"console=ttyS0"}' >/dev/null
    api -X POST "http://$SRV_IP:8080/api/v1/machines" \
        -d '{"name":"bench-01","macs":["52:54:00:be:00:01"],"intent":{"kind":"profile","name":"storm"}}' >/dev/null
    SCRIPT_PATH=/boot/ipxe/52-54-00-be-00-01
    ip netns exec "$NS_C" curl -fsS -o "$WORK/www/script.ipxe" "http://$SRV_IP:8080$SCRIPT_PATH"
    SCRIPT_BYTES=$(stat -c %s "$WORK/www/script.ipxe")
    chmod a+r "$WORK/www/script.ipxe"

    cat >"$WORK/nginx.conf" <<EOF
# rackboot makes its state directory private (0700): workers read it as root.
user root;
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    access_log $WORK/nginx-access.log;
    server {
        listen $SRV_IP:8081;
        root $WORK/www;
        location /assets/ { alias $STATE/assets/; }
        location /os/ { alias $STATE/os/; }
    }
}
EOF
    ip netns exec "$NS_S" nginx -c "$WORK/nginx.conf" -g 'daemon off;' >"$WORK/nginx.out" 2>&1 &
    NG_PID=$!; PIDS+=("$NG_PID")
    for i in $(seq 50); do
        ip netns exec "$NS_C" curl -fsS -o /dev/null "http://$SRV_IP:8081/script.ipxe" 2>/dev/null && break
        sleep 0.1
    done
    ip netns exec "$NS_C" curl -fsS -o /dev/null "http://$SRV_IP:8081/assets/small.bin" \
        || die "nginx does not serve: $(cat "$WORK/nginx-error.log" "$WORK/nginx.out" 2>/dev/null | tail -5)"
    # Same bytes from both servers.
    local p
    for p in /assets/small.bin /os/mirror/pool/small.deb; do
        cmp -s <(ip netns exec "$NS_C" curl -fsS "http://$SRV_IP:8080$p") \
               <(ip netns exec "$NS_C" curl -fsS "http://$SRV_IP:8081$p") || die "$p differs between the servers"
    done
    NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*nginx\///')
    WRK_VERSION=$( (wrk -v 2>&1 || true) | head -1 | awk '{ print $2 }')
    log "rackboot pid $RB_PID, nginx master pid $NG_PID ($NGINX_VERSION); script $SCRIPT_BYTES bytes"
}

server_pids() { # server_pids NAME
    case "$1" in
        rackboot) echo "$RB_PID" ;;
        nginx) echo "$NG_PID $(pgrep -P "$NG_PID" | tr '\n' ' ')" ;;
    esac
}
port_of() { [ "$1" = rackboot ] && echo 8080 || echo 8081; }

# wrk_row ROW SERVER PATH: wrk -t2 -c50 -d SECS; records requests/s and server us/request.
wrk_row() {
    local row="$1" srv="$2" path="$3" pids c0 c1 out rps non2xx reqs
    pids=$(server_pids "$srv")
    c0=$(cpu_ticks $pids)
    out=$(ip netns exec "$NS_C" timeout $((SECS + 30)) wrk -t2 -c50 -d"${SECS}s" "http://$SRV_IP:$(port_of "$srv")$path" 2>&1) || true
    c1=$(cpu_ticks $pids)
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' <<<"$out")
    [ -n "$non2xx" ] && [ "$non2xx" != 0 ] && { log "  $row $srv: $non2xx non-2xx responses"; rps=0; }
    [ -n "$rps" ] || { log "  $row $srv: wrk failed: $out"; rps=0; reqs=0; }
    RES[$row.$srv]+="$rps"$'\n'
    if [ "${reqs:-0}" -gt 0 ]; then
        RES[$row.cpu.$srv]+="$(echo "scale=1; ($c1 - $c0) * 1000000 / $hz / $reqs" | bc)"$'\n'
    fi
    log "  $row $srv: $rps requests/s (server CPU $(((c1 - c0) * 1000 / hz)) ms for $reqs requests)"
}

# rate_row ROW SERVER PATH: http-load at RATE/s for SECS; records server us/request.
rate_row() {
    local row="$1" srv="$2" path="$3" pids c0 c1 out n lat
    pids=$(server_pids "$srv")
    c0=$(cpu_ticks $pids)
    out=$(ip netns exec "$NS_C" timeout $((SECS + 30)) "$HTTP_LOAD" "http://$SRV_IP:$(port_of "$srv")$path" \
        --connections 50 --threads 1 --rate "$RATE" --secs "$SECS" 2>&1) || true
    c1=$(cpu_ticks $pids)
    n=$(sed -n 's/^responses=//p' <<<"$out")
    lat=$(sed -n 's/^latency_ms=//p' <<<"$out")
    if [ -n "$n" ] && [ "$n" -gt 0 ]; then
        RES[$row.$srv]+="$(echo "scale=1; ($c1 - $c0) * 1000000 / $hz / $n" | bc)"$'\n'
        RES[$row.p99.$srv]+="$(awk '{ print $2 }' <<<"$lat")"$'\n'
    fi
    log "  $row $srv: $n responses at $RATE/s, server CPU $(((c1 - c0) * 1000 / hz)) ms, latency p50/p99/max $lat ms"
}

# large_row SERVER: 8 parallel downloads of large.bin; records MiB/s and server CPU s.
large_row() {
    local srv="$1" pids c0 c1 out mibs bytes want
    pids=$(server_pids "$srv")
    want=$((8 * $(stat -c %s "$STATE/assets/large.bin")))
    c0=$(cpu_ticks $pids)
    out=$(ip netns exec "$NS_C" timeout 300 "$HTTP_LOAD" "http://$SRV_IP:$(port_of "$srv")/assets/large.bin" \
        --connections 8 --requests 8 --threads 2 2>&1) || true
    c1=$(cpu_ticks $pids)
    bytes=$(sed -n 's/^body_bytes=//p' <<<"$out")
    mibs=$(sed -n 's/^mib_per_sec=//p' <<<"$out")
    [ "${bytes:-0}" = "$want" ] || { log "  large $srv: $bytes bytes of $want: $out"; mibs=0; }
    RES[large.$srv]+="${mibs:-0}"$'\n'
    RES[large.cpu.$srv]+="$(echo "scale=2; ($c1 - $c0) / $hz" | bc)"$'\n'
    log "  large $srv: 8 x $LARGE_SIZE at $mibs MiB/s (server CPU $(((c1 - c0) * 1000 / hz)) ms)"
}

http_rounds() {
    local r srv
    for r in $(seq "$ROUNDS"); do
        log "HTTP round $r of $ROUNDS"
        for srv in rackboot nginx; do
            wrk_row small "$srv" /assets/small.bin
            wrk_row os "$srv" /os/mirror/pool/small.deb
            if [ "$srv" = rackboot ]; then wrk_row script rackboot "$SCRIPT_PATH"; else wrk_row script nginx /script.ipxe; fi
            rate_row rate "$srv" /assets/small.bin
            if [ "$srv" = rackboot ]; then rate_row srate rackboot "$SCRIPT_PATH"; else rate_row srate nginx /script.ipxe; fi
            large_row "$srv"
        done
    done
    RB_RSS=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1000 }' "/proc/$RB_PID/status")
}

# ---------------------------------------------------------------- storm
storm_rounds() {
    local r out
    for r in $(seq "$ROUNDS"); do
        log "storm round $r of $ROUNDS: $MACHINES machines"
        out=$("$STORM" --rackboot "$RACKBOOT" --machines "$MACHINES" --kernel-size "$KERNEL_SIZE" \
            --initrd-size "$INITRD_SIZE" --timeout-secs 900 --work "$WORK" 2>"$WORK/storm-$r.err") || true
        echo "$out" >"$WORK/storm-$r.out"
        grep -E '^(served|failed|stage_total|wall_secs|server_cpu_secs|server_peak_rss_mb)=' "$WORK/storm-$r.out" \
            | tr '\n' ' ' | sed 's/^/  /' >&2; echo >&2
    done
}

# kv ROUND KEY: a value from a storm round's output
kv() { sed -n "s/^$2=//p" "$WORK/storm-$1.out" 2>/dev/null | head -1; }

# ---------------------------------------------------------------- run
if wants http; then
    http_setup
    http_rounds
fi
if wants storm; then storm_rounds; fi
T_END=$(date +%s)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
LOAD_MEAN=$(awk '{ s += $1; if ($1 > m) m = $1 } END { if (NR) printf "mean %.1f, max %.1f", s / NR, m }' "$WORK/load.samples")

# ---------------------------------------------------------------- report
vals() { printf '%s' "${RES[$1]:-}" | awk 'NF' ; }
med() { vals "$1" | median; }
rng() { vals "$1" | spread; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a != "n/a") printf "%.2f", a / b; else print "n/a" }'; }

section() {
    echo "$BEGIN_MARK"
    echo "## Boot storm and boot HTTP against nginx ($(date -u '+%Y-%m-%d %H:%M') UTC)"
    echo
    echo "Written by \`$CMDLINE\` (as root); $(nproc) vCPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)),"
    echo "rackboot release build at git $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- crates || echo ' plus uncommitted changes'). Load average (1, 5, 15 min) $LOAD_START at the start,"
    echo "$LOAD_END at the end (1-minute samples every 5 s: $LOAD_MEAN); the machine is shared"
    echo "with other work, so read the figures as ratios measured minutes apart. The whole run took $((T_END - T_START)) s."
    if wants http; then
        echo
        echo "### Boot HTTP and nginx, same files, same run"
        echo
        echo "Both servers run at once in one namespace (rackboot \`serve\` with boot HTTP only; nginx"
        echo "$NGINX_VERSION, \`worker_processes auto\`, sendfile on, access log on — rackboot records an"
        echo "\`asset_served\` event per response), clients in another over a veth pair; $ROUNDS rounds,"
        echo "servers alternating within each; medians, (min-max) of the rounds. CPU is the server's"
        echo "processes' user+system time over the run."
        echo
        echo "| what | client | rackboot | nginx | rackboot / nginx | server CPU per request, rackboot / nginx |"
        echo "|---|---|---|---|---|---|"
        local r n
        for row in small os script; do
            case $row in
                small) what="300-byte file from /assets" ;;
                os) what="300-byte file from /os (an install mirror's small files)" ;;
                script) what="iPXE script of an enrolled machine ($SCRIPT_BYTES bytes), rendered per request; nginx: the same bytes as a static file" ;;
            esac
            r=$(med "$row.rackboot"); n=$(med "$row.nginx")
            echo "| $what | wrk $WRK_VERSION -t2 -c50, ${SECS} s | $r req/s ($(rng "$row.rackboot")) | $n req/s ($(rng "$row.nginx")) | $(ratio "$r" "$n") | $(med "$row.cpu.rackboot") / $(med "$row.cpu.nginx") µs |"
        done
        r=$(med rate.rackboot); n=$(med rate.nginx)
        echo "| 300-byte file from /assets at a fixed rate | http-load, 50 connections, $RATE req/s, ${SECS} s | | | | $r / $n µs (p99 latency $(med rate.p99.rackboot) / $(med rate.p99.nginx) ms) |"
        r=$(med srate.rackboot); n=$(med srate.nginx)
        echo "| iPXE script at a fixed rate | http-load, 50 connections, $RATE req/s, ${SECS} s | | | | $r / $n µs (p99 latency $(med srate.p99.rackboot) / $(med srate.p99.nginx) ms) |"
        r=$(med large.rackboot); n=$(med large.nginx)
        echo "| 8 parallel downloads of a $LARGE_SIZE file | http-load, 8 connections, 8 requests | $r MiB/s ($(rng large.rackboot)) | $n MiB/s ($(rng large.nginx)) | $(ratio "$r" "$n") | $(med large.cpu.rackboot) / $(med large.cpu.nginx) CPU s per 8 downloads |"
        echo
        echo "rackboot's peak RSS over the HTTP rounds: ${RB_RSS:-?} MB. wrk and http-load run on the same 2 vCPUs"
        echo "as the servers, so where wrk's rate is near what the machine can do at all, the fixed-rate"
        echo "rows (CPU per request at the same rate for both) compare the servers."
    fi
    if wants storm; then
        echo
        echo "### Boot storm: $MACHINES machines at once"
        echo
        echo "\`boot-storm --machines $MACHINES --kernel-size $KERNEL_SIZE --initrd-size $INITRD_SIZE\` (crate \`rackboot-bench\`):"
        echo "one \`rackboot serve\` (SQLite, full DHCP, TFTP, boot HTTP) in a namespace, $MACHINES enrolled machines"
        echo "with a kernel profile; every machine powers on at the same instant and does what a BIOS PXE"
        echo "ROM and iPXE do, from its own MAC and (once leased) its own address in the client namespace:"
        echo "DHCP DISCOVER-OFFER-REQUEST-ACK broadcast from 0.0.0.0 (a packet socket; broadcast flag set,"
        echo "as iPXE does; retransmits after 4, 8, 16, 32 s), TFTP of undionly.kpxe (lock-step, blksize"
        echo "1468, compared with the file), DHCP again as iPXE (user class iPXE), then its script, kernel"
        echo "and initrd over HTTP (lengths and leading bytes checked). One round per HTTP round; p50 / p99"
        echo "(max) in ms, median round."
        echo
        echo "| round | served | wall (s) | server CPU (s) | server peak RSS (MB) | DHCP retransmits | TFTP retransmits |"
        echo "|---|---|---|---|---|---|---|"
        local i
        for i in $(seq "$ROUNDS"); do
            echo "| $i | $(kv "$i" served) of $(kv "$i" machines) | $(kv "$i" wall_secs) | $(kv "$i" server_cpu_secs) | $(kv "$i" server_peak_rss_mb) | $(kv "$i" dhcp_retransmits) | $(kv "$i" tftp_retransmits) |"
        done
        # The median round by wall time.
        local mid
        mid=$(for i in $(seq "$ROUNDS"); do echo "$(kv "$i" wall_secs) $i"; done | sort -n | awk '{ v[NR] = $2 } END { print v[int((NR + 1) / 2)] }')
        echo
        echo "Per stage in round $mid (the median by wall time): machines through it, p50 / p99 (max) ms."
        echo
        echo "| stage | machines | p50 | p99 | max |"
        echo "|---|---|---|---|---|"
        local key label f
        for key in dhcp_rom:"DHCP as the PXE ROM (DISCOVER to ACK, address configured)" \
                   tftp_loader:"TFTP of undionly.kpxe ($(stat -c %s /usr/lib/ipxe/undionly.kpxe 2>/dev/null || echo '?') bytes)" \
                   dhcp_ipxe:"DHCP as iPXE" http_script:"HTTP: iPXE script" \
                   http_kernel:"HTTP: kernel ($KERNEL_SIZE)" http_initrd:"HTTP: initrd ($INITRD_SIZE)" \
                   total:"power-on to the initrd's last byte"; do
            label=${key#*:}; key=${key%%:*}
            read -r -a f <<<"$(kv "$mid" "stage_$key")"
            echo "| $label | ${f[0]:-?} (${f[1]:-?} failed) | ${f[2]:-?} | ${f[3]:-?} | ${f[4]:-?} |"
        done
        local fails
        fails=$(grep -h '^failed_' "$WORK"/storm-*.out 2>/dev/null | sort | uniq -c | sed 's/^ *//' || true)
        if [ -n "$fails" ]; then
            echo
            echo "Failures (count, stage, first reason):"
            echo
            echo '```'
            echo "$fails"
            echo '```'
        fi
        echo
        echo "Server CPU per machine in round $mid: $(kv "$mid" server_cpu_ms_per_machine) ms; the simulator's own CPU $(kv "$mid" client_cpu_secs) s;"
        echo "events the server could not queue: $(kv "$mid" events_dropped). Server RSS before the storm $(kv "$mid" server_rss_before_mb) MB."
    fi
    echo
    echo "$END_MARK"
}
if [ -n "$OUT" ]; then section >"$OUT"; log "wrote $OUT"; else section; fi
