//! The pure half of `deploy-bench` (in-band deploy figures under QEMU): the
//! RAM-disk add-on that times `wget | dd` before the agent starts, its
//! console line, the bench's workflow definition, and small statistics.

use rackboot_lab::CpioEntry;

/// Every console line of the dd add-on starts with this.
pub const DD_PREFIX: &str = "rackboot-bench-dd:";

/// What an operator runs today to put an image on a disk, as the add-on
/// runs it (busybox wget and dd in the RAM-disk; `iflag=fullblock` because a
/// pipe gives short reads, which `oflag=direct` refuses).
pub const DD_COMMAND: &str =
    "wget -q -O - \"$IMAGE_URL\" | dd of=\"$DISK\" bs=4M iflag=fullblock oflag=direct; sync";

/// The same with the image's SHA-256 computed on the way, as the agent
/// verifies it: wget's output goes through `tee` to dd (by a FIFO) and to
/// `sha256sum`.
pub const DD_SHA256_COMMAND: &str = "mkfifo /run/rb-fifo; \
dd if=/run/rb-fifo of=\"$DISK\" bs=4M iflag=fullblock oflag=direct & \
wget -q -O - \"$IMAGE_URL\" | tee /run/rb-fifo | sha256sum; wait; sync";

/// The wrapper installed as /bin/rackboot-agent (the real agent moves to
/// /bin/rackboot-agent.real): on its first start in a boot it writes the
/// image with [`DD_COMMAND`], then with [`DD_SHA256_COMMAND`], timing each
/// with /proc/uptime (busybox `date` has no sub-second format) and printing
/// one [`DD_PREFIX`] line each, then becomes the agent. The RAM-disk's /init
/// has brought the network up by then.
pub fn wrapper_script() -> String {
    let dd_logged = DD_COMMAND.replace("oflag=direct;", "oflag=direct 2>/run/rb-dd.err;");
    let sha_logged = DD_SHA256_COMMAND
        .replace("oflag=direct &", "oflag=direct 2>/run/rb-dd.err &")
        .replace("sha256sum;", "sha256sum >/run/rb-sum;");
    format!(
        r#"#!/bin/sh
# rackboot-bench: time `wget | dd` of the bench image once per boot, then run the agent.
if [ ! -e /run/rackboot-bench-dd ]; then
	: > /run/rackboot-bench-dd
	. /etc/rackboot-bench/params
	for word in $(cat /proc/cmdline); do
		case "$word" in
		rackboot.url=*) SERVER=${{word#rackboot.url=}} ;;
		esac
	done
	IMAGE_URL="$SERVER/assets/$IMAGE_FILE"
	echo "{DD_PREFIX} start $IMAGE_URL onto $DISK"
	t0=$(cut -d' ' -f1 /proc/uptime)
	{dd_logged}
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "{DD_PREFIX} done method=dd image=$IMAGE_FILE t0=$t0 t1=$t1 $(grep 'records out' /run/rb-dd.err)"
	t0=$(cut -d' ' -f1 /proc/uptime)
	{sha_logged}
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "{DD_PREFIX} done method=dd-sha256 image=$IMAGE_FILE t0=$t0 t1=$t1 sha256=$(cut -d' ' -f1 /run/rb-sum) $(grep 'records out' /run/rb-dd.err)"
fi
exec /bin/rackboot-agent.real "$@"
"#
    )
}

/// The cpio archive appended to the built initramfs (the kernel unpacks
/// concatenated archives in order, later files replacing earlier ones).
pub fn addon_entries(agent: Vec<u8>, image_file: &str, disk: &str) -> Vec<CpioEntry> {
    vec![
        CpioEntry::Dir {
            path: "etc/rackboot-bench".into(),
            mode: 0o755,
        },
        CpioEntry::File {
            path: "etc/rackboot-bench/params".into(),
            mode: 0o644,
            data: format!("IMAGE_FILE={image_file}\nDISK={disk}\n").into_bytes(),
        },
        CpioEntry::File {
            path: "bin/rackboot-agent.real".into(),
            mode: 0o755,
            data: agent,
        },
        CpioEntry::File {
            path: "bin/rackboot-agent".into(),
            mode: 0o755,
            data: wrapper_script().into_bytes(),
        },
    ]
}

/// One timed `wget | dd` as the add-on printed it.
#[derive(Debug, Clone, PartialEq)]
pub struct DdRun {
    /// `dd` ([`DD_COMMAND`]) or `dd-sha256` ([`DD_SHA256_COMMAND`]).
    pub method: String,
    pub image: String,
    /// What sha256sum printed (dd-sha256 only).
    pub sha256: Option<String>,
    pub secs: f64,
    /// Whole 4 MiB records written (`N+M records out`: N).
    pub full_records: u64,
    pub partial_records: u64,
}

/// Reads a `done` line of the add-on.
pub fn parse_dd_line(line: &str) -> Option<DdRun> {
    let rest = &line[line.find(DD_PREFIX)? + DD_PREFIX.len()..];
    let rest = rest.trim().strip_prefix("done ")?;
    let (mut image, mut method, mut sha256) = (None, None, None);
    let (mut t0, mut t1) = (None, None);
    for word in rest.split_whitespace() {
        if let Some(v) = word.strip_prefix("image=") {
            image = Some(v.to_string());
        } else if let Some(v) = word.strip_prefix("method=") {
            method = Some(v.to_string());
        } else if let Some(v) = word.strip_prefix("sha256=") {
            sha256 = Some(v.to_string()).filter(|v| !v.is_empty());
        } else if let Some(v) = word.strip_prefix("t0=") {
            t0 = v.parse::<f64>().ok();
        } else if let Some(v) = word.strip_prefix("t1=") {
            t1 = v.parse::<f64>().ok();
        }
    }
    let records = rest
        .split_whitespace()
        .find(|w| w.contains('+') && w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let (full, partial) = records.split_once('+')?;
    Some(DdRun {
        method: method?,
        image: image?,
        sha256,
        secs: t1? - t0?,
        full_records: full.parse().ok()?,
        partial_records: partial.parse().ok()?,
    })
}

/// The bench's own workflow: the deploy's first steps and its write, then off.
pub const BENCH_WORKFLOW: &str = r#"# bench/deploy.sh: boot the agent, inspect, write the image, power off.
name = "bench-write"
description = "Write an image with the agent and power off (bench/deploy.sh)"
lifecycle = "none"

[[step]]
name = "boot-agent"
uses = "boot_agent"

[[step]]
name = "inspect"
uses = "inspect"

[[step]]
name = "write-image"
uses = "write_image"

[[step]]
name = "power-off"
uses = "power_off"
"#;

/// Median and range of some values (None when empty).
pub fn median_range(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

/// Start time of a process in seconds since boot, from `/proc/PID/stat`
/// (field 22, clock ticks).
pub fn proc_start_secs(stat: &str, ticks_per_sec: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some(ticks / ticks_per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dd_lines() {
        let line = "rackboot-bench-dd: done method=dd image=bench-random.raw t0=12.34 t1=20.84 64+0 records out";
        assert_eq!(
            parse_dd_line(line),
            Some(DdRun {
                method: "dd".into(),
                image: "bench-random.raw".into(),
                sha256: None,
                secs: 8.5,
                full_records: 64,
                partial_records: 0,
            })
        );
        let line = "rackboot-bench-dd: done method=dd-sha256 image=x.raw t0=1.00 t1=3.50 sha256=abcd 32+0 records out";
        let run = parse_dd_line(line).unwrap();
        assert_eq!(
            (run.method.as_str(), run.sha256.as_deref(), run.secs),
            ("dd-sha256", Some("abcd"), 2.5)
        );
        assert_eq!(
            parse_dd_line("rackboot-bench-dd: start http://x onto /dev/vda"),
            None
        );
        assert_eq!(
            parse_dd_line("rackboot-bench-dd: done method=dd image=x t0=1 t1=2"),
            None,
            "no records line: dd did not run"
        );
    }

    #[test]
    fn the_wrapper_runs_dd_once_then_the_agent() {
        let s = wrapper_script();
        assert!(
            s.contains("bs=4M iflag=fullblock oflag=direct 2>/run/rb-dd.err; sync"),
            "{s}"
        );
        assert!(
            s.contains("| tee /run/rb-fifo | sha256sum >/run/rb-sum; wait; sync"),
            "{s}"
        );
        assert!(
            s.trim_end()
                .ends_with("exec /bin/rackboot-agent.real \"$@\"")
        );
        assert!(s.contains("SERVER=${word#rackboot.url=}"), "{s}");
        // busybox sh accepts it.
        if std::path::Path::new("/bin/busybox").exists() {
            let out = std::process::Command::new("/bin/busybox")
                .args(["sh", "-n", "-c", &s])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn statistics() {
        assert_eq!(median_range(&[]), None);
        assert_eq!(median_range(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(median_range(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        let stat = "1234 (qemu-system-x86) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 98765 1000 50";
        assert_eq!(proc_start_secs(stat, 100.0), Some(987.65));
    }
}
