//! Who gets a pending install's boot script, files and callbacks, through
//! the boot HTTP router and the TFTP config generator, on a real (SQLite)
//! store: only the machine's address (rackboot's lease of it, or the first
//! asker when rackboot leases nothing), only under the install's secret, and
//! only until its installer reports started or its window ends. Every
//! refusal carries none of the install's secrets.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use common::machine;
use http_body_util::BodyExt;
use rackboot_boot::{BootConfig, BootService, ServedSubnet, router};
use rackboot_core::{
    BootIntent, BoundLeases, EventHub, EventKind, GeneratedFile, InstallRequest, InstallState,
    MacAddr, TftpContent,
};
use rackboot_fleet::Fleet;
use rackboot_store::{InstallAccess, Store};
use tower::ServiceExt;

const MAC: &str = "52:54:00:15:00:0a";
const A: &str = "10.77.0.101";
const B: &str = "10.77.0.200";
const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv1sCq0b4vYtq9pS8b1jFh1Kq6YwJ7cT4Jx0h2mZ0aB ops@install-access";
const ROOT_HASH: &str = "$6$rackboot$2bM1Xw0dYhV0B5Zb3h7u9c6sVnq1Wq3z1yA4oQ2m8F6eTzQnq0Yy0dG5mK8hJbXwE1vC3sZ4rT7uI9oP2lK6j/";
const TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

struct Setup {
    service: Arc<BootService>,
    store: Arc<dyn Store>,
    leases: BoundLeases,
    install: uuid::Uuid,
    machine: rackboot_core::MachineId,
    /// What the services emitted (nothing persists them here).
    events: std::sync::Mutex<rackboot_core::EventPersistQueue>,
    catalog: std::path::PathBuf,
    config: BootConfig,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// The `access_refused` events emitted since the last call: (reason, asked, peer).
    fn refusal_events(&self) -> Vec<(String, String, String)> {
        let mut batch = Vec::new();
        self.events
            .lock()
            .unwrap()
            .take_ready(&mut batch, usize::MAX);
        batch
            .into_iter()
            .filter(|e| e.kind == EventKind::AccessRefused)
            .map(|e| {
                assert_eq!(e.machine, Some(self.machine), "{e:?}");
                assert_eq!(e.mac, Some(MAC.parse().unwrap()), "{e:?}");
                let text = |k: &str| e.data[k].as_str().unwrap_or_default().to_string();
                (text("reason"), text("asked"), text("peer"))
            })
            .collect()
    }
}

/// A small Debian install medium imported into a fresh OS catalog; returns
/// the catalog directory (release `debian-12.5.0-amd64`).
fn debian_catalog(dir: &std::path::Path) -> std::path::PathBuf {
    let tree = dir.join("medium");
    let files: [(&str, &[u8]); 5] = [
        (
            ".disk/info",
            b"Debian GNU/Linux 12.5.0 \"Bookworm\" - Official amd64 NETINST with firmware 20240210-11:27",
        ),
        (".disk/base_installable", b""),
        ("install.amd/vmlinuz", b"kernel"),
        ("install.amd/initrd.gz", b"initrd"),
        (
            "dists/bookworm/Release",
            b"Origin: Debian\nLabel: Debian\nSuite: stable\nVersion: 12.5\nCodename: bookworm\n",
        ),
    ];
    for (path, body) in files {
        let path = tree.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let catalog = dir.join("os");
    std::fs::create_dir_all(&catalog).unwrap();
    let release = rackboot_oscatalog::import(&tree, &catalog, &|_| {}).expect("import");
    assert_eq!(release.id, "debian-12.5.0-amd64");
    catalog
}

/// A machine with a pending Debian install (root password hash and SSH key
/// as its secrets); `dhcp`: rackboot's DHCP serves 10.77.0.0/24.
async fn setup(dhcp: bool, access: Option<InstallAccess>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let catalog = debian_catalog(dir.path());
    let store = rackboot_store::open_sqlite_in_memory().await.unwrap();
    let id = uuid::Uuid::new_v4();
    let os = "debian-12.5.0-amd64";
    let m = machine("node-a", MAC, BootIntent::Install { id, os: os.into() });
    store.create_machine(&m).await.unwrap();
    store
        .create_install(&InstallRequest {
            id,
            machine: m.id,
            os: os.into(),
            template: None,
            vars: serde_json::json!({"vars": {
                "root_password_hash": ROOT_HASH,
                "ssh_authorized_keys": [SSH_KEY],
            }}),
            token: TOKEN.into(),
            state: InstallState::Pending,
            requested_at: chrono::Utc::now(),
            completed_at: None,
        })
        .await
        .unwrap();
    if let Some(a) = access {
        store
            .bind_install_access(&InstallAccess { install: id, ..a })
            .await
            .unwrap();
    }
    let (hub, queue) = EventHub::new(4096);
    let fleet = Fleet::load(store.clone(), Some(catalog.clone()), hub)
        .await
        .unwrap();
    let mut config = BootConfig::default();
    if dhcp {
        config.served_subnets = vec![ServedSubnet {
            network: "10.77.0.0".parse().unwrap(),
            prefix: 24,
            offer: Default::default(),
        }];
    }
    let leases = BoundLeases::default();
    let service = BootService::with_parts(fleet, config.clone(), None, leases.clone()).unwrap();
    Setup {
        service,
        store,
        leases,
        install: id,
        machine: m.id,
        events: std::sync::Mutex::new(queue),
        catalog,
        config,
        _dir: dir,
    }
}

async fn send(
    service: &Arc<BootService>,
    method: &str,
    uri: &str,
    from: &str,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "10.77.0.1:8080")
        .body(Body::empty())
        .unwrap();
    let peer: IpAddr = from.parse().unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(peer, 40_000)));
    let resp = router(service.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Another server on the same store (a cluster's), with its own fleet,
/// caches and DHCP leases (none).
async fn second_server(s: &Setup) -> Arc<BootService> {
    let (hub, _queue) = EventHub::new(4096);
    let fleet = Fleet::load(s.store.clone(), Some(s.catalog.clone()), hub)
        .await
        .unwrap();
    BootService::with_parts(fleet, s.config.clone(), None, BoundLeases::default()).unwrap()
}

/// A TFTP-generated file as TFTP asks for it: on a thread outside the
/// service's runtime.
async fn tftp_on_thread(service: &Arc<BootService>, path: &str, from: &str) -> String {
    let (service, path, from) = (service.clone(), path.to_string(), from.parse().unwrap());
    let file = tokio::task::spawn_blocking(move || service.generate_for(&path, from))
        .await
        .unwrap();
    match file {
        GeneratedFile::Content(bytes) => String::from_utf8(bytes).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn tftp(service: &BootService, path: &str, from: &str) -> String {
    match service.generate_for(path, from.parse().unwrap()) {
        GeneratedFile::Content(bytes) => String::from_utf8(bytes).unwrap(),
        other => panic!("{path} for {from}: {other:?}"),
    }
}

/// The install file URL path in a boot script: `/install/<id>/<secret>/preseed.cfg`.
fn file_path(script: &str, id: uuid::Uuid) -> String {
    let marker = format!("/install/{id}/");
    let at = script
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in\n{script}"));
    let rest = &script[at..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].to_string()
}

/// Nothing of the install's secrets in a refusal.
fn assert_nothing_secret(body: &str, secret: &str) {
    for s in [SSH_KEY, ROOT_HASH, TOKEN, secret] {
        assert!(!body.contains(s), "{s:?} leaked in\n{body}");
    }
}

#[tokio::test]
async fn without_a_lease_the_first_asker_is_bound_and_nobody_else_gets_anything() {
    let s = setup(false, None).await;
    let id = s.install;
    let script_url = format!("/boot/ipxe/{MAC}");
    let (status, script) = send(&s.service, "GET", &script_url, A).await;
    assert_eq!(status, StatusCode::OK, "{script}");
    let file = file_path(&script, id);
    let secret = file.split('/').nth(3).unwrap().to_string();
    assert_eq!(
        secret.len(),
        rackboot_boot::access::FILES_SECRET_LEN,
        "{file}"
    );
    let bound = s.store.get_install_access(id).await.unwrap().unwrap();
    assert_eq!(bound.bound_ip.to_string(), A);

    // Host B: A's script, A's real file URL, guessed URLs, the TFTP configs.
    let (status, body) = send(&s.service, "GET", &script_url, B).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_nothing_secret(&body, &secret);
    for path in [
        format!("/boot/grub/{MAC}"),
        format!("/boot/pxelinux/{MAC}"),
        file.clone(),
    ] {
        let (status, body) = send(&s.service, "GET", &path, B).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_nothing_secret(&body, &secret);
    }
    for guessed in [
        format!("/install/{id}/preseed.cfg"),
        format!("/install/{id}/{}/preseed.cfg", "0".repeat(32)),
    ] {
        for from in [A, B] {
            let (status, body) = send(&s.service, "GET", &guessed, from).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{guessed} from {from}: {body}"
            );
            assert_nothing_secret(&body, &secret);
        }
    }
    let mac_dashed = MAC.replace(':', "-");
    for path in [
        format!("pxelinux.cfg/01-{mac_dashed}"),
        format!("grub/grub.cfg-01-{mac_dashed}"),
    ] {
        let config = match s.service.generate_for(&path, B.parse().unwrap()) {
            GeneratedFile::Content(bytes) => String::from_utf8(bytes).unwrap(),
            _ => String::new(),
        };
        assert_nothing_secret(&config, &secret);
    }
    assert!(
        tftp(&s.service, &format!("pxelinux.cfg/01-{mac_dashed}"), A).contains(&secret),
        "the machine's own pxelinux config carries its file URL"
    );
    // On the machine's timeline: one event per reason, however many
    // refusals (B was refused 6 times for its address, A and B 4 times for
    // a wrong secret).
    let mut refusals = s.refusal_events();
    refusals.sort();
    assert_eq!(
        refusals,
        [
            ("bad_secret".into(), "file".into(), A.into()),
            ("wrong_address".into(), "script".into(), B.into()),
        ],
        "one access_refused event per machine and reason a minute"
    );

    // The machine gets its file, with the callbacks' token.
    let (status, preseed) = send(&s.service, "GET", &file, A).await;
    assert_eq!(status, StatusCode::OK, "{preseed}");
    assert!(
        preseed.contains(ROOT_HASH) && preseed.contains(TOKEN),
        "{preseed}"
    );

    // B with the token (as if it had seen it): no callback moves A.
    let base = format!("/install/{id}");
    for kind in ["started", "installed", "done"] {
        let (status, body) = send(&s.service, "POST", &format!("{base}/{kind}/{TOKEN}"), B).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind}: {body}");
    }
    let (status, _) = send(&s.service, "POST", &format!("{base}/installed/nope"), A).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let intent = s.store.get_machine(s.machine).await.unwrap().intent;
    assert!(matches!(intent, BootIntent::Install { .. }), "{intent:?}");

    // started closes the files: the script and the file are gone, even for A.
    let (status, body) = send(&s.service, "POST", &format!("{base}/started/{TOKEN}"), A).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for path in [script_url.clone(), file.clone()] {
        let (status, body) = send(&s.service, "GET", &path, A).await;
        assert_eq!(status, StatusCode::GONE, "{path}: {body}");
        assert_nothing_secret(&body, &secret);
    }
    let config = tftp(&s.service, &format!("pxelinux.cfg/01-{mac_dashed}"), A);
    assert_nothing_secret(&config, &secret);
    // B's callbacks were held back (wrong_address had its event this
    // minute); the closed window is a new reason.
    assert_eq!(
        s.refusal_events(),
        [("closed".into(), "script".into(), A.into())]
    );

    // installed from the machine, repeated; done from the installed
    // system's new address once, then from there or the machine only.
    for _ in 0..2 {
        let (status, body) =
            send(&s.service, "POST", &format!("{base}/installed/{TOKEN}"), A).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = send(&s.service, "POST", &format!("{base}/installed/{TOKEN}"), B).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let c = "10.77.0.50";
    let (status, body) = send(&s.service, "POST", &format!("{base}/done/{TOKEN}"), c).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("completed"), "{body}");
    let (status, body) = send(&s.service, "POST", &format!("{base}/done/{TOKEN}"), B).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    for from in [c, A] {
        let (status, body) = send(&s.service, "POST", &format!("{base}/done/{TOKEN}"), from).await;
        assert_eq!(status, StatusCode::OK, "{from}: {body}");
        assert!(body.contains("already completed"), "{body}");
    }
    let recorded = s.store.get_install_access(id).await.unwrap().unwrap();
    assert_eq!(
        recorded.done_ip.map(|ip| ip.to_string()).as_deref(),
        Some(c)
    );
    assert!(recorded.closed_at.is_some());
}

#[tokio::test]
async fn with_rackboots_dhcp_only_the_leased_address_is_served() {
    let s = setup(true, None).await;
    let script_url = format!("/boot/ipxe/{MAC}");
    // The machine has no lease yet: another host on the subnet gets nothing,
    // and is not bound.
    let (status, body) = send(&s.service, "GET", &script_url, B).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!body.contains("/install/"), "{body}");
    assert_eq!(s.store.get_install_access(s.install).await.unwrap(), None);

    let mac: MacAddr = MAC.parse().unwrap();
    s.leases.set(mac, A.parse().unwrap());
    let (status, body) = send(&s.service, "GET", &script_url, B).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, script) = send(&s.service, "GET", &script_url, A).await;
    assert_eq!(status, StatusCode::OK, "{script}");
    let file = file_path(&script, s.install);
    let (status, body) = send(&s.service, "GET", &file, B).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = send(&s.service, "GET", &file, A).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An IPv4 client seen through an IPv6 socket is the same client.
    let (status, _) = send(&s.service, "GET", &file, &format!("::ffff:{A}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_files_expire_after_their_window() {
    let first = chrono::Utc::now() - chrono::Duration::seconds(3600);
    let s = setup(
        false,
        Some(InstallAccess {
            install: uuid::Uuid::nil(),
            bound_ip: A.parse().unwrap(),
            first_fetch_at: first,
            closed_at: None,
            done_ip: None,
        }),
    )
    .await;
    let (status, body) = send(&s.service, "GET", &format!("/boot/ipxe/{MAC}"), A).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert!(body.contains("request the install again"), "{body}");
    assert!(!body.contains("/install/"), "{body}");
    // The installer may still report (its callbacks are not the files).
    let (status, body) = send(
        &s.service,
        "POST",
        &format!("/install/{}/installed/{TOKEN}", s.install),
        A,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Two servers on one store (a cluster): the machine's binding, made when
/// server 1 served its script (server 1's DHCP leased it A), is what server
/// 2's TFTP follows, though server 2 leased it nothing and had not seen the
/// binding; and when the installer reports started through server 1, server
/// 2's TFTP stops serving the install at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_servers_tftp_follows_the_binding_in_the_store() {
    let s = setup(true, None).await;
    let other = second_server(&s).await;
    s.leases.set(MAC.parse().unwrap(), A.parse().unwrap());
    let (status, script) = send(&s.service, "GET", &format!("/boot/ipxe/{MAC}"), A).await;
    assert_eq!(status, StatusCode::OK, "{script}");
    let file = file_path(&script, s.install);
    let secret = file.split('/').nth(3).unwrap().to_string();

    let config = format!("pxelinux.cfg/01-{}", MAC.replace(':', "-"));
    let served = tftp_on_thread(&other, &config, A).await;
    assert!(
        served.contains(&secret),
        "server 2 refused the machine bound through server 1:\n{served}"
    );
    let refused = tftp_on_thread(&other, &config, B).await;
    assert_nothing_secret(&refused, &secret);

    let started = format!("/install/{}/started/{TOKEN}", s.install);
    let (status, body) = send(&s.service, "POST", &started, A).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let closed = tftp_on_thread(&other, &config, A).await;
    assert_nothing_secret(&closed, &secret);
    assert!(closed.contains("closed"), "{closed}");
}
