#!/bin/bash
# Captures real DHCPv6 exchanges between real clients and Kea's kea-dhcp6 into hex
# files (one UDP payload per file), for rackboot-wire's dhcp6 codec tests.
# Usage (root): ./capture.sh    Uses two private network namespaces joined by a veth
# pair and removes them on exit; every client run is bounded by `timeout`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ns_s=rbt-cap6s-$$ ns_c=rbt-cap6c-$$
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$ns_s" 2>/dev/null || true
  ip netns del "$ns_c" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for ns in "$ns_s" "$ns_c"; do
  ip netns add "$ns"; ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip -n "$ns_s" link add veth-s type veth peer name veth-c netns "$ns_c"
ip -n "$ns_c" link set veth-c address 52:54:00:66:00:01
ip -n "$ns_s" addr add 2001:db8:77::1/64 dev veth-s
ip -n "$ns_s" link set veth-s up; ip -n "$ns_c" link set veth-c up
sleep 1
cat >"$work/kea.json" <<JSON
{ "Dhcp6": {
  "interfaces-config": { "interfaces": [ "veth-s/2001:db8:77::1" ] },
  "lease-database": { "type": "memfile", "persist": false },
  "server-id": { "type": "LL", "persist": false },
  "renew-timer": 3, "rebind-timer": 5, "preferred-lifetime": 8, "valid-lifetime": 10,
  "subnet6": [ { "id": 1, "subnet": "2001:db8:77::/64", "interface": "veth-s", "rapid-commit": true,
     "pools": [ { "pool": "2001:db8:77::100-2001:db8:77::1ff" } ],
     "option-data": [ { "name": "bootfile-url", "data": "tftp://[2001:db8:77::1]/snponly.efi" } ] } ],
  "loggers": [ { "name": "kea-dhcp6", "output_options": [ { "output": "$work/kea.log" } ], "severity": "INFO" } ]
} }
JSON
ip netns exec "$ns_s" tcpdump -i veth-s -U -w "$work/cap.pcap" udp port 546 or udp port 547 2>/dev/null &
pids+=($!)
KEA_PIDFILE_DIR=$work KEA_LOCKFILE_DIR=$work ip netns exec "$ns_s" kea-dhcp6 -c "$work/kea.json" >"$work/kea.out" 2>&1 &
pids+=($!)
sleep 2
c() { ip netns exec "$ns_c" "$@"; }
# dhclient -6: Solicit/Request, then Renew (renew timer 3 s) while it runs 7 s.
c timeout 7 dhclient -6 -d -v -lf "$work/dhclient.leases" -pf "$work/dhclient.pid" -sf /bin/true veth-c >"$work/dhclient1.log" 2>&1 || true
# A second start with the lease on file: Confirm, then the same address again.
c timeout 4 dhclient -6 -d -v -lf "$work/dhclient.leases" -pf "$work/dhclient.pid" -sf /bin/true veth-c >"$work/dhclient2.log" 2>&1 || true
# Release.
c timeout 5 dhclient -6 -r -v -lf "$work/dhclient.leases" -pf "$work/dhclient.pid" -sf /bin/true veth-c >"$work/dhclient3.log" 2>&1 || true
# Stateless: Information-request.
c timeout 4 dhclient -6 -S -1 -v -lf "$work/dhclient-s.leases" -pf "$work/dhclient.pid" -sf /bin/true veth-c >"$work/dhclient4.log" 2>&1 || true
# dhcpcd: DHCPv6 without waiting for a router advertisement, rapid commit asked for.
printf 'noipv6rs\nipv6only\nia_na 1\nnohook resolv.conf\nnooption domain_name_servers\n' >"$work/dhcpcd.conf"
c timeout 8 dhcpcd -6 -d -B -1 -t 6 -f "$work/dhcpcd.conf" veth-c >"$work/dhcpcd.log" 2>&1 || true
# perfdhcp -6: two 4-way exchanges, then one with rapid commit.
c timeout 5 perfdhcp -6 -l veth-c -r 1 -n 2 -R 2 >"$work/perf.log" 2>&1 || true
c timeout 5 perfdhcp -6 -l veth-c -r 1 -n 1 -i -c >"$work/perf2.log" 2>&1 || true
sleep 1
for f in "$work"/*.log "$work"/kea.out; do echo "== $f"; tail -n 5 "$f"; done >&2 || true
python3 "$here/pcap2hex.py" "$work/cap.pcap" "${1:-}"
