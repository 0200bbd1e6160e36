//! The agent stays small and links nothing of the server: its normal
//! dependency tree holds no rackboot crate but the wire contract, and no
//! async runtime.

#[test]
fn no_server_crates_and_no_tokio() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "rackboot-agent",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: std::collections::BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains("rackboot-agent-proto"), "{tree}");
    let rackboot: Vec<&&str> = crates
        .iter()
        .filter(|c| {
            c.starts_with("rackboot") && !matches!(**c, "rackboot-agent" | "rackboot-agent-proto")
        })
        .collect();
    assert!(
        rackboot.is_empty(),
        "server crates in the agent: {rackboot:?}"
    );
    for forbidden in ["tokio", "utoipa", "reqwest", "hyper", "clap"] {
        assert!(
            !crates.contains(forbidden),
            "{forbidden} in the agent:\n{tree}"
        );
    }
}
