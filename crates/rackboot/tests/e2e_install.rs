//! End to end with a real installer: Debian's netboot tree (package
//! debian-installer-12-netboot-amd64) is imported into rackboot's OS catalog;
//! a lab machine set to install debian-12 network-boots through rackboot into
//! the Debian installer, on the lab network as `rackboot serve --dhcp-range`
//! sets it up (no router, no DNS server) and with no hand-written kernel
//! argument: rackboot tells d-i what the network lacks, so netcfg does not
//! stop to ask, and the installer fetches its rendered preseed and runs its
//! early command, which calls rackboot back (no package mirror is needed for
//! that). The installer's last two calls, "installed" (its late_command) and
//! the installed system's first-boot report, are then made by the test from
//! the machine's leased address (borrowed while the machine is off: script,
//! files and callbacks go to the machine's address only), and the machine's
//! next boot is told to use its disk. A whole install from a local mirror runs in
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

/// The address rackboot's DHCP last gave the machine.
fn leased_ip(rack: &Rack, mac: &str) -> String {
    let leases: serde_json::Value =
        serde_json::from_str(&rack.cli(&["lease", "list", "-o", "json"])).unwrap_or_default();
    leases
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["mac"].as_str() == Some(mac))
        .filter_map(|l| l["ip"].as_str())
        .next_back()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no lease for {mac}: {leases}"))
}

/// [`curl`] from the machine's address `ip`, which the server's namespace
/// borrows for the call (the machine must be off): rackboot serves an
/// install's files and takes its callbacks from there only.
fn curl_as(rack: &Rack, ip: &str, method: &str, url: &str) -> String {
    let cidr = format!("{ip}/32");
    let ns = rack.lab.netns();
    let added = ns
        .command("ip")
        .args(["addr", "add", &cidr, "dev", "lo"])
        .status()
        .unwrap();
    assert!(added.success(), "borrowing {ip}");
    let out = ns
        .command("curl")
        .args([
            "-sS",
            "--interface",
            ip,
            "-X",
            method,
            "-w",
            " %{http_code}",
            url,
        ])
        .output()
        .unwrap();
    // Given back at once: the machine's next boot needs replies to reach it.
    ns.command("ip")
        .args(["addr", "del", &cidr, "dev", "lo"])
        .status()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// The install's callback token, which only its installer receives (in its
/// file), read from the server's store as the test stands in for it.
async fn install_token(rack: &Rack, id: &str) -> String {
    let db = rack.state_dir.join("rackboot.db");
    let store = rackboot_store::open(&format!("sqlite:{}", db.display()))
        .await
        .expect("opening the server's store");
    store
        .get_install(id.parse().unwrap())
        .await
        .expect("the install")
        .token
}

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
    // The install's script goes to the machine only: another host (the
    // server's own address here) gets a refusal, and before the machine has
    // a lease nobody gets it. (The network arguments reach d-i: it would
    // stop at netcfg's questions without them and never call back.)
    let refused = curl(&rack, "GET", &format!("{}/boot/ipxe/{mac}", common::API));
    assert!(refused.ends_with("403"), "{refused}");
    assert!(!refused.contains("preseed.cfg"), "{refused}");

    rack.lab.start_machine(0).unwrap();
    wait_for_event(&rack, &name, "install_file_served", INSTALLER_TIMEOUT).await;
    let timeline = wait_for_event(&rack, &name, "install_started", Duration::from_secs(180)).await;
    assert!(timeline.contains("install_requested"), "{timeline}");
    rack.lab.stop_machine(0).unwrap();
    let ip = leased_ip(&rack, &mac);
    let id = install_id(&rack, &name);
    // The file is under the install's secret, from the machine's script.
    let preseed_url = preview
        .split_whitespace()
        .find_map(|w| {
            w.strip_prefix("url=")
                .filter(|u| u.ends_with("/preseed.cfg"))
        })
        .unwrap_or_else(|| panic!("no preseed URL in the preview:\n{preview}"))
        .to_string();
    assert!(
        preseed_url.starts_with(&format!("{}/install/{id}/", common::API))
            && preseed_url.len() > format!("{}/install/{id}/preseed.cfg", common::API).len(),
        "{preseed_url}"
    );
    // Its installer reported started: the file is no longer served, not
    // even to the machine; another host was never served it.
    let closed = curl_as(&rack, &ip, "GET", &preseed_url);
    assert!(closed.ends_with("410"), "{closed}");
    let other = curl(&rack, "GET", &preseed_url);
    assert!(other.ends_with("403"), "{other}");
    let token = install_token(&rack, &id).await;
    let installed = format!("{}/install/{id}/installed/{token}", common::API);
    let done = format!("{}/install/{id}/done/{token}", common::API);

    // Another host with the token cannot move the machine to its disk.
    let replay = curl(&rack, "POST", &installed);
    assert!(replay.ends_with("403"), "{replay}");
    // What the preseed's late_command does at the end of a real install.
    let first = curl_as(&rack, &ip, "POST", &installed);
    assert!(
        first.contains("installed; the machine boots its disk now") && first.ends_with("200"),
        "{first}"
    );
    let again = curl_as(&rack, &ip, "POST", &installed);
    assert!(
        again.contains("already installed") && again.ends_with("200"),
        "{again}"
    );
    let gone = curl_as(&rack, &ip, "GET", &preseed_url);
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
    let wrong = curl_as(&rack, &ip, "POST", &format!("{}x", done));
    assert!(
        wrong.ends_with("404"),
        "a wrong token must not complete anything: {wrong}"
    );
    let first = curl_as(&rack, &ip, "POST", &done);
    assert!(
        first.contains("completed") && first.ends_with("200"),
        "{first}"
    );
    let again = curl_as(&rack, &ip, "POST", &done);
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

    // The menu's config went to the machine only; its installer reported
    // started, so it is no longer served, not even to the machine.
    let ip = leased_ip(&rack, &mac);
    let config_url = format!("{}/boot/pxelinux/{mac}", common::API);
    let other = curl(&rack, "GET", &config_url);
    assert!(other.ends_with("403"), "{other}");
    let closed = curl_as(&rack, &ip, "GET", &config_url);
    assert!(closed.ends_with("410"), "{closed}");
    // The installer's last step, from the machine, with the token its
    // preseed carried.
    let token = install_token(&rack, &id).await;
    let installed = format!("{}/install/{id}/installed/{token}", common::API);
    let done = curl_as(&rack, &ip, "POST", &installed);
    assert!(done.ends_with("200"), "{done}");
    let shown = rack.cli(&["machine", "show", &name]);
    assert!(
        shown.contains("local-disk"),
        "the menu is replaced: {shown}"
    );
}
