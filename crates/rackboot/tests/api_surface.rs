//! The HTTP surface of a running server checked by real tools: the OpenAPI
//! document by openapi-spec-validator, every path it documents requested (it
//! must be served), and /metrics by the Prometheus client library's parser.
//! scripts/install-deps installs both tools.

mod loopback;

use std::path::Path;
use std::process::Command;

use loopback::{Server, add_machines};

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (scripts/install-deps installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// openapi-spec-validator: the project's venv (scripts/install-deps), else PATH.
fn validator() -> String {
    let venv = "/opt/rackboot-venv/bin/openapi-spec-validator";
    if Path::new(venv).exists() {
        venv.into()
    } else {
        "openapi-spec-validator".into()
    }
}

#[test]
fn openapi_document_of_a_running_server_is_valid_and_every_path_is_served() {
    if !rackboot_testenv::programs(&["curl", "openapi-spec-validator"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (status, doc) = curl(&[&format!("{}/api/openapi.json", server.url())]);
    assert_eq!(status, 200);
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, &doc).unwrap();
    let out = Command::new(validator())
        .args(["--validation-errors", "all"])
        .arg(&path)
        .output()
        .expect("openapi-spec-validator (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "openapi-spec-validator:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for want in [
        "/boot/ipxe/{mac}",
        "/assets/{path}",
        "/os/{path}",
        "/install/{id}/{secret}/{file}",
        "/agent/v1/hello",
    ] {
        assert!(paths.contains_key(want), "{want} is not documented");
    }
    // Every documented operation reaches a handler: neither the router's
    // "no route" fallback nor 405. No token is sent, so API routes answer
    // 401 and nothing is changed.
    let mut unserved = Vec::new();
    for (template, item) in paths {
        let concrete = template
            .replace("{mac}", "52:54:00:00:00:99")
            .replace("{path}", "x/y")
            .replace(['{', '}'], "");
        for method in item.as_object().unwrap().keys() {
            let url = format!("{}{concrete}", server.url());
            let (status, body) = curl(&["-X", &method.to_uppercase(), &url]);
            if status == 0 || status == 405 || body.contains("no route for") {
                unserved.push(format!("{method} {template}: {status} {body}"));
            }
        }
    }
    assert!(
        unserved.is_empty(),
        "documented but not served:\n{}",
        unserved.join("\n")
    );
}

/// Parses /metrics with prometheus_client and reports what a scraper sees.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "help": f.documentation,
                   "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;

#[test]
fn metrics_parse_with_help_and_types_and_inventory_gauges() {
    if !rackboot_testenv::programs(&["curl", "python3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    add_machines(&server, 3, "metric", 7);
    let (status, text) = curl(&[&format!("{}/metrics", server.url())]);
    assert_eq!(status, 200);
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics (python3-prometheus-client installed?):\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap();
    for (name, f) in &families {
        assert!(
            !f["help"].as_str().unwrap_or("").is_empty(),
            "{name} has no HELP"
        );
        assert_ne!(f["type"], "unknown", "{name} has no TYPE");
        if f["type"] == "summary" {
            let q: Vec<f64> = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s[1].get("quantile").is_some())
                .map(|s| s[2].as_f64().unwrap())
                .collect();
            assert!(q.windows(2).all(|w| w[0] <= w[1]), "{name}: {q:?}");
        }
    }
    let value = |family: &str, labels: &[(&str, &str)]| -> Option<f64> {
        families.get(family)?["samples"]
            .as_array()?
            .iter()
            .find(|s| labels.iter().all(|(k, v)| s[1][*k] == *v))
            .and_then(|s| s[2].as_f64())
    };
    // Inventory and build gauges.
    assert_eq!(
        value("rackboot_machines", &[("state", "enrolled")]),
        Some(3.0)
    );
    assert_eq!(
        value("rackboot_machines", &[("state", "active")]),
        Some(0.0)
    );
    assert_eq!(value("rackboot_leases", &[("state", "bound")]), Some(0.0));
    assert_eq!(
        value(
            "rackboot_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Series present from the start, at zero, though nothing happened.
    // (prometheus_client names counter families without `_total`.)
    for family in [
        "rackboot_tftp_transfers_completed",
        "rackboot_dhcp_lease_writes",
        "rackboot_installs_completed",
        "rackboot_events_lost",
    ] {
        assert_eq!(value(family, &[]), Some(0.0), "{family}");
    }
    // Durations are histograms: buckets cannot decrease.
    assert_eq!(
        families["rackboot_tftp_transfer_duration_seconds"]["type"],
        "histogram"
    );
}
