//! The agent loop against a fake server in this process: registration,
//! commands, progress, results retried through 500s, dropped on 409, a
//! cancel stopping a running write, and an accepted reboot.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Reply, TestServer, build_image, range_reply, sample_raw};
use rackboot_agent::agent::{Agent, Exit, Timing};
use rackboot_agent::client::Client;
use rackboot_agent::context::{Env, SimConfig};
use rackboot_agent::steps::power::PowerAction;
use rackboot_agent_proto::{Action, Command, DiskTarget, WriteImageAction};
use serde_json::{Value, json};

const TOKEN: &str = "0123456789abcdef0123";
const MAC: &str = "52:54:00:12:34:56";

#[derive(Default)]
struct Script {
    commands: VecDeque<Command>,
    /// Statuses for successive result posts (then 200).
    result_statuses: VecDeque<u16>,
    hello_statuses: VecDeque<u16>,
    /// Cancel the attempt in heartbeats once progress was posted for it.
    cancel_on_progress: bool,
    cancel: Vec<uuid::Uuid>,
}

struct Fake {
    server: TestServer,
    script: Arc<Mutex<Script>>,
}

fn fake(script: Script, image: Option<(Value, Vec<u8>)>) -> Fake {
    let script = Arc::new(Mutex::new(script));
    let s = script.clone();
    let server = TestServer::start(move |req| {
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        let mut s = s.lock().unwrap();
        let path = req.path.as_str();
        if path == "/agent/v1/hello" {
            let status = s.hello_statuses.pop_front().unwrap_or(200);
            if status != 200 {
                return Reply::json(
                    status,
                    &json!({"error": "token not valid for this machine"}),
                );
            }
            return Reply::json(
                200,
                &json!({"machine_id": uuid::Uuid::nil(), "machine_name": "m1", "heartbeat_secs": 1}),
            );
        }
        if path == "/agent/v1/heartbeat" {
            let hb: Value = serde_json::from_slice(&req.body).unwrap();
            let mut reply = json!({"cancel": s.cancel});
            if hb["running"].is_null()
                && let Some(cmd) = s.commands.pop_front()
            {
                reply["command"] = serde_json::to_value(cmd).unwrap();
            }
            return Reply::json(200, &reply);
        }
        if path.ends_with("/progress") {
            if s.cancel_on_progress {
                let id: uuid::Uuid = path.split('/').nth(4).unwrap().parse().unwrap();
                s.cancel.push(id);
            }
            return Reply::json(200, &json!({}));
        }
        if path.ends_with("/result") {
            let status = s.result_statuses.pop_front().unwrap_or(200);
            return Reply::json(status, &json!({"error": "status from the script"}));
        }
        if path.starts_with("/agent/v1/log") {
            return Reply::bytes(204, vec![]);
        }
        if let Some((manifest, data)) = &image {
            if path.ends_with("manifest.json") {
                return Reply::json(200, manifest);
            }
            if path.ends_with("disk.zst") {
                let mut r = range_reply(req, data);
                // ~3 MiB at 16 KiB per 50 ms: ~10 s for the whole image. The
                // cancel comes a heartbeat after the first progress (~3 s), so it
                // lands mid-write even on a loaded machine.
                r.trickle = Some((16 * 1024, Duration::from_millis(50)));
                return r;
            }
        }
        Reply::bytes(404, vec![])
    });
    Fake { server, script }
}

fn sim_dir(disk_size: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("disks")).unwrap();
    let f = std::fs::File::create(dir.path().join("disks/vda")).unwrap();
    f.set_len(disk_size).unwrap();
    dir
}

fn agent(fake: &Fake, dir: &tempfile::TempDir) -> Agent {
    let client = Client::new(&fake.server.url(""), TOKEN).unwrap();
    let env = Env::simulated(SimConfig {
        dir: dir.path().into(),
        mac: MAC.into(),
        serial: Some("SIM-1".into()),
    });
    let mut a = Agent::new(client, env);
    a.timing = Timing {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        auth_retry: Duration::from_millis(100),
        progress_every: Duration::from_millis(100),
    };
    a.tuning.resume_backoff = Duration::from_millis(20);
    a
}

fn command(action: Action) -> Command {
    Command {
        attempt: uuid::Uuid::new_v4(),
        step: action.kind().replace('_', "-"),
        timeout_secs: 60,
        action,
    }
}

/// Runs the agent on a thread until `done` holds (or 20 s pass), then stops it.
fn run_until(agent: Agent, done: impl Fn() -> bool) -> Exit {
    let stop = agent.stop_flag();
    let handle = std::thread::spawn(move || agent.run());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() && !handle.is_finished() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap()
}

fn bodies(fake: &Fake, suffix: &str) -> Vec<Value> {
    fake.server
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.ends_with(suffix))
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

#[test]
fn registers_inspects_and_retries_the_result_through_500s() {
    let cmd = command(Action::Inspect { lldp_wait_secs: 0 });
    let attempt = cmd.attempt;
    let fake = fake(
        Script {
            commands: [cmd].into(),
            result_statuses: [500, 503].into(),
            hello_statuses: [401, 502].into(),
            ..Script::default()
        },
        None,
    );
    let dir = sim_dir(1 << 30);
    let exit = run_until(agent(&fake, &dir), || bodies(&fake, "/result").len() >= 3);
    assert_eq!(exit, Exit::Stopped);
    let hellos = bodies(&fake, "/hello");
    assert_eq!(hellos.len(), 3, "401 and 502 are retried");
    assert_eq!(hellos[2]["macs"], json!([MAC]));
    assert_eq!(hellos[2]["running"], Value::Null);
    assert_eq!(hellos[2]["protocol"], 1);
    let results = bodies(&fake, "/result");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], results[2]);
    let r = &results[2];
    assert_eq!(r["outcome"], "succeeded");
    assert_eq!(r["output"]["kind"], "facts");
    assert_eq!(r["output"]["dmi"]["serial"], "SIM-1");
    assert_eq!(r["output"]["nics"][0]["mac"], MAC);
    assert_eq!(r["output"]["disks"][0]["size_bytes"], 1u64 << 30);
    let paths: Vec<String> = fake
        .server
        .requests_to("/agent/v1/attempts")
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(paths.iter().all(|p| p.contains(&attempt.to_string())));
    drop(fake.script);
}

#[test]
fn a_409_drops_the_result_and_the_log_is_uploaded() {
    // A disk that does not exist: the step fails at once.
    let action = WriteImageAction {
        image: "none".into(),
        manifest_url: "http://127.0.0.1:1/m".into(),
        data_url: "http://127.0.0.1:1/d".into(),
        raw_size: 1,
        sha256: "0".repeat(64),
        manifest_sha256: None,
        target: DiskTarget {
            path: "/dev/vdz".into(),
            size_bytes: None,
            serial: None,
        },
        device_reads_zeros: false,
    };
    let cmd = command(Action::WriteImage(action));
    let attempt = cmd.attempt;
    let fake = fake(
        Script {
            commands: [cmd].into(),
            result_statuses: [409].into(),
            ..Script::default()
        },
        None,
    );
    let dir = sim_dir(1 << 20);
    let heartbeats_after = |f: &Fake| {
        let reqs = f.server.requests.lock().unwrap();
        let at = reqs.iter().position(|r| r.path.ends_with("/result"));
        at.map_or(0, |i| {
            reqs[i..]
                .iter()
                .filter(|r| r.path.ends_with("/heartbeat"))
                .count()
        })
    };
    run_until(agent(&fake, &dir), || heartbeats_after(&fake) >= 2);
    let results = bodies(&fake, "/result");
    assert_eq!(results.len(), 1, "a 409 is not retried");
    assert_eq!(results[0]["outcome"], "failed");
    assert_eq!(results[0]["code"], "disk_not_found");
    assert_eq!(results[0]["transient"], false);
    let logs = fake.server.requests_to("/agent/v1/log");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].path, format!("/agent/v1/log?attempt={attempt}"));
    let log = String::from_utf8_lossy(&logs[0].body);
    assert!(log.contains("disk_not_found"), "{log}");
}

#[test]
fn a_cancel_stops_a_running_write() {
    let raw = sample_raw();
    let (manifest, data) = build_image(&raw);
    let disk_size = 8u64 << 20;
    let dir = sim_dir(disk_size);
    // The image is served by the fake server itself (same address as the token's).
    let manifest_json = serde_json::to_value(&manifest).unwrap();
    let fake = fake(
        Script {
            cancel_on_progress: true,
            ..Script::default()
        },
        Some((manifest_json, data)),
    );
    let cmd = command(Action::WriteImage(WriteImageAction {
        image: "sample".into(),
        manifest_url: fake.server.url("/images/sample/manifest.json"),
        data_url: fake.server.url("/images/sample/disk.zst"),
        raw_size: manifest.raw_size,
        sha256: manifest.sha256.clone(),
        manifest_sha256: None,
        target: DiskTarget {
            path: "/dev/vda".into(),
            size_bytes: Some(disk_size),
            serial: None,
        },
        device_reads_zeros: false,
    }));
    fake.script.lock().unwrap().commands.push_back(cmd);
    let started = Instant::now();
    run_until(agent(&fake, &dir), || !bodies(&fake, "/result").is_empty());
    let results = bodies(&fake, "/result");
    assert_eq!(results[0]["outcome"], "failed");
    assert_eq!(results[0]["code"], "cancelled");
    let progress = bodies(&fake, "/progress");
    assert!(!progress.is_empty());
    assert!(progress[0]["done"].as_u64().unwrap() < manifest.raw_size);
    assert_eq!(progress[0]["total"], manifest.raw_size);
    // Heartbeats carried the running attempt while it ran.
    let running: Vec<Value> = bodies(&fake, "/heartbeat")
        .into_iter()
        .filter(|h| !h["running"].is_null())
        .collect();
    assert!(!running.is_empty());
    // The image was not written to the end.
    let written = std::fs::read(dir.path().join("disks/vda")).unwrap();
    assert_ne!(&written[..raw.len()], &raw[..]);
    // Cancelled, not run to its end (which the image's size would take).
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // The image's data URL got the token: it is on the agent's server.
    let data_reqs = fake.server.requests_to("/images/sample/disk.zst");
    assert_eq!(
        data_reqs[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

#[test]
fn an_accepted_reboot_ends_the_loop() {
    let cmd = command(Action::Reboot);
    let fake = fake(
        Script {
            commands: [cmd].into(),
            ..Script::default()
        },
        None,
    );
    let dir = sim_dir(1 << 20);
    let exit = run_until(agent(&fake, &dir), || false);
    assert_eq!(exit, Exit::Power(PowerAction::Reboot));
    let results = bodies(&fake, "/result");
    assert_eq!(
        results,
        [json!({"outcome": "succeeded", "output": {"kind": "accepted"}})]
    );
}
