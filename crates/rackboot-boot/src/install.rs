//! Installer-based installs as the boot side sees them: what an operator asks
//! for (stored with the request), the variables a machine's unattended file is
//! rendered from, the URLs the installer is pointed at, and the installer's
//! boot entry. Pure: no store, no sockets.
//!
//! URLs (all under the boot HTTP base URL):
//! - `/os/<os-id>/...`: the imported OS tree (the install source);
//! - `/install/<install-id>/<secret>/<file>`: the rendered file and its
//!   companions (`user-data` + `meta-data`, `boot.cfg`, `winpeshl.ini`...),
//!   under the install's files secret (only in the machine's boot script),
//!   to the machine's address only (see [`crate::access`]);
//! - `/install/<install-id>/installed/<token>`: the installer finished (its
//!   last step); the machine boots its disk from then on;
//! - `/install/<install-id>/done/<token>`: the completion callback (the
//!   installed system's first boot, or the installer's last step for a
//!   template that has no first-boot report).

use rackboot_core::{Arch, InstallRequest, Machine, OsFamily};
use rackboot_install::{
    BootContext, BootEntry, Firmware, InstallVars, InstallerNetwork, RenderError, RenderSecrets,
    Rendered, TemplateChoice,
};
use rackboot_oscatalog::OsRelease;
use rackboot_seal::SecretKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::render::ServerUrls;

/// What an operator gives when requesting an install; stored as the request's
/// `vars`. The server fills what it knows: `hostname` (the machine's name),
/// `nics` (DHCP on the boot NIC), `disk` (the smallest disk; Windows: disk 0),
/// `install_source_url` (the imported tree) and always `callback_url`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallInput {
    /// Install variables (see rackboot-install's `InstallVars`): hostname,
    /// domain, nics, bonds, vlans, disk, layout, packages, repositories,
    /// timezone, locale, keyboard, root_password_hash, ssh_authorized_keys,
    /// post_script, install_source_url, windows.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub vars: Map<String, Value>,
    /// Extra installer kernel arguments, e.g. `console=ttyS0,115200`.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Passwords the rendered file needs in a recoverable form (Windows'
    /// unattend.xml), sealed with the server's key; never the clear text.
    #[serde(default, skip_serializing_if = "SealedSecrets::is_empty")]
    pub sealed: SealedSecrets,
}

/// [`RenderSecrets`] as stored: each one sealed with the server's key
/// (`rackboot_seal`), so the database and API output never hold them in clear.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SealedSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_admin_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_share_password: Option<String>,
}

impl SealedSecrets {
    pub fn is_empty(&self) -> bool {
        self.windows_admin_password.is_none() && self.windows_share_password.is_none()
    }

    /// Seals the secrets given in clear.
    pub fn seal(clear: &RenderSecrets, key: &SecretKey) -> SealedSecrets {
        SealedSecrets {
            windows_admin_password: clear
                .windows_admin_password
                .as_deref()
                .map(|p| key.encrypt(p)),
            windows_share_password: clear
                .windows_share_password
                .as_deref()
                .map(|p| key.encrypt(p)),
        }
    }

    /// The secrets in clear for a render. Errors name the secret.
    pub fn unseal(&self, key: Option<&SecretKey>) -> Result<RenderSecrets, RenderError> {
        let open = |name: &str, sealed: &Option<String>| -> Result<Option<String>, RenderError> {
            let Some(sealed) = sealed else {
                return Ok(None);
            };
            let key = key.ok_or_else(|| RenderError::InvalidValue {
                name: name.into(),
                reason: "is sealed, but this server has no secret key to open it".into(),
            })?;
            key.decrypt(sealed)
                .map(Some)
                .map_err(|e| RenderError::InvalidValue {
                    name: name.into(),
                    reason: format!(
                        "cannot be unsealed ({e}); was the server's secret key replaced?"
                    ),
                })
        };
        Ok(RenderSecrets {
            windows_admin_password: open("windows_admin_password", &self.windows_admin_password)?,
            windows_share_password: open("windows_share_password", &self.windows_share_password)?,
        })
    }
}

impl InstallInput {
    pub fn from_request(install: &InstallRequest) -> Result<InstallInput, String> {
        serde_json::from_value(install.vars.clone())
            .map_err(|e| format!("install {}: stored variables: {e}", install.id))
    }
}

/// Where one install's files live, as seen by the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallUrls {
    /// `<base>/os/<os-id>/`
    pub tree: String,
    /// `<base>/install/<install-id>/<files secret>/` (see
    /// [`crate::access::files_secret`])
    pub dir: String,
    /// `<base>/install/<install-id>/<files secret>/<file name of the family>`
    pub file: String,
    /// `<base>/install/<install-id>/done/<token>`
    pub callback: String,
    /// `<base>/install/<install-id>/started/<token>`: the installer's first
    /// command reports that it read its file.
    pub started: String,
    /// `<base>/install/<install-id>/installed/<token>`: the installer's last
    /// step reports that it finished.
    pub installed: String,
}

impl InstallUrls {
    pub fn new(urls: &ServerUrls, install: &InstallRequest, family: OsFamily) -> InstallUrls {
        let base = format!("{}/install/{}/", urls.base_url, install.id);
        // The files under the install's secret (only in this machine's boot
        // script); the callbacks carry the token (only in the files).
        let dir = format!("{base}{}/", crate::access::files_secret(install));
        InstallUrls {
            tree: format!("{}/os/{}/", urls.base_url, install.os),
            file: format!("{dir}{}", rackboot_install::file_name(family).0),
            callback: format!("{base}done/{}", install.token),
            started: format!("{base}started/{}", install.token),
            installed: format!("{base}installed/{}", install.token),
            dir,
        }
    }
}

/// The full variables for rendering: the operator's, completed with what the
/// server knows (the callbacks always; what the machine's network offers its
/// installer when `network` is known). Errors name the value.
pub fn install_vars(
    machine: &Machine,
    input: &InstallInput,
    release: &OsRelease,
    urls: &InstallUrls,
    network: Option<&InstallerNetwork>,
    secrets: &RenderSecrets,
) -> Result<InstallVars, RenderError> {
    let mut vars = input.vars.clone();
    vars.entry("hostname")
        .or_insert_with(|| json!(host_label(&machine.name)));
    if let Some(mac) = machine.macs.first() {
        vars.entry("nics")
            .or_insert_with(|| json!([{"mac": mac, "ipv4": {"mode": "dhcp"}}]));
    }
    // Windows Setup names disks by number and has no size rules: disk 0.
    vars.entry("disk").or_insert_with(|| match release.family {
        OsFamily::Windows => json!({"rule": "path", "value": "0"}),
        _ => json!({"rule": "smallest"}),
    });
    vars.entry("install_source_url")
        .or_insert_with(|| json!(urls.tree));
    // The callbacks always come from the server: they carry the token.
    vars.insert("callback_url".into(), json!(urls.callback));
    vars.insert("started_url".into(), json!(urls.started));
    vars.insert("installed_url".into(), json!(urls.installed));
    match network {
        Some(network) => {
            vars.insert("installer_network".into(), json!(network));
        }
        None => {
            vars.remove("installer_network");
        }
    }
    let vars: InstallVars =
        serde_json::from_value(Value::Object(vars)).map_err(|e| RenderError::InvalidValue {
            name: "vars".into(),
            reason: e.to_string(),
        })?;
    vars.validate(release.family, secrets)?;
    Ok(vars)
}

/// A machine name as a host label: lower case, letters, digits and '-'.
fn host_label(name: &str) -> String {
    let label: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "host".into()
    } else {
        label.chars().take(63).collect()
    }
}

/// Renders the machine's unattended file (and its companions); `key` opens
/// the install's sealed secrets.
pub fn render_file(
    machine: &Machine,
    install: &InstallRequest,
    release: &OsRelease,
    template_source: Option<&str>,
    urls: &ServerUrls,
    key: Option<&SecretKey>,
) -> Result<Rendered, RenderError> {
    let input =
        InstallInput::from_request(install).map_err(|reason| RenderError::InvalidValue {
            name: "vars".into(),
            reason,
        })?;
    let install_urls = InstallUrls::new(urls, install, release.family);
    let secrets = input.sealed.unseal(key)?;
    let vars = install_vars(
        machine,
        &input,
        release,
        &install_urls,
        urls.client_network.as_ref(),
        &secrets,
    )?;
    let choice = match template_source {
        Some(source) => TemplateChoice::Override(source),
        None => TemplateChoice::Builtin,
    };
    rackboot_install::render(release.family, &release.version, choice, &vars, &secrets)
}

/// How the machine boots its installer.
pub fn boot_entry(
    machine: &Machine,
    install: &InstallRequest,
    release: &OsRelease,
    urls: &ServerUrls,
) -> Result<BootEntry, String> {
    let input = InstallInput::from_request(install)?;
    let install_urls = InstallUrls::new(urls, install, release.family);
    let tree_file = |p: &std::path::Path| format!("{}{}", install_urls.tree, p.display());
    let firmware = match machine.arch {
        Some(Arch::Bios) | None => Firmware::Bios,
        Some(_) => Firmware::Uefi,
    };
    let ctx = BootContext {
        tree_url: install_urls.tree.clone(),
        kernel_url: tree_file(&release.kernel),
        initrd_urls: vec![tree_file(&release.initrd)],
        automation_url: install_urls.file.clone(),
        boot_mac: machine.macs.first().copied(),
        firmware,
        hostname: input
            .vars
            .get("hostname")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| Some(host_label(&machine.name))),
        domain: input
            .vars
            .get("domain")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        wimboot_url: Some(format!("{}/boot/loader/wimboot", urls.base_url)),
        network: urls.client_network.clone(),
    };
    let mut entry = rackboot_install::boot_entry(release.family, &release.version, &ctx)
        .map_err(|e| format!("install {} of {}: {e}", install.id, install.os))?;
    entry.args.extend(input.kernel_args.iter().cloned());
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackboot_core::{InstallState, MacAddr};
    use rackboot_oscatalog::SourceKind;

    fn debian() -> OsRelease {
        OsRelease {
            id: "debian-12-amd64".into(),
            family: OsFamily::Debian,
            distro: "debian".into(),
            version: "12".into(),
            arch: "amd64".into(),
            name: "Debian 12".into(),
            kernel: "debian-installer/amd64/linux".into(),
            initrd: "debian-installer/amd64/initrd.gz".into(),
            extra_boot_files: vec![],
            boot_config: None,
            bootloader_bios: None,
            bootloader_efi: None,
            source_kind: SourceKind::Tree,
            repository: None,
        }
    }

    fn request(vars: Value) -> (Machine, InstallRequest) {
        let mac: MacAddr = "52:54:00:aa:bb:01".parse().unwrap();
        let mut machine = Machine::discovered(mac, None, Some(Arch::Bios));
        machine.name = "Node_1".into();
        let install = InstallRequest {
            id: uuid::Uuid::from_u128(7),
            machine: machine.id,
            os: "debian-12-amd64".into(),
            template: None,
            vars,
            token: "tok123".into(),
            state: InstallState::Pending,
            requested_at: chrono::Utc::now(),
            completed_at: None,
        };
        (machine, install)
    }

    fn urls() -> ServerUrls {
        ServerUrls::new("http://10.77.0.1:8080", "assets")
    }

    #[test]
    fn server_fills_hostname_nic_disk_source_and_callback() {
        let (machine, install) = request(json!({"vars": {
            "root_password_hash": "$6$salt$2bM1Xw0dYhV0B5Zb3h7u9c6sVnq1Wq3z1yA4oQ2m8F6eTzQnq0Yy0dG5mK8hJbXwE1vC3sZ4rT7uI9oP2lK6j/",
        }}));
        let release = debian();
        let u = InstallUrls::new(&urls(), &install, release.family);
        assert_eq!(u.tree, "http://10.77.0.1:8080/os/debian-12-amd64/");
        let secret = crate::access::files_secret(&install);
        assert_eq!(
            u.file,
            format!(
                "http://10.77.0.1:8080/install/00000000-0000-0000-0000-000000000007/{secret}/preseed.cfg"
            )
        );
        assert_eq!(
            u.callback,
            "http://10.77.0.1:8080/install/00000000-0000-0000-0000-000000000007/done/tok123"
        );
        let input = InstallInput::from_request(&install).unwrap();
        let vars = install_vars(
            &machine,
            &input,
            &release,
            &u,
            None,
            &RenderSecrets::default(),
        )
        .unwrap();
        assert_eq!(vars.hostname, "node-1");
        assert_eq!(vars.nics.len(), 1);
        assert_eq!(vars.install_source_url, u.tree);
        assert_eq!(vars.callback_url, u.callback);
    }

    #[test]
    fn operator_cannot_override_the_callback_and_bad_values_are_named() {
        let (machine, install) = request(json!({"vars": {"callback_url": "http://evil/"}}));
        let release = debian();
        let u = InstallUrls::new(&urls(), &install, release.family);
        let input = InstallInput::from_request(&install).unwrap();
        // Without a root password or SSH key the install would be unreachable.
        let err = install_vars(
            &machine,
            &input,
            &release,
            &u,
            None,
            &RenderSecrets::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");

        let (_, bad) = request(json!({"vars": {"hostnme": "x"}}));
        let input = InstallInput::from_request(&bad).unwrap();
        let err = install_vars(
            &machine,
            &input,
            &release,
            &u,
            None,
            &RenderSecrets::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("hostnme"), "{err}");
    }

    #[test]
    fn sealed_secrets_open_only_with_the_key_that_sealed_them() {
        let key = SecretKey::generate();
        let clear = RenderSecrets {
            windows_admin_password: Some("Adm1n!".into()),
            windows_share_password: None,
        };
        let sealed = SealedSecrets::seal(&clear, &key);
        let stored = serde_json::to_string(&sealed).unwrap();
        assert!(
            !stored.contains("Adm1n!") && stored.contains("v1:"),
            "{stored}"
        );
        assert!(sealed.unseal(Some(&key)).unwrap() == clear);
        for (other, why) in [
            (None, "no secret key"),
            (Some(SecretKey::generate()), "secret key replaced"),
        ] {
            let err = sealed.unseal(other.as_ref()).unwrap_err().to_string();
            assert!(
                err.contains("windows_admin_password") && err.contains(why),
                "{err}"
            );
        }
        assert!(SealedSecrets::default().unseal(None).unwrap() == RenderSecrets::default());
    }

    #[test]
    fn debian_preseed_reports_started_first_and_completion_last() {
        let (machine, install) = request(json!({"vars": {
            "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv1sCq0b4vYtq9pS8b1jFh1Kq6YwJ7cT4Jx0h2mZ0aB ops@x"],
        }}));
        let rendered = render_file(&machine, &install, &debian(), None, &urls(), None).unwrap();
        let started =
            "http://10.77.0.1:8080/install/00000000-0000-0000-0000-000000000007/started/tok123";
        let early = rendered
            .body
            .lines()
            .position(|l| l.starts_with("d-i preseed/early_command string") && l.contains(started))
            .unwrap_or_else(|| panic!("no early_command calling {started}:\n{}", rendered.body));
        let late = rendered
            .body
            .lines()
            .position(|l| {
                l.starts_with("d-i preseed/late_command") && l.contains("/installed/tok123")
            })
            .expect("late_command calls the installed URL");
        assert!(early < late);
        // The installed system, not the installer, calls the completion URL.
        assert!(
            rendered.body.contains(
                "to http://10.77.0.1:8080/install/00000000-0000-0000-0000-000000000007/done/tok123 (rackboot-firstboot.service)"
            ),
            "{}",
            rendered.body
        );
    }

    #[test]
    fn the_machines_network_reaches_the_kernel_line_and_the_preseed() {
        let (machine, install) = request(json!({"vars": {
            "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv1sCq0b4vYtq9pS8b1jFh1Kq6YwJ7cT4Jx0h2mZ0aB ops@x"],
        }}));
        let mut isolated = urls();
        isolated.client_network = Some(InstallerNetwork::default());
        let entry = boot_entry(&machine, &install, &debian(), &isolated).unwrap();
        for arg in [
            "netcfg/no_default_route=true",
            "netcfg/get_nameservers=127.0.0.1",
        ] {
            assert!(
                entry.args.iter().any(|a| a == arg),
                "{arg}: {:?}",
                entry.args
            );
        }
        let body = render_file(&machine, &install, &debian(), None, &isolated, None)
            .unwrap()
            .body;
        assert!(body.contains("d-i clock-setup/ntp boolean false"), "{body}");
        // Unknown network (ProxyDHCP): nothing assumed missing.
        let entry = boot_entry(&machine, &install, &debian(), &urls()).unwrap();
        assert!(
            entry
                .args
                .iter()
                .all(|a| !a.starts_with("netcfg/no_default_route"))
        );
        let body = render_file(&machine, &install, &debian(), None, &urls(), None)
            .unwrap()
            .body;
        assert!(body.contains("d-i clock-setup/ntp boolean true"), "{body}");
        // An operator's installer_network never overrides the server's view.
        let (machine, install) = request(json!({"vars": {
            "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv1sCq0b4vYtq9pS8b1jFh1Kq6YwJ7cT4Jx0h2mZ0aB ops@x"],
            "installer_network": {"router": "10.0.0.1", "dns": ["10.0.0.1"]},
        }}));
        let body = render_file(&machine, &install, &debian(), None, &isolated, None)
            .unwrap()
            .body;
        assert!(body.contains("d-i clock-setup/ntp boolean false"), "{body}");
    }

    #[test]
    fn debian_boot_entry_points_at_the_tree_and_preseed_and_keeps_extra_args() {
        let (machine, install) =
            request(json!({"vars": {}, "kernel_args": ["console=ttyS0,115200"]}));
        let entry = boot_entry(&machine, &install, &debian(), &urls()).unwrap();
        assert_eq!(
            entry.kernel_url,
            "http://10.77.0.1:8080/os/debian-12-amd64/debian-installer/amd64/linux"
        );
        let secret = crate::access::files_secret(&install);
        let url = format!(
            "url=http://10.77.0.1:8080/install/00000000-0000-0000-0000-000000000007/{secret}/preseed.cfg"
        );
        assert!(entry.args.contains(&url), "{:?}", entry.args);
        assert_eq!(entry.args.last().unwrap(), "console=ttyS0,115200");
    }
}
