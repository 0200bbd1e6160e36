//! A Debian preseed install under Secure Boot, as far as this host's Debian
//! archive lets it go (a whole install needs udebs it lacks, issue 12): an
//! OVMF machine with Secure Boot enforced and Microsoft's keys boots shim →
//! Debian's signed network GRUB → its generated config → d-i's signed kernel
//! and initrd from the OS catalog over TFTP, and the installer fetches its
//! rendered preseed from rackboot and runs its early command (the
//! `install_started` callback).
//!
//! Ignored by default (a few minutes under TCG): `scripts/test-long agent`.
//! Needs root and the packages scripts/install-deps installs.

mod common;

use std::time::{Duration, Instant};

use common::{Rack, VMS};
use rackboot_lab::MachineSpec;

const NETBOOT_TREE: &str = "/usr/lib/debian-installer/images/12/amd64/text";
const INSTALLER_TIMEOUT: Duration = Duration::from_secs(600);
const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv1sCq0b4vYtq9pS8b1jFh1Kq6YwJ7cT4Jx0h2mZ0aB ops@rackboot-test";

async fn wait_for_event(rack: &Rack, machine: &str, kind: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let timeline = rack.cli(&["timeline", machine]);
        if timeline.contains(kind) {
            return timeline;
        }
        if Instant::now() > deadline {
            panic!(
                "no {kind} within {timeout:?}\ntimeline:\n{timeline}\nconsole:\n{}\nserver log:\n{}",
                common::deploy::serial_tail(rack, 0, 4000),
                rack.server_log()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
#[ignore]
async fn debian_installer_boots_under_secure_boot_and_reads_its_preseed() {
    assert!(
        std::path::Path::new(NETBOOT_TREE).is_dir(),
        "{NETBOOT_TREE} is missing: apt-get install -y debian-installer-12-netboot-amd64"
    );
    let _vms = VMS.lock().await;
    let mut rack = Rack::start(
        vec![
            MachineSpec::uefi_secure_boot()
                .with_memory(1024)
                .with_disk(64),
        ],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    let imported = rack.cli(&["os", "import", NETBOOT_TREE]);
    assert!(imported.contains("debian-12-amd64"), "{imported}");
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
    rack.cli(&[
        "install",
        &name,
        "--os",
        "debian-12-amd64",
        "--set",
        &format!("ssh_authorized_keys=[\"{SSH_KEY}\"]"),
        "--kernel-arg",
        "console=ttyS0,115200n8",
    ]);
    let started = Instant::now();
    rack.lab.start_machine(0).unwrap();
    wait_for_event(&rack, &name, "install_file_served", INSTALLER_TIMEOUT).await;
    eprintln!(
        "Secure Boot install: power-on to preseed fetched {:?}",
        started.elapsed()
    );
    let timeline = wait_for_event(&rack, &name, "install_started", Duration::from_secs(180)).await;
    eprintln!("{timeline}");
    // The firmware enforces Secure Boot with Microsoft's keys: anything
    // unsigned on the way (or a kernel shim does not trust) stops the boot.
    let tftp: Vec<&str> = timeline
        .lines()
        .filter(|l| l.contains("tftp_sent"))
        .collect();
    for file in [
        "shimx64.efi",
        "grubx64.efi",
        "grub.cfg-01-",
        "linux",
        "initrd.gz",
    ] {
        assert!(
            tftp.iter().any(|l| l.contains(file)),
            "{file} over TFTP:\n{timeline}"
        );
    }
    assert!(!timeline.contains("snponly.efi"), "{timeline}");
}
