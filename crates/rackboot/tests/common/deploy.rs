//! What deploy tests need besides the rack: the static agent, a RAM-disk built
//! from it (once per target directory: building takes a minute), the lab's
//! bootable test OS image, and waits on workflows through the API.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Rack;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static agent from scripts/build-agent (built here when missing).
pub fn static_agent() -> PathBuf {
    let path = workspace().join("target/x86_64-unknown-linux-gnu/release/rackboot-agent");
    if !path.is_file() {
        let status = Command::new(workspace().join("scripts/build-agent"))
            .status()
            .expect("run scripts/build-agent");
        assert!(status.success(), "scripts/build-agent failed");
    }
    path
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// A RAM-disk with the static agent, built by `rackboot ramdisk build` into
/// the target directory and reused while it is newer than the agent.
pub fn test_ramdisk() -> PathBuf {
    let agent = static_agent();
    let dir = workspace().join("target/test-ramdisk");
    let initrd = dir.join("initramfs.img");
    let fresh = matches!((modified(&initrd), modified(&agent)), (Some(i), Some(a)) if i >= a);
    if !fresh {
        let out = Command::new(env!("CARGO_BIN_EXE_rackboot"))
            .args(["ramdisk", "build", "--agent"])
            .arg(&agent)
            .arg("--out")
            .arg(&dir)
            .output()
            .expect("run rackboot ramdisk build");
        assert!(
            out.status.success(),
            "rackboot ramdisk build: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// Puts the test RAM-disk where the rack's server serves it from.
pub fn install_ramdisk(rack: &Rack) {
    let from = test_ramdisk();
    let to = rack.state_dir.join("ramdisk");
    std::fs::create_dir_all(&to).unwrap();
    for f in ["vmlinuz", "initramfs.img", "manifest.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// Builds the lab's test OS image and imports it into the rack's catalog as
/// `testos` (an ifupdown system: target family debian).
pub fn import_test_os(rack: &Rack) {
    let image = rack.dir().join("testos.raw");
    rackboot_lab::test_os::build_image(&rackboot_lab::test_os::TestOsOptions::new(&image))
        .expect("build the test OS image");
    let out = rack.cli(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "--name",
        "testos",
        "--os-family",
        "debian",
    ]);
    assert!(out.contains("imported"), "{out}");
}

/// A JSON API GET through the rack's network namespace.
pub fn api(rack: &Rack, path: &str) -> Value {
    let token = std::fs::read_to_string(rack.state_dir.join("admin-token")).unwrap();
    let out = rack
        .lab
        .netns()
        .command("curl")
        .args(["-sS", "--max-time", "10", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg(format!("{}/api/v1{path}", rack.api))
        .output()
        .expect("run curl");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The last `n` characters of a machine's serial log.
pub fn serial_tail(rack: &Rack, index: usize, n: usize) -> String {
    let log =
        std::fs::read_to_string(rack.lab.machine(index).config().serial_log()).unwrap_or_default();
    let log = rackboot_lab::strip_ansi(&log);
    let start = log.len().saturating_sub(n);
    let start = (start..=log.len())
        .find(|i| log.is_char_boundary(*i))
        .unwrap_or(0);
    log[start..].to_string()
}

/// Waits until the machine's newest workflow has ended; panics with what it
/// was doing, the console and the server log when it takes longer than
/// `timeout`. Returns the workflow.
pub async fn wait_workflow(rack: &Rack, machine: &str, index: usize, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    loop {
        let list = api(rack, &format!("/workflows?machine={machine}&limit=1"));
        if let Some(wf) = list.get(0) {
            last = wf.clone();
            if !matches!(wf["state"].as_str(), Some("queued" | "running")) {
                return wf.clone();
            }
        }
        if Instant::now() > deadline {
            panic!(
                "workflow on {machine} still not done after {timeout:?}:\n{}\n\nconsole:\n{}\n\nserver log:\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default(),
                serial_tail(rack, index, 6000),
                rack.server_log()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The names and states of a workflow's steps.
pub fn step_states(wf: &Value) -> Vec<(String, String)> {
    wf["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or("?").to_string(),
                        s["state"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
