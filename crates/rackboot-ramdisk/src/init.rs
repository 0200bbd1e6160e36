//! The RAM-disk's /init and the udhcpc event script, as busybox `sh` scripts.
//!
//! /init runs as PID 1 and must never exit (the kernel panics if it does): it mounts the API
//! filesystems, loads drivers for the hardware it finds ("coldplug"), gets an address by DHCP
//! and keeps `rackboot-agent` running.

/// Where the udhcpc event script is installed.
pub const UDHCPC_SCRIPT_PATH: &str = "etc/rackboot/udhcpc.script";

/// Where /init installs the agent.
pub const AGENT_PATH: &str = "bin/rackboot-agent";

/// Every console line of /init starts with this.
pub const LOG_PREFIX: &str = "rackboot-ramdisk:";

/// The line /init prints once a NIC has a lease: `rackboot-ramdisk: network up on IFACE ADDR`.
pub const NETWORK_UP: &str = "rackboot-ramdisk: network up on ";

/// Modules /init loads whether or not coldplug asked for them: RAID and filesystems are needed
/// for what is on the disks, not for the devices themselves, and sd_mod for disks that SCSI
/// hosts find asynchronously, after coldplug has run. They load in the background (about 4 s
/// under TCG, mostly raid6/xor benchmarks) while the network comes up; [`MODULES_LOADED`]
/// appears when they are in. crc32c_intel is left to coldplug (its CPU modalias), as it fails
/// on CPUs without SSE4.2.
pub const EXPLICIT_MODULES: &[&str] = &[
    "sd_mod",
    "md_mod",
    "raid0",
    "raid1",
    "raid10",
    "raid456",
    "linear",
    "dm_mod",
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "isofs",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "nls_iso8859_1",
    "crc32c_generic",
];

/// The file /init creates once [`EXPLICIT_MODULES`] are loaded (the agent may wait for it before
/// touching RAID or filesystems).
pub const MODULES_LOADED: &str = "/run/rackboot/modules-loaded";

/// /init. Functions first; the main sequence runs only as PID 1, so the tests can source the
/// file for its functions.
pub const INIT_SCRIPT: &str = r#"#!/bin/sh
# /init of the rackboot deploy RAM-disk (written by rackboot-ramdisk). Runs as PID 1: never exits.

export PATH=/bin
export HOME=/root
RUN=/run/rackboot
UDHCPC_SCRIPT=/etc/rackboot/udhcpc.script
AGENT=/bin/rackboot-agent
# Seconds to wait for a DHCP lease before loading drivers again and retrying.
DHCP_TIMEOUT=60
EXPLICIT_MODULES="sd_mod md_mod raid0 raid1 raid10 raid456 linear dm_mod ext4 xfs btrfs vfat isofs nls_cp437 nls_ascii nls_utf8 nls_iso8859_1 crc32c_generic"

log() {
	echo "rackboot-ramdisk: $*"
}

# The MAC in BOOTIF= on kernel command line $1 (pxelinux/iPXE: "01-aa-bb-cc-dd-ee-ff", the 01
# being the ARP hardware type) as aa:bb:cc:dd:ee:ff; nothing if absent or malformed.
bootif_mac() {
	local word mac=
	set -f
	for word in $1; do
		case "$word" in
		BOOTIF=*) mac=${word#BOOTIF=} ;;
		esac
	done
	set +f
	mac=$(echo "$mac" | tr 'ABCDEF-' 'abcdef:')
	case "$mac" in
	01:??:??:??:??:??:??) mac=${mac#01:} ;;
	esac
	case "$mac" in
	[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f])
		echo "$mac" ;;
	esac
}

# Physical Ethernet interfaces: they have a bus device (not lo, bonds, VLANs, bridges) and ARP
# type 1.
ethernet_nics() {
	local dev
	for dev in /sys/class/net/*; do
		[ -e "$dev/device" ] || continue
		[ "$(cat "$dev/type" 2>/dev/null)" = 1 ] || continue
		echo "${dev##*/}"
	done
}

# The NIC with MAC $1, if any.
nic_with_mac() {
	local nic
	for nic in $(ethernet_nics); do
		[ "$(cat "/sys/class/net/$nic/address")" = "$1" ] && echo "$nic" && return 0
	done
	return 1
}

# Loads the driver of every device the kernel has found. A new driver can reveal more devices
# (virtio_pci finds the virtio NIC that virtio_net drives), so repeat until no new modalias
# appears, at most 5 rounds.
coldplug() {
	local seen= aliases round=0 old_ifs
	while [ $round -lt 5 ]; do
		round=$((round + 1))
		aliases=$(find /sys/devices -name modalias -type f -exec cat {} + 2>/dev/null | sort -u)
		[ "$aliases" = "$seen" ] && break
		seen=$aliases
		# One argument per line, no globbing: DMI modaliases hold spaces and quotes.
		old_ifs=$IFS
		IFS='
'
		set -f
		[ -n "$aliases" ] && modprobe -q -a $aliases
		set +f
		IFS=$old_ifs
	done
}

# Kills the udhcpc of every NIC except $1.
stop_dhcp_except() {
	local pidfile nic
	for pidfile in "$RUN"/dhcp/*.pid; do
		[ -e "$pidfile" ] || continue
		nic=${pidfile##*/}
		nic=${nic%.pid}
		[ "$nic" = "$1" ] && continue
		kill "$(cat "$pidfile")" 2>/dev/null
		rm -f "$pidfile"
	done
}

# DHCP on the NIC whose MAC BOOTIF= names, if there is one, else on every NIC with carrier, in
# parallel: the first lease wins (udhcpc.script records it in $RUN/net), the other clients are
# stopped and the winner's keeps renewing. Fails after $1 seconds without a lease.
network_up() {
	local want nics nic iface addr deadline now warned= last_coldplug=0
	want=$(bootif_mac "$(cat /proc/cmdline)")
	rm -rf "$RUN/net" "$RUN/dhcp"
	mkdir -p "$RUN/dhcp"
	deadline=$(($(date +%s) + $1))
	while now=$(date +%s) && [ "$now" -lt "$deadline" ]; do
		if [ -s "$RUN/net/up" ]; then
			read -r iface addr < "$RUN/net/up"
			stop_dhcp_except "$iface"
			log "network up on $iface ${addr%/*}"
			return 0
		fi
		nics=
		if [ -n "$want" ]; then
			nics=$(nic_with_mac "$want")
			if [ -z "$nics" ] && [ -z "$warned" ]; then
				log "no NIC has the BOOTIF MAC $want (yet); trying every NIC"
				warned=1
			fi
		fi
		[ -n "$nics" ] || nics=$(ethernet_nics)
		# No NIC at all: its driver may need a device that appeared late.
		if [ -z "$nics" ] && [ $((now - last_coldplug)) -ge 5 ]; then
			coldplug
			last_coldplug=$now
		fi
		for nic in $nics; do
			[ -e "$RUN/dhcp/$nic.pid" ] && continue
			ip link set "$nic" up 2>/dev/null
			[ "$(cat "/sys/class/net/$nic/carrier" 2>/dev/null)" = 1 ] || continue
			log "DHCP on $nic ($(cat "/sys/class/net/$nic/address"))"
			udhcpc -f -i "$nic" -s "$UDHCPC_SCRIPT" -O staticroutes -t 4 -T 2 -A 2 &
			echo $! > "$RUN/dhcp/$nic.pid"
		done
		sleep 0.2
	done
	stop_dhcp_except ""
	return 1
}

# The address in rackboot.ip6= on kernel command line $1 (ADDR/LEN, the last one), if any:
# rackboot puts it there on an IPv6 network (the address the machine's loader leased by
# DHCPv6, to which the agent's token is bound).
cmdline_ip6() {
	local word addr=
	set -f
	for word in $1; do
		case "$word" in
		rackboot.ip6=*:*/*) addr=${word#rackboot.ip6=} ;;
		esac
	done
	set +f
	echo "$addr"
}

# IPv6: puts address $1 on the NIC whose MAC BOOTIF= names, else on the first NIC with
# carrier (no DHCPv6 client here: the address is given). DAD is off on that NIC: the
# address is this machine's lease, and a tentative address could not be used for seconds.
# The prefix route comes with the address. Fails after $2 seconds without a NIC.
network_up6() {
	local addr=$1 want nic n deadline now last_coldplug=0
	want=$(bootif_mac "$(cat /proc/cmdline)")
	rm -rf "$RUN/net"
	deadline=$(($(date +%s) + $2))
	while now=$(date +%s) && [ "$now" -lt "$deadline" ]; do
		nic=
		[ -n "$want" ] && nic=$(nic_with_mac "$want")
		if [ -z "$nic" ]; then
			for n in $(ethernet_nics); do
				ip link set "$n" up 2>/dev/null
				if [ "$(cat "/sys/class/net/$n/carrier" 2>/dev/null)" = 1 ]; then
					nic=$n
					break
				fi
			done
		fi
		if [ -z "$nic" ] && [ $((now - last_coldplug)) -ge 5 ]; then
			coldplug
			last_coldplug=$now
		fi
		if [ -n "$nic" ]; then
			echo 0 > "/proc/sys/net/ipv6/conf/$nic/accept_dad" 2>/dev/null
			ip link set "$nic" up
			ip -6 addr del "$addr" dev "$nic" 2>/dev/null
			if ip -6 addr add "$addr" dev "$nic"; then
				mkdir -p "$RUN/net"
				echo "$nic" > "$RUN/net/iface"
				echo "$nic $addr" > "$RUN/net/up"
				log "network up on $nic ${addr%/*}"
				return 0
			fi
		fi
		sleep 0.2
	done
	return 1
}

# Keeps the agent running: when it exits or crashes, log how and start it again.
run_agent() {
	local run=0 status
	while :; do
		run=$((run + 1))
		log "starting rackboot-agent (run $run)"
		"$AGENT"
		status=$?
		if [ "$status" -gt 128 ]; then
			log "rackboot-agent killed by signal $((status - 128)); restarting in 2 s"
		else
			log "rackboot-agent exited with status $status; restarting in 2 s"
		fi
		sleep 2
	done
}

main() {
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	mkdir -p /dev/pts /dev/shm
	mount -t devpts devpts /dev/pts
	mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
	# UEFI machines: the agent reads Secure Boot's state from the EFI variables.
	if [ -d /sys/firmware/efi/efivars ]; then
		modprobe -q efivarfs
		mount -t efivarfs -o ro,nosuid,nodev,noexec efivarfs /sys/firmware/efi/efivars ||
			log "cannot mount efivarfs: Secure Boot's state will be unknown"
	fi
	mkdir -p "$RUN"
	ip link set lo up
	log "starting (kernel $(uname -r))"
	coldplug
	# RAID and filesystem modules take seconds to load and the network does not need them.
	{ modprobe -q -a $EXPLICIT_MODULES; touch "$RUN/modules-loaded"; } &
	ip6=$(cmdline_ip6 "$(cat /proc/cmdline)")
	if [ -n "$ip6" ]; then
		until network_up6 "$ip6" "$DHCP_TIMEOUT"; do
			log "no NIC for $ip6 within $DHCP_TIMEOUT s; loading drivers again and retrying"
			coldplug
		done
	else
		until network_up "$DHCP_TIMEOUT"; do
			log "no DHCP lease within $DHCP_TIMEOUT s; loading drivers again and retrying"
			coldplug
		done
	fi
	run_agent
}

if [ "$$" = 1 ]; then
	main
	# Not reached: run_agent loops forever. Should it ever return, keep PID 1 alive.
	while :; do sleep 3600; done
fi
"#;

/// udhcpc's event script (`udhcpc -s`). Several NICs may run udhcpc at once: the first to get
/// a lease takes /run/rackboot/net (mkdir is atomic) and only that NIC configures anything.
pub const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# udhcpc event script of the rackboot deploy RAM-disk (written by rackboot-ramdisk).
# udhcpc sets: interface ip mask broadcast router dns domain search staticroutes hostname.

NET=/run/rackboot/net

owner() {
	cat "$NET/iface" 2>/dev/null
}

case "$1" in
deconfig)
	ip link set "$interface" up
	if [ -z "$(owner)" ] || [ "$(owner)" = "$interface" ]; then
		ip -4 addr flush dev "$interface"
	fi
	;;
bound|renew)
	mkdir "$NET" 2>/dev/null && echo "$interface" > "$NET/iface"
	[ "$(owner)" = "$interface" ] || exit 0
	if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$mask "; then
		ip -4 addr flush dev "$interface"
		ip addr add "$ip/$mask" broadcast "${broadcast:-+}" dev "$interface"
	fi
	while ip -4 route del default dev "$interface" 2>/dev/null; do :; done
	if [ -n "$staticroutes" ]; then
		# RFC 3442: with classless routes present, the router option is ignored.
		set -- $staticroutes
		while [ $# -ge 2 ]; do
			if [ "$2" = 0.0.0.0 ]; then
				ip route replace "$1" dev "$interface"
			else
				ip route replace "$1" via "$2" dev "$interface"
			fi
			shift 2
		done
	else
		metric=0
		for gw in $router; do
			ip route add default via "$gw" dev "$interface" metric $metric
			metric=$((metric + 1))
		done
	fi
	{
		if [ -n "$search" ]; then echo "search $search"; elif [ -n "$domain" ]; then echo "search $domain"; fi
		for ns in $dns; do echo "nameserver $ns"; done
	} > /etc/resolv.conf.new && mv /etc/resolv.conf.new /etc/resolv.conf
	[ -n "$hostname" ] && hostname "$hostname"
	echo "$interface $ip/$mask" > "$NET/up.new" && mv "$NET/up.new" "$NET/up"
	;;
esac
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn busybox_sh(script: &str) -> String {
        let output = Command::new("/bin/busybox")
            .args(["sh", "-c", script])
            .output()
            .expect("busybox-static is installed");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    #[test]
    fn init_does_what_the_ramdisk_needs() {
        for needed in [
            "mount -t proc proc /proc",
            "mount -t sysfs sysfs /sys",
            "mount -t devtmpfs devtmpfs /dev",
            "tmpfs /run",
            "tmpfs /tmp",
            "modprobe -q efivarfs",
            "mount -t efivarfs -o ro,nosuid,nodev,noexec efivarfs /sys/firmware/efi/efivars",
            "log \"starting (kernel $(uname -r))\"",
            "find /sys/devices -name modalias",
            "[ -n \"$aliases\" ] && modprobe -q -a $aliases",
            "{ modprobe -q -a $EXPLICIT_MODULES; touch \"$RUN/modules-loaded\"; } &",
            "BOOTIF=",
            "/sys/class/net/$nic/carrier",
            "udhcpc -f -i \"$nic\" -s \"$UDHCPC_SCRIPT\"",
            "log \"network up on $iface ${addr%/*}\"",
            "\"$AGENT\"",
            "sleep 2",
            "if [ \"$$\" = 1 ]; then",
        ] {
            assert!(INIT_SCRIPT.contains(needed), "/init lacks {needed:?}");
        }
        assert!(INIT_SCRIPT.starts_with("#!/bin/sh\n"));
        assert!(INIT_SCRIPT.contains(&format!("UDHCPC_SCRIPT=/{UDHCPC_SCRIPT_PATH}\n")));
        assert!(INIT_SCRIPT.contains(&format!("AGENT=/{AGENT_PATH}\n")));
        assert!(INIT_SCRIPT.contains("RUN=/run/rackboot\n"));
        assert_eq!(MODULES_LOADED, "/run/rackboot/modules-loaded");
        assert!(INIT_SCRIPT.contains(&format!(
            "EXPLICIT_MODULES=\"{}\"\n",
            EXPLICIT_MODULES.join(" ")
        )));
        assert!(NETWORK_UP.starts_with(LOG_PREFIX));
        assert!(INIT_SCRIPT.contains(&format!("echo \"{LOG_PREFIX} $*\"")));
    }

    #[test]
    fn the_agent_respawn_loop_never_ends() {
        let run_agent = &INIT_SCRIPT[INIT_SCRIPT.find("run_agent() {").unwrap()..];
        let body = &run_agent[..run_agent.find("\n}\n").unwrap()];
        assert!(body.contains("while :; do"));
        assert!(!body.contains("break") && !body.contains("return"));
    }

    #[test]
    fn scripts_parse_with_busybox_sh() {
        for (name, script) in [("init", INIT_SCRIPT), ("udhcpc", UDHCPC_SCRIPT)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(name);
            std::fs::write(&path, script).unwrap();
            let output = Command::new("/bin/busybox")
                .args(["sh", "-n"])
                .arg(&path)
                .output()
                .expect("busybox-static is installed");
            assert!(
                output.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    #[test]
    fn bootif_is_parsed_from_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        std::fs::write(&init, INIT_SCRIPT).unwrap();
        let cases = [
            (
                "console=ttyS0 BOOTIF=01-52-54-00-AB-cd-01 quiet",
                "52:54:00:ab:cd:01",
            ),
            ("BOOTIF=52:54:00:12:34:56", "52:54:00:12:34:56"),
            (
                "BOOTIF=01-aa-bb BOOTIF=01-11-22-33-44-55-66",
                "11:22:33:44:55:66",
            ),
            ("console=ttyS0 quiet", ""),
            ("BOOTIF=01-zz-bb-cc-dd-ee-ff", ""),
            ("BOOTIF=", ""),
            ("BOOTIF=* x", ""),
        ];
        for (cmdline, expected) in cases {
            // Sourcing is safe: main runs only as PID 1.
            let out = busybox_sh(&format!(
                ". {}; bootif_mac '{cmdline}'; echo end",
                init.display()
            ));
            assert_eq!(
                out,
                format!(
                    "{}end\n",
                    if expected.is_empty() {
                        String::new()
                    } else {
                        format!("{expected}\n")
                    }
                ),
                "{cmdline}"
            );
        }
    }

    #[test]
    fn ipv6_address_is_parsed_from_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        std::fs::write(&init, INIT_SCRIPT).unwrap();
        let cases = [
            (
                "console=ttyS0 rackboot.url=http://[2001:db8:77::1]:8080 rackboot.ip6=2001:db8:77::100/64 BOOTIF=01-52-54-00-00-00-01",
                "2001:db8:77::100/64",
            ),
            (
                "rackboot.ip6=fd00::1/64 rackboot.ip6=fd00::2/64",
                "fd00::2/64",
            ),
            ("rackboot.url=http://10.77.0.1:8080 quiet", ""),
            ("rackboot.ip6=10.0.0.1/24", ""),
            ("rackboot.ip6=* x", ""),
        ];
        for (cmdline, expected) in cases {
            let out = busybox_sh(&format!(
                ". {}; echo \"[$(cmdline_ip6 '{cmdline}')]\"",
                init.display()
            ));
            assert_eq!(out, format!("[{expected}]\n"), "{cmdline}");
        }
        for needed in [
            "network_up6 \"$ip6\" \"$DHCP_TIMEOUT\"",
            "accept_dad",
            "ip -6 addr add \"$addr\" dev \"$nic\"",
        ] {
            assert!(INIT_SCRIPT.contains(needed), "/init lacks {needed:?}");
        }
    }

    #[test]
    fn udhcpc_script_configures_address_routes_and_dns() {
        for needed in [
            "bound|renew)",
            "deconfig)",
            "ip addr add \"$ip/$mask\"",
            "ip route add default via \"$gw\"",
            "ip route replace \"$1\" via \"$2\"",
            "nameserver $ns",
            "/etc/resolv.conf",
            "mkdir \"$NET\"",
            "\"$NET/up\"",
        ] {
            assert!(
                UDHCPC_SCRIPT.contains(needed),
                "udhcpc script lacks {needed:?}"
            );
        }
    }
}
