//! The built-in sample machine that user templates must render for before
//! they are accepted (see [`crate::validate_template`]).

use rackboot_core::OsFamily;

use crate::vars::{
    DiskSelector, InstallVars, Ipv4Config, NicConfig, PartitionLayout, RenderSecrets, Repository,
    WindowsVars,
};

/// A sample password hash (of "rackboot", SHA-512 crypt); never used on a machine.
pub const SAMPLE_ROOT_HASH: &str = "$6$rackbootsample$T8D.fD5a.Q2Sq4Y4i7CCpnFYOguA41eaQWiAmHRw247yrgfd65JhAvtFlf3t80z4djNtqww1ZT38lUEzzt/ne0";

/// (version, vars, secrets) of the sample machine for `family`: one static
/// NIC and one DHCP NIC (one NIC for ESXi), the largest disk, LVM, a
/// package, a repository, a key and a post script.
pub fn sample_machine(family: OsFamily) -> (&'static str, InstallVars, RenderSecrets) {
    let version = match family {
        OsFamily::Rhel => "9.4",
        OsFamily::Esxi => "8.0",
        OsFamily::Debian => "12",
        OsFamily::Ubuntu => "24.04",
        OsFamily::Suse => "15.5",
        OsFamily::Windows => "2022",
    };
    let mut nics = vec![NicConfig {
        mac: "52:54:00:aa:00:01".parse().expect("static MAC"),
        name: None,
        ipv4: Ipv4Config::Static {
            address: [10, 20, 0, 11].into(),
            prefix: 24,
            gateway: Some([10, 20, 0, 1].into()),
            dns: vec![[10, 20, 0, 1].into()],
        },
        mtu: None,
    }];
    if family != OsFamily::Esxi {
        nics.push(NicConfig {
            mac: "52:54:00:aa:00:02".parse().expect("static MAC"),
            name: None,
            ipv4: Ipv4Config::Dhcp,
            mtu: None,
        });
    }
    let (source, disk, repo_url, packages) = match family {
        OsFamily::Windows => (
            "smb://10.20.0.1/install/win2022",
            DiskSelector::Path("0".into()),
            None,
            vec![],
        ),
        OsFamily::Esxi => (
            "http://10.20.0.1:8080/trees/esxi-8.0/",
            DiskSelector::Largest,
            None,
            vec![],
        ),
        OsFamily::Debian | OsFamily::Ubuntu => (
            "http://10.20.0.1:8080/trees/sample/",
            DiskSelector::Largest,
            Some("http://10.20.0.1:8080/repos/extra stable main"),
            vec!["vim".to_string()],
        ),
        _ => (
            "http://10.20.0.1:8080/trees/sample/",
            DiskSelector::Largest,
            Some("http://10.20.0.1:8080/repos/extra/"),
            vec!["vim".to_string()],
        ),
    };
    let vars = InstallVars {
        hostname: "sample1".into(),
        domain: Some("rack.example".into()),
        nics,
        bonds: vec![],
        vlans: vec![],
        disk,
        layout: PartitionLayout::Lvm,
        packages,
        repositories: repo_url
            .map(|url| {
                vec![Repository {
                    name: "extra".into(),
                    url: url.into(),
                }]
            })
            .unwrap_or_default(),
        timezone: "Etc/UTC".into(),
        locale: "en_US.UTF-8".into(),
        keyboard: "us".into(),
        root_password_hash: Some(SAMPLE_ROOT_HASH.into()),
        ssh_authorized_keys: vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJhY2tib290c2FtcGxla2V5MDAwMDAwMDAwMDAw ops@sample"
                .into(),
        ],
        post_script: Some(if family == OsFamily::Windows {
            "Set-Content -Path C:\\rackboot.txt -Value 'installed by rackboot'".into()
        } else {
            "echo 'installed by rackboot' > /etc/motd".into()
        }),
        install_source_url: source.into(),
        callback_url: "http://10.20.0.1:8080/api/v1/install/done/sample-token".into(),
        started_url: None,
        installed_url: None,
        installer_network: None,
        windows: (family == OsFamily::Windows).then(WindowsVars::default),
    };
    let secrets = RenderSecrets {
        windows_admin_password: (family == OsFamily::Windows).then(|| "Sample-Passw0rd".into()),
        windows_share_password: None,
    };
    (version, vars, secrets)
}
