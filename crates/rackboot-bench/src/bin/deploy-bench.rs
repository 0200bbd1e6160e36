//! `deploy-bench`: in-band deploy figures under QEMU (TCG), for bench/deploy.sh.
//!
//! ```text
//! deploy-bench --rackboot PATH --agent PATH [--rounds 3] [--image-mib 256] [--work DIR]
//!              [--skip-write] [--skip-deploy]
//! ```
//!
//! One lab machine (SeaBIOS, 1 vCPU, 1 GiB, one blank virtio disk) behind an
//! IPMI BMC (ipmi_sim), `rackboot serve` on the lab bridge, as the QEMU
//! end-to-end tests run them. It:
//! 1. builds the RAM-disk with `rackboot ramdisk build` (sizes, module count);
//! 2. imports two images: the lab's bootable test OS padded with zeros to
//!    `--image-mib` (what real images look like: mostly empty) and as many MiB
//!    of random bytes;
//! 3. for each round and image, boots the machine into the RAM-disk with an
//!    add-on (an extra cpio archive appended to the built initramfs) that
//!    first writes the image to the disk with `wget | dd` and times it, then
//!    starts the real agent, which writes the same image onto the same disk
//!    in the `write_image` step of a workflow (`bench-write`): same boot,
//!    same disk, same server;
//! 4. deploys the test OS image with `rackboot deploy` (the real RAM-disk)
//!    `--rounds` times, each followed by `rackboot undeploy`: power-on to
//!    active, and QEMU start to the agent's hello in every boot.
//!
//! Prints `key=value` lines on stdout, progress on stderr. Needs root (the
//! lab's network namespace). Everything it starts is stopped when it ends,
//! also on SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rackboot_bench::inband::{self, BENCH_WORKFLOW, DD_PREFIX, median_range, parse_dd_line};
use rackboot_lab::{BmcKind, Lab, LabConfig, MachineSpec, write_newc};
use serde_json::{Value, json};

const API: &str = "http://10.77.0.1:8080";
const DISK: &str = "/dev/vda";
/// One deploy or write under TCG: RAM-disk boot, image write, reboot.
const WORKFLOW_TIMEOUT: Duration = Duration::from_secs(1200);

struct Opts {
    rackboot: PathBuf,
    agent: PathBuf,
    rounds: usize,
    image_mib: u64,
    work: PathBuf,
    write: bool,
    deploy: bool,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        rackboot: PathBuf::new(),
        agent: PathBuf::new(),
        rounds: 3,
        image_mib: 256,
        work: std::env::temp_dir(),
        write: true,
        deploy: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rackboot" => o.rackboot = value()?.into(),
            "--agent" => o.agent = value()?.into(),
            "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
            "--image-mib" => o.image_mib = value()?.parse().context("--image-mib")?,
            "--work" => o.work = value()?.into(),
            "--skip-write" => o.write = false,
            "--skip-deploy" => o.deploy = false,
            "-h" | "--help" => {
                println!(
                    "usage: deploy-bench --rackboot PATH --agent PATH [--rounds N] [--image-mib N] [--work DIR] [--skip-write] [--skip-deploy]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if o.rackboot.as_os_str().is_empty() || !o.agent.is_file() {
        bail!("--rackboot and --agent (the static agent, scripts/build-agent) are required");
    }
    // The test OS image is 96 MiB before padding.
    if !(1..=20).contains(&o.rounds)
        || !(96..=4096).contains(&o.image_mib)
        || !o.image_mib.is_multiple_of(4)
    {
        bail!("--rounds 1-20, --image-mib 96-4096 and a multiple of 4 (dd writes 4 MiB records)");
    }
    Ok(o)
}

macro_rules! say {
    ($($arg:tt)*) => { eprintln!("[deploy-bench {}] {}", clock(), format!($($arg)*)) };
}

fn clock() -> String {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

fn out(key: &str, value: impl std::fmt::Display) {
    println!("{key}={value}");
}

fn main() -> ExitCode {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("deploy-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // The lab lives inside `run`: a signal drops it, which stops QEMU,
        // the BMC and the server and deletes the namespace.
        tokio::select! {
            r = run(&opts) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deploy-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The lab, its server and the CLI inside its namespace.
struct Bench {
    lab: Lab,
    rackboot: PathBuf,
    state: PathBuf,
    dir: PathBuf,
    /// Wall-clock time of the host's boot (`now - /proc/uptime`).
    boot_epoch: f64,
}

impl Bench {
    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self
            .lab
            .netns()
            .command(&self.rackboot)
            .args(args)
            .env("RACKBOOT_URL", API)
            .env("RACKBOOT_STATE_DIR", &self.state)
            .output()
            .context("running the rackboot CLI")?;
        if !out.status.success() {
            bail!(
                "rackboot {}: {}{}\nserver log:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.server_log_tail()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn server_log_tail(&self) -> String {
        let log = self.lab.server().map(|s| s.output()).unwrap_or_default();
        log[log.len().saturating_sub(3000)..].to_string()
    }

    fn api(&self, path: &str) -> Result<Value> {
        let token = std::fs::read_to_string(self.state.join("admin-token"))?;
        let out = self
            .lab
            .netns()
            .command("curl")
            .args(["-sS", "-f", "--max-time", "20", "-H"])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("{API}/api/v1{path}"))
            .output()
            .context("running curl")?;
        if !out.status.success() {
            bail!("GET {path}: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("GET {path}: bad JSON"))
    }

    fn serial_len(&self) -> u64 {
        self.lab.bmc(0).map_or(0, |b| b.serial_len())
    }

    fn serial_from(&self, from: u64) -> String {
        let log = self.lab.bmc(0).map(|b| b.serial_log()).unwrap_or_default();
        let bytes = std::fs::read(log).unwrap_or_default();
        let from = (from as usize).min(bytes.len());
        rackboot_lab::strip_ansi(&String::from_utf8_lossy(&bytes[from..]))
    }

    /// Wall-clock start (Unix seconds) of the machine's running QEMU, if any.
    fn qemu_started_at(&self) -> Option<(u32, f64)> {
        let pid = self.lab.bmc(0)?.qemu_pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some((pid, self.boot_epoch + inband::proc_start_secs(&stat, hz)?))
    }

    /// Waits until the machine's newest workflow has ended, noting the start
    /// time of every QEMU process seen meanwhile.
    async fn wait_workflow(&self, id: &str, qemu_starts: &mut Vec<f64>) -> Result<Value> {
        let deadline = Instant::now() + WORKFLOW_TIMEOUT;
        let mut seen_pids = Vec::new();
        let mut polls = 0u32;
        loop {
            if let Some((pid, at)) = self.qemu_started_at()
                && !seen_pids.contains(&pid)
            {
                seen_pids.push(pid);
                qemu_starts.push(at);
            }
            polls += 1;
            if polls.is_multiple_of(10) {
                let wf = self.api(&format!("/workflows/{id}"))?;
                if !matches!(wf["state"].as_str(), Some("queued" | "running")) {
                    return Ok(wf);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "workflow {id} not done after {WORKFLOW_TIMEOUT:?}\nconsole:\n{}\nserver log:\n{}",
                    tail_str(&self.serial_from(0), 4000),
                    self.server_log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Agent hellos of machine m1 after Unix time `after`, as Unix times.
    fn hellos_after(&self, after: f64) -> Result<Vec<f64>> {
        let events = self.api("/events?machine=m1&kind=agent_hello&limit=1000")?;
        Ok(events
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| unix(&e["at"]))
            .filter(|t| *t >= after)
            .collect())
    }

    fn start_workflow(&self, args: &[&str]) -> Result<String> {
        let mut all = args.to_vec();
        all.extend(["--no-wait", "-o", "json"]);
        let text = self.cli(&all)?;
        let v: Value = serde_json::from_str(text.trim()).with_context(|| format!("{text:?}"))?;
        v[0]["workflow"]["id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no workflow in {v}"))
    }
}

fn tail_str(s: &str, n: usize) -> String {
    let start = s.len().saturating_sub(n);
    let start = (start..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    s[start..].to_string()
}

fn unix(v: &Value) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
    Some(t.timestamp_micros() as f64 / 1e6)
}

fn step<'a>(wf: &'a Value, name: &str) -> &'a Value {
    wf["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

fn secs_between(a: &Value, b: &Value) -> Option<f64> {
    Some(unix(b)? - unix(a)?)
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn host_boot_epoch() -> Result<f64> {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")?
        .split_whitespace()
        .next()
        .context("/proc/uptime")?
        .parse()?;
    Ok(now_unix() - uptime)
}

/// The lab's test OS, padded with zeros to `mib` MiB.
fn realistic_image(path: &Path, mib: u64) -> Result<()> {
    rackboot_lab::test_os::build_image(&rackboot_lab::test_os::TestOsOptions::new(path))
        .context("building the test OS image")?;
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    if f.metadata()?.len() > mib << 20 {
        bail!("the test OS image is larger than {mib} MiB");
    }
    f.set_len(mib << 20)?;
    Ok(())
}

fn random_image(path: &Path, mib: u64) -> Result<()> {
    use std::io::{Read, Write};
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        urandom.read_exact(&mut buf)?;
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(())
}

async fn run(o: &Opts) -> Result<()> {
    let dir = o.work.join(format!("deploy-bench.{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(o, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(o: &Opts, dir: &Path) -> Result<()> {
    let assets = dir.join("assets");
    let state = dir.join("state");
    std::fs::create_dir_all(&assets)?;
    std::fs::copy(rackboot_lab::host_kernel()?, assets.join("vmlinuz"))?;

    // 1. The RAM-disk, built as an operator builds it.
    say!("rackboot ramdisk build");
    let ramdisk = dir.join("ramdisk");
    let t = Instant::now();
    let built = std::process::Command::new(&o.rackboot)
        .args(["ramdisk", "build", "--agent"])
        .arg(&o.agent)
        .arg("--out")
        .arg(&ramdisk)
        .output()?;
    if !built.status.success() {
        bail!(
            "rackboot ramdisk build: {}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
    out(
        "ramdisk_build_secs",
        format!("{:.1}", t.elapsed().as_secs_f64()),
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(ramdisk.join("manifest.json"))?)?;
    out(
        "ramdisk_kernel_version",
        manifest["kernel_version"].as_str().unwrap_or("?"),
    );
    out("ramdisk_kernel_bytes", &manifest["kernel"]["size"]);
    out("ramdisk_initramfs_bytes", &manifest["initramfs"]["size"]);
    out(
        "ramdisk_uncompressed_bytes",
        &manifest["initramfs_uncompressed_size"],
    );
    out(
        "ramdisk_compression",
        manifest["compression"].as_str().unwrap_or("?"),
    );
    out("ramdisk_modules", &manifest["modules"]["count"]);
    out(
        "ramdisk_binaries",
        manifest["binaries"].as_array().map_or(0, |b| b.len()),
    );
    let initramfs = std::fs::read(ramdisk.join("initramfs.img"))?;

    // 2. The images.
    say!("building the images ({} MiB each)", o.image_mib);
    let real = assets.join("bench-testos.raw");
    realistic_image(&real, o.image_mib)?;
    let random = assets.join("bench-random.raw");
    random_image(&random, o.image_mib)?;

    // The lab: one machine behind ipmi_sim, the server on its bridge.
    let disk_mib = o.image_mib * 2 + 64;
    let spec = MachineSpec::bios().with_memory(1024).with_disk(disk_mib);
    let mut config = LabConfig::new(dir.join("lab"), vec![spec]);
    config.bmc = Some(BmcKind::Ipmi);
    let mut lab = Lab::create(config)?;
    let args: Vec<String> = [
        "serve",
        "--interface",
        "br0",
        "--dhcp-range",
        "10.77.0.100-10.77.0.150",
        "--state-dir",
        state.to_str().context("state path")?,
        "--asset-dir",
        assets.to_str().context("assets path")?,
        "--api-listen",
        "10.77.0.1:8080",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    lab.spawn_server(&o.rackboot, &args)?;
    let bench = Bench {
        lab,
        rackboot: o.rackboot.clone(),
        state: state.clone(),
        dir: dir.to_path_buf(),
        boot_epoch: host_boot_epoch()?,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while bench.cli(&["status"]).is_err() {
        if Instant::now() > deadline {
            bail!(
                "rackboot serve did not come up:\n{}",
                bench.server_log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let install_ramdisk = |addon: Option<&[u8]>| -> Result<()> {
        let to = state.join("ramdisk");
        std::fs::create_dir_all(&to)?;
        for f in ["vmlinuz", "manifest.json"] {
            std::fs::copy(ramdisk.join(f), to.join(f))?;
        }
        let mut img = initramfs.clone();
        if let Some(addon) = addon {
            // Archives start on a 4-byte boundary; the kernel skips zeros between them.
            img.resize(img.len().div_ceil(512) * 512, 0);
            img.extend_from_slice(addon);
        }
        let tmp = to.join("initramfs.img.tmp");
        std::fs::write(&tmp, &img)?;
        std::fs::rename(&tmp, to.join("initramfs.img"))?;
        Ok(())
    };
    install_ramdisk(None)?;
    for (name, path, family) in [
        ("bench-testos", &real, "debian"),
        ("bench-random", &random, "debian"),
    ] {
        let t = Instant::now();
        bench.cli(&[
            "image",
            "import",
            path.to_str().unwrap_or_default(),
            "--name",
            name,
            "--os-family",
            family,
        ])?;
        say!("imported {name} in {:.1} s", t.elapsed().as_secs_f64());
    }
    let mac = bench.lab.machine(0).mac();
    let bmc_url = bench.lab.bmc(0).context("no BMC")?.url().to_string();
    bench.cli(&["machine", "add", "m1", "--mac", &mac, "--bmc", &bmc_url])?;
    out(
        "machine",
        "SeaBIOS, 1 vCPU (TCG), 1024 MiB, virtio-net, one virtio-blk disk (raw file, QEMU default cache)",
    );
    out("disk_mib", disk_mib);
    out("image_mib", o.image_mib);
    out("image_testos_bytes_nonzero_approx", nonzero_mib(&real)?);
    out("dd_command", inband::DD_COMMAND);
    out(
        "dd_sha256_command",
        inband::DD_SHA256_COMMAND.replace('\n', " "),
    );

    if o.write {
        write_rounds(o, &bench, &install_ramdisk).await?;
        install_ramdisk(None)?;
    }
    if o.deploy {
        deploy_rounds(o, &bench).await?;
    }
    Ok(())
}

/// Lower-case hex SHA-256 of a file, by the host's sha256sum.
fn sha256_of(path: &Path) -> Result<String> {
    let out = std::process::Command::new("sha256sum").arg(path).output()?;
    if !out.status.success() {
        bail!(
            "sha256sum {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// MiB of the file that are not all zeros (in 1 MiB blocks).
fn nonzero_mib(path: &Path) -> Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        if buf[..got].iter().any(|b| *b != 0) {
            n += 1;
        }
    }
}

/// Part (a): per round and image, `wget | dd` then the agent's write_image,
/// in one boot onto one disk.
async fn write_rounds(
    o: &Opts,
    bench: &Bench,
    install_ramdisk: &dyn Fn(Option<&[u8]>) -> Result<()>,
) -> Result<()> {
    let definition = bench.dir.join("bench-write.toml");
    std::fs::write(&definition, BENCH_WORKFLOW)?;
    bench.cli(&[
        "workflow",
        "define",
        definition.to_str().unwrap_or_default(),
    ])?;
    let agent = std::fs::read(&o.agent)?;
    let mib = o.image_mib as f64;
    for round in 1..=o.rounds {
        for image in ["bench-testos", "bench-random"] {
            let file = format!("{image}.raw");
            let mut addon = Vec::new();
            write_newc(
                &mut addon,
                &inband::addon_entries(agent.clone(), &file, DISK),
            )?;
            install_ramdisk(Some(&addon))?;
            let from = bench.serial_len();
            say!("round {round}: {image}: wget | dd, then the agent's write_image");
            let request = json!({"image": image}).to_string();
            let id = bench.start_workflow(&[
                "workflow",
                "run",
                "bench-write",
                "m1",
                "--request",
                &request,
            ])?;
            let mut qemu = Vec::new();
            let wf = bench.wait_workflow(&id, &mut qemu).await?;
            let console = bench.serial_from(from);
            if wf["state"] != "succeeded" {
                bail!(
                    "bench-write {image} round {round}: {}\n{wf:#}\nconsole:\n{}",
                    wf["state"],
                    tail_str(&console, 4000)
                );
            }
            let runs: Vec<_> = console
                .lines()
                .filter(|l| l.contains(DD_PREFIX))
                .filter_map(parse_dd_line)
                .collect();
            let find = |method: &str| {
                runs.iter()
                    .find(|r| r.method == method)
                    .cloned()
                    .with_context(|| {
                        format!(
                            "no {method} line on the console:\n{}",
                            tail_str(&console, 4000)
                        )
                    })
            };
            let (dd, dd_sha) = (find("dd")?, find("dd-sha256")?);
            let expect = o.image_mib / 4;
            for run in [&dd, &dd_sha] {
                if run.image != file || run.full_records != expect || run.partial_records != 0 {
                    bail!(
                        "{} wrote {}+{} records of {}, expected {expect}+0 of {file}",
                        run.method,
                        run.full_records,
                        run.partial_records,
                        run.image
                    );
                }
            }
            let want_sha = sha256_of(&bench.dir.join("assets").join(&file))?;
            if dd_sha.sha256.as_deref() != Some(want_sha.as_str()) {
                bail!(
                    "sha256sum in the VM printed {:?}, the image's is {want_sha}",
                    dd_sha.sha256
                );
            }
            let w = step(&wf, "write-image");
            let output = &w["output"];
            let agent_secs = output["millis"]
                .as_u64()
                .context("write-image output has no millis")? as f64
                / 1000.0;
            let raw = output["raw_bytes"].as_u64().unwrap_or(0);
            if raw != o.image_mib << 20 {
                bail!(
                    "the agent wrote {raw} bytes, not the image's {}",
                    o.image_mib << 20
                );
            }
            let step_secs = secs_between(&w["started_at"], &w["finished_at"]).unwrap_or(0.0);
            say!(
                "  dd {:.1} s ({:.1} MiB/s), dd+sha256sum {:.1} s ({:.1} MiB/s), agent {:.1} s ({:.1} MiB/s; step {:.1} s; {} MiB zero runs, {} MiB downloaded)",
                dd.secs,
                mib / dd.secs,
                dd_sha.secs,
                mib / dd_sha.secs,
                agent_secs,
                mib / agent_secs,
                step_secs,
                output["zero_bytes"].as_u64().unwrap_or(0) >> 20,
                output["downloaded_bytes"].as_u64().unwrap_or(0) >> 20
            );
            out(
                &format!("write.{image}.{round}"),
                format!(
                    "dd_secs={:.2} dd_sha256_secs={:.2} agent_secs={:.2} step_secs={:.2} zero_bytes={} downloaded_bytes={}",
                    dd.secs,
                    dd_sha.secs,
                    agent_secs,
                    step_secs,
                    output["zero_bytes"].as_u64().unwrap_or(0),
                    output["downloaded_bytes"].as_u64().unwrap_or(0)
                ),
            );
        }
    }
    Ok(())
}

/// Parts (b) and (c): `rackboot deploy` to active, then `rackboot undeploy`.
async fn deploy_rounds(o: &Opts, bench: &Bench) -> Result<()> {
    let mac = bench.lab.machine(0).mac();
    let vars = bench.dir.join("vars.json");
    std::fs::write(
        &vars,
        json!({
            "hostname": "bench1",
            "nics": [{"mac": mac, "name": "eth0", "ipv4": {
                "mode": "static", "address": "10.77.0.50", "prefix": 24, "gateway": "10.77.0.1"}}],
        })
        .to_string(),
    )?;
    let vars = vars.to_str().unwrap_or_default().to_string();
    let mut hello_secs = Vec::new();
    let mut active_secs = Vec::new();
    for round in 1..=o.rounds {
        for what in ["deploy", "undeploy"] {
            say!("round {round}: rackboot {what}");
            let started = now_unix();
            let id = if what == "deploy" {
                bench.start_workflow(&[
                    "deploy",
                    "m1",
                    "--image",
                    "bench-testos",
                    "--vars",
                    &vars,
                ])?
            } else {
                bench.start_workflow(&["undeploy", "m1"])?
            };
            let mut qemu = Vec::new();
            let wf = bench.wait_workflow(&id, &mut qemu).await?;
            if wf["state"] != "succeeded" {
                bail!(
                    "{what} round {round}: {}\n{wf:#}\nconsole:\n{}",
                    wf["state"],
                    tail_str(&bench.serial_from(0), 4000)
                );
            }
            // QEMU start to the agent's hello, for the boot that ran the agent.
            let hellos = bench.hellos_after(started)?;
            let first_hello = hellos.iter().copied().fold(f64::INFINITY, f64::min);
            let qemu_start = qemu
                .iter()
                .copied()
                .filter(|q| *q <= first_hello)
                .fold(f64::NEG_INFINITY, f64::max);
            if first_hello.is_finite() && qemu_start.is_finite() {
                let secs = first_hello - qemu_start;
                hello_secs.push(secs);
                out(&format!("hello.{what}.{round}"), format!("{secs:.2}"));
            }
            let total = secs_between(&wf["created_at"], &wf["finished_at"]).unwrap_or(0.0);
            let mut steps = Vec::new();
            for s in wf["steps"].as_array().into_iter().flatten() {
                let secs = secs_between(&s["started_at"], &s["finished_at"]);
                steps.push(format!(
                    "{}:{}",
                    s["name"].as_str().unwrap_or("?"),
                    secs.map_or("-".into(), |x| format!("{x:.1}"))
                ));
            }
            out(
                &format!("{what}.{round}"),
                format!("secs={total:.1} steps={}", steps.join(",")),
            );
            if what == "deploy" {
                active_secs.push(total);
                let m = bench.api("/machines/m1")?;
                if m["state"] != "active" {
                    bail!("after the deploy m1 is {}, not active", m["state"]);
                }
                let w = step(&wf, "write-image");
                let millis = w["output"]["millis"].as_u64().unwrap_or(0);
                out(
                    &format!("deploy_write.{round}"),
                    format!("{:.2}", millis as f64 / 1000.0),
                );
            }
        }
    }
    if let Some((m, lo, hi)) = median_range(&hello_secs) {
        say!("QEMU start to agent hello: median {m:.1} s ({lo:.1}-{hi:.1})");
    }
    if let Some((m, lo, hi)) = median_range(&active_secs) {
        say!("deploy to active: median {m:.1} s ({lo:.1}-{hi:.1})");
    }
    Ok(())
}
