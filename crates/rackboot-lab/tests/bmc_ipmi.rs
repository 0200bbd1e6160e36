//! A lab machine behind an emulated IPMI BMC (OpenIPMI ipmi_sim): ipmitool over RMCP+ from inside
//! the lab namespace really powers the machine's QEMU on and off, `chassis bootdev` changes the
//! boot order of the next power-on, and `down` from the state file leaves nothing behind.
//! Needs root, openipmi (ipmi_sim), ipmitool, qemu-system-x86, ipxe-qemu.

use std::path::Path;
use std::time::{Duration, Instant};

use rackboot_lab::{BmcKind, Lab, LabConfig, MachineSpec, down, read_state};

fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: apt-get install -y {package}"
    );
}

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

/// `ipmitool -I lanplus ... ARGS` inside the lab namespace, bounded by timeout(1).
fn ipmitool(lab: &Lab, port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let output = lab
        .netns()
        .command("timeout")
        .args(["30", "ipmitool", "-I", "lanplus", "-H", "10.77.0.1", "-p"])
        .arg(&port)
        .args(["-U", "admin", "-P", "password", "-C", "3"])
        .args(args)
        .output()
        .expect("run ipmitool");
    assert!(
        output.status.success(),
        "ipmitool {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Polls `check` every 100 ms for up to `timeout`.
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
async fn ipmitool_powers_the_machine_through_its_bmc() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    require("ipmi_sim", "openipmi");
    require("ipmitool", "ipmitool");
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("lab.json");
    let mut config = LabConfig::new(
        dir.path().join("lab"),
        vec![MachineSpec::bios().with_disk(8)],
    );
    config.bmc = Some(BmcKind::Ipmi);
    config.state_file = Some(state_file.clone());
    let lab = Lab::create(config).unwrap();
    let netns = lab.netns().name().to_string();
    let bmc = lab.bmc(0).expect("a BMC lab has one BMC per machine");
    assert_eq!(bmc.url(), "ipmi://admin:password@10.77.0.1:6231?cipher=3");
    let sim_pid = bmc.ipmi_sim().unwrap().process().pid();
    let state = read_state(&state_file).unwrap();
    assert_eq!(state.machines.len(), 1);
    assert_eq!(state.machines[0].mac, "52:54:00:00:00:01");
    assert_eq!(state.machines[0].bmc_url.as_deref(), Some(bmc.url()));
    assert!(
        state.processes.iter().any(|p| p.pid == sim_pid),
        "{state:?}"
    );

    // Machines in a BMC lab start powered off.
    assert_eq!(bmc.qemu_pid(), None);
    assert_eq!(
        ipmitool(&lab, 6231, &["chassis", "power", "status"]),
        "Chassis Power is off"
    );

    // Boot from disk, power on: QEMU runs with the disk first and SeaBIOS talks on the console.
    ipmitool(&lab, 6231, &["chassis", "bootdev", "disk"]);
    let offset = bmc.serial_len();
    assert_eq!(
        ipmitool(&lab, 6231, &["chassis", "power", "on"]),
        "Chassis Power Control: Up/On"
    );
    let first = wait_until("QEMU to start", Duration::from_secs(20), || bmc.qemu_pid());
    assert!(process_alive(first));
    let args = cmdline(first);
    assert!(
        args.contains("virtio-blk-pci,drive=disk0,serial=rbm1d0,bootindex=1"),
        "{args}"
    );
    assert!(args.contains("mac=52:54:00:00:00:01,bootindex=2"), "{args}");
    let line = bmc
        .wait_for_serial("SeaBIOS", offset, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(line.contains("SeaBIOS"), "{line}");
    assert_eq!(
        ipmitool(&lab, 6231, &["chassis", "power", "status"]),
        "Chassis Power is on"
    );

    // PXE next, power cycle: a new QEMU with the NIC first, appending to the same serial log.
    ipmitool(&lab, 6231, &["chassis", "bootdev", "pxe"]);
    let offset = bmc.serial_len();
    assert!(offset > 0);
    assert_eq!(
        ipmitool(&lab, 6231, &["chassis", "power", "cycle"]),
        "Chassis Power Control: Cycle"
    );
    let second = wait_until("QEMU to restart", Duration::from_secs(30), || {
        bmc.qemu_pid().filter(|pid| *pid != first)
    });
    wait_until("the first QEMU to exit", Duration::from_secs(10), || {
        (!process_alive(first)).then_some(())
    });
    let args = cmdline(second);
    assert!(args.contains("mac=52:54:00:00:00:01,bootindex=1"), "{args}");
    bmc.wait_for_serial("SeaBIOS", offset, Duration::from_secs(60))
        .await
        .unwrap();
    let serial = std::fs::read_to_string(bmc.serial_log()).unwrap();
    assert!(
        serial.matches("SeaBIOS").count() >= 2,
        "log appended across power cycles"
    );

    // Hard reset: a new QEMU at once. Soft off (ACPI button on real hardware): QEMU exits cleanly.
    assert_eq!(
        ipmitool(&lab, 6231, &["chassis", "power", "reset"]),
        "Chassis Power Control: Reset"
    );
    let reset = bmc.qemu_pid().expect("running after a reset");
    assert_ne!(reset, second);
    assert!(!process_alive(second));
    assert_eq!(
        ipmitool(&lab, 6231, &["chassis", "power", "soft"]),
        "Chassis Power Control: Soft"
    );
    assert!(!process_alive(reset));
    assert_eq!(bmc.qemu_pid(), None);

    // Power on and off: QEMU goes away.
    ipmitool(&lab, 6231, &["chassis", "power", "on"]);
    let on = wait_until("QEMU to start", Duration::from_secs(20), || bmc.qemu_pid());
    assert_eq!(
        ipmitool(&lab, 6231, &["chassis", "power", "off"]),
        "Chassis Power Control: Down/Off"
    );
    wait_until("QEMU to exit", Duration::from_secs(10), || {
        (!process_alive(on)).then_some(())
    });
    assert_eq!(bmc.qemu_pid(), None);
    assert_eq!(
        ipmitool(&lab, 6231, &["chassis", "power", "status"]),
        "Chassis Power is off"
    );
    let log = std::fs::read_to_string(bmc.chassis().unwrap().log()).unwrap();
    assert!(log.contains("power off (TERM)"), "{log}");

    // Powered on again and left running: `down` from the state file stops the BMC and its VM.
    ipmitool(&lab, 6231, &["chassis", "power", "on"]);
    let third = wait_until("QEMU to start", Duration::from_secs(20), || bmc.qemu_pid());
    let detached = lab.detach();
    assert!(detached.processes.iter().any(|p| p.pid == sim_pid));
    assert!(process_alive(third) && process_alive(sim_pid));
    let report = down(&state_file).unwrap();
    assert_eq!(report.netns_deleted.as_deref(), Some(netns.as_str()));
    assert!(!process_alive(third), "QEMU {third} survived down");
    assert!(!process_alive(sim_pid), "ipmi_sim {sim_pid} survived down");
    assert!(!Path::new("/run/netns").join(&netns).exists());
    assert!(!state_file.exists());
}

#[tokio::test]
async fn dropping_a_bmc_lab_powers_its_machines_off() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    require("ipmi_sim", "openipmi");
    let dir = tempfile::tempdir().unwrap();
    let mut config = LabConfig::new(dir.path(), vec![MachineSpec::bios(), MachineSpec::uefi()]);
    config.bmc = Some(BmcKind::Ipmi);
    let mut lab = Lab::create(config).unwrap();
    let netns = lab.netns().name().to_string();
    assert_eq!(
        lab.bmc(1).unwrap().url(),
        "ipmi://admin:password@10.77.0.1:6232?cipher=3"
    );
    // The lab's own power switch goes through the chassis program too.
    lab.start_machine(1).unwrap();
    let pid = lab.bmc(1).unwrap().qemu_pid().expect("powered on");
    assert!(cmdline(pid).contains("OVMF_CODE"), "{}", cmdline(pid));
    assert_eq!(
        lab.bmc(0).unwrap().qemu_pid(),
        None,
        "only m2 was powered on"
    );
    let sims: Vec<u32> = lab
        .bmcs()
        .iter()
        .map(|b| b.ipmi_sim().unwrap().process().pid())
        .collect();
    drop(lab);
    assert!(!process_alive(pid));
    assert!(sims.iter().all(|p| !process_alive(*p)));
    assert!(!Path::new("/run/netns").join(&netns).exists());
}
