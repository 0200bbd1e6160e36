//! End to end through a BMC: a lab machine behind OpenIPMI's ipmi_sim (whose
//! chassis control starts and stops that machine's QEMU) is powered on by
//! rackboot over native RMCP+, network-boots from rackboot to the marker
//! kernel, and is powered off by rackboot, which ends its QEMU process.
//! Needs root and the packages scripts/install-deps installs.

mod common;

use std::time::{Duration, Instant};

use common::{BOOT_TIMEOUT, Rack, VMS, assert_timeline_has};
use rackboot_lab::{BmcKind, MARKER, MachineSpec};

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn ipmi_power_on_boots_linux_and_power_off_ends_the_vm() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let rack = Rack::start_with_bmc(
        vec![MachineSpec::bios()],
        Some(BmcKind::Ipmi),
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    let name = rack.lab.machine(0).name().to_string();
    let mac = rack.lab.machine(0).mac();
    let bmc = rack.lab.bmc(0).expect("a BMC lab machine has a BMC");
    assert!(bmc.url().starts_with("ipmi://"), "{}", bmc.url());
    rack.cli(&["machine", "add", &name, "--mac", &mac, "--bmc", bmc.url()]);
    rack.cli(&[
        "machine",
        "set-boot",
        &name,
        "profile",
        "--profile",
        "linux",
    ]);

    // The machine starts off; the password never comes back from the API.
    let shown = rack.cli(&["machine", "show", &name, "-o", "json"]);
    assert!(
        !shown.contains("password") && !shown.contains("sealed"),
        "{shown}"
    );
    let status = rack.cli(&["machine", "power", &name, "status"]);
    assert!(status.contains("off"), "{status}");
    assert_eq!(bmc.qemu_pid(), None);

    rack.cli(&["machine", "boot-device", &name, "pxe", "--once"]);
    let on = rack.cli(&["machine", "power", &name, "on"]);
    assert!(on.contains("verified on"), "{on}");
    let pid = bmc
        .qemu_pid()
        .expect("power on through the BMC started QEMU");
    let line = match bmc.wait_for_serial(MARKER, 0, BOOT_TIMEOUT).await {
        Ok(line) => line,
        Err(e) => panic!("{e}\nserver log:\n{}", rack.server_log()),
    };
    assert!(line.contains("rackboot.machine=m1"), "{line}");

    // The marker initramfs powers the machine off once it has printed; wait
    // for that, power on again, and power off while it is still running.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pid_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let on = rack.cli(&["machine", "power", &name, "on"]);
    assert!(on.contains("verified on"), "{on}");
    let pid = bmc.qemu_pid().expect("second power on started QEMU");
    let off = rack.cli(&["machine", "power", &name, "off"]);
    assert!(off.contains("verified off"), "{off}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pid_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pid_alive(pid), "QEMU {pid} still runs after power off");
    assert_eq!(bmc.qemu_pid(), None);

    let timeline = rack.cli(&["timeline", &name]);
    assert_timeline_has(
        &timeline,
        &[
            "boot_device_set",
            "power_action_done",
            "lease_acked",
            "script_served",
            "asset_served",
        ],
    );
    // A wrong password fails with a message that says so.
    rack.cli(&[
        "machine",
        "set-bmc",
        &name,
        &bmc.url().replace(":password@", ":wrong@"),
    ]);
    let err = rack
        .try_cli(&["machine", "power", &name, "status"])
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("auth") || err.contains("password"),
        "wrong password should say so: {err}"
    );
}
