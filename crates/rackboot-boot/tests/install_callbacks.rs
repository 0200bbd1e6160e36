//! The installer's two callbacks through the boot HTTP router: "installed"
//! (the installer's last step) moves the machine to its disk, switches its
//! BMC to disk boot through the power controller, and leaves the install
//! `installed`; "done" (the installed system's first boot) completes it.
//! Both idempotent; a wrong token is a 404.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use http_body_util::BodyExt;
use rackboot_boot::{BootConfig, BootService, router};
use rackboot_core::{
    Bmc, BootIntent, BoundLeases, EventHub, EventKind, InstallRequest, InstallState,
};
use rackboot_fleet::Fleet;
use rackboot_power::fake::FakeBmc;
use rackboot_power::{BootDevice, BootPersistence, PowerConfig, PowerController};
use rackboot_seal::SecretKey;
use tower::ServiceExt;

const MAC: &str = "52:54:00:12:34:70";
const BMC: &str = "rb-boot-install-callbacks";

/// The address rackboot leased to the machine: its callbacks come from there.
const LEASED: &str = "10.77.0.107";

async fn send(service: &Arc<BootService>, method: &str, uri: &str) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "10.77.0.1:8080")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
            LEASED.parse().unwrap(),
            40_000,
        )));
    let resp = router(service.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn installed_then_done_with_the_bmc_switched_to_disk() {
    rackboot_power::fake::enable();
    FakeBmc::remove(BMC);
    let install_id = uuid::Uuid::from_u128(0x77);
    let mut m = machine(
        "node7",
        MAC,
        BootIntent::Install {
            id: install_id,
            os: "debian-12-amd64".into(),
        },
    );
    m.bmc = Some(Bmc {
        address: format!("fake://{BMC}"),
        username: "admin".into(),
        insecure_tls: false,
        sealed_password: None,
    });
    let store = Arc::new(MemStore::default());
    *store.machines.lock().unwrap() = vec![m.clone()];
    let install = InstallRequest {
        id: install_id,
        machine: m.id,
        os: "debian-12-amd64".into(),
        template: None,
        vars: serde_json::json!({"vars": {}}),
        token: "tok7".into(),
        state: InstallState::Pending,
        requested_at: chrono::Utc::now(),
        completed_at: None,
    };
    *store.installs.lock().unwrap() = vec![install.clone()];
    let (hub, queue) = EventHub::new(4096);
    let events = collect_events(queue);
    let fleet = Fleet::load(store.clone(), None, hub).await.unwrap();
    let leases = BoundLeases::default();
    leases.set(MAC.parse().unwrap(), LEASED.parse().unwrap());
    let service = BootService::with_parts(
        fleet,
        BootConfig::default(),
        Some(Arc::new(SecretKey::generate())),
        leases,
    )
    .unwrap();
    service.set_power_controller(Arc::new(PowerController::new(PowerConfig::default())));
    let base = format!("/install/{install_id}");

    let (status, body) = send(&service, "POST", &format!("{base}/installed/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = send(&service, "POST", &format!("{base}/installed/tok7")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("the machine boots its disk now"), "{body}");
    let stored = store.installs.lock().unwrap()[0].clone();
    assert_eq!(stored.state, InstallState::Installed);
    assert_eq!(stored.completed_at, None);
    assert_eq!(
        store.machines.lock().unwrap()[0].intent,
        BootIntent::LocalDisk
    );
    // The installer's files are gone: it cannot run again by accident.
    let secret = rackboot_boot::access::files_secret(&install);
    let (status, _) = send(&service, "GET", &format!("{base}/{secret}/preseed.cfg")).await;
    assert_eq!(status, StatusCode::GONE);
    // The BMC boots the disk from now on (set in the background).
    let mut boot = None;
    for _ in 0..100 {
        boot = FakeBmc::get(BMC).boot();
        if boot.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let boot = boot.expect("the BMC's boot device was not set");
    assert_eq!(boot.device, BootDevice::Disk);
    assert_eq!(boot.persistence, BootPersistence::Persistent);
    // Idempotent.
    let (status, body) = send(&service, "POST", &format!("{base}/installed/tok7")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("already installed"), "{body}");

    // The installed system's first boot completes it.
    let (status, body) = send(&service, "GET", &format!("{base}/done/tok7")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("completed"), "{body}");
    assert_eq!(
        store.installs.lock().unwrap()[0].state,
        InstallState::Completed
    );
    let (_, body) = send(&service, "POST", &format!("{base}/done/tok7")).await;
    assert!(body.contains("already completed"), "{body}");
    let (_, body) = send(&service, "POST", &format!("{base}/installed/tok7")).await;
    assert!(body.contains("already completed"), "{body}");

    let want = [
        EventKind::MachineChanged,
        EventKind::BootDeviceSet,
        EventKind::MachineBooted,
        EventKind::InstallCompleted,
    ];
    // Events reach the list through a task (the BMC's in the background):
    // wait for one of each, then a short settle so a duplicate would show.
    for _ in 0..250 {
        if want.iter().all(|k| count_of(&events, *k) >= 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kinds: Vec<EventKind> = events.lock().unwrap().iter().map(|e| e.kind).collect();
    for kind in want {
        assert_eq!(
            kinds.iter().filter(|k| **k == kind).count(),
            1,
            "{kind:?} in {kinds:?}"
        );
    }
}
