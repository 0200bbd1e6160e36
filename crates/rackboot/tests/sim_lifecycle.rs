//! Lifecycle controls against the real server and the real agent in
//! simulation mode: maintenance pauses a deploy and refuses new work, rescue
//! boots the agent without touching the disks, and an operator's own
//! workflow file is checked with its line and then runs.

mod sim;

use std::time::Duration;

use sim::{
    Server, agent_token, call_booted, fake_ramdisk, import_incompressible, latest_workflow,
    sim_machine, start_paced_agent, step, vars_file, wait_for, wait_step_progress,
    wait_workflow_end,
};

#[test]
fn maintenance_holds_a_deploy_between_steps_and_refuses_new_work() {
    let server = Server::start("");
    fake_ramdisk(&server);
    let data = import_incompressible(&server, "img", 24);
    let m = sim_machine(&server, "maint", 64, None);
    server.ok(&[
        "deploy",
        &m.name,
        "--image",
        "img",
        "--vars",
        &vars_file(&server, "maint"),
        "--no-wait",
    ]);
    let token = agent_token(&server);
    // 24 MiB at 4 MiB/s: the write runs six seconds, so the flag is set
    // while it runs even on a loaded machine.
    let mut agent = start_paced_agent(&server, &token, &m, 4);
    wait_step_progress(&server, &m.name, "write-image");

    let out = server.ok(&[
        "machine",
        "maintenance",
        &m.name,
        "on",
        "--reason",
        "fan replacement",
    ]);
    assert!(out.contains("in maintenance: fan replacement"), "{out}");
    // No reason, no maintenance: the flag must say why.
    let (ok, out) = server.cli(&["machine", "maintenance", &m.name, "on"]);
    assert!(!ok && out.contains("--reason"), "{out}");

    // The running write finishes; the next step waits for the flag to clear.
    let show = wait_for("the deploy to hold", Duration::from_secs(60), || {
        let show = server.ok(&["machine", "show", &m.name]);
        show.contains("the machine to leave maintenance (fan replacement")
            .then_some(show)
    });
    assert!(
        show.contains("maintenance: fan replacement (by api"),
        "{show}"
    );
    let wf = latest_workflow(&server, &m.name);
    assert_eq!(step(&wf, "write-image")["state"], "succeeded", "{wf:#}");
    assert_eq!(wf["state"], "running", "{wf:#}");
    // It stays held: nothing advances while the flag is set.
    std::thread::sleep(Duration::from_secs(3));
    let held = latest_workflow(&server, &m.name);
    assert_eq!(held["steps"], wf["steps"], "a step advanced in maintenance");

    // New work is refused, naming the flag.
    let (ok, out) = server.cli(&["inspect", &m.name, "--no-wait"]);
    assert!(
        !ok && out.contains("in maintenance (fan replacement"),
        "{out}"
    );

    server.ok(&["machine", "maintenance", &m.name, "off"]);
    let status = wait_for("the reboot", Duration::from_secs(60), || {
        agent.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(10), "{}", server.log());
    call_booted(&m);
    let wf = wait_workflow_end(&server, &m.name, Duration::from_secs(30));
    assert_eq!(wf["state"], "succeeded", "{wf:#}");
    let disk = std::fs::read(&m.disk).unwrap();
    assert_eq!(&disk[..data.len()], &data[..]);
    let transitions = server.ok(&["machine", "transitions", &m.name]);
    assert!(
        transitions.contains("fan replacement") && transitions.contains("active"),
        "{transitions}"
    );
}

#[test]
fn rescue_boots_the_agent_and_leaves_the_disks_alone() {
    let server = Server::start("");
    fake_ramdisk(&server);
    let m = sim_machine(&server, "resc", 16, None);
    // Something on the disk that rescue must not touch.
    let mut before = vec![0u8; 16 << 20];
    for (i, b) in before.iter_mut().enumerate() {
        *b = (i % 253) as u8;
    }
    std::fs::write(&m.disk, &before).unwrap();

    server.ok(&["rescue", &m.name, "--no-wait"]);
    let token = agent_token(&server);
    let mut agent = start_paced_agent(&server, &token, &m, 100);
    let wf = wait_workflow_end(&server, &m.name, Duration::from_secs(60));
    assert_eq!(wf["state"], "succeeded", "{wf:#}");
    let show = server.ok(&["machine", "show", &m.name]);
    assert!(show.contains("state:    rescue"), "{show}");
    // The agent stays up for the operator, and keeps its heartbeat.
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.try_wait().unwrap().is_none(), "the agent left rescue");
    assert_eq!(
        std::fs::read(&m.disk).unwrap(),
        before,
        "rescue touched the disk"
    );

    server.ok(&["unrescue", &m.name, "--no-wait"]);
    let status = wait_for("the agent to reboot", Duration::from_secs(60), || {
        agent.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(10), "{}", server.log());
    let wf = wait_workflow_end(&server, &m.name, Duration::from_secs(30));
    assert_eq!(wf["state"], "succeeded", "{wf:#}");
    let show = server.ok(&["machine", "show", &m.name]);
    assert!(show.contains("state:    enrolled"), "{show}");
    assert_eq!(std::fs::read(&m.disk).unwrap(), before);
}

#[test]
fn an_operator_s_workflow_file_is_checked_with_its_line_then_runs() {
    let server = Server::start("");
    fake_ramdisk(&server);
    let m = sim_machine(&server, "own", 64, None);
    std::fs::write(&m.disk, vec![0xA5u8; 64 << 20]).unwrap();
    let dir = server.state.parent().unwrap();

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"wipe-check\"\nlifecycle = \"none\"\n\n[[step]]\nname = \"boot-agent\"\nuses = \"boot_agent\"\n\n[[step]]\nname = \"wipe\"\nuses = \"erase_everything\"\n",
    )
    .unwrap();
    let (ok, out) = server.cli(&["workflow", "define", bad.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("line 10") && out.contains("erase_everything"),
        "{out}"
    );

    let good = dir.join("wipe-check.toml");
    std::fs::write(
        &good,
        r#"name = "wipe-check"
description = "boot the agent, inspect, erase signatures, power off"
lifecycle = "none"

[[step]]
name = "boot-agent"
uses = "boot_agent"

[[step]]
name = "inspect"
uses = "inspect"

[[step]]
name = "wipe"
uses = "erase"
with = { mode = "metadata" }
retry = { attempts = 2, backoff = "1s" }

[[step]]
name = "off"
uses = "power_off"
"#,
    )
    .unwrap();
    let out = server.ok(&["workflow", "define", good.to_str().unwrap()]);
    assert!(
        out.contains("workflow wipe-check stored (4 steps)"),
        "{out}"
    );
    let defs = server.ok(&["workflow", "definitions"]);
    assert!(
        defs.contains("wipe-check") && defs.contains("deploy"),
        "{defs}"
    );

    server.ok(&["workflow", "run", "wipe-check", &m.name, "--no-wait"]);
    let token = agent_token(&server);
    let mut agent = start_paced_agent(&server, &token, &m, 100);
    let wf = wait_workflow_end(&server, &m.name, Duration::from_secs(60));
    assert_eq!(wf["state"], "succeeded", "{wf:#}");
    for s in ["boot-agent", "inspect", "wipe", "off"] {
        assert_eq!(step(&wf, s)["state"], "succeeded", "{s}: {wf:#}");
    }
    let _ = wait_for("the agent to power off", Duration::from_secs(30), || {
        agent.try_wait().unwrap()
    });
    // A `none` workflow returns the machine to where it was.
    let show = server.ok(&["machine", "show", &m.name]);
    assert!(show.contains("state:    enrolled"), "{show}");
    // Erased metadata: the first and last MiB are zero (GPT copies), the
    // middle untouched.
    let disk = std::fs::read(&m.disk).unwrap();
    assert!(disk[..1 << 20].iter().all(|b| *b == 0));
    assert!(disk[disk.len() - (1 << 20)..].iter().all(|b| *b == 0));
    assert_eq!(disk[32 << 20], 0xA5);
    let timeline = server.ok(&["timeline", &m.name]);
    assert!(timeline.contains("wipe"), "{timeline}");
}
