//! Deploys that meet faults, against a real server and the real agent in
//! simulation mode (its disks are files paced at a disk's speed, so a write
//! lasts long enough to be interrupted):
//! - the agent killed (SIGKILL) mid-write: the attempt fails with the reason,
//!   is retried by the restarted agent, and the deploy completes;
//! - rackboot killed (SIGKILL) mid-write and started again: the agent keeps
//!   writing, reports to the restarted server, and the deploy completes;
//! - a corrupted image: the checksum fails every attempt and the machine
//!   never becomes active;
//! - a BMC (OpenIPMI's ipmi_sim) that stops answering: the step fails with a
//!   clear reason and an alert reaches a webhook receiver, signed.

mod sim;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sim::{
    Server, agent_token, call_booted, fake_ramdisk, import_incompressible, latest_workflow,
    sim_machine, start_paced_agent, step, vars_file, wait_for, wait_step_progress,
    wait_workflow_end,
};

/// 48 MiB at 6 MiB/s: an eight-second write, long enough that the test
/// looks at it and kills the agent before it ends on a loaded machine.
const IMAGE_MIB: usize = 48;
const DISK_MIBPS: u64 = 6;

#[test]
fn an_agent_killed_mid_write_is_retried_and_the_deploy_completes() {
    let server = Server::start("");
    fake_ramdisk(&server);
    let data = import_incompressible(&server, "big", IMAGE_MIB);
    let m = sim_machine(&server, "kill-agent", 128, None);
    server.ok(&[
        "deploy",
        &m.name,
        "--image",
        "big",
        "--vars",
        &vars_file(&server, "k1"),
        "--no-wait",
    ]);
    let token = agent_token(&server);
    let mut agent = start_paced_agent(&server, &token, &m, DISK_MIBPS);
    wait_step_progress(&server, &m.name, "write-image");
    // What an operator sees meanwhile: the state, the step, its progress,
    // what it waits for and until when.
    let show = server.ok(&["machine", "show", &m.name]);
    for want in [
        "state:    deploying since",
        "workflow: deploy running",
        "step:     write-image",
        "MiB",
        "waits for: step write-image",
        "  since:  ",
        "  until:  ",
    ] {
        assert!(show.contains(want), "{want:?} missing from:\n{show}");
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    // The RAM-disk's init starts the agent again: a new process, the same boot.
    let mut agent = start_paced_agent(&server, &token, &m, DISK_MIBPS);
    let status = wait_for("the reboot", Duration::from_secs(120), || {
        agent.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(10), "{}", server.log());
    call_booted(&m);
    let wf = wait_workflow_end(&server, &m.name, Duration::from_secs(30));
    assert_eq!(wf["state"], "succeeded", "{wf:#}");
    let write = step(&wf, "write-image");
    assert_eq!(write["attempts"], 2, "{write:#}");
    let timeline = server.ok(&["timeline", &m.name]);
    assert!(
        timeline.contains("the agent restarted") && timeline.contains("while running write-image"),
        "{timeline}"
    );
    let disk = std::fs::read(&m.disk).unwrap();
    assert_eq!(&disk[..data.len()], &data[..]);
    let show = server.ok(&["machine", "show", &m.name]);
    assert!(show.contains("state:    active since"), "{show}");
    assert!(show.contains("workflow: deploy succeeded"), "{show}");
    assert!(show.contains("serial:   SIM-0001"), "{show}");
    assert!(!show.contains("waits for"), "{show}");
    let transitions = server.ok(&["machine", "transitions", &m.name]);
    assert!(
        transitions.contains("deploy of big requested by api")
            && transitions.contains("deploying  active     engine"),
        "{transitions}"
    );
}

#[test]
fn a_server_killed_mid_deploy_resumes_when_started_again() {
    let mut server = Server::start("");
    fake_ramdisk(&server);
    let data = import_incompressible(&server, "big", IMAGE_MIB);
    let m = sim_machine(&server, "kill-server", 128, None);
    server.ok(&[
        "deploy",
        &m.name,
        "--image",
        "big",
        "--vars",
        &vars_file(&server, "k2"),
        "--no-wait",
    ]);
    let token = agent_token(&server);
    let mut agent = start_paced_agent(&server, &token, &m, DISK_MIBPS);
    wait_step_progress(&server, &m.name, "write-image");
    server.kill9();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    let status = wait_for("the reboot", Duration::from_secs(120), || {
        agent.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(10), "{}", server.log());
    call_booted(&m);
    let wf = wait_workflow_end(&server, &m.name, Duration::from_secs(30));
    assert_eq!(wf["state"], "succeeded", "{wf:#}\n{}", server.log());
    assert_eq!(
        step(&wf, "write-image")["attempts"],
        1,
        "the write was not redone"
    );
    assert!(
        server.log().contains("resumed active workflows"),
        "{}",
        server.log()
    );
    let disk = std::fs::read(&m.disk).unwrap();
    assert_eq!(&disk[..data.len()], &data[..]);
    assert_eq!(
        server.api(&format!("/machines/{}", m.name))["state"],
        "active"
    );
}

#[test]
fn a_corrupted_image_fails_its_checksum_and_the_machine_is_never_active() {
    let server = Server::start("");
    fake_ramdisk(&server);
    import_incompressible(&server, "bad", 8);
    // A byte flipped in the middle of the stored frames.
    let stored = server.state.join("images/bad/disk.zst");
    let mut bytes = std::fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&stored, &bytes).unwrap();
    let m = sim_machine(&server, "corrupt", 64, None);
    server.ok(&[
        "deploy",
        &m.name,
        "--image",
        "bad",
        "--vars",
        &vars_file(&server, "c1"),
        "--no-wait",
    ]);
    let token = agent_token(&server);
    let mut agent = start_paced_agent(&server, &token, &m, 0);
    let wf = wait_workflow_end(&server, &m.name, Duration::from_secs(120));
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(wf["state"], "failed", "{wf:#}");
    let write = step(&wf, "write-image");
    assert_eq!(write["state"], "failed");
    assert_eq!(write["attempts"], 3, "retried as transient: {write:#}");
    let error = write["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("checksum") || error.contains("corrupt"),
        "{error}"
    );
    let machine = server.api(&format!("/machines/{}", m.name));
    assert_eq!(machine["state"], "deploy_failed");
    assert!(
        machine["state_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("write-image"),
        "{machine:#}"
    );
    // The failed attempts' agent logs were uploaded.
    let timeline = server.ok(&["timeline", &m.name]);
    assert!(timeline.contains("agent_log"), "{timeline}");
}

/// A chassis program for ipmi_sim that keeps power and boot device in files
/// (there is no VM: the agent is simulated).
const CHASSIS: &str = r#"#!/bin/bash
dir=$(dirname "$0")
op=$1; shift
case "$op" in
get) for p in "$@"; do case "$p" in
        power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)" ;;
        boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo none)" ;;
     esac; done ;;
set) while [ $# -ge 2 ]; do case "$1" in
        power) echo "$2" > "$dir/power" ;;
        boot) echo "$2" > "$dir/boot" ;;
        reset) echo 1 > "$dir/power" ;;
     esac; shift 2; done ;;
esac
exit 0
"#;

/// Receives webhook POSTs on 127.0.0.1; keeps (headers, body) of each.
/// (headers, body) of each request a receiver got.
type Received = Arc<Mutex<Vec<(String, String)>>>;

fn webhook_receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(200) {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut headers = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                headers.push_str(&line);
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            seen.lock()
                .unwrap()
                .push((headers, String::from_utf8_lossy(&body).into_owned()));
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn header<'a>(headers: &'a str, name: &str) -> &'a str {
    headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or("")
}

#[test]
fn a_bmc_that_stops_answering_fails_the_deploy_clearly_and_alerts_a_webhook() {
    if !rackboot_testenv::programs(&["ipmi_sim", "openssl"]) {
        return;
    }
    let server = Server::start("[alerts]\nbackoff_initial_ms = 100\n");
    fake_ramdisk(&server);
    import_incompressible(&server, "big", IMAGE_MIB);
    let (url, received) = webhook_receiver();
    let out = server.ok(&[
        "webhook",
        "add",
        "pager",
        &url,
        "--events",
        "workflow_failed",
    ]);
    let secret = out
        .split_whitespace()
        .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no secret printed: {out}"))
        .to_string();

    // A real BMC emulator on loopback.
    let bmc_dir = server.state.parent().unwrap().join("bmc");
    std::fs::create_dir_all(&bmc_dir).unwrap();
    let chassis = bmc_dir.join("chassis");
    std::fs::write(&chassis, CHASSIS).unwrap();
    std::fs::set_permissions(
        &chassis,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mut config = rackboot_lab::IpmiSimConfig::new("sim", &bmc_dir, [127, 0, 0, 1].into(), port);
    config.chassis_control = Some(chassis);
    let bmc = rackboot_lab::IpmiSim::start(config, None).unwrap();
    let bmc_url = bmc.url();
    let m = sim_machine(&server, "bmc-dies", 128, Some(&bmc_url));

    server.ok(&[
        "deploy",
        &m.name,
        "--image",
        "big",
        "--vars",
        &vars_file(&server, "b1"),
        "--no-wait",
    ]);
    let token = agent_token(&server);
    let mut agent = start_paced_agent(&server, &token, &m, DISK_MIBPS);
    wait_step_progress(&server, &m.name, "write-image");
    // The BMC dies while the image is written; the reboot needs it.
    drop(bmc);
    let wf = wait_workflow_end(&server, &m.name, Duration::from_secs(240));
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(wf["state"], "failed", "{wf:#}");
    // The first step after the write that needs the BMC (the boot device,
    // or the reboot) fails after its retries, naming the BMC.
    let failed = wf["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == "failed")
        .unwrap_or_else(|| panic!("no failed step: {wf:#}"));
    assert!(
        matches!(failed["name"].as_str(), Some("boot-from-disk" | "reboot")),
        "{failed:#}"
    );
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("BMC"),
        "the reason names the BMC: {failed:#}"
    );
    assert_eq!(
        failed["attempts"], failed["retry"]["max_attempts"],
        "{failed:#}"
    );
    let machine = server.api(&format!("/machines/{}", m.name));
    assert_eq!(machine["state"], "deploy_failed");
    assert!(
        machine["state_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("BMC"),
        "{machine:#}"
    );

    let (headers, body) = wait_for("the alert", Duration::from_secs(30), || {
        received.lock().unwrap().first().cloned()
    });
    assert_eq!(
        header(&headers, "x-rackboot-event"),
        "workflow_failed",
        "{headers}"
    );
    let alert: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(alert["kind"], "workflow_failed");
    assert!(
        alert["message"]
            .as_str()
            .unwrap_or_default()
            .contains("BMC"),
        "{alert:#}"
    );
    // Signed over "<timestamp>.<body>" with the webhook's secret (checked by openssl).
    let ts = header(&headers, "x-rackboot-timestamp");
    let mut openssl = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", &secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{ts}.{body}").as_bytes())
        .unwrap();
    let out = openssl.wait_with_output().unwrap();
    let digest = String::from_utf8_lossy(&out.stdout)
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(
        header(&headers, "x-rackboot-signature"),
        format!("sha256={digest}")
    );
    // The delivery is marked once the receiver's reply is read (after the
    // receiver recorded the request).
    wait_for("the delivery marked", Duration::from_secs(30), || {
        let deliveries = server.ok(&["webhook", "deliveries", "pager"]);
        deliveries.contains("delivered").then_some(())
    });
    let _ = latest_workflow(&server, &m.name);
}
