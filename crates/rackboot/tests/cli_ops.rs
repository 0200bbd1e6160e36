//! The CLI as operators script it, against a real `rackboot serve` on
//! loopback: one server per state directory, quiet broken pipes, exit codes,
//! the newest events and a followed stream that survives a server restart.

mod loopback;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loopback::{Server, add_machines, free_port, rackboot, spawn, write_config};

#[test]
fn a_second_server_on_one_state_directory_refuses_and_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path());
    let port = free_port();
    let config = write_config(dir.path(), &first.state, port);
    let second = Command::new(rackboot())
        .args(["serve", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second server started: {stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.child.id()))
            && stderr.contains(&format!("http 127.0.0.1:{}", first.port)),
        "{stderr}"
    );
    // It bound nothing, and the first still serves.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    first.ok(&["status"]);
    // State is private: the directory 0700, the database and token 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&first.state), 0o700);
    for f in ["rackboot.db", "admin-token", "rackboot.lock", "secret.key"] {
        assert_eq!(mode(&first.state.join(f)), 0o600, "{f}");
    }
    // Its log, written to a pipe: no colour codes, no Rust debug output.
    let mut first = first;
    first.stop();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut first.child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("rackboot serving http=127.0.0.1:"), "{log}");
    assert!(!log.contains('\x1b') && !log.contains("Some("), "{log}");
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_machines(&server, 3, "pipe", 1);
    for args in [
        vec!["machine", "list"],
        vec!["machine", "list", "-o", "json"],
        vec!["events"],
        vec!["status"],
    ] {
        // The reader is gone before the first write, as after `| head -1`:
        // closed before the child starts, so it cannot win the race.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = server
            .command(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} printed: {stderr}");
    }
}

#[test]
fn render_fails_for_a_machine_that_cannot_boot() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_machines(&server, 1, "r", 2);
    // No profile and no selector: it cannot boot.
    let out = server.cli(&["render", "r0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot boot r0"), "{stderr}");
    let out = server.cli(&["render", "r0", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let preview: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(preview["error"].as_str().is_some(), "{preview}");
    // Told to boot its disk, it can.
    server.ok(&["machine", "set-boot", "r0", "local"]);
    assert!(server.ok(&["render", "r0"]).contains("local_disk"));
}

#[test]
fn events_tail_shows_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_machines(&server, 25, "t", 3);
    let event_ids = |args: &[&str]| -> Vec<i64> {
        let events: Vec<serde_json::Value> = serde_json::from_str(&server.ok(args)).unwrap();
        events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
    };
    let all_args = ["events", "--after", "0", "--limit", "1000", "-o", "json"];
    // Events are stored in batches a little after the writes that make
    // them: compare the tail with a log that did not change around it.
    let mut tries = 0;
    let (ids, tail_ids) = loop {
        let before = event_ids(&all_args);
        let tail = event_ids(&["events", "--tail", "3", "-o", "json"]);
        let has_last = server.ok(&["events", "--tail", "1"]).contains("\"t24\"");
        if has_last && event_ids(&all_args) == before {
            break (before, tail);
        }
        tries += 1;
        assert!(tries < 50, "the event log never stopped growing");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(tail_ids, ids[ids.len() - 3..].to_vec());
    // Text: the default is the newest 20, the newest last.
    let text = server.ok(&["events"]);
    assert_eq!(text.lines().count(), 20, "{text}");
    assert!(text.lines().last().unwrap().contains("\"t24\""), "{text}");
    // A machine's newest events.
    let one = server.ok(&["events", "--machine", "t3", "--tail", "5"]);
    assert!(one.contains("\"t3\"") && !one.contains("\"t4\""), "{one}");
}

#[test]
fn events_follow_resumes_across_a_restart_and_fails_loudly_when_the_server_stays_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    add_machines(&server, 2, "before", 4);
    let mut follow = server
        .command(&[
            "events",
            "--follow",
            "--tail",
            "1",
            "-o",
            "json",
            "--reconnect-secs",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).expect("NDJSON line"));
        }
    });
    let wait_for = |name: &str| -> Vec<serde_json::Value> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(e) = rx.recv_timeout(Duration::from_millis(200)) {
                let hit = e["message"].as_str().unwrap_or("").contains(name);
                seen.push(e);
                if hit {
                    return seen;
                }
            }
        }
        panic!("no event about {name}; saw {seen:?}");
    };
    // The backlog: the newest event.
    let mut seen = wait_for("before1");
    add_machines(&server, 1, "live", 5);
    seen.extend(wait_for("live0"));

    server.stop();
    server.child = spawn(&server.config);
    server.wait_up();
    add_machines(&server, 1, "after", 6);
    seen.extend(wait_for("after0"));
    let ids: Vec<i64> = seen.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "events repeated or out of order across the restart: {ids:?}"
    );
    // The restart's own service_started event was not skipped either.
    assert!(
        seen.iter().any(|e| e["kind"] == "service_started"),
        "{seen:?}"
    );

    // Gone for good: the follower says so and fails.
    server.stop();
    let started = Instant::now();
    let out = follow.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not come back within 20 s"), "{stderr}");
    // It waits 20 s for the server (longer than a restart takes on a loaded
    // machine); the bound tells that from waiting forever.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
}

/// A Debian installation tree as the catalog detects it.
fn debian_tree(dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("medium");
    let files: [(&str, &[u8]); 5] = [
        (
            ".disk/info",
            b"Debian GNU/Linux 12.5.0 \"Bookworm\" - Official amd64 NETINST with firmware 20240210-11:27",
        ),
        (".disk/base_installable", b""),
        ("install.amd/vmlinuz", b"kernel"),
        ("install.amd/initrd.gz", b"initrd"),
        (
            "dists/bookworm/Release",
            b"Origin: Debian\nLabel: Debian\nSuite: stable\nVersion: 12.5\nCodename: bookworm\n",
        ),
    ];
    for (path, body) in files {
        let path = tree.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    tree
}

#[test]
fn os_import_refuses_a_state_directory_the_server_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let tree = debian_tree(dir.path());
    let tree = tree.to_str().unwrap();

    // Another directory, not a state directory at all.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let out = server
        .command(&["os", "import", tree])
        .env("RACKBOOT_STATE_DIR", &other)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not a rackboot state directory"),
        "{stderr}"
    );
    assert!(!other.join("os").exists(), "copied anyway");

    // Another directory while talking to the server with its token: the
    // server names the directory it holds.
    let token = std::fs::read_to_string(server.state.join("admin-token")).unwrap();
    let out = server
        .command(&["os", "import", tree])
        .env("RACKBOOT_STATE_DIR", &other)
        .env("RACKBOOT_TOKEN", token.trim())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let held = std::fs::canonicalize(&server.state).unwrap();
    assert!(
        stderr.contains(&format!("holds state directory {}", held.display())),
        "{stderr}"
    );
    assert!(!other.join("os").exists(), "copied anyway");

    // Beside the server's own state directory it works and the server lists it.
    server.ok(&["os", "import", tree]);
    assert!(server.ok(&["os", "list"]).contains("debian-12.5.0-amd64"));
}

#[test]
fn text_reads_as_text_and_json_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // The kernel is not in the asset directory: refused unless forced.
    let out = server.cli(&["profile", "add", "deb", "--kernel", "debian/linux"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("not in the asset directory") && stderr.contains("--force"),
        "{stderr}"
    );
    server.ok(&[
        "profile",
        "add",
        "deb",
        "--kernel",
        "debian/linux",
        "--force",
    ]);
    let shown = server.ok(&["profile", "show", "deb"]);
    assert!(
        shown.contains("kernel:      debian/linux") && !shown.contains('{'),
        "{shown}"
    );
    let status = server.ok(&["status"]);
    assert!(
        status.contains("store:      sqlite") && !status.contains('{'),
        "{status}"
    );
    // A loader the API does not know is refused by the CLI with the choices.
    let out = server.cli(&["profile", "add", "x", "--kernel", "k", "--loader", "foo"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ipxe"));
    // Deletes say what they deleted, in either format.
    let deleted: serde_json::Value =
        serde_json::from_str(&server.ok(&["profile", "delete", "deb", "-o", "json"])).unwrap();
    assert_eq!(
        deleted,
        serde_json::json!({"deleted": "profile", "name": "deb"})
    );
    add_machines(&server, 1, "d", 8);
    assert_eq!(
        server.ok(&["machine", "delete", "d0"]),
        "deleted machine d0\n"
    );
    // A missing BMC is explained in CLI terms.
    add_machines(&server, 1, "p", 9);
    let out = server.cli(&["machine", "power", "p0", "status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("/api/v1"), "{stderr}");
}
