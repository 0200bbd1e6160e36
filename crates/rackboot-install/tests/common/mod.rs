//! Machines used by the golden and validator tests.

#![allow(dead_code)]

use rackboot_core::OsFamily;
use rackboot_install::{
    BondConfig, BondMode, DiskSelector, InstallVars, InstallerNetwork, Ipv4Config, NicConfig,
    PartitionLayout, RenderSecrets, Repository, VlanConfig, WindowsVars,
};

pub const HASH: &str = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";

/// Every family and the versions with built-in templates.
pub const RELEASES: &[(OsFamily, &str)] = &[
    (OsFamily::Rhel, "8"),
    (OsFamily::Rhel, "9"),
    (OsFamily::Rhel, "10"),
    (OsFamily::Esxi, "7.0"),
    (OsFamily::Esxi, "8.0"),
    (OsFamily::Debian, "11"),
    (OsFamily::Debian, "12"),
    (OsFamily::Ubuntu, "22.04"),
    (OsFamily::Ubuntu, "24.04"),
    (OsFamily::Suse, "15"),
    (OsFamily::Windows, "2019"),
    (OsFamily::Windows, "2022"),
];

fn mac(s: &str) -> rackboot_core::MacAddr {
    s.parse().unwrap()
}

fn static_v4(a: [u8; 4], gw: Option<[u8; 4]>) -> Ipv4Config {
    Ipv4Config::Static {
        address: a.into(),
        prefix: 24,
        gateway: gw.map(Into::into),
        dns: if gw.is_some() {
            vec![[10, 1, 0, 1].into(), [10, 1, 0, 2].into()]
        } else {
            vec![]
        },
    }
}

pub fn base(family: OsFamily) -> InstallVars {
    let windows = family == OsFamily::Windows;
    InstallVars {
        hostname: "node7".into(),
        domain: Some("rack1.example.com".into()),
        nics: vec![NicConfig {
            mac: mac("52:54:00:00:07:01"),
            name: None,
            ipv4: Ipv4Config::Dhcp,
            mtu: None,
        }],
        bonds: vec![],
        vlans: vec![],
        disk: match family {
            OsFamily::Windows => DiskSelector::Path("0".into()),
            _ => DiskSelector::Largest,
        },
        layout: PartitionLayout::Plain,
        packages: if windows || family == OsFamily::Esxi {
            vec![]
        } else {
            vec!["vim".into(), "tmux".into()]
        },
        repositories: match family {
            OsFamily::Rhel => vec![Repository {
                name: "epel".into(),
                url: "http://10.1.0.1:8080/repos/epel/9/x86_64/".into(),
            }],
            OsFamily::Debian | OsFamily::Ubuntu => vec![Repository {
                name: "tools".into(),
                url: "http://10.1.0.1:8080/repos/tools stable main".into(),
            }],
            OsFamily::Suse => vec![Repository {
                name: "tools".into(),
                url: "http://10.1.0.1:8080/repos/tools/".into(),
            }],
            _ => vec![],
        },
        timezone: "Asia/Shanghai".into(),
        locale: "en_US.UTF-8".into(),
        keyboard: "us".into(),
        root_password_hash: Some(HASH.into()),
        ssh_authorized_keys: vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdvbGRlbmtleWdvbGRlbmtleWdvbGRlbmtleQ ops@rackboot".into(),
        ],
        post_script: Some(if windows {
            "New-Item -ItemType File -Path C:\\rackboot-ok.txt".into()
        } else {
            "#!/bin/sh\necho \"built by rackboot on $(date)\" > /etc/motd\n".into()
        }),
        install_source_url: if windows {
            "smb://10.1.0.1/install/win".into()
        } else {
            "http://10.1.0.1:8080/trees/os/".into()
        },
        callback_url: "http://10.1.0.1:8080/api/v1/install/done/3q2-7Yt_token".into(),
        started_url: None,
        installed_url: None,
        installer_network: None,
        windows: windows.then(WindowsVars::default),
    }
}

pub fn secrets(family: OsFamily) -> RenderSecrets {
    RenderSecrets {
        windows_admin_password: (family == OsFamily::Windows).then(|| "Rack&Boot<1>".into()),
        windows_share_password: None,
    }
}

/// The golden machines for a family: (name, vars).
pub fn machines(family: OsFamily) -> Vec<(&'static str, InstallVars)> {
    let mut out = Vec::new();
    out.push(("dhcp", base(family)));

    let mut v = base(family);
    v.nics[0].ipv4 = static_v4([10, 1, 0, 17], Some([10, 1, 0, 1]));
    v.disk = match family {
        OsFamily::Windows => DiskSelector::Path("1".into()),
        OsFamily::Esxi => DiskSelector::Path("mpx.vmhba0:C0:T0:L0".into()),
        OsFamily::Ubuntu => DiskSelector::Path("/dev/disk/by-path/pci-0000:00:1f.2-ata-1".into()),
        _ => DiskSelector::Path("/dev/disk/by-id/wwn-0x5000c500a1b2c3d4".into()),
    };
    // The "file read" call (Debian early_command, kickstart %pre, autoinstall early-commands).
    v.started_url = Some("http://10.1.0.1:8080/install/7/started/3q2-7Yt_token".into());
    out.push(("static", v));

    if family != OsFamily::Esxi {
        let mut v = base(family);
        v.nics[0].ipv4 = static_v4([10, 1, 0, 17], Some([10, 1, 0, 1]));
        v.nics.push(NicConfig {
            mac: mac("52:54:00:00:07:02"),
            name: None,
            ipv4: Ipv4Config::Dhcp,
            mtu: Some(9000),
        });
        if family != OsFamily::Windows {
            v.disk = DiskSelector::Serial("S3Z8NB0K123456".into());
        }
        out.push(("two-nics", v));
    } else {
        // ESXi: the management interface on a tagged VLAN.
        let mut v = base(family);
        v.nics[0].ipv4 = Ipv4Config::None;
        v.vlans.push(VlanConfig {
            id: 120,
            parent: "52:54:00:00:07:01".into(),
            ipv4: static_v4([10, 120, 0, 17], Some([10, 120, 0, 1])),
            mtu: None,
        });
        v.disk = DiskSelector::Serial("S3Z8NB0K123456".into());
        out.push(("vlan", v));
    }

    if !matches!(family, OsFamily::Esxi | OsFamily::Windows) {
        let mut v = base(family);
        v.nics = vec![NicConfig {
            mac: mac("52:54:00:00:07:03"),
            name: None,
            ipv4: Ipv4Config::Dhcp,
            mtu: None,
        }];
        v.bonds.push(BondConfig {
            name: "bond0".into(),
            members: vec![mac("52:54:00:00:07:01"), mac("52:54:00:00:07:02")],
            mode: BondMode::Lacp,
            ipv4: Ipv4Config::None,
            mtu: Some(9000),
        });
        // A trunked bond: the address is on its VLAN.
        v.vlans.push(VlanConfig {
            id: 200,
            parent: "bond0".into(),
            ipv4: static_v4([10, 200, 0, 17], Some([10, 200, 0, 1])),
            mtu: None,
        });
        v.vlans.push(VlanConfig {
            id: 300,
            parent: "52:54:00:00:07:03".into(),
            ipv4: Ipv4Config::Dhcp,
            mtu: None,
        });
        out.push(("bond-vlan", v));
    }

    if family != OsFamily::Windows {
        // rackboot's own isolated provisioning network (no router, DNS or
        // NTP), and the two-step end: "installed" from the installer, the
        // completion from the installed system's first boot.
        let mut v = base(family);
        v.installed_url =
            Some("http://10.1.0.1:8080/api/v1/install/installed/3q2-7Yt_token".into());
        v.installer_network = Some(InstallerNetwork::default());
        out.push(("isolated", v));
    }

    if family != OsFamily::Windows {
        let mut v = base(family);
        v.layout = PartitionLayout::Lvm;
        v.disk = DiskSelector::Smallest;
        v.post_script = None;
        v.ssh_authorized_keys.clear();
        out.push(("lvm", v));
    }
    out
}

/// The networks of the target-network golden and validator tests: the rich
/// example (`EXAMPLE_NETWORK_JSON`: static NIC, named DHCP NIC with MTU 9000,
/// LACP bond carrying a static VLAN, DNS, gateway, a DHCP VLAN on a NIC) and
/// a minimal one (one static NIC, no domain, no DNS), each with its seed input.
pub fn network_cases() -> Vec<(
    &'static str,
    rackboot_install::NetworkVars,
    rackboot_install::SeedInput,
)> {
    let rich: rackboot_install::NetworkVars =
        serde_json::from_str(rackboot_install::EXAMPLE_NETWORK_JSON).unwrap();
    let minimal = rackboot_install::NetworkVars {
        hostname: "edge3".into(),
        domain: None,
        nics: vec![NicConfig {
            mac: mac("52:54:00:00:09:01"),
            name: None,
            ipv4: Ipv4Config::Static {
                address: [10, 9, 0, 5].into(),
                prefix: 24,
                gateway: Some([10, 9, 0, 1].into()),
                dns: vec![],
            },
            mtu: None,
        }],
        bonds: vec![],
        vlans: vec![],
    };
    vec![
        (
            "rich",
            rich,
            rackboot_install::SeedInput {
                instance_id: "deploy-0001".into(),
                ssh_authorized_keys: vec![
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdvbGRlbmtleWdvbGRlbmtleWdvbGRlbmtleQ ops@rackboot".into(),
                ],
                phone_home_url: Some(
                    "http://10.0.0.1:8080/api/v1/deploys/0001/booted?token=3q2-7Yt_token".into(),
                ),
            },
        ),
        (
            "minimal",
            minimal,
            rackboot_install::SeedInput {
                instance_id: "deploy-0002".into(),
                ssh_authorized_keys: vec![],
                phone_home_url: None,
            },
        ),
    ]
}

/// Compares `files` (paths relative to `dir`, contents) with the golden files
/// under `dir`, or rewrites them when UPDATE_GOLDEN is set. A file under
/// `dir` that `files` does not name is stale (removed when updating).
/// Returns what differs, one line per file.
pub fn check_golden(dir: &std::path::Path, files: &[(String, String)]) -> Vec<String> {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (name, body) in files {
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, body).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == *body => {}
            Ok(_) => failures.push(format!("{name} differs (UPDATE_GOLDEN=1 to accept)")),
            Err(e) => failures.push(format!("{name}: {e} (UPDATE_GOLDEN=1 to create)")),
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if !files.iter().any(|(n, _)| *n == name) {
                if update {
                    std::fs::remove_file(&path).unwrap();
                } else {
                    failures.push(format!("{name} is not produced by any case (stale)"));
                }
            }
        }
    }
    failures
}
