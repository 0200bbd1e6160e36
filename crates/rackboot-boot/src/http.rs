//! The boot HTTP server: per-machine iPXE scripts and GRUB/pxelinux configs
//! rendered on request, loader binaries for UEFI HTTP boot, and assets
//! (kernels, initrds, images) with Range support.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body::{Body as HttpBody, Frame, SizeHint};
use metrics::counter;
use rackboot_core::{EventHub, EventKind, MacAddr, NewEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_http::services::ServeDir;

use crate::config::is_safe_url_text;
use crate::file_serve::{self, Served};
use crate::regular_files::RegularFiles;
use crate::render::{BootPlan, ServerUrls, render_grub, render_ipxe, render_pxelinux};
use crate::service::BootService;

/// Routes of the boot HTTP server:
/// - `GET /boot/ipxe/{mac}`: the machine's iPXE script (an unknown MAC is recorded
///   under the discover policy and gets the discovery script);
/// - `GET /boot/grub/{mac}`, `GET /boot/pxelinux/{mac}`: the same intent as GRUB or
///   pxelinux config (the pxelinux one is for debugging and records nothing);
/// - `GET /boot/loader/{name}`: a configured loader file (UEFI HTTP boot);
/// - `GET|HEAD /assets/{*path}`: files under `asset_dir`, with Range requests;
/// - `GET|HEAD /ramdisk/{*path}`: the agent's RAM-disk (no secrets: the
///   per-boot token is only in the boot script);
/// - `GET|HEAD /images/{*path}`: the image catalog (manifests and frames), with Range;
/// - `GET|HEAD /os/{*path}`: imported OS trees (the OS catalog), with Range;
/// - `GET /install/{id}/{secret}/{file}`: a pending install's rendered
///   unattended file (and companions such as `meta-data`), under the
///   install's secret, to the machine's address, for a short window (see
///   [`crate::access`]); `/install/{id}/{file}` is refused;
/// - `GET|POST /install/{id}/started/{token}`: the installer read its file (its
///   files close);
/// - `GET|POST /install/{id}/installed/{token}`: the installer finished; the machine boots its
///   disk from now on (and its BMC, if it has one, is told so);
/// - `GET|POST /install/{id}/done/{token}`: the completion callback (the installed system's
///   first boot, or the installer's last step).
pub fn router(service: Arc<BootService>) -> Router {
    Router::new()
        .route("/boot/ipxe/{mac}", get(ipxe_script))
        .route("/boot/grub/{mac}", get(grub_config))
        .route("/boot/pxelinux/{mac}", get(pxelinux_config))
        .route("/boot/loader/{*name}", get(loader))
        .route("/assets/{*path}", get(asset))
        .route("/ramdisk/{*path}", get(ramdisk_file))
        .route("/images/{*path}", get(image_file))
        .route("/os/{*path}", get(crate::install_http::os_file))
        .route(
            "/install/{id}/started/{token}",
            get(crate::install_http::started).post(crate::install_http::started),
        )
        .route(
            "/install/{id}/installed/{token}",
            get(crate::install_http::installed).post(crate::install_http::installed),
        )
        .route(
            "/install/{id}/done/{token}",
            get(crate::install_http::done).post(crate::install_http::done),
        )
        .route(
            "/install/{id}/{secret}/{file}",
            get(crate::install_http::install_file),
        )
        .route(
            "/install/{id}/{file}",
            get(crate::install_http::install_file_without_secret),
        )
        .with_state(service)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled, within
/// the default [`crate::ConnLimits::BOOT`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<BootService>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::conn::serve_http(
        listener,
        router(service),
        crate::conn::ConnLimits::BOOT,
        "http",
        async move { shutdown.cancelled().await },
    )
    .await
}

pub(crate) fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            // Scripts follow the machine's intent, which changes: never cache.
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The base URL the client used: `public_url`, else its `Host` header (the DHCP
/// reply told it `http://IP:PORT/...`). The host goes into scripts, so it must be
/// plain host[:port] text.
/// A refusal: status and a one-line reason, sent as text.
pub(crate) struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        text(self.0, self.1)
    }
}

pub(crate) fn base_url(service: &BootService, headers: &HeaderMap) -> Result<String, Refusal> {
    if let Some(url) = &service.config().public_url {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains('/') && is_safe_url_text(h))
        .ok_or_else(|| {
            Refusal(
                StatusCode::BAD_REQUEST,
                "missing or invalid Host header (or set boot.public_url)\n".into(),
            )
        })?;
    Ok(format!("http://{host}"))
}

fn parse_mac(s: &str) -> Result<MacAddr, Refusal> {
    s.parse::<MacAddr>()
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("{e}\n")))
}

type Renderer = fn(&rackboot_core::Machine, MacAddr, &BootPlan, &ServerUrls) -> String;

async fn script(
    service: &BootService,
    headers: &HeaderMap,
    mac: &str,
    peer: Option<std::net::IpAddr>,
    format: &'static str,
    record: bool,
    render: Renderer,
) -> Response {
    let (mac, base) = match (parse_mac(mac), base_url(service, headers)) {
        (Ok(mac), Ok(base)) => (mac, base),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let snapshot = service.inventory().snapshot();
    let resolved = service.resolve(&snapshot, mac, None, None, record);
    if let Err(r) = admit_script(service, &resolved, mac, peer).await {
        return r.into_response();
    }
    respond_script(service, &base, mac, resolved, format, render)
}

/// A script whose plan carries install URLs goes only to the machine's
/// address, within its install's window (see [`crate::access`]).
async fn admit_script(
    service: &BootService,
    resolved: &crate::service::Resolved,
    mac: MacAddr,
    peer: Option<std::net::IpAddr>,
) -> Result<(), Refusal> {
    let installs = resolved.plan.installs();
    if installs.is_empty() {
        return Ok(());
    }
    service
        .admit_install_fetch(
            crate::install_gate::Asked::Script,
            &installs,
            Some(&resolved.machine),
            Some(mac),
            peer,
        )
        .await
}

/// Renders `resolved` and records the `script_served` event.
fn respond_script(
    service: &BootService,
    base: &str,
    mac: MacAddr,
    resolved: crate::service::Resolved,
    format: &'static str,
    render: Renderer,
) -> Response {
    let body = render(
        &resolved.machine,
        mac,
        &resolved.plan,
        &service.server_urls_for(base, mac),
    );
    counter!("rackboot_boot_scripts_served_total", "format" => format).increment(1);
    let mut event = NewEvent::new(
        EventKind::ScriptServed,
        format!(
            "served {format} script to {} ({mac}) over http: {}",
            resolved.machine.name,
            resolved.plan.kind()
        ),
    )
    .mac(mac)
    .data(json!({
        "format": format,
        "via": "http",
        "intent": crate::service::intent_kind(&resolved.machine.intent),
        "plan": resolved.plan.kind(),
        "profile": match &resolved.plan { BootPlan::Profile(p) => Some(p.name.clone()), _ => None },
        "known": resolved.known,
    }));
    if resolved.known {
        event = event.machine(resolved.machine.id);
    }
    service.events().emit(event);
    text(StatusCode::OK, body)
}

/// The iPXE script. A machine whose workflow needs the agent gets the
/// RAM-disk with a per-boot token, issued for the address that asks (see
/// [`BootService::prepare_agent_boot`]).
async fn ipxe_script(
    State(service): State<Arc<BootService>>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    agent_aware_script(&service, &mac, &headers, peer(&req), "ipxe", render_ipxe).await
}

/// The address a request came from (the server runs with connect info).
pub(crate) fn peer(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// A script or config that may boot the agent: its per-boot token is minted
/// for the address that asks.
async fn agent_aware_script(
    service: &BootService,
    mac: &str,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    format: &'static str,
    render: Renderer,
) -> Response {
    let (mac, base) = match (parse_mac(mac), base_url(service, headers)) {
        (Ok(mac), Ok(base)) => (mac, base),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let snapshot = service.inventory().snapshot();
    let mut resolved = service.resolve(&snapshot, mac, None, None, true);
    if let Err(r) = admit_script(service, &resolved, mac, peer).await {
        return r.into_response();
    }
    if matches!(resolved.plan, BootPlan::Agent(_)) && resolved.known {
        resolved.plan = service
            .prepare_agent_boot(&resolved.machine, mac, resolved.plan, peer, &base)
            .await;
    }
    respond_script(service, &base, mac, resolved, format, render)
}

/// The GRUB config over HTTP (GRUB itself fetches it over TFTP, where
/// [`BootService`] mints the agent's token the same way).
async fn grub_config(
    State(service): State<Arc<BootService>>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    agent_aware_script(&service, &mac, &headers, peer(&req), "grub", render_grub).await
}

async fn pxelinux_config(
    State(service): State<Arc<BootService>>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    script(
        &service,
        &headers,
        &mac,
        peer(&req),
        "pxelinux",
        false,
        render_pxelinux,
    )
    .await
}

async fn loader(
    State(service): State<Arc<BootService>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    // Only the configured loader names: this is not a window onto the TFTP root.
    if !service.config().loader_names().contains(&name.as_str()) {
        return text(
            StatusCode::NOT_FOUND,
            format!("no loader named {name:?} is configured\n"),
        );
    }
    let path = service.config().loader_dir.join(&name);
    if tokio::fs::metadata(&path).await.is_err() {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "loader {name:?} is configured but {} is missing\n",
                path.display()
            ),
        );
    }
    // Served like an asset: Range requests, and an asset_served event whose
    // client address puts the download in the machine's timeline.
    let root = service.config().loader_dir.clone();
    serve_tree(&service, &root, "/boot/loader", name, req).await
}

/// `..` and `.` segments are refused outright (axum has already percent-decoded
/// `path`, so `%2e%2e` is caught too); ServeDir checks again.
fn is_clean_asset_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && !path.contains('\\')
        && path.split('/').all(|seg| seg != ".." && seg != ".")
}

async fn ramdisk_file(
    State(service): State<Arc<BootService>>,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    match service.config().ramdisk_dir.clone() {
        Some(root) => serve_tree(&service, &root, "/ramdisk", path, req).await,
        None => text(
            StatusCode::NOT_FOUND,
            "this server has no agent RAM-disk\n".into(),
        ),
    }
}

async fn image_file(
    State(service): State<Arc<BootService>>,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    match service.config().images_dir.clone() {
        Some(root) => serve_tree(&service, &root, "/images", path, req).await,
        None => text(
            StatusCode::NOT_FOUND,
            "this server has no image catalog\n".into(),
        ),
    }
}

async fn asset(
    State(service): State<Arc<BootService>>,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    let root = service.config().asset_dir.clone();
    serve_tree(&service, &root, "/assets", path, req).await
}

/// Serves `path` from the directory `root`, which the router mounts at
/// `prefix`, with Range requests; one AssetServed event per response.
pub(crate) async fn serve_tree(
    service: &BootService,
    root: &std::path::Path,
    prefix: &str,
    path: String,
    mut req: Request,
) -> Response {
    if !is_clean_asset_path(&path) {
        return text(
            StatusCode::BAD_REQUEST,
            "paths may not contain '.' or '..' segments\n".into(),
        );
    }
    // Hand ServeDir the still-encoded path below the prefix; it decodes and confines it.
    let raw = req.uri().path().strip_prefix(prefix).unwrap_or("/");
    let Ok(uri) = raw.parse::<Uri>() else {
        return text(StatusCode::BAD_REQUEST, "invalid asset path\n".into());
    };
    *req.uri_mut() = uri;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok())
        .map(str::to_string);
    let is_get = req.method() == Method::GET;
    // Present when the server was started with connect info (the rackboot binary
    // does); lets the event log attribute the download to the lease holder's MAC.
    let client_ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    // No index.html and no trailing-slash redirect: the redirect would point outside
    // /assets (ServeDir sees the rewritten path), and directories are not assets.
    let files = RegularFiles::default();
    let mut not_regular = false;
    // A plain GET (firmware, iPXE, installers) takes the fast path: one
    // blocking call per request instead of ServeDir's four or five.
    let resp = if file_serve::plain_get(req.method(), req.headers()) {
        match file_serve::serve(root, &path).await {
            Served::Response(resp) => resp,
            Served::NotFound => StatusCode::NOT_FOUND.into_response(),
            Served::NotRegular => {
                not_regular = true;
                StatusCode::FORBIDDEN.into_response()
            }
        }
    } else {
        let serve_dir = ServeDir::with_backend(root, files.clone())
            .append_index_html_on_directories(false)
            .redirect_to_trailing_slash(false);
        match serve_dir.oneshot(req).await {
            Ok(resp) => resp.map(Body::new),
            Err(never) => match never {},
        }
    };
    if not_regular || files.refused() {
        // A FIFO, socket or device in a served tree: never read (a FIFO
        // would hold this worker until a writer came).
        counter!("rackboot_boot_http_refused_total", "reason" => "not_regular").increment(1);
        tracing::warn!(path = %path, client = ?client_ip, "refused {prefix}/{path}: not a regular file");
        return text(
            StatusCode::FORBIDDEN,
            format!("{path:?} under {prefix} is not a regular file\n"),
        );
    }
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        if prefix == "/os" {
            // An installer asked its OS tree (its mirror) for a file it does
            // not have: the install stops there, so say which.
            tracing::warn!(path = %path, client = ?client_ip, "not in the OS catalog: {prefix}/{path}");
        }
        return text(
            StatusCode::NOT_FOUND,
            format!("no file {path:?} under {prefix}\n"),
        );
    }
    let report = (is_get && (status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT))
        .then(|| AssetReport {
            events: service.events().clone(),
            path,
            under: prefix.to_string(),
            range,
            status: status.as_u16(),
            client_ip,
            started: std::time::Instant::now(),
        });
    let (mut parts, body) = resp.into_parts();
    parts
        .headers
        .entry(header::ACCEPT_RANGES)
        .or_insert(HeaderValue::from_static("bytes"));
    Response::from_parts(
        parts,
        Body::new(CountingBody {
            inner: Body::new(body),
            sent: 0,
            report,
        }),
    )
}

/// What to say about an asset response once it is over.
struct AssetReport {
    events: EventHub,
    path: String,
    /// The mount the path is under: `/assets` or `/os`.
    under: String,
    range: Option<String>,
    status: u16,
    client_ip: Option<String>,
    /// When the response started: the event gives the download's duration
    /// (a span on the dashboard's timeline, and a rate to compare machines).
    started: std::time::Instant,
}

/// Counts the bytes actually sent and reports once, when the body ends or is
/// dropped (client gone): one event per response, not per chunk.
struct CountingBody {
    inner: Body,
    sent: u64,
    report: Option<AssetReport>,
}

impl CountingBody {
    fn finish(&mut self, complete: bool) {
        let Some(r) = self.report.take() else { return };
        counter!("rackboot_boot_asset_bytes_total").increment(self.sent);
        counter!("rackboot_boot_assets_served_total").increment(1);
        let range = r
            .range
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let elapsed = r.started.elapsed();
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        // A rate says something only for a download that took a while.
        let rate = if elapsed.as_millis() >= 10 {
            format!(
                ", {:.1} MiB/s",
                self.sent as f64 / 1_048_576.0 / elapsed.as_secs_f64()
            )
        } else {
            String::new()
        };
        r.events.emit(
            NewEvent::new(
                EventKind::AssetServed,
                format!(
                    "sent {} bytes of {}{range} in {duration_ms} ms{rate}",
                    self.sent, r.path
                ),
            )
            .data(json!({
                "path": r.path,
                "under": r.under,
                "bytes": self.sent,
                "duration_ms": duration_ms,
                "range": r.range,
                "status": r.status,
                "complete": complete,
                "client_ip": r.client_ip,
            })),
        );
    }
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(true),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountingBody {
    fn drop(&mut self) {
        // Hyper may stop polling once is_end_stream() says so; what was sent is complete
        // when the inner body has nothing left.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

/// The URL of a machine's iPXE script, as handed to iPXE clients in DHCP.
pub fn ipxe_script_url(base_url: &str, mac: MacAddr) -> String {
    format!(
        "{}/boot/ipxe/{}",
        base_url.trim_end_matches('/'),
        mac.dashed()
    )
}
