//! The REST API end to end through the router, over a real in-memory SQLite store.

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use chrono::Utc;
use common::{Harness, TOKEN, error_of, kernel_profile};
use rackboot_core::{EventKind, Lease, LeaseState, NewEvent};
use serde_json::{Value, json};

async fn create_machine(h: &Harness, name: &str, macs: &[&str]) -> Value {
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({ "name": name, "macs": macs })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn put_profile(h: &Harness, name: &str) {
    let (status, body) = h
        .call(
            Method::PUT,
            &format!("/api/v1/profiles/{name}"),
            Some(kernel_profile()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn token_is_required_on_v1_only() {
    let h = Harness::new().await;
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = h
            .call_raw(Method::GET, "/api/v1/machines", None, token)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(error_of(&body), "missing or invalid bearer token");
    }
    // A wrong scheme is refused even with a right token.
    let req = axum::http::Request::builder()
        .uri("/api/v1/machines")
        .header("authorization", format!("Basic {TOKEN}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let res = tower::ServiceExt::oneshot(h.app(), req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().contains_key("www-authenticate"));
    // Writes are refused before the body is looked at.
    let (status, _) = h
        .call_raw(Method::POST, "/api/v1/machines", Some("{".into()), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Any configured token works; the scheme is case-insensitive.
    let (status, _) = h
        .call_raw(Method::GET, "/api/v1/machines", None, Some("second-token"))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The document and the metrics are open.
    let (status, doc) = h
        .call_raw(Method::GET, "/api/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let (status, body) = h.call_raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no handle configured");
    assert_eq!(error_of(&body), "metrics are not enabled");
}

#[tokio::test]
async fn machine_crud_and_refs() {
    let h = Harness::new().await;
    let created = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({
                "name": "node-1",
                "macs": ["52:54:00:00:00:01", "52-54-00-00-00-02"],
                "uuid": "4c4c4544-0042-3510-8057-b4c04f4e3332",
                "labels": { "rack": "r12" },
            })),
        )
        .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    let machine = created.1;
    let id = machine["id"].as_str().unwrap().to_string();
    assert_eq!(
        machine["macs"],
        json!(["52:54:00:00:00:01", "52:54:00:00:00:02"])
    );
    assert_eq!(
        machine["intent"],
        json!({ "kind": "profile" }),
        "selectors decide by default"
    );
    assert_eq!(machine["labels"]["rack"], "r12");

    // The boot cache sees the new machine at once.
    let mac: rackboot_core::MacAddr = "52:54:00:00:00:02".parse().unwrap();
    assert_eq!(
        h.state.fleet.snapshot().machine_by_mac(mac).unwrap().name,
        "node-1"
    );

    // By id, name, and any MAC in any operator spelling.
    for reference in [
        id.as_str(),
        "node-1",
        "52:54:00:00:00:01",
        "52-54-00-00-00-02",
        "525400000002",
        "5254.0000.0001",
    ] {
        let (status, body) = h.get(&format!("/api/v1/machines/{reference}")).await;
        assert_eq!(status, StatusCode::OK, "{reference}: {body}");
        assert_eq!(body, machine, "{reference}");
    }
    let (status, body) = h.get("/api/v1/machines/52:54:00:00:00:99").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        error_of(&body),
        "no machine with id, name or MAC \"52:54:00:00:00:99\""
    );

    create_machine(&h, "aaa", &["52:54:00:00:00:03"]).await;
    let (status, list) = h.get("/api/v1/machines").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["aaa", "node-1"]);

    // PATCH changes only what it names; null clears the uuid.
    let (status, patched) = h
        .call(
            Method::PATCH,
            "/api/v1/machines/52:54:00:00:00:01",
            Some(json!({ "name": "node-01", "labels": { "role": "storage" }, "uuid": null })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["id"], id);
    assert_eq!(patched["name"], "node-01");
    assert_eq!(patched["labels"], json!({ "role": "storage" }));
    assert_eq!(patched["uuid"], Value::Null);
    assert_eq!(patched["macs"], machine["macs"]);
    assert_eq!(h.get(&format!("/api/v1/machines/{id}")).await.1, patched);

    let (status, body) = h
        .call(Method::DELETE, "/api/v1/machines/node-01", None)
        .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(
        h.get(&format!("/api/v1/machines/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(h.state.fleet.snapshot().machine_by_mac(mac).is_none());
    assert_eq!(
        h.call(Method::DELETE, "/api/v1/machines/node-01", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Every write was recorded as done by the API.
    let events = h
        .stored_events_matching(3, |e| {
            e.kind == EventKind::MachineChanged
                && e.machine.map(|m| m.to_string()) == Some(id.clone())
        })
        .await;
    let changes: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| {
            e.kind == EventKind::MachineChanged
                && e.machine.map(|m| m.to_string()) == Some(id.clone())
        })
        .map(|e| {
            (
                e.data["who"].as_str().unwrap(),
                e.data["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("api:config:1", "created"),
            ("api:config:1", "updated"),
            ("api:config:1", "deleted")
        ]
    );
}

#[tokio::test]
async fn machine_input_errors_name_the_problem() {
    let h = Harness::new().await;
    create_machine(&h, "taken", &["52:54:00:00:00:01"]).await;
    put_profile(&h, "debian").await;
    let cases: Vec<(Option<String>, StatusCode, &str)> = vec![
        (Some("{\"name\": ".into()), StatusCode::BAD_REQUEST, "invalid JSON body: EOF while parsing a value at line 1 column 9"),
        (Some("".into()), StatusCode::BAD_REQUEST, "invalid JSON body: EOF while parsing a value at line 1 column 0"),
        (Some("7".into()), StatusCode::BAD_REQUEST, "invalid JSON body: invalid type: integer `7`, expected struct NewMachine at line 1 column 1"),
        (Some(json!({ "name": "x", "macs": ["52:54:00:00:00:09", "nope"] }).to_string()), StatusCode::BAD_REQUEST,
            "invalid JSON body: macs[1]: invalid MAC address \"nope\": expected six hex octets like 52:54:00:12:34:56"),
        (Some(json!({ "macs": ["52:54:00:00:00:09"] }).to_string()), StatusCode::BAD_REQUEST, "invalid JSON body: missing field `name`"),
        (Some(json!({ "name": "x", "macs": [] }).to_string()), StatusCode::BAD_REQUEST, "macs: at least one MAC address is required"),
        (Some(json!({ "name": "x", "macs": ["52:54:00:00:00:09", "52-54-00-00-00-09"] }).to_string()), StatusCode::BAD_REQUEST,
            "macs: 52:54:00:00:00:09 is listed twice"),
        (Some(json!({ "name": "bad name", "macs": ["52:54:00:00:00:09"] }).to_string()), StatusCode::BAD_REQUEST,
            "name: invalid machine name \"bad name\": use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"),
        (Some(json!({ "name": "x", "macs": ["52:54:00:00:00:09"], "colour": "red" }).to_string()), StatusCode::BAD_REQUEST,
            "invalid JSON body: colour: unknown field `colour`, expected one of `name`, `macs`, `uuid`, `arch`, `labels`, `intent`"),
        (Some(json!({ "name": "x", "macs": ["52:54:00:00:00:09"], "labels": { "bad key": "v" } }).to_string()), StatusCode::BAD_REQUEST,
            "labels: invalid label key \"bad key\": use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"),
        (Some(json!({ "name": "x", "macs": ["52:54:00:00:00:09"], "intent": { "kind": "profile", "name": "nope" } }).to_string()),
            StatusCode::BAD_REQUEST, "intent.name: no profile named \"nope\""),
        (Some(json!({ "name": "x", "macs": ["52:54:00:00:00:09"], "intent": { "kind": "reinstall" } }).to_string()),
            StatusCode::BAD_REQUEST, "invalid JSON body: intent.kind: unknown variant `reinstall`, expected one of `discover`, `local_disk`, `profile`, `menu`"),
        (Some(json!({ "name": "x", "macs": ["52:54:00:00:00:09"], "intent": { "kind": "menu", "entries": [{ "profile": "debian" }], "default": "other" } }).to_string()),
            StatusCode::BAD_REQUEST, "intent.default: profile \"other\" is not one of the menu entries"),
        (Some(json!({ "name": "taken", "macs": ["52:54:00:00:00:09"] }).to_string()), StatusCode::CONFLICT, "machine name \"taken\" is already taken"),
        (Some(json!({ "name": "x", "macs": ["52:54:00:00:00:09", "52:54:00:00:00:01"] }).to_string()), StatusCode::CONFLICT,
            "MAC 52:54:00:00:00:01 already belongs to machine \"taken\""),
    ];
    for (body, want_status, want_error) in cases {
        let (status, got) = h
            .call_raw(Method::POST, "/api/v1/machines", body.clone(), Some(TOKEN))
            .await;
        assert_eq!(status, want_status, "{body:?} -> {got}");
        assert!(
            error_of(&got).starts_with(want_error),
            "{body:?}: got {:?}, want {want_error:?}",
            error_of(&got)
        );
    }
    // Nothing was created by the failures.
    assert_eq!(
        h.get("/api/v1/machines").await.1.as_array().unwrap().len(),
        1
    );

    // PATCH: taking another machine's name or MAC conflicts; bad fields are 400.
    create_machine(&h, "other", &["52:54:00:00:00:02"]).await;
    for (patch, want_status, want_error) in [
        (
            json!({ "name": "taken" }),
            StatusCode::CONFLICT,
            "machine name \"taken\" is already taken",
        ),
        (
            json!({ "macs": ["52:54:00:00:00:01"] }),
            StatusCode::CONFLICT,
            "MAC 52:54:00:00:00:01 already belongs to machine \"taken\"",
        ),
        (
            json!({ "macs": [] }),
            StatusCode::BAD_REQUEST,
            "macs: at least one MAC address is required",
        ),
        (
            json!({ "macs": ["zz"] }),
            StatusCode::BAD_REQUEST,
            "invalid JSON body: macs[0]: invalid MAC address \"zz\"",
        ),
        (
            json!({ "id": "x" }),
            StatusCode::BAD_REQUEST,
            "invalid JSON body: id: unknown field `id`",
        ),
        (
            json!({ "intent": { "kind": "profile", "name": "ghost" } }),
            StatusCode::BAD_REQUEST,
            "intent.name: no profile named \"ghost\"",
        ),
    ] {
        let (status, got) = h
            .call(Method::PATCH, "/api/v1/machines/other", Some(patch.clone()))
            .await;
        assert_eq!(status, want_status, "{patch} -> {got}");
        assert!(
            error_of(&got).starts_with(want_error),
            "{patch}: got {:?}",
            error_of(&got)
        );
    }
    // Renaming to its own name and keeping its own MACs is fine.
    let (status, _) = h
        .call(
            Method::PATCH,
            "/api/v1/machines/other",
            Some(json!({ "name": "other", "macs": ["52:54:00:00:00:02"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn set_boot_intent() {
    let h = Harness::new().await;
    put_profile(&h, "debian").await;
    put_profile(&h, "rescue").await;
    create_machine(&h, "node-1", &["52:54:00:00:00:01"]).await;
    for intent in [
        json!({ "kind": "local_disk" }),
        json!({ "kind": "profile", "name": "debian" }),
        json!({ "kind": "profile" }),
        json!({ "kind": "discover" }),
        json!({ "kind": "menu", "entries": [{ "profile": "debian", "label": null }, { "profile": "rescue", "label": "Rescue" }], "default": "rescue", "timeout_secs": 5 }),
    ] {
        let (status, body) = h
            .call(
                Method::PUT,
                "/api/v1/machines/52:54:00:00:00:01/boot",
                Some(intent.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{intent}: {body}");
        assert_eq!(body["intent"], intent);
        assert_eq!(h.get("/api/v1/machines/node-1").await.1["intent"], intent);
        let cached = h.state.fleet.snapshot().machines.by_name()[0]
            .intent
            .clone();
        assert_eq!(
            serde_json::to_value(cached).unwrap(),
            intent,
            "inventory reloaded"
        );
    }
    // A menu timeout defaults to 10 s.
    let (_, body) = h
        .call(
            Method::PUT,
            "/api/v1/machines/node-1/boot",
            Some(json!({ "kind": "menu", "entries": [{ "profile": "debian" }] })),
        )
        .await;
    assert_eq!(
        body["intent"],
        json!({ "kind": "menu", "entries": [{ "profile": "debian", "label": null }], "default": null, "timeout_secs": 10 })
    );

    for (intent, want_status, want_error) in [
        (
            json!({ "kind": "profile", "name": "ghost" }),
            StatusCode::BAD_REQUEST,
            "intent.name: no profile named \"ghost\"",
        ),
        (
            json!({ "kind": "menu", "entries": [{ "profile": "debian" }, { "profile": "ghost" }] }),
            StatusCode::BAD_REQUEST,
            "intent.entries[1].profile: no profile named \"ghost\"",
        ),
        (
            json!({ "name": "debian" }),
            StatusCode::BAD_REQUEST,
            "invalid JSON body: missing field `kind`",
        ),
        (
            json!("local_disk"),
            StatusCode::BAD_REQUEST,
            "invalid JSON body: invalid type: string \"local_disk\"",
        ),
    ] {
        let (status, got) = h
            .call(
                Method::PUT,
                "/api/v1/machines/node-1/boot",
                Some(intent.clone()),
            )
            .await;
        assert_eq!(status, want_status, "{intent} -> {got}");
        assert!(
            error_of(&got).starts_with(want_error),
            "{intent}: got {:?}",
            error_of(&got)
        );
    }
    let (status, got) = h
        .call(
            Method::PUT,
            "/api/v1/machines/ghost/boot",
            Some(json!({ "kind": "local_disk" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{got}");
}

#[tokio::test]
async fn timeline_has_the_machines_events_only() {
    let h = Harness::new().await;
    let node = create_machine(&h, "node-1", &["52:54:00:00:00:01", "52:54:00:00:00:02"]).await;
    create_machine(&h, "node-2", &["52:54:00:00:00:03"]).await;
    h.call(
        Method::PUT,
        "/api/v1/machines/node-1/boot",
        Some(json!({ "kind": "local_disk" })),
    )
    .await;
    // An event that only knows the second NIC's MAC belongs to node-1 too.
    h.emit(
        NewEvent::new(EventKind::LeaseAcked, "acked 10.0.0.5")
            .mac("52:54:00:00:00:02".parse().unwrap()),
    );
    h.emit(
        NewEvent::new(EventKind::LeaseAcked, "acked 10.0.0.6")
            .mac("52:54:00:00:00:03".parse().unwrap()),
    );
    h.stored_events(5).await;

    let (status, timeline) = h.get("/api/v1/machines/node-1/timeline").await;
    assert_eq!(status, StatusCode::OK);
    let timeline = timeline.as_array().unwrap().clone();
    let summary: Vec<(&str, &str)> = timeline
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "machine_changed",
                "machine \"node-1\" created by api:config:1"
            ),
            (
                "machine_changed",
                "machine \"node-1\" boot set by api:config:1"
            ),
            ("lease_acked", "acked 10.0.0.5"),
        ]
    );
    assert_eq!(timeline[0]["machine"], node["id"]);
    assert_eq!(timeline[0]["data"]["who"], "api:config:1");
    assert_eq!(
        timeline[1]["data"]["intent"],
        json!({ "kind": "local_disk" })
    );

    let first = timeline[0]["id"].as_i64().unwrap();
    let (_, page) = h
        .get(&format!(
            "/api/v1/machines/52:54:00:00:00:01/timeline?after={first}&limit=1"
        ))
        .await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0], timeline[1]);

    for (query, want) in [
        ("limit=0", "limit: 0 is out of range, use 1 to 1000"),
        ("limit=5000", "limit: 5000 is out of range, use 1 to 1000"),
        (
            "after=yesterday",
            "Failed to deserialize query string: after: invalid digit found in string",
        ),
    ] {
        let (status, body) = h
            .get(&format!("/api/v1/machines/node-1/timeline?{query}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_of(&body), want, "{query}");
    }
    assert_eq!(
        h.get("/api/v1/machines/nobody/timeline").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn profiles_crud_validation_and_references() {
    let h = Harness::new().await;
    let (status, created) = h
        .call(
            Method::PUT,
            "/api/v1/profiles/debian-12",
            Some(kernel_profile()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "debian-12");
    assert_eq!(created["loader"], "ipxe");
    assert_eq!(h.get("/api/v1/profiles/debian-12").await.1, created);
    assert!(h.state.fleet.snapshot().profiles.contains_key("debian-12"));

    let mut changed = kernel_profile();
    changed["cmdline"] = json!("quiet");
    changed["name"] = json!("debian-12");
    let (status, replaced) = h
        .call(Method::PUT, "/api/v1/profiles/debian-12", Some(changed))
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["cmdline"], "quiet");
    assert_eq!(
        replaced["created_at"], created["created_at"],
        "creation time kept"
    );

    let (status, script) = h
        .call(
            Method::PUT,
            "/api/v1/profiles/shell",
            Some(json!({ "ipxe_script": "#!ipxe\nshell" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{script}");
    let (_, list) = h.get("/api/v1/profiles").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["debian-12", "shell"]);

    for (name, body, want) in [
        (
            "empty",
            json!({}),
            "profile needs either `kernel` or `ipxe_script`",
        ),
        (
            "both",
            json!({ "kernel": "k", "ipxe_script": "#!ipxe" }),
            "profile takes `kernel` or `ipxe_script`, not both",
        ),
        (
            "pxe",
            json!({ "ipxe_script": "#!ipxe", "loader": "pxelinux" }),
            "a pxelinux profile cannot use `ipxe_script`",
        ),
        (
            "bad%20name",
            kernel_profile(),
            "name: invalid profile name \"bad name\"",
        ),
        (
            "one",
            json!({ "name": "two", "kernel": "k" }),
            "name: body says \"two\" but the path says \"one\"",
        ),
        (
            "x",
            json!({ "kernel": "k", "loader": "lilo" }),
            "invalid JSON body: loader: unknown variant `lilo`",
        ),
        (
            "x",
            json!({ "kernel": 7 }),
            "invalid JSON body: kernel: invalid type: integer `7`, expected a string",
        ),
    ] {
        let (status, got) = h
            .call(
                Method::PUT,
                &format!("/api/v1/profiles/{name}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name} {body} -> {got}");
        assert!(
            error_of(&got).starts_with(want),
            "{name}: got {:?}, want {want:?}",
            error_of(&got)
        );
    }
    assert_eq!(
        h.get("/api/v1/profiles/empty").await.0,
        StatusCode::NOT_FOUND
    );

    // Profiles referenced by a selector or a machine cannot be deleted.
    h.call(
        Method::PUT,
        "/api/v1/selectors/default",
        Some(json!({ "profile": "debian-12" })),
    )
    .await;
    let node = json!({ "name": "node-1", "macs": ["52:54:00:00:00:01"], "intent": { "kind": "menu", "entries": [{ "profile": "shell" }, { "profile": "debian-12" }] } });
    assert_eq!(
        h.call(Method::POST, "/api/v1/machines", Some(node)).await.0,
        StatusCode::CREATED
    );
    let (status, got) = h
        .call(Method::DELETE, "/api/v1/profiles/debian-12", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error_of(&got),
        "profile \"debian-12\" is still used by selectors default and machines node-1"
    );
    let (status, got) = h.call(Method::DELETE, "/api/v1/profiles/shell", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error_of(&got),
        "profile \"shell\" is still used by machines node-1"
    );

    h.call(
        Method::PUT,
        "/api/v1/machines/node-1/boot",
        Some(json!({ "kind": "local_disk" })),
    )
    .await;
    let (status, _) = h.call(Method::DELETE, "/api/v1/profiles/shell", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!h.state.fleet.snapshot().profiles.contains_key("shell"));
    assert_eq!(
        h.call(Method::DELETE, "/api/v1/profiles/shell", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Other events may be stored first: wait for the two checked below.
    let events = h
        .stored_events_matching(2, |e| {
            e.message == "profile \"debian-12\" created by api:config:1"
                || e.message == "profile \"shell\" deleted by api:config:1"
        })
        .await;
    let profile_events: Vec<String> = events
        .iter()
        .filter(|e| e.kind == EventKind::ProfileChanged && e.data["who"] == "api:config:1")
        .map(|e| e.message.clone())
        .collect();
    assert!(
        profile_events.contains(&"profile \"debian-12\" created by api:config:1".to_string()),
        "{profile_events:?}"
    );
    assert!(
        profile_events.contains(&"profile \"shell\" deleted by api:config:1".to_string()),
        "{profile_events:?}"
    );
}

#[tokio::test]
async fn boot_template_check_runs_by_default() {
    let h = Harness::new().await;
    for (body, field) in [
        (json!({ "kernel": "k", "cmdline": "x={{ mac" }), "cmdline"),
        (
            json!({ "kernel": "k", "cmdline": "x={{ machine.nmae }}" }),
            "cmdline",
        ),
        (json!({ "ipxe_script": "#!ipxe\n{% if %}" }), "ipxe_script"),
    ] {
        let (status, got) = h
            .call(Method::PUT, "/api/v1/profiles/broken", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {got}");
        assert!(error_of(&got).contains(field), "{body}: {}", error_of(&got));
    }
    assert_eq!(
        h.get("/api/v1/profiles/broken").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, got) = h
        .call(Method::PUT, "/api/v1/profiles/good", Some(kernel_profile()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{got}");
}

#[tokio::test]
async fn template_validator_hook_is_used() {
    let mut h = Harness::new().await;
    h.state.validate_templates = Arc::new(|p| {
        if p.cmdline.contains("{{") && !p.cmdline.contains("}}") {
            Err("cmdline: unclosed `{{`".into())
        } else {
            Ok(())
        }
    });
    let (status, got) = h
        .call(
            Method::PUT,
            "/api/v1/profiles/broken",
            Some(json!({ "kernel": "k", "cmdline": "x={{ mac" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&got), "cmdline: unclosed `{{`");
    assert_eq!(
        h.get("/api/v1/profiles/broken").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = h
        .call(
            Method::PUT,
            "/api/v1/profiles/fine",
            Some(json!({ "kernel": "k", "cmdline": "x={{ mac }}" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn selectors_crud_and_validation() {
    let h = Harness::new().await;
    put_profile(&h, "debian").await;
    put_profile(&h, "alma").await;
    let body = json!({ "profile": "debian", "match": { "label.rack": "r1", "arch": "uefi_x64" } });
    let (status, created) = h
        .call(Method::PUT, "/api/v1/selectors/rack1", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created,
        json!({ "name": "rack1", "profile": "debian", "match": { "arch": "uefi_x64", "label.rack": "r1" } })
    );
    assert_eq!(h.get("/api/v1/selectors/rack1").await.1, created);
    assert_eq!(h.state.fleet.snapshot().selectors.len(), 1);

    let (status, replaced) = h
        .call(
            Method::PUT,
            "/api/v1/selectors/rack1",
            Some(json!({ "profile": "alma" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        replaced,
        json!({ "name": "rack1", "profile": "alma", "match": {} })
    );
    h.call(
        Method::PUT,
        "/api/v1/selectors/all",
        Some(json!({ "profile": "debian" })),
    )
    .await;
    let (_, list) = h.get("/api/v1/selectors").await;
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].clone())
            .collect::<Vec<_>>(),
        [json!("all"), json!("rack1")]
    );

    for (name, body, want) in [
        (
            "s",
            json!({ "profile": "ghost" }),
            "profile: no profile named \"ghost\"",
        ),
        (
            "s",
            json!({ "profile": "debian", "match": { "colour": "red" } }),
            "unknown selector key \"colour\": use mac, uuid, arch, name, label.KEY or fact.KEY",
        ),
        (
            "s",
            json!({ "profile": "debian", "match": { "mac": "zz" } }),
            "selector key \"mac\" has invalid value \"zz\"",
        ),
        (
            "s",
            json!({ "profile": "debian", "match": { "fact.memory_gib": "lots" } }),
            "selector key \"fact.memory_gib\" has invalid value \"lots\": expected a number",
        ),
        (
            "s",
            json!({ "match": {} }),
            "invalid JSON body: missing field `profile`",
        ),
        (
            "bad!",
            json!({ "profile": "debian" }),
            "invalid selector name \"bad!\"",
        ),
    ] {
        let (status, got) = h
            .call(
                Method::PUT,
                &format!("/api/v1/selectors/{name}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {got}");
        assert!(
            error_of(&got).starts_with(want),
            "{body}: got {:?}",
            error_of(&got)
        );
    }

    assert_eq!(
        h.call(Method::DELETE, "/api/v1/selectors/rack1", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (status, got) = h.get("/api/v1/selectors/rack1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&got), "selector \"rack1\" not found");
    assert_eq!(
        h.call(Method::DELETE, "/api/v1/selectors/rack1", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(h.state.fleet.snapshot().selectors.len(), 1);
}

#[tokio::test]
async fn events_list_filters() {
    let h = Harness::new().await;
    let mac: rackboot_core::MacAddr = "52:54:00:00:00:07".parse().unwrap();
    for i in 0..5 {
        h.emit(NewEvent::new(EventKind::TftpSent, format!("sent {i}")).mac(mac));
        h.emit(NewEvent::new(EventKind::LeaseAcked, format!("acked {i}")));
    }
    let all = h.stored_events(10).await;
    let (status, body) = h.get("/api/v1/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::to_value(&all).unwrap());

    let (_, body) = h.get("/api/v1/events?kind=tftp_sent&limit=3").await;
    let messages: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["sent 0", "sent 1", "sent 2"]);
    let (_, body) = h
        .get(&format!(
            "/api/v1/events?mac=52-54-00-00-00-07&after={}",
            all[4].id
        ))
        .await;
    let messages: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["sent 3", "sent 4"]);

    for (query, want) in [
        (
            "kind=boom",
            "Failed to deserialize query string: kind: unknown variant `boom`",
        ),
        (
            "mac=zz",
            "Failed to deserialize query string: mac: invalid MAC address \"zz\"",
        ),
    ] {
        let (status, got) = h.get(&format!("/api/v1/events?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            error_of(&got).starts_with(want),
            "{query}: {}",
            error_of(&got)
        );
    }
    assert_eq!(
        h.get("/api/v1/events?machine=ghost").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn status_leases_and_metrics() {
    let mut h = Harness::new().await;
    put_profile(&h, "debian").await;
    create_machine(&h, "node-1", &["52:54:00:00:00:01"]).await;
    let now = rackboot_store::truncate_ms(Utc::now());
    let lease = |ip: [u8; 4], state| Lease {
        ip: ip.into(),
        mac: Some("52:54:00:00:00:01".parse().unwrap()),
        client_id: None,
        hostname: Some("node-1".into()),
        state,
        expires_at: now + chrono::TimeDelta::hours(1),
        subnet: "lab".into(),
        updated_at: now,
    };
    let leases = vec![
        lease([10, 0, 0, 9], LeaseState::Released),
        lease([10, 0, 0, 5], LeaseState::Bound),
    ];
    h.store.put_leases(&leases).await.unwrap();

    let (status, got) = h.get("/api/v1/leases").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, json!([leases[1], leases[0]]), "sorted by address");

    h.state.status = Arc::new(rackboot_api::StatusInfo {
        version: "9.9.9".into(),
        services: vec![rackboot_api::ServiceInfo {
            name: "dhcp".into(),
            enabled: false,
            detail: None,
        }],
        started_at: now,
        state_dir: None,
        instance: None,
    });
    let (status, got) = h.get("/api/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["version"], "9.9.9");
    assert_eq!(got["backend"], "sqlite");
    assert_eq!(
        got["services"],
        json!([{ "name": "dhcp", "enabled": false }])
    );
    assert_eq!(
        got["counts"],
        json!({ "machines": 1, "profiles": 1, "selectors": 0, "leases": 2, "leases_bound": 1 })
    );
    assert_eq!(got["events_dropped"], 0);

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    h.state.metrics = Some(recorder.handle());
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("rackboot_test_things_total").increment(3);
    });
    let req = axum::http::Request::builder()
        .uri("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = tower::ServiceExt::oneshot(h.app(), req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&text).contains("rackboot_test_things_total 3"),
        "{text:?}"
    );
}

#[tokio::test]
async fn oversized_body_is_413() {
    let h = Harness::new().await;
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(3 << 20));
    let (status, got) = h
        .call_raw(Method::POST, "/api/v1/machines", Some(huge), Some(TOKEN))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        error_of(&got).starts_with("request body too large: POST /api/v1/machines accepts at most"),
        "{got}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let h = Harness::new().await;
    let (status, got) = h.get("/api/v2/machines").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&got), "no route for GET /api/v2/machines");
    let (status, got) = h.call(Method::DELETE, "/api/v1/machines", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_of(&got), "DELETE is not allowed on /api/v1/machines");
}

#[test]
fn openapi_matches_golden_file() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = rackboot_api::openapi().to_pretty_json().unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} differs from the generated document; rerun with UPDATE_GOLDEN=1 and review the diff",
        golden.display()
    );
}

#[test]
fn openapi_documents_every_operation() {
    let doc = serde_json::to_value(rackboot_api::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut ops: Vec<String> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{m} {path}"))
        })
        .collect();
    ops.sort();
    assert_eq!(
        ops,
        [
            "delete /api/v1/images/{name}",
            "delete /api/v1/machines/{ref}",
            "delete /api/v1/machines/{ref}/maintenance",
            "delete /api/v1/os/{id}",
            "delete /api/v1/profiles/{name}",
            "delete /api/v1/selectors/{name}",
            "delete /api/v1/templates/{name}",
            "delete /api/v1/tokens/{name}",
            "delete /api/v1/webhooks/{name}",
            "delete /api/v1/workflow-definitions/{name}",
            "get /api/openapi.json",
            "get /api/v1/cluster",
            "get /api/v1/events",
            "get /api/v1/events/stream",
            "get /api/v1/images",
            "get /api/v1/images/{name}",
            "get /api/v1/installs",
            "get /api/v1/installs/{id}",
            "get /api/v1/leases",
            "get /api/v1/machines",
            "get /api/v1/machines/{ref}",
            "get /api/v1/machines/{ref}/power",
            "get /api/v1/machines/{ref}/render",
            "get /api/v1/machines/{ref}/status",
            "get /api/v1/machines/{ref}/timeline",
            "get /api/v1/machines/{ref}/transitions",
            "get /api/v1/machines:summary",
            "get /api/v1/os",
            "get /api/v1/profiles",
            "get /api/v1/profiles/{name}",
            "get /api/v1/selectors",
            "get /api/v1/selectors/{name}",
            "get /api/v1/status",
            "get /api/v1/templates",
            "get /api/v1/templates/{name}",
            "get /api/v1/tokens",
            "get /api/v1/webhooks",
            "get /api/v1/webhooks/{name}",
            "get /api/v1/webhooks/{name}/deliveries",
            "get /api/v1/whoami",
            "get /api/v1/workflow-definitions",
            "get /api/v1/workflows",
            "get /api/v1/workflows/{id}",
            "get /assets/{path}",
            "get /boot/grub/{mac}",
            "get /boot/ipxe/{mac}",
            "get /boot/loader/{name}",
            "get /boot/pxelinux/{mac}",
            "get /deploy/{workflow}/booted/{token}",
            "get /images/{path}",
            "get /install/{id}/done/{token}",
            "get /install/{id}/installed/{token}",
            "get /install/{id}/started/{token}",
            "get /install/{id}/{secret}/{file}",
            "get /metrics",
            "get /os/{path}",
            "get /ramdisk/{path}",
            "patch /api/v1/machines/{ref}",
            "post /agent/v1/attempts/{attempt}/progress",
            "post /agent/v1/attempts/{attempt}/result",
            "post /agent/v1/heartbeat",
            "post /agent/v1/hello",
            "post /agent/v1/log",
            "post /api/v1/images",
            "post /api/v1/machines",
            "post /api/v1/machines/{ref}/install",
            "post /api/v1/machines/{ref}/install-menu",
            "post /api/v1/machines/{ref}/power",
            "post /api/v1/machines:bulk",
            "post /api/v1/tokens",
            "post /api/v1/webhooks/{name}/test",
            "post /api/v1/workflows",
            "post /api/v1/workflows/{id}/abort",
            "post /api/v1/workflows/{id}/retry",
            "put /api/v1/machines/{ref}/boot",
            "put /api/v1/machines/{ref}/boot-device",
            "put /api/v1/machines/{ref}/maintenance",
            "put /api/v1/profiles/{name}",
            "put /api/v1/selectors/{name}",
            "put /api/v1/templates/{name}",
            "put /api/v1/webhooks/{name}",
            "put /api/v1/workflow-definitions",
        ]
    );
    // Token routes say so; open ones do not.
    assert_eq!(
        paths["/api/v1/machines"]["get"]["security"],
        json!([{ "bearer": [] }])
    );
    assert!(paths["/api/v1/machines"]["get"]["responses"]["401"].is_object());
    assert!(paths["/metrics"]["get"].get("security").is_none());
    for schema in [
        "Machine",
        "BootIntent",
        "Profile",
        "Selector",
        "Event",
        "Lease",
        "ErrorBody",
        "NewMachine",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
}
