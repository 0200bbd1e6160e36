#!/bin/bash
# perfdhcp smoke run: the dhcp_server example (release) in one netns, perfdhcp in another,
# over a veth pair. Env: RATE, SECS, TARGET (empty = broadcast mode; default relayed to
# 10.99.0.1), WINDOW (commit_window_ms), PROFILE=1 (perf record the server), EXTRA.
# Prints perfdhcp figures, server CPU ticks, UDP counters of both sides (RcvbufErrors
# shows who dropped) and the lease states in SQLite. Not the benchmark; a sanity check.
set -u
s=rbt-perf-$$-s c=rbt-perf-$$-c
work=$(mktemp -d)
cleanup() { [ -n "${spid:-}" ] && kill $spid 2>/dev/null; sleep 0.5; ip netns del $s 2>/dev/null; ip netns del $c 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
ip netns add $s; ip netns add $c
ip -n $s link set lo up; ip -n $c link set lo up
ip -n $s link add vs type veth peer name vc netns $c
ip -n $s addr add 10.99.0.1/16 dev vs; ip -n $s link set vs up
ip -n $c addr add 10.99.0.254/16 dev vc; ip -n $c link set vc up
cat > $work/dhcp.toml <<T
commit_window_ms = ${WINDOW:-0}
[[subnets]]
cidr = "10.99.0.0/16"
ranges = ["10.99.1.0-10.99.255.250"]
lease_time_secs = 3600
T
ip netns exec $s ${SERVER_BIN:-$(dirname "$0")/../../../target/release/examples/dhcp_server} vs 10.99.0.1 $work/dhcp.toml "sqlite:$work/leases.db" > $work/server.log 2>&1 &
spid=$!
sleep 1
if [ -n "${PROFILE:-}" ]; then perf record -F 999 -g -p $spid -o /tmp/dhcp-perf.data -- sleep 6 >/dev/null 2>&1 & fi
ip netns exec $c timeout 60 perfdhcp -4 -l vc -r ${RATE:-2000} -R 50000 -p ${SECS:-5} ${EXTRA:-} ${TARGET-10.99.0.1} 2>&1 | grep -E "sent packets|received packets|drops ratio|rate|min delay|avg delay|max delay|Running|exchanges" | head -30
echo "server cpu ticks (utime stime, 100/s): $(awk '{print $14, $15}' /proc/$spid/stat)"; echo "--- server udp:"; ip netns exec $s grep Udp: /proc/net/snmp; echo "--- client udp:"; ip netns exec $c grep Udp: /proc/net/snmp
echo "--- leases in store:"; sqlite3 $work/leases.db "select state, count(*) from leases group by state" 2>/dev/null || echo "(no sqlite3 cli)"
grep -c "send failed" $work/server.log; grep -m3 "WARN\|ERROR" $work/server.log
