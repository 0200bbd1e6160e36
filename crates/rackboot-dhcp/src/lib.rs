//! DHCPv4 server (full and ProxyDHCP) for rackboot: lease engine and socket loop.
