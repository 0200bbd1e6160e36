//! End to end with real firmware: a QEMU BIOS machine whose iPXE ROM is told (by
//! QEMU's user-mode DHCP) to chain our script URL. iPXE fetches the per-machine
//! script, the kernel and the initrd from the boot HTTP router, and the initrd's
//! /init prints a marker with the templated command line on the serial console.
//! Traffic stays on loopback: user-mode networking is restricted (no route out)
//! and only guestfwd 10.0.2.100:8080 reaches the router on 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::qemu::{KillOnDrop, initrd, kernel};
use common::*;
use rackboot_boot::BootConfig;
use rackboot_core::{BootIntent, EventKind, LoaderKind};
use tokio_util::sync::CancellationToken;

/// Kills QEMU (by its own pid, via the Child handle) even when the test fails.
/// One QEMU at a time: they are CPU-heavy under TCG.
static QEMU: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bios_ipxe_boots_kernel_and_initrd_from_rendered_script() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let f = boot_lab_node(BootIntent::Profile {
        name: Some("lab".into()),
    })
    .await;
    let served = f.events_of(EventKind::ScriptServed);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].data["plan"], "profile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipxe_menu_boots_its_default_after_the_timeout() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let f = boot_lab_node(BootIntent::Menu(rackboot_core::Menu {
        entries: vec![rackboot_core::MenuEntry {
            profile: "lab".into(),
            label: Some("Lab kernel".into()),
            install: None,
        }],
        default: Some("lab".into()),
        timeout_secs: 1,
        loader: None,
    }))
    .await;
    assert_eq!(f.events_of(EventKind::ScriptServed)[0].data["plan"], "menu");
}

/// Boots machine "lab-node" with `intent` (which must end in profile "lab") and
/// checks the initrd's marker line and the asset events.
async fn boot_lab_node(intent: BootIntent) -> Fixture {
    boot_lab_node_with(intent, Firmware::Bios).await
}

#[derive(Clone, Copy, PartialEq)]
enum Firmware {
    /// SeaBIOS; the virtio NIC's iPXE ROM is the PXE stack.
    Bios,
    /// OVMF; the NIC ROM's EFI iPXE boots, and the kernel's EFI stub loads the
    /// initrd named by `initrd=` on the command line.
    Uefi,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uefi_ipxe_boots_efi_stub_kernel_with_named_initrd() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let f = boot_lab_node_with(
        BootIntent::Profile {
            name: Some("lab".into()),
        },
        Firmware::Uefi,
    )
    .await;
    assert_eq!(f.events_of(EventKind::ScriptServed).len(), 1);
}

async fn boot_lab_node_with(intent: BootIntent, firmware: Firmware) -> Fixture {
    let _one_qemu = QEMU.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(assets.join("lab")).unwrap();
    std::fs::copy(kernel(), assets.join("lab/vmlinuz")).unwrap();
    std::fs::write(assets.join("lab/initrd.cpio"), initrd(dir.path())).unwrap();

    let store = MemStore::default();
    let mac_str = "52:54:00:7a:00:01";
    *store.machines.lock().unwrap() = vec![machine("lab-node", mac_str, intent)];
    let mut profile = kernel_profile("lab", LoaderKind::Ipxe);
    profile.kernel = Some("lab/vmlinuz".into());
    profile.initrds = vec!["lab/initrd.cpio".into()];
    profile.cmdline =
        "console=ttyS0 panic=-1 quiet rackboot.name={{ machine.name }} rackboot.mac={{ mac }}"
            .into();
    *store.profiles.lock().unwrap() = vec![profile];
    let config = BootConfig {
        asset_dir: assets,
        ..BootConfig::default()
    };
    let f = fixture(store, config).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(rackboot_boot::serve(
        listener,
        f.service.clone(),
        shutdown.clone(),
    ));

    let vars = dir.path().join("OVMF_VARS.fd");
    let mut firmware_args: Vec<String> = Vec::new();
    if firmware == Firmware::Uefi {
        std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("ovmf");
        firmware_args = vec![
            "-drive".into(),
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", vars.display()),
        ];
    }
    let bootfile = format!(
        "http://10.0.2.100:8080/boot/ipxe/{}",
        mac_str.replace(':', "-")
    );
    let mut qemu = KillOnDrop(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "512", "-nographic", "-nodefaults", "-no-reboot"])
            .args(["-serial", "stdio", "-boot", "n"])
            .args(&firmware_args)
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:8080-tcp:127.0.0.1:{port},bootfile={bootfile}"
            ))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={mac_str}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64"),
    );
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
    let mut marker = None;
    let mut tail = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                if line.contains("RACKBOOT-INIT-OK") {
                    marker = Some(line);
                    break;
                }
                let gave_up = line.contains("No more network devices");
                tail.push(line);
                if gave_up {
                    break;
                }
                if tail.len() > 40 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(qemu);
    let marker = marker.unwrap_or_else(|| panic!("no marker; serial tail:\n{}", tail.join("\n")));
    assert!(marker.contains("rackboot.name=lab-node"), "{marker}");
    assert!(
        marker.contains(&format!("rackboot.mac={mac_str}")),
        "{marker}"
    );
    assert!(marker.contains("initrd=initrd0"), "{marker}");

    f.settle().await;
    let assets: Vec<String> = f
        .events_of(EventKind::AssetServed)
        .iter()
        .map(|e| e.data["path"].as_str().unwrap().to_string())
        .collect();
    assert!(assets.contains(&"lab/vmlinuz".to_string()), "{assets:?}");
    assert!(
        assets.contains(&"lab/initrd.cpio".to_string()),
        "{assets:?}"
    );
    shutdown.cancel();
    server.await.unwrap().unwrap();
    f
}
