//! Builds rackboot's deploy RAM-disk: the host's stock kernel plus an initramfs in which
//! `rackboot-agent` inspects and deploys the machine.
//!
//! [`build`] writes `OUT/vmlinuz`, `OUT/initramfs.img` and `OUT/manifest.json` (a
//! [`RamdiskManifest`]), all three replaced in one step. The initramfs holds:
//! - kernel modules chosen by path ([`modules::MODULE_RULES`]: every wired NIC, storage
//!   controllers and HBAs, md/dm, ext4/xfs/btrfs/vfat/isofs) with their hard and soft
//!   dependencies, indexed by `depmod`;
//! - busybox (static) with a symlink per applet, and mdadm, nvme, hdparm, mkfs.fat and kmod
//!   ([`tools::default_tools`]) with their shared libraries and the dynamic loader;
//! - the agent at /bin/rackboot-agent;
//! - /init ([`init::INIT_SCRIPT`]): mounts, coldplug, DHCP (BOOTIF NIC or every NIC with
//!   carrier, first lease wins), then the agent in a respawn loop, all on the console.
//!
//! The archive is compressed with zstd -19 when the kernel takes it (xz otherwise; see
//! [`Compression::PREFERENCE`] for why not the smaller xz) and is reproducible: the same inputs
//! give the same initramfs (mtimes are 0). The build works in `.NAME.build-*` beside the output
//! and needs about 250 MB there.
//!
//! Needs on the build host: linux-image-amd64 (kernel, modules, config), busybox-static, kmod,
//! mdadm, nvme-cli, hdparm, dosfstools, zstd, xz-utils, libc-bin (ldd).

pub mod init;
pub mod kernel;
pub mod modules;
mod output;
pub mod rootfs;
pub mod tools;

use std::collections::BTreeSet;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use kernel::Compression;
use rootfs::{FileData, RootFs};
use tools::Tool;

/// File names inside the output directory.
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRAMFS_FILE: &str = "initramfs.img";
pub const MANIFEST_FILE: &str = "manifest.json";

/// The x86 kernel command line limit (COMMAND_LINE_SIZE), terminating NUL included.
const MAX_CMDLINE: usize = 2048;

/// Everything that can go wrong while building.
#[derive(Debug, thiserror::Error)]
pub enum RamdiskError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error(
        "no kernel has both {}/vmlinuz-VER and {}/VER (apt-get install linux-image-amd64)",
        boot_dir.display(),
        modules_root.display()
    )]
    NoKernel {
        boot_dir: PathBuf,
        modules_root: PathBuf,
    },
    #[error("kernel {version}: {reason}")]
    Kernel { version: String, reason: String },
    #[error("modules.dep line {line}: {reason}")]
    ModulesDep { line: usize, reason: String },
    #[error("kernel modules: {0}")]
    Modules(String),
    #[error("ldd {}: {reason}", binary.display())]
    Ldd { binary: PathBuf, reason: String },
    #[error("{program} not found in {} (apt-get install {package})", tools::PROGRAM_DIRS.join(", "))]
    ToolNotFound { program: String, package: String },
    #[error("busybox {}: {reason}", path.display())]
    Busybox { path: PathBuf, reason: String },
    #[error("agent {}: {reason}", path.display())]
    Agent { path: PathBuf, reason: String },
    #[error("RAM-disk entry {path}: {reason}")]
    Layout { path: String, reason: String },
    #[error("compression: {0}")]
    Compression(String),
    #[error("kernel argument {arg:?}: {reason}")]
    KernelArg { arg: String, reason: String },
    #[error("output {}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },
    #[error("manifest {}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
}

pub type Result<T, E = RamdiskError> = std::result::Result<T, E>;

/// Wraps an io::Error with what was being done.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RamdiskError {
    let what = what.into();
    move |source| RamdiskError::Io { what, source }
}

/// Runs a command to completion; non-zero exit is an error carrying stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let output = cmd.output().map_err(io_err(format!("run {cmd:?}")))?;
    if !output.status.success() {
        return Err(RamdiskError::Command {
            command: format!("{cmd:?}"),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamdiskOptions {
    /// Kernel version (`6.1.0-57-amd64`); `None`: the newest with both an image in `boot_dir`
    /// and modules in `modules_root`.
    pub kernel_version: Option<String>,
    /// Where kernel module trees live (`/lib/modules`).
    pub modules_root: PathBuf,
    /// Where `vmlinuz-VER` and `config-VER` live (`/boot`).
    pub boot_dir: PathBuf,
    /// The agent binary (static), installed as /bin/rackboot-agent.
    pub agent: PathBuf,
    /// Output directory: created, or replaced if it holds only a previous RAM-disk.
    pub out_dir: PathBuf,
    /// Kernel command-line words to boot this RAM-disk with (recorded in the manifest for the
    /// boot scripts; the kernel's own command line cannot live in the initramfs).
    pub kernel_args: Vec<String>,
    /// Static busybox (`/bin/busybox` from busybox-static).
    pub busybox: PathBuf,
    /// Host programs to ship besides busybox.
    pub tools: Vec<Tool>,
    /// `None`: the first of [`Compression::PREFERENCE`] the kernel unpacks.
    pub compression: Option<Compression>,
}

impl RamdiskOptions {
    /// Defaults: newest kernel, /lib/modules, /boot, /bin/busybox, [`tools::default_tools`],
    /// zstd if the kernel takes it, no extra kernel arguments.
    pub fn new(agent: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> RamdiskOptions {
        RamdiskOptions {
            kernel_version: None,
            modules_root: PathBuf::from("/lib/modules"),
            boot_dir: PathBuf::from("/boot"),
            agent: agent.into(),
            out_dir: out_dir.into(),
            kernel_args: Vec::new(),
            busybox: PathBuf::from("/bin/busybox"),
            tools: tools::default_tools(),
            compression: None,
        }
    }
}

/// `OUT/manifest.json`: what was built, from what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RamdiskManifest {
    pub kernel_version: String,
    pub kernel: OutputFile,
    pub initramfs: OutputFile,
    /// Size of the cpio archive before compression.
    pub initramfs_uncompressed_size: u64,
    pub compression: Compression,
    pub modules: ModuleSummary,
    /// Programs in the RAM-disk besides busybox's applets.
    pub binaries: Vec<IncludedBinary>,
    /// Shared libraries and the dynamic loader, as paths inside the RAM-disk.
    pub libraries: Vec<String>,
    pub busybox_applets: usize,
    /// Kernel command-line words to boot with, besides what the boot script adds.
    pub kernel_args: Vec<String>,
    pub built_at: DateTime<Utc>,
}

/// One file of the output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Name inside the output directory.
    pub file: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSummary {
    pub count: usize,
    /// Bytes of module files, uncompressed.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncludedBinary {
    /// Path inside the RAM-disk (`/bin/mdadm`).
    pub path: String,
    /// Where it was copied from.
    pub source: PathBuf,
    pub size: u64,
    /// Other names (symlinks in /bin).
    pub aliases: Vec<String>,
}

impl RamdiskManifest {
    /// Reads `DIR/manifest.json`.
    pub fn read(dir: &Path) -> Result<RamdiskManifest> {
        let path = dir.join(MANIFEST_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(io_err(format!("read {}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| RamdiskError::Manifest {
            path,
            reason: e.to_string(),
        })
    }
}

/// Checks the extra kernel arguments: one word each, printable, within the kernel's limit.
pub fn check_kernel_args(args: &[String]) -> Result<()> {
    for arg in args {
        let reason = if arg.is_empty() {
            Some("is empty")
        } else if arg.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("must be one word without spaces or control characters")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(RamdiskError::KernelArg {
                arg: arg.clone(),
                reason: reason.into(),
            });
        }
    }
    let total: usize = args.iter().map(|a| a.len() + 1).sum();
    // Leave room for what the boot script adds (console, rackboot.url, rackboot.token, BOOTIF).
    if total > MAX_CMDLINE / 2 {
        return Err(RamdiskError::KernelArg {
            arg: args.join(" "),
            reason: format!(
                "{total} bytes; keep extra arguments under {}",
                MAX_CMDLINE / 2
            ),
        });
    }
    Ok(())
}

/// The compression to use: `wanted` if given (refused if the kernel config says the kernel
/// cannot unpack it), else the first of [`Compression::PREFERENCE`] the config enables.
pub fn choose_compression(
    wanted: Option<Compression>,
    config: Option<&str>,
    version: &str,
) -> Result<Compression> {
    let supported = config.map(kernel::supported_compressions);
    match (wanted, supported) {
        (Some(c), Some(supported)) if !supported.contains(&c) => Err(RamdiskError::Kernel {
            version: version.to_string(),
            reason: format!("its config does not set {}=y", c.config_option()),
        }),
        (Some(c), _) => Ok(c),
        (None, Some(supported)) => Compression::PREFERENCE
            .into_iter()
            .find(|c| supported.contains(c))
            .ok_or_else(|| RamdiskError::Kernel {
                version: version.to_string(),
                reason: "its config enables neither CONFIG_RD_ZSTD nor CONFIG_RD_XZ".into(),
            }),
        (None, None) => Err(RamdiskError::Kernel {
            version: version.to_string(),
            reason: "no config-VER beside the kernel image to tell which initramfs \
                     compressions it unpacks; choose one explicitly"
                .into(),
        }),
    }
}

/// Builds the RAM-disk described by `options` into `options.out_dir`.
pub fn build(options: &RamdiskOptions) -> Result<RamdiskManifest> {
    check_kernel_args(&options.kernel_args)?;
    let version = match &options.kernel_version {
        Some(v) => v.clone(),
        None => kernel::newest_kernel(&options.boot_dir, &options.modules_root)?,
    };
    let kernel_image = kernel::kernel_image(&options.boot_dir, &version);
    if !kernel_image.is_file() {
        return Err(RamdiskError::Kernel {
            version,
            reason: format!("no kernel image {}", kernel_image.display()),
        });
    }
    let module_dir = options.modules_root.join(&version);
    if !module_dir.join("modules.dep").is_file() {
        return Err(RamdiskError::Kernel {
            version,
            reason: format!("no {}/modules.dep", module_dir.display()),
        });
    }
    let config_path = options.boot_dir.join(format!("config-{version}"));
    let config = std::fs::read_to_string(&config_path).ok();
    let compression = choose_compression(options.compression, config.as_deref(), &version)?;
    let (compressor, _) = compression.command();
    if tools::find_program(compressor).is_none() {
        return Err(RamdiskError::ToolNotFound {
            program: compressor.into(),
            package: compression.package().into(),
        });
    }
    if !options.agent.is_file() {
        return Err(RamdiskError::Agent {
            path: options.agent.clone(),
            reason: "is not a file".into(),
        });
    }
    output::check_replaceable(&options.out_dir)?;
    tracing::info!(kernel = version, out = %options.out_dir.display(), "building RAM-disk");

    let work = output::WorkDir::create(&options.out_dir)?;
    let stage = work.path().join("stage");
    let staged = modules::stage_modules(&module_dir, &version, &stage, modules::MODULE_RULES)?;
    tracing::info!(
        modules = staged.count,
        bytes = staged.size,
        "kernel modules staged"
    );
    let (fs, contents) = assemble(options, &version, &staged)?;

    let cpio_path = work.path().join("initramfs.cpio");
    let uncompressed_size = {
        let file = std::fs::File::create(&cpio_path)
            .map_err(io_err(format!("create {}", cpio_path.display())))?;
        let mut out = BufWriter::new(file);
        let size = fs.write_newc(&mut out)?;
        out.flush()
            .map_err(io_err(format!("write {}", cpio_path.display())))?;
        size
    };

    let built = work.path().join("out");
    std::fs::create_dir(&built).map_err(io_err(format!("create {}", built.display())))?;
    let initramfs_path = built.join(INITRAMFS_FILE);
    let started = Instant::now();
    compress(compression, &cpio_path, &initramfs_path)?;
    tracing::info!(
        %compression,
        bytes = file_size(&initramfs_path)?,
        seconds = started.elapsed().as_secs_f64(),
        "initramfs compressed"
    );
    let kernel_path = built.join(KERNEL_FILE);
    std::fs::copy(&kernel_image, &kernel_path)
        .map_err(io_err(format!("copy {}", kernel_image.display())))?;

    let manifest = RamdiskManifest {
        kernel_version: version,
        kernel: describe(&kernel_path)?,
        initramfs: describe(&initramfs_path)?,
        initramfs_uncompressed_size: uncompressed_size,
        compression,
        modules: ModuleSummary {
            count: staged.count,
            size: staged.size,
        },
        binaries: contents.binaries,
        libraries: contents
            .libraries
            .into_iter()
            .map(|l| format!("/{l}"))
            .collect(),
        busybox_applets: contents.busybox_applets,
        kernel_args: options.kernel_args.clone(),
        built_at: Utc::now(),
    };
    let json = serde_json::to_string_pretty(&manifest).expect("the manifest serializes");
    let manifest_path = built.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, json + "\n")
        .map_err(io_err(format!("write {}", manifest_path.display())))?;
    output::install(&built, &options.out_dir)?;
    tracing::info!(
        out = %options.out_dir.display(),
        initramfs_bytes = manifest.initramfs.size,
        compression = %manifest.compression,
        "RAM-disk built"
    );
    Ok(manifest)
}

/// What [`assemble`] put in besides the tree itself, for the manifest.
#[derive(Debug, Default)]
struct Contents {
    binaries: Vec<IncludedBinary>,
    libraries: BTreeSet<String>,
    busybox_applets: usize,
}

/// The fixed part of the tree: directories, merged-/usr links, the console node, /init and
/// the small files programs expect in /etc.
fn skeleton(fs: &mut RootFs) -> Result<()> {
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("lib", 0o755),
        ("mnt", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("run", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("var", 0o755),
    ] {
        fs.dir(dir, mode)?;
    }
    for (link, target) in [
        ("sbin", "bin"),
        ("usr/bin", "../bin"),
        ("usr/sbin", "../bin"),
        ("var/run", "../run"),
        ("var/tmp", "../tmp"),
    ] {
        fs.symlink(link, target)?;
    }
    // The kernel opens /dev/console for init's stdin/stdout/stderr before anything is mounted.
    fs.char_device("dev/console", 0o600, 5, 1)?;
    let text = |s: &str| FileData::Inline(s.as_bytes().to_vec());
    fs.file("init", 0o755, text(init::INIT_SCRIPT))?;
    fs.file(init::UDHCPC_SCRIPT_PATH, 0o755, text(init::UDHCPC_SCRIPT))?;
    fs.file("etc/passwd", 0o644, text("root:x:0:0:root:/root:/bin/sh\n"))?;
    fs.file("etc/group", 0o644, text("root:x:0:\n"))?;
    fs.file(
        "etc/hosts",
        0o644,
        text("127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
    )?;
    Ok(())
}

/// Applet names from `busybox --list`.
pub fn parse_applets(list: &str) -> Result<Vec<String>, String> {
    let applets: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = applets
        .iter()
        .find(|a| a.contains('/') || a.contains(char::is_whitespace) || a.starts_with('.'))
    {
        return Err(format!("unexpected applet name {bad:?}"));
    }
    if !applets.iter().any(|a| a == "sh") {
        return Err("no `sh` applet".into());
    }
    Ok(applets)
}

fn assemble(
    options: &RamdiskOptions,
    version: &str,
    staged: &modules::StagedModules,
) -> Result<(RootFs, Contents)> {
    let mut fs = RootFs::new();
    let mut contents = Contents::default();
    skeleton(&mut fs)?;

    let mut add = |fs: &mut RootFs, inside: &str, source: &Path, aliases: Vec<String>| {
        let libraries = tools::add_program(fs, inside, source)?;
        for alias in &aliases {
            fs.symlink(
                &format!("bin/{alias}"),
                inside.rsplit('/').next().unwrap_or(inside),
            )?;
        }
        contents.libraries.extend(libraries);
        contents.binaries.push(IncludedBinary {
            path: format!("/{inside}"),
            source: source.to_path_buf(),
            size: file_size(source)?,
            aliases: aliases.iter().map(|a| format!("/bin/{a}")).collect(),
        });
        Ok::<(), RamdiskError>(())
    };

    add(&mut fs, init::AGENT_PATH, &options.agent, Vec::new())?;
    for tool in &options.tools {
        let source =
            tools::find_program(&tool.program).ok_or_else(|| RamdiskError::ToolNotFound {
                program: tool.program.clone(),
                package: tool.package.clone(),
            })?;
        let source = std::fs::canonicalize(&source)
            .map_err(io_err(format!("resolve {}", source.display())))?;
        add(
            &mut fs,
            &format!("bin/{}", tool.program),
            &source,
            tool.aliases.clone(),
        )?;
    }

    let busybox_error = |reason: String| RamdiskError::Busybox {
        path: options.busybox.clone(),
        reason,
    };
    let list = run(Command::new(&options.busybox).arg("--list"))?;
    let applets = parse_applets(&list).map_err(busybox_error)?;
    add(&mut fs, "bin/busybox", &options.busybox, Vec::new())?;
    for applet in &applets {
        let path = format!("bin/{applet}");
        // A real tool of the same name (kmod's modprobe) wins over the applet.
        if applet != "busybox" && !fs.contains(&path) {
            fs.symlink(&path, "busybox")?;
            contents.busybox_applets += 1;
        }
    }

    let modules_inside = format!("lib/modules/{version}");
    add_tree(&mut fs, &staged.dir, &modules_inside)?;

    fs.check_links()?;
    check_interpreter(&fs, &options.agent, init::AGENT_PATH)?;
    Ok((fs, contents))
}

/// Adds every file below host directory `dir` under `inside`.
fn add_tree(fs: &mut RootFs, dir: &Path, inside: &str) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("list {}", dir.display())))?;
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| RamdiskError::Layout {
            path: entry.path().display().to_string(),
            reason: "file name is not UTF-8".into(),
        })?;
        let path = format!("{inside}/{name}");
        let kind = entry
            .file_type()
            .map_err(io_err(format!("stat {}", entry.path().display())))?;
        if kind.is_dir() {
            fs.dir(&path, 0o755)?;
            add_tree(fs, &entry.path(), &path)?;
        } else {
            fs.host_file(&path, 0o644, &entry.path())?;
        }
    }
    Ok(())
}

/// A script agent (`#!/bin/sh`) needs its interpreter inside the RAM-disk.
fn check_interpreter(fs: &RootFs, agent: &Path, inside: &str) -> Result<()> {
    let mut head = [0u8; 256];
    let mut file =
        std::fs::File::open(agent).map_err(io_err(format!("open {}", agent.display())))?;
    let n = file
        .read(&mut head)
        .map_err(io_err(format!("read {}", agent.display())))?;
    let head = &head[..n];
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line =
            String::from_utf8_lossy(rest.split(|b| *b == b'\n').next().unwrap_or(&[])).to_string();
        let interpreter = line.split_whitespace().next().unwrap_or("");
        if fs.resolve(interpreter).is_none() {
            return Err(RamdiskError::Agent {
                path: agent.to_path_buf(),
                reason: format!(
                    "its interpreter {interpreter:?} is not in the RAM-disk ({inside})"
                ),
            });
        }
    }
    Ok(())
}

fn compress(c: Compression, input: &Path, output: &Path) -> Result<()> {
    let (program, args) = c.command();
    let stdin = std::fs::File::open(input).map_err(io_err(format!("open {}", input.display())))?;
    let stdout =
        std::fs::File::create(output).map_err(io_err(format!("create {}", output.display())))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped());
    let out = cmd.output().map_err(io_err(format!(
        "run {program} (apt-get install {})",
        c.package()
    )))?;
    if !out.status.success() {
        return Err(RamdiskError::Command {
            command: format!("{cmd:?}"),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(io_err(format!("stat {}", path.display())))?
        .len())
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_err(format!("read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn describe(path: &Path) -> Result<OutputFile> {
    Ok(OutputFile {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size: file_size(path)?,
        sha256: sha256_file(path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args_are_single_printable_words() {
        assert!(check_kernel_args(&["console=ttyS0,115200".into(), "quiet".into()]).is_ok());
        for bad in ["", "a b", "x\ny", "tab\there"] {
            assert!(check_kernel_args(&[bad.to_string()]).is_err(), "{bad:?}");
        }
        assert!(check_kernel_args(&["x".repeat(1500)]).is_err());
    }

    #[test]
    fn compression_choice_follows_the_kernel_config() {
        let both = "CONFIG_RD_ZSTD=y\nCONFIG_RD_XZ=y\n";
        let xz_only = "CONFIG_RD_XZ=y\n";
        let cases: &[(Option<Compression>, Option<&str>, Option<Compression>)] = &[
            (None, Some(both), Some(Compression::Zstd)),
            (None, Some(xz_only), Some(Compression::Xz)),
            (Some(Compression::Xz), Some(both), Some(Compression::Xz)),
            (Some(Compression::Zstd), Some(xz_only), None),
            (None, Some("CONFIG_RD_GZIP=y\n"), None),
            (None, None, None),
            // Without a config, an explicit choice is trusted.
            (Some(Compression::Zstd), None, Some(Compression::Zstd)),
        ];
        for (wanted, config, expected) in cases {
            let got = choose_compression(*wanted, *config, "v").ok();
            assert_eq!(got, *expected, "{wanted:?} {config:?}");
        }
    }

    #[test]
    fn applet_list_is_validated() {
        assert_eq!(
            parse_applets("[\n[[\nsh\nmodprobe\n").unwrap(),
            ["[", "[[", "sh", "modprobe"]
        );
        assert!(parse_applets("sh\nbin/ls\n").is_err());
        assert!(parse_applets("ls\ncat\n").is_err());
    }

    #[test]
    fn sha256_of_a_known_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let manifest = RamdiskManifest {
            kernel_version: "6.1.0-57-amd64".into(),
            kernel: OutputFile {
                file: KERNEL_FILE.into(),
                size: 8,
                sha256: "aa".into(),
            },
            initramfs: OutputFile {
                file: INITRAMFS_FILE.into(),
                size: 9,
                sha256: "bb".into(),
            },
            initramfs_uncompressed_size: 100,
            compression: Compression::Zstd,
            modules: ModuleSummary { count: 3, size: 42 },
            binaries: vec![IncludedBinary {
                path: "/bin/kmod".into(),
                source: "/usr/bin/kmod".into(),
                size: 7,
                aliases: vec!["/bin/modprobe".into()],
            }],
            libraries: vec!["/lib64/ld-linux-x86-64.so.2".into()],
            busybox_applets: 260,
            kernel_args: vec![],
            built_at: "2025-01-02T03:04:05Z".parse().unwrap(),
        };
        let json = serde_json::to_value(&manifest).unwrap();
        assert_eq!(json["compression"], "zstd");
        assert_eq!(json["initramfs"]["file"], "initramfs.img");
        assert_eq!(json["built_at"], "2025-01-02T03:04:05Z");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), json.to_string()).unwrap();
        assert_eq!(RamdiskManifest::read(dir.path()).unwrap(), manifest);
        std::fs::write(dir.path().join(MANIFEST_FILE), "{}").unwrap();
        assert!(RamdiskManifest::read(dir.path()).is_err());
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use std::collections::HashSet;

    /// The tree around a script agent, real busybox, no extra tools and two fake modules.
    fn small_tree(dir: &Path) -> (RootFs, Contents) {
        let agent = dir.join("agent");
        std::fs::write(&agent, "#!/bin/sh\necho agent\n").unwrap();
        let staged_dir = dir.join("stage/lib/modules/6.1.0-test");
        std::fs::create_dir_all(staged_dir.join("kernel/drivers/net")).unwrap();
        std::fs::write(staged_dir.join("kernel/drivers/net/virtio_net.ko"), b"ko").unwrap();
        std::fs::write(
            staged_dir.join("modules.dep"),
            b"kernel/drivers/net/virtio_net.ko:\n",
        )
        .unwrap();
        let staged = modules::StagedModules {
            dir: staged_dir,
            count: 1,
            size: 2,
        };
        let mut options = RamdiskOptions::new(&agent, dir.join("out"));
        options.tools = Vec::new();
        assemble(&options, "6.1.0-test", &staged).unwrap()
    }

    #[test]
    fn archive_layout_is_what_the_kernel_and_init_expect() {
        let dir = tempfile::tempdir().unwrap();
        let (fs, contents) = small_tree(dir.path());
        let mut archive = Vec::new();
        fs.write_newc(&mut archive).unwrap();
        let members = rootfs::read_newc(&archive).unwrap();

        let mut seen_dirs: HashSet<&str> = HashSet::new();
        for m in &members {
            if let Some((parent, _)) = m.path.rsplit_once('/') {
                assert!(
                    seen_dirs.contains(parent),
                    "{} before its directory",
                    m.path
                );
            }
            if m.is_dir() {
                seen_dirs.insert(&m.path);
            }
        }
        let find = |path: &str| {
            members
                .iter()
                .find(|m| m.path == path)
                .unwrap_or_else(|| panic!("{path} missing"))
        };
        let init = find("init");
        assert!(init.is_file() && init.permissions() == 0o755);
        assert_eq!(init.data, init::INIT_SCRIPT.as_bytes());
        let console = find("dev/console");
        assert!(console.is_char_device() && console.rdev == (5, 1));
        assert!(find("bin/busybox").is_file());
        for applet in ["sh", "udhcpc", "ip", "modprobe", "find", "sleep"] {
            let link = find(&format!("bin/{applet}"));
            assert!(link.is_symlink() && link.data == b"busybox", "{applet}");
        }
        assert!(find("sbin").is_symlink() && find("sbin").data == b"bin");
        assert_eq!(find("tmp").permissions(), 0o1777);
        let agent = find("bin/rackboot-agent");
        assert!(agent.is_file() && agent.permissions() == 0o755);
        let script = find(init::UDHCPC_SCRIPT_PATH);
        assert!(script.is_file() && script.permissions() == 0o755);
        assert_eq!(
            find("lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko").data,
            b"ko"
        );
        assert!(
            contents.busybox_applets > 200,
            "{}",
            contents.busybox_applets
        );
        assert_eq!(contents.binaries.len(), 2, "agent and busybox");
    }

    #[test]
    fn a_script_agent_without_its_interpreter_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, "#!/usr/bin/python3\nprint(1)\n").unwrap();
        let mut fs = RootFs::new();
        skeleton(&mut fs).unwrap();
        let err = check_interpreter(&fs, &agent, "bin/rackboot-agent").unwrap_err();
        assert!(err.to_string().contains("/usr/bin/python3"), "{err}");
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, "#!/bin/sh\n").unwrap();
        let staged = modules::StagedModules {
            dir: dir.path().to_path_buf(),
            count: 0,
            size: 0,
        };
        let mut options = RamdiskOptions::new(&agent, dir.path().join("out"));
        options.tools = vec![Tool::new("no-such-tool-xyz", "xyz-utils", &[])];
        let err = assemble(&options, "v", &staged).unwrap_err().to_string();
        assert!(err.contains("apt-get install xyz-utils"), "{err}");
    }
}
