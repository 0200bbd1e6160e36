#!/usr/bin/env python3
"""Turn a tcpdump capture (-i lo, Ethernet link type) of one BMC port into the text
format the tests read: one datagram per line, "C <hex>" console->BMC, "B <hex>" BMC->console.
Usage: pcap2hex.py CAPTURE.pcap BMC_PORT "comment" > NAME.txt"""
import struct, sys

path, bmc_port, comment = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(path, 'rb').read()
magic = struct.unpack('<I', data[:4])[0]
endian = '<' if magic in (0xa1b2c3d4, 0xa1b23c4d) else '>'
linktype = struct.unpack(endian + 'I', data[20:24])[0]
off = 24
print('# ' + comment)
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack(endian + 'IIII', data[off:off + 16])
    frame = data[off + 16:off + 16 + incl]
    off += 16 + incl
    l2 = 14 if linktype == 1 else (16 if linktype == 113 else 0)
    ip = frame[l2:]
    ihl = (ip[0] & 0x0f) * 4
    if ip[9] != 17:
        continue
    udp = ip[ihl:]
    sport, dport, ulen = struct.unpack('>HHH', udp[:6])
    payload = udp[8:ulen]
    print(('C ' if dport == bmc_port else 'B ') + payload.hex())
