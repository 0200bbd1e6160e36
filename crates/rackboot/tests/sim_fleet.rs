//! A small fleet deploying at once against one real `rackboot serve`:
//! `fleet-sim` (crate rackboot-bench) enrolls 50 machines without BMCs,
//! requests a deploy of each through the API with the engine's
//! `max_running` at 10, and plays every machine's firmware (the real agent
//! in simulation mode) and installed OS. Every workflow must succeed with
//! no lost step, and never more than 10 run at once. scripts/test-long runs
//! the same at 1,000 machines.

mod sim;

use std::process::Command;

use sim::{agent_binary, fleet_sim_binary, key_values, rackboot};

#[test]
fn fifty_machines_deploy_with_at_most_ten_running() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(fleet_sim_binary())
        .args(["--rackboot", rackboot(), "--agent"])
        .arg(agent_binary())
        .args(["--machines", "50", "--max-running", "10"])
        .args([
            "--heartbeat-secs",
            "1",
            "--image-mib",
            "4",
            "--samplers",
            "1",
        ])
        .args(["--timeout-secs", "300", "--check", "--work"])
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kv = key_values(&stdout);
    let get = |k: &str| kv.get(k).map(String::as_str).unwrap_or("?");
    assert!(
        out.status.success(),
        "fleet-sim failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(get("workflows_succeeded"), "50", "{stdout}\n{stderr}");
    assert_eq!(get("lost_steps"), "0", "{stdout}");
    assert_eq!(get("machine_done"), "50", "{stdout}");
    assert_eq!(get("disks_ok"), "50", "{stdout}");
    assert_eq!(get("machines_active"), "50", "{stdout}");
    assert_eq!(get("events_dropped"), "0", "{stdout}");
    // The queue held the other 40: exactly 10 ran at once, never more.
    assert_eq!(get("peak_running"), "10", "{stdout}");
    assert_eq!(get("problems"), "0", "{stdout}\n{stderr}");
}
