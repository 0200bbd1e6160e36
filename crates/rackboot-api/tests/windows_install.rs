//! Windows installs through the router: the Administrator password that
//! unattend.xml needs in a recoverable form is stored sealed with the server's
//! key, opened for the render, and never shown or stored in clear.

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::{Harness, error_of, windows_catalog};
use rackboot_seal::SecretKey;
use serde_json::json;

const OS: &str = "windows-server-10.0.20348-amd64";
const PASSWORD: &str = "Adm1n-Passw0rd!";

async fn harness(dir: &std::path::Path, key: Option<SecretKey>) -> Harness {
    let mut h = Harness::with_os_catalog(&windows_catalog(dir)).await;
    h.state.secret_key = key.map(Arc::new);
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({"name": "w1", "macs": ["52:54:00:00:0d:01"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    h
}

fn request(password: Option<&str>) -> serde_json::Value {
    json!({
        "os": OS,
        "vars": {"timezone": "Etc/UTC", "install_source_url": "smb://10.77.0.1/os/windows"},
        "windows_admin_password": password,
    })
}

#[tokio::test]
async fn windows_admin_password_is_sealed_at_rest_and_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path(), Some(SecretKey::generate())).await;

    // Windows cannot be installed without it; the error names it.
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines/w1/install",
            Some(request(None)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error_of(&body).contains("windows_admin_password"), "{body}");

    let (status, install) = h
        .call(
            Method::POST,
            "/api/v1/machines/w1/install",
            Some(request(Some(PASSWORD))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{install}");
    let shown = install.to_string();
    assert!(
        !shown.contains(PASSWORD),
        "clear password in API output: {shown}"
    );
    let sealed = install["vars"]["sealed"]["windows_admin_password"]
        .as_str()
        .unwrap_or_else(|| panic!("no sealed password: {install}"));
    assert!(sealed.starts_with("v1:"), "{sealed}");

    // Nothing in the database holds it in clear.
    let stored = h
        .store
        .get_install(install["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    assert!(!stored.vars.to_string().contains(PASSWORD));

    // The render (what the machine's WinPE fetches) has it, in unattend.xml's
    // own encoding: base64 of UTF-16LE(password + "AdministratorPassword").
    let (status, preview) = h.get("/api/v1/machines/w1/render").await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let body = preview["install_file_body"].as_str().unwrap();
    let utf16: Vec<u8> = format!("{PASSWORD}AdministratorPassword")
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(utf16);
    assert!(body.contains(&encoded), "{body}");
}

#[tokio::test]
async fn windows_passwords_need_the_server_key_and_a_windows_os() {
    let dir = tempfile::tempdir().unwrap();
    common::debian_catalog(dir.path());
    let mut h = harness(dir.path(), None).await;
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines/w1/install",
            Some(request(Some(PASSWORD))),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error_of(&body).contains("no secret key"), "{body}");

    h.state.secret_key = Some(Arc::new(SecretKey::generate()));
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines/w1/install",
            Some(json!({"os": "debian-12.5.0-amd64", "root_password": "x",
                        "windows_admin_password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        error_of(&body).contains("windows_admin_password: only Windows installs"),
        "{body}"
    );
}
