//! Access to a running `rackboot serve`: every operation of its OpenAPI
//! document walked with no token, a viewer, an operator and an admin token;
//! the token CLI (create, list, revoke: a revoked token is refused at once);
//! the API on its own TLS listener (self-signed, pinned by the CLI on first
//! use, a new certificate under the same URL refused, boot files still on
//! plain HTTP); and configurations where machines could not reach their
//! boot files refused by `serve` and `check-config` alike.

mod loopback;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use loopback::{Server, free_port, rackboot};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rackboot token create NAME --role ROLE` as the admin: the token.
fn create_token(server: &Server, name: &str, role: &str) -> String {
    let token = server.ok(&["token", "create", name, "--role", role]);
    let token = token.trim().to_string();
    assert!(token.starts_with("rbt_") && token.len() == 68, "{token}");
    token
}

#[tokio::test]
async fn every_operation_of_the_served_document_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let admin = std::fs::read_to_string(server.state.join("admin-token")).unwrap();
    let viewer = create_token(&server, "walk-viewer", "viewer");
    let operator = create_token(&server, "walk-operator", "operator");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let doc: Value = http
        .get(format!("{}/api/openapi.json", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut walked = 0;
    let mut failures = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            // Machine-facing routes (boot files, the agent's) have no bearer
            // scheme and no role.
            if op.get("security").is_none() {
                continue;
            }
            let role = op["x-rackboot-role"].as_str().unwrap_or("missing");
            let rank = ["viewer", "operator", "admin"]
                .iter()
                .position(|r| *r == role)
                .unwrap_or_else(|| panic!("{method} {template}: x-rackboot-role {role}"));
            let url = format!(
                "{}{}",
                server.url(),
                template
                    .replace("{ref}", "no-such-machine")
                    .replace("{id}", "00000000-0000-0000-0000-000000000000")
                    .replace("{name}", "no-such-name")
            );
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            // Admin last: its requests reach the handlers (nothing by these names exists).
            for (who, token, caller_rank) in [
                ("no token", None, None),
                ("viewer", Some(viewer.as_str()), Some(0)),
                ("operator", Some(operator.as_str()), Some(1)),
                ("admin", Some(admin.trim()), Some(2)),
            ] {
                let mut req = http.request(method.clone(), &url);
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                // Only the status and headers: a 200 of the event stream never ends.
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let body = if status == 401 || status == 403 {
                    resp.text().await.unwrap_or_default()
                } else {
                    String::new()
                };
                let ok = match caller_rank {
                    None => status == 401,
                    Some(r) if r < rank => {
                        status == 403 && body.contains(&format!("needs the {role} role"))
                    }
                    Some(_) => status != 401 && status != 403,
                };
                if !ok {
                    failures.push(format!(
                        "{method} {template} ({role}) as {who}: {status} {body}"
                    ));
                }
            }
            walked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(walked > 60, "only {walked} operations walked");
}

#[test]
fn tokens_from_the_cli_created_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let ci = create_token(&server, "ci", "operator");
    let as_ci = |args: &[&str]| {
        server
            .command(args)
            .env("RACKBOOT_TOKEN", &ci)
            .output()
            .unwrap()
    };

    let out = as_ci(&["token", "whoami"]);
    assert_eq!(stdout(&out).trim(), "ci (operator)", "{}", stderr(&out));
    // An operator acts on machines but does not enrol them or make tokens.
    server.ok(&["machine", "add", "m1", "--mac", "52:54:00:cc:00:01"]);
    let out = as_ci(&[
        "machine",
        "maintenance",
        "m1",
        "on",
        "--reason",
        "disk swap",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = as_ci(&["machine", "add", "m2", "--mac", "52:54:00:cc:00:02"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("403") && stderr(&out).contains("needs the admin role"),
        "{}",
        stderr(&out)
    );
    let out = as_ci(&["token", "create", "mine", "--role", "admin"]);
    assert!(
        stderr(&out).contains("needs the admin role"),
        "{}",
        stderr(&out)
    );
    // Who asked is recorded by the token's name.
    let transitions = server.ok(&["machine", "transitions", "m1", "-o", "json"]);
    let transitions: Value = serde_json::from_str(&transitions).unwrap();
    assert_eq!(
        transitions.as_array().unwrap().last().unwrap()["by"],
        "api:ci"
    );

    // Listed with role and use, never the token.
    let list = server.ok(&["token", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{list}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("admin-token") && l.contains("config")),
        "{list}"
    );
    let ci_line = lines.iter().find(|l| l.starts_with("ci ")).unwrap();
    assert!(
        ci_line.contains("operator") && ci_line.contains("api:admin-token"),
        "{list}"
    );
    assert!(!list.contains(&ci[4..]), "{list}");

    // Revoked: refused at once.
    let out = server.ok(&["token", "revoke", "ci"]);
    assert_eq!(out.trim(), "revoked token \"ci\" (operator)");
    let out = as_ci(&["status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let out = server.cli(&["token", "revoke", "ci"]);
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    let out = server.cli(&["token", "revoke", "admin-token"]);
    assert!(
        stderr(&out).contains("cannot be revoked"),
        "{}",
        stderr(&out)
    );
}

/// A server whose API listens alone on `api_port` with a self-signed
/// certificate; boot HTTP on `boot_port`.
fn tls_config(dir: &Path, state: &Path, boot_port: u16, api_port: u16) -> std::path::PathBuf {
    let config = dir.join("tls.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nserver_ip = \"127.0.0.1\"\n[listen]\nhttp = \"127.0.0.1:{boot_port}\"\ntftp = \"off\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\ntls = \"self-signed\"\n[power]\nsync_interval_secs = 0\n",
            state.display().to_string()
        ),
    )
    .unwrap();
    config
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CLI against `url` with its own config home (its known_servers file).
fn cli(url: &str, state: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(rackboot())
        .args(args)
        .env("RACKBOOT_URL", url)
        .env("RACKBOOT_STATE_DIR", state)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("RACKBOOT_TOKEN")
        .env_remove("RACKBOOT_TLS_FINGERPRINT")
        .output()
        .unwrap()
}

/// Waits until the TLS port takes connections (not through the CLI: that
/// would pin the certificate).
fn wait_for_port(port: u16, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("rackboot serve exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("rackboot serve did not listen on {port}");
}

#[test]
fn api_over_tls_pinned_on_first_use_and_a_changed_certificate_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (state, home) = (dir.path().join("state"), dir.path().join("home"));
    let (boot_port, api_port) = (free_port(), free_port());
    let config = tls_config(dir.path(), &state, boot_port, api_port);
    let url = format!("https://127.0.0.1:{api_port}");
    let mut server = Child(loopback::spawn(&config));
    wait_for_port(api_port, &mut server.0);

    // First use: pinned, and said so.
    let out = cli(&url, &state, &home, &["status", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pinned the TLS certificate"),
        "{}",
        stderr(&out)
    );
    let known = std::fs::read_to_string(home.join("rackboot/known_servers")).unwrap();
    let (key, pinned) = known.trim().split_once(' ').unwrap();
    assert_eq!(key, format!("https://127.0.0.1:{api_port}"));
    // The pin is the certificate the server says it serves.
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let api = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .unwrap();
    assert!(api["detail"].as_str().unwrap().contains(pinned), "{api}");
    // Then it is used quietly.
    let out = cli(&url, &state, &home, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("pinned"), "{}", stderr(&out));

    // Boot files stay on plain HTTP, and the API is not there.
    let boot = format!("http://127.0.0.1:{boot_port}");
    let out = cli(&boot, &state, &home, &["status"]);
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    let ipxe = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{boot}/boot/ipxe/52:54:00:00:00:99"))
        .output()
        .unwrap();
    assert_eq!(stdout(&ipxe), "200");

    // The certificate kept across a restart: still accepted.
    drop(server);
    let mut server = Child(loopback::spawn(&config));
    wait_for_port(api_port, &mut server.0);
    let out = cli(&url, &state, &home, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Another certificate under the same URL: refused, saying what to do.
    drop(server);
    std::fs::remove_dir_all(state.join("api-tls")).unwrap();
    let mut server = Child(loopback::spawn(&config));
    wait_for_port(api_port, &mut server.0);
    let out = cli(&url, &state, &home, &["status"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("has changed") && err.contains(pinned), "{err}");
    assert!(err.contains("--tls-fingerprint"), "{err}");
    let new = err
        .split("now presents ")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .unwrap()
        .to_string();
    assert_ne!(new, pinned);
    // Pinned explicitly, the new one is accepted; the file is not changed.
    let out = cli(&url, &state, &home, &["status", "--tls-fingerprint", &new]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(home.join("rackboot/known_servers")).unwrap(),
        known
    );
    let out = cli(
        &url,
        &state,
        &home,
        &["status", "--tls-fingerprint", pinned],
    );
    assert!(stderr(&out).contains("not the"), "{}", stderr(&out));
}

#[test]
fn boot_files_out_of_machines_reach_are_refused_by_serve_and_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    // DHCP on an interface whose address machines are given, boot HTTP on
    // loopback only (what --api-listen 127.0.0.1:PORT alone did).
    let base = format!(
        "state_dir = {:?}\ninterface = \"lo\"\nserver_ip = \"10.99.0.1\"\n[dhcp]\nmode = \"proxy\"\n",
        state.display().to_string()
    );
    let in_file = dir.path().join("loopback-http.toml");
    std::fs::write(
        &in_file,
        format!("{base}[listen]\nhttp = \"127.0.0.1:{port}\"\ntftp = \"off\"\n"),
    )
    .unwrap();
    let by_flag = dir.path().join("by-flag.toml");
    std::fs::write(&by_flag, format!("{base}[listen]\ntftp = \"off\"\n")).unwrap();
    let api_listen = format!("127.0.0.1:{port}");
    for args in [
        vec!["check-config", "-c", in_file.to_str().unwrap()],
        vec!["serve", "-c", in_file.to_str().unwrap()],
        vec![
            "check-config",
            "-c",
            by_flag.to_str().unwrap(),
            "--api-listen",
            &api_listen,
        ],
        vec![
            "serve",
            "-c",
            by_flag.to_str().unwrap(),
            "--api-listen",
            &api_listen,
        ],
    ] {
        let out = Command::new(rackboot()).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} passed");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("boot HTTP listens on 127.0.0.1:{port} only"))
                && err.contains("http://10.99.0.1:")
                && err.contains("[api] listen"),
            "{args:?}: {err}"
        );
        assert!(!state.exists(), "{args:?} created the state directory");
    }
    // Boot HTTP where machines reach it and the API apart: accepted, without
    // the warning an exposed API gets.
    let http_listen = format!("0.0.0.0:{}", free_port());
    let out = Command::new(rackboot())
        .args(["check-config", "-c", by_flag.to_str().unwrap()])
        .args(["--http-listen", &http_listen, "--api-listen", &api_listen])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let effective: toml::Table = toml::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        effective["api"]["listen"].as_str(),
        Some(api_listen.as_str())
    );
    assert_eq!(
        effective["listen"]["http"].as_str(),
        Some(http_listen.as_str())
    );
    // The API on the boot listener, reachable from the provisioning network
    // without TLS: accepted, with a warning.
    let out = Command::new(rackboot())
        .args(["check-config", "-c", by_flag.to_str().unwrap()])
        .args(["--http-listen", &http_listen])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reachable from the provisioning network without TLS"),
        "{}",
        stderr(&out)
    );
}
