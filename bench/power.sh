#!/usr/bin/env bash
# bench/power.sh: power status of N ipmi_sim BMCs (127.0.0.1, one UDP port each, RMCP+
# cipher suite 3) read by a sequential ipmitool loop (what operators' scripts do), by
# `xargs -P` parallel ipmitool, by `rackboot machine power --all status` through a
# release `rackboot serve`, and by the native client alone (PowerController::power_state,
# all at once: crates/rackboot-power/examples/power_status_many.rs). Same BMCs, same run,
# methods interleaved round by round; medians and ranges of --repeat rounds.
#
# Run from anywhere:  bench/power.sh [--bmcs N] [--repeat R] [--out FILE] [--no-build]
#                                    [--rackboot PATH] [--example PATH]
#                     bench/power.sh --splice SECTION_FILE DOC_FILE
# --out FILE gets a Markdown section (default: stdout); the log goes to stderr.
# --splice puts such a section into DOC_FILE in place of the previous one (between its
# marker comments), or appends it (bench/run --only power does this for
# docs/benchmarks.md). Everything started here (ipmi_sim, rackboot serve) is killed by
# PID on exit; every loop is bounded in count and time. Takes 1-3 minutes.
set -euo pipefail

BEGIN_MARK='<!-- bench/power.sh: begin -->'
END_MARK='<!-- bench/power.sh: end -->'
if [ "${1:-}" = --splice ]; then
    [ $# = 3 ] && [ -s "$2" ] || { echo "usage: bench/power.sh --splice SECTION_FILE DOC_FILE" >&2; exit 2; }
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
N=50
REPEAT=5
OUT=""
BUILD=1
RACKBOOT_BIN="$REPO/target/release/rackboot"
EXAMPLE_BIN="$REPO/target/release/examples/power_status_many"
PARALLEL_XARGS=16      # xargs -P: as many ipmitool at once as the CLI's default --parallel
IPMITOOL_TIMEOUT=20    # bound on one ipmitool run (ipmitool retries on its own for ~10 s)
ROUND_TIMEOUT=300      # bound on one method's whole round

while [ $# -gt 0 ]; do
    case "$1" in
        --bmcs) N="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --rackboot) RACKBOOT_BIN="$2"; shift 2 ;;
        --example) EXAMPLE_BIN="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "bench/power.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
# The command as shown in the report: the arguments that change what is measured.
SHOWN_CMDLINE="bench/power.sh"
[ "$N" = 50 ] || SHOWN_CMDLINE+=" --bmcs $N"
[ "$REPEAT" = 5 ] || SHOWN_CMDLINE+=" --repeat $REPEAT"
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 200 ] || { echo "bench/power.sh: --bmcs must be 1-200" >&2; exit 2; }
[[ "$REPEAT" =~ ^[0-9]+$ ]] && [ "$REPEAT" -ge 1 ] && [ "$REPEAT" -le 20 ] || { echo "bench/power.sh: --repeat must be 1-20" >&2; exit 2; }

log() { printf '[power %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }

need() { # need COMMAND DEBIAN_PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ]; then
        log "installing $2 (for $1)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null || true
    fi
    command -v "$1" >/dev/null 2>&1 || die "$1 is missing: apt-get install $2"
}
need ipmi_sim openipmi
need ipmitool ipmitool
need curl curl
need ss iproute2
need bc bc

if [ "$BUILD" = 1 ]; then
    log "building rackboot and the power_status_many example (release)"
    (cd "$REPO" && cargo build --release -p rackboot && cargo build --release -p rackboot-power --example power_status_many) \
        >"${TMPDIR:-/tmp}/rackboot-power-bench-build.log" 2>&1 \
        || die "build failed; see ${TMPDIR:-/tmp}/rackboot-power-bench-build.log"
fi
[ -x "$RACKBOOT_BIN" ] || die "no rackboot binary at $RACKBOOT_BIN (build it or pass --rackboot)"
[ -x "$EXAMPLE_BIN" ] || die "no power_status_many at $EXAMPLE_BIN (cargo build --release -p rackboot-power --example power_status_many)"

WORK="$(mktemp -d /tmp/rackboot-power-bench.XXXXXX)"
SIM_PIDS=()
SERVER_PID=""
cleanup() {
    local pid
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    for pid in "${SIM_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    [ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2>/dev/null || true
    for pid in "${SIM_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${SIM_PIDS[@]}" $SERVER_PID; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- ports
# N consecutive free UDP ports for the BMCs and one free TCP port for the API.
udp_free() { ! ss -Hluan "sport = :$1" | grep -q .; }
tcp_free() { ! ss -Hltan "sport = :$1" | grep -q .; }
BASE_PORT=""
for try in $(seq 0 19); do
    base=$((40000 + ((($$ + try * 997) % 200) * 100)))
    ok=1
    for i in $(seq "$N"); do udp_free $((base + i)) || { ok=0; break; }; done
    if [ "$ok" = 1 ]; then BASE_PORT=$base; break; fi
done
[ -n "$BASE_PORT" ] || die "no $N free consecutive UDP ports found"
API_PORT=""
for try in $(seq 0 19); do
    p=$((BASE_PORT + 90 - try))
    tcp_free "$p" && { API_PORT=$p; break; }
done
[ -n "$API_PORT" ] || die "no free TCP port for the API"

# ---------------------------------------------------------------- BMCs
# The chassis program ipmi_sim runs (popen) for every chassis command: it keeps the
# power state in a file, like lab's VmChassis without a VM (`PROGRAM get power`,
# `PROGRAM set power 1` -> `power:1`).
CHASSIS="$WORK/chassis"
cat >"$CHASSIS" <<'EOF'
#!/bin/sh
# chassis NAME_DIR get|set ITEM [VALUE]... (ipmi_sim appends its arguments after ours)
dir="$1"; shift
log="$dir/chassis.log"
echo "$*" >>"$log"
op="${1:-}"; shift || true
if [ "$op" = get ]; then
    for item in "$@"; do
        case "$item" in
            power) printf 'power:%s\n' "$(cat "$dir/power" 2>/dev/null || echo 0)" ;;
            boot) printf 'boot:%s\n' "$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
        esac
    done
elif [ "$op" = set ]; then
    while [ $# -ge 2 ]; do
        case "$1" in
            power) echo "$2" >"$dir/power" ;;
            boot) echo "$2" >"$dir/boot" ;;
        esac
        shift 2
    done
fi
exit 0
EOF
chmod 755 "$CHASSIS"

emu_file="$WORK/bmc.emu"
# A BMC at IPMB 0x20 and nothing else (as crates/rackboot-lab/src/bmc.rs IPMI_SIM_EMU).
printf 'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n' >"$emu_file"

start_bmc() { # start_bmc I: bmc I on UDP BASE_PORT+I, powered on
    local i="$1" port=$((BASE_PORT + $1)) d="$WORK/bmc$1"
    mkdir -p "$d/state"
    echo 1 >"$d/power"
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$CHASSIS" "$d" >"$d/chassis"
    chmod 755 "$d/chassis"
    # Same lan.conf as rackboot-lab's IpmiSimConfig::lan_conf (user 2 admin/password).
    cat >"$d/lan.conf" <<EOF
name "bmc$i"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $port
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid $(printf '%08x%024x' "$$" "$i")
  endlan
  chassis_control "$d/chassis"
  user 2 true "admin" "password" admin 10 none md2 md5 straight
EOF
    (cd "$d" && exec ipmi_sim -c "$d/lan.conf" -f "$emu_file" -s "$d/state" -n -p </dev/null >"$d/ipmi_sim.log" 2>&1) &
    SIM_PIDS+=($!)
}

log "starting $N ipmi_sim BMCs on 127.0.0.1:$((BASE_PORT + 1))-$((BASE_PORT + N))"
for i in $(seq "$N"); do start_bmc "$i"; done
for i in $(seq "$N"); do
    port=$((BASE_PORT + i))
    for t in $(seq 100); do
        ss -Hluan "sport = :$port" | grep -q . && break
        kill -0 "${SIM_PIDS[$((i - 1))]}" 2>/dev/null || die "ipmi_sim bmc$i exited: $(tail -3 "$WORK/bmc$i/ipmi_sim.log")"
        [ "$t" = 100 ] && die "ipmi_sim bmc$i is not listening on UDP $port after 10 s"
        sleep 0.1
    done
done
: >"$WORK/urls"
for i in $(seq "$N"); do
    echo "ipmi://admin:password@127.0.0.1:$((BASE_PORT + i))?cipher=3" >>"$WORK/urls"
done
seq "$((BASE_PORT + 1))" "$((BASE_PORT + N))" >"$WORK/ports"

# ---------------------------------------------------------------- rackboot serve
STATE="$WORK/state"
mkdir -p "$STATE"
# The background power sync is off so that only the measured reads talk to the BMCs.
printf '[power]\nsync_interval_secs = 0\n' >"$WORK/rackboot.toml"
log "starting rackboot serve (API on 127.0.0.1:$API_PORT, no DHCP, no TFTP)"
RUST_LOG=warn "$RACKBOOT_BIN" serve --config "$WORK/rackboot.toml" --state-dir "$STATE" \
    --api-listen "127.0.0.1:$API_PORT" --tftp-listen off >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for t in $(seq 100); do
    # Any HTTP answer means it is up (and the admin token is written by then).
    curl -s -o /dev/null "http://127.0.0.1:$API_PORT/api/openapi.json" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "rackboot serve exited: $(tail -5 "$WORK/serve.log")"
    [ "$t" = 100 ] && die "rackboot serve is not answering on 127.0.0.1:$API_PORT after 10 s"
    sleep 0.1
done
export RACKBOOT_URL="http://127.0.0.1:$API_PORT" RACKBOOT_STATE_DIR="$STATE"
rb() { "$RACKBOOT_BIN" "$@"; }
log "enrolling $N machines with their BMCs"
for i in $(seq "$N"); do
    rb machine add "bench-m$i" --mac "$(printf '02:00:00:00:%02x:%02x' $((i / 256)) $((i % 256)))" \
        --bmc "ipmi://admin:password@127.0.0.1:$((BASE_PORT + i))?cipher=3" >/dev/null \
        || die "machine add bench-m$i failed"
done

# ---------------------------------------------------------------- methods
# Each prints "SECONDS OK_COUNT" for one round over all N BMCs.
m_ipmitool_seq() {
    local t0 ok=0 port
    t0=$(now)
    while read -r port; do
        if timeout "$IPMITOOL_TIMEOUT" ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$port" \
            -U admin -P password chassis power status 2>/dev/null | grep -q 'Chassis Power is on'; then
            ok=$((ok + 1))
        fi
    done <"$WORK/ports"
    echo "$(echo "$(now) - $t0" | bc) $ok"
}
m_ipmitool_xargs() {
    local t0 ok
    t0=$(now)
    ok=$(timeout "$ROUND_TIMEOUT" xargs -P "$PARALLEL_XARGS" -I{} timeout "$IPMITOOL_TIMEOUT" \
        ipmitool -I lanplus -C 3 -H 127.0.0.1 -p {} -U admin -P password chassis power status \
        <"$WORK/ports" 2>/dev/null | grep -c 'Chassis Power is on' || true)
    echo "$(echo "$(now) - $t0" | bc) $ok"
}
m_rackboot_cli() { # m_rackboot_cli PARALLEL
    local t0 ok
    t0=$(now)
    ok=$(timeout "$ROUND_TIMEOUT" "$RACKBOOT_BIN" machine power --all status --parallel "$1" \
        2>>"$WORK/cli.err" | grep -c ': on$' || true)
    echo "$(echo "$(now) - $t0" | bc) $ok"
}
m_native() {
    local t0 line
    t0=$(now)
    line=$(timeout "$ROUND_TIMEOUT" "$EXAMPLE_BIN" "$WORK/urls" 2>>"$WORK/native.err" || true)
    echo "$line" >>"$WORK/native.lines"
    echo "$(echo "$(now) - $t0" | bc) $(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$line")"
}

declare -A TIMES OKS CPUS
METHODS=(ipmitool_seq ipmitool_xargs rackboot_cli16 rackboot_cli64 native)
server_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat" 2>/dev/null || echo 0; }
# run_method NAME: one round; records wall seconds, BMCs read "on", and the CPU seconds
# of the reading side (the method's processes and their children; for the CLI also
# `rackboot serve`'s), not of the BMCs.
run_method() {
    local out TIMEFORMAT='%U %S' s0 s1 server_cpu=0 user sys
    s0=$(server_cpu_ticks)
    { time case "$1" in
        ipmitool_seq) out=$(m_ipmitool_seq) ;;
        ipmitool_xargs) out=$(m_ipmitool_xargs) ;;
        rackboot_cli16) out=$(m_rackboot_cli 16) ;;
        rackboot_cli64) out=$(m_rackboot_cli 64) ;;
        native) out=$(m_native) ;;
    esac; } 2>"$WORK/cpu"
    s1=$(server_cpu_ticks)
    read -r user sys < <(tail -1 "$WORK/cpu")
    [[ "$1" == rackboot_cli* ]] && server_cpu=$(echo "($s1 - $s0) / $(getconf CLK_TCK)" | bc -l)
    local secs ok cpu
    read -r secs ok <<<"$out"
    secs=$(printf '%.3f' "$secs")
    cpu=$(printf '%.2f' "$(echo "${user:-0} + ${sys:-0} + $server_cpu" | bc -l)")
    TIMES[$1]+="$secs "
    OKS[$1]+="${ok:-0} "
    CPUS[$1]+="$cpu "
    log "  $1: $secs s, ${ok:-0}/$N on, $cpu CPU s"
}

LOAD_SAMPLES="$WORK/load"
( for _ in $(seq 2000); do echo "$(cut -d' ' -f1 /proc/loadavg) $(pgrep -c -x rustc || true)"; sleep 5; done ) >"$LOAD_SAMPLES" 2>/dev/null &
LOAD_PID=$!
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(now)
# One warm-up read of every BMC (first-touch costs: page cache, ipmi_sim's first chassis
# program run) that is not counted.
m_native >/dev/null
: >"$WORK/native.lines"
for r in $(seq "$REPEAT"); do
    log "round $r of $REPEAT"
    for m in "${METHODS[@]}"; do run_method "$m"; done
done
# Where the native client's time goes: one BMC at a time with the bare client.
PHASES=$(timeout "$ROUND_TIMEOUT" "$EXAMPLE_BIN" --phases --concurrency 1 "$WORK/urls" 2>>"$WORK/native.err" || true)
log "native, one at a time: $PHASES"
# Where ipmitool's time goes, when strace is installed: median over 5 runs of the time
# until its first packet and of the whole run (strace itself adds a little to both).
IPMITOOL_SPLIT=""
if command -v strace >/dev/null 2>&1; then
    port=$(head -1 "$WORK/ports")
    for k in $(seq 5); do
        t0=$(now)
        timeout "$IPMITOOL_TIMEOUT" strace -f -qq -ttt -e trace=sendto,exit_group -o "$WORK/strace.$k" \
            ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$port" -U admin -P password chassis power status >/dev/null 2>&1 || true
        awk -v t0="$t0" '/sendto\(/ { n++; if (!f) { f = $2 } } /exit_group/ { e = $2 }
            END { if (f && e) printf "%.0f %.0f %d\n", (f - t0) * 1000, (e - t0) * 1000, n }' "$WORK/strace.$k"
    done >"$WORK/ipmitool.split"
    if [ -s "$WORK/ipmitool.split" ]; then
        IPMITOOL_SPLIT=$(sort -n -k2,2 "$WORK/ipmitool.split" | sed -n "$(( ($(wc -l <"$WORK/ipmitool.split") + 1) / 2 ))p")
        log "ipmitool under strace (first packet ms, total ms, packets sent): $IPMITOOL_SPLIT"
    fi
fi
ELAPSED=$(printf '%.0f' "$(echo "$(now) - $T_START" | bc)")
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
kill "$LOAD_PID" 2>/dev/null || true; wait "$LOAD_PID" 2>/dev/null || true

# ---------------------------------------------------------------- report
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { tr ' ' '\n' | grep . | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "–" hi }'; }
oks() { tr ' ' '\n' | grep . | sort -n | uniq | paste -sd/ -; }
fmt_s() { awk -v s="$1" 'BEGIN { if (s < 1) printf "%.0f ms", s * 1000; else printf "%.2f s", s }'; }
row() { # row NAME LABEL
    local med
    med=$(median <<<"${TIMES[$1]}")
    local speed
    speed=$(awk -v base="$(median <<<"${TIMES[ipmitool_seq]}")" -v t="$med" 'BEGIN { printf "%.1f×", base / t }')
    echo "| $2 | $(fmt_s "$med") | $(range <<<"${TIMES[$1]}") s | $(oks <<<"${OKS[$1]}") of $N | $(median <<<"${CPUS[$1]}") s | $speed |"
}
LOAD_SUMMARY=$(awk '{ n++; s += $1; if ($1 > m) m = $1; if ($2 > r) r = $2 } END { if (n == 0) print "not sampled"; else printf "1-minute load average mean %.1f, max %.1f; up to %d rustc processes at once (%d samples, 5 s apart)", s / n, m, r, n }' "$LOAD_SAMPLES")
SEQ_MED=$(median <<<"${TIMES[ipmitool_seq]}")
CLI_MED=$(median <<<"${TIMES[rackboot_cli16]}")
SPEEDUP=$(awk -v a="$SEQ_MED" -v b="$CLI_MED" 'BEGIN { printf "%.1f", a / b }')
VERDICT=$(awk -v s="$SPEEDUP" 'BEGIN { print (s >= 10) ? "**met**" : "**not met**" }')
field() { sed -n "s/.*[ ^]$1=\([^ ]*\).*/\1/p" <<<" $2"; }

# The per-read latencies of the native round with the median wall time.
median_native_latency() {
    sed -n 's/.*wall_ms=\([0-9.]*\).*\(min_ms=.*\)/\1 \2/p' "$WORK/native.lines" | sort -g \
        | sed -n "$(( ($(wc -l <"$WORK/native.lines") + 1) / 2 ))p" | cut -d' ' -f2- | sed 's/_ms=/ /g; s/ \([a-z]\)/ ms, \1/g; s/$/ ms/'
}
ipmitool_split_text() {
    local per_run_ms floor_s
    per_run_ms=$(awk -v c="$(median <<<"${CPUS[ipmitool_seq]}")" -v n="$N" 'BEGIN { printf "%.0f", c * 1000 / n }')
    floor_s=$(awk -v ms="$per_run_ms" -v n="$N" -v cpus="$(nproc)" 'BEGIN { printf "%.1f", ms * n / cpus / 1000 }')
    echo "ipmitool costs about $per_run_ms ms of CPU per BMC (sequential loop's CPU / $N), so on"
    echo "  $(nproc) CPUs no degree of \`xargs -P\` reads $N BMCs in less than ~$floor_s s."
    if [ -z "$IPMITOOL_SPLIT" ]; then
        echo "  (strace is not installed: ipmitool's time to its first packet was not measured.)"
        return
    fi
    local first total packets
    read -r first total packets <<<"$IPMITOOL_SPLIT"
    echo "  Under strace (one BMC, median of 5 runs) its first packet leaves $first ms into a"
    echo "  $total ms run ($((first * 100 / (total > 0 ? total : 1)))%; $packets packets in all): a shell loop pays ipmitool's process"
    local ent=/usr/share/misc/enterprise-numbers.txt
    echo "  start (libraries, OpenSSL, loading the $(awk -v b="$(stat -c %s "$ent" 2>/dev/null || echo 0)" 'BEGIN { printf "%.1f", b / 1e6 }') MB IANA enterprise-numbers file"
    echo "  $ent) for every BMC."
}
NATIVE_MED=$(median <<<"${TIMES[native]}")
CLI_EXTRA_MS=$(awk -v a="$CLI_MED" -v b="$NATIVE_MED" 'BEGIN { printf "%.0f", (a - b) * 1000 }')
SERVER_MAX=$(awk -F= '/^[[:space:]]*max_concurrent/ { gsub(/ /, "", $2); print $2 }' "$WORK/rackboot.toml")
section() {
    echo "$BEGIN_MARK"
    cat <<EOF
## Out-of-band power: status of $N IPMI BMCs ($(date -u '+%Y-%m-%d %H:%M UTC'))

Written by \`$SHOWN_CMDLINE\` (or \`bench/run --only power\`), as root, from the
repository; $(nproc) CPUs, Linux $(uname -r).

- BMCs: $N OpenIPMI \`ipmi_sim\` processes ($(dpkg-query -W -f '${Version}' openipmi 2>/dev/null || echo '?')) on 127.0.0.1, one UDP port
  each, each with a chassis_control program (a file-backed power state, all on),
  user admin/password; RMCP+ cipher suite 3 (ipmi_sim has no 17).
- Baseline: $(ipmitool -V 2>/dev/null), \`ipmitool -I lanplus -C 3 -H 127.0.0.1 -p PORT -U admin -P password chassis power status\`.
- rackboot $("$RACKBOOT_BIN" --version 2>/dev/null | awk '{ print $2 }') (work tree at git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')), release build: \`rackboot serve --api-listen
  127.0.0.1:PORT --tftp-listen off --state-dir TMP\` (no DHCP; the background power sync
  off, \`[power] sync_interval_secs = 0\`, so only the measured reads reach the BMCs;
  at most ${SERVER_MAX:-32} BMC operations at once, the default \`[power] max_concurrent\`), $N machines
  enrolled with \`rackboot machine add NAME --mac MAC --bmc ipmi://admin:password@127.0.0.1:PORT?cipher=3\`.
- The methods ran interleaved, $REPEAT rounds each, after one uncounted warm-up read of
  every BMC. Wall time is of a whole round over all $N BMCs (median, then min–max); CPU
  is the reading side's user+system seconds in that round (the ipmitool processes; the
  CLI plus \`rackboot serve\`; the example), not the BMCs'.
- The machine is shared with other engineers' builds: $LOAD_SUMMARY;
  load average (1, 5, 15 min) $LOAD_START at the start, $LOAD_END at the end; the
  measurements took $ELAPSED s.

| method | wall time (median) | range | BMCs read "on" | CPU (median) | vs sequential ipmitool |
|---|---|---|---|---|---|
$(row ipmitool_seq "ipmitool, one BMC after another (shell loop)")
$(row ipmitool_xargs "ipmitool, \`xargs -P $PARALLEL_XARGS\`")
$(row rackboot_cli16 "\`rackboot machine power --all status\` (default \`--parallel 16\`), whole command")
$(row rackboot_cli64 "\`rackboot machine power --all status --parallel 64\`")
$(row native "native client alone: $N \`PowerController::power_state\` at once (example \`power_status_many\`)")

Target: \`rackboot machine power --all status\` ≥ 10× faster than the sequential ipmitool
loop: $(fmt_s "$SEQ_MED") vs $(fmt_s "$CLI_MED") = ${SPEEDUP}× — $VERDICT.

Where the time goes:
- One native read, one BMC at a time (bare \`IpmiClient\`, mean per BMC): session setup
  (channel auth capabilities, open session, RAKP 1–4, set privilege) $(field connect_ms "$PHASES") ms,
  Get Chassis Status $(field status_ms "$PHASES") ms (ipmi_sim runs its chassis program for it), close
  $(field close_ms "$PHASES") ms; $N in a row $(field sequential_total_ms "$PHASES") ms.$(awk -v c="$(field connect_ms "$PHASES")" -v s="$(field status_ms "$PHASES")" 'BEGIN { if (s > 2 * c) print " Most of it is the BMC answering the status command." }')
- All $N at once through the controller (median round): per-read latency $(median_native_latency);
  the round is bounded by $N ipmi_sim processes (and their chassis programs) sharing
  $(nproc) CPUs, not by the client.
- The CLI's whole command took ${CLI_EXTRA_MS} ms more than the native client alone (median
  rounds): process start, reading the token, listing the machines, and one HTTP request per
  machine, each unsealing the stored BMC password.
- $(ipmitool_split_text)
EOF
    echo "$END_MARK"
}
if [ -n "$OUT" ]; then section >"$OUT"; else section; fi
log "done in $ELAPSED s"
