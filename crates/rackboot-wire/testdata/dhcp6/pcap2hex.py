#!/usr/bin/env python3
"""Writes the UDP payload of every DHCPv6 packet in a pcap (Ethernet, IPv6, UDP 546/547)
to NN-FROM-TYPE.hex beside this script, 32 bytes a line. FROM is the sending program
(guessed from the order of the capture.sh runs) or 'server'."""
import struct, sys, os
out = os.path.dirname(os.path.abspath(__file__))
data = open(sys.argv[1], "rb").read()
types = {1: "solicit", 2: "advertise", 3: "request", 4: "confirm", 5: "renew", 6: "rebind",
         7: "reply", 8: "release", 9: "decline", 11: "information-request", 12: "relay-forw",
         13: "relay-repl"}
pos, n = 24, 0
while pos + 16 <= len(data):
    _, _, incl, _ = struct.unpack("<IIII", data[pos:pos + 16])
    frame = data[pos + 16:pos + 16 + incl]
    pos += 16 + incl
    if struct.unpack("!H", frame[12:14])[0] != 0x86DD or frame[14 + 6] != 17:
        continue
    src = frame[14 + 8:14 + 24]
    udp = frame[14 + 40:]
    sport, dport, ulen = struct.unpack("!HHH", udp[:6])
    payload = udp[8:ulen]
    n += 1
    who = "server" if sport == 547 else "client"
    name = f"{n:02d}-{who}-{types.get(payload[0], 'type%d' % payload[0])}.hex"
    with open(os.path.join(out, name), "w") as f:
        h = payload.hex()
        f.write("\n".join(h[i:i + 64] for i in range(0, len(h), 64)) + "\n")
    print(name, len(payload), "bytes from", src.hex())
