//! `rackboot lab`: the virtual rack. `up` builds a network namespace with a
//! bridge, runs `rackboot serve` in it as the network's DHCP/TFTP/HTTP server,
//! enrolls a Linux profile (the host's stock kernel and a marker initramfs) and
//! boots N QEMU machines through it, printing the event stream and each
//! machine's timeline. `down` removes everything `up` made.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use rackboot_core::Event;
use rackboot_lab::{Lab, LabConfig, MARKER, MachineSpec};

/// Where the server listens inside the lab namespace.
pub const LAB_API: &str = "http://10.77.0.1:8080";
const LAB_RANGE: &str = "10.77.0.100-10.77.0.199";
const LAB_PROFILE: &str = "lab-linux";

#[derive(Subcommand)]
pub enum LabCmd {
    /// Create the lab and boot its machines through rackboot.
    Up(UpArgs),
    /// Stop the lab's machines and server and delete its namespace.
    Down(DirArgs),
    /// Show the lab's namespace and processes.
    Status(DirArgs),
    /// Run a command inside the lab namespace, e.g. `rackboot lab exec -- rackboot machine list`.
    Exec {
        #[command(flatten)]
        dir: DirArgs,
        /// The command and its arguments (after --).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Args, Clone)]
pub struct DirArgs {
    /// Lab directory: serial logs, server log and state, state file lab.json.
    #[arg(long, default_value = ".lab")]
    pub dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirmwareArg {
    /// SeaBIOS with the NIC's iPXE ROM.
    Bios,
    /// OVMF with the NIC's UEFI PXE ROM.
    Uefi,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Number of QEMU machines.
    #[arg(long, default_value_t = 2)]
    pub machines: usize,
    /// Machine firmware: BIOS (SeaBIOS) or UEFI (OVMF).
    #[arg(long, value_enum, default_value_t = FirmwareArg::Bios)]
    pub firmware: FirmwareArg,
    /// Blank virtio disks per machine (serials rb<machine>d0, rb<machine>d1, ...).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=8))]
    pub disks: u8,
    /// Size of each disk in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=65536))]
    pub disk_mib: u64,
    /// Seconds to wait for every machine to boot Linux.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Start everything and return without waiting for the machines.
    #[arg(long)]
    pub no_wait: bool,
    /// Give every machine an emulated BMC (OpenIPMI's ipmi_sim, or sushy-tools'
    /// Redfish emulator over libvirt); rackboot enrolls the machines with their
    /// BMC addresses and powers them on through them.
    #[arg(long, value_enum)]
    pub bmc: Option<BmcArg>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BmcArg {
    Ipmi,
    Redfish,
}

pub async fn run(cmd: LabCmd) -> Result<()> {
    match cmd {
        LabCmd::Up(args) => up(args).await,
        LabCmd::Down(d) => {
            let report = rackboot_lab::down(&state_file(&d.dir)?)?;
            match &report.netns_deleted {
                Some(ns) => outln!(
                    "lab down: deleted namespace {ns}, stopped {} processes",
                    report.stopped.len()
                ),
                None => outln!("lab down: nothing was running"),
            }
            Ok(())
        }
        LabCmd::Status(d) => {
            let path = state_file(&d.dir)?;
            if !path.exists() {
                outln!("no lab in {}", d.dir.display());
                return Ok(());
            }
            let state = rackboot_lab::read_state(&path)?;
            outln!("namespace: {}", state.netns);
            for p in &state.processes {
                let alive = Path::new(&format!("/proc/{}", p.pid)).exists();
                outln!(
                    "{:<10} pid {:<8} {}",
                    p.name,
                    p.pid,
                    if alive { "running" } else { "gone" }
                );
            }
            Ok(())
        }
        LabCmd::Exec { dir, command } => {
            let state =
                rackboot_lab::read_state(&state_file(&dir.dir)?).context("is the lab up?")?;
            let status = Command::new("ip")
                .args(["netns", "exec", &state.netns])
                .args(&command)
                .env("RACKBOOT_URL", LAB_API)
                .env("RACKBOOT_STATE_DIR", abs(&dir.dir)?.join("state"))
                .status()
                .context("running ip netns exec")?;
            if !status.success() {
                bail!("{} exited with {status}", command.join(" "));
            }
            Ok(())
        }
    }
}

fn abs(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn state_file(dir: &Path) -> Result<PathBuf> {
    Ok(abs(dir)?.join("lab.json"))
}

/// Copies the host kernel and builds the marker initramfs into `assets`.
pub fn prepare_assets(assets: &Path) -> Result<()> {
    std::fs::create_dir_all(assets).with_context(|| format!("creating {}", assets.display()))?;
    let kernel = rackboot_lab::host_kernel()?;
    std::fs::copy(&kernel, assets.join("vmlinuz"))
        .with_context(|| format!("copying {}", kernel.display()))?;
    rackboot_lab::build_marker_initramfs(&assets.join("marker.cpio.gz"))?;
    Ok(())
}

/// Runs this binary's client side inside the lab namespace.
pub fn lab_cli(lab: &Lab, state_dir: &Path, args: &[&str]) -> Result<String> {
    let exe = std::env::current_exe()?;
    let output = lab
        .netns()
        .command(&exe)
        .args(args)
        .env("RACKBOOT_URL", LAB_API)
        .env("RACKBOOT_STATE_DIR", state_dir)
        .output()
        .context("running rackboot in the lab")?;
    if !output.status.success() {
        bail!(
            "rackboot {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn up(args: UpArgs) -> Result<()> {
    if args.machines == 0 || args.machines > 64 {
        bail!("--machines must be 1..=64");
    }
    let dir = abs(&args.dir.dir)?;
    let state_path = state_file(&dir)?;
    if state_path.exists() {
        rackboot_lab::down(&state_path)?;
    }
    let assets = dir.join("assets");
    let state_dir = dir.join("state");
    // A fresh inventory each time: the lab is for trying things.
    let _ = std::fs::remove_dir_all(&state_dir);
    prepare_assets(&assets)?;

    let spec = match args.firmware {
        FirmwareArg::Bios => MachineSpec::bios(),
        FirmwareArg::Uefi => MachineSpec::uefi(),
    }
    .with_disks(usize::from(args.disks), args.disk_mib);
    let mut config = LabConfig::new(&dir, vec![spec; args.machines]);
    config.state_file = Some(state_path.clone());
    config.bmc = args.bmc.map(|b| match b {
        BmcArg::Ipmi => rackboot_lab::BmcKind::Ipmi,
        BmcArg::Redfish => rackboot_lab::BmcKind::Redfish,
    });
    let mut lab = Lab::create(config)?;
    outln!(
        "lab: namespace {}, bridge 10.77.0.1/24, {} machines",
        lab.netns().name(),
        args.machines
    );
    for m in lab.machines() {
        let c = m.config();
        let serials: Vec<String> = (0..c.disks_mib.len()).map(|i| c.disk_serial(i)).collect();
        outln!(
            "  {} mac {} DMI serial {}, disks: {}",
            m.name(),
            m.mac(),
            c.dmi_serial(),
            if serials.is_empty() {
                "none".to_string()
            } else {
                format!(
                    "{} x {} MiB ({})",
                    serials.len(),
                    args.disk_mib,
                    serials.join(", ")
                )
            }
        );
    }

    let exe = std::env::current_exe()?;
    let state_arg = state_dir.display().to_string();
    let asset_arg = assets.display().to_string();
    lab.spawn_server(
        &exe,
        [
            "serve",
            "--interface",
            "br0",
            "--dhcp-range",
            LAB_RANGE,
            "--state-dir",
            &state_arg,
            "--asset-dir",
            &asset_arg,
            "--api-listen",
            "10.77.0.1:8080",
        ],
    )?;
    wait_for_api(&lab, &state_dir).await?;
    lab_cli(
        &lab,
        &state_dir,
        &[
            "profile",
            "add",
            LAB_PROFILE,
            "--kernel",
            "vmlinuz",
            "--initrd",
            "marker.cpio.gz",
            "--cmdline",
            "console=ttyS0 quiet panic=-1 rackboot.machine={{ machine.name }}",
            "--description",
            "host kernel + marker initramfs",
        ],
    )?;
    lab_cli(
        &lab,
        &state_dir,
        &["selector", "add", "everything", "--profile", LAB_PROFILE],
    )?;
    for (i, m) in lab.machines().iter().enumerate() {
        let name = m.name().to_string();
        let mac = m.mac();
        let mut add = vec!["machine", "add", &name, "--mac", &mac, "--label", "lab=yes"];
        let bmc_url = lab.bmc(i).map(|b| b.url().to_string());
        if let Some(url) = &bmc_url {
            add.extend(["--bmc", url.as_str()]);
        }
        lab_cli(&lab, &state_dir, &add)?;
    }
    outln!(
        "rackboot serving at {LAB_API} in the lab; profile {LAB_PROFILE} selected for every machine"
    );
    if args.bmc.is_some() {
        // The machines are off; rackboot powers them on through their BMCs.
        out!(
            "{}",
            lab_cli(
                &lab,
                &state_dir,
                &["machine", "boot-device", "--all", "pxe"]
            )?
        );
        out!(
            "{}",
            lab_cli(&lab, &state_dir, &["machine", "power", "--all", "on"])?
        );
        outln!(
            "machines powered on through their BMCs; serial logs in {}",
            dir.display()
        );
    } else {
        lab.start_all()?;
        outln!("machines started; serial logs in {}", dir.display());
    }

    if args.no_wait {
        lab.detach();
        outln!(
            "lab is up; `rackboot lab exec -- rackboot events --follow` to watch, `rackboot lab down` to stop"
        );
        return Ok(());
    }

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut last_event = 0;
    let mut booted = vec![false; args.machines];
    while booted.iter().any(|b| !b) && Instant::now() < deadline {
        last_event = print_new_events(&lab, &state_dir, last_event).unwrap_or(last_event);
        for (i, m) in lab.machines().iter().enumerate() {
            if !booted[i] {
                let serial = match lab.bmc(i) {
                    Some(b) => b.serial_log(),
                    None => m.config().serial_log(),
                };
                let log = std::fs::read_to_string(serial).unwrap_or_default();
                if log.contains(MARKER) {
                    booted[i] = true;
                    outln!(">>> {} booted Linux: {}", m.name(), marker_line(&log));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    print_new_events(&lab, &state_dir, last_event).ok();
    for m in lab.machines() {
        outln!("\ntimeline of {}:", m.name());
        out!("{}", lab_cli(&lab, &state_dir, &["timeline", m.name()])?);
    }
    let ok = booted.iter().filter(|b| **b).count();
    outln!(
        "\n{ok}/{} machines booted Linux through rackboot",
        args.machines
    );
    lab.detach();
    outln!(
        "lab left running for inspection: `rackboot lab exec -- rackboot machine list`; `rackboot lab down` removes it"
    );
    if ok < args.machines {
        bail!(
            "{} machines did not boot within {} s; see {}",
            args.machines - ok,
            args.timeout,
            dir.display()
        );
    }
    Ok(())
}

fn marker_line(log: &str) -> String {
    log.lines()
        .find(|l| l.contains(MARKER))
        .unwrap_or("")
        .trim()
        .to_string()
}

async fn wait_for_api(lab: &Lab, state_dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lab_cli(lab, state_dir, &["status"]) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                let log = lab.server().map(|s| s.output()).unwrap_or_default();
                bail!("rackboot did not come up in the lab: {e:#}\nserver log:\n{log}");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn print_new_events(lab: &Lab, state_dir: &Path, after: i64) -> Result<i64> {
    let out = lab_cli(
        lab,
        state_dir,
        &[
            "events",
            "-o",
            "json",
            "--after",
            &after.to_string(),
            "--limit",
            "1000",
        ],
    )?;
    let mut last = after;
    for line in out.lines() {
        if let Ok(e) = serde_json::from_str::<Event>(line) {
            outln!(
                "  {}  {:<18} {}",
                e.at.format("%H:%M:%S%.3f"),
                e.kind.as_str(),
                e.message
            );
            last = last.max(e.id);
        }
    }
    Ok(last)
}
