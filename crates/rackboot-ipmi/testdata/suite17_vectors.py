#!/usr/bin/env python3
"""Independent computation of the cipher suite 17 (RAKP-HMAC-SHA256, HMAC-SHA256-128,
AES-CBC-128) vectors frozen in tests/suite17_vectors.rs, straight from the IPMI v2.0
formulas (sections 13.31, 13.32, 13.28.4, 13.29) with Python's hmac/hashlib and the
`openssl enc` command for AES. Run: python3 testdata/suite17_vectors.py"""
import hashlib, hmac, struct, subprocess

def H(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()

kuid = b"password17"
kg = b"bmc-key-0123456789ab"  # a 20-byte BMC key for the two-key variant
uname = b"admin"
role = 0x14  # administrator | name-only lookup
sid_m = 0xA0A2A3A4  # remote console session id
sid_c = 0x00000182  # managed system (BMC) session id
rm = bytes(range(0x10, 0x20))
rc = bytes(range(0x20, 0x30))
guid = bytes.fromhex("a123456789abcdefa123456789abcdef")
le = lambda v: struct.pack("<I", v)
tail = bytes([role, len(uname)]) + uname

rakp2 = H(kuid, le(sid_m) + le(sid_c) + rm + rc + guid + tail)
rakp3 = H(kuid, rc + le(sid_m) + tail)
sik = H(kuid, rm + rc + tail)
sik_kg = H(kg, rm + rc + tail)
k1 = H(sik, b"\x01" * 20)
k2 = H(sik, b"\x02" * 20)
rakp4 = H(sik, rm + le(sid_c) + guid)[:16]
for n, v in [("rakp2", rakp2), ("rakp3", rakp3), ("sik", sik), ("sik_kg", sik_kg),
             ("k1", k1), ("k2", k2), ("rakp4_icv", rakp4)]:
    print(f"{n} = {v.hex()}")

# Authenticated, unencrypted RMCP+ packet carrying Get Chassis Status (rqSeq 5),
# session seq 7, to the BMC session: integrity pad 0xff to a multiple of 4, pad length,
# next header 0x07, HMAC-SHA256-128 with K1 over AuthType..NextHeader.
msg = bytes([0x20, 0x00 << 2])
msg += bytes([(-sum(msg)) & 0xff])
body = bytes([0x81, 5 << 2, 0x01])
msg += body + bytes([(-sum(body)) & 0xff])
sess = bytes([0x06, 0x40]) + le(sid_c) + le(7) + struct.pack("<H", len(msg)) + msg
pad = (4 - (len(sess) + 2) % 4) % 4
signed = sess + b"\xff" * pad + bytes([pad, 0x07])
pkt = bytes([0x06, 0x00, 0xff, 0x07]) + signed + H(k1, signed)[:16]
print(f"ipmi_msg = {msg.hex()}")
print(f"integrity_packet = {pkt.hex()}")

# AES-CBC-128 with K2[:16], IV 00..0f, of the same message plus the confidentiality
# trailer (pad bytes 1,2,3,... and the pad length) to a 16-byte multiple.
iv = bytes(range(16))
n = (16 - (len(msg) + 1) % 16) % 16
plain = msg + bytes(range(1, n + 1)) + bytes([n])
ct = subprocess.run(["openssl", "enc", "-aes-128-cbc", "-nopad", "-K", k2[:16].hex(),
                     "-iv", iv.hex()], input=plain, capture_output=True, check=True).stdout
print(f"encrypted_payload = {(iv + ct).hex()}")
