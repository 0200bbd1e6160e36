#!/bin/bash
# Captures the TFTP requests (RRQ) and client ERRORs that real firmware sends, as hex
# fixtures: QEMU BIOS (iPXE ROM) loading pxelinux.0, then pxelinux loading
# ldlinux.c32 and probing pxelinux.cfg/*; QEMU UEFI (OVMF) loading ipxe.efi.
# Usage: capture-firmware.sh bios|uefi   (root; everything stays in a private netns)
set -euo pipefail
mode=$1
ns=rbt-tftpcap-$$
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
cp /usr/lib/PXELINUX/pxelinux.0 /usr/lib/syslinux/modules/bios/ldlinux.c32 /usr/lib/ipxe/ipxe.efi "$work/tftp/"
ip netns exec "$ns" tcpdump -i br0 -U -w "$work/cap.pcap" udp and not port 67 and not port 68 2>/dev/null &
tpid=$!
ip netns exec "$ns" dnsmasq --no-daemon --port=0 --interface=br0 --bind-interfaces \
  --dhcp-range=10.77.0.100,10.77.0.150,1h --enable-tftp --tftp-root="$work/tftp" \
  --dhcp-vendorclass=set:efi64,PXEClient:Arch:00007 \
  --dhcp-boot=tag:!efi64,pxelinux.0 --dhcp-boot=tag:efi64,ipxe.efi 2>"$work/dnsmasq.log" &
dpid=$!
sleep 1
fw=()
if [ "$mode" = uefi ]; then
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
  fw=(-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
      -drive if=pflash,format=raw,file="$work/vars.fd")
fi
ip netns exec "$ns" qemu-system-x86_64 -accel tcg -m 512 -nographic -nodefaults \
  -serial file:"$work/serial.log" -uuid 8f3e1a52-0c4b-4e55-9d1e-2b7c6a9f0d31 "${fw[@]}" -boot n \
  -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
  -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 &
qpid=$!
sleep "${CAPTURE_SECONDS:-60}"
kill "$qpid"; qpid=
sleep 1
kill "$tpid"; tpid=
sleep 0.5
python3 - "$work/cap.pcap" "$(dirname "$0")" "$mode" <<'PY'
import struct, sys, os
path, out, mode = sys.argv[1:]
data = open(path, "rb").read()
pos, n = 24, 0
while pos + 16 <= len(data):
    _, _, incl, _ = struct.unpack("<IIII", data[pos:pos + 16])
    frame = data[pos + 16:pos + 16 + incl]
    pos += 16 + incl
    if struct.unpack("!H", frame[12:14])[0] != 0x0800:
        continue
    ihl = (frame[14] & 0xF) * 4
    if frame[14 + 16:14 + 20] != bytes([10, 77, 0, 1]):
        continue  # only client -> server
    udp = frame[14 + ihl:]
    ulen = struct.unpack("!H", udp[4:6])[0]
    payload = udp[8:ulen]
    op = struct.unpack("!H", payload[:2])[0]
    if op == 1:
        kind = "rrq-" + payload[2:payload.index(0, 2)].decode().replace("/", "_")
    elif op == 5:
        kind = "error%d" % struct.unpack("!H", payload[2:4])[0]
    else:
        continue
    n += 1
    fname = f"{mode}-{n:02d}-{kind}.hex"
    open(os.path.join(out, fname), "w").write(payload.hex() + "\n")
    print("wrote", fname, len(payload), "bytes")
PY
