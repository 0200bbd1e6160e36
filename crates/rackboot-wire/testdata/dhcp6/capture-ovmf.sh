#!/bin/bash
# Captures the DHCPv6 Solicits of OVMF's IPv6 PXE (UefiPxeBcDxe over the virtio NIC)
# into hex files. No DHCP server runs, so OVMF gives up on PXEv4 and tries PXEv6.
# Usage (root): ./capture-ovmf.sh   (private netns, removed on exit; QEMU -accel tcg,
# killed after CAPTURE_SECONDS, default 150).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ns=rbt-cap6q-$$
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"; ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add 2001:db8:77::1/64 dev br0
ip -n "$ns" link set br0 up
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" link set tap0 master br0
ip -n "$ns" link set tap0 up
ip netns exec "$ns" tcpdump -i br0 -U -w "$work/cap.pcap" udp port 546 or udp port 547 2>/dev/null &
pids+=($!)
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
ip netns exec "$ns" qemu-system-x86_64 -accel tcg -m 512 -nographic -nodefaults \
  -serial file:"$work/serial.log" -uuid 87654321-4321-abcd-ef01-0a0b0c0d0e0f \
  -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
  -drive if=pflash,format=raw,file="$work/vars.fd" -boot n \
  -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
  -device virtio-net-pci,netdev=n0,mac=52:54:00:bb:00:02 &
pids+=($!)
sleep "${CAPTURE_SECONDS:-150}"
python3 "$here/pcap2hex.py" "$work/cap.pcap"
