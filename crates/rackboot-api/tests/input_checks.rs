//! Input the API refuses although it parses: MACs no NIC has, menus without
//! entries or with unbounded timeouts, profiles whose files are not there.

mod common;

use axum::http::{Method, StatusCode};
use common::{Harness, error_of, kernel_profile};
use serde_json::json;

#[tokio::test]
async fn macs_no_nic_has_are_refused_naming_the_field() {
    let h = Harness::new().await;
    for (mac, why) in [
        ("00:00:00:00:00:00", "all-zero"),
        ("ff:ff:ff:ff:ff:ff", "broadcast"),
        ("01:00:5e:00:00:01", "multicast"),
    ] {
        let (status, body) = h
            .call(
                Method::POST,
                "/api/v1/machines",
                Some(json!({"name": "m1", "macs": ["52:54:00:00:00:01", mac]})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{mac}: {body}");
        let err = error_of(&body);
        assert!(err.starts_with("macs[1]: ") && err.contains(why), "{err}");
    }
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({"name": "m1", "macs": ["52:54:00:00:00:01"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = h
        .call(
            Method::PATCH,
            "/api/v1/machines/m1",
            Some(json!({"macs": ["ff:ff:ff:ff:ff:ff"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("broadcast"), "{body}");
}

#[tokio::test]
async fn menus_need_entries_and_a_bounded_timeout() {
    let h = Harness::new().await;
    let (status, _) = h
        .call(Method::PUT, "/api/v1/profiles/deb", Some(kernel_profile()))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    h.call(
        Method::POST,
        "/api/v1/machines",
        Some(json!({"name": "m1", "macs": ["52:54:00:00:00:01"]})),
    )
    .await;
    for (menu, field) in [
        (json!({"kind": "menu", "entries": []}), "intent.entries"),
        (
            json!({"kind": "menu", "entries": [{"profile": "deb"}], "timeout_secs": 999_999_999}),
            "intent.timeout_secs",
        ),
    ] {
        let (status, body) = h
            .call(Method::PUT, "/api/v1/machines/m1/boot", Some(menu.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{menu}: {body}");
        assert!(error_of(&body).starts_with(field), "{body}");
        let (status, body) = h
            .call(
                Method::PATCH,
                "/api/v1/machines/m1",
                Some(json!({"intent": menu})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (status, body) = h
        .call(
            Method::PUT,
            "/api/v1/machines/m1/boot",
            Some(json!({"kind": "menu", "entries": [{"profile": "deb"}], "timeout_secs": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_profile_whose_files_are_missing_is_refused_unless_forced() {
    let mut h = Harness::new().await;
    let assets = tempfile::tempdir().unwrap();
    h.state.asset_dir = Some(assets.path().to_path_buf());
    let (status, body) = h
        .call(Method::PUT, "/api/v1/profiles/deb", Some(kernel_profile()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let err = error_of(&body);
    assert!(
        err.contains("kernel: \"debian/linux\"")
            && err.contains("initrds[0]")
            && err.contains("force"),
        "{err}"
    );
    let (status, _) = h
        .call(
            Method::PUT,
            "/api/v1/profiles/deb?force=true",
            Some(kernel_profile()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Once the files are there, no force is needed; URLs are never checked.
    std::fs::create_dir_all(assets.path().join("debian")).unwrap();
    std::fs::write(assets.path().join("debian/linux"), b"k").unwrap();
    std::fs::write(assets.path().join("debian/initrd.gz"), b"i").unwrap();
    let (status, body) = h
        .call(Method::PUT, "/api/v1/profiles/deb", Some(kernel_profile()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h
        .call(
            Method::PUT,
            "/api/v1/profiles/web",
            Some(json!({"kernel": "http://10.0.0.1/vmlinuz"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
