//! Recognising installation media: pure functions over a [`MediaFs`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rackboot_core::OsFamily;

use crate::iso::IsoImage;
use crate::media::{
    DirTree, Entry, EntryKind, MediaError, MediaFs, Resolved, find_file, lookup, read_small,
};
use crate::{OsRelease, PackageRepository, RepositoryKind, release_id, wim};

/// What detection looks for, in this order (shown when nothing matches).
pub const LOOKED_FOR: &[&str] = &[
    ".treeinfo or treeinfo (RHEL, Rocky, Alma, CentOS, Fedora; SLES/openSUSE 15)",
    ".disk/info (Debian and Ubuntu ISOs)",
    "version.info + debian-installer/<arch>/linux (Debian netboot tree)",
    "dists/<suite>/Release + pool/ with main/installer-<arch>/current/images/netboot (a Debian archive or mirror, e.g. from scripts/build-debian-mirror)",
    "media.1/products or content (SUSE)",
    "boot.cfg or efi/boot/boot.cfg with kernel= and modules= (VMware ESXi)",
    "sources/boot.wim with boot/bcd and boot/boot.sdi (Windows)",
];

/// Metadata files are small; anything bigger is not what we are looking for.
const META_LIMIT: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("unrecognised installation media: looked for {}{}", .looked_for.join("; "), .hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    UnknownMedia {
        looked_for: Vec<&'static str>,
        hint: Option<String>,
    },
    #[error("{file}: {reason}")]
    Malformed { file: String, reason: String },
    #[error("{file} names {missing}, which is not on the media")]
    MissingBootFile { file: String, missing: String },
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// Opens a path as media: a directory tree, or a file read as an ISO image.
pub fn open_media(source: &Path) -> Result<Box<dyn MediaFs>, MediaError> {
    let meta = std::fs::metadata(source).map_err(|e| MediaError::Io {
        path: source.display().to_string(),
        source: e,
    })?;
    if meta.is_dir() {
        Ok(Box::new(DirTree::new(source)?))
    } else {
        Ok(Box::new(IsoImage::open(source)?))
    }
}

/// Recognises the OS on the media.
pub fn detect(fs: &dyn MediaFs) -> Result<OsRelease, DetectError> {
    for probe in [
        treeinfo,
        disk_info,
        debian_netboot,
        debian_archive,
        suse,
        esxi,
        windows,
    ] {
        if let Some(release) = probe(fs)? {
            return Ok(release);
        }
    }
    let hint = if find_file(fs, "repodata/repomd.xml")?.is_some() {
        Some(
            "an RPM repository without an installer: import the installation tree (.treeinfo, images/pxeboot), whose repositories are recognised and served with it".into(),
        )
    } else {
        fs.unknown_media_hint()
    };
    Err(DetectError::UnknownMedia {
        looked_for: LOOKED_FOR.to_vec(),
        hint,
    })
}

fn read_text(fs: &dyn MediaFs, path: &str) -> Result<Option<(String, String)>, DetectError> {
    let Some((canonical, _)) = find_file(fs, path)? else {
        return Ok(None);
    };
    let bytes = read_small(fs, &canonical, META_LIMIT)?.unwrap_or_default();
    Ok(Some((
        canonical,
        String::from_utf8_lossy(&bytes).into_owned(),
    )))
}

/// Finds a boot file named by a metadata file; its absence is an error.
fn require(fs: &dyn MediaFs, referenced_by: &str, path: &str) -> Result<PathBuf, DetectError> {
    match find_file(fs, path.trim_start_matches('/'))? {
        Some((canonical, _)) => Ok(PathBuf::from(canonical)),
        None => Err(DetectError::MissingBootFile {
            file: referenced_by.to_string(),
            missing: path.to_string(),
        }),
    }
}

fn first_existing(fs: &dyn MediaFs, candidates: &[&str]) -> Result<Option<PathBuf>, DetectError> {
    for candidate in candidates {
        if let Some((canonical, _)) = find_file(fs, candidate)? {
            return Ok(Some(PathBuf::from(canonical)));
        }
    }
    Ok(None)
}

fn linux(
    family: OsFamily,
    distro: &str,
    version: &str,
    arch: &str,
    name: String,
    (kernel, initrd): (PathBuf, PathBuf),
    fs: &dyn MediaFs,
) -> OsRelease {
    OsRelease {
        id: release_id(distro, version, arch),
        family,
        distro: distro.to_string(),
        version: version.to_string(),
        arch: arch.to_string(),
        name,
        kernel,
        initrd,
        extra_boot_files: Vec::new(),
        boot_config: None,
        bootloader_bios: None,
        bootloader_efi: None,
        source_kind: fs.source_kind(),
        repository: None,
    }
}

/// A minimal INI reader: `[section]`, `key = value`, `;`/`#` comments.
pub fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
            sections.entry(current.clone()).or_default();
        } else if let Some((key, value)) = line.split_once('=') {
            sections
                .entry(current.clone())
                .or_default()
                .insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    sections
}

/// Maps a .treeinfo family/product name to (family, distro slug).
fn treeinfo_distro(product: &str) -> (OsFamily, String) {
    let p = product.to_ascii_lowercase();
    let known: &[(&str, OsFamily, &str)] = &[
        ("rocky", OsFamily::Rhel, "rocky"),
        ("alma", OsFamily::Rhel, "almalinux"),
        ("centos stream", OsFamily::Rhel, "centos-stream"),
        ("centos", OsFamily::Rhel, "centos"),
        ("fedora", OsFamily::Rhel, "fedora"),
        ("red hat", OsFamily::Rhel, "rhel"),
        ("oracle", OsFamily::Rhel, "ol"),
        ("opensuse leap", OsFamily::Suse, "opensuse-leap"),
        ("opensuse", OsFamily::Suse, "opensuse"),
        ("suse linux enterprise server", OsFamily::Suse, "sles"),
        ("sles", OsFamily::Suse, "sles"),
        ("suse", OsFamily::Suse, "sle"),
    ];
    for (needle, family, distro) in known {
        if p.contains(needle) {
            return (*family, distro.to_string());
        }
    }
    // Another Anaconda-installed derivative: Kickstart still applies.
    (OsFamily::Rhel, crate::slug(product))
}

fn treeinfo(fs: &dyn MediaFs) -> Result<Option<OsRelease>, DetectError> {
    let Some((file, text)) = read_text(fs, ".treeinfo")?.or(read_text(fs, "treeinfo")?) else {
        return Ok(None);
    };
    let ini = parse_ini(&text);
    let get = |section: &str, key: &str| {
        ini.get(section)
            .and_then(|s| s.get(key))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let malformed = |reason: &str| DetectError::Malformed {
        file: file.clone(),
        reason: reason.to_string(),
    };
    let product = get("release", "name")
        .or_else(|| get("general", "family"))
        .ok_or_else(|| malformed("no [release] name or [general] family"))?;
    let version = get("release", "version")
        .or_else(|| get("general", "version"))
        .ok_or_else(|| malformed("no [release] or [general] version"))?;
    let arch = get("general", "arch")
        .or_else(|| get("tree", "arch"))
        .ok_or_else(|| malformed("no [general] or [tree] arch"))?;
    let images = format!("images-{arch}");
    let kernel =
        get(&images, "kernel").ok_or_else(|| malformed(&format!("no kernel in [{images}]")))?;
    let initrd =
        get(&images, "initrd").ok_or_else(|| malformed(&format!("no initrd in [{images}]")))?;
    let (family, distro) = treeinfo_distro(&product);
    let repository = rpm_repositories(fs, get("general", "variants").as_deref())?;
    let name = get("general", "name").unwrap_or_else(|| format!("{product} {version}"));
    // "AlmaLinux 9" next to version 9.1: say the full version.
    let name = if name.contains(&version) {
        name
    } else {
        format!("{product} {version}")
    };
    let mut release = linux(
        family,
        &distro,
        &version,
        &arch,
        name,
        (require(fs, &file, &kernel)?, require(fs, &file, &initrd)?),
        fs,
    );
    release.repository = repository;
    Ok(Some(release))
}

/// The RPM repositories of a tree: `repodata/repomd.xml` at the root (RHEL 7
/// style) and in each variant's directory (`BaseOS`, `AppStream`, named by
/// .treeinfo's `variants`).
fn rpm_repositories(
    fs: &dyn MediaFs,
    variants: Option<&str>,
) -> Result<Option<PackageRepository>, DetectError> {
    let mut paths = Vec::new();
    let dirs = std::iter::once("").chain(
        variants
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty()),
    );
    for dir in dirs {
        let repomd = if dir.is_empty() {
            "repodata/repomd.xml".to_string()
        } else {
            format!("{dir}/repodata/repomd.xml")
        };
        if let Some((canonical, _)) = find_file(fs, &repomd)? {
            let root = canonical
                .strip_suffix("repodata/repomd.xml")
                .unwrap_or_default()
                .trim_end_matches('/');
            paths.push(PathBuf::from(root));
        }
    }
    Ok((!paths.is_empty()).then_some(PackageRepository {
        kind: RepositoryKind::Rpm,
        paths,
        suite: None,
        components: Vec::new(),
    }))
}

/// The fields of a Debian control-format paragraph (`Key: value`; folded
/// continuation lines are skipped). An InRelease file's signature armour
/// is skipped too.
pub fn parse_release(text: &str) -> HashMap<String, String> {
    // InRelease: the armour header ("Hash: SHA256") ends at the first blank line.
    let text = match text.strip_prefix("-----BEGIN PGP SIGNED MESSAGE-----") {
        Some(rest) => rest.split_once("\n\n").map_or("", |(_, body)| body),
        None => text,
    };
    let mut fields = HashMap::new();
    for line in text.lines() {
        if line.starts_with(' ') || line.starts_with('\t') || line.starts_with("-----") {
            continue;
        }
        if line.is_empty() && !fields.is_empty() {
            // The end of the paragraph (InRelease: the signature follows).
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            fields.insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    fields
}

/// A Debian archive or mirror: `dists/<suite>/Release` (or `InRelease`),
/// `pool/`, and the netboot installer where Debian's mirrors keep it
/// (`dists/<suite>/main/installer-<arch>/current/images/netboot/debian-installer/<arch>/`).
/// The installer boots from there and installs from the archive itself.
fn debian_archive(fs: &dyn MediaFs) -> Result<Option<OsRelease>, DetectError> {
    let is_dir = |path: &str| -> Result<bool, DetectError> {
        Ok(matches!(
            lookup(fs, path, false)?,
            Resolved::Found(
                _,
                Entry {
                    kind: EntryKind::Dir,
                    ..
                }
            )
        ))
    };
    if !is_dir("dists")? || !is_dir("pool")? {
        return Ok(None);
    }
    // Real suite directories (not the stable/oldstable symlinks), sorted.
    let mut suites: Vec<String> = fs
        .read_dir("dists")?
        .into_iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .map(|e| e.name)
        .collect();
    suites.sort();
    let mut found_release = None;
    for suite in &suites {
        let text = match read_text(fs, &format!("dists/{suite}/Release"))? {
            Some(t) => t,
            None => match read_text(fs, &format!("dists/{suite}/InRelease"))? {
                Some(t) => t,
                None => continue,
            },
        };
        let (file, text) = text;
        let fields = parse_release(&text);
        let origin = fields.get("Origin").cloned().unwrap_or_default();
        let (family, distro, installer) = match origin.as_str() {
            "Debian" => (OsFamily::Debian, "debian", "debian-installer"),
            _ => {
                found_release.get_or_insert(file.clone());
                continue;
            }
        };
        let codename = fields
            .get("Codename")
            .cloned()
            .unwrap_or_else(|| suite.clone());
        let architectures: Vec<&str> = fields
            .get("Architectures")
            .map(|a| a.split_whitespace().collect())
            .unwrap_or_default();
        let mut boot = None;
        for arch in DEBIAN_ARCHES.iter().filter(|a| architectures.contains(a)) {
            let dir = format!(
                "dists/{suite}/main/installer-{arch}/current/images/netboot/{installer}/{arch}"
            );
            if let (Some((kernel, _)), Some((initrd, _))) = (
                find_file(fs, &format!("{dir}/linux"))?,
                find_file(fs, &format!("{dir}/initrd.gz"))?,
            ) {
                boot = Some((
                    arch.to_string(),
                    PathBuf::from(kernel),
                    PathBuf::from(initrd),
                ));
                break;
            }
        }
        let Some((arch, kernel, initrd)) = boot else {
            found_release.get_or_insert(file.clone());
            continue;
        };
        // "12.15" for a stable release; testing and unstable have none.
        let version = fields
            .get("Version")
            .cloned()
            .unwrap_or_else(|| codename.clone());
        let major = version.split('.').next().unwrap_or(&version).to_string();
        let components = fields
            .get("Components")
            .map(|c| c.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mut release = linux(
            family,
            distro,
            &version,
            &arch,
            format!("Debian {version} ({codename}) archive with its netboot installer"),
            (kernel, initrd),
            fs,
        );
        // Distinct from the same release's netboot tree or ISO, stable
        // across point releases.
        release.id = format!("{}-mirror", release_id(distro, &major, &arch));
        release.repository = Some(PackageRepository {
            kind: RepositoryKind::Apt,
            paths: vec![PathBuf::new()],
            suite: Some(codename),
            components,
        });
        return Ok(Some(release));
    }
    match found_release {
        Some(file) => Err(DetectError::MissingBootFile {
            file,
            missing: "a Debian suite with its netboot installer under dists/<suite>/main/installer-<arch>/current/images/netboot/debian-installer/<arch>/ (scripts/build-debian-mirror puts it there)".into(),
        }),
        None => Ok(None),
    }
}

const DEBIAN_ARCHES: &[&str] = &[
    "amd64", "i386", "arm64", "armhf", "armel", "ppc64el", "s390x", "riscv64", "mips64el",
];

/// Debian's installer directory on ISOs per architecture.
fn debian_install_dir(arch: &str) -> &'static str {
    match arch {
        "amd64" => "install.amd",
        "i386" => "install.386",
        "arm64" => "install.a64",
        "armhf" => "install.ahf",
        "ppc64el" => "install",
        _ => "install",
    }
}

fn disk_info(fs: &dyn MediaFs) -> Result<Option<OsRelease>, DetectError> {
    let Some((file, text)) = read_text(fs, ".disk/info")? else {
        return Ok(None);
    };
    let line = text.lines().next().unwrap_or("").trim().to_string();
    let malformed = |reason: &str| DetectError::Malformed {
        file: file.clone(),
        reason: format!("{reason} in {line:?}"),
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let version = words
        .iter()
        .find(|w| {
            w.chars().next().is_some_and(|c| c.is_ascii_digit())
                && w.contains(|c: char| c.is_ascii_digit())
                && !w.contains(':')
                && !w.starts_with('(')
        })
        .map(|w| w.to_string())
        .ok_or_else(|| malformed("no version number"))?;
    let arch = words
        .iter()
        .find(|w| DEBIAN_ARCHES.contains(w))
        .map(|w| w.to_string())
        .ok_or_else(|| malformed("no architecture"))?;
    let lower = line.to_ascii_lowercase();
    if lower.starts_with("ubuntu") {
        let kernel = first_existing(fs, &["casper/vmlinuz", "casper/hwe-vmlinuz"])?;
        let initrd = first_existing(
            fs,
            &["casper/initrd", "casper/initrd.gz", "casper/hwe-initrd"],
        )?;
        let (Some(kernel), Some(initrd)) = (kernel, initrd) else {
            return Err(DetectError::MissingBootFile {
                file,
                missing: "casper/vmlinuz and casper/initrd (Ubuntu live server installer)".into(),
            });
        };
        let name = line
            .split(" - ")
            .next()
            .unwrap_or(&line)
            .replace('"', "")
            .replace("Ubuntu-Server", "Ubuntu Server");
        return Ok(Some(linux(
            OsFamily::Ubuntu,
            "ubuntu",
            &version,
            &arch,
            name,
            (kernel, initrd),
            fs,
        )));
    }
    if lower.starts_with("debian") {
        let dir = debian_install_dir(&arch);
        let kernel = format!("{dir}/vmlinuz");
        let initrd = format!("{dir}/initrd.gz");
        let name = line.split(" - ").next().unwrap_or(&line).replace('"', "");
        return Ok(Some(linux(
            OsFamily::Debian,
            "debian",
            &version,
            &arch,
            name,
            (require(fs, &file, &kernel)?, require(fs, &file, &initrd)?),
            fs,
        )));
    }
    Err(malformed("neither Debian nor Ubuntu"))
}

fn debian_netboot(fs: &dyn MediaFs) -> Result<Option<OsRelease>, DetectError> {
    let Some((file, text)) = read_text(fs, "version.info")? else {
        return Ok(None);
    };
    // "Debian version:  12 (bookworm)" / "Installer build: 20230607+deb12u15"
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let (family, distro, installer_dir, value) = if let Some(v) = field("Debian version:") {
        (OsFamily::Debian, "debian", "debian-installer", v)
    } else if let Some(v) = field("Ubuntu version:") {
        (OsFamily::Ubuntu, "ubuntu", "ubuntu-installer", v)
    } else {
        return Ok(None);
    };
    let version = value.split_whitespace().next().unwrap_or("").to_string();
    if version.is_empty() {
        return Err(DetectError::Malformed {
            file,
            reason: "empty version".into(),
        });
    }
    let codename = value
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(c, _)| c.to_string());
    let Some(arch) = DEBIAN_ARCHES
        .iter()
        .find(|arch| {
            find_file(fs, &format!("{installer_dir}/{arch}/linux"))
                .ok()
                .flatten()
                .is_some()
        })
        .map(|a| a.to_string())
    else {
        return Err(DetectError::MissingBootFile {
            file,
            missing: format!("{installer_dir}/<arch>/linux"),
        });
    };
    let build = field("Installer build:");
    let mut name = format!(
        "{} {version}",
        if distro == "debian" {
            "Debian"
        } else {
            "Ubuntu"
        }
    );
    if let Some(codename) = codename {
        name.push_str(&format!(" ({codename})"));
    }
    name.push_str(" netboot installer");
    if let Some(build) = build {
        name.push_str(&format!(" {build}"));
    }
    Ok(Some(linux(
        family,
        distro,
        &version,
        &arch,
        name,
        (
            require(fs, &file, &format!("{installer_dir}/{arch}/linux"))?,
            require(fs, &file, &format!("{installer_dir}/{arch}/initrd.gz"))?,
        ),
        fs,
    )))
}

/// The architecture whose `boot/<arch>/loader/linux` exists.
fn suse_loader_arch(fs: &dyn MediaFs) -> Result<Option<String>, DetectError> {
    for arch in ["x86_64", "aarch64", "ppc64le", "s390x", "i386"] {
        if find_file(fs, &format!("boot/{arch}/loader/linux"))?.is_some()
            || find_file(fs, &format!("boot/{arch}/linux"))?.is_some()
        {
            return Ok(Some(arch.to_string()));
        }
    }
    Ok(None)
}

fn suse(fs: &dyn MediaFs) -> Result<Option<OsRelease>, DetectError> {
    let products = read_text(fs, "media.1/products")?;
    // A file named "content" is SUSE's only with its keys (SLES 11/12).
    let content = read_text(fs, "content")?.filter(|(_, text)| {
        text.lines()
            .any(|l| l.starts_with("VERSION") || l.starts_with("PRODUCT") || l.starts_with("LABEL"))
    });
    if products.is_none() && content.is_none() {
        return Ok(None);
    }
    // media.1/products: "<dir> <product> <version>-<release>", e.g.
    // "/ SLES12-SP5 12.5-0" or "/ openSUSE-Leap 15.6-1".
    let from_products = products.as_ref().and_then(|(_, text)| {
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|w| w.len() >= 3)
            .collect();
        let pick = lines
            .iter()
            .find(|w| w[0] == "/" || w[0].starts_with("/Product-"))
            .or(lines.first())?;
        let version = pick[2].split('-').next().unwrap_or(pick[2]).to_string();
        Some((pick[1].to_string(), version))
    });
    // content (SLES 11/12): "PRODUCT SUSE_SLES", "VERSION 12.5", "LABEL ...", "BASEARCHS x86_64".
    let content_field = |key: &str| {
        content.as_ref().and_then(|(_, text)| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(char::is_whitespace)?;
                (k == key).then(|| v.trim().to_string())
            })
        })
    };
    let (product, version) = match (from_products, content_field("VERSION")) {
        (Some((product, version)), _) => (product, version),
        (None, Some(version)) => (
            content_field("PRODUCT")
                .or_else(|| content_field("NAME"))
                .unwrap_or_else(|| "SLES".into()),
            version,
        ),
        (None, None) => {
            let file = products.or(content).map(|(f, _)| f).unwrap_or_default();
            return Err(DetectError::Malformed {
                file,
                reason: "no product version".into(),
            });
        }
    };
    let arch = match suse_loader_arch(fs)? {
        Some(arch) => arch,
        None => {
            return Err(DetectError::MissingBootFile {
                file: "media.1/products".into(),
                missing: "boot/<arch>/loader/linux".into(),
            });
        }
    };
    let lower = product.to_ascii_lowercase();
    let distro = if lower.contains("opensuse") && lower.contains("leap") {
        "opensuse-leap"
    } else if lower.contains("opensuse") {
        "opensuse"
    } else if lower.contains("sles") || lower.contains("sle-") || lower.contains("sle_") {
        "sles"
    } else {
        "sle"
    };
    let name = content_field("LABEL")
        .unwrap_or_else(|| format!("{} {version}", product.replace('-', " ")));
    let file = "media.1/products";
    Ok(Some(linux(
        OsFamily::Suse,
        distro,
        &version,
        &arch,
        name,
        (
            require(fs, file, &format!("boot/{arch}/loader/linux"))?,
            require(fs, file, &format!("boot/{arch}/loader/initrd"))?,
        ),
        fs,
    )))
}

fn esxi(fs: &dyn MediaFs) -> Result<Option<OsRelease>, DetectError> {
    let Some((file, text)) = read_text(fs, "boot.cfg")?.or(read_text(fs, "efi/boot/boot.cfg")?)
    else {
        return Ok(None);
    };
    let mut fields: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (Some(kernel), Some(modules)) = (fields.get("kernel"), fields.get("modules")) else {
        return Ok(None);
    };
    // Paths are relative to prefix= when set ("" on ISOs).
    let prefix = fields
        .get("prefix")
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty() && !p.contains("://"));
    let path = |p: &str| match &prefix {
        Some(prefix) => format!("{prefix}/{}", p.trim_start_matches('/')),
        None => p.trim_start_matches('/').to_string(),
    };
    let kernel = require(fs, &file, &path(kernel))?;
    let mut modules = modules
        .split("---")
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| require(fs, &file, &path(m.split_whitespace().next().unwrap_or(m))))
        .collect::<Result<Vec<_>, _>>()?;
    if modules.is_empty() {
        return Err(DetectError::Malformed {
            file,
            reason: "modules= lists nothing".into(),
        });
    }
    let initrd = modules.remove(0);
    // build=8.0.3-0.35.24280767: version 8.0.3, build number 24280767.
    let (version, build) = if let Some(build) = fields.get("build") {
        let version = build.split('-').next().unwrap_or(build).to_string();
        let number = build.rsplit('.').next().map(str::to_string);
        (version, number)
    } else if let Some((meta, xml)) = read_text(fs, "upgrade/metadata.xml")? {
        let version = ["esxVersion", "version"]
            .iter()
            .find_map(|t| {
                let open = format!("<{t}>");
                let start = xml.find(&open)? + open.len();
                let end = start + xml[start..].find('<')?;
                Some(xml[start..end].trim().to_string())
            })
            .filter(|v| !v.is_empty())
            .ok_or(DetectError::Malformed {
                file: meta,
                reason: "no <esxVersion> or <version>".into(),
            })?;
        (version, None)
    } else {
        return Err(DetectError::Malformed {
            file,
            reason: "no build= and no upgrade/metadata.xml to take the ESXi version from".into(),
        });
    };
    let name = match &build {
        Some(b) => format!("VMware ESXi {version} build {b}"),
        None => format!("VMware ESXi {version}"),
    };
    let arch = "x86_64";
    Ok(Some(OsRelease {
        id: release_id("esxi", &version, arch),
        family: OsFamily::Esxi,
        distro: "esxi".into(),
        version,
        arch: arch.into(),
        name,
        kernel,
        initrd,
        extra_boot_files: modules,
        boot_config: Some(PathBuf::from(file)),
        bootloader_bios: first_existing(fs, &["mboot.c32"])?,
        bootloader_efi: first_existing(fs, &["efi/boot/bootx64.efi", "mboot.efi"])?,
        source_kind: fs.source_kind(),
        repository: None,
    }))
}

fn windows(fs: &dyn MediaFs) -> Result<Option<OsRelease>, DetectError> {
    let Some((boot_wim, _)) = find_file(fs, "sources/boot.wim")? else {
        return Ok(None);
    };
    let boot_wim = PathBuf::from(boot_wim);
    let bcd = require(fs, "sources/boot.wim (Windows media)", "boot/bcd")?;
    let sdi = require(fs, "sources/boot.wim (Windows media)", "boot/boot.sdi")?;
    let bootmgr = first_existing(fs, &["bootmgr", "bootmgr.efi"])?.ok_or_else(|| {
        DetectError::MissingBootFile {
            file: "sources/boot.wim (Windows media)".into(),
            missing: "bootmgr or bootmgr.efi".into(),
        }
    })?;
    // The installable image describes the product; boot.wim (WinPE) only
    // says "Microsoft Windows Setup" but has the same version.
    let mut info = None;
    let mut wim_errors = Vec::new();
    for candidate in [
        "sources/install.wim",
        "sources/install.esd",
        "sources/boot.wim",
    ] {
        let Some((path, _)) = find_file(fs, candidate)? else {
            continue;
        };
        let mut file = fs.open(&path)?;
        match wim::read_image_info(&mut file) {
            Ok(found) => {
                info = Some(found);
                break;
            }
            Err(e) => wim_errors.push(format!("{path}: {e}")),
        }
    }
    let (name, version, arch, server) = match info {
        Some(info) => {
            let server =
                info.product_type.as_deref() == Some("ServerNT") || info.name.contains("Server");
            (info.name, info.version, info.arch, server)
        }
        None => {
            // idwbinfo.txt: BuildArch=amd64, BuildBranch=fe_release_svc_prod1
            let Some((file, text)) = read_text(fs, "sources/idwbinfo.txt")? else {
                return Err(DetectError::Malformed {
                    file: "sources/boot.wim".into(),
                    reason: format!(
                        "no readable WIM XML metadata ({}) and no sources/idwbinfo.txt",
                        wim_errors.join("; ")
                    ),
                });
            };
            let ini = parse_ini(&text);
            let get = |k: &str| ini.get("BUILDINFO").and_then(|s| s.get(k)).cloned();
            let (Some(arch), Some(branch)) = (get("BuildArch"), get("BuildBranch")) else {
                return Err(DetectError::Malformed {
                    file,
                    reason: "no BuildArch/BuildBranch in [BUILDINFO]".into(),
                });
            };
            // The branch is all the media says without WIM metadata.
            (
                format!("Windows (build branch {branch})"),
                branch,
                arch,
                false,
            )
        }
    };
    let distro = if server { "windows-server" } else { "windows" };
    Ok(Some(OsRelease {
        id: release_id(distro, &version, &arch),
        family: OsFamily::Windows,
        distro: distro.into(),
        version,
        arch,
        name,
        kernel: bootmgr,
        initrd: boot_wim,
        extra_boot_files: vec![bcd.clone(), sdi],
        boot_config: Some(bcd),
        bootloader_bios: first_existing(fs, &["bootmgr"])?,
        bootloader_efi: first_existing(fs, &["efi/boot/bootx64.efi"])?,
        source_kind: fs.source_kind(),
        repository: None,
    }))
}
