//! A whole Debian 12 install through rackboot, offline: a lab machine with
//! blank disks network-boots the real Debian installer from a local mirror
//! built by scripts/build-debian-mirror and imported with `rackboot os
//! import` (the mirror is the OS source: installer, udebs and packages),
//! with no kernel argument but the serial console; d-i installs, its
//! late_command reports "installed", the machine reboots, network-boots
//! again, is told to boot its disk, and the installed system's first-boot
//! unit completes the install. Checked: the installed system answers SSH
//! from the bridge with the asked host name and root password hash, and a
//! further network boot gets local boot again. The second test installs over
//! a disk pair that carries an old LVM-on-md layout (built in a VM; the
//! build host's kernel has no md or device-mapper).
//!
//! Long under TCG (see docs/benchmarks.md): `#[ignore]`d, run by
//! scripts/test-long. The mirror comes from RACKBOOT_DEBIAN_MIRROR or is
//! built into /var/tmp/rackboot-debian-12-mirror; a mirror the archive did
//! not fully serve (its `rackboot-mirror` says `missing=N`) fails the test
//! at once, naming the list, since the installer would stop on the first
//! missing file it needs. Needs root and scripts/install-deps' packages.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Rack, VMS};
use rackboot_lab::MachineSpec;

const DEFAULT_MIRROR: &str = "/var/tmp/rackboot-debian-12-mirror";
/// From power-on to the installer's "installed", under TCG on shared cores.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(100 * 60);
/// From "installed" to the installed system's first-boot report.
const FIRST_BOOT_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const HOSTNAME: &str = "inst1";
const PASSWORD: &str = "rackboot-long-test";
const DISK_MIB: u64 = 8192;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The local mirror, built when missing; panics when it is incomplete and
/// `complete` is asked for.
fn mirror(complete: bool) -> PathBuf {
    let dir = std::env::var_os("RACKBOOT_DEBIAN_MIRROR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MIRROR));
    let manifest = dir.join("rackboot-mirror");
    if !manifest.is_file() {
        let started = Instant::now();
        let out = Command::new(workspace().join("scripts/build-debian-mirror"))
            .arg("--out")
            .arg(&dir)
            .arg("--allow-missing")
            .output()
            .expect("run scripts/build-debian-mirror");
        assert!(
            out.status.success(),
            "scripts/build-debian-mirror: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "BENCH mirror built in {:.0} s: {}",
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    let text = std::fs::read_to_string(&manifest).unwrap();
    let missing = text
        .lines()
        .find_map(|l| l.strip_prefix("missing="))
        .unwrap_or("0");
    if !complete {
        return dir;
    }
    assert_eq!(
        missing,
        "0",
        "{}: the Debian archive this host reaches did not serve {missing} of the mirror's files (listed in {}); the installer stops on the first it needs",
        dir.display(),
        dir.join("rackboot-mirror.missing").display()
    );
    dir
}

fn serial(rack: &Rack) -> String {
    String::from_utf8_lossy(
        &std::fs::read(rack.lab.machine(0).config().serial_log()).unwrap_or_default(),
    )
    .into_owned()
}

fn tail(text: &str, chars: usize) -> String {
    let skip = text.chars().count().saturating_sub(chars);
    text.chars().skip(skip).collect()
}

/// The serial console without terminal escapes and line-drawing runs.
fn plain(serial: &str) -> String {
    let mut out = String::new();
    let mut chars = serial.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI ... letter, or ESC ( B and friends.
            match chars.next() {
                Some('[') => {
                    for n in chars.by_ref() {
                        if n.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            }
        } else if !c.is_control() || c == '\n' {
            out.push(c);
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Waits until `done(timeline, serial)` holds, printing nothing; panics with
/// both and the server log on timeout, or at once when d-i shows an error
/// dialog (`[!!] ...`: with priority=critical nothing but an error or a
/// question nobody answered is ever shown, and nobody will answer it).
async fn wait_until(
    rack: &Rack,
    name: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&str, &str) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let timeline = rack.cli(&["timeline", name]);
        let serial = serial(rack);
        if done(&timeline, &serial) {
            return;
        }
        let text = plain(&serial);
        if let Some(at) = text.rfind("[!!]") {
            panic!(
                "{what}: the installer stopped on a dialog: {}\nserver log tail:\n{}",
                text[at..].chars().take(600).collect::<String>(),
                tail(&rack.server_log(), 4000)
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {timeout:?}\ntimeline:\n{timeline}\nserial tail:\n{}\nserver log tail:\n{}",
                tail(&serial, 4000),
                tail(&rack.server_log(), 4000)
            );
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Runs `command` as root on the installed system over SSH from the bridge.
fn ssh(rack: &Rack, key: &Path, ip: &str, command: &str) -> Result<String, String> {
    let out = rack
        .lab
        .netns()
        .command("ssh")
        .args([
            "-i",
            key.to_str().unwrap(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            &format!("root@{ip}"),
            command,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The address rackboot's DHCP last gave the machine.
fn leased_ip(rack: &Rack, mac: &str) -> String {
    let leases: serde_json::Value =
        serde_json::from_str(&rack.cli(&["lease", "list", "-o", "json"])).unwrap_or_default();
    leases
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["mac"].as_str() == Some(mac))
        .filter_map(|l| l["ip"].as_str())
        .next_back()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no lease for {mac}: {leases}"))
}

/// Installs Debian 12 from the mirror on machine 0 and checks the result;
/// returns (power-on to installed, installed to running) for the figures.
async fn install_and_check(rack: &mut Rack, mirror_id: &str) -> (Duration, Duration) {
    let name = rack.lab.machine(0).name().to_string();
    let mac = rack.lab.machine(0).mac();
    let keydir = rack.dir().join("ssh");
    std::fs::create_dir_all(&keydir).unwrap();
    let key = keydir.join("id_ed25519");
    if !key.exists() {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(status.success());
    }
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let hash = rackboot_install::hash_root_password(PASSWORD).unwrap();
    let _ = rack.try_cli(&["machine", "add", &name, "--mac", &mac]);
    rack.cli(&[
        "install",
        &name,
        "--os",
        mirror_id,
        "--set",
        &format!("hostname={HOSTNAME}"),
        "--set",
        &format!("root_password_hash={hash}"),
        "--set",
        &format!("ssh_authorized_keys=[{:?}]", public.trim()),
        // To watch it: d-i passes the console on to the installed system.
        "--kernel-arg",
        "console=ttyS0,115200n8",
    ]);
    let preview = rack.cli(&["render", &name]);
    assert!(
        preview.contains(&format!("d-i mirror/http/directory string /os/{mirror_id}")),
        "the mirror is the install source:\n{preview}"
    );

    let powered_on = Instant::now();
    rack.lab.start_machine(0).unwrap();
    wait_until(
        rack,
        &name,
        "the installer's \"installed\"",
        INSTALL_TIMEOUT,
        |t, _| t.contains("finished on"),
    )
    .await;
    let installed = powered_on.elapsed();
    let marker = format!("rackboot: {HOSTNAME} reported its first boot");
    wait_until(
        rack,
        &name,
        "the first-boot report",
        FIRST_BOOT_TIMEOUT,
        |t, s| t.contains("install_completed") && s.contains(&marker),
    )
    .await;
    let running = powered_on.elapsed() - installed;
    let installs = rack.cli(&["installs", "--machine", &name]);
    assert!(installs.contains("completed"), "{installs}");
    let timeline = rack.cli(&["timeline", &name]);
    assert!(timeline.contains("machine_booted"), "{timeline}");

    // The installed system, over SSH from the bridge.
    let ip = leased_ip(rack, &mac);
    let mut answer = Err(String::new());
    for _ in 0..30 {
        answer = ssh(
            rack,
            &key,
            &ip,
            "hostname; getent shadow root | cut -d: -f2; systemctl is-enabled rackboot-firstboot.service 2>&1; true",
        );
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let answer = answer.unwrap_or_else(|e| panic!("ssh root@{ip}: {e}"));
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(lines.first().copied(), Some(HOSTNAME), "{answer}");
    assert_eq!(lines.get(1).copied(), Some(hash.as_str()), "{answer}");
    // The first-boot unit removed itself.
    assert!(
        lines.get(2).is_some_and(|l| !l.starts_with("enabled")),
        "{answer}"
    );

    // A further network boot gets the local disk, not the installer.
    let served_before = rack.cli(&["timeline", &name]).matches("local_disk").count();
    let logins = serial(rack).matches(&format!("{HOSTNAME} login:")).count();
    rack.lab.stop_machine(0).unwrap();
    rack.lab.start_machine(0).unwrap();
    wait_until(
        rack,
        &name,
        "the next boot from disk",
        FIRST_BOOT_TIMEOUT,
        |t, s| {
            t.matches("local_disk").count() > served_before
                && s.matches(&format!("{HOSTNAME} login:")).count() > logins
        },
    )
    .await;
    let installs = rack.cli(&["installs", "--machine", &name]);
    assert!(
        !installs.contains("pending") && !installs.contains("installed "),
        "{installs}"
    );
    rack.lab.stop_machine(0).unwrap();
    (installed, running)
}

async fn rack_with_mirror(complete: bool, prepare: impl FnOnce(&[PathBuf])) -> (Rack, String) {
    let mirror = mirror(complete);
    let rack = Rack::start(
        vec![
            MachineSpec::bios()
                .with_memory(1536)
                .with_disks(2, DISK_MIB),
        ],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    let config = rack.lab.machine(0).config().clone();
    let disks: Vec<PathBuf> = (0..2).map(|i| config.disk_path(i)).collect();
    prepare(&disks);
    let started = Instant::now();
    let imported = rack.cli(&["os", "import", mirror.to_str().unwrap()]);
    println!(
        "BENCH mirror import: {:.1} s ({imported})",
        started.elapsed().as_secs_f64()
    );
    let id = imported
        .split_whitespace()
        .nth(1)
        .expect("imported ID ...")
        .to_string();
    assert!(id.ends_with("-mirror"), "{imported}");
    (rack, id)
}

/// The part that needs no complete mirror: the imported mirror is the
/// installer's mirror. d-i checks that it carries the architecture, fetches
/// the suite's Release and Release.gpg from it, checks Debian's signature
/// with its own keyring, fetches the udeb indexes the Release vouches for
/// (only after the signature holds), and asks the mirror's pool for udebs,
/// all with no kernel argument but the console. On a mirror the archive did
/// not fully serve, the first missing udeb is named.
#[tokio::test]
#[ignore = "long (the mirror is built, 300 MiB): scripts/test-long runs it"]
async fn the_installer_takes_the_imported_mirror_as_its_mirror() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let (mut rack, id) = rack_with_mirror(false, |_| {}).await;
    let name = rack.lab.machine(0).name().to_string();
    let mac = rack.lab.machine(0).mac();
    rack.cli(&["machine", "add", &name, "--mac", &mac]);
    let hash = rackboot_install::hash_root_password(PASSWORD).unwrap();
    rack.cli(&[
        "install",
        &name,
        "--os",
        &id,
        "--set",
        &format!("root_password_hash={hash}"),
        "--kernel-arg",
        "console=ttyS0,115200n8",
    ]);
    let powered_on = Instant::now();
    rack.lab.start_machine(0).unwrap();
    let index = format!("{id}/dists/bookworm/main/debian-installer/binary-amd64/Packages");
    let served_udebs = |t: &str| {
        t.lines()
            .filter(|l| l.contains("asset_served") && l.contains(".udeb"))
            .count()
    };
    let missing_udeb = |log: &str| {
        log.lines()
            .filter(|l| l.contains("not in the OS catalog") && l.contains(".udeb"))
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("path=")))
            .map(|w| w.trim_start_matches("path=").to_string())
            .next()
    };
    wait_until(
        &rack,
        &name,
        "udebs asked of the mirror",
        Duration::from_secs(20 * 60),
        |t, _| {
            t.contains(&index)
                && (served_udebs(t) > 0 || missing_udeb(&rack.server_log()).is_some())
        },
    )
    .await;
    let timeline = rack.cli(&["timeline", &name]);
    for file in [
        "dists/bookworm/Release",
        "dists/bookworm/Release.gpg",
        "dists/bookworm/main/binary-amd64/Release",
        "dists/bookworm/main/debian-installer/binary-amd64/Packages",
    ] {
        assert!(
            timeline.contains(&format!("{id}/{file}")),
            "{file} not served from the mirror:\n{timeline}"
        );
    }
    println!(
        "BENCH power-on to the installer asking the mirror for udebs: {:.0} s ({} served; first missing: {})",
        powered_on.elapsed().as_secs_f64(),
        served_udebs(&timeline),
        missing_udeb(&rack.server_log()).unwrap_or_else(|| "none".into())
    );
    rack.lab.stop_machine(0).unwrap();
}

#[tokio::test]
#[ignore = "long (a whole install under TCG): scripts/test-long runs it"]
async fn debian_12_installs_offline_from_the_local_mirror_and_boots_its_disk() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let (mut rack, id) = rack_with_mirror(true, |_| {}).await;
    let (installed, running) = install_and_check(&mut rack, &id).await;
    println!(
        "BENCH blank disk: power-on to installed {:.0} s, installed to running (first-boot report) {:.0} s",
        installed.as_secs_f64(),
        running.as_secs_f64()
    );
}

#[tokio::test]
#[ignore = "long (a whole install under TCG): scripts/test-long runs it"]
async fn an_old_lvm_on_md_layout_is_installed_over() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let (mut rack, id) = rack_with_mirror(true, |disks| {
        for d in disks {
            std::fs::File::create(d)
                .unwrap()
                .set_len(DISK_MIB << 20)
                .unwrap();
        }
        let work = disks[0].parent().unwrap();
        let out = common::diskvm::run_disk_script(
            work,
            &[&disks[0], &disks[1]],
            r#"set -e
for d in /dev/vda /dev/vdb; do
	printf 'label: gpt\n,2G,A19D880F-05FC-4D3B-A006-743F0F84911E\n,,\n' | sfdisk --quiet $d
done
mdadm --create /dev/md/old --run --level=1 --raid-devices=2 --metadata=1.2 /dev/vda1 /dev/vdb1
pvcreate -q /dev/md/old
vgcreate -q oldvg /dev/md/old
lvcreate -q -Zn -L 512M -n root oldvg
mkfs.ext4 -q /dev/oldvg/root
mkswap /dev/vda2 >/dev/null
echo "old layout: $(grep ^md /proc/mdstat) / $(dmsetup ls | tr '\n' ' ')"
"#,
            Duration::from_secs(600),
        );
        assert!(
            out.contains("old layout: md") && out.contains("oldvg-root"),
            "{out}"
        );
    })
    .await;
    let (installed, running) = install_and_check(&mut rack, &id).await;
    println!(
        "BENCH old LVM-on-md disks: power-on to installed {:.0} s, installed to running {:.0} s",
        installed.as_secs_f64(),
        running.as_secs_f64()
    );
}
