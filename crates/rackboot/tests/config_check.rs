//! `rackboot check-config` runs every check `serve` runs before it starts:
//! a table of broken configs, each with the error both must give, and a
//! refused `serve` creates nothing.

use std::path::Path;
use std::process::{Command, Output};

fn rackboot() -> &'static str {
    env!("CARGO_BIN_EXE_rackboot")
}

fn run(args: &[&str]) -> Output {
    Command::new(rackboot())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rackboot")
}

/// A config whose state directory is `state`, with `body` appended.
fn config(dir: &Path, body: &str) -> String {
    let state = dir.join("state");
    format!(
        "state_dir = {:?}\n{body}\n[listen]\nhttp = \"127.0.0.1:1\"\ntftp = \"off\"\n",
        state.display().to_string()
    )
}

const LO_DHCP: &str = "interface = \"lo\"\nserver_ip = \"127.0.0.1\"\n[dhcp]\nmode = \"full\"\n";

/// (name, config text after state_dir, what the error must say)
fn broken() -> Vec<(&'static str, String, &'static str)> {
    let subnet = |extra: &str| format!("{LO_DHCP}{extra}");
    vec![
        (
            "/33 prefix",
            subnet("[[dhcp.subnets]]\ncidr = \"10.99.0.0/33\"\n"),
            "invalid cidr \"10.99.0.0/33\"",
        ),
        (
            "reversed range",
            subnet(
                "[[dhcp.subnets]]\ncidr = \"10.99.0.0/24\"\nranges = [\"10.99.0.200-10.99.0.100\"]\n",
            ),
            "first is after last",
        ),
        (
            "range outside its subnet",
            subnet(
                "[[dhcp.subnets]]\ncidr = \"10.99.0.0/24\"\nranges = [\"10.98.0.10-10.98.0.20\"]\n",
            ),
            "outside the subnet",
        ),
        (
            "overlapping ranges",
            subnet(
                "[[dhcp.subnets]]\ncidr = \"10.99.0.0/24\"\nranges = [\"10.99.0.10-10.99.0.50\", \"10.99.0.40-10.99.0.60\"]\n",
            ),
            "overlaps another range",
        ),
        (
            "overlapping subnets",
            subnet(
                "[[dhcp.subnets]]\ncidr = \"10.99.0.0/16\"\n[[dhcp.subnets]]\ncidr = \"10.99.1.0/24\"\n",
            ),
            "overlap",
        ),
        (
            "reservation outside its subnet",
            subnet(
                "[[dhcp.subnets]]\ncidr = \"10.99.0.0/24\"\n[[dhcp.subnets.reservations]]\nmac = \"52:54:00:00:00:01\"\nip = \"10.98.0.5\"\n",
            ),
            "address 10.98.0.5 is outside the subnet",
        ),
        (
            "duplicate reservation MAC",
            subnet(
                "[[dhcp.subnets]]\ncidr = \"10.99.0.0/24\"\n[[dhcp.subnets.reservations]]\nmac = \"52:54:00:00:00:01\"\nip = \"10.99.0.5\"\n[[dhcp.subnets.reservations]]\nmac = \"52:54:00:00:00:01\"\nip = \"10.99.0.6\"\n",
            ),
            "MAC 52:54:00:00:00:01 is reserved twice",
        ),
        (
            "[dhcp] without an interface",
            "server_ip = \"127.0.0.1\"\n[dhcp]\nmode = \"proxy\"\n".into(),
            "[dhcp] needs `interface`",
        ),
        (
            "an interface that does not exist",
            "interface = \"rb-nosuch0\"\n".into(),
            "interface \"rb-nosuch0\" does not exist",
        ),
        (
            "log level verbose",
            "[log]\nlevel = \"verbose\"\n".into(),
            "log.level \"verbose\" is not a level",
        ),
        (
            "log directive with a bad level",
            "[log]\nlevel = \"rackboot_dhcp=loud,info\"\n".into(),
            "\"rackboot_dhcp=loud\" is not a level",
        ),
        (
            "unknown key",
            "[boot]\nasset_dirr = \"/x\"\n".into(),
            "asset_dirr",
        ),
        (
            "https public URL",
            "[boot]\npublic_url = \"https://boot.example\"\n".into(),
            "boot.public_url",
        ),
        (
            "menu for unknown machines with no entries",
            "[boot]\nunknown_machines = \"menu\"\n[boot.unknown_menu]\nentries = []\n".into(),
            "boot.unknown_menu.entries",
        ),
        (
            "unsupported store",
            "store = \"mysql://db/rackboot\"\n".into(),
            "store \"mysql://db/rackboot\"",
        ),
        (
            "TFTP root that is not a directory",
            "[tftp]\nroot = \"/nonexistent/rackboot-tftp\"\n".into(),
            "tftp.root /nonexistent/rackboot-tftp is not a directory",
        ),
        (
            "TFTP block size out of range",
            "[tftp]\nmax_blksize = 4\n".into(),
            "max_blksize 4",
        ),
    ]
}

#[test]
fn check_config_and_serve_refuse_every_broken_config_alike() {
    let mut failures = Vec::new();
    for (name, body, want) in broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rackboot.toml");
        std::fs::write(&path, config(dir.path(), &body)).unwrap();
        let path = path.to_str().unwrap();
        for args in [vec!["check-config", "-c", path], vec!["serve", "-c", path]] {
            let out = run(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || !stderr.contains(want) {
                failures.push(format!(
                    "{name}: `rackboot {}` exited {:?}, stderr lacks {want:?}:\n{stderr}",
                    args[0],
                    out.status.code()
                ));
            }
        }
        // Refused before anything was created.
        if dir.path().join("state").exists() {
            failures.push(format!("{name}: serve created the state directory"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn check_config_prints_the_effective_config_as_serve_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rackboot.toml");
    let state = dir.path().join("elsewhere");
    std::fs::write(
        &path,
        format!(
            "state_dir = {:?}\n[listen]\nhttp = \"127.0.0.1:9091\"\n",
            state.display().to_string()
        ),
    )
    .unwrap();
    let out = run(&["check-config", "-c", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("config OK"), "{stderr}");
    // TOML an operator could write back, with what serve derives.
    let effective: toml::Table = toml::from_str(&stdout).expect("effective config is TOML");
    assert_eq!(effective["boot"]["http_port"].as_integer(), Some(9091));
    assert_eq!(
        effective["boot"]["asset_dir"].as_str(),
        Some(state.join("assets").to_str().unwrap())
    );
    // TFTP follows the HTTP listener's address, not 0.0.0.0.
    assert_eq!(effective["listen"]["tftp"].as_str(), Some("127.0.0.1:69"));
    assert!(!stdout.contains("Some("), "{stdout}");
    assert!(!state.exists(), "check-config created the state directory");

    let out = run(&["check-config", "-c", path.to_str().unwrap(), "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["listen"]["http"], "127.0.0.1:9091");

    // Flags apply as they do to serve.
    let out = run(&[
        "check-config",
        "-c",
        path.to_str().unwrap(),
        "--asset-dir",
        "/srv/assets",
        "--tftp-listen",
        "off",
    ]);
    let effective: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(effective["boot"]["asset_dir"].as_str(), Some("/srv/assets"));
    assert_eq!(effective["listen"]["tftp"].as_str(), Some("off"));
}
