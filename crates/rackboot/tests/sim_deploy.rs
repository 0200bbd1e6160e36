//! The in-band deploy path without QEMU: a real `rackboot serve` on loopback,
//! the real `rackboot-agent` in simulation mode (its disks are files), the
//! real image catalog. The test plays the machine's firmware (fetches the boot
//! script, starts the agent with the token it carries) and its installed OS
//! (calls the first-boot URL cloud-init's seed gives it). Nothing on the
//! server side is simulated.

mod sim;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sim::{MAC, Server, agent_token, start_agent, wait_for, write_raw_image};

#[test]
fn a_simulated_machine_is_deployed_and_undeployed() {
    let server = Server::start("");
    let work = server.state.parent().unwrap().to_path_buf();
    // A RAM-disk must exist for the boot script to offer it; its files are
    // only served, never run, here.
    let ramdisk = server.state.join("ramdisk");
    std::fs::create_dir_all(&ramdisk).unwrap();
    std::fs::write(ramdisk.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(ramdisk.join("initramfs.img"), b"initrd").unwrap();

    let raw = work.join("testos.raw");
    let data = write_raw_image(&raw);
    let out = server.ok(&[
        "image",
        "import",
        raw.to_str().unwrap(),
        "--name",
        "testos",
        "--os-family",
        "debian",
        "--cloud-init",
    ]);
    assert!(out.contains("image testos imported"), "{out}");

    server.ok(&["machine", "add", "sim1", "--mac", MAC]);
    let vars = work.join("sim1.json");
    std::fs::write(
        &vars,
        json!({
            "hostname": "sim1",
            "nics": [{"mac": MAC, "name": "eth0",
                "ipv4": {"mode": "static", "address": "192.0.2.50", "prefix": 24}}],
            "disk": {"rule": "smallest"},
        })
        .to_string(),
    )
    .unwrap();
    let key = work.join("key.pub");
    std::fs::write(&key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkgzSpk7tYX8cR2r26NtsXwhWzA0MH0lqEr2lyQ9rB8 op@desk\n").unwrap();
    let out = server.ok(&[
        "deploy",
        "sim1",
        "--image",
        "testos",
        "--vars",
        vars.to_str().unwrap(),
        "--ssh-key",
        key.to_str().unwrap(),
        "--no-wait",
    ]);
    assert!(out.contains("queued"), "{out}");
    assert!(
        out.contains("disk"),
        "install-only keys are named as ignored: {out}"
    );

    // The machine powers on (by hand: no BMC), boots the RAM-disk, the agent runs.
    let agent_dir = work.join("agent");
    std::fs::create_dir_all(agent_dir.join("disks")).unwrap();
    let disk = agent_dir.join("disks/vda");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // Old contents the metadata erase must remove.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all(b"\x55\xaa old partition table and file system")
        .unwrap();
    let token = agent_token(&server);
    let mut agent = start_agent(&server, &token, &agent_dir);

    // The agent reboots into the installed system (exit 10 in simulation).
    let status = wait_for("the agent's reboot", Duration::from_secs(120), || {
        agent.try_wait().unwrap()
    });
    assert_eq!(
        status.code(),
        Some(10),
        "agent log:\n{}\nserver log:\n{}",
        std::fs::read_to_string(agent_dir.join("agent.log")).unwrap_or_default(),
        server.log()
    );
    let written = std::fs::read(&disk).unwrap();
    assert_eq!(
        &written[..data.len()],
        &data[..],
        "the image is on the disk"
    );
    assert!(
        written[data.len()..].iter().all(|b| *b == 0),
        "the rest reads zero"
    );
    let interfaces =
        std::fs::read_to_string(agent_dir.join("root/etc/network/interfaces")).unwrap();
    assert!(interfaces.contains("192.0.2.50"), "{interfaces}");
    let user_data = std::fs::read_to_string(agent_dir.join("seed/user-data")).unwrap();
    assert!(user_data.contains("ssh-ed25519"), "{user_data}");

    // The installed system calls home (cloud-init's phone_home).
    let url = user_data
        .split_whitespace()
        .find(|w| w.contains("/booted/"))
        .map(|w| w.trim_matches(|c| c == '"' || c == '\'' || c == ','))
        .expect("phone_home URL in user-data")
        .to_string();
    let out = Command::new("curl")
        .args(["-sS", "-f", "-X", "POST", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let machine = wait_for("the machine to be active", Duration::from_secs(30), || {
        let m = server.api("/machines/sim1");
        (m["state"] == "active").then_some(m)
    });
    assert_eq!(machine["intent"]["kind"], "local_disk");
    assert_eq!(machine["facts"]["dmi"]["serial"], "SIM-0001");
    let wf = server.api("/workflows?machine=sim1&limit=1");
    let steps: Vec<(String, String)> = wf[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("boot-agent", "succeeded"),
        ("inspect", "succeeded"),
        ("erase", "succeeded"),
        ("build-raid", "skipped"),
        ("write-image", "succeeded"),
        ("configure", "succeeded"),
        ("boot-from-disk", "succeeded"),
        ("reboot", "succeeded"),
        ("verify-booted", "succeeded"),
    ];
    assert_eq!(
        steps,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "{wf:#}"
    );
    // The workflow's end is stored with the machine's state; its events
    // (and the agent token's revocation) follow: wait for them.
    let kinds = [
        "workflow_queued",
        "step_started",
        "agent_token_issued",
        "agent_hello",
        "facts_updated",
        "step_succeeded",
        "machine_booted",
        "workflow_succeeded",
        "machine_state_changed",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let timeline = server.ok(&["timeline", "sim1"]);
        let missing: Vec<&str> = kinds
            .into_iter()
            .filter(|k| !timeline.contains(k))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} missing from the timeline:\n{timeline}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The token stops working once the deploy is done.
    let status = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/agent/v1/heartbeat", server.url))
        .args([
            "-d",
            "{\"instance\":\"00000000-0000-0000-0000-000000000000\"}",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "401");

    // A deployed image cannot be deleted while... it is not in use any more.
    let (ok, text) = server.cli(&["deploy", "sim1", "--image", "testos", "--no-wait"]);
    assert!(
        !ok && text.contains("active"),
        "an active machine is not deployed again: {text}"
    );

    // Undeploy: the agent boots again and erases the disk.
    server.ok(&["undeploy", "sim1", "--no-wait"]);
    let token = agent_token(&server);
    let mut agent = start_agent(&server, &token, &agent_dir);
    let status = wait_for("the agent's power-off", Duration::from_secs(120), || {
        agent.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(11), "{}", server.log());
    let machine = wait_for(
        "the machine to be available",
        Duration::from_secs(30),
        || {
            let m = server.api("/machines/sim1");
            (m["state"] == "available").then_some(m)
        },
    );
    assert_eq!(machine["state_reason"], Value::Null);
    let disk = std::fs::read(&disk).unwrap();
    assert!(
        disk[..1 << 20].iter().all(|b| *b == 0),
        "the first MiB is erased"
    );
    let transitions = server.api("/machines/sim1/transitions");
    let path: Vec<&str> = transitions
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert_eq!(path, ["deploying", "active", "undeploying", "available"]);
}
