//! Rendered files checked by real tools: pykickstart's ksvalidator for every
//! RHEL kickstart (also after running its %pre against a fake sysfs, so the
//! lines %pre writes are validated too), `sh -n` (dash) and `busybox sh -n`
//! for every embedded shell fragment, the disk-picking line executed against
//! a fake /sys, Ubuntu network sections through `netplan generate`, and
//! SHA-512 crypt hashes checked by glibc's crypt(3) (perl).
//!
//! Needs: ksvalidator (PyPI `pykickstart`, looked for in
//! /opt/rackboot-venv/bin first, then PATH), dash (`sh`), busybox, perl,
//! netplan (Debian `netplan.io`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rackboot_core::OsFamily;
use rackboot_install::{DiskSelector, Rendered, TemplateChoice, render};

fn tool(name: &str, hint: &str) -> PathBuf {
    let venv = Path::new("/opt/rackboot-venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("required tool `{name}` not found in /opt/rackboot-venv/bin or PATH: {hint}");
}

fn ksvalidator() -> PathBuf {
    tool(
        "ksvalidator",
        "python3 -m venv /opt/rackboot-venv && /opt/rackboot-venv/bin/pip install pykickstart",
    )
}

fn all_renders(family: OsFamily) -> Vec<(String, String, Rendered)> {
    let mut out = Vec::new();
    for (f, version) in common::RELEASES.iter().filter(|(f, _)| *f == family) {
        for (machine, vars) in common::machines(*f) {
            let r = render(
                *f,
                version,
                TemplateChoice::Builtin,
                &vars,
                &common::secrets(*f),
            )
            .unwrap_or_else(|e| panic!("{f} {version} {machine}: {e}"));
            out.push((version.to_string(), machine.to_string(), r));
        }
    }
    out
}

fn run_ksvalidator(version: &str, name: &str, body: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.ks"));
    std::fs::write(&path, body).unwrap();
    let out = Command::new(ksvalidator())
        .arg("-v")
        .arg(format!("RHEL{version}"))
        .arg(&path)
        .output()
        .expect("run ksvalidator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn ksvalidator_knows_the_versions_and_catches_errors() {
    if !rackboot_testenv::programs(&[
        "ksvalidator",
        "busybox",
        "perl",
        "netplan",
        "systemd-analyze",
    ]) {
        return;
    }
    let out = Command::new(ksvalidator()).arg("-l").output().unwrap();
    let versions = String::from_utf8_lossy(&out.stdout).to_string();
    for v in ["RHEL8", "RHEL9", "RHEL10"] {
        assert!(
            versions.split_whitespace().any(|w| w == v),
            "{v} not in {versions}"
        );
    }
    // The validator rejects what it should, so a pass below means something.
    let (ok, text) = run_ksvalidator("9", "bad", "lang en_US.UTF-8\nnetwork --bootproto=dhcpp\n");
    assert!(!ok, "{text}");
    let (ok, text) = run_ksvalidator("9", "bad", "lang en_US.UTF-8\n%post\necho\n");
    assert!(!ok, "{text}");
}

#[test]
fn every_rhel_kickstart_passes_ksvalidator() {
    if !rackboot_testenv::programs(&[
        "ksvalidator",
        "busybox",
        "perl",
        "netplan",
        "systemd-analyze",
    ]) {
        return;
    }
    let renders = all_renders(OsFamily::Rhel);
    assert_eq!(renders.len(), 18);
    for (version, machine, r) in renders {
        let (ok, text) = run_ksvalidator(&version, &machine, &r.body);
        assert!(ok, "RHEL{version} {machine}:\n{text}\n{}", r.body);
    }
}

/// A fake /sys with disks and NICs, and a `udevadm` that knows nothing (so
/// serials come from the sysfs `serial` file, as for virtio disks).
struct FakeSys {
    dir: tempfile::TempDir,
}

impl FakeSys {
    fn new() -> FakeSys {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // name, 512-byte sectors, removable, serial
        for (name, size, removable, serial) in [
            ("vda", 41_943_040u64, 0, "SMALLDISK01"),
            ("vdb", 209_715_200, 0, "S3Z8NB0K123456"),
            ("sdc", 8_388_608, 1, "USBSTICK"),
            ("loop0", 10, 0, ""),
            ("sr0", 2_000_000, 1, ""),
            ("vdz", 0, 0, "EMPTY"),
        ] {
            let d = root.join("sys/block").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
            std::fs::write(d.join("removable"), format!("{removable}\n")).unwrap();
            std::fs::write(d.join("ro"), "0\n").unwrap();
            if !serial.is_empty() {
                std::fs::write(d.join("serial"), format!("{serial}\n")).unwrap();
            }
        }
        for (name, mac) in [
            ("ens3", "52:54:00:00:07:01"),
            ("ens4", "52:54:00:00:07:02"),
            ("ens5", "52:54:00:00:07:03"),
        ] {
            let d = root.join("sys/class/net").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
        }
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let udevadm = bin.join("udevadm");
        std::fs::write(&udevadm, "#!/bin/sh\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&udevadm, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeSys { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Points a script at the fake tree.
    fn localize(&self, script: &str) -> String {
        let r = self.root().display().to_string();
        script
            .replace("/sys/block/", &format!("{r}/sys/block/"))
            .replace("/sys/class/net/", &format!("{r}/sys/class/net/"))
            .replace("/tmp/rackboot-pre.ks", &format!("{r}/pre.ks"))
    }

    /// Runs a script with `shell` (argv prefix), the fake udevadm first in PATH.
    fn run(&self, shell: &[&str], script: &str) -> (bool, String, String) {
        let path = format!(
            "{}:{}",
            self.root().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(shell[0])
            .args(&shell[1..])
            .arg("-c")
            .arg(self.localize(script))
            .env("PATH", path)
            .output()
            .unwrap_or_else(|e| panic!("run {shell:?}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

fn busybox() -> PathBuf {
    tool("busybox", "apt-get install busybox-static")
}

fn shells() -> Vec<Vec<String>> {
    vec![
        vec![tool("sh", "dash is Debian's /bin/sh").display().to_string()],
        vec![busybox().display().to_string(), "sh".to_string()],
    ]
}

#[test]
fn disk_pick_line_chooses_by_rule_in_dash_and_busybox() {
    if !rackboot_testenv::programs(&[
        "ksvalidator",
        "busybox",
        "perl",
        "netplan",
        "systemd-analyze",
    ]) {
        return;
    }
    let sys = FakeSys::new();
    let cases = [
        (DiskSelector::Largest, Some("/dev/vdb")),
        (DiskSelector::Smallest, Some("/dev/vda")),
        (
            DiskSelector::Serial("S3Z8NB0K123456".into()),
            Some("/dev/vdb"),
        ),
        (DiskSelector::Serial("SMALLDISK01".into()), Some("/dev/vda")),
        // Removable and empty devices never match.
        (DiskSelector::Serial("USBSTICK".into()), None),
        (DiskSelector::Serial("EMPTY".into()), None),
        (DiskSelector::Serial("NOPE".into()), None),
        (DiskSelector::Path("/nonexistent/disk".into()), None),
    ];
    for shell in shells() {
        let shell: Vec<&str> = shell.iter().map(String::as_str).collect();
        for (rule, want) in &cases {
            let line = rackboot_install::context::disk_pick_sh(rule);
            let (ok, stdout, stderr) =
                sys.run(&shell, &format!("disk=$({line}) || exit 3; echo $disk"));
            match want {
                Some(dev) => {
                    assert!(ok, "{shell:?} {rule:?}: {stderr}");
                    assert_eq!(stdout.trim(), *dev, "{shell:?} {rule:?}");
                }
                None => {
                    assert!(!ok, "{shell:?} {rule:?} picked {stdout}");
                    assert!(
                        stderr.contains("rackboot:"),
                        "{shell:?} {rule:?}: {stderr:?}"
                    );
                }
            }
        }
    }
    // Nothing usable at all: the smallest/largest rules fail too.
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join("sys/block")).unwrap();
    let line = rackboot_install::context::disk_pick_sh(&DiskSelector::Largest).replace(
        "/sys/block/",
        &format!("{}/sys/block/", empty.path().display()),
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("d=$({line})"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn section_bodies<'a>(body: &'a str, header: &str, ends_with_end: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<&'a str>> = None;
    for line in body.lines() {
        let word = line.split_whitespace().next().unwrap_or("");
        if let Some(lines) = cur.as_mut() {
            let ends = if ends_with_end {
                word == "%end"
            } else {
                word.starts_with('%') && ["%pre", "%post", "%firstboot"].contains(&word)
            };
            if ends {
                out.push(cur.take().unwrap().join("\n"));
            } else {
                lines.push(line);
                continue;
            }
        }
        if word == header {
            cur = Some(Vec::new());
        }
    }
    if let Some(lines) = cur {
        out.push(lines.join("\n"));
    }
    out
}

#[test]
fn rhel_pre_writes_a_valid_include_on_a_fake_machine() {
    if !rackboot_testenv::programs(&[
        "ksvalidator",
        "busybox",
        "perl",
        "netplan",
        "systemd-analyze",
    ]) {
        return;
    }
    let sys = FakeSys::new();
    let mut checked = 0;
    for (version, machine, r) in all_renders(OsFamily::Rhel) {
        if !r.body.contains("%include /tmp/rackboot-pre.ks") {
            continue;
        }
        let pres = section_bodies(&r.body, "%pre", true);
        assert_eq!(pres.len(), 1, "{machine}");
        let (ok, _, stderr) = sys.run(&["sh"], &pres[0]);
        assert!(
            ok,
            "RHEL{version} {machine} %pre failed: {stderr}\n{}",
            pres[0]
        );
        let include = std::fs::read_to_string(sys.root().join("pre.ks")).unwrap();
        match machine.as_str() {
            "lvm" => assert!(include.contains("ignoredisk --only-use=vda\n"), "{include}"),
            "two-nics" | "dhcp" | "bond-vlan" | "isolated" => {
                assert!(include.contains("ignoredisk --only-use=vdb\n"), "{include}")
            }
            other => panic!("unexpected include for {other}"),
        }
        if machine == "bond-vlan" {
            assert!(include.contains("--bondslaves=ens3,ens4 "), "{include}");
            assert!(include.contains("--device=ens5 --vlanid=300"), "{include}");
        }
        let expanded = r.body.replace("%include /tmp/rackboot-pre.ks", &include);
        let (ok, text) = run_ksvalidator(&version, &machine, &expanded);
        assert!(
            ok,
            "RHEL{version} {machine} with its include:\n{text}\n{expanded}"
        );
        checked += 1;
    }
    assert!(checked >= 9, "{checked}");
}

fn assert_parses(what: &str, script: &str) {
    for shell in shells() {
        let out = Command::new(&shell[0])
            .args(&shell[1..])
            .arg("-n")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: {shell:?} -n: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_embedded_shell_fragment_parses() {
    if !rackboot_testenv::programs(&[
        "ksvalidator",
        "busybox",
        "perl",
        "netplan",
        "systemd-analyze",
    ]) {
        return;
    }
    let mut fragments = 0;
    for (version, machine, r) in all_renders(OsFamily::Rhel) {
        for header in ["%pre", "%post"] {
            for body in section_bodies(&r.body, header, true) {
                assert_parses(&format!("rhel {version} {machine} {header}"), &body);
                fragments += 1;
            }
        }
    }
    for (version, machine, r) in all_renders(OsFamily::Esxi) {
        for header in ["%pre", "%post", "%firstboot"] {
            for body in section_bodies(&r.body, header, false) {
                assert_parses(&format!("esxi {version} {machine} {header}"), &body);
                fragments += 1;
            }
        }
    }
    for (version, machine, r) in all_renders(OsFamily::Debian) {
        for line in r.body.lines() {
            for key in [
                "d-i partman/early_command string ",
                "d-i preseed/late_command string ",
            ] {
                if let Some(cmd) = line.strip_prefix(key) {
                    assert_parses(&format!("debian {version} {machine} {key}"), cmd);
                    fragments += 1;
                    // The base64 late script too.
                    if let Some(b64) = cmd.strip_prefix("echo ").and_then(|c| c.split(' ').next()) {
                        use base64::Engine as _;
                        let script = base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap();
                        assert_parses(
                            &format!("debian {version} {machine} late script"),
                            &String::from_utf8(script).unwrap(),
                        );
                        fragments += 1;
                    }
                }
            }
        }
    }
    for (version, machine, r) in all_renders(OsFamily::Ubuntu) {
        let doc: serde_yaml::Value = serde_yaml::from_str(&r.body).unwrap();
        let cmds = doc["autoinstall"]["late-commands"].as_sequence().unwrap();
        // The last command calls the server: "done", or "installed" when
        // the installed system reports its first boot itself.
        let last = cmds.last().unwrap().as_str().unwrap();
        assert!(
            last.contains("api/v1/install/done") || last.contains("api/v1/install/installed"),
            "{last}"
        );
        for c in cmds {
            assert_parses(&format!("ubuntu {version} {machine}"), c.as_str().unwrap());
            fragments += 1;
        }
    }
    for (version, machine, r) in all_renders(OsFamily::Suse) {
        let doc = roxmltree::Document::parse_with_options(
            &r.body,
            roxmltree::ParsingOptions {
                allow_dtd: true,
                ..Default::default()
            },
        )
        .unwrap();
        let sources: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("source"))
            .collect();
        let last = sources.last().unwrap().text().unwrap();
        assert!(
            last.contains("api/v1/install/done") || last.contains("api/v1/install/installed"),
            "{last}"
        );
        for s in sources {
            assert_parses(&format!("suse {version} {machine}"), s.text().unwrap());
            fragments += 1;
        }
    }
    assert!(fragments > 100, "{fragments}");
}

#[test]
fn debian_late_script_configures_the_network_on_a_fake_machine() {
    let sys = FakeSys::new();
    let (_, _, r) = all_renders(OsFamily::Debian)
        .into_iter()
        .find(|(v, m, _)| v == "12" && m == "bond-vlan")
        .unwrap();
    let line = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("d-i preseed/late_command string echo "))
        .unwrap();
    use base64::Engine as _;
    let script = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(line.split(' ').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    // Run only the network part against the fake machine and a fake /target.
    let target = sys.root().join("target");
    std::fs::create_dir_all(target.join("etc/network")).unwrap();
    let network_part: String = script
        .split("mkdir -p /target/root/.ssh")
        .next()
        .unwrap()
        .replace("/target/", &format!("{}/", target.display()));
    let (ok, _, stderr) = sys.run(&["sh"], &network_part);
    assert!(ok, "{stderr}\n{network_part}");
    let interfaces = std::fs::read_to_string(target.join("etc/network/interfaces")).unwrap();
    for want in [
        "auto ens5\niface ens5 inet dhcp\n",
        "iface bond0 inet manual\n    bond-slaves ens3 ens4\n    bond-mode 802.3ad\n",
        "iface bond0.200 inet static\n    address 10.200.0.17/24\n    gateway 10.200.0.1\n    vlan-raw-device bond0\n",
        "iface ens5.300 inet dhcp\n    vlan-raw-device ens5\n",
    ] {
        assert!(
            interfaces.contains(want),
            "missing {want:?} in\n{interfaces}"
        );
    }
}

#[test]
fn password_hashes_verify_with_glibc_crypt() {
    if !rackboot_testenv::programs(&[
        "ksvalidator",
        "busybox",
        "perl",
        "netplan",
        "systemd-analyze",
    ]) {
        return;
    }
    let hash = rackboot_install::hash_root_password("correct horse").unwrap();
    // perl's crypt() is glibc's crypt(3), what the installed systems use.
    let perl = tool("perl", "perl-base is part of every Debian system");
    let check = |pw: &str| {
        let out = Command::new(&perl)
            .args([
                "-e",
                "print crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? 1 : 0",
                pw,
                &hash,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    };
    assert!(check("correct horse"), "{hash}");
    assert!(!check("wrong horse"), "{hash}");
}

#[test]
fn ubuntu_network_passes_netplan_generate() {
    if !rackboot_testenv::programs(&[
        "ksvalidator",
        "busybox",
        "perl",
        "netplan",
        "systemd-analyze",
    ]) {
        return;
    }
    let netplan = tool(
        "netplan",
        "apt-get install --no-install-recommends netplan.io",
    );
    let mut checked = 0;
    for (version, machine, r) in all_renders(OsFamily::Ubuntu) {
        let doc: serde_yaml::Value = serde_yaml::from_str(&r.body).unwrap();
        let mut config = serde_yaml::Mapping::new();
        config.insert("network".into(), doc["autoinstall"]["network"].clone());
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("etc/netplan");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("50-rackboot.yaml");
        std::fs::write(&file, serde_yaml::to_string(&config).unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = Command::new(&netplan)
            .arg("generate")
            .arg("--root-dir")
            .arg(root.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ubuntu {version} {machine}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generated = root.path().join("run/systemd/network");
        let names: Vec<String> = std::fs::read_dir(&generated)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        // Every NIC is matched by its MAC.
        for (name, nic) in doc["autoinstall"]["network"]["ethernets"]
            .as_mapping()
            .unwrap()
        {
            let name = name.as_str().unwrap();
            let mac = nic["match"]["macaddress"].as_str().unwrap();
            let network =
                std::fs::read_to_string(generated.join(format!("10-netplan-{name}.network")))
                    .unwrap_or_else(|e| panic!("{machine} {name}: {e} ({names:?})"));
            assert!(network.contains(&format!("MACAddress={mac}")), "{network}");
        }
        if machine == "bond-vlan" {
            for want in [
                "10-netplan-bond0.netdev",
                "10-netplan-bond0.200.netdev",
                "10-netplan-nic0.300.netdev",
            ] {
                assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
            }
            let vlan =
                std::fs::read_to_string(generated.join("10-netplan-bond0.200.network")).unwrap();
            assert!(vlan.contains("Address=10.200.0.17/24"), "{vlan}");
            let bond = std::fs::read_to_string(generated.join("10-netplan-bond0.netdev")).unwrap();
            assert!(bond.contains("Mode=802.3ad"), "{bond}");
        }
        checked += 1;
    }
    assert_eq!(checked, 12);
}

#[test]
fn first_boot_script_parses_and_its_unit_is_a_valid_systemd_unit() {
    if !rackboot_testenv::programs(&[
        "ksvalidator",
        "busybox",
        "perl",
        "netplan",
        "systemd-analyze",
    ]) {
        return;
    }
    let (script, unit) = rackboot_install::context::firstboot_script(
        "http://10.1.0.1:8080/install/7/done/3q2-7Yt_token",
    );
    assert_parses("first-boot script", &script);
    // systemd's own parser, on a root holding the script and the unit.
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        panic!("systemd-analyze is missing: apt-get install systemd");
    };
    let root = tempfile::tempdir().unwrap();
    let unit_path = root.path().join("rackboot-firstboot.service");
    std::fs::write(
        &unit_path,
        unit.replace("/usr/local/sbin/rackboot-firstboot", "/bin/true"),
    )
    .unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // systemd warns (exit 0) about lines it ignores, naming the file and
    // line; warnings about the host (no systemd running in a container) do
    // not name the file.
    assert!(!stderr.contains(unit_path.to_str().unwrap()), "{stderr}");
}
