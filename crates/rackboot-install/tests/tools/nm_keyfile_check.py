#!/usr/bin/python3
"""Reads NetworkManager keyfiles with libnm's own keyfile reader and verifies
each connection, as NetworkManager would when loading
/etc/NetworkManager/system-connections.

usage: nm_keyfile_check.py FILE...

For every file: parse (GLib.KeyFile), NM.keyfile_read (any reader warning is
an error), NM.Connection.verify(), and a round trip through NM.keyfile_write:
every key=value the file sets must come back with the same value, so a key
libnm does not know (ignored silently by the reader) or a value it reads
differently is an error. Prints one JSON object per connection (id, uuid,
type, interface-name, master, slave-type, mac-address, mtu, ipv4 method,
addresses, gateway, dns, dns-search, vlan id and parent, bond options) and
exits 1 on the first problem. Needs Debian's python3-gi and gir1.2-nm-1.0.
"""

import json
import os
import sys

import gi

gi.require_version("NM", "1.0")
from gi.repository import GLib, NM  # noqa: E402


def fail(path, message):
    print(f"{path}: {message}", file=sys.stderr)
    sys.exit(1)


def entries(keyfile):
    """(group, key) -> value, in the form rackboot writes: `address1=A/P,GW`
    (how libnm writes a gateway) split into address1 and gateway, MACs in
    lower case."""
    out = {}
    groups, _ = keyfile.get_groups()
    for group in groups:
        keys, _ = keyfile.get_keys(group)
        for key in keys:
            value = keyfile.get_value(group, key)
            if key.endswith("mac-address"):
                value = value.lower()  # libnm writes MACs in upper case
            if group in ("ipv4", "ipv6") and key == "address1" and "," in value:
                value, gateway = value.split(",", 1)
                out[(group, "gateway")] = gateway
            out[(group, key)] = value
    return out


def check(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    keyfile = GLib.KeyFile()
    try:
        keyfile.load_from_data(text, len(text.encode()), GLib.KeyFileFlags.NONE)
    except GLib.Error as e:
        fail(path, f"not a key file: {e.message}")

    warnings = []

    def handler(_keyfile, _connection, handler_type, handler_data, _user_data):
        if handler_type == NM.KeyfileHandlerType.WARN:
            warnings.append(handler_data.warn_get()[0] if hasattr(handler_data, "warn_get") else str(handler_data))
        return False

    try:
        connection = NM.keyfile_read(
            keyfile,
            os.path.dirname(os.path.abspath(path)),
            NM.KeyfileHandlerFlags.NONE,
            handler,
            None,
        )
    except GLib.Error as e:
        fail(path, f"libnm cannot read it: {e.message}")
    if warnings:
        fail(path, f"libnm warns: {warnings}")
    try:
        connection.verify()
    except GLib.Error as e:
        fail(path, f"verify: {e.message}")

    written = entries(NM.keyfile_write(connection, NM.KeyfileHandlerFlags.NONE, None, None))
    for (group, key), value in entries(keyfile).items():
        back = written.get((group, key))
        if back != value:
            fail(path, f"[{group}] {key}={value} reads back as {back!r} (unknown key or value?)")

    s_con = connection.get_setting_connection()
    summary = {
        "file": os.path.basename(path),
        "id": s_con.get_id(),
        "uuid": s_con.get_uuid(),
        "type": s_con.get_connection_type(),
        "interface-name": s_con.get_interface_name(),
        "master": s_con.get_master(),
        "slave-type": s_con.get_slave_type(),
    }
    wired = connection.get_setting_wired()
    if wired is not None:
        summary["mac-address"] = wired.get_mac_address()
        summary["mtu"] = wired.get_mtu()
    ip4 = connection.get_setting_ip4_config()
    if ip4 is not None:
        summary["ipv4"] = {
            "method": ip4.get_method(),
            "addresses": [
                f"{a.get_address()}/{a.get_prefix()}"
                for a in (ip4.get_address(i) for i in range(ip4.get_num_addresses()))
            ],
            "gateway": ip4.get_gateway(),
            "dns": [ip4.get_dns(i) for i in range(ip4.get_num_dns())],
            "dns-search": [ip4.get_dns_search(i) for i in range(ip4.get_num_dns_searches())],
        }
    vlan = connection.get_setting_vlan()
    if vlan is not None:
        summary["vlan"] = {"id": vlan.get_id(), "parent": vlan.get_parent()}
    bond = connection.get_setting_bond()
    if bond is not None:
        summary["bond"] = {
            name: bond.get_option_by_name(name)
            for name in (bond.get_option(i)[1] for i in range(bond.get_num_options()))
        }
    print(json.dumps(summary, sort_keys=True))


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    for path in sys.argv[1:]:
        check(path)


if __name__ == "__main__":
    main()
