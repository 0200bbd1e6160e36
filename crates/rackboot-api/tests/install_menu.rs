//! Install menus through the router: a menu of installable OSes (plus
//! profiles) with local disk as the default, each OS entry a pending install
//! checked and stored when the menu is set. Real SQLite, a real OS catalog
//! imported from a small Debian medium.

mod common;

use axum::http::{Method, StatusCode};
use common::{Harness, debian_catalog, error_of, kernel_profile};
use serde_json::{Value, json};

const OS: &str = "debian-12.5.0-amd64";

async fn harness_with_machine(dir: &std::path::Path) -> Harness {
    let h = Harness::with_os_catalog(&debian_catalog(dir)).await;
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({"name": "n1", "macs": ["52:54:00:00:0b:01"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = h
        .call(
            Method::PUT,
            "/api/v1/profiles/rescue",
            Some(kernel_profile()),
        )
        .await;
    assert!(status.is_success(), "{status}: {body}");
    h
}

async fn menu(h: &Harness, body: Value) -> (StatusCode, Value) {
    h.call(Method::POST, "/api/v1/machines/n1/install-menu", Some(body))
        .await
}

#[tokio::test]
async fn install_menu_arms_installs_behind_a_local_default() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness_with_machine(dir.path()).await;

    let (status, first) = menu(
        &h,
        json!({"entries": [{"os": OS}], "root_password": "s3cret", "timeout_secs": 20}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, body) = menu(
        &h,
        json!({
            "entries": [{"os": OS, "label": "Debian 12 (site)"}],
            "profiles": ["rescue"],
            "root_password": "s3cret",
            "kernel_args": ["console=ttyS0,115200"],
            "loader": "pxelinux",
            "timeout_secs": 20,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let install = &body["installs"][0];
    assert_eq!(install["state"], "pending", "{body}");
    assert_eq!(install["os"], OS);
    assert!(install.get("token").is_none(), "the token is never shown");
    let intent = &body["machine"]["intent"];
    assert_eq!(intent["kind"], "menu", "{intent}");
    assert_eq!(intent["default"], Value::Null, "local disk is the default");
    assert_eq!(intent["loader"], "pxelinux");
    assert_eq!(intent["entries"][0]["install"]["id"], install["id"]);
    assert_eq!(intent["entries"][0]["label"], "Debian 12 (site)");
    assert_eq!(intent["entries"][1]["profile"], "rescue");

    // The second menu replaced the first one's install.
    let (_, installs) = h.get("/api/v1/installs?machine=n1").await;
    let states: Vec<(&str, &str)> = installs
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            (first["installs"][0]["id"].as_str().unwrap(), "cancelled"),
            (install["id"].as_str().unwrap(), "pending"),
        ]
    );

    // What the machine would boot: a menu whose installer entry points at
    // its own rendered preseed.
    let (status, preview) = h.get("/api/v1/machines/n1/render").await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["plan"], "menu");
    // iPXE (a NIC ROM) chains pxelinux.0, which reads this config.
    let ipxe = preview["ipxe"].as_str().unwrap();
    assert!(ipxe.contains("chain tftp://127.0.0.1/pxelinux.0"), "{ipxe}");
    assert_eq!(preview["loader"], "pxelinux");
    let config = preview["loader_config"].as_str().unwrap();
    let id = install["id"].as_str().unwrap();
    // Under the install's files secret (only in this machine's config).
    let file = config
        .split_whitespace()
        .find_map(|w| w.strip_prefix("url="))
        .unwrap_or_else(|| panic!("no url= in\n{config}"));
    let secret = file
        .strip_prefix(&format!("http://127.0.0.1:8080/install/{id}/"))
        .and_then(|rest| rest.strip_suffix("/preseed.cfg"))
        .unwrap_or_else(|| panic!("{file}"));
    assert_eq!(secret.len(), 32, "{file}");
    assert!(config.contains("MENU LABEL Debian 12 (site)"), "{config}");
    assert!(
        config.contains("KERNEL /os/debian-12.5.0-amd64/install.amd/vmlinuz"),
        "{config}"
    );
    let local = config.find("LABEL local").unwrap();
    assert!(
        config[local..].lines().nth(2) == Some("  MENU DEFAULT"),
        "local disk is the default:\n{config}"
    );

    // The timeline says what was offered.
    let events = h
        .stored_events_matching(2, |e| e.kind.as_str() == "install_requested")
        .await;
    let offered: Vec<&str> = events
        .iter()
        .filter(|e| e.kind.as_str() == "install_requested")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(offered.len(), 2, "{offered:?}");
    assert!(
        offered[1].contains("boot menu as \"Debian 12 (site)\""),
        "{offered:?}"
    );
}

#[tokio::test]
async fn install_menu_requests_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness_with_machine(dir.path()).await;
    let pw = "s3cret";
    let cases = [
        (
            json!({"entries": []}),
            "entries: an install menu needs at least one OS",
        ),
        (
            json!({"entries": [{"os": OS}, {"os": OS}], "root_password": pw}),
            "entries[1].os: \"debian-12.5.0-amd64\" is offered twice",
        ),
        (
            json!({"entries": [{"os": OS}], "default": "rocky-9", "root_password": pw}),
            "default: \"rocky-9\" is not one of the entries",
        ),
        (
            json!({"entries": [{"os": "rocky-9"}], "root_password": pw}),
            "entries[0]: os: \"rocky-9\" is not in the OS catalog (imported: debian-12.5.0-amd64)",
        ),
        (
            json!({"entries": [{"os": OS}], "profiles": ["ghost"], "root_password": pw}),
            "no profile named \"ghost\"",
        ),
        // Without a root password or SSH key the installed machine is unreachable.
        (json!({"entries": [{"os": OS}]}), "entries[0]: vars:"),
        (
            json!({"entries": [{"os": OS, "template": "nope"}], "root_password": pw}),
            "entries[0]: template: no stored template \"nope\"",
        ),
        (
            json!({"entries": [{"os": OS}], "timeout_secs": 7200, "root_password": pw}),
            "timeout_secs: 7200 is more than 3600",
        ),
        (
            json!({"entries": [{"os": OS}], "root_password": pw, "colour": "red"}),
            "colour",
        ),
    ];
    for (body, want) in cases {
        let (status, got) = menu(&h, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {got}");
        assert!(error_of(&got).contains(want), "{body}: {got}");
    }
    // Nothing was stored by the refused requests.
    let (_, installs) = h.get("/api/v1/installs?machine=n1").await;
    assert_eq!(installs, json!([]));
    let (status, body) = menu(&h, json!({"entries": [{"os": OS}], "root_password": pw})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Installer entries cannot be hand-written into a menu intent: they need
    // their install requests and tokens.
    let mut intent = body["machine"]["intent"].clone();
    intent["timeout_secs"] = json!(5);
    let (status, got) = h
        .call(Method::PUT, "/api/v1/machines/n1/boot", Some(intent))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{got}");
    assert!(
        error_of(&got).contains("intent.entries[0].install"),
        "{got}"
    );
    // An operator setting another intent withdraws the armed installs.
    let (status, got) = h
        .call(
            Method::PUT,
            "/api/v1/machines/n1/boot",
            Some(json!({"kind": "local_disk"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let (_, installs) = h.get("/api/v1/installs?machine=n1").await;
    assert_eq!(installs[0]["state"], "cancelled", "{installs}");
}
