#!/bin/sh
# Captures the first request packet each real TFTP client sends, as hex fixtures.
# Listens on 127.0.0.1 only; each client is killed after its first packet.
set -eu
cd "$(dirname "$0")"
capture() { # name, then the client command (PORT substituted)
  name=$1; shift
  python3 - "$name" "$@" <<'PY'
import socket, subprocess, sys
name, cmd = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); s.settimeout(5)
port = str(s.getsockname()[1])
p = subprocess.Popen([a.replace("PORT", port) for a in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    data, _ = s.recvfrom(70000)
finally:
    p.kill(); p.wait()
open(name + ".hex", "w").write(data.hex() + "\n")
PY
}
capture atftp-blksize-windowsize atftp --option "blksize 1468" --option "windowsize 16" -g -r boot/file.bin -l /dev/null 127.0.0.1 PORT
capture atftp-plain atftp -g -r pxelinux.0 -l /dev/null 127.0.0.1 PORT
capture curl-blksize curl -s --tftp-blksize 1468 -o /dev/null tftp://127.0.0.1:PORT/undionly.kpxe
capture curl-default curl -s -o /dev/null tftp://127.0.0.1:PORT/dir/file.txt
capture busybox-blksize busybox tftp -g -b 1468 -r ldlinux.c32 -l /dev/null 127.0.0.1 PORT
capture tftp-hpa-octet tftp 127.0.0.1 PORT -m binary -c get vmlinuz /dev/null
capture tftp-hpa-netascii tftp 127.0.0.1 PORT -m ascii -c get readme.txt /dev/null
