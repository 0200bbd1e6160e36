# Sourced by bench/run: renders docs/benchmarks.md from the results array R and the
# variables bench/run sets. Values are numbers or a short reason ("pending", "failed").

is_num() { [[ "${1:-}" =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
val() { # val KEY [PENDING_TEXT]: the result, or why there is none
    local v="${R[$1]:-}"
    if [ -n "$v" ]; then echo "$v"
    elif [[ "$1" == rackboot.* ]] && [ "$RACKBOOT_OK" != 1 ]; then echo "pending"
    else echo "not measured"; fi
}
unit() { local v; v=$(val "$1"); if is_num "$v"; then echo "$v MiB/s"; else echo "$v"; fi; }
# spread KEY: the median and, when known, the runs' range: "42.9 MiB/s (40.1-44.0)"
spread() { local v r; v=$(unit "$1"); r="${R[$1.spread]:-}"; if [ -n "$r" ] && is_num "$(val "$1")"; then echo "$v ($r)"; else echo "$v"; fi; }
pct() { local v; v=$(val "$1"); if is_num "$v"; then echo "$v%"; else echo "$v"; fi; }

# verdict A OP B: "met"/"not met" when both are numbers, "pending" otherwise.
verdict() {
    if is_num "$1" && is_num "$3"; then
        if awk -v a="$1" -v b="$3" "BEGIN { exit !(a $2 b) }"; then echo "**met**"; else echo "**not met**"; fi
    else
        echo "pending"
    fi
}

# client_ceiling KEY: TFTP_BIG_MIB / the client's CPU seconds for that download
client_ceiling() {
    local c="${R[$1.ccpu]:-}"
    if is_num "$c" && awk -v c="$c" 'BEGIN { exit !(c > 0) }'; then
        awk -v c="$c" -v m="$TFTP_BIG_MIB" 'BEGIN { printf "%.0f MiB/s", m / c }'
    else
        echo "n/a"
    fi
}

# fail_limit NAME: "12000/s: 62%" (the lowest failing rate of the median round, and the
# share of its lost exchanges that perfdhcp's own socket buffer dropped)
fail_limit() {
    local r="${R[$1.dhcp_fail_rate]:-}" g="${R[$1.dhcp_fail_gen]:-}"
    if is_num "$r" && is_num "$g"; then echo "$r/s: $g%"; elif is_num "$r"; then echo "$r/s: n/a"; else echo "n/a"; fi
}

# half X: X / 2 when X is a number
half() { if is_num "$1"; then awk -v x="$1" 'BEGIN { print x / 2 }'; else echo "$1"; fi; }
# same_ratio: ", Kea uses 2.1× as much" from the same-rate figures, when both are numbers
same_ratio() {
    local r="${R[rackboot.dhcp_same_us]:-}" k="${R[kea.dhcp_same_us]:-}"
    if is_num "$r" && is_num "$k" && [ "$r" != 0 ]; then
        awk -v r="$r" -v k="$k" 'BEGIN { printf " (Kea uses %.2f× as much)", k / r }'
    fi
}

# dhcp_target_verdict: met / not met, and whether this machine can show it at all. A
# rate ratio says something about the servers only if the competitor's rate was set by
# the competitor: when most exchanges lost at Kea's lowest failing rate were replies that
# perfdhcp's own socket buffer dropped, the load generator (sharing the CPUs) set it.
dhcp_target_verdict() {
    local v gen
    v=$(verdict "$(val rackboot.dhcp)" ">=" "$1")
    gen="${R[kea.dhcp_fail_gen]:-}"
    if [ "$v" = "**not met**" ] && is_num "$gen" && [ "${gen%.*}" -ge 50 ]; then
        echo "**not met; not measurable here**: at Kea's lowest failing rate (${R[kea.dhcp_fail_rate]}/s) ${gen}% of the lost exchanges were replies perfdhcp's own socket buffer dropped, so the load generator, not Kea, set Kea's figure"
    else
        echo "$v"
    fi
}

version_of() {
    case "$1" in
        rackboot)
            if [ "$RACKBOOT_STATUS" = built ]; then
                echo "$("$RACKBOOT_BIN" --version 2>/dev/null | head -1 || true) (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
            else echo "$RACKBOOT_STATUS"; fi ;;
        kea) echo "Kea $(kea-dhcp4 -V 2>/dev/null | head -1)" ;;
        dnsmasq) dnsmasq --version 2>/dev/null | head -1 | awk '{ print "dnsmasq " $3 }' ;;
        tftpd-hpa) in.tftpd -V 2>&1 | head -1 | cut -d, -f1 ;;
        atftpd) echo "atftpd $ATFTPD_VERSION (Debian package, unpacked)" ;;
        perfdhcp) echo "perfdhcp $(perfdhcp -v 2>&1 | awk '/VERSION/ { print $2 }')" ;;
        atftp) atftp -V 2>&1 | head -1 ;;
    esac
}

write_report() {
    local kea_dhcp rb_dhcp rb_rss_mb dhcp_goal win_goal lean_win_goal
    kea_dhcp=$(val kea.dhcp); rb_dhcp=$(val rackboot.dhcp)
    dhcp_goal="pending"; is_num "$kea_dhcp" && dhcp_goal=$((kea_dhcp * 2))
    win_goal="pending"; is_num "$(val atftpd.win16)" && win_goal=$(awk -v a="$(val atftpd.win16)" 'BEGIN { printf "%.1f", a * 2 }')
    lean_win_goal="pending"; is_num "$(val atftpd.lean_win16)" && lean_win_goal=$(awk -v a="$(val atftpd.lean_win16)" 'BEGIN { printf "%.1f", a * 2 }')
    rb_rss_mb="pending"
    if [ -n "$RACKBOOT_RSS_KB" ]; then rb_rss_mb=$(awk -v k="$RACKBOOT_RSS_KB" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }')
    elif [ "$RACKBOOT_OK" = 1 ]; then rb_rss_mb="not measured"; fi

    cat <<EOF
# Benchmarks

Written by \`bench/run\` (run it as root: \`sudo bench/run\`; it installs what it needs,
builds rackboot in release mode, and its measurements took ${ELAPSED} s here). Do not
edit by hand: rerun the bench.

- Command: \`$CMDLINE\` (as root, from the repository; rackboot and tftp-get built with \`cargo build --release -p rackboot -p rackboot-bench\`)
- Date: $(date -u '+%Y-%m-%d %H:%M UTC')
- Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")
- Network: a veth pair between two network namespaces (server $SRV_IP/$PREFIX, client $CLI_IP/$PREFIX), MTU 1500
- rackboot: $(version_of rackboot)
- Servers: $(version_of kea), $(version_of dnsmasq), $(version_of tftpd-hpa), $(version_of atftpd)
- Clients: $(version_of perfdhcp), $(version_of atftp), tftp-get (crate \`rackboot-bench\`, built with rackboot)
- Load average (1, 5, 15 min) when the run started: $LOAD_START; when it ended: $LOAD_END

The machine is small and may be shared with other work (the load average shows how
much; bench/run runs its servers and clients at nice -10 to be disturbed less), so
read the figures as ratios between servers measured minutes apart in the same run,
not as absolute capacity; differences under ~20% between single figures are within
the noise seen from run to run here. Every figure is a median of several runs, with
their range.

Other work on the machine while this ran:
- DHCP part: $(load_summary dhcp)
- TFTP part: $(load_summary tftp)

## Targets

| target | measured | result |
|---|---|---|
| DHCP ≥ 2× Kea, leases durable | rackboot $rb_dhcp vs Kea $kea_dhcp exchanges/s (goal ≥ $dhcp_goal); server CPU per exchange rackboot $(val rackboot.dhcp_srv_us) vs Kea $(val kea.dhcp_srv_us) µs | $(dhcp_target_verdict "$dhcp_goal") |
| the DHCP target where perfdhcp sets the rate: server CPU per exchange at the same $DHCP_SAME_RATE/s ≤ ½ Kea's | rackboot $(val rackboot.dhcp_same_us) vs Kea $(val kea.dhcp_same_us) µs$(same_ratio) | $(verdict "$(val rackboot.dhcp_same_us)" "<=" "$(half "$(val kea.dhcp_same_us)")") |
| TFTP windowed (windowsize 16) ≥ 2× atftpd, atftp client | rackboot $(val rackboot.win16) vs atftpd $(val atftpd.win16) MiB/s (goal ≥ $win_goal) | $(verdict "$(val rackboot.win16)" ">=" "$win_goal") |
| the same with the lean client (tftp-get) | rackboot $(val rackboot.lean_win16) vs atftpd $(val atftpd.lean_win16) MiB/s (goal ≥ $lean_win_goal) | $(verdict "$(val rackboot.lean_win16)" ">=" "$lean_win_goal") |
| TFTP lock-step (blksize 1468) no slower than tftpd-hpa, atftp client | rackboot $(val rackboot.lock1468) vs tftpd-hpa $(val tftpd-hpa.lock1468) MiB/s | $(verdict "$(val rackboot.lock1468)" ">=" "$(val tftpd-hpa.lock1468)") |
| the same with the lean client (tftp-get) | rackboot $(val rackboot.lean_lock1468) vs tftpd-hpa $(val tftpd-hpa.lean_lock1468) MiB/s | $(verdict "$(val rackboot.lean_lock1468)" ">=" "$(val tftpd-hpa.lean_lock1468)") |
| TFTP lock-step (blksize 512) no slower than tftpd-hpa, atftp client | rackboot $(val rackboot.lock512) vs tftpd-hpa $(val tftpd-hpa.lock512) MiB/s | $(verdict "$(val rackboot.lock512)" ">=" "$(val tftpd-hpa.lock512)") |
| the same with the lean client (tftp-get) | rackboot $(val rackboot.lean_lock512) vs tftpd-hpa $(val tftpd-hpa.lean_lock512) MiB/s | $(verdict "$(val rackboot.lean_lock512)" ">=" "$(val tftpd-hpa.lean_lock512)") |
| idle RSS < 30 MB | rackboot $rb_rss_mb MB | $(verdict "$rb_rss_mb" "<" 30) |

## DHCP: 4-way exchanges per second with < 1% drops

| server | lease storage | exchanges/s (median round) | dropped at that rate | of which perfdhcp's socket buffer dropped | requested rate | each round | server CPU per exchange | perfdhcp CPU per exchange | lowest failing rate: lost exchanges perfdhcp's buffer dropped |
|---|---|---|---|---|---|---|---|---|---|
| rackboot | SQLite (WAL, \`synchronous=NORMAL\`) in the state directory; each lease committed before its ACK | $rb_dhcp | $(pct rackboot.dhcp_drop) | $(val rackboot.dhcp_ovf) replies | $(val rackboot.dhcp_rate) | $(val rackboot.dhcp_rounds) | $(val rackboot.dhcp_srv_us) µs | $(val rackboot.dhcp_perf_us) µs | $(fail_limit rackboot) |
| Kea | memfile CSV, \`persist: true\`, \`lfc-interval: 0\`; appended before the ACK | $kea_dhcp | $(pct kea.dhcp_drop) | $(val kea.dhcp_ovf) replies | $(val kea.dhcp_rate) | $(val kea.dhcp_rounds) | $(val kea.dhcp_srv_us) µs | $(val kea.dhcp_perf_us) µs | $(fail_limit kea) |
| dnsmasq | lease file in a temporary directory | $(val dnsmasq.dhcp) | $(pct dnsmasq.dhcp_drop) | $(val dnsmasq.dhcp_ovf) replies | $(val dnsmasq.dhcp_rate) | $(val dnsmasq.dhcp_rounds) | $(val dnsmasq.dhcp_srv_us) µs | $(val dnsmasq.dhcp_perf_us) µs | $(fail_limit dnsmasq) |

Method: each server runs alone in the server namespace with one /$PREFIX pool
($POOL_START - $POOL_END, more addresses than clients) and its lease storage on disk.
perfdhcp runs in the client namespace:
\`perfdhcp -4 -l <veth> -r RATE -p SECS -W 200000 -R $DHCP_CLIENTS -s 7 $SRV_IP\`
($DHCP_CLIENTS simulated clients, full DISCOVER-OFFER-REQUEST-ACK exchanges, perfdhcp acting
as a relay with giaddr $CLI_IP). A rate passes when fewer than $DHCP_MAX_DROP_PCT% of the
DISCOVERs sent end without an ACK and perfdhcp achieved at least $DHCP_MIN_ACHIEVED_PCT% of the
rate it asked for; a rate that fails is run once more before it counts as failed (one
busy second on a shared machine should not decide it). The search starts at $DHCP_START_RATE/s, doubles until a ${DHCP_PROBE_SECS}-second probe fails
(at most $DHCP_MAX_RATE/s), then bisects until the step is at most 1/8 of the rate; the best passing rate is
confirmed with one ${DHCP_CONFIRM_SECS}-second run (stepping down 10% while that fails, at most 6 times), and the table
shows the exchanges completed (ACKs received) per second of that run; \`-W\` lets
perfdhcp wait 200 ms after the last DISCOVER for replies still on their way, so an
ACK that waits milliseconds for its group commit is not counted as lost. rackboot and Kea are searched
$DHCP_ROUNDS times, alternately, each time from a fresh lease store; the table gives the
median round (all rounds are listed; a round whose confirmation failed counts as 0); dnsmasq
once. The CPU columns are the CPU time (user + system, all threads) the server and perfdhcp
used during that confirming run, divided by the exchanges completed: both share the
machine's $(nproc) CPUs, so together they bound the rate any server can show here. The last
column looks at the lowest rate that failed in the median round: of the exchanges lost
there, the share that were replies perfdhcp's own socket buffer dropped (UDP
RcvbufErrors in the client namespace). Near 100%, the server answered and the load
generator could not keep up: that rate measures perfdhcp on this machine, not the
server.

Before each search the same server, started afresh, is driven at one rate for all,
$DHCP_SAME_RATE/s for ${DHCP_SAME_SECS} s, and its CPU per exchange measured (median of the rounds; each round:
rackboot $(val rackboot.dhcp_same_each), Kea $(val kea.dhcp_same_each) µs). At its own
highest rate each server shares the $(nproc) CPUs with a perfdhcp working at a different pace,
so this is the figure that compares what the servers cost per exchange. dnsmasq runs with \`--no-ping\`
(no ICMP probe before an offer) and \`--dhcp-lease-max=100000\`.

## TFTP

| server | lock-step, blksize 512 | lock-step, blksize 1468 | windowsize 16, blksize 1468 | $TFTP_CLIENTS concurrent ${TFTP_SMALL_BYTES}-byte fetches, $TFTP_CLIENTS addresses | the same, one address (atftp) |
|---|---|---|---|---|---|
EOF
    local s
    for s in rackboot tftpd-hpa atftpd; do
        local conc conc1
        conc=$(val "$s.conc_secs"); conc1=$(val "$s.conc1_secs")
        is_num "$conc" && conc="$conc s, $(val "$s.conc_ok")/$TFTP_CLIENTS complete"
        is_num "$conc1" && conc1="$conc1 s, $(val "$s.conc1_ok")/$TFTP_CLIENTS complete"
        echo "| $s | $(spread "$s.lock512") | $(spread "$s.lock1468") | $(spread "$s.win16") | $conc | $conc1 |"
    done
    cat <<EOF

The same downloads with the lean client, tftp-get (crate \`rackboot-bench\`):

| server | lock-step, blksize 512 | lock-step, blksize 1468 | windowsize 16, blksize 1468 |
|---|---|---|---|
EOF
    for s in rackboot tftpd-hpa atftpd; do
        echo "| $s | $(spread "$s.lean_lock512") | $(spread "$s.lean_lock1468") | $(spread "$s.lean_win16") |"
    done
    cat <<EOF

CPU seconds (user + system, median of the runs) that one ${TFTP_BIG_MIB} MiB download cost the server
and the client; "ceiling" is the fastest the windowed download could be if the
server cost nothing, since the client works while the server waits for its ACK and the other
way round (${TFTP_BIG_MIB} MiB / the client's CPU seconds):

| server | atftp, lock-step 1468: server / client CPU s | atftp, windowed: server / client CPU s | atftp's ceiling | tftp-get, windowed: server / client CPU s | tftp-get's ceiling |
|---|---|---|---|---|---|
EOF
    for s in rackboot tftpd-hpa atftpd; do
        echo "| $s | ${R[$s.lock1468.scpu]:-n/a} / ${R[$s.lock1468.ccpu]:-n/a} | ${R[$s.win16.scpu]:-n/a} / ${R[$s.win16.ccpu]:-n/a} | $(client_ceiling "$s.win16") | ${R[$s.lean_win16.scpu]:-n/a} / ${R[$s.lean_win16.ccpu]:-n/a} | $(client_ceiling "$s.lean_win16") |"
    done
    cat <<EOF

Method: a ${TFTP_BIG_MIB} MiB random file is fetched with the atftp client in the client namespace,
\`atftp [--option "blksize 1468"] [--option "windowsize 16"] -g -r big.bin -l FILE $SRV_IP\`,
into memory (/dev/shm) and compared with the original; a figure is the median of $TFTP_REPEAT run(s)
(their range in brackets; a failed run counts as 0), ${TFTP_BIG_MIB} MiB divided by the wall time of the client.
The lean client, \`tftp-get $SRV_IP big.bin [--blksize 1468] [--windowsize 16]\`, takes every
datagram already queued with one \`recvmmsg\` call, keeps the file in memory (written out and
compared after the clock stops) and times itself from its request to its last ACK: the
atftp client alone costs about as much CPU per windowed download as a fast server, which
caps what atftp can show. tftpd-hpa runs as
\`in.tftpd -L -u root -s DIR -a $SRV_IP:69\`; atftpd (it conflicts with tftpd-hpa as a Debian
package, so bench/run unpacks it under bench/.cache) as
\`atftpd --daemon --no-fork --maxthread 200 DIR\`. tftpd-hpa does not implement windowsize
(RFC 7440) and answers lock-step, so its windowed figure is its lock-step speed.
The concurrency test is what a rack powering on at once looks like: $TFTP_CLIENTS clients,
each from its own address ($SWARM_NET.1-$TFTP_CLIENTS on the client veth), fetch a
${TFTP_SMALL_BYTES}-byte file (the size of pxelinux.0 / undionly.kpxe) at the same moment with
blksize 1468, a 1-second retransmit and a 30-second limit (\`bench/tftp_swarm.py\`, one
process, so client start-up cost does not count); the table gives the wall time until the
last one finished and how many received the whole file. The last column starts
$TFTP_CLIENTS atftp processes at once from the client namespace's single address instead
(process start-up included; atftp retransmits after 5 s). rackboot caps transfers per
client address (\`max_transfers_per_client\`, default 64), so there the requests above
the cap are refused until the client retransmits: a protection, not a throughput limit.

## What limits these figures on this machine

- **CPU placement decides TFTP throughput.** A TFTP transfer is a ping-pong (each block,
  or each window, waits for the client's ACK), so it is bound by how fast each side is
  woken, not by CPU. On this virtual machine a wake-up across vCPUs is expensive.
  Measured with tftp-get and \`taskset\` on 2026-12-02 (lock-step, blksize 512 / 1468):
  client and server on one vCPU, rackboot 70 / 170 MiB/s and tftpd-hpa 74 / 181 MiB/s;
  on different vCPUs, 4.3 / 12.6 and 4.3 / 12.4; left to the scheduler, 8-10 / 24-32
  and 8-10 / 23-24. The server is still running when its DATA wakes the client, so the
  scheduler wakes the client on the idle vCPU, and most blocks cross vCPUs whichever
  server it is. rackboot moves a transfer's thread to the CPU that receives the client's
  packets (\`SO_INCOMING_CPU\`), which follows the client but cannot keep it there; the
  lock-step comparison with tftpd-hpa is therefore within the noise either way.
- **perfdhcp shares the CPUs with the server.** The DHCP table gives the CPU time per
  exchange of the server and of perfdhcp: any server's rate here is bounded by
  $(nproc) CPUs divided by the sum of the two (less whatever else runs), so a server can
  only show twice Kea's rate if it uses much less CPU per exchange than Kea *and*
  perfdhcp is cheap enough to drive it. perfdhcp drops replies itself when its receive
  buffer (kernel default, about 150 datagrams) overflows while it is not scheduled; the
  table counts those, and its last column shows how much of what was lost at the lowest
  failing rate they were. When that is most of it for Kea, Kea's figure is perfdhcp's
  ceiling on this machine and a 2x ratio cannot show here (the target row says so).
  rackboot's group commit used to release hundreds of ACKs at once
  (up to 447 measured), which overflowed it; ACKs now leave in bursts of 32, 1 ms apart.
- **What rackboot's DHCP CPU goes to.** Measured with \`bench/dhcp-profile\` at 5,000 and
  8,000 exchanges/s on 2026-12-02 (per exchange): the DHCP thread about 30 µs (parsing,
  the lease engine, encoding, and the kernel's send path, which on veth also delivers
  to perfdhcp), SQLite's worker 11-14 µs (one lease row and two event rows: the boot
  timeline, which Kea does not keep), the event task 5-7 µs. Under load the DHCP
  loop takes requests in batches (1 ms moderation pauses; 0.2 context switches per
  exchange, against 0.5-1.5 for Kea) and sends each batch's replies with one
  \`sendmmsg\`. Both servers cost more per exchange once their stores have grown: the
  same-rate run measured after a rate search instead of before gave rackboot 65-68 µs
  and Kea 111-120 µs.
- **Overload.** rackboot drops requests that waited in its socket queue for more than a
  second (metric \`rackboot_dhcp_dropped_total{reason="stale"}\`) instead of answering a
  backlog whose replies would all be late; before this, a rate search that had probed
  far above capacity found lower rates afterwards.

## Idle memory

| server | VmRSS after startup |
|---|---|
| rackboot (DHCP, TFTP and HTTP on) | $rb_rss_mb MB |

Method: \`rackboot serve\` is started with DHCP, TFTP, boot HTTP and the API on, and
VmRSS is read from /proc/PID/status 3 seconds after it listens on UDP 67 and 69
(MB = 10^6 bytes).
EOF
}
