//! Installs, install templates, the OS catalog and BMC power through the router,
//! over a real in-memory SQLite store. Power uses the in-memory `fake://` BMC
//! (the real BMC emulators are exercised in rackboot-power and the e2e tests).

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{Harness, error_of};
use rackboot_api::power::PowerApi;
use rackboot_power::fake::FakeBmc;
use rackboot_power::secrets::SecretKey;
use rackboot_power::{PowerConfig, PowerController, PowerErrorKind, PowerState, PowerStateMap};
use serde_json::json;

async fn with_power() -> Harness {
    rackboot_power::fake::enable();
    let mut h = Harness::new().await;
    h.state.power = Some(PowerApi {
        controller: Arc::new(PowerController::new(PowerConfig {
            call_timeout: Duration::from_secs(2),
            verify_timeout: Duration::from_secs(2),
            poll_interval: Duration::from_millis(10),
            backoff_initial: Duration::from_millis(10),
            ..PowerConfig::default()
        })),
        key: Arc::new(SecretKey::generate()),
        states: PowerStateMap::new(),
    });
    h
}

#[tokio::test]
async fn bmc_password_is_sealed_and_power_is_verified() {
    let h = with_power().await;
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({"name": "n1", "macs": ["52:54:00:00:0a:01"],
                "bmc": {"url": "fake://api-test-n1", "username": "admin", "password": "s3cret"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("s3cret") && !text.contains("sealed"),
        "{text}"
    );
    assert_eq!(body["bmc"]["address"], "fake://api-test-n1");
    // At rest only the sealed form exists.
    let stored = h.store.find_machine_by_name("n1").await.unwrap().unwrap();
    let sealed = stored.bmc.unwrap().sealed_password.unwrap();
    assert!(sealed.starts_with("v1:") && !sealed.contains("s3cret"));

    let (status, body) = h.get("/api/v1/machines/n1/power").await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("off")),
        "{body}"
    );
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines/n1/power",
            Some(json!({"action": "on"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "on");
    assert_eq!(FakeBmc::get("api-test-n1").power(), PowerState::On);
    let (status, body) = h
        .call(
            Method::PUT,
            "/api/v1/machines/n1/boot-device",
            Some(json!({"device": "pxe", "once": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A BMC that refuses the credentials is a 502 that says so.
    FakeBmc::get("api-test-n1").fail_next(PowerErrorKind::Authentication, 5);
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines/n1/power",
            Some(json!({"action": "off"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(error_of(&body).to_lowercase().contains("auth"), "{body}");

    // Bad input is a 400 naming the field; no BMC is a 400 too.
    let (status, body) = h
        .call(
            Method::PATCH,
            "/api/v1/machines/n1",
            Some(json!({"bmc": {"url": "telnet://x"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error_of(&body).starts_with("bmc.url"), "{body}");
    let (status, _) = h
        .call(
            Method::PATCH,
            "/api/v1/machines/n1",
            Some(json!({"bmc": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines/n1/power",
            Some(json!({"action": "on"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error_of(&body).contains("no BMC"), "{body}");
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines/n1/power",
            Some(json!({"action": "explode"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn power_is_404_when_disabled() {
    let h = Harness::new().await;
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({"name": "n2", "macs": ["52:54:00:00:0a:02"],
                "bmc": {"url": "fake://x", "username": "a"}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(error_of(&body).contains("power control"), "{body}");
}

#[tokio::test]
async fn templates_are_checked_at_upload_with_the_line() {
    let h = Harness::new().await;
    let broken = "text\nlang {{ locale }}\nrootpw --iscrypted {{ root_password_hash \n";
    let (status, body) = h
        .call(
            Method::PUT,
            "/api/v1/templates/site-rhel",
            Some(json!({"family": "rhel", "source": broken})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        error_of(&body).starts_with("source:") && error_of(&body).contains("line"),
        "{body}"
    );
    let (status, body) = h.get("/api/v1/templates/site-rhel").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused template is not stored: {body}"
    );

    let good = rackboot_install::builtin_template(rackboot_core::OsFamily::Debian, "12")
        .unwrap()
        .source;
    let (status, body) = h
        .call(
            Method::PUT,
            "/api/v1/templates/site-debian",
            Some(json!({"family": "debian", "description": "ours", "source": good})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = h.get("/api/v1/templates").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, _) = h
        .call(Method::DELETE, "/api/v1/templates/site-debian", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn install_requests_name_what_is_wrong() {
    let h = Harness::new().await;
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({"name": "n3", "macs": ["52:54:00:00:0a:03"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines/n3/install",
            Some(json!({"os": "debian-12-amd64"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error_of(&body).contains("not in the OS catalog"), "{body}");
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines/n3/install",
            Some(json!({"os": "x", "unknown": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A bare install intent cannot be set: it needs its request and token.
    let (status, body) = h
        .call(
            Method::PUT,
            "/api/v1/machines/n3/boot",
            Some(
                json!({"kind": "install", "id": "00000000-0000-0000-0000-000000000001", "os": "x"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = h.get("/api/v1/installs?machine=n3").await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
}
