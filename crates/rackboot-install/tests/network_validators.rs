//! A deployed image's network files and NoCloud seed, checked by the real
//! tools that read them:
//!
//! - netplan (`netplan generate --root-dir`) on Ubuntu's file and on the
//!   seed's network-config wrapped as `network:`; both must generate the same
//!   systemd-networkd/udev files;
//! - cloud-init 22.4 (Debian 12): `cloud-init schema` on user-data, its
//!   NoCloud seed reader on the three files (PyYAML must read every value as
//!   serde_yaml does), `cloud-init devel net-convert` of network-config to
//!   every output it has (eni, netplan, networkd, sysconfig, network-manager);
//! - libnm's keyfile reader + `verify()` on every NetworkManager keyfile
//!   (tests/tools/nm_keyfile_check.py);
//! - ifupdown: `ifquery` and `ifup --no-act` (in a private network namespace)
//!   on /etc/network/interfaces;
//! - ifcfg (RHEL 7, SUSE) and systemd `.link` files: a strict parser here,
//!   and the ifcfg files sourced by a real shell (dash), which is how
//!   initscripts and wicked read them.
//!
//! Every check is also shown to fail on a broken file.
//!
//! Needs (Debian): netplan.io, cloud-init, python3-gi, gir1.2-nm-1.0,
//! ifupdown, util-linux (unshare), dash. Runs as root (unshare --net).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rackboot_install::{
    BondConfig, BondMode, Ipv4Config, NetworkVars, NicConfig, SeedInput, TargetFamily, TargetFile,
    VlanConfig, render_nocloud_seed, render_target_network,
};

/// Debian's python3 (the one with python3-gi and cloud-init's modules), not
/// whatever python3 comes first in PATH.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

fn tool(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("required tool `{name}` not found: apt-get install --no-install-recommends {package}");
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The golden cases and a variant with named NICs: one is a bond member with
/// nothing else set, one carries a VLAN, and the bond carries the address.
fn cases() -> Vec<(&'static str, NetworkVars, SeedInput)> {
    let mut out = common::network_cases();
    let mac = |s: &str| s.parse().unwrap();
    let named = NetworkVars {
        hostname: "db-1".into(),
        domain: Some("example.org".into()),
        nics: vec![
            NicConfig {
                mac: mac("52:54:00:00:0a:01"),
                name: Some("eno1".into()),
                ipv4: Ipv4Config::None,
                mtu: None,
            },
            NicConfig {
                mac: mac("52:54:00:00:0a:02"),
                name: Some("eno2".into()),
                ipv4: Ipv4Config::None,
                mtu: Some(1500),
            },
        ],
        bonds: vec![BondConfig {
            name: "bond0".into(),
            members: vec![mac("52:54:00:00:0a:01"), mac("52:54:00:00:0a:03")],
            mode: BondMode::ActiveBackup,
            ipv4: Ipv4Config::Static {
                address: [192, 168, 7, 20].into(),
                prefix: 23,
                gateway: Some([192, 168, 6, 1].into()),
                dns: vec![[192, 168, 6, 2].into()],
            },
            mtu: None,
        }],
        vlans: vec![VlanConfig {
            id: 42,
            parent: "52:54:00:00:0a:02".into(),
            ipv4: Ipv4Config::Dhcp,
            mtu: None,
        }],
    };
    out.push((
        "named",
        named,
        SeedInput {
            instance_id: "i-named".into(),
            ..SeedInput::default()
        },
    ));
    out
}

/// A temporary root file system holding `files` with their modes.
fn root_with(files: &[TargetFile]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for f in files {
        let path = root.path().join(f.path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &f.content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode)).unwrap();
    }
    root
}

fn file<'a>(files: &'a [TargetFile], path: &str) -> &'a TargetFile {
    files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no {path}"))
}

fn seed_file(seed: &[(String, String)], name: &str) -> String {
    seed.iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c.clone())
        .unwrap()
}

/// Every file under `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, format!("-> {}", target.display()));
            } else if kind.is_dir() {
                stack.push(path);
            } else {
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    out
}

/// `netplan generate` on a root holding `yaml` as /etc/netplan/50-rackboot.yaml;
/// the generated files under run/, or netplan's complaint.
fn netplan_generate(yaml: &str) -> Result<BTreeMap<String, String>, String> {
    let netplan = tool("netplan", "netplan.io");
    let root = root_with(&[TargetFile {
        path: "/etc/netplan/50-rackboot.yaml".into(),
        content: yaml.into(),
        mode: 0o600,
    }]);
    let out = run(Command::new(netplan)
        .arg("generate")
        .arg("--root-dir")
        .arg(root.path()));
    if !out.status.success() {
        return Err(text(&out));
    }
    Ok(tree(&root.path().join("run")))
}

#[test]
fn netplan_generates_the_same_network_from_the_ubuntu_file_and_the_seed() {
    if !rackboot_testenv::programs(&["netplan", "cloud-init", "ifquery", "ifup", "dash"]) {
        return;
    }
    for (case, net, seed) in cases() {
        let files = render_target_network(TargetFamily::Ubuntu, &net).unwrap();
        let target = file(&files, "/etc/netplan/50-rackboot.yaml");
        assert_eq!(target.mode, 0o600);
        let generated = netplan_generate(&target.content).unwrap_or_else(|e| panic!("{case}: {e}"));

        // network-config v2 is netplan's schema under `network:`.
        let seed = render_nocloud_seed(&net, &seed).unwrap();
        let wrapped: String = std::iter::once("network:\n".to_string())
            .chain(
                seed_file(&seed, "network-config")
                    .lines()
                    .map(|l| format!("  {l}\n")),
            )
            .collect();
        let from_seed = netplan_generate(&wrapped).unwrap_or_else(|e| panic!("{case} seed: {e}"));
        assert_eq!(generated, from_seed, "{case}: seed and target file differ");

        let get = |name: &str| {
            generated
                .get(&format!("systemd/network/{name}"))
                .unwrap_or_else(|| panic!("{case}: no {name} in {:?}", generated.keys()))
        };
        // Pinned NICs: matched by MAC and renamed; named ones by name.
        for (i, nic) in net.nics.iter().enumerate() {
            match &nic.name {
                None => {
                    let link = get(&format!("10-netplan-lan{i}.link"));
                    assert!(
                        link.contains(&format!("MACAddress={}\n", nic.mac)),
                        "{link}"
                    );
                    assert!(link.contains(&format!("Name=lan{i}\n")), "{link}");
                }
                Some(name) => {
                    let network = get(&format!("10-netplan-{name}.network"));
                    assert!(network.contains(&format!("Name={name}\n")), "{network}");
                    assert!(!network.contains("MACAddress"), "{network}");
                }
            }
        }
        match case {
            "rich" => {
                let lan0 = get("10-netplan-lan0.network");
                for want in [
                    "Address=10.0.0.11/24",
                    "DNS=10.0.0.1",
                    "DNS=10.0.0.2",
                    "Domains=rack1.example.com",
                    "Destination=0.0.0.0/0\nGateway=10.0.0.1",
                    "VLAN=lan0.200",
                ] {
                    assert!(lan0.contains(want), "{want} not in {lan0}");
                }
                assert!(get("10-netplan-bond0.netdev").contains("Mode=802.3ad"));
                assert!(get("10-netplan-bond0.netdev").contains("MTUBytes=9000"));
                assert!(get("10-netplan-lan2.network").contains("Bond=bond0"));
                assert!(get("10-netplan-bond0.100.netdev").contains("Id=100"));
                assert!(get("10-netplan-bond0.100.network").contains("Address=10.100.0.11/24"));
                assert!(get("10-netplan-eno4.network").contains("MTUBytes=9000"));
                assert!(get("10-netplan-eno4.network").contains("DHCP=ipv4"));
            }
            "minimal" => {
                let lan0 = get("10-netplan-lan0.network");
                assert!(lan0.contains("Address=10.9.0.5/24"), "{lan0}");
                assert!(lan0.contains("Gateway=10.9.0.1"), "{lan0}");
                assert!(!lan0.contains("DNS="), "{lan0}");
            }
            _ => {
                assert!(get("10-netplan-eno1.network").contains("Bond=bond0"));
                assert!(get("10-netplan-lan2.network").contains("Bond=bond0"));
                assert!(get("10-netplan-eno2.network").contains("VLAN=eno2.42"));
                assert!(get("10-netplan-bond0.network").contains("Address=192.168.7.20/23"));
            }
        }
    }
    // The check can fail: a VLAN id netplan refuses.
    let files = render_target_network(TargetFamily::Ubuntu, &cases()[0].1).unwrap();
    let broken = file(&files, "/etc/netplan/50-rackboot.yaml")
        .content
        .replace("id: 100", "id: 5000");
    assert!(netplan_generate(&broken).is_err());
}

/// Runs Debian's python3 on `script` with `args`.
fn python(script: &str, args: &[&Path]) -> Output {
    run(Command::new(DEBIAN_PYTHON).arg("-c").arg(script).args(args))
}

/// cloud-init's own NoCloud reading of a seed directory (what it does on a
/// mounted `cidata` partition): meta-data and network-config as it parses
/// them (PyYAML), and the user-data bytes, as JSON.
const READ_SEED: &str = r#"
import json, sys
from cloudinit import util
from cloudinit.sources.DataSourceNoCloud import _merge_new_seed
seeded = util.pathprefix2dict(sys.argv[1], required=["user-data", "meta-data"],
                              optional=["vendor-data", "network-config"])
data = _merge_new_seed({"meta-data": {}}, seeded)
print(json.dumps({"meta-data": data["meta-data"],
                  "network-config": data["network-config"],
                  "user-data": util.load_yaml(data["user-data"].decode())}))
"#;

fn yaml_as_json(text: &str) -> serde_json::Value {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

#[test]
fn cloud_init_reads_the_seed_as_written() {
    if !rackboot_testenv::privileged_with(
        "root: cloud-init's net-convert sets its files' owners",
        &["netplan", "cloud-init", "ifquery", "ifup", "dash"],
    ) {
        return;
    }
    let cloud_init = tool("cloud-init", "cloud-init");
    for (case, net, seed) in cases() {
        let files = render_nocloud_seed(&net, &seed).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in &files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }

        // Schema of user-data (cloud-init 22.4 has no network-config schema).
        let out = run(Command::new(&cloud_init)
            .args(["schema", "--config-file"])
            .arg(dir.path().join("user-data")));
        assert!(out.status.success(), "{case}: {}", text(&out));
        assert!(text(&out).contains("Valid cloud-config"), "{}", text(&out));

        // The NoCloud reader sees exactly the values serde_yaml sees: no
        // value changes type under YAML 1.1 (PyYAML) rules.
        let out = python(READ_SEED, &[dir.path()]);
        assert!(out.status.success(), "{case}: {}", text(&out));
        let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for name in ["meta-data", "network-config", "user-data"] {
            assert_eq!(
                read[name],
                yaml_as_json(&seed_file(&files, name)),
                "{case} {name}"
            );
        }
        assert_eq!(read["meta-data"]["instance-id"], seed.instance_id.as_str());
        assert_eq!(read["meta-data"]["local-hostname"], net.hostname.as_str());
        assert_eq!(read["user-data"]["disable_root"], false);

        // cloud-init converts network-config for every kind of system.
        let config = dir.path().join("network-config");
        for (distro, kind) in [
            ("debian", "eni"),
            ("ubuntu", "netplan"),
            ("debian", "networkd"),
            ("rhel", "sysconfig"),
            ("sles", "sysconfig"),
            ("rhel", "network-manager"),
        ] {
            let out_dir = dir.path().join(format!("out-{distro}-{kind}"));
            let out = run(Command::new(&cloud_init)
                .args([
                    "devel",
                    "net-convert",
                    "-k",
                    "yaml",
                    "-D",
                    distro,
                    "-O",
                    kind,
                    "-p",
                ])
                .arg(&config)
                .arg("-d")
                .arg(&out_dir));
            assert!(
                out.status.success(),
                "{case} {distro} {kind}: {}",
                text(&out)
            );
            let written = tree(&out_dir);
            assert!(!written.is_empty(), "{case} {distro} {kind}");
            if kind == "eni" {
                let eni = &written["etc/network/interfaces.d/50-cloud-init"];
                let rules = &written["etc/udev/rules.d/70-persistent-net.rules"];
                for (i, nic) in net.nics.iter().enumerate() {
                    if nic.name.is_none() {
                        // Pinned NICs are renamed by MAC.
                        assert!(
                            rules.contains(&format!(
                                "ATTR{{address}}==\"{}\", NAME=\"lan{i}\"",
                                nic.mac
                            )),
                            "{rules}"
                        );
                    }
                }
                if case == "rich" {
                    for want in [
                        "iface lan0 inet static\n    address 10.0.0.11/24",
                        "route add default gw 10.0.0.1",
                        "iface bond0.100 inet static\n    address 10.100.0.11/24\n    vlan-raw-device bond0",
                        "iface lan2 inet manual\n    bond-master bond0",
                        "bond-mode 802.3ad",
                        "iface eno4 inet dhcp\n    mtu 9000",
                    ] {
                        assert!(eni.contains(want), "{want:?} not in {eni}");
                    }
                }
            }
            if kind == "network-manager" {
                // cloud-init's own keyfiles from our config pass libnm too.
                let keyfiles: Vec<PathBuf> = written
                    .keys()
                    .filter(|k| k.ends_with(".nmconnection"))
                    .map(|k| out_dir.join(k))
                    .collect();
                let out = nm_check(&keyfiles);
                assert!(out.status.success(), "{case}: {}", text(&out));
            }
        }
    }

    // The checks can fail. Netplan's `default` route keyword is what
    // cloud-init 22.4 cannot convert (why the seed says 0.0.0.0/0)...
    let dir = tempfile::tempdir().unwrap();
    let (_, net, seed) = &cases()[1];
    let netcfg = seed_file(&render_nocloud_seed(net, seed).unwrap(), "network-config");
    let config = dir.path().join("network-config");
    std::fs::write(&config, netcfg.replace("0.0.0.0/0", "default")).unwrap();
    let out = run(Command::new(&cloud_init)
        .args([
            "devel",
            "net-convert",
            "-k",
            "yaml",
            "-D",
            "debian",
            "-O",
            "eni",
            "-p",
        ])
        .arg(&config)
        .arg("-d")
        .arg(dir.path().join("out")));
    assert!(!out.status.success(), "{}", text(&out));
    // ... a wrongly typed user-data value fails the schema ...
    let user_data = dir.path().join("user-data");
    std::fs::write(&user_data, "#cloud-config\nhostname: 5\n").unwrap();
    let out = run(Command::new(&cloud_init)
        .args(["schema", "--config-file"])
        .arg(&user_data));
    assert!(!out.status.success(), "{}", text(&out));
    // ... and an unquoted MAC reads as a number in PyYAML, not as serde_yaml reads it.
    std::fs::write(
        dir.path().join("meta-data"),
        "instance-id: 52:54:00:00:00:01\n",
    )
    .unwrap();
    let out = python(READ_SEED, &[dir.path()]);
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(read["meta-data"]["instance-id"].is_number(), "{read}");
}

fn nm_check(files: &[PathBuf]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/nm_keyfile_check.py");
    run(Command::new(DEBIAN_PYTHON).arg(script).args(files))
}

#[test]
fn networkmanager_reads_and_verifies_every_keyfile() {
    if !rackboot_testenv::programs(&["netplan", "cloud-init", "ifquery", "ifup", "dash"]) {
        return;
    }
    for (case, net, _) in cases() {
        let files = render_target_network(TargetFamily::Rhel, &net).unwrap();
        let root = root_with(&files);
        let keyfiles: Vec<PathBuf> = files
            .iter()
            .filter(|f| f.path.ends_with(".nmconnection"))
            .map(|f| {
                assert_eq!(f.mode, 0o600, "{}", f.path);
                root.path().join(f.path.trim_start_matches('/'))
            })
            .collect();
        assert!(!keyfiles.is_empty());
        let out = nm_check(&keyfiles);
        assert!(out.status.success(), "{case}: {}", text(&out));
        let conns: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(conns.len(), keyfiles.len());
        let by_id = |id: &str| {
            conns
                .iter()
                .find(|c| c["id"] == id)
                .unwrap_or_else(|| panic!("{case}: no connection {id}"))
        };
        // UUIDs are distinct; VLAN parents and bond ports point at real connections.
        let uuids: BTreeSet<&str> = conns.iter().map(|c| c["uuid"].as_str().unwrap()).collect();
        assert_eq!(uuids.len(), conns.len());
        for c in &conns {
            if let Some(parent) = c["vlan"]["parent"].as_str() {
                assert!(uuids.contains(parent), "{case}: {c}");
            }
            if let Some(master) = c["master"].as_str() {
                assert_eq!(by_id(master)["type"], "bond", "{case}: {c}");
                assert_eq!(c["slave-type"], "bond");
                assert!(c.get("ipv4").is_none(), "ports carry no IP: {c}");
            }
        }
        // Pinned NICs bind by MAC, named ones by interface name.
        for (i, nic) in net.nics.iter().enumerate() {
            let c = match &nic.name {
                None => by_id(&format!("lan{i}")),
                Some(name) => by_id(name),
            };
            match &nic.name {
                None => {
                    assert_eq!(
                        c["mac-address"].as_str().unwrap().to_lowercase(),
                        nic.mac.to_string()
                    );
                    assert!(c["interface-name"].is_null());
                }
                Some(name) => {
                    assert_eq!(c["interface-name"], name.as_str());
                    assert!(c["mac-address"].is_null());
                }
            }
        }
        if case == "rich" {
            let lan0 = &by_id("lan0")["ipv4"];
            assert_eq!(lan0["method"], "manual");
            assert_eq!(lan0["addresses"][0], "10.0.0.11/24");
            assert_eq!(lan0["gateway"], "10.0.0.1");
            assert_eq!(lan0["dns"], serde_json::json!(["10.0.0.1", "10.0.0.2"]));
            assert_eq!(lan0["dns-search"][0], "rack1.example.com");
            assert_eq!(by_id("eno4")["mtu"], 9000);
            assert_eq!(by_id("bond0")["bond"]["mode"], "802.3ad");
            assert_eq!(by_id("bond0.100")["vlan"]["id"], 100);
            assert_eq!(by_id("bond0.100")["vlan"]["parent"], by_id("bond0")["uuid"]);
            assert_eq!(by_id("lan0.200")["vlan"]["parent"], by_id("lan0")["uuid"]);
        }
    }
    // The check can fail: a static method without an address does not verify.
    let files = render_target_network(TargetFamily::Rhel, &cases()[1].1).unwrap();
    let lan0 = file(
        &files,
        "/etc/NetworkManager/system-connections/lan0.nmconnection",
    );
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("lan0.nmconnection");
    std::fs::write(&broken, lan0.content.replace("address1=10.9.0.5/24\n", "")).unwrap();
    assert!(!nm_check(&[broken]).status.success());
}

/// `ifup --no-act -a` on `interfaces`, in a new network namespace (nothing
/// is configured with --no-act; the namespace makes sure).
fn ifup_no_act(interfaces: &Path, state_dir: &Path) -> Output {
    let ifup = tool("ifup", "ifupdown");
    run(Command::new(tool("unshare", "util-linux"))
        .arg("--net")
        .arg(ifup)
        .args(["--no-act", "--verbose", "-a", "-i"])
        .arg(interfaces)
        .arg("--state-dir")
        .arg(state_dir))
}

#[test]
fn ifupdown_parses_the_interfaces_file() {
    if !rackboot_testenv::privileged("root: unshare --net") {
        return;
    }
    let ifquery = tool("ifquery", "ifupdown");
    for (case, net, _) in cases() {
        let files = render_target_network(TargetFamily::Debian, &net).unwrap();
        let root = root_with(&files);
        let interfaces = root.path().join("etc/network/interfaces");
        let state = root.path().join("run-network");
        std::fs::create_dir_all(&state).unwrap();

        // Every stanza is an `auto` interface, in order: lo, NICs that are
        // not bond members, bonds, VLANs.
        let out = run(Command::new(&ifquery)
            .arg("-i")
            .arg(&interfaces)
            .arg("--list"));
        assert!(out.status.success(), "{case}: {}", text(&out));
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        let mut want = vec!["lo".to_string()];
        let member = |mac| net.bonds.iter().any(|b| b.members.contains(&mac));
        for (i, nic) in net.nics.iter().enumerate() {
            if !member(nic.mac) {
                want.push(nic.name.clone().unwrap_or(format!("lan{i}")));
            }
        }
        want.extend(net.bonds.iter().map(|b| b.name.clone()));
        for v in &net.vlans {
            let parent = match v.parent.parse::<rackboot_core::MacAddr>() {
                Ok(mac) => {
                    let i = net.nics.iter().position(|n| n.mac == mac).unwrap();
                    net.nics[i].name.clone().unwrap_or(format!("lan{i}"))
                }
                Err(_) => v.parent.clone(),
            };
            want.push(format!("{parent}.{}", v.id));
        }
        assert_eq!(listed, want, "{case}");

        // ifquery prints each stanza's options as ifupdown understood them
        // (an address/prefix comes back split into address and netmask).
        let query = |iface: &str| -> BTreeSet<String> {
            let out = run(Command::new(&ifquery).arg("-i").arg(&interfaces).arg(iface));
            assert!(out.status.success(), "{case} {iface}: {}", text(&out));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from)
                .collect()
        };
        let expect = |iface: &str, want: &[&str]| {
            let got = query(iface);
            for w in want {
                assert!(got.contains(*w), "{case} {iface}: {w:?} not in {got:?}");
            }
        };
        match case {
            "rich" => {
                expect(
                    "lan0",
                    &[
                        "address: 10.0.0.11",
                        "netmask: 255.255.255.0",
                        "gateway: 10.0.0.1",
                        "dns-nameservers: 10.0.0.1 10.0.0.2",
                        "dns-search: rack1.example.com",
                    ],
                );
                expect(
                    "bond0",
                    &[
                        "bond-slaves: lan2 lan3",
                        "bond-mode: 802.3ad",
                        "bond-miimon: 100",
                        "mtu: 9000",
                    ],
                );
                expect(
                    "bond0.100",
                    &["vlan-raw-device: bond0", "address: 10.100.0.11"],
                );
            }
            "named" => {
                expect(
                    "bond0",
                    &[
                        "bond-slaves: eno1 lan2",
                        "bond-mode: active-backup",
                        "address: 192.168.7.20",
                        "netmask: 255.255.254.0",
                        "gateway: 192.168.6.1",
                        "dns-nameservers: 192.168.6.2",
                        "dns-search: example.org",
                    ],
                );
                expect("eno2", &["mtu: 1500"]);
            }
            _ => expect("lan0", &["address: 10.9.0.5", "gateway: 10.9.0.1"]),
        }

        let out = ifup_no_act(&interfaces, &state);
        assert!(out.status.success(), "{case}: {}", text(&out));
        let plan = text(&out);
        if case == "rich" {
            for want in [
                "ip addr add 10.0.0.11/255.255.255.0",
                "ip route add default via 10.0.0.1",
                "ip link set dev eno4 mtu 9000",
                "ip link add link bond0 name bond0.100 type vlan id 100",
                "ip link add link lan0 name lan0.200 type vlan id 200",
            ] {
                assert!(plan.contains(want), "{want:?} not in\n{plan}");
            }
        }

        // The check can fail.
        let broken = root.path().join("broken");
        std::fs::write(
            &broken,
            std::fs::read_to_string(&interfaces).unwrap().replacen(
                " inet ",
                " inet wrongmethod ",
                2,
            ),
        )
        .unwrap();
        assert!(!ifup_no_act(&broken, &state).status.success(), "{case}");
    }
}

/// A strict reader of `KEY=value` files (ifcfg): comments and blank lines,
/// upper-case keys once each, values bare (`[A-Za-z0-9._:/-]`) or quoted
/// (double quotes without `"$\``, or single quotes) with nothing after.
fn parse_assignments(content: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in content.lines().enumerate() {
        let n = n + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, raw) = line
            .split_once('=')
            .ok_or(format!("line {n}: not KEY=value: {line:?}"))?;
        if key.is_empty()
            || !key.starts_with(|c: char| c.is_ascii_uppercase())
            || !key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("line {n}: bad key {key:?}"));
        }
        let value = if let Some(inner) = raw.strip_prefix('"') {
            let inner = inner
                .strip_suffix('"')
                .ok_or(format!("line {n}: unterminated \""))?;
            if inner.contains(['"', '$', '\\', '`']) {
                return Err(format!("line {n}: special character in {raw:?}"));
            }
            inner
        } else if let Some(inner) = raw.strip_prefix('\'') {
            let inner = inner
                .strip_suffix('\'')
                .ok_or(format!("line {n}: unterminated '"))?;
            if inner.contains('\'') {
                return Err(format!("line {n}: quote in {raw:?}"));
            }
            inner
        } else {
            if !raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
            {
                return Err(format!("line {n}: {raw:?} needs quoting"));
            }
            raw
        };
        if out.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("line {n}: {key} set twice"));
        }
    }
    Ok(out)
}

/// What a shell (dash) reads from the file: `set -a; . FILE` and the values
/// of `keys`. This is how initscripts and wicked's compat layer read ifcfg.
fn sourced(path: &Path, keys: &[&String]) -> BTreeMap<String, String> {
    let mut script = String::from("set -eu; set -a; . \"$1\"; ");
    for k in keys {
        script.push_str(&format!("printf '%s=%s\\n' {k} \"${k}\"; "));
    }
    let out = run(Command::new(tool("dash", "dash"))
        .arg("-c")
        .arg(&script)
        .arg("dash")
        .arg(path)
        .env_clear());
    assert!(out.status.success(), "{}: {}", path.display(), text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn in_subnet(addr: Ipv4Addr, net: Ipv4Addr, prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(addr) & mask == u32::from(net) & mask
}

/// Every ifcfg file of `family` in `files`: (interface name, keys).
fn ifcfg_files(
    files: &[TargetFile],
    dir: &str,
    root: &Path,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for f in files
        .iter()
        .filter(|f| f.path.starts_with(&format!("{dir}/ifcfg-")))
    {
        let name = f.path.rsplit_once("/ifcfg-").unwrap().1.to_string();
        let vars = parse_assignments(&f.content).unwrap_or_else(|e| panic!("{}: {e}", f.path));
        let keys: Vec<&String> = vars.keys().collect();
        let shell = sourced(&root.join(f.path.trim_start_matches('/')), &keys);
        assert_eq!(shell, vars, "{}: the shell reads other values", f.path);
        out.insert(name, vars);
    }
    out
}

#[test]
fn rhel_ifcfg_files_are_strict_and_consistent() {
    if !rackboot_testenv::programs(&["netplan", "cloud-init", "ifquery", "ifup", "dash"]) {
        return;
    }
    const KEYS: &[&str] = &[
        "DEVICE",
        "NAME",
        "TYPE",
        "HWADDR",
        "ONBOOT",
        "BOOTPROTO",
        "IPADDR",
        "PREFIX",
        "GATEWAY",
        "DOMAIN",
        "MTU",
        "MASTER",
        "SLAVE",
        "BONDING_MASTER",
        "BONDING_OPTS",
        "VLAN",
        "PHYSDEV",
        "VLAN_ID",
    ];
    for (case, net, _) in cases() {
        let files = render_target_network(TargetFamily::RhelIfcfg, &net).unwrap();
        let root = root_with(&files);
        let all = ifcfg_files(&files, "/etc/sysconfig/network-scripts", root.path());
        let links = net.nics.len()
            + net
                .bonds
                .iter()
                .flat_map(|b| &b.members)
                .filter(|m| net.nics.iter().all(|n| n.mac != **m))
                .count();
        assert_eq!(
            all.len(),
            links + net.bonds.len() + net.vlans.len(),
            "{case}"
        );
        for (name, v) in &all {
            for k in v.keys() {
                let dns = k
                    .strip_prefix("DNS")
                    .is_some_and(|n| n.parse::<u8>().is_ok());
                assert!(
                    KEYS.contains(&k.as_str()) || dns,
                    "{case} {name}: unknown key {k}"
                );
            }
            assert_eq!(v["DEVICE"], *name, "{case}");
            assert_eq!(v["ONBOOT"], "yes");
            assert!(["none", "dhcp"].contains(&v["BOOTPROTO"].as_str()));
            if let Some(mac) = v.get("HWADDR") {
                mac.parse::<rackboot_core::MacAddr>().unwrap();
            }
            if let Some(ip) = v.get("IPADDR") {
                let ip: Ipv4Addr = ip.parse().unwrap();
                let prefix: u32 = v["PREFIX"].parse().unwrap();
                assert!((1..=32).contains(&prefix));
                if let Some(gw) = v.get("GATEWAY") {
                    assert!(in_subnet(gw.parse().unwrap(), ip, prefix), "{case} {name}");
                }
            }
            match v["TYPE"].as_str() {
                "Ethernet" => {
                    if let Some(master) = v.get("MASTER") {
                        assert_eq!(all[master]["BONDING_MASTER"], "yes");
                        assert_eq!(v["SLAVE"], "yes");
                        assert!(!v.contains_key("IPADDR"));
                    }
                }
                "Bond" => assert!(v["BONDING_OPTS"].starts_with("mode=")),
                "Vlan" => {
                    assert_eq!(v["VLAN"], "yes");
                    assert!(all.contains_key(&v["PHYSDEV"]), "{case} {name}");
                    assert_eq!(*name, format!("{}.{}", v["PHYSDEV"], v["VLAN_ID"]));
                }
                other => panic!("{case} {name}: TYPE {other}"),
            }
        }
        if case == "rich" {
            assert_eq!(all["lan0"]["HWADDR"], "52:54:00:00:00:01");
            assert_eq!(all["lan0"]["DNS2"], "10.0.0.2");
            assert!(!all["eno4"].contains_key("HWADDR"));
            assert_eq!(all["bond0"]["BONDING_OPTS"], "mode=802.3ad miimon=100");
        }
    }
    // The parser can fail.
    for bad in [
        "A=$(reboot)\n",
        "lower=1\n",
        "A=\"x\n",
        "A=1\nA=2\n",
        "A='x' y\n",
        "A=x y\n",
    ] {
        assert!(parse_assignments(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn suse_ifcfg_and_routes_are_strict_and_consistent() {
    if !rackboot_testenv::programs(&["netplan", "cloud-init", "ifquery", "ifup", "dash"]) {
        return;
    }
    const KEYS: &[&str] = &[
        "STARTMODE",
        "BOOTPROTO",
        "IPADDR",
        "MTU",
        "BONDING_MASTER",
        "BONDING_MODULE_OPTS",
        "ETHERDEVICE",
        "VLAN_ID",
    ];
    for (case, net, _) in cases() {
        let files = render_target_network(TargetFamily::Suse, &net).unwrap();
        let root = root_with(&files);
        let all = ifcfg_files(&files, "/etc/sysconfig/network", root.path());
        for (name, v) in &all {
            for k in v.keys() {
                let slave = k
                    .strip_prefix("BONDING_SLAVE")
                    .is_some_and(|n| n.parse::<u8>().is_ok());
                assert!(
                    KEYS.contains(&k.as_str()) || slave,
                    "{case} {name}: unknown key {k}"
                );
                if slave {
                    let port = &all[&v[k]];
                    assert_eq!(port["STARTMODE"], "hotplug", "{case} {name}");
                    assert_eq!(port["BOOTPROTO"], "none");
                }
            }
            assert!(["auto", "hotplug"].contains(&v["STARTMODE"].as_str()));
            match v["BOOTPROTO"].as_str() {
                "static" => {
                    let (ip, prefix) = v["IPADDR"].split_once('/').unwrap();
                    ip.parse::<Ipv4Addr>().unwrap();
                    assert!((1..=32).contains(&prefix.parse::<u32>().unwrap()));
                }
                "none" | "dhcp4" => assert!(!v.contains_key("IPADDR")),
                other => panic!("{case} {name}: BOOTPROTO {other}"),
            }
            if let Some(parent) = v.get("ETHERDEVICE") {
                assert!(all.contains_key(parent), "{case} {name}");
                assert_eq!(*name, format!("{parent}.{}", v["VLAN_ID"]));
            }
        }
        // routes: DESTINATION GATEWAY NETMASK INTERFACE, via an addressed interface.
        let routes = &file(&files, "/etc/sysconfig/network/routes").content;
        let mut defaults = 0;
        for line in routes.lines().filter(|l| !l.starts_with('#')) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [dest, gw, mask, iface] = fields[..] else {
                panic!("{case}: route line {line:?}");
            };
            assert_eq!((dest, mask), ("default", "-"));
            let (ip, prefix) = all[iface]["IPADDR"].split_once('/').unwrap();
            assert!(in_subnet(
                gw.parse().unwrap(),
                ip.parse().unwrap(),
                prefix.parse().unwrap()
            ));
            defaults += 1;
        }
        assert_eq!(defaults, 1, "{case}: {routes}");
        if case == "rich" {
            assert_eq!(all["lan0"]["IPADDR"], "10.0.0.11/24");
            assert_eq!(all["bond0"]["BONDING_SLAVE1"], "lan3");
            assert_eq!(all["lan0.200"]["BOOTPROTO"], "dhcp4");
        }
    }
}

/// A strict reader of the `.link` files: exactly [Match] MACAddress=, Type=
/// and [Link] Name=.
#[test]
fn link_files_pin_every_unnamed_nic() {
    for family in [TargetFamily::Debian, TargetFamily::Suse] {
        for (case, net, _) in cases() {
            let files = render_target_network(family, &net).unwrap();
            let mut pinned = BTreeMap::new();
            for f in files.iter().filter(|f| f.path.ends_with(".link")) {
                let mut section = "";
                let mut keys = BTreeMap::new();
                for line in f.content.lines() {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                        section = match s {
                            "Match" | "Link" => s,
                            other => panic!("{}: section {other}", f.path),
                        };
                        continue;
                    }
                    let (k, v) = line.split_once('=').unwrap();
                    assert!(
                        keys.insert(format!("{section}.{k}"), v.to_string())
                            .is_none(),
                        "{}: {k} twice",
                        f.path
                    );
                }
                assert_eq!(
                    keys.keys().collect::<Vec<_>>(),
                    ["Link.Name", "Match.MACAddress", "Match.Type"],
                    "{}",
                    f.path
                );
                assert_eq!(keys["Match.Type"], "!vlan bond bridge");
                let name = &keys["Link.Name"];
                assert_eq!(
                    f.path,
                    format!("/etc/systemd/network/10-rackboot-{name}.link")
                );
                pinned.insert(
                    keys["Match.MACAddress"]
                        .parse::<rackboot_core::MacAddr>()
                        .unwrap(),
                    name.clone(),
                );
            }
            // Exactly the NICs without a name, as lan<i>.
            for (i, nic) in net.nics.iter().enumerate() {
                assert_eq!(
                    pinned.get(&nic.mac).cloned(),
                    nic.name.is_none().then(|| format!("lan{i}")),
                    "{family} {case}"
                );
            }
        }
    }
}
