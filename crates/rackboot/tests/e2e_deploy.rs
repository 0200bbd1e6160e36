//! In-band deploys under QEMU, end to end: a lab machine behind an IPMI BMC
//! (OpenIPMI's ipmi_sim, whose chassis starts and stops the VM) with blank
//! virtio disks. `rackboot deploy` powers it on through the BMC; it PXE-boots
//! the agent's RAM-disk (the stock Debian kernel, the static agent); the agent
//! inspects it, erases, writes the lab's bootable test OS image and its
//! network configuration; rackboot sets the boot device to disk and power
//! cycles it; the test OS boots from the disk, prints the host name and
//! address the deploy gave it and answers ping there, where rackboot sees it.
//! Needs root and the packages scripts/install-deps installs.

mod common;

use std::time::Duration;

use common::deploy::{
    api, import_test_os, install_ramdisk, serial_tail, step_states, wait_workflow,
};
use common::{Rack, VMS};
use rackboot_lab::test_os::{TESTOS_MARKER, parse_marker};
use rackboot_lab::{BmcKind, MachineSpec};
use serde_json::json;

/// A deploy under TCG: RAM-disk download and boot, image write, reboot into
/// the test OS, each on shared cores.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(900);

fn vars(rack: &Rack, host: &str, mac: &str) -> String {
    let path = rack.dir().join(format!("{host}.json"));
    std::fs::write(
        &path,
        json!({
            "hostname": host,
            "nics": [{"mac": mac, "name": "eth0", "ipv4": {
                "mode": "static", "address": "10.77.0.50", "prefix": 24, "gateway": "10.77.0.1"}}],
        })
        .to_string(),
    )
    .unwrap();
    path.display().to_string()
}

/// Whether `ip` answers a ping within 30 s (one echo a second: a guest
/// under TCG may still be bringing its network up after its marker).
fn ping(rack: &Rack, ip: &str) -> bool {
    rack.lab
        .netns()
        .command("ping")
        .args(["-c", "1", "-w", "30", "-W", "2", ip])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Waits for a test OS marker that appears after `from` bytes of the console.
async fn wait_marker(rack: &Rack, from: u64) -> (String, String) {
    let bmc = rack.lab.bmc(0).expect("a BMC machine");
    let line = match bmc
        .wait_for_serial(TESTOS_MARKER, from, Duration::from_secs(300))
        .await
    {
        Ok(line) => line,
        Err(e) => panic!("{e}\nconsole:\n{}", serial_tail(rack, 0, 4000)),
    };
    let m = parse_marker(&line).unwrap_or_else(|| panic!("unparsable marker {line:?}"));
    (m.host, m.addrs.join(" "))
}

#[tokio::test]
async fn deploy_boots_the_image_from_disk_and_undeploy_erases_it() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let rack = Rack::start_with_bmc(
        vec![MachineSpec::bios().with_memory(1024).with_disk(256)],
        Some(BmcKind::Ipmi),
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    install_ramdisk(&rack);
    import_test_os(&rack);
    let name = rack.lab.machine(0).name().to_string();
    let mac = rack.lab.machine(0).mac();
    let bmc = rack.lab.bmc(0).unwrap();
    rack.cli(&["machine", "add", &name, "--mac", &mac, "--bmc", bmc.url()]);
    let vars = vars(&rack, "deployed1", &mac);

    let out = rack.cli(&[
        "deploy",
        &name,
        "--image",
        "testos",
        "--vars",
        &vars,
        "--no-wait",
    ]);
    assert!(out.contains("queued"), "{out}");
    let wf = wait_workflow(&rack, &name, 0, DEPLOY_TIMEOUT).await;
    assert_eq!(
        wf["state"],
        "succeeded",
        "{wf:#}\nconsole:\n{}\nserver log:\n{}",
        serial_tail(&rack, 0, 6000),
        rack.server_log()
    );
    let states = step_states(&wf);
    let expect = [
        ("boot-agent", "succeeded"),
        ("inspect", "succeeded"),
        ("erase", "succeeded"),
        ("build-raid", "skipped"),
        ("write-image", "succeeded"),
        ("configure", "succeeded"),
        ("boot-from-disk", "succeeded"),
        ("reboot", "succeeded"),
        ("verify-booted", "succeeded"),
    ];
    assert_eq!(
        states,
        expect.map(|(a, b)| (a.to_string(), b.to_string())),
        "{wf:#}"
    );
    // Seen by its address answering from the machine's own MAC.
    let verify = &wf["steps"][8]["output"];
    assert_eq!(verify["seen_by"], "arp", "{verify}");
    assert_eq!(verify["mac"], mac.as_str(), "{verify}");

    // The installed system is the image, configured as asked, and answers ping.
    let (host, addr) = wait_marker(&rack, 0).await;
    assert_eq!(
        (host.as_str(), addr.as_str()),
        ("deployed1", "10.77.0.50/24")
    );
    assert!(ping(&rack, "10.77.0.50"), "10.77.0.50 does not answer ping");

    let m = api(&rack, &format!("/machines/{name}"));
    assert_eq!(m["state"], "active", "{m:#}");
    assert_eq!(m["intent"]["kind"], "local_disk");
    assert_eq!(
        m["facts"]["dmi"]["serial"], "RBLAB-m1",
        "the -smbios serial is a fact"
    );
    assert_eq!(m["facts"]["disks"][0]["serial"], "rbm1d0");
    assert_eq!(m["facts"]["boot"]["mode"], "bios");
    // Every step is on the machine's timeline with its duration (the
    // events follow the workflow's stored end: wait for the last ones).
    let steps = [
        "boot-agent",
        "inspect",
        "erase",
        "write-image",
        "configure",
        "reboot",
        "verify-booted",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let timeline = rack.cli(&["timeline", &name]);
        let missing: Vec<&str> = steps
            .into_iter()
            .filter(|step| !timeline.contains(&format!("step {step} succeeded in")))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} missing from:\n{timeline}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let show = rack.cli(&["workflow", "show", wf["id"].as_str().unwrap()]);
    assert!(
        show.contains("write-image") && show.contains("succeeded"),
        "{show}"
    );
    let status = api(&rack, &format!("/machines/{name}/status"));
    assert_eq!(status["state"], "active");
    assert!(status["waiting_for"].is_null(), "{status:#}");

    // Undeploy: the agent boots again and erases; the disk has no signature left.
    rack.cli(&["undeploy", &name, "--no-wait"]);
    let wf = wait_workflow(&rack, &name, 0, DEPLOY_TIMEOUT).await;
    assert_eq!(wf["state"], "succeeded", "{wf:#}\n{}", rack.server_log());
    let m = api(&rack, &format!("/machines/{name}"));
    assert_eq!(m["state"], "available", "{m:#}");
    assert!(!bmc.is_powered_on(), "undeploy ends with the machine off");
    let disk = rack.lab.machine(0).config().disk_path(0);
    let wipefs = std::process::Command::new("wipefs")
        .args(["--no-act", "--output", "TYPE,OFFSET"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&wipefs.stdout).trim().is_empty(),
        "signatures left: {}",
        String::from_utf8_lossy(&wipefs.stdout)
    );
    let blkid = std::process::Command::new("blkid")
        .args(["-p"])
        .arg(&disk)
        .output()
        .unwrap();
    assert_eq!(
        blkid.status.code(),
        Some(2),
        "blkid found something: {}",
        String::from_utf8_lossy(&blkid.stdout)
    );
}

/// Powers the machine on through the rackboot CLI (its BMC) with only
/// `disks` attached, and waits for the test OS it boots.
async fn boot_with_disks(rack: &Rack, name: &str, disks: Vec<usize>) -> (String, String) {
    let bmc = rack.lab.bmc(0).unwrap();
    let off = rack.cli(&["machine", "power", name, "off"]);
    assert!(off.contains("off"), "{off}");
    rack.lab.set_attached_disks(0, Some(disks)).unwrap();
    let from = bmc.serial_len();
    let on = rack.cli(&["machine", "power", name, "on"]);
    assert!(on.contains("verified on"), "{on}");
    wait_marker(rack, from).await
}

#[tokio::test]
async fn raid1_deploy_boots_from_either_disk_alone() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let rack = Rack::start_with_bmc(
        vec![MachineSpec::bios().with_memory(1024).with_disks(2, 256)],
        Some(BmcKind::Ipmi),
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    install_ramdisk(&rack);
    import_test_os(&rack);
    let name = rack.lab.machine(0).name().to_string();
    let mac = rack.lab.machine(0).mac();
    let bmc = rack.lab.bmc(0).unwrap();
    rack.cli(&["machine", "add", &name, "--mac", &mac, "--bmc", bmc.url()]);
    let vars = vars(&rack, "mirrored1", &mac);
    rack.cli(&[
        "deploy",
        &name,
        "--image",
        "testos",
        "--vars",
        &vars,
        "--raid",
        "1",
        "--no-wait",
    ]);
    let wf = wait_workflow(&rack, &name, 0, DEPLOY_TIMEOUT).await;
    assert_eq!(
        wf["state"],
        "succeeded",
        "{wf:#}\nconsole:\n{}\nserver log:\n{}",
        serial_tail(&rack, 0, 6000),
        rack.server_log()
    );
    let raid = &wf["steps"][3];
    assert_eq!(raid["state"], "succeeded", "{raid:#}");
    assert_eq!(
        raid["output"]["members"].as_array().map(|m| m.len()),
        Some(2),
        "{raid:#}"
    );
    assert_eq!(
        wf["steps"][4]["output"]["target"], "/dev/md/rackboot0",
        "{:#}",
        wf["steps"][4]
    );
    let (host, addr) = wait_marker(&rack, 0).await;
    assert_eq!(
        (host.as_str(), addr.as_str()),
        ("mirrored1", "10.77.0.50/24")
    );

    // Metadata 1.0 sits at the end of each member: either disk alone is a
    // plain disk holding the whole installed system.
    for disk in [0, 1] {
        let (host, addr) = boot_with_disks(&rack, &name, vec![disk]).await;
        assert_eq!(
            (host.as_str(), addr.as_str()),
            ("mirrored1", "10.77.0.50/24"),
            "booted from disk {disk} alone"
        );
        assert!(ping(&rack, "10.77.0.50"), "disk {disk} alone: no ping");
    }
    rack.lab.set_attached_disks(0, None).unwrap();
}
