//! Lab namespace lifecycle without VMs: bridge and taps exist, processes are tracked in the state
//! file, `down` from "another process" (a detached lab) and Drop both leave nothing behind; the
//! DHCP-only dnsmasq stand-in. Needs root, dnsmasq-base, busybox-static.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rackboot_lab::{
    DnsmasqRole, Lab, LabConfig, MachineSpec, Netns, NetnsConfig, down, read_state,
};

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn process_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat[stat.rfind(')').unwrap() + 1..]
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn sleeper(lab: &Lab) -> Command {
    let mut cmd = lab.netns().command("sleep");
    cmd.arg("300");
    cmd
}

#[tokio::test]
async fn detached_lab_is_removed_by_down_from_its_state_file() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state/lab.json");
    let mut config = LabConfig::new(
        dir.path().join("lab"),
        vec![MachineSpec::bios(), MachineSpec::uefi()],
    );
    config.state_file = Some(state_file.clone());
    let mut lab = Lab::create(config).unwrap();
    let name = lab.netns().name().to_string();
    assert!(netns_exists(&name));

    // The bridge has its address and both taps are its ports.
    let links = lab
        .netns()
        .exec("ip", ["-o", "link", "show", "master", "br0"])
        .unwrap();
    assert!(links.contains("tap1") && links.contains("tap2"), "{links}");
    let addrs = lab
        .netns()
        .exec("ip", ["-o", "-4", "addr", "show", "br0"])
        .unwrap();
    assert!(addrs.contains("10.77.0.1/24"), "{addrs}");
    assert_eq!(lab.machine(1).mac(), "52:54:00:00:00:02");

    // A second lab on the same state file is refused while this one is up.
    let mut again = LabConfig::new(dir.path().join("lab2"), vec![]);
    again.state_file = Some(state_file.clone());
    assert!(Lab::create(again).is_err());

    let pid = lab.spawn_server_command(sleeper(&lab)).unwrap().pid();
    let recorded = read_state(&state_file).unwrap();
    assert_eq!(recorded.netns, name);
    assert_eq!(recorded.processes.len(), 1);
    assert_eq!(recorded.processes[0].pid, pid);

    let detached = lab.detach();
    assert_eq!(detached.processes[0].pid, pid);
    assert!(netns_exists(&name), "detach must leave the lab running");
    assert!(process_alive(pid));

    let report = down(&state_file).unwrap();
    assert_eq!(report.netns_deleted.as_deref(), Some(name.as_str()));
    assert!(report.stopped.contains(&pid), "{report:?}");
    assert!(!netns_exists(&name));
    assert!(!process_alive(pid));
    assert!(!state_file.exists());
    // Idempotent.
    assert_eq!(down(&state_file).unwrap(), Default::default());
}

#[tokio::test]
async fn dropping_a_lab_stops_its_processes_and_deletes_the_namespace() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::create(LabConfig::new(dir.path(), vec![MachineSpec::bios()])).unwrap();
    let name = lab.netns().name().to_string();
    let mut echo = lab.netns().command("sh");
    echo.args([
        "-c",
        "echo ready in $(ip -o link show tap1 | cut -d: -f2); exec sleep 300",
    ]);
    let helper = lab.spawn_helper("helper", echo).unwrap();
    let line = helper
        .wait_for_output("ready in", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        line, "ready in tap1",
        "the helper runs inside the namespace"
    );
    let pid = helper.pid();
    drop(lab);
    assert!(!netns_exists(&name));
    assert!(!process_alive(pid));
}

#[tokio::test]
async fn waiting_for_output_of_an_exited_process_fails_fast() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::create(LabConfig::new(dir.path(), vec![])).unwrap();
    let mut cmd = lab.netns().command("sh");
    cmd.args(["-c", "echo something else; exit 3"]);
    let started = std::time::Instant::now();
    let err = lab
        .spawn_helper("short", cmd)
        .unwrap()
        .wait_for_output("never printed", Duration::from_secs(30))
        .await
        .unwrap_err();
    // Well before the 30 s wait would end.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    let message = err.to_string();
    assert!(
        message.contains("exited") && message.contains("something else"),
        "{message}"
    );
}

/// dnsmasq as the plain DHCP server next to rackboot in ProxyDHCP mode: hands out an address from
/// the lab range and no boot file. The client is busybox udhcpc in a second namespace joined to
/// the lab bridge by a veth pair.
#[tokio::test]
async fn dhcp_only_dnsmasq_leases_addresses_without_boot_information() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::create(LabConfig::new(dir.path().join("lab"), vec![])).unwrap();
    lab.start_dnsmasq(DnsmasqRole::DhcpOnly).await.unwrap();

    let client = Netns::create(&NetnsConfig::new(
        &rackboot_lab::unique_name("rbl-client"),
        "10.78.0.1".parse().unwrap(),
        24,
        0,
    ))
    .unwrap();
    let ip = |args: &[&str]| {
        let status = Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    let lab_ns = lab.netns().name().to_string();
    ip(&[
        "-n",
        &lab_ns,
        "link",
        "add",
        "vcl0",
        "type",
        "veth",
        "peer",
        "name",
        "cl0",
        "netns",
        client.name(),
    ]);
    ip(&["-n", &lab_ns, "link", "set", "vcl0", "master", "br0", "up"]);
    ip(&["-n", client.name(), "link", "set", "cl0", "up"]);

    let script = dir.path().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"bound ip=$ip boot_file=[$boot_file]\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // -n: exit if no lease; -q: exit after obtaining one; 5 tries, 1 s apart.
    let out = client
        .exec(
            "busybox",
            [
                "udhcpc", "-i", "cl0", "-f", "-n", "-q", "-t", "5", "-T", "1", "-s",
            ]
            .map(String::from)
            .into_iter()
            .chain([script.display().to_string()]),
        )
        .unwrap();
    let bound = out
        .lines()
        .find(|l| l.starts_with("bound "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(bound.starts_with("bound ip=10.77.0."), "{bound}");
    assert!(bound.ends_with("boot_file=[]"), "{bound}");
    let log = std::fs::read_to_string(lab.dir().join("dnsmasq.log")).unwrap();
    assert!(log.contains("DHCPACK(br0)"), "{log}");
}
