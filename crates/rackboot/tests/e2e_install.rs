//! End to end with a real installer: Debian's netboot tree (package
//! debian-installer-12-netboot-amd64) is imported into rackboot's OS catalog;
//! a lab machine set to install debian-12 network-boots through rackboot into
//! the Debian installer, which fetches its rendered preseed and runs its early
//! command, which calls rackboot back (proof that the installer parsed the
//! file; no package mirror is needed for that). The completion callback that
//! the preseed's late_command would make after a real install is then made by
//! the test with the URL from the rendered file, and the machine's next boot
//! is told to use its disk. Needs root and the packages scripts/install-deps
//! installs.

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

/// The completion URL in the rendered preseed (its late_command calls it).
fn callback_url(rendered: &str) -> String {
    let done = rendered
        .find("/done/")
        .unwrap_or_else(|| panic!("no callback URL in the rendered preseed:\n{rendered}"));
    let start = rendered[..done]
        .rfind("http://")
        .expect("the callback is an http URL");
    let token_len = rendered[done + "/done/".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    rendered[start..done + "/done/".len() + token_len].to_string()
}

#[tokio::test]
async fn debian_installer_reads_its_preseed_and_the_machine_then_boots_its_disk() {
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
    rack.cli(&[
        "install",
        &name,
        "--os",
        "debian-12-amd64",
        "--set",
        &keys,
        "--kernel-arg",
        "console=ttyS0,115200n8",
        // The lab network has no router and no DNS; d-i would ask about both
        // before reading its file.
        "--kernel-arg",
        "netcfg/no_default_route=true",
        "--kernel-arg",
        "netcfg/get_nameservers=10.77.0.1",
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
    let callback = callback_url(&preview);
    assert!(
        callback.starts_with("http://10.77.0.1:8080/install/") && !callback.contains(' '),
        "{callback}"
    );

    rack.lab.start_machine(0).unwrap();
    wait_for_event(&rack, &name, "install_file_served", INSTALLER_TIMEOUT).await;
    let timeline = wait_for_event(&rack, &name, "install_started", Duration::from_secs(180)).await;
    assert!(timeline.contains("install_requested"), "{timeline}");
    rack.lab.stop_machine(0).unwrap();

    // What the preseed's late_command does at the end of a real install.
    let curl = |method: &str, url: &str| {
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
    };
    let first = curl("POST", &callback);
    assert!(
        first.contains("completed") && first.ends_with("200"),
        "{first}"
    );
    let again = curl("POST", &callback);
    assert!(
        again.contains("already completed") && again.ends_with("200"),
        "{again}"
    );
    let wrong = curl("POST", &format!("{}x", callback));
    assert!(
        wrong.ends_with("404"),
        "a wrong token must not complete anything: {wrong}"
    );
    let file_url = callback.split("/done/").next().unwrap().to_string() + "/preseed.cfg";
    let gone = curl("GET", &file_url);
    assert!(
        gone.ends_with("410"),
        "a completed install's file must be gone: {gone}"
    );

    let shown = rack.cli(&["machine", "show", &name]);
    assert!(shown.contains("local-disk"), "{shown}");
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
    assert!(timeline.contains("install_completed"), "{timeline}");
}

/// The seeds' workflow, made safe: a pxelinux menu of installable OSes. The
/// menu's installer entry (its default here, after 1 s) loads d-i's kernel
/// and initrd over TFTP from the OS catalog; the installer reads the preseed
/// armed for that entry and calls back; completion moves the machine to
/// local disk.
#[tokio::test]
async fn pxelinux_install_menu_boots_the_installer_over_tftp() {
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
        "--kernel-arg",
        "netcfg/no_default_route=true",
        "--kernel-arg",
        "netcfg/get_nameservers=10.77.0.1",
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

    // The preseed served for the entry carries its own callback.
    let file = rack
        .lab
        .netns()
        .command("curl")
        .args([
            "-sS",
            &format!("http://10.77.0.1:8080/install/{id}/preseed.cfg"),
        ])
        .output()
        .unwrap();
    let callback = callback_url(&String::from_utf8_lossy(&file.stdout));
    let done = rack
        .lab
        .netns()
        .command("curl")
        .args(["-sS", "-X", "POST", "-w", " %{http_code}", &callback])
        .output()
        .unwrap();
    let done = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(done.ends_with("200"), "{done}");
    let shown = rack.cli(&["machine", "show", &name]);
    assert!(
        shown.contains("local-disk"),
        "the menu is replaced: {shown}"
    );
}
