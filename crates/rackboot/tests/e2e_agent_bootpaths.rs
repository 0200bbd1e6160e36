//! The deploy agent's RAM-disk through the boot paths beyond iPXE, end to
//! end on real firmware, each an inspect workflow whose facts must land:
//! - Secure Boot enforced with Microsoft's keys: shim → Debian's signed
//!   network GRUB → its generated config, which carries the agent's per-boot
//!   token → the host's signed Debian kernel and the RAM-disk over TFTP; the
//!   agent reports Secure Boot on;
//! - an IPv6-only network: UEFI PXE over IPv6 → iPXE's DHCPv6 → its script,
//!   the RAM-disk over HTTP/IPv6; /init puts the address iPXE leased (to
//!   which the token is bound) on the NIC and the agent reaches the server at
//!   its bracketed IPv6 URL.
//!
//! Ignored by default (minutes under TCG): `scripts/test-long agent`. The
//! normal suite covers the GRUB config and its token without a VM
//! (crates/rackboot-boot/tests/agent_grub.rs).
//! Needs root and the packages scripts/install-deps installs.

mod common;

use std::time::{Duration, Instant};

use common::deploy::{api, install_ramdisk, serial_tail, step_states, wait_workflow};
use common::{Rack, VMS};
use rackboot_lab::{LabConfig, MachineSpec};

const INSPECT_TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::test]
#[ignore]
async fn secure_boot_machine_is_inspected_through_shim_grub_and_the_agent() {
    let _vms = VMS.lock().await;
    let mut rack = Rack::start(
        vec![MachineSpec::uefi_secure_boot().with_memory(1024)],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    install_ramdisk(&rack);
    let name = rack.lab.machine(0).name().to_string();
    let mac = rack.lab.machine(0).mac();
    rack.cli(&[
        "machine",
        "add",
        &name,
        "--mac",
        &mac,
        "--label",
        "secure_boot=true",
    ]);
    let out = rack.cli(&["inspect", &name, "--no-wait"]);
    assert!(out.contains("queued"), "{out}");
    // No BMC: the machine is powered on by hand.
    let started = Instant::now();
    rack.lab.start_machine(0).unwrap();
    let wf = wait_workflow(&rack, &name, 0, INSPECT_TIMEOUT).await;
    eprintln!(
        "Secure Boot agent: power-on to inspected {:?}",
        started.elapsed()
    );
    assert_eq!(
        wf["state"],
        "succeeded",
        "{wf:#}\nconsole:\n{}\nserver log:\n{}",
        serial_tail(&rack, 0, 6000),
        rack.server_log()
    );
    let states = step_states(&wf);
    assert_eq!(
        states[..2],
        [
            ("boot-agent".to_string(), "succeeded".to_string()),
            ("inspect".to_string(), "succeeded".to_string())
        ],
        "{wf:#}"
    );
    let serial = rack.lab.machine(0).serial_text();
    assert!(
        serial.contains("Secure boot enabled"),
        "the RAM-disk's kernel should report Secure Boot on:\n{}",
        serial_tail(&rack, 0, 6000)
    );

    // The facts landed, Secure Boot's state among them.
    let m = api(&rack, &format!("/machines/{name}"));
    assert_eq!(m["facts"]["boot"]["mode"], "uefi", "{m:#}");
    assert_eq!(m["facts"]["boot"]["secure_boot"], true, "{m:#}");
    let show = rack.cli(&["machine", "show", &name]);
    assert!(show.contains("firmware: uefi, secure boot on"), "{show}");
    // Selectors can use it.
    rack.cli(&[
        "selector",
        "add",
        "secure",
        "--profile",
        "linux",
        "--match",
        "fact.secure_boot=true",
    ]);
    rack.cli(&["machine", "set-boot", &name, "profile"]);
    let grub = rack
        .lab
        .netns()
        .command("curl")
        .args(["-sf", "--max-time", "10"])
        .arg(format!(
            "{}/boot/grub/{}",
            common::API,
            mac.replace(':', "-")
        ))
        .output()
        .unwrap();
    let grub = String::from_utf8_lossy(&grub.stdout);
    assert!(grub.contains("boots profile linux"), "{grub}");

    // The whole chain over TFTP, never iPXE, and one token for the boot.
    let timeline = rack.cli(&["timeline", &name]);
    eprintln!("{timeline}");
    let tftp: Vec<&str> = timeline
        .lines()
        .filter(|l| l.contains("tftp_sent"))
        .collect();
    for file in [
        "shimx64.efi",
        "grubx64.efi",
        "grub.cfg-01-",
        "ramdisk/vmlinuz",
        "ramdisk/initramfs.img",
    ] {
        assert!(
            tftp.iter().any(|l| l.contains(file)),
            "{file} over TFTP:\n{timeline}"
        );
    }
    assert!(!timeline.contains("snponly.efi"), "{timeline}");
    assert_eq!(
        timeline
            .lines()
            .filter(|l| l.contains("agent_token_issued"))
            .count(),
        1,
        "{timeline}"
    );
}

#[tokio::test]
#[ignore]
async fn ipv6_only_machine_is_inspected_by_the_agent_over_ipv6() {
    let _vms = VMS.lock().await;
    let mut rack = Rack::start_lab(
        vec![MachineSpec::uefi_ipv6_pxe().with_memory(1024)],
        None,
        &["--dhcp6-range", "2001:db8:77::100-2001:db8:77::1ff"],
        LabConfig::ipv6_only,
    )
    .await;
    assert!(!rack.lab.netns().has_ipv4(), "no IPv4 on this network");
    install_ramdisk(&rack);
    let name = rack.lab.machine(0).name().to_string();
    let mac = rack.lab.machine(0).mac();
    rack.cli(&["machine", "add", &name, "--mac", &mac]);
    let out = rack.cli(&["inspect", &name, "--no-wait"]);
    assert!(out.contains("queued"), "{out}");
    let started = Instant::now();
    rack.lab.start_machine(0).unwrap();
    let wf = wait_workflow(&rack, &name, 0, INSPECT_TIMEOUT).await;
    eprintln!("IPv6 agent: power-on to inspected {:?}", started.elapsed());
    assert_eq!(
        wf["state"],
        "succeeded",
        "{wf:#}\nconsole:\n{}\nserver log:\n{}",
        serial_tail(&rack, 0, 6000),
        rack.server_log()
    );
    let serial = rack.lab.machine(0).serial_text();
    assert!(
        serial.contains("rackboot-ramdisk: network up on") && serial.contains("2001:db8:77::"),
        "/init should put the leased IPv6 address on the NIC:\n{}",
        serial_tail(&rack, 0, 6000)
    );
    let m = api(&rack, &format!("/machines/{name}"));
    assert_eq!(m["facts"]["boot"]["mode"], "uefi", "{m:#}");
    // Plain OVMF: Secure Boot off, or no SecureBoot variable at all.
    assert_ne!(m["facts"]["boot"]["secure_boot"], true, "{m:#}");
    assert!(
        m["facts"]["nics"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["mac"] == mac.as_str())),
        "{m:#}"
    );
    let timeline = rack.cli(&["timeline", &name]);
    eprintln!("{timeline}");
    let issued: Vec<&str> = timeline
        .lines()
        .filter(|l| l.contains("agent_token_issued"))
        .collect();
    assert_eq!(issued.len(), 1, "{timeline}");
    assert!(issued[0].contains("2001:db8:77::"), "{timeline}");
}
