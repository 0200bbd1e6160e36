//! A lab machine behind a Redfish BMC (sushy-tools over the lab's private libvirt session daemon):
//! Redfish requests from inside the lab namespace really power the machine's QEMU on and off,
//! BootSourceOverrideTarget changes its boot order, and `down` leaves nothing behind.
//! Needs root, libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients, python3-libvirt,
//! curl, qemu-system-x86, ipxe-qemu, and sushy-tools in a venv (see rackboot_lab::redfish).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rackboot_lab::{BmcKind, Lab, LabConfig, MachineSpec, down, read_state};
use serde_json::Value;

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat[stat.rfind(')').unwrap() + 1..]
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// curl inside the lab namespace; returns (HTTP status, body).
fn redfish(lab: &Lab, auth: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = lab.netns().command("timeout");
    cmd.args(["60", "curl", "-sS", "-u", auth, "-X", method])
        .args(["-w", "\n%{http_code}"]);
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", body]);
    }
    let output = cmd
        .arg(format!("http://10.77.0.1:8000{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "curl {method} {path}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

fn system(lab: &Lab, path: &str) -> Value {
    let (status, body) = redfish(lab, "admin:password", "GET", path, None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn reset(lab: &Lab, path: &str, kind: &str) {
    let body = format!("{{\"ResetType\":\"{kind}\"}}");
    let (status, text) = redfish(
        lab,
        "admin:password",
        "POST",
        &format!("{path}/Actions/ComputerSystem.Reset"),
        Some(&body),
    );
    assert_eq!(status, 204, "{kind}: {text}");
}

fn boot_target(lab: &Lab, path: &str, target: &str) {
    let body = format!(
        "{{\"Boot\":{{\"BootSourceOverrideTarget\":\"{target}\",\"BootSourceOverrideEnabled\":\"Continuous\"}}}}"
    );
    let (status, text) = redfish(lab, "admin:password", "PATCH", path, Some(&body));
    assert!(status == 204 || status == 200, "{target}: {status} {text}");
}

fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn redfish_requests_power_the_machine_through_libvirt() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    if let Err(err) = rackboot_lab::redfish::sushy_emulator() {
        panic!("{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    // QEMU runs as nobody: it must be able to reach the lab directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state_file = dir.path().join("lab.json");
    let mut config = LabConfig::new(
        dir.path().join("lab"),
        vec![MachineSpec::bios().with_disk(8)],
    );
    config.bmc = Some(BmcKind::Redfish);
    config.state_file = Some(state_file.clone());
    let lab = Lab::create(config).unwrap();
    let netns = lab.netns().name().to_string();
    let bmc = lab.bmc(0).unwrap();
    let url = bmc.url().to_string();
    let path = url
        .strip_prefix("redfish://admin:password@10.77.0.1:8000")
        .unwrap_or_else(|| panic!("{url}"))
        .to_string();
    assert!(path.starts_with("/redfish/v1/Systems/"), "{url}");
    let state = read_state(&state_file).unwrap();
    assert_eq!(state.machines[0].bmc_url.as_deref(), Some(url.as_str()));
    let service_pids = {
        let r = lab.redfish().unwrap();
        [r.sushy().pid(), r.libvirtd().pid()]
    };

    // Off at first; wrong credentials are refused.
    assert_eq!(system(&lab, &path)["PowerState"], "Off");
    assert_eq!(bmc.qemu_pid(), None);
    let (status, _) = redfish(&lab, "admin:wrong", "GET", &path, None);
    assert_eq!(status, 401);

    // Disk first, power on: QEMU runs with the disk first and SeaBIOS talks on the console.
    boot_target(&lab, &path, "Hdd");
    let offset = bmc.serial_len();
    reset(&lab, &path, "On");
    let first = wait_until("QEMU to start", Duration::from_secs(30), || bmc.qemu_pid());
    let args = cmdline(first);
    assert!(
        args.contains(r#""driver":"virtio-blk-pci""#) && args.contains(r#""bootindex":1"#),
        "{args}"
    );
    bmc.wait_for_serial("SeaBIOS", offset, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(system(&lab, &path)["PowerState"], "On");

    // PXE, restart: a new QEMU with the NIC first, appending to the same serial log.
    boot_target(&lab, &path, "Pxe");
    assert_eq!(
        system(&lab, &path)["Boot"]["BootSourceOverrideTarget"],
        "Pxe"
    );
    let offset = bmc.serial_len();
    reset(&lab, &path, "ForceRestart");
    let second = wait_until("QEMU to restart", Duration::from_secs(30), || {
        bmc.qemu_pid().filter(|pid| *pid != first)
    });
    let args = cmdline(second);
    let nic = args
        .find(r#""driver":"virtio-net-pci""#)
        .unwrap_or_else(|| panic!("{args}"));
    let nic_device = &args[nic..nic + args[nic..].find('}').unwrap()];
    assert!(nic_device.contains(r#""bootindex":1"#), "{nic_device}");
    bmc.wait_for_serial("SeaBIOS", offset, Duration::from_secs(60))
        .await
        .unwrap();

    // Off: QEMU goes away.
    reset(&lab, &path, "ForceOff");
    wait_until("QEMU to exit", Duration::from_secs(20), || {
        (!process_alive(second)).then_some(())
    });
    assert_eq!(system(&lab, &path)["PowerState"], "Off");

    // Pull the disk: the domain is redefined without it, the DMI serial and the Pxe override
    // (which sushy keeps in the domain) stay.
    lab.set_attached_disks(0, Some(vec![])).unwrap();
    reset(&lab, &path, "On");
    let diskless = wait_until("QEMU to start", Duration::from_secs(30), || bmc.qemu_pid());
    let args = cmdline(diskless);
    assert!(!args.contains("virtio-blk-pci"), "{args}");
    assert!(args.contains("serial=RBLAB-m1"), "{args}");
    assert_eq!(
        system(&lab, &path)["Boot"]["BootSourceOverrideTarget"],
        "Pxe"
    );
    reset(&lab, &path, "ForceOff");
    wait_until("QEMU to exit", Duration::from_secs(20), || {
        (!process_alive(diskless)).then_some(())
    });
    // Back in, still after the NIC as Pxe asked.
    lab.set_attached_disks(0, None).unwrap();
    reset(&lab, &path, "On");
    let with_disk = wait_until("QEMU to start", Duration::from_secs(30), || bmc.qemu_pid());
    let args = cmdline(with_disk);
    assert!(args.contains(r#""serial":"rbm1d0""#), "{args}");
    let nic = args
        .find(r#""driver":"virtio-net-pci""#)
        .unwrap_or_else(|| panic!("{args}"));
    let nic_device = &args[nic..nic + args[nic..].find('}').unwrap()];
    assert!(nic_device.contains(r#""bootindex":1"#), "{nic_device}");
    reset(&lab, &path, "ForceOff");
    wait_until("QEMU to exit", Duration::from_secs(20), || {
        (!process_alive(with_disk)).then_some(())
    });

    // On again and left running: `down` removes the emulator, libvirtd and the VM.
    reset(&lab, &path, "On");
    let third = wait_until("QEMU to start", Duration::from_secs(30), || bmc.qemu_pid());
    lab.detach();
    let report = down(&state_file).unwrap();
    assert_eq!(report.netns_deleted.as_deref(), Some(netns.as_str()));
    assert!(!process_alive(third), "QEMU {third} survived down");
    for pid in service_pids {
        assert!(
            !process_alive(pid),
            "{pid} ({}) survived down",
            cmdline(pid)
        );
    }
    assert!(!Path::new("/run/netns").join(&netns).exists());
}

/// A UEFI machine behind Redfish: libvirt boots it from OVMF with the machine's own variable store;
/// the lab's own power switch goes through libvirt; dropping the lab stops everything.
#[tokio::test]
async fn uefi_machine_behind_redfish_boots_ovmf_and_dropping_the_lab_stops_it() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    if let Err(err) = rackboot_lab::redfish::sushy_emulator() {
        panic!("{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = LabConfig::new(dir.path().join("lab"), vec![MachineSpec::uefi()]);
    config.bmc = Some(BmcKind::Redfish);
    let mut lab = Lab::create(config).unwrap();
    let netns = lab.netns().name().to_string();
    lab.start_machine(0).unwrap();
    let bmc = lab.bmc(0).unwrap();
    let pid = bmc.qemu_pid().expect("powered on");
    let args = cmdline(pid);
    assert!(args.contains("OVMF_CODE_4M.fd"), "{args}");
    assert!(args.contains("m1.vars.fd"), "{args}");
    // OVMF prints its boot manager lines on the serial console.
    bmc.wait_for_serial("BdsDxe", 0, Duration::from_secs(180))
        .await
        .unwrap();
    let (sushy, libvirtd) = {
        let r = lab.redfish().unwrap();
        (r.sushy().pid(), r.libvirtd().pid())
    };
    drop(lab);
    assert!(!process_alive(pid));
    assert!(!process_alive(sushy) && !process_alive(libvirtd));
    assert!(!Path::new("/run/netns").join(&netns).exists());
}
