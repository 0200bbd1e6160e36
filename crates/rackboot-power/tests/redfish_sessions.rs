//! Redfish paths sushy-tools does not exercise, against a small in-test Redfish
//! service on loopback: session login (X-Auth-Token, DELETE on close, a new login when
//! the token expires), reset types from a separate ActionInfo resource, If-Match on
//! PATCH, and systems without BootSourceOverrideMode. The service refuses basic auth,
//! so passing these tests proves the driver used its session.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use rackboot_power::{
    BmcTarget, BootDevice, BootMode, BootPersistence, PowerAction, PowerConfig, PowerController,
    PowerErrorKind, PowerState, driver_for,
};
use serde_json::{Value, json};

const ETAG: &str = "W/\"sys1-v7\"";

#[derive(Default)]
struct Mock {
    tokens: HashSet<String>,
    created: usize,
    deleted: usize,
    basic_attempts: usize,
    power: String,
    resets: Vec<String>,
    patches: Vec<(Option<String>, Value)>,
}

type Shared = Arc<Mutex<Mock>>;

fn authorized(mock: &Shared, headers: &HeaderMap) -> bool {
    let mut m = mock.lock().unwrap();
    if headers.contains_key("authorization") {
        m.basic_attempts += 1;
    }
    headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| m.tokens.contains(t))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {"message": "session required"}})),
    )
        .into_response()
}

async fn root() -> axum::Json<Value> {
    axum::Json(json!({
        "@odata.id": "/redfish/v1/",
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
        "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
        "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
    }))
}

async fn login(State(mock): State<Shared>, axum::Json(body): axum::Json<Value>) -> Response {
    if body["UserName"] != "root" || body["Password"] != "calvin" {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"error": {"@Message.ExtendedInfo": [{"Message": "Invalid credentials"}]}}),
            ),
        )
            .into_response();
    }
    let mut m = mock.lock().unwrap();
    m.created += 1;
    let id = m.created;
    let token = format!("token-{id}");
    m.tokens.insert(token.clone());
    (
        StatusCode::CREATED,
        [
            ("X-Auth-Token", token),
            (
                "Location",
                format!("/redfish/v1/SessionService/Sessions/{id}"),
            ),
        ],
        axum::Json(json!({"@odata.id": format!("/redfish/v1/SessionService/Sessions/{id}")})),
    )
        .into_response()
}

async fn logout(
    State(mock): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&mock, &headers) {
        return unauthorized();
    }
    let mut m = mock.lock().unwrap();
    m.tokens.remove(&format!("token-{id}"));
    m.deleted += 1;
    StatusCode::NO_CONTENT.into_response()
}

async fn systems(State(mock): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&mock, &headers) {
        return unauthorized();
    }
    axum::Json(json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]})).into_response()
}

async fn system(State(mock): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&mock, &headers) {
        return unauthorized();
    }
    let power = mock.lock().unwrap().power.clone();
    (
        [("ETag", ETAG)],
        axum::Json(json!({
            "@odata.id": "/redfish/v1/Systems/1",
            "Manufacturer": "Mock Vendor",
            "Model": "MX-1",
            "PowerState": power,
            "Boot": {
                "BootSourceOverrideTarget": "None",
                "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Hdd"]
            },
            "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                "@Redfish.ActionInfo": "/redfish/v1/Systems/1/ResetActionInfo"
            }},
            "Links": {"ManagedBy": [{"@odata.id": "/redfish/v1/Managers/bmc"}]}
        })),
    )
        .into_response()
}

async fn patch_system(
    State(mock): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&mock, &headers) {
        return unauthorized();
    }
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ok = if_match.as_deref() == Some(ETAG);
    mock.lock().unwrap().patches.push((if_match, body));
    if ok {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::PRECONDITION_FAILED.into_response()
    }
}

async fn action_info(State(mock): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&mock, &headers) {
        return unauthorized();
    }
    axum::Json(
        json!({"Parameters": [{"Name": "ResetType", "Required": true,
        "AllowableValues": ["On", "ForceOff", "PowerCycle"]}]}),
    )
    .into_response()
}

async fn manager(State(mock): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&mock, &headers) {
        return unauthorized();
    }
    axum::Json(json!({"FirmwareVersion": "2.81"})).into_response()
}

async fn reset(
    State(mock): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if !authorized(&mock, &headers) {
        return unauthorized();
    }
    let kind = body["ResetType"].as_str().unwrap_or_default().to_string();
    let mut m = mock.lock().unwrap();
    m.resets.push(kind.clone());
    match kind.as_str() {
        "On" | "PowerCycle" => m.power = "On".into(),
        "ForceOff" => m.power = "Off".into(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"message": format!("ResetType {kind} not allowed")}})),
            )
                .into_response();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn serve() -> (Shared, u16, tokio::task::JoinHandle<()>) {
    let mock: Shared = Arc::new(Mutex::new(Mock {
        power: "Off".into(),
        ..Mock::default()
    }));
    let app = Router::new()
        .route("/redfish/v1/", get(root))
        .route("/redfish/v1/SessionService/Sessions", post(login))
        .route("/redfish/v1/SessionService/Sessions/{id}", delete(logout))
        .route("/redfish/v1/Systems", get(systems))
        .route("/redfish/v1/Systems/1", get(system).patch(patch_system))
        .route("/redfish/v1/Systems/1/ResetActionInfo", get(action_info))
        .route(
            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            post(reset),
        )
        .route("/redfish/v1/Managers/bmc", get(manager))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (mock, port, task)
}

fn target(port: u16, password: &str) -> BmcTarget {
    format!("redfish://root@127.0.0.1:{port}")
        .parse::<BmcTarget>()
        .unwrap()
        .with_password(password)
}

#[tokio::test]
async fn session_login_use_and_logout() {
    let (mock, port, server) = serve().await;
    let driver = driver_for(&target(port, "calvin")).unwrap();
    let info = driver.ping().await.unwrap();
    assert_eq!(
        (
            info.vendor.as_deref(),
            info.model.as_deref(),
            info.firmware.as_deref()
        ),
        (Some("Mock Vendor"), Some("MX-1"), Some("2.81"))
    );
    assert_eq!(driver.power_state().await.unwrap(), PowerState::Off);
    // Reset types come from the ActionInfo resource: cycle is PowerCycle here.
    driver.power(PowerAction::Cycle).await.unwrap();
    let err = driver.power(PowerAction::SoftOff).await.unwrap_err();
    assert_eq!(err.kind(), PowerErrorKind::Unsupported, "{err}");
    assert!(
        err.to_string().contains("On, ForceOff, PowerCycle"),
        "{err}"
    );

    // No BootSourceOverrideMode on this system: the mode is left out; If-Match sent.
    driver
        .set_boot_device(BootDevice::Pxe, BootPersistence::Once, Some(BootMode::Uefi))
        .await
        .unwrap();
    driver.close().await;
    {
        let m = mock.lock().unwrap();
        assert_eq!(
            (m.created, m.deleted),
            (1, 1),
            "one session, deleted on close"
        );
        assert!(m.tokens.is_empty());
        assert_eq!(m.basic_attempts, 0, "never fell back to basic auth");
        assert_eq!(m.resets, ["PowerCycle"]);
        assert_eq!(m.patches.len(), 1);
        assert_eq!(m.patches[0].0.as_deref(), Some(ETAG));
        assert_eq!(
            m.patches[0].1,
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
        );
    }
    server.abort();
}

#[tokio::test]
async fn expired_session_logs_in_again() {
    let (mock, port, server) = serve().await;
    let driver = driver_for(&target(port, "calvin")).unwrap();
    assert_eq!(driver.power_state().await.unwrap(), PowerState::Off);
    mock.lock().unwrap().tokens.clear(); // the BMC forgets the session
    driver.power(PowerAction::On).await.unwrap();
    assert_eq!(driver.power_state().await.unwrap(), PowerState::On);
    assert_eq!(mock.lock().unwrap().created, 2);
    server.abort();
}

#[tokio::test]
async fn rejected_login_is_authentication_and_controller_verifies() {
    let (mock, port, server) = serve().await;
    let err = driver_for(&target(port, "wrong"))
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PowerErrorKind::Authentication, "{err}");
    assert!(err.to_string().contains("Invalid credentials"), "{err}");
    assert!(!err.to_string().contains("wrong"), "{err}");

    let controller = PowerController::new(PowerConfig::default());
    let out = controller
        .power(&target(port, "calvin"), PowerAction::On)
        .await
        .unwrap();
    assert_eq!(out.final_state, Some(PowerState::On));
    let m = mock.lock().unwrap();
    assert_eq!(m.created, m.deleted, "the controller closes its sessions");
    server.abort();
}
