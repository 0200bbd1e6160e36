//! `inspect`: hardware facts from /proc and /sys (under `Env::sys_root`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rackboot_agent_proto::{BootFacts, BootMode, CpuFacts, DiskFacts, DmiFacts, Facts, NicFacts};

use crate::context::{StepContext, StepError, read_trimmed};
use crate::steps::lldp;
use crate::sysfs;

/// CPU facts from /proc/cpuinfo; `arch` from uname.
pub fn parse_cpuinfo(text: &str, arch: &str) -> CpuFacts {
    let mut threads = 0u32;
    let mut model = String::new();
    let mut flags = Vec::new();
    let mut packages = BTreeSet::new();
    // (physical id, core id) pairs; `cpu cores` per package as a fallback.
    let mut cores = BTreeSet::new();
    let mut cores_per_package = std::collections::BTreeMap::new();
    let mut physical_id: Option<String> = None;
    for block in text.split("\n\n") {
        let mut in_block = false;
        let mut core_id = None;
        let mut cpu_cores = None;
        for line in block.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "processor" => {
                    in_block = true;
                    threads += 1;
                }
                "model name" if model.is_empty() => model = value.to_string(),
                // flags (x86) / Features (arm64)
                "flags" | "Features" if flags.is_empty() => {
                    flags = value.split_ascii_whitespace().map(str::to_string).collect()
                }
                "physical id" => physical_id = Some(value.to_string()),
                "core id" => core_id = Some(value.to_string()),
                "cpu cores" => cpu_cores = value.parse::<u32>().ok(),
                _ => {}
            }
        }
        if !in_block {
            continue;
        }
        if let Some(p) = physical_id.take() {
            if let Some(c) = core_id {
                cores.insert((p.clone(), c));
            }
            if let Some(n) = cpu_cores {
                cores_per_package.insert(p.clone(), n);
            }
            packages.insert(p);
        }
    }
    let sockets = (packages.len() as u32).max(u32::from(threads > 0));
    let cores = if !cores.is_empty() {
        cores.len() as u32
    } else if !cores_per_package.is_empty() {
        cores_per_package.values().sum()
    } else {
        threads
    };
    CpuFacts {
        model,
        arch: arch.to_string(),
        sockets,
        cores,
        threads,
        flags,
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_ascii_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    let scale = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    Some(n * scale)
}

/// A DMI string, or `None` for the placeholders vendors leave in.
pub fn dmi_value(raw: &str) -> Option<String> {
    let v = raw.trim();
    const PLACEHOLDERS: [&str; 16] = [
        "to be filled by o.e.m.",
        "to be filled by oem",
        "default string",
        "0123456789",
        "123456789",
        "none",
        "n/a",
        "na",
        "not specified",
        "not applicable",
        "not available",
        "system serial number",
        "system product name",
        "system manufacturer",
        "chassis serial number",
        "base board serial number",
    ];
    let lower = v.to_ascii_lowercase();
    if v.is_empty() || PLACEHOLDERS.contains(&lower.as_str()) {
        return None;
    }
    // All one repeated character: "00000000", "FFFFFFFF", "........", "0".
    let mut chars = v.chars().filter(|c| *c != '-');
    if let Some(first) = chars.next()
        && chars.all(|c| c == first)
        && matches!(first, '0' | 'f' | 'F' | '.' | ' ' | 'x' | 'X' | '*')
    {
        return None;
    }
    // The SMBIOS uuid placeholder QEMU-era firmware ships.
    if lower == "03000200-0400-0500-0006-000700080009" {
        return None;
    }
    Some(v.to_string())
}

pub fn read_dmi(sys_root: &Path) -> DmiFacts {
    let dir = sys_root.join("sys/class/dmi/id");
    let get = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|s| dmi_value(&s))
    };
    DmiFacts {
        vendor: get("sys_vendor"),
        product: get("product_name"),
        serial: get("product_serial"),
        uuid: get("product_uuid").map(|u| u.to_ascii_lowercase()),
        board_vendor: get("board_vendor"),
        board_product: get("board_name"),
        board_serial: get("board_serial"),
        chassis_serial: get("chassis_serial"),
        bios_vendor: get("bios_vendor"),
        bios_version: get("bios_version"),
    }
}

/// The SecureBoot EFI variable: 4 attribute bytes, then 1 (enforced) or 0.
pub const SECURE_BOOT_VAR: &str = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

pub fn read_boot(sys_root: &Path) -> BootFacts {
    let efi = sys_root.join("sys/firmware/efi");
    if !efi.is_dir() {
        return BootFacts {
            mode: BootMode::Bios,
            secure_boot: None,
        };
    }
    let secure_boot = std::fs::read(efi.join("efivars").join(SECURE_BOOT_VAR))
        .ok()
        .and_then(|v| v.get(4).map(|&b| b == 1));
    BootFacts {
        mode: BootMode::Uefi,
        secure_boot,
    }
}

/// uname's machine and release (`x86_64`, `6.1.0-18-amd64`).
pub fn uname() -> (String, String) {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return (String::new(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.machine), field(&u.release))
}

/// Facts of the machine under `sys_root` (no LLDP).
pub fn gather(sys_root: &Path) -> Facts {
    let (arch, release) = uname();
    let read = |p: &str| std::fs::read_to_string(sys_root.join(p)).unwrap_or_default();
    Facts {
        cpu: parse_cpuinfo(&read("proc/cpuinfo"), &arch),
        memory_bytes: parse_meminfo(&read("proc/meminfo")).unwrap_or(0),
        dmi: read_dmi(sys_root),
        disks: sysfs::disks(sys_root),
        nics: sysfs::nics(sys_root),
        boot: read_boot(sys_root),
        kernel: release,
    }
}

/// Facts of a simulated machine: the host's CPU and memory, the disks in
/// `DIR/disks/`, one NIC with the given MAC.
pub fn gather_simulated(sim: &crate::context::SimConfig) -> Facts {
    let (arch, release) = uname();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut disks = Vec::new();
    for name in sysfs::list_dir(&sim.dir.join("disks")) {
        let path = sim.dir.join("disks").join(&name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        disks.push(DiskFacts {
            path: format!("/dev/{name}"),
            name,
            size_bytes: meta.len(),
            transport: Some("file".into()),
            logical_block_size: 512,
            physical_block_size: 512,
            discard: true,
            ..DiskFacts::default()
        });
    }
    Facts {
        cpu: parse_cpuinfo(&read("/proc/cpuinfo"), &arch),
        memory_bytes: parse_meminfo(&read("/proc/meminfo")).unwrap_or(0),
        dmi: DmiFacts {
            serial: sim.serial.clone(),
            product: Some("rackboot simulated machine".into()),
            ..DmiFacts::default()
        },
        disks,
        nics: vec![NicFacts {
            name: "eth0".into(),
            mac: sim.mac.clone(),
            link_up: Some(true),
            mtu: 1500,
            ..NicFacts::default()
        }],
        boot: BootFacts::default(),
        kernel: release,
    }
}

/// The `inspect` step.
pub fn run(ctx: &StepContext, lldp_wait_secs: u32) -> Result<Facts, StepError> {
    if let Some(sim) = &ctx.env.sim {
        return Ok(gather_simulated(sim));
    }
    ctx.progress.set(0, None, "reading hardware facts");
    let mut facts = gather(&ctx.env.sys_root);
    if lldp_wait_secs > 0 && !facts.nics.is_empty() {
        ctx.progress.set(
            0,
            None,
            format!(
                "listening for LLDP on {} NICs for {lldp_wait_secs} s",
                facts.nics.len()
            ),
        );
        let names: Vec<String> = facts.nics.iter().map(|n| n.name.clone()).collect();
        let heard = lldp::listen_all(
            &names,
            Duration::from_secs(lldp_wait_secs.into()),
            &ctx.cancel,
        );
        ctx.check_cancel()?;
        for nic in &mut facts.nics {
            nic.lldp = heard.get(&nic.name).cloned();
        }
        // Links were brought up to listen: report what they say now.
        for nic in &mut facts.nics {
            if let Some(now) = sysfs::nic_facts(&ctx.env.sys_root, &nic.name) {
                nic.link_up = now.link_up;
                nic.speed_mbps = now.speed_mbps;
            }
        }
    }
    Ok(facts)
}

/// MACs of the machine's physical NICs (for `Hello`).
pub fn macs(env: &crate::context::Env) -> Vec<String> {
    if let Some(sim) = &env.sim {
        return vec![sim.mac.clone()];
    }
    sysfs::nics(&env.sys_root)
        .into_iter()
        .map(|n| n.mac)
        .filter(|m| !m.is_empty())
        .collect()
}

/// The kernel's boot id, the same for every agent process of one boot.
pub fn boot_id(env: &crate::context::Env) -> String {
    read_trimmed(&env.sys("/proc/sys/kernel/random/boot_id")).unwrap_or_default()
}
