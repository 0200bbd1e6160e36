#!/bin/bash
# Real-firmware check of ProxyDHCP: OVMF (EDK2 UEFI PXE) on a bridge with dnsmasq
# as the site's ordinary DHCP server (addresses only, no boot options) and the
# rackboot DHCP example in proxy mode plus tftpd-hpa in a second namespace.
# Passes when EDK2 downloads ipxe.efi from the proxy's address and the chainloaded
# iPXE gets its script URL from the proxy.
# Usage: scripts/ovmf-proxy-boot.sh PATH/TO/dhcp_server   (root; private netns only)
set -euo pipefail
server_bin=$(readlink -f "$1")
ns=rbt-pxy-$$
prox=rbt-pxy-$$-p
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$ns" 2>/dev/null || true
  ip netns del "$prox" 2>/dev/null || true
  if [ "${KEEP:-}" != 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
ip netns add "$ns"
ip netns add "$prox"
ip -n "$ns" link set lo up
ip -n "$prox" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add 10.77.0.1/24 dev br0
ip -n "$ns" link set br0 up
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" link set tap0 master br0
ip -n "$ns" link set tap0 up
ip -n "$ns" link add vpx type veth peer name eth0 netns "$prox"
ip -n "$ns" link set vpx master br0
ip -n "$ns" link set vpx up
ip -n "$prox" addr add 10.77.0.2/24 dev eth0
ip -n "$prox" link set eth0 up
mkdir -p "$work/tftp"
cp /usr/lib/ipxe/ipxe.efi "$work/tftp/"
echo 'mode = "proxy"' > "$work/dhcp.toml"
ip netns exec "$ns" dnsmasq --no-daemon --port=0 --interface=br0 --bind-interfaces \
  --dhcp-range=10.77.0.100,10.77.0.150,1h --log-dhcp 2>"$work/dnsmasq.log" &
pids+=($!)
ip netns exec "$prox" in.tftpd -L -s "$work/tftp" -a 10.77.0.2:69 2>"$work/tftpd.log" &
pids+=($!)
RUST_LOG=rackboot_dhcp=debug ip netns exec "$prox" "$server_bin" eth0 10.77.0.2 "$work/dhcp.toml" >"$work/proxy.log" 2>&1 &
pids+=($!)
ip netns exec "$ns" tcpdump -i br0 -U -w "$work/cap.pcap" udp 2>/dev/null &
pids+=($!)
sleep 1
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
# romfile= : no iPXE option ROM, so OVMF's own virtio driver and EDK2 PXE do the first DHCP.
ip netns exec "$ns" qemu-system-x86_64 -accel tcg -m 512 -nographic -nodefaults \
  -serial file:"$work/serial.log" \
  -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
  -drive if=pflash,format=raw,file="$work/vars.fd" -boot n \
  -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
  -device virtio-net-pci,netdev=n0,mac=52:54:00:cc:00:03,romfile= &
pids+=($!)
ok=0
for _ in $(seq 1 "${WAIT_SECONDS:-150}"); do
  sleep 1
  # Read into a file first: `tcpdump | grep -q` would fail under pipefail (SIGPIPE).
  tcpdump -r "$work/cap.pcap" -n > "$work/cap.txt" 2>/dev/null || true
  if grep -q '10.77.0.2.67 > .*length' "$work/cap.txt" &&
     grep -q '> 10.77.0.2.69:' "$work/cap.txt" &&
     grep -aq 'boot/ipxe' "$work/cap.pcap"; then
    ok=1
    break
  fi
done
echo "--- serial (tail)"
tr -d '\r' < "$work/serial.log" | grep -a -v '^$' | tail -12 || true
echo "--- proxy log (tail)"
tail -5 "$work/proxy.log" || true
echo "--- DHCP/TFTP packets"
grep -E '\.(67|68|69|4011)[: ]' "$work/cap.txt" | head -30 || true
if [ "$ok" = 1 ]; then
  echo "PASS: EDK2 took the ProxyDHCP offer, fetched ipxe.efi over TFTP from the proxy, iPXE got its script URL"
else
  echo FAIL
  exit 1
fi
