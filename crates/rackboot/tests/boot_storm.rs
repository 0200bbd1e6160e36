//! A small boot storm against one real `rackboot serve` (DHCP, TFTP, boot
//! HTTP) in a network namespace: `boot-storm` (crate rackboot-bench) powers
//! on 20 enrolled machines at once, each doing what a BIOS PXE ROM and iPXE
//! do from its own MAC and leased address (DHCP, TFTP of undionly.kpxe,
//! DHCP as iPXE, script, kernel and initrd over HTTP). Every machine must
//! get its initrd. bench/storm.sh runs the same with 1,000 machines.
//! Needs root (namespaces, packet sockets).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn boot_storm_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "rackboot-bench", "--bin", "boot-storm"])
        .status()
        .unwrap();
    assert!(status.success(), "building boot-storm");
    Path::new(env!("CARGO_BIN_EXE_rackboot")).with_file_name("boot-storm")
}

#[test]
fn twenty_machines_boot_at_once() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(boot_storm_binary())
        .args(["--rackboot", env!("CARGO_BIN_EXE_rackboot")])
        .args([
            "--machines",
            "20",
            "--kernel-size",
            "256K",
            "--initrd-size",
            "1M",
        ])
        .args(["--timeout-secs", "120", "--check", "--work"])
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kv: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| kv.get(k).copied().unwrap_or("?");
    assert!(
        out.status.success(),
        "boot-storm failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(get("served"), "20", "{stdout}\n{stderr}");
    assert_eq!(get("failed"), "0", "{stdout}");
    // Every stage saw every machine, none failed.
    for stage in [
        "dhcp_rom",
        "tftp_loader",
        "dhcp_ipxe",
        "http_script",
        "http_kernel",
        "http_initrd",
    ] {
        let fields: Vec<&str> = get(&format!("stage_{stage}")).split(' ').collect();
        assert_eq!(fields.first(), Some(&"20"), "{stage}: {stdout}");
        assert_eq!(fields.get(1), Some(&"0"), "{stage}: {stdout}");
    }
    let want_bytes = 20 * (256 * 1024 + 1024 * 1024);
    assert_eq!(get("http_bytes"), want_bytes.to_string(), "{stdout}");
    assert_eq!(get("events_dropped"), "0", "{stdout}");
}
