#!/usr/bin/env python3
"""Many TFTP clients at once, each from its own source address, as a rack of PXE
machines would be: one process, one UDP socket per client, RFC 1350 lock-step with
the blksize option (RFC 2348). Used by bench/run.

    tftp_swarm.py SERVER FILE EXPECTED_PATH SOURCE_ADDR... [--blksize N] [--deadline S]

Prints one line: "<wall seconds until the last client finished> <clients complete>".
A client is complete when the bytes it received equal EXPECTED_PATH. Every client
gives up at the deadline; a lost packet is retransmitted after 1 s (at most 5 times).
"""
import argparse
import selectors
import socket
import struct
import time

RRQ, DATA, ACK, ERROR, OACK = 1, 3, 4, 5, 6
RETRANSMIT_SECS = 1.0
MAX_RETRIES = 5


class Client:
    def __init__(self, source, server, filename, blksize):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        self.server = (server, 69)
        self.peer = None  # the server's transfer port, learnt from its first answer
        self.blksize = 512
        self.want_blksize = blksize
        self.expected_block = 1
        self.data = bytearray()
        self.done = False
        self.failed = False
        self.last = struct.pack("!H", RRQ) + filename.encode() + b"\0octet\0"
        if blksize != 512:
            self.last += b"blksize\0" + str(blksize).encode() + b"\0"
        self.retries = 0
        self.send(self.last)

    def send(self, packet):
        self.last = packet
        self.sent_at = time.monotonic()
        self.sock.sendto(packet, self.peer or self.server)

    def ack(self, block):
        self.send(struct.pack("!HH", ACK, block))

    def receive(self):
        try:
            packet, addr = self.sock.recvfrom(65536)
        except BlockingIOError:
            return
        if len(packet) < 4 or addr[0] != self.server[0]:
            return
        if self.peer is None:
            self.peer = addr
        elif addr != self.peer:
            return
        opcode = struct.unpack("!H", packet[:2])[0]
        if opcode == OACK:
            fields = packet[2:].split(b"\0")
            opts = dict(zip(fields[0::2], fields[1::2]))
            self.blksize = int(opts.get(b"blksize", b"512"))
            self.retries = 0
            self.ack(0)
        elif opcode == DATA:
            block = struct.unpack("!H", packet[2:4])[0]
            if block == self.expected_block & 0xFFFF:
                self.data += packet[4:]
                self.expected_block += 1
                self.retries = 0
                self.ack(block)
                if len(packet) - 4 < self.blksize:
                    self.done = True
            elif block == (self.expected_block - 1) & 0xFFFF:
                self.ack(block)  # our ACK was lost: repeat it
        elif opcode == ERROR:
            self.failed = True

    def tick(self, now):
        if now - self.sent_at >= RETRANSMIT_SECS:
            self.retries += 1
            if self.retries > MAX_RETRIES:
                self.failed = True
            else:
                self.send(self.last)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("file")
    ap.add_argument("expected")
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--blksize", type=int, default=1468)
    ap.add_argument("--deadline", type=float, default=30.0)
    args = ap.parse_args()
    expected = open(args.expected, "rb").read()

    start = time.monotonic()
    sel = selectors.DefaultSelector()
    clients = [Client(s, args.server, args.file, args.blksize) for s in args.sources]
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)
    running = set(clients)
    while running and time.monotonic() - start < args.deadline:
        for key, _ in sel.select(timeout=0.1):
            key.data.receive()
        now = time.monotonic()
        for c in list(running):
            if c.done or c.failed:
                running.discard(c)
                sel.unregister(c.sock)
            else:
                c.tick(now)
    wall = time.monotonic() - start
    complete = sum(1 for c in clients if c.done and bytes(c.data) == expected)
    print(f"{wall:.3f} {complete}")


if __name__ == "__main__":
    main()
