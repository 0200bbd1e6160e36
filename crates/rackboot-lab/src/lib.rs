//! The virtual rack: network namespace, bridge, QEMU machines with logged serial consoles.
