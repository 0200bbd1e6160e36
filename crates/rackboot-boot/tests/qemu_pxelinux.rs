//! End to end with real pxelinux: the config rendered by TftpContent for
//! `pxelinux.cfg/01-<mac>` is placed in a TFTP dir served by QEMU's restricted
//! user-mode network (no route out), with pxelinux.0, its modules and the assets
//! under /assets. pxelinux loads the kernel and initrd over TFTP and the initrd's
//! /init prints a marker with the templated command line.

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

async fn boot_with_pxelinux(intent: BootIntent) {
    let dir = tempfile::tempdir().unwrap();
    let tftp = dir.path().join("tftp");
    std::fs::create_dir_all(tftp.join("assets/lab")).unwrap();
    std::fs::create_dir_all(tftp.join("pxelinux.cfg")).unwrap();
    std::fs::copy("/usr/lib/PXELINUX/pxelinux.0", tftp.join("pxelinux.0")).expect("pxelinux");
    for m in ["ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32"] {
        std::fs::copy(format!("/usr/lib/syslinux/modules/bios/{m}"), tftp.join(m))
            .expect("syslinux-common");
    }
    std::fs::copy(kernel(), tftp.join("assets/lab/vmlinuz")).unwrap();
    std::fs::write(tftp.join("assets/lab/initrd.cpio"), initrd(dir.path())).unwrap();

    let mac_str = "52:54:00:7a:00:02";
    let store = MemStore::default();
    *store.machines.lock().unwrap() = vec![machine("pxe-node", mac_str, intent)];
    let mut profile = kernel_profile("lab", LoaderKind::Pxelinux);
    profile.kernel = Some("lab/vmlinuz".into());
    profile.initrds = vec!["lab/initrd.cpio".into()];
    profile.cmdline = "console=ttyS0 panic=-1 quiet rackboot.name={{ machine.name }}".into();
    *store.profiles.lock().unwrap() = vec![profile];
    let f = fixture(store, BootConfig::default()).await;

    let name = format!("01-{}", mac_str.replace(':', "-"));
    let GeneratedFile::Content(cfg) = f
        .service
        .generate(&format!("pxelinux.cfg/{name}"), Ipv4Addr::LOCALHOST)
    else {
        panic!("no pxelinux config generated");
    };
    std::fs::write(tftp.join("pxelinux.cfg").join(&name), &cfg).unwrap();

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
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,tftp={},bootfile=pxelinux.0",
                tftp.display()
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
            Ok(line) if line.contains("RACKBOOT-INIT-OK") => {
                marker = Some(line);
                break;
            }
            Ok(line) => {
                tail.push(line);
                if tail.len() > 40 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(qemu);
    let marker = marker.unwrap_or_else(|| {
        panic!(
            "no marker; config was:\n{}\nserial tail:\n{}",
            String::from_utf8_lossy(&cfg),
            tail.join("\n")
        )
    });
    assert!(marker.contains("rackboot.name=pxe-node"), "{marker}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxelinux_boots_the_rendered_config_over_tftp() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _one_qemu = QEMU.lock().await;
    boot_with_pxelinux(BootIntent::Profile {
        name: Some("lab".into()),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxelinux_menu_boots_its_default_after_the_timeout() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _one_qemu = QEMU.lock().await;
    boot_with_pxelinux(BootIntent::Menu(rackboot_core::Menu {
        entries: vec![rackboot_core::MenuEntry {
            profile: "lab".into(),
            label: None,
            install: None,
        }],
        default: Some("lab".into()),
        timeout_secs: 1,
        loader: None,
    }))
    .await;
}

static QEMU: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
