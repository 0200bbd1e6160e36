#!/usr/bin/env python3
"""Writes the UDP payload of every client->server DHCP packet in a pcap to NAME-NN-TYPE.hex."""
import struct, sys, os
path, name = sys.argv[1], sys.argv[2]
out = os.path.dirname(os.path.abspath(__file__))
data = open(path, "rb").read()
pos, n = 24, 0
types = {1: "discover", 3: "request", 4: "decline", 7: "release", 8: "inform"}
while pos + 16 <= len(data):
    _, _, incl, _ = struct.unpack("<IIII", data[pos:pos + 16])
    frame = data[pos + 16:pos + 16 + incl]
    pos += 16 + incl
    if struct.unpack("!H", frame[12:14])[0] != 0x0800:
        continue
    ihl = (frame[14] & 0xF) * 4
    udp = frame[14 + ihl:]
    sport, dport, ulen = struct.unpack("!HHH", udp[:6])
    if dport not in (67, 4011):
        continue
    payload = udp[8:ulen]
    opts, mtype = payload[240:], None
    i = 0
    while i < len(opts) and opts[i] != 255:
        if opts[i] == 0:
            i += 1; continue
        if opts[i] == 53:
            mtype = opts[i + 2]
        i += 2 + opts[i + 1]
    n += 1
    fname = f"{name}-{n:02d}-{types.get(mtype, 'type%s' % mtype)}.hex"
    with open(os.path.join(out, fname), "w") as f:
        h = payload.hex()
        f.write("\n".join(h[i:i + 64] for i in range(0, len(h), 64)) + "\n")
    print("wrote", fname, len(payload), "bytes, dport", dport)
