//! End to end with a real installer: Debian's netboot tree (package
//! debian-installer-12-netboot-amd64) is imported into rackboot's OS catalog;
//! a lab machine set to install debian-12 network-boots through rackboot into
//! the Debian installer, on the lab network as `rackboot serve --dhcp-range`
//! sets it up (no router, no DNS server) and with no hand-written kernel
//! argument: rackboot tells d-i what the network lacks, so netcfg does not
//! stop to ask, and the installer fetches its rendered preseed and runs its
//! early command, which calls rackboot back (no package mirror is needed for
//! that). The installer's last two calls, "installed" (its late_command) and
//! the installed system's first-boot report, are then made by the test with
//! the URLs from the rendered file, and the machine's next boot is told to
//! use its disk. A whole install from a local mirror runs in
//! tests/e2e_install_full.rs (scripts/test-long). Needs root and the
//! packages scripts/install-deps installs.

mod common;

use std::time::{Duration, Instant};

use common::{Rack, VMS};
use rackboot_lab::{MachineSpec, firmware};

const NETBOOT_TREE: &str = "/usr/lib/debian-installer/images/12/amd64/text";
/// d-i's kernel, a 30 MB initrd and its early start under TCG on shared cores.
const INSTALLER_TIMEOUT: Duration = Duration::from_secs(480);
const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv1sCq0b4vYtq9pS8b1jFh1Kq6YwJ7cT4Jx0h2mZ0aB ops@rackboot-test";

async fn wait_for_event(rack: &Rack, machine: &str, kind: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let timeline = rack.cli(&["timeline", machine]);
        if timeline.contains(kind) {
            return timeline;
        }
        if Instant::now() > deadline {
            let serial = std::fs::read_to_string(rack.lab.machine(0).config().serial_log())
                .unwrap_or_default();
            let tail: String = serial
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!(
                "no {kind} within {timeout:?}\ntimeline:\n{timeline}\nserial tail:\n{tail}\nserver log:\n{}",
                rack.server_log()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The first callback URL with `/kind/` in the rendered preseed: `installed`
/// (its late_command calls it) or `done` (the installed system's first-boot
/// unit does; the preseed names it in a comment).
fn callback_url(rendered: &str, kind: &str) -> String {
    let marker = format!("/{kind}/");
    let at = rendered
        .find(&marker)
        .unwrap_or_else(|| panic!("no {kind} URL in the rendered preseed:\n{rendered}"));
    let start = rendered[..at]
        .rfind("http://")
        .expect("the callback is an http URL");
    let token_len = rendered[at + marker.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    rendered[start..at + marker.len() + token_len].to_string()
}

fn curl(rack: &Rack, method: &str, url: &str) -> String {
    let out = rack
        .lab
        .netns()
        .command("curl")
        .args(["-sS", "-X", method, "-w", " %{http_code}", url])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// What the server tells d-i about the lab network (no router, no DNS).
const NETWORK_ARGS: [&str; 2] = [
    "netcfg/no_default_route=true",
    "netcfg/get_nameservers=127.0.0.1",
];

#[tokio::test]
async fn debian_installer_reads_its_preseed_and_the_machine_then_boots_its_disk() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    assert!(
        std::path::Path::new(NETBOOT_TREE).is_dir(),
        "{NETBOOT_TREE} is missing: apt-get install -y debian-installer-12-netboot-amd64"
    );
    let _vms = VMS.lock().await;
    let mut rack = Rack::start(
        vec![MachineSpec::bios().with_memory(1024).with_disk(64)],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;

    // Import the real netboot tree; the server sees it at once.
    let imported = rack.cli(&["os", "import", NETBOOT_TREE]);
    assert!(imported.contains("debian-12-amd64"), "{imported}");
    let listed = rack.cli(&["os", "list"]);
    assert!(
        listed.contains("debian-12-amd64") && listed.contains("debian"),
        "{listed}"
    );

    let name = rack.lab.machine(0).name().to_string();
    let mac = rack.lab.machine(0).mac();
    rack.cli(&["machine", "add", &name, "--mac", &mac]);
    let keys = format!("ssh_authorized_keys=[\"{SSH_KEY}\"]");
    // A value that does not render is refused up front, naming it.
    let bad = rack
        .try_cli(&[
            "install",
            &name,
            "--os",
            "debian-12-amd64",
            "--set",
            "hostname=no_underscores",
        ])
        .unwrap_err();
    assert!(bad.contains("hostname"), "{bad}");
    // No kernel argument but the console: rackboot knows its own DHCP
    // offers no router and no DNS server, and says so.
    rack.cli(&[
        "install",
        &name,
        "--os",
        "debian-12-amd64",
        "--set",
        &keys,
        "--kernel-arg",
        "console=ttyS0,115200n8",
    ]);
    let preview = rack.cli(&["render", &name]);
    assert!(
        preview.contains("boots: install") && preview.contains("preseed.cfg"),
        "{preview}"
    );
    assert!(
        preview.contains("d-i preseed/late_command"),
        "the preseed should end with its late command:\n{preview}"
    );
    let script = curl(&rack, "GET", &format!("{}/boot/ipxe/{mac}", common::API));
    for arg in NETWORK_ARGS {
        assert!(script.contains(arg), "{arg} missing from\n{script}");
    }

    rack.lab.start_machine(0).unwrap();
    wait_for_event(&rack, &name, "install_file_served", INSTALLER_TIMEOUT).await;
    let timeline = wait_for_event(&rack, &name, "install_started", Duration::from_secs(180)).await;
    assert!(timeline.contains("install_requested"), "{timeline}");
    // The file as the machine got it: the lab network's facts reached it too.
    let preseed_url = format!(
        "{}/install/{}/preseed.cfg",
        common::API,
        install_id(&rack, &name)
    );
    let served = curl(&rack, "GET", &preseed_url);
    assert!(
        served.contains("d-i clock-setup/ntp boolean false") && served.ends_with("200"),
        "{served}"
    );
    rack.lab.stop_machine(0).unwrap();
    let installed = callback_url(&served, "installed");
    let done = callback_url(&served, "done");
    assert!(
        installed.starts_with("http://10.77.0.1:8080/install/") && !installed.contains(' '),
        "{installed}"
    );

    // What the preseed's late_command does at the end of a real install.
    let first = curl(&rack, "POST", &installed);
    assert!(
        first.contains("installed; the machine boots its disk now") && first.ends_with("200"),
        "{first}"
    );
    let again = curl(&rack, "POST", &installed);
    assert!(
        again.contains("already installed") && again.ends_with("200"),
        "{again}"
    );
    let gone = curl(&rack, "GET", &preseed_url);
    assert!(
        gone.ends_with("410"),
        "an installed install's file must be gone: {gone}"
    );
    let shown = rack.cli(&["machine", "show", &name]);
    assert!(shown.contains("local-disk"), "{shown}");
    let installs = rack.cli(&["installs", "--machine", &name]);
    assert!(
        installs.contains("installed") && !installs.contains("completed"),
        "not completed before the installed system reports:\n{installs}"
    );

    // What the installed system's first-boot unit does.
    let wrong = curl(&rack, "POST", &format!("{}x", done));
    assert!(
        wrong.ends_with("404"),
        "a wrong token must not complete anything: {wrong}"
    );
    let first = curl(&rack, "POST", &done);
    assert!(
        first.contains("completed") && first.ends_with("200"),
        "{first}"
    );
    let again = curl(&rack, "POST", &done);
    assert!(
        again.contains("already completed") && again.ends_with("200"),
        "{again}"
    );
    let installs = rack.cli(&["installs", "--machine", &name]);
    assert!(installs.contains("completed"), "{installs}");

    // The next network boot is told to boot the disk (blank here: SeaBIOS says
    // so; the installer boot never got that far on the disk).
    let serial = rack.lab.machine(0).config().serial_log();
    rack.lab.start_machine(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let text = std::fs::read(&serial).unwrap_or_default();
        let new = String::from_utf8_lossy(&text).into_owned();
        if new.contains(firmware::SEABIOS_DISK_NOT_BOOTABLE) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "second boot did not go to the disk:\n{new}\nserver log:\n{}",
            rack.server_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let timeline = rack.cli(&["timeline", &name]);
    for kind in ["finished on", "machine_booted", "install_completed"] {
        assert!(timeline.contains(kind), "{kind} missing:\n{timeline}");
    }
}

/// The id of the machine's newest install.
fn install_id(rack: &Rack, name: &str) -> String {
    let installs: serde_json::Value =
        serde_json::from_str(&rack.cli(&["installs", "--machine", name, "-o", "json"])).unwrap();
    installs
        .as_array()
        .and_then(|a| a.last())
        .and_then(|i| i["id"].as_str())
        .expect("an install")
        .to_string()
}

/// The seeds' workflow, made safe: a pxelinux menu of installable OSes. The
/// menu's installer entry (its default here, after 1 s) loads d-i's kernel
/// and initrd over TFTP from the OS catalog; the installer reads the preseed
/// armed for that entry and calls back; completion moves the machine to
/// local disk.
#[tokio::test]
async fn pxelinux_install_menu_boots_the_installer_over_tftp() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    assert!(
        std::path::Path::new(NETBOOT_TREE).is_dir(),
        "{NETBOOT_TREE} is missing: apt-get install -y debian-installer-12-netboot-amd64"
    );
    let _vms = VMS.lock().await;
    let mut rack = Rack::start(
        vec![MachineSpec::bios().with_memory(1024).with_disk(64)],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    rack.cli(&["os", "import", NETBOOT_TREE]);
    let name = rack.lab.machine(0).name().to_string();
    let mac = rack.lab.machine(0).mac();
    rack.cli(&["machine", "add", &name, "--mac", &mac]);
    let keys = format!("ssh_authorized_keys=[\"{SSH_KEY}\"]");
    let set = rack.cli(&[
        "install",
        &name,
        "--menu",
        "--os",
        "debian-12-amd64",
        "--loader",
        "pxelinux",
        "--default",
        "debian-12-amd64",
        "--timeout",
        "1",
        "--set",
        &keys,
        "--kernel-arg",
        "console=ttyS0,115200n8",
    ]);
    assert!(set.contains("gets a boot menu"), "{set}");
    let installs: serde_json::Value =
        serde_json::from_str(&rack.cli(&["installs", "--machine", &name, "-o", "json"])).unwrap();
    let id = installs[0]["id"].as_str().unwrap().to_string();
    let preview = rack.cli(&["render", &name]);
    assert!(preview.contains("boots: menu"), "{preview}");

    rack.lab.start_machine(0).unwrap();
    let timeline = wait_for_event(&rack, &name, "install_started", INSTALLER_TIMEOUT).await;
    for step in ["script_served", "install_file_served"] {
        assert!(timeline.contains(step), "{step} missing:\n{timeline}");
    }
    // pxelinux fetched the installer over TFTP from the catalog.
    let tftp: Vec<&str> = timeline
        .lines()
        .filter(|l| l.contains("tftp_sent"))
        .collect();
    for file in [
        "pxelinux.0",
        "menu.c32",
        "os/debian-12-amd64/debian-installer/amd64/linux",
        "os/debian-12-amd64/debian-installer/amd64/initrd.gz",
    ] {
        assert!(
            tftp.iter().any(|l| l.contains(file)),
            "{file} not sent over TFTP:\n{timeline}"
        );
    }
    rack.lab.stop_machine(0).unwrap();

    // The pxelinux config tells d-i what the network lacks, as iPXE does.
    let config = curl(
        &rack,
        "GET",
        &format!("{}/boot/pxelinux/{mac}", common::API),
    );
    for arg in NETWORK_ARGS {
        assert!(config.contains(arg), "{arg} missing from\n{config}");
    }
    // The preseed served for the entry carries its own callbacks.
    let file = curl(
        &rack,
        "GET",
        &format!("http://10.77.0.1:8080/install/{id}/preseed.cfg"),
    );
    let installed = callback_url(&file, "installed");
    let done = curl(&rack, "POST", &installed);
    assert!(done.ends_with("200"), "{done}");
    let shown = rack.cli(&["machine", "show", &name]);
    assert!(
        shown.contains("local-disk"),
        "the menu is replaced: {shown}"
    );
}
