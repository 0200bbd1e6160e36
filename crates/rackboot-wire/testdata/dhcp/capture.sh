#!/bin/bash
# Captures real DHCP requests from QEMU firmware into hex files (one UDP payload per file).
# Usage: capture.sh NAME bios|uefi UUID MAC   (run as root; uses a private netns only)
# A dnsmasq in the namespace answers so firmware proceeds to chainload iPXE
# (BIOS: undionly.kpxe, UEFI: ipxe.efi), whose own DHCP requests are captured too.
set -euo pipefail
name=$1 mode=$2 uuid=$3 mac=$4
ns=rbt-cap-$$
work=$(mktemp -d)
cleanup() {
  [ -n "${qpid:-}" ] && kill "$qpid" 2>/dev/null || true
  [ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null || true
  [ -n "${tpid:-}" ] && kill "$tpid" 2>/dev/null || true
  sleep 0.5
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add 10.77.0.1/24 dev br0
ip -n "$ns" link set br0 up
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" link set tap0 master br0
ip -n "$ns" link set tap0 up
mkdir -p "$work/tftp"
cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi "$work/tftp/"
ip netns exec "$ns" tcpdump -i br0 -U -w "$work/cap.pcap" udp port 67 or udp port 68 or udp port 4011 2>/dev/null &
tpid=$!
ip netns exec "$ns" dnsmasq --no-daemon --port=0 --interface=br0 --bind-interfaces \
  --dhcp-range=10.77.0.100,10.77.0.150,1h --enable-tftp --tftp-root="$work/tftp" \
  --dhcp-match=set:ipxe,175 --dhcp-vendorclass=set:efi64,PXEClient:Arch:00007 \
  --dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe --dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi \
  --dhcp-boot=tag:ipxe,http://10.77.0.1/nothing.ipxe --log-dhcp 2>"$work/dnsmasq.log" &
dpid=$!
sleep 1
fw=()
if [ "$mode" = uefi ]; then
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
  fw=(-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
      -drive if=pflash,format=raw,file="$work/vars.fd")
fi
ip netns exec "$ns" qemu-system-x86_64 -accel tcg -m 512 -nographic -nodefaults \
  -serial file:"$work/serial.log" -uuid "$uuid" "${fw[@]}" -boot n \
  -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
  -device virtio-net-pci,netdev=n0,mac="$mac" &
qpid=$!
sleep "${CAPTURE_SECONDS:-60}"
kill "$qpid"; qpid=
sleep 1
kill "$tpid"; tpid=
sleep 0.5
python3 "$(dirname "$0")/pcap2hex.py" "$work/cap.pcap" "$name"
grep -E 'vendor class|user class|tags|sent size' "$work/dnsmasq.log" | head -40 || true
