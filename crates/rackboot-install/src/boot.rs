//! How each installer must be booted to find its rendered file: one
//! [`BootEntry`] that the iPXE, GRUB and pxelinux renderers all consume.
//!
//! | family | loader | arguments | files the HTTP side serves next to the rendered file |
//! |---|---|---|---|
//! | RHEL | tree kernel + initrd | `inst.ks=FILE inst.repo=TREE ip=dhcp [BOOTIF=01-mac]` | - |
//! | Debian | d-i netboot kernel + initrd | `auto=true priority=critical url=FILE interface=auto netcfg/choose_interface=auto ...` (+ `netcfg/no_default_route=true`, `netcfg/get_nameservers=127.0.0.1` on a network known to lack a router, DNS) | - |
//! | Ubuntu | casper kernel + initrd | `autoinstall ip=dhcp url=ISO cloud-config-url=/dev/null ds=nocloud-net;s=DIR/` | `DIR/user-data` (the rendered file), `DIR/meta-data`, `DIR/vendor-data` |
//! | SUSE | tree `linux` + `initrd` | `install=TREE autoyast=FILE self_update=0 [netdevice=mac]` | - |
//! | ESXi | `mboot.c32` (BIOS) / `efi/boot/bootx64.efi` (UEFI) | `-c DIR/boot.cfg` | `DIR/boot.cfg` = [`esxi_boot_cfg`] of the tree's boot.cfg, whose `kernelopt` carries `ks=FILE` |
//! | Windows | `wimboot` | - | `DIR/unattend.xml`, `DIR/winpeshl.ini`, `DIR/install.cmd` (loaded as named initrds) |
//!
//! `FILE` is the URL of the rendered file, `DIR` its directory, `TREE` the
//! OS tree served over HTTP. Console arguments (`console=ttyS0`,
//! `DEBIAN_FRONTEND=text`) are the caller's to append.
//!
//! Windows: wimboot boots WinPE from the tree's `boot.wim` and injects every
//! named initrd into `X:\Windows\System32`. WinPE runs `winpeshl.ini`, which
//! starts `install.cmd`: it initialises networking (`wpeinit`), maps the SMB
//! share holding the install media (`install_source_url`) and runs
//! `setup.exe /unattend:X:\Windows\System32\unattend.xml`. Windows Setup
//! cannot read install media over HTTP, hence the share.

use rackboot_core::{MacAddr, OsFamily};

use crate::InstallerNetwork;

/// Firmware the machine boots with (decides ESXi's and wimboot's files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

/// What the boot side knows when it builds an installer boot.
#[derive(Debug, Clone)]
pub struct BootContext {
    /// The OS tree served over HTTP (from the OS catalog), e.g.
    /// `http://10.0.0.1:8080/trees/rocky-9.4-x86_64/`. For Ubuntu: the
    /// live-server ISO URL (casper downloads it).
    pub tree_url: String,
    /// Kernel URL from the catalog (Linux families; unused by ESXi/Windows).
    pub kernel_url: String,
    /// Initrd URLs from the catalog, in load order (Linux families).
    pub initrd_urls: Vec<String>,
    /// URL of the rendered install file (`.../ks.cfg`, `.../user-data`, ...).
    pub automation_url: String,
    /// The NIC the machine boots from, when known.
    pub boot_mac: Option<MacAddr>,
    pub firmware: Firmware,
    /// Host name and domain for the Debian installer's command line (d-i
    /// configures the network before it reads the preseed).
    pub hostname: Option<String>,
    pub domain: Option<String>,
    /// Windows: URL of the wimboot binary.
    pub wimboot_url: Option<String>,
    /// What the machine's network gives it by DHCP, when known (rackboot
    /// leases its address). Installers that configure the network before
    /// they read their file are told here what is missing, so they do not
    /// stop to ask; `None` assumes a network with a router and DNS.
    pub network: Option<InstallerNetwork>,
}

/// How the loader starts the installer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMethod {
    /// A Linux kernel with initrds and a command line.
    Linux,
    /// VMware's multiboot loader (`mboot.c32`/`mboot.efi`) reading a boot.cfg:
    /// iPXE `kernel URL -c CFG` (BIOS: COMBOOT) or `chain URL -c CFG` (UEFI);
    /// pxelinux `KERNEL mboot.c32` + `APPEND -c CFG`.
    EsxiMboot,
    /// wimboot with named initrds: iPXE `initrd URL NAME`, GRUB
    /// `initrd16 newc:NAME:URL` (BIOS) / `initrd newc:NAME:URL` (UEFI).
    Wimboot,
}

/// A file the loader fetches beside the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    pub url: String,
    /// Name inside the loader (wimboot requires it); `None` for plain initrds.
    pub name: Option<String>,
}

/// Everything a boot-script renderer needs to start one installer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub family: OsFamily,
    pub method: BootMethod,
    /// Kernel, mboot or wimboot URL.
    pub kernel_url: String,
    pub initrds: Vec<BootFile>,
    /// Kernel command line, one word each. Words may contain `;` (Ubuntu's
    /// `ds=`) which GRUB needs quoted; renderers quote per their syntax.
    pub args: Vec<String>,
    /// Files (relative to the rendered file's directory) the HTTP side must
    /// serve for this installer, besides the rendered file itself.
    pub served_files: Vec<&'static str>,
}

impl BootEntry {
    /// The entry as iPXE commands (a reference for renderers, and what the
    /// tests pin): `kernel URL ARGS...`, one `initrd` per file (`initrd URL
    /// NAME` for wimboot's named files), `boot`. iPXE runs EFI and COMBOOT
    /// images (mboot) with `kernel` + `boot` as well as Linux kernels.
    pub fn ipxe_commands(&self) -> Vec<String> {
        let mut kernel = format!("kernel {}", self.kernel_url);
        for a in &self.args {
            kernel.push(' ');
            kernel.push_str(a);
        }
        let mut out = vec![kernel];
        for f in &self.initrds {
            out.push(match &f.name {
                Some(name) => format!("initrd {} {name}", f.url),
                None => format!("initrd {}", f.url),
            });
        }
        out.push("boot".into());
        out
    }
}

/// Why a boot entry cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    #[error("{family} boot needs {what}")]
    Missing {
        family: OsFamily,
        what: &'static str,
    },
    #[error("{family} boot: {reason}")]
    Invalid { family: OsFamily, reason: String },
}

fn dir_of(url: &str) -> &str {
    match url.rfind('/') {
        Some(i) => &url[..=i],
        None => url,
    }
}

fn join(base: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

/// Kernel command line for `family` (the args of [`boot_entry`]).
pub fn kernel_args(
    family: OsFamily,
    version: &str,
    ctx: &BootContext,
) -> Result<Vec<String>, BootError> {
    Ok(boot_entry(family, version, ctx)?.args)
}

/// How to boot `family`'s installer so it installs from `ctx.tree_url`
/// using the rendered file at `ctx.automation_url`.
pub fn boot_entry(
    family: OsFamily,
    version: &str,
    ctx: &BootContext,
) -> Result<BootEntry, BootError> {
    let _ = version; // every supported version boots the same way today
    let need = |cond: bool, what: &'static str| {
        if cond {
            Ok(())
        } else {
            Err(BootError::Missing { family, what })
        }
    };
    need(!ctx.automation_url.is_empty(), "the rendered file's URL")?;
    need(!ctx.tree_url.is_empty(), "the install tree URL")?;
    if ctx
        .automation_url
        .chars()
        .chain(ctx.tree_url.chars())
        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        return Err(BootError::Invalid {
            family,
            reason: "URLs must not contain whitespace or quotes".into(),
        });
    }
    let file = ctx.automation_url.as_str();
    let tree = ctx.tree_url.as_str();
    let linux_files = || -> Result<Vec<BootFile>, BootError> {
        need(!ctx.kernel_url.is_empty(), "the kernel URL")?;
        need(!ctx.initrd_urls.is_empty(), "an initrd URL")?;
        Ok(ctx
            .initrd_urls
            .iter()
            .map(|u| BootFile {
                url: u.clone(),
                name: None,
            })
            .collect())
    };
    let linux = |args: Vec<String>, served: Vec<&'static str>| -> Result<BootEntry, BootError> {
        Ok(BootEntry {
            family,
            method: BootMethod::Linux,
            kernel_url: ctx.kernel_url.clone(),
            initrds: linux_files()?,
            args,
            served_files: served,
        })
    };
    match family {
        OsFamily::Rhel => {
            let mut args = vec![
                format!("inst.ks={file}"),
                format!("inst.repo={tree}"),
                "ip=dhcp".to_string(),
            ];
            if let Some(mac) = ctx.boot_mac {
                // dracut brings up (and anaconda fetches the kickstart over)
                // the NIC the machine booted from.
                args.push(format!("BOOTIF=01-{}", mac.dashed()));
            }
            linux(args, vec![])
        }
        OsFamily::Debian => {
            let mut args: Vec<String> = [
                "auto=true",
                "priority=critical",
                &format!("url={file}"),
                "interface=auto",
                "netcfg/choose_interface=auto",
                "netcfg/dhcp_timeout=60",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(h) = &ctx.hostname {
                args.push(format!("hostname={h}"));
            }
            if let Some(d) = &ctx.domain {
                args.push(format!("domain={d}"));
            }
            // netcfg runs before the preseed file is read: on a network
            // without a router it asks (at critical priority) whether to go on
            // without a default route, and without a DNS server it asks for
            // one. Answered here; 127.0.0.1 resolves nothing, which is the
            // truth on such a network (and fails at once, not by timeout).
            if let Some(net) = &ctx.network {
                if net.router.is_none() {
                    args.push("netcfg/no_default_route=true".into());
                }
                if net.dns.is_empty() {
                    args.push("netcfg/get_nameservers=127.0.0.1".into());
                }
            }
            linux(args, vec![])
        }
        OsFamily::Ubuntu => {
            let Some(dir) = file.strip_suffix("user-data") else {
                return Err(BootError::Invalid {
                    family,
                    reason: "cloud-init's NoCloud reads DIR/user-data and DIR/meta-data: the rendered file's URL must end with /user-data".into(),
                });
            };
            let args = vec![
                "autoinstall".to_string(),
                "ip=dhcp".to_string(),
                format!("url={tree}"),
                // Without this cloud-init takes url= as a cloud-config URL
                // and downloads the ISO a second time.
                "cloud-config-url=/dev/null".to_string(),
                format!("ds=nocloud-net;s={dir}"),
            ];
            linux(args, vec!["meta-data", "vendor-data"])
        }
        OsFamily::Suse => {
            let mut args = vec![
                format!("install={tree}"),
                format!("autoyast={file}"),
                // Provisioning networks rarely reach SUSE's update servers.
                "self_update=0".to_string(),
            ];
            if let Some(mac) = ctx.boot_mac {
                args.push(format!("netdevice={mac}"));
            }
            linux(args, vec![])
        }
        OsFamily::Esxi => {
            let loader = match ctx.firmware {
                Firmware::Bios => join(tree, "mboot.c32"),
                Firmware::Uefi => join(tree, "efi/boot/bootx64.efi"),
            };
            Ok(BootEntry {
                family,
                method: BootMethod::EsxiMboot,
                kernel_url: loader,
                initrds: vec![],
                args: vec!["-c".into(), format!("{}boot.cfg", dir_of(file))],
                served_files: vec!["boot.cfg"],
            })
        }
        OsFamily::Windows => {
            let wimboot =
                ctx.wimboot_url
                    .clone()
                    .filter(|u| !u.is_empty())
                    .ok_or(BootError::Missing {
                        family,
                        what: "the wimboot URL",
                    })?;
            if !file.ends_with("/unattend.xml") {
                return Err(BootError::Invalid {
                    family,
                    reason: "the rendered file's URL must end with /unattend.xml (wimboot injects it under that name)".into(),
                });
            }
            let dir = dir_of(file);
            let named = |url: String, name: &str| BootFile {
                url,
                name: Some(name.to_string()),
            };
            let mut initrds = Vec::new();
            match ctx.firmware {
                Firmware::Bios => {
                    initrds.push(named(join(tree, "bootmgr"), "bootmgr"));
                    initrds.push(named(join(tree, "boot/bcd"), "BCD"));
                }
                Firmware::Uefi => {
                    initrds.push(named(join(tree, "efi/microsoft/boot/bcd"), "BCD"));
                }
            }
            initrds.push(named(join(tree, "boot/boot.sdi"), "boot.sdi"));
            initrds.push(named(join(tree, "sources/boot.wim"), "boot.wim"));
            for f in ["winpeshl.ini", "install.cmd", "unattend.xml"] {
                initrds.push(named(format!("{dir}{f}"), f));
            }
            Ok(BootEntry {
                family,
                method: BootMethod::Wimboot,
                kernel_url: wimboot,
                initrds,
                args: vec![],
                served_files: vec!["winpeshl.ini", "install.cmd"],
            })
        }
    }
}

/// Rewrites an ESXi tree's `boot.cfg` for network boot: `prefix=` the tree
/// URL (mboot then fetches every module relative to it over HTTP), module and
/// kernel paths made relative (a leading `/` would ignore the prefix), and
/// `kernelopt=` without `cdromBoot` and with `ks=KICKSTART_URL`.
pub fn esxi_boot_cfg(original: &str, tree_url: &str, ks_url: &str) -> String {
    let mut out = String::new();
    let mut saw_prefix = false;
    let mut saw_kernelopt = false;
    for line in original.lines() {
        let line = line.trim_end_matches('\r');
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let new = match key {
            "prefix" => {
                saw_prefix = true;
                format!("prefix={}", tree_url.trim_end_matches('/'))
            }
            "kernel" => format!("kernel={}", value.trim_start_matches('/')),
            "modules" => {
                let mods: Vec<String> = value
                    .split(" --- ")
                    .map(|m| m.trim().trim_start_matches('/').to_string())
                    .collect();
                format!("modules={}", mods.join(" --- "))
            }
            "kernelopt" => {
                saw_kernelopt = true;
                let mut opts: Vec<&str> = value
                    .split_whitespace()
                    .filter(|o| *o != "cdromBoot" && !o.starts_with("ks="))
                    .collect();
                let ks = format!("ks={ks_url}");
                opts.push(&ks);
                format!("kernelopt={}", opts.join(" "))
            }
            _ => line.to_string(),
        };
        out.push_str(&new);
        out.push('\n');
    }
    if !saw_prefix {
        out.push_str(&format!("prefix={}\n", tree_url.trim_end_matches('/')));
    }
    if !saw_kernelopt {
        out.push_str(&format!("kernelopt=runweasel ks={ks_url}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(file: &str) -> BootContext {
        BootContext {
            tree_url: "http://10.0.0.1:8080/trees/t/".into(),
            kernel_url: "http://10.0.0.1:8080/trees/t/images/pxeboot/vmlinuz".into(),
            initrd_urls: vec!["http://10.0.0.1:8080/trees/t/images/pxeboot/initrd.img".into()],
            automation_url: file.into(),
            boot_mac: Some("52:54:00:12:34:56".parse().unwrap()),
            firmware: Firmware::Uefi,
            hostname: Some("node1".into()),
            domain: Some("rack.example".into()),
            wimboot_url: Some("http://10.0.0.1:8080/assets/wimboot".into()),
            network: None,
        }
    }

    #[test]
    fn debian_is_told_what_the_network_lacks() {
        let f = "http://h/install/m1/preseed.cfg";
        let extra = |network: Option<InstallerNetwork>| {
            let mut c = ctx(f);
            c.network = network;
            let args = kernel_args(OsFamily::Debian, "12", &c).unwrap();
            args.into_iter()
                .filter(|a| {
                    a.starts_with("netcfg/no_default_route")
                        || a.starts_with("netcfg/get_nameservers")
                })
                .collect::<Vec<_>>()
        };
        let full = InstallerNetwork {
            router: Some([10, 0, 0, 254].into()),
            dns: vec![[10, 0, 0, 53].into()],
            ntp: vec![],
        };
        let table: &[(Option<InstallerNetwork>, &[&str])] = &[
            // Unknown (ProxyDHCP beside another server): nothing is assumed missing.
            (None, &[]),
            (Some(full.clone()), &[]),
            (
                Some(InstallerNetwork::default()),
                &[
                    "netcfg/no_default_route=true",
                    "netcfg/get_nameservers=127.0.0.1",
                ],
            ),
            (
                Some(InstallerNetwork {
                    router: None,
                    ..full.clone()
                }),
                &["netcfg/no_default_route=true"],
            ),
            (
                Some(InstallerNetwork {
                    dns: vec![],
                    ..full.clone()
                }),
                &["netcfg/get_nameservers=127.0.0.1"],
            ),
        ];
        for (network, want) in table {
            assert_eq!(&extra(network.clone()), want, "{network:?}");
        }
        // Other families configure the network from their file: no change.
        let mut c = ctx("http://h/install/m1/ks.cfg");
        c.network = Some(InstallerNetwork::default());
        assert!(
            kernel_args(OsFamily::Rhel, "9", &c)
                .unwrap()
                .iter()
                .all(|a| !a.starts_with("netcfg/"))
        );
    }

    #[test]
    fn args_per_family() {
        let f = "http://10.0.0.1:8080/install/m1/ks.cfg";
        let table: &[(OsFamily, &str, &[&str])] = &[
            (
                OsFamily::Rhel,
                f,
                &[
                    "inst.ks=http://10.0.0.1:8080/install/m1/ks.cfg",
                    "inst.repo=http://10.0.0.1:8080/trees/t/",
                    "ip=dhcp",
                    "BOOTIF=01-52-54-00-12-34-56",
                ],
            ),
            (
                OsFamily::Debian,
                "http://h/install/m1/preseed.cfg",
                &[
                    "auto=true",
                    "priority=critical",
                    "url=http://h/install/m1/preseed.cfg",
                    "interface=auto",
                    "netcfg/choose_interface=auto",
                    "netcfg/dhcp_timeout=60",
                    "hostname=node1",
                    "domain=rack.example",
                ],
            ),
            (
                OsFamily::Ubuntu,
                "http://h/install/m1/user-data",
                &[
                    "autoinstall",
                    "ip=dhcp",
                    "url=http://10.0.0.1:8080/trees/t/",
                    "cloud-config-url=/dev/null",
                    "ds=nocloud-net;s=http://h/install/m1/",
                ],
            ),
            (
                OsFamily::Suse,
                "http://h/install/m1/autoinst.xml",
                &[
                    "install=http://10.0.0.1:8080/trees/t/",
                    "autoyast=http://h/install/m1/autoinst.xml",
                    "self_update=0",
                    "netdevice=52:54:00:12:34:56",
                ],
            ),
            (
                OsFamily::Esxi,
                "http://h/install/m1/ks.cfg",
                &["-c", "http://h/install/m1/boot.cfg"],
            ),
            (OsFamily::Windows, "http://h/install/m1/unattend.xml", &[]),
        ];
        for (family, file, want) in table {
            let got = kernel_args(*family, "1", &ctx(file)).unwrap();
            assert_eq!(&got, want, "{family}");
        }
    }

    #[test]
    fn ubuntu_and_windows_need_their_file_names() {
        assert!(boot_entry(OsFamily::Ubuntu, "24.04", &ctx("http://h/x/ks.cfg")).is_err());
        assert!(boot_entry(OsFamily::Windows, "2022", &ctx("http://h/x/u.xml")).is_err());
        let mut c = ctx("http://h/x/unattend.xml");
        c.wimboot_url = None;
        assert!(matches!(
            boot_entry(OsFamily::Windows, "2022", &c),
            Err(BootError::Missing { .. })
        ));
        let mut c = ctx("http://h/x/ks.cfg");
        c.kernel_url.clear();
        assert!(boot_entry(OsFamily::Rhel, "9", &c).is_err());
    }

    #[test]
    fn windows_wimboot_files() {
        let mut c = ctx("http://h/install/m1/unattend.xml");
        let e = boot_entry(OsFamily::Windows, "2022", &c).unwrap();
        assert_eq!(e.method, BootMethod::Wimboot);
        let names: Vec<_> = e.initrds.iter().map(|f| f.name.clone().unwrap()).collect();
        assert_eq!(
            names,
            [
                "BCD",
                "boot.sdi",
                "boot.wim",
                "winpeshl.ini",
                "install.cmd",
                "unattend.xml"
            ]
        );
        assert_eq!(
            e.initrds[0].url,
            "http://10.0.0.1:8080/trees/t/efi/microsoft/boot/bcd"
        );
        assert_eq!(e.initrds[5].url, "http://h/install/m1/unattend.xml");
        c.firmware = Firmware::Bios;
        let e = boot_entry(OsFamily::Windows, "2022", &c).unwrap();
        assert_eq!(e.initrds[0].name.as_deref(), Some("bootmgr"));
        assert_eq!(e.initrds[1].url, "http://10.0.0.1:8080/trees/t/boot/bcd");
    }

    #[test]
    fn ipxe_commands() {
        let e = boot_entry(OsFamily::Rhel, "9", &ctx("http://h/i/ks.cfg")).unwrap();
        assert_eq!(
            e.ipxe_commands(),
            [
                "kernel http://10.0.0.1:8080/trees/t/images/pxeboot/vmlinuz inst.ks=http://h/i/ks.cfg inst.repo=http://10.0.0.1:8080/trees/t/ ip=dhcp BOOTIF=01-52-54-00-12-34-56",
                "initrd http://10.0.0.1:8080/trees/t/images/pxeboot/initrd.img",
                "boot",
            ]
        );
        let e = boot_entry(OsFamily::Windows, "2022", &ctx("http://h/i/unattend.xml")).unwrap();
        let cmds = e.ipxe_commands();
        assert_eq!(cmds[0], "kernel http://10.0.0.1:8080/assets/wimboot");
        assert_eq!(cmds[6], "initrd http://h/i/unattend.xml unattend.xml");
        let e = boot_entry(OsFamily::Esxi, "8.0", &ctx("http://h/i/ks.cfg")).unwrap();
        assert_eq!(
            e.ipxe_commands()[0],
            "kernel http://10.0.0.1:8080/trees/t/efi/boot/bootx64.efi -c http://h/i/boot.cfg"
        );
    }

    #[test]
    fn esxi_loader_per_firmware() {
        let mut c = ctx("http://h/install/m1/ks.cfg");
        let e = boot_entry(OsFamily::Esxi, "8.0", &c).unwrap();
        assert_eq!(
            e.kernel_url,
            "http://10.0.0.1:8080/trees/t/efi/boot/bootx64.efi"
        );
        c.firmware = Firmware::Bios;
        let e = boot_entry(OsFamily::Esxi, "8.0", &c).unwrap();
        assert_eq!(e.kernel_url, "http://10.0.0.1:8080/trees/t/mboot.c32");
        assert_eq!(e.served_files, ["boot.cfg"]);
    }

    #[test]
    fn esxi_boot_cfg_rewrite() {
        // The shape of an ESXi 8.0 ISO's boot.cfg (module list shortened).
        let original = "bootstate=0\r\ntitle=Loading ESXi installer\r\ntimeout=5\r\nprefix=\r\nkernel=/b.b00\r\nkernelopt=runweasel cdromBoot\r\nmodules=/jumpstrt.gz --- /useropts.gz --- /features.gz --- /k.b00 --- /imgdb.tgz --- /imgpayld.tgz\r\nbuild=8.0.2-0.0.22380479\r\nupdated=0\r\n";
        let got = esxi_boot_cfg(
            original,
            "http://10.0.0.1:8080/trees/esxi-8/",
            "http://10.0.0.1:8080/install/m1/ks.cfg",
        );
        assert_eq!(
            got,
            "bootstate=0\ntitle=Loading ESXi installer\ntimeout=5\nprefix=http://10.0.0.1:8080/trees/esxi-8\nkernel=b.b00\nkernelopt=runweasel ks=http://10.0.0.1:8080/install/m1/ks.cfg\nmodules=jumpstrt.gz --- useropts.gz --- features.gz --- k.b00 --- imgdb.tgz --- imgpayld.tgz\nbuild=8.0.2-0.0.22380479\nupdated=0\n"
        );
        let got = esxi_boot_cfg("kernel=/b.b00\n", "http://t/", "http://k");
        assert_eq!(
            got,
            "kernel=b.b00\nprefix=http://t\nkernelopt=runweasel ks=http://k\n"
        );
    }
}
