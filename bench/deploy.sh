#!/usr/bin/env bash
# bench/deploy.sh: the in-band deploy figures of issue 16, in one run.
#   a. image write by the agent vs `wget | dd`, same image, same VM disk, same boot;
#   b. the RAM-disk: size, modules, QEMU start to the agent's hello;
#   c. `rackboot deploy` to active for a lab machine behind an IPMI BMC;
#   d. the fleet simulation: N simulated machines deploying at once against one server.
# a-c run in the QEMU lab (TCG) through crates/rackboot-bench's deploy-bench, d through
# its fleet-sim.
#
# Run as root:  bench/deploy.sh [--rounds R] [--image-mib M] [--machines N] [--out FILE]
#                               [--no-build] [--skip-qemu] [--skip-fleet]
#               bench/deploy.sh --splice SECTION_FILE DOC_FILE
# --out FILE gets the Markdown section (default: stdout); the log goes to stderr.
# --splice puts such a section into DOC_FILE in place of the previous one (between its
# marker comments) or appends it (bench/run --only deploy does this for
# docs/benchmarks.md). deploy-bench and fleet-sim stop everything they start (QEMU,
# ipmi_sim, rackboot serve, the agents, the lab's namespace) when they end or are
# signalled; this script kills only their PIDs. Takes about 15-25 minutes.
set -euo pipefail

BEGIN_MARK='<!-- bench/deploy.sh: begin -->'
END_MARK='<!-- bench/deploy.sh: end -->'
if [ "${1:-}" = --splice ]; then
    [ $# = 3 ] && [ -s "$2" ] || { echo "usage: bench/deploy.sh --splice SECTION_FILE DOC_FILE" >&2; exit 2; }
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
ROUNDS=3
IMAGE_MIB=256
MACHINES=1000
OUT=""
BUILD=1
QEMU=1
FLEET=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --image-mib) IMAGE_MIB="$2"; shift 2 ;;
        --machines) MACHINES="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --skip-qemu) QEMU=0; shift ;;
        --skip-fleet) FLEET=0; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "bench/deploy.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
SHOWN_CMDLINE="bench/deploy.sh"
[ "$ROUNDS" = 3 ] || SHOWN_CMDLINE+=" --rounds $ROUNDS"
[ "$IMAGE_MIB" = 256 ] || SHOWN_CMDLINE+=" --image-mib $IMAGE_MIB"
[ "$MACHINES" = 1000 ] || SHOWN_CMDLINE+=" --machines $MACHINES"
[ "$QEMU" = 1 ] || SHOWN_CMDLINE+=" --skip-qemu"
[ "$FLEET" = 1 ] || SHOWN_CMDLINE+=" --skip-fleet"
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || { echo "bench/deploy.sh: --rounds must be 1-20" >&2; exit 2; }
[[ "$MACHINES" =~ ^[0-9]+$ ]] && [ "$MACHINES" -ge 1 ] && [ "$MACHINES" -le 10000 ] || { echo "bench/deploy.sh: --machines must be 1-10000" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench/deploy.sh: must run as root (the QEMU lab's network namespace)" >&2; exit 1; }

log() { printf '[deploy %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { # need COMMAND DEBIAN_PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null || true
    command -v "$1" >/dev/null 2>&1 || die "$1 is missing: apt-get install $2"
}
need curl curl
need bc bc
need chrt util-linux
if [ "$QEMU" = 1 ]; then
    need qemu-system-x86_64 qemu-system-x86
    need ipmi_sim openipmi
    need busybox busybox-static
    need mkfs.ext4 e2fsprogs
    [ -e /usr/lib/ipxe/qemu/pxe-virtio.rom ] \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ipxe-qemu >/dev/null || true
fi

BIN="$REPO/target/release"
if [ "$BUILD" = 1 ]; then
    log "building rackboot, rackboot-agent and rackboot-bench (release) and the static agent"
    (cd "$REPO" && cargo build --release -p rackboot -p rackboot-agent -p rackboot-bench && scripts/build-agent) \
        >"${TMPDIR:-/tmp}/rackboot-deploy-bench-build.log" 2>&1 \
        || die "build failed; see ${TMPDIR:-/tmp}/rackboot-deploy-bench-build.log"
fi
STATIC_AGENT="$REPO/target/x86_64-unknown-linux-gnu/release/rackboot-agent"
for b in rackboot rackboot-agent deploy-bench fleet-sim; do
    [ -x "$BIN/$b" ] || die "no $BIN/$b (build it, or run without --no-build)"
done
[ "$QEMU" = 0 ] || [ -x "$STATIC_AGENT" ] || die "no static agent at $STATIC_AGENT (scripts/build-agent)"

WORK="$(mktemp -d /tmp/rackboot-deploy-bench.XXXXXX)"
CHILD=""
LOAD_PID=""
cleanup() {
    # deploy-bench and fleet-sim tear down what they started on TERM.
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$CHILD" 2>/dev/null || true
    fi
    [ -z "$LOAD_PID" ] || kill "$LOAD_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Where the big files go: /dev/shm when it has room (the VM's disk and images: ~4 GiB;
# the fleet's disks: ~6 MiB per machine), else the temporary directory.
free_kib() { df -Pk "$1" | awk 'NR == 2 { print $4 }'; }
scratch_for() { # scratch_for KIB
    if [ -d /dev/shm ] && [ "$(free_kib /dev/shm)" -gt "$1" ]; then echo /dev/shm; else echo "${TMPDIR:-/tmp}"; fi
}

# Other work on the machine during the run, every 5 s: 1-minute load and rustc count.
( for _ in $(seq 2000); do echo "$(cut -d' ' -f1 /proc/loadavg) $(pgrep -c -x rustc || true)"; sleep 5; done ) >"$WORK/load" 2>/dev/null &
LOAD_PID=$!
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)

# run_child OUT ERR PROGRAM ARGS...: runs a bench program in the background (so a signal
# reaches this script's trap) and waits for it.
run_child() {
    local out="$1" err="$2"; shift 2
    "$@" >"$out" 2>"$err" &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

QEMU_STATUS="not run (--skip-qemu)"
if [ "$QEMU" = 1 ]; then
    QWORK=$(scratch_for $((4 * 1024 * 1024 + IMAGE_MIB * 8 * 1024)))
    log "QEMU part: deploy-bench --rounds $ROUNDS --image-mib $IMAGE_MIB (files in $QWORK; ~10-20 min)"
    if run_child "$WORK/qemu.kv" "$WORK/qemu.log" "$BIN/deploy-bench" --rackboot "$BIN/rackboot" \
        --agent "$STATIC_AGENT" --rounds "$ROUNDS" --image-mib "$IMAGE_MIB" --work "$QWORK"; then
        QEMU_STATUS=ok
    else
        QEMU_STATUS="failed: $(grep -v '^\[deploy-bench' "$WORK/qemu.log" | tail -3 | tr '\n' ' ' | cut -c1-300)"
    fi
    log "QEMU part: $QEMU_STATUS"
    grep '^\[deploy-bench' "$WORK/qemu.log" | tail -40 >&2 || true
fi

FLEET_STATUS="not run (--skip-fleet)"
if [ "$FLEET" = 1 ]; then
    FWORK=$(scratch_for $((MACHINES * 6 * 1024 + 1024 * 1024)))
    log "fleet part: fleet-sim --machines $MACHINES (files in $FWORK)"
    if run_child "$WORK/fleet.kv" "$WORK/fleet.log" "$BIN/fleet-sim" --rackboot "$BIN/rackboot" \
        --agent "$BIN/rackboot-agent" --machines "$MACHINES" --work "$FWORK" --timeout-secs 1800 --check; then
        FLEET_STATUS=ok
    else
        FLEET_STATUS="failed (exit $?)"
    fi
    log "fleet part: $FLEET_STATUS"
    cat "$WORK/fleet.log" >&2
fi
ELAPSED=$(( $(date +%s) - T_START ))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
kill "$LOAD_PID" 2>/dev/null || true; wait "$LOAD_PID" 2>/dev/null || true; LOAD_PID=""

# ---------------------------------------------------------------- report helpers
# kv FILE KEY: the value of KEY= in FILE (empty if absent)
kv() { [ -f "$1" ] || return 0; awk -v k="$2=" 'index($0, k) == 1 { print substr($0, length(k) + 1); exit }' "$1"; }
# field TEXT NAME: NAME=VALUE in a space-separated line
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }
nonempty() { grep . || true; }
median() { nonempty | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# range [SUFFIX]: "lo–hi" of the values on stdin, one decimal, each followed by SUFFIX
range() { nonempty | sort -g | awk -v u="${1:-}" 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.1f%s–%.1f%s", lo, u, hi, u }'; }
f1() { [ -n "$1" ] && printf '%.1f' "$1" || printf 'n/a'; }
f2() { [ -n "$1" ] && printf '%.2f' "$1" || printf 'n/a'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
# latency KEY: "p50 X ms, p99 Y ms, max Z ms (N requests, E errors)" of a fleet latency line
latency() {
    local v; v=$(kv "$WORK/fleet.kv" "$1")
    [ -n "$v" ] || { echo "n/a"; return; }
    read -r n e p50 p99 max <<<"$v"
    echo "$p50 | $p99 | $max | $n | $e"
}

Q="$WORK/qemu.kv"
F="$WORK/fleet.kv"
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
GIT=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$REPO" && git status --porcelain 2>/dev/null | grep -q . && echo " plus uncommitted changes" || true)
CPUS=$(nproc)
KERNEL=$(uname -r)
LOADS=$(awk '{ n++; s += $1; if ($1 > m) m = $1; if ($2 > r) r = $2 } END { if (n) printf "1-minute load average mean %.1f, max %.1f; up to %d rustc processes at once (%d samples, 5 s apart)", s / n, m, r, n }' "$WORK/load")

# Part a: per image, per round: dd and agent MiB/s, ratio.
write_rows() {
    local image="$1" label="$2" lines dd dds ag ratio ratio_sha zero dl
    lines=$(grep "^write\.$image\." "$Q" 2>/dev/null | sed 's/^[^=]*=//')
    [ -n "$lines" ] || { echo "| $label | not measured | | | | | | |"; return; }
    dd=$(while read -r l; do echo "$IMAGE_MIB / $(field "$l" dd_secs)" | bc -l; done <<<"$lines")
    dds=$(while read -r l; do echo "$IMAGE_MIB / $(field "$l" dd_sha256_secs)" | bc -l; done <<<"$lines")
    ratio_sha=$(while read -r l; do echo "$(field "$l" dd_sha256_secs) / $(field "$l" agent_secs)" | bc -l; done <<<"$lines")
    ag=$(while read -r l; do echo "$IMAGE_MIB / $(field "$l" agent_secs)" | bc -l; done <<<"$lines")
    ratio=$(while read -r l; do echo "$(field "$l" dd_secs) / $(field "$l" agent_secs)" | bc -l; done <<<"$lines")
    zero=$(while read -r l; do field "$l" zero_bytes; done <<<"$lines" | median)
    dl=$(while read -r l; do field "$l" downloaded_bytes; done <<<"$lines" | median)
    RATIOS+=$'\n'"$ratio"
    echo "| $label | $(f1 "$(median <<<"$dd")") ($(range <<<"$dd")) | $(f1 "$(median <<<"$dds")") ($(range <<<"$dds")) | $(f1 "$(median <<<"$ag")") ($(range <<<"$ag")) | $(f2 "$(median <<<"$ratio")")× ($(range × <<<"$ratio")) | $(f1 "$(median <<<"$ratio_sha")")× | $(mib "${zero:-0}") MiB | $(mib "${dl:-0}") MiB |"
}
RATIOS=""

hello_vals=$(grep '^hello\.' "$Q" 2>/dev/null | sed 's/^[^=]*=//' || true)
deploy_vals=$(grep '^deploy\.[0-9]' "$Q" 2>/dev/null | sed 's/^[^=]*=//' | while read -r l; do field "$l" secs; done || true)
undeploy_vals=$(grep '^undeploy\.[0-9]' "$Q" 2>/dev/null | sed 's/^[^=]*=//' | while read -r l; do field "$l" secs; done || true)
deploy_write_vals=$(grep '^deploy_write\.' "$Q" 2>/dev/null | sed 's/^[^=]*=//' || true)
# Median seconds of each deploy step over the rounds: "name median" lines, in step order.
deploy_steps() {
    grep '^deploy\.[0-9]' "$Q" 2>/dev/null | sed 's/.* steps=//' | tr ',' '\n' | awk -F: '
        { if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } if ($2 != "-") vals[$1] = vals[$1] " " $2 }
        END { for (i = 1; i <= n; i++) print order[i] vals[order[i]] }' |
    while read -r name rest; do
        printf '%s %s\n' "$name" "$(tr ' ' '\n' <<<"$rest" | median)"
    done
}

initramfs_bytes=$(kv "$Q" ramdisk_initramfs_bytes)
kernel_bytes=$(kv "$Q" ramdisk_kernel_bytes)
uncompressed_bytes=$(kv "$Q" ramdisk_uncompressed_bytes)
hello_median=$(median <<<"$hello_vals")
deploy_median=$(median <<<"$deploy_vals")

verdict() { [ "$1" = 1 ] && echo "**met**" || echo "**not met**"; }
T_WRITE="n/a"; T_RAMDISK="n/a"; T_HELLO="n/a"; T_FLEET="n/a"
# Not in $( ): write_rows adds to RATIOS, which a subshell would lose.
write_rows bench-testos "test OS padded with zeros ($(kv "$Q" image_testos_bytes_nonzero_approx) MiB of data)" >"$WORK/write-rows"
write_rows bench-random "random bytes (incompressible)" >>"$WORK/write-rows"
WRITE_TABLE="$(cat "$WORK/write-rows")"
if [ -n "$(tr -d '\n' <<<"$RATIOS")" ]; then
    worst=$(grep . <<<"$RATIOS" | sort -g | head -1)
    med_all=$(median <<<"$RATIOS")
    T_WRITE="agent/dd median $(f2 "$med_all")×, lowest round $(f2 "$worst")× (goal ≥ 0.9×) | $(verdict "$(echo "$worst >= 0.9" | bc)")"
fi
if [ -n "$initramfs_bytes" ]; then
    T_RAMDISK="initramfs $(mib "$initramfs_bytes") MiB (goal ≤ 64 MiB) | $(verdict "$(echo "$initramfs_bytes <= 64 * 1048576" | bc)")"
fi
if [ -n "$hello_median" ]; then
    hello_max=$(grep . <<<"$hello_vals" | sort -g | tail -1)
    T_HELLO="median $(f1 "$hello_median") s, slowest $(f1 "$hello_max") s (goal ≤ 30 s) | $(verdict "$(echo "$hello_max <= 30" | bc)")"
fi
if [ -s "$F" ]; then
    fl_ok=$([ "$(kv "$F" workflows_succeeded)" = "$MACHINES" ] && [ "$(kv "$F" lost_steps)" = 0 ] && echo 1 || echo 0)
    T_FLEET="$(kv "$F" workflows_succeeded) of $MACHINES succeeded, $(kv "$F" lost_steps) lost steps, $(kv "$F" peak_running) running at once | $(verdict "$fl_ok")"
fi

# ---------------------------------------------------------------- report
report() {
cat <<EOF
$BEGIN_MARK
## In-band deploy ($DATE)

Written by \`$SHOWN_CMDLINE\` (or \`bench/run --only deploy\`), as root, from the
repository; $CPUS CPUs, Linux $KERNEL; rackboot at git $GIT$DIRTY, release build.
The measurements took $ELAPSED s. The machine is shared with other work:
${LOADS:-not sampled}; load average (1, 5, 15 min) $LOAD_START at the start, $LOAD_END at the end.
QEMU part: $QEMU_STATUS. Fleet part: $FLEET_STATUS.

| target | measured | result |
|---|---|---|
| image write by the agent ≥ 0.9× \`dd\`, same image, same VM disk | $T_WRITE |
| RAM-disk initramfs ≤ 64 MiB with every wired NIC driver | $T_RAMDISK |
| power-on (QEMU start) to the agent's first heartbeat ≤ 30 s (TCG) | $T_HELLO |
| power-on to \`active\`: image deploy ≥ 5× faster than the preseed installer | not measured: the preseed side needs issue 12's local package mirror (the lab reaches no mirror); see below |
| $MACHINES simulated agents deploying at once: every workflow completes, 0 lost steps | $T_FLEET |

### Image write against \`dd\`, same image, same disk, same boot

| image ($IMAGE_MIB MiB) | \`wget \| dd\`: MiB/s (range) | the same with \`sha256sum\` on the way: MiB/s (range) | agent's write_image (verifies SHA-256): MiB/s (range) | agent / dd (range) | agent / dd with sha256sum | zero runs the agent did not send as data (median) | downloaded by the agent (median) |
|---|---|---|---|---|---|---|---|
$WRITE_TABLE

Method: one lab machine ($(kv "$Q" machine); $(kv "$Q" disk_mib) MiB disk) behind an
IPMI BMC (ipmi_sim, whose chassis starts and stops QEMU), \`rackboot serve\` on the lab
bridge, as the QEMU end-to-end tests run them. Each round and image is one boot of
rackboot's real RAM-disk (\`rackboot ramdisk build\`) with an add-on: a second cpio archive
appended to the built initramfs (the kernel unpacks concatenated archives; later files
replace earlier ones) puts a wrapper at /bin/rackboot-agent and the real agent at
/bin/rackboot-agent.real. When the RAM-disk's /init starts the agent (network up), the
wrapper first writes the image onto the disk the way operators do today,
\`$(kv "$Q" dd_command)\`, with IMAGE_URL the raw image in rackboot's asset directory (served
by the same boot HTTP server) and DISK /dev/vda, then once more with the image's SHA-256
computed on the way as the agent does (\`$(kv "$Q" dd_sha256_command)\`; the sum is
checked against the image's), each timed with /proc/uptime and printed on the serial
console; then it execs the agent, which runs the workflow \`bench-write\` (boot-agent,
inspect, write-image, power-off; an operator-defined workflow) and writes the same image
onto the same disk from rackboot's image catalog (1 MiB zstd frames, sha256 verified on
the fly). The agent's figure is the write_image step's own timing (output \`millis\`:
download, decompression, verification and writing, until the data is on the disk); dd's
runs from wget's start to the end of \`sync\`. busybox's sha256sum is slow under TCG
(no SHA instructions on QEMU's default CPU model, and emulated code): it shows what
verifying costs a shell pipeline here, while the agent verifies every byte too. Both write $IMAGE_MIB MiB; MiB/s is
$IMAGE_MIB MiB / seconds. The agent skips runs of zeros when the disk already reads zeros
there (dd has just written the same image, as on a new blank disk), and downloads the
compressed frames; dd writes and downloads every byte. Rounds: $ROUNDS per image, medians
and ranges.

### RAM-disk

| | this run | reference |
|---|---|---|
| initramfs ($(kv "$Q" ramdisk_compression)) | $( [ -n "$initramfs_bytes" ] && echo "$(mib "$initramfs_bytes") MiB ($(mib "${uncompressed_bytes:-0}") MiB unpacked)" || echo n/a) | Ironic's IPA RAM-disk: several hundred MiB (a published figure, not measured here) |
| kernel | $( [ -n "$kernel_bytes" ] && echo "$(mib "$kernel_bytes") MiB, Debian $(kv "$Q" ramdisk_kernel_version)" || echo n/a) | |
| kernel modules | $(kv "$Q" ramdisk_modules) | |
| programs besides busybox's applets | $(kv "$Q" ramdisk_binaries) | |
| \`rackboot ramdisk build\` | $(f1 "$(kv "$Q" ramdisk_build_secs)") s | |
| QEMU start to the agent's hello, median (range) of $(grep -c . <<<"$hello_vals" || true) boots | $(f1 "$hello_median") s ($(range <<<"$hello_vals")) | goal ≤ 30 s |

The boots are those of the deploys and undeploys below (each boots the RAM-disk through
the BMC: SeaBIOS, iPXE, DHCP, the boot script, kernel and initramfs over HTTP, /init,
coldplug, DHCP again, the agent). QEMU's start is the process start time
(/proc/PID/stat) of the VM the BMC's chassis program launched; the hello is the server's
\`agent_hello\` event (the agent's first request; heartbeats follow at once).

### Power-on to \`active\`

| method | median (range) | rounds |
|---|---|---|
| \`rackboot deploy m1 --image bench-testos --vars ...\` (image deploy, IPMI BMC) | $(f1 "$deploy_median") s ($(range <<<"$deploy_vals")) | $(grep -c . <<<"$deploy_vals" || true) |
| the same machine installed by the Debian preseed installer | not measured | needs issue 12's local package mirror, which the lab did not have when this bench was written (scripts/build-debian-mirror and the long test e2e_install_full have since been added; a later run can fill this row) |
| \`rackboot undeploy m1\` (agent boot, metadata erase, power off) | $(f1 "$(median <<<"$undeploy_vals")") s ($(range <<<"$undeploy_vals")) | $(grep -c . <<<"$undeploy_vals" || true) |

Where a deploy's time goes (median seconds per step): $(deploy_steps | awk '{ printf "%s%s %.1f", (NR > 1 ? ", " : ""), $1, $2 }').
The write-image step alone (agent's timing) took $(f1 "$(median <<<"$deploy_write_vals")") s in these deploys.
From the request (workflow created) to \`active\` (workflow finished, by the server's
clock): the BMC powers the machine on with PXE first, it boots the RAM-disk, the agent
inspects, erases (metadata), writes the $IMAGE_MIB MiB test OS image, writes the network
configuration (static 10.77.0.50/24), rackboot sets the boot device to disk and power
cycles it, and the installed test OS is seen answering at its address from its MAC (ARP).

### Fleet: $MACHINES simulated machines deploying at once

| figure | value |
|---|---|
| workflows | $(kv "$F" workflows_succeeded) succeeded of $(kv "$F" workflows); failed $(x=$(kv "$F" workflows_failed); echo "${x:-0}"), still queued or running $(q=$(kv "$F" workflows_queued); r=$(kv "$F" workflows_running); echo $(( ${q:-0} + ${r:-0} ))) |
| lost steps (definition below) | $(kv "$F" lost_steps) of $(kv "$F" steps) step records; $(kv "$F" attempts) attempts, $(kv "$F" retried_attempts) of them retries |
| most workflows running at once | $(kv "$F" peak_running) (\`[engine] max_running = $(kv "$F" max_running)\`) |
| machines \`active\` at the end; disks holding the image | $(kv "$F" machines_active); $(kv "$F" disks_ok) |
| deploys requested (one API request each) | in $(kv "$F" deploy_requests_secs) s |
| wall time, first request to no workflow active | $(kv "$F" deploy_wall_secs) s |
| one workflow, request to end: p50 / p99 / max | $(kv "$F" workflow_secs | awk '{ printf "%s / %s / %s s", $1, $2, $3 }') |
| server CPU (user + system) over the deploy | $(kv "$F" server_cpu_secs) s |
| server peak RSS (VmHWM) | $(kv "$F" server_peak_rss_mib) MiB |
| events stored; dropped | $(kv "$F" events); $(kv "$F" events_dropped) |
| the $MACHINES agents' CPU; the driver's | $(kv "$F" agents_cpu_secs) s; $(kv "$F" driver_cpu_secs) s |

Latency as clients saw it during the run (ms):

| request | p50 | p99 | max | requests | errors |
|---|---|---|---|---|---|
| every \`GET /api/v1/...\` below, together | $(latency latency.api_all) |
| \`GET /api/v1/machines/{name}/status\` (random machine) | $(latency "latency.GET /api/v1/machines/{name}/status") |
| \`GET /api/v1/machines/{name}\` | $(latency "latency.GET /api/v1/machines/{name}") |
| \`GET /api/v1/workflows?limit=20\` | $(latency "latency.GET /api/v1/workflows?limit=20") |
| \`GET /api/v1/workflows/{id}\` (each machine's deploy, followed to its end) | $(latency "latency.GET /api/v1/workflows/{id}") |
| \`POST /api/v1/workflows\` (the deploy requests) | $(latency "latency.POST /api/v1/workflows") |
| \`GET /boot/ipxe/{mac}\` (the firmware) | $(latency "latency.boot script") |
| first-boot callback (cloud-init phone_home) | $(latency "latency.first-boot callback") |
| agents: every request | $(latency agent_latency.all) |
| agents: heartbeat | $(latency agent_latency.heartbeat) |
| agents: hello | $(latency agent_latency.hello) |
| agents: progress | $(latency agent_latency.progress) |
| agents: step result | $(latency agent_latency.result) |

Method: \`fleet-sim\` (crates/rackboot-bench) starts a release \`rackboot serve\` (SQLite
in a temporary directory on disk, HTTP on 127.0.0.1, no DHCP or TFTP, \`[engine]
max_running = $(kv "$F" max_running)\` so that every deploy runs at once, the default being 64;
heartbeat every $(kv "$F" heartbeat_secs) s, the default), imports a $(kv "$F" image_mib) MiB image (a third each of
noise, text and zeros) with cloud-init, enrolls $MACHINES machines without BMCs through the
API, then requests a deploy for each with \`POST /api/v1/workflows\` (its own host name
and DHCP on its NIC by MAC: the cloud-init seed needs a host name, and \`rackboot deploy
--all\` can only give every machine the same one; \`--parallel\` makes a batch only within
one request, so the global \`max_running\` is the limit that applies). Then every
machine is powered on: its firmware fetches \`/boot/ipxe/MAC\` (every second, spread)
until the script carries an agent token, starts the real \`rackboot-agent --simulate\`
(one process per machine, a $(kv "$F" disk_mib) MiB sparse file as its disk, SCHED_IDLE so
the agents do not take the server's CPU: they stand in for machines of their own), which
inspects, erases, writes and verifies the image, writes the network files and the seed,
and reboots (exits); the firmware then fetches its script again (it must boot the disk,
no token), the "installed OS" POSTs the first-boot URL from the seed's user-data, and an
operator follows the deploy (\`GET /api/v1/workflows/{id}\` every 2 s) to its end.
Four more clients read a random machine's status, the machine, and the newest 20
workflows every 250 ms. Agents log each request's latency (\`--request-log\`).
A step is **lost** when its workflow record does not end succeeded or skipped, or when
the record and the event log disagree: every attempt the record counts must have
exactly one \`step_started\` and exactly one end event (\`step_succeeded\`, \`step_failed\`
or \`step_skipped\`), a succeeded step exactly one \`step_succeeded\`, and every workflow
exactly one \`workflow_started\` and one end event; so an attempt handed out and never
answered, a result applied twice, or a step recorded but never run all count. Peak
concurrency is read from the workflow_started/ended events. Server CPU is utime+stime
from /proc/PID/stat between the first request and the moment no workflow is active;
peak RSS is VmHWM then.
$END_MARK
EOF
}
if [ -n "$OUT" ]; then report >"$OUT"; log "wrote $OUT"; else report; fi
[ "$QEMU_STATUS" = ok ] || [ "$QEMU" = 0 ] || exit 1
[ "$FLEET_STATUS" = ok ] || [ "$FLEET" = 0 ] || exit 1
