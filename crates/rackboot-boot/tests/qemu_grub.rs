//! End to end with Debian's network GRUB (grubnetx64.efi.signed, package
//! grub-efi-amd64-signed) under OVMF: the generic `grub/grub.cfg` and the
//! per-machine file it loads (`grub/grub.cfg-01-<mac with colons>`), both from
//! TftpContent, are placed in a TFTP dir served by QEMU's restricted user-mode
//! network (no route out) with the assets under /assets. GRUB loads kernel and
//! initrd over TFTP; the initrd's /init prints the command line, which shows how
//! quotes and `$` in a profile's cmdline survive GRUB.

mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::qemu::{KillOnDrop, initrd, kernel};
use common::*;
use rackboot_boot::BootConfig;
use rackboot_core::{BootIntent, GeneratedFile, LoaderKind, TftpContent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grub_boots_the_generated_config_over_tftp() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tftp = dir.path().join("tftp");
    std::fs::create_dir_all(tftp.join("assets/lab")).unwrap();
    std::fs::create_dir_all(tftp.join("grub")).unwrap();
    std::fs::copy(
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        tftp.join("grubx64.efi"),
    )
    .expect("grub-efi-amd64-signed");
    std::fs::copy(kernel(), tftp.join("assets/lab/vmlinuz")).unwrap();
    std::fs::write(tftp.join("assets/lab/initrd.cpio"), initrd(dir.path())).unwrap();

    let mac_str = "52:54:00:7a:00:03";
    let store = MemStore::default();
    *store.machines.lock().unwrap() = vec![machine(
        "grub-node",
        mac_str,
        BootIntent::Profile {
            name: Some("lab".into()),
        },
    )];
    let mut profile = kernel_profile("lab", LoaderKind::Grub);
    profile.kernel = Some("lab/vmlinuz".into());
    profile.initrds = vec!["lab/initrd.cpio".into()];
    profile.cmdline =
        "console=ttyS0 panic=-1 quiet rackboot.name={{ machine.name }} q=\"a b\" d=$x".into();
    *store.profiles.lock().unwrap() = vec![profile];
    let mut config = BootConfig::default();
    config.loaders.uefi_x64_grub = Some("grubx64.efi".into());
    let f = fixture(store, config).await;

    // GRUB 2.06 asks for grub/grub.cfg, which asks for grub.cfg-01-${net_default_mac}.
    let per_mac = format!("grub/grub.cfg-01-{mac_str}");
    for path in ["grub/grub.cfg", per_mac.as_str()] {
        let GeneratedFile::Content(cfg) = f.service.generate(path, Ipv4Addr::LOCALHOST) else {
            panic!("{path} not generated");
        };
        std::fs::write(tftp.join(path), cfg).unwrap();
    }

    let _one_qemu = QEMU.lock().await;
    let vars = dir.path().join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("ovmf");
    let mut qemu = KillOnDrop(
        Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-m",
                "512",
                "-nographic",
                "-nodefaults",
                "-no-reboot",
            ])
            .args(["-serial", "stdio", "-boot", "n"])
            .arg("-drive")
            .arg("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd")
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()))
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,tftp={},bootfile=grubx64.efi",
                tftp.display()
            ))
            .arg("-device")
            // No iPXE ROM: OVMF's own PXE loads GRUB, as on a real UEFI server.
            .arg(format!("virtio-net-pci,netdev=n0,mac={mac_str},romfile="))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64"),
    );
    let marker = wait_for_marker(&mut qemu);
    assert!(marker.contains("rackboot.name=grub-node"), "{marker}");
    assert!(
        marker.contains("\"q=a b\" d=$x"),
        "quotes and $ survive GRUB: {marker}"
    );
}

fn wait_for_marker(qemu: &mut KillOnDrop) -> String {
    let stdout = qemu.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut tail = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) if line.contains("RACKBOOT-INIT-OK") => return line,
            Ok(line) => {
                let stuck = line.contains("grub>");
                tail.push(line);
                if tail.len() > 40 {
                    tail.remove(0);
                }
                if stuck {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("no marker; serial tail:\n{}", tail.join("\n"));
}

static QEMU: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
