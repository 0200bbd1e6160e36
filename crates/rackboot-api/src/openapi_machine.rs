//! OpenAPI documentation of the routes machines use rather than operators:
//! boot HTTP (served by `rackboot-boot`'s router), the installers' files and
//! callbacks, and the deploy agent's endpoints (`agent_http`). They need no
//! API token: boot routes are open to the provisioning network, agent routes
//! take the agent's per-boot token. The functions here only carry the
//! documentation; `rackboot`'s tests request every documented path on a
//! running server to check that it is served.

#![allow(dead_code)]

use rackboot_agent_proto::{Heartbeat, HeartbeatReply, Hello, HelloReply, Progress, StepReport};
use utoipa::OpenApi;

use crate::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    tags(
        (name = "boot", description = "What network-booting machines fetch: per-machine scripts and loader configs, loaders, kernels, images, installation trees, unattended install files and installer callbacks. No token; served to the provisioning network."),
        (name = "agent", description = "The deploy agent's endpoints. `Authorization: Bearer <per-boot token>`, accepted only from the address the token was issued to."),
    ),
    paths(
        boot_ipxe, boot_grub, boot_pxelinux, boot_loader, asset, ramdisk, image_file, os_file,
        install_file, install_started, install_installed, install_done,
        agent_hello, agent_heartbeat, agent_progress, agent_result, agent_log, deploy_booted,
    ),
    components(schemas(Hello, HelloReply, Heartbeat, HeartbeatReply, Progress, StepReport)),
)]
pub(crate) struct MachineDoc;

/// The machine's iPXE script: its boot intent rendered (an unknown MAC is
/// recorded under the discovery policy and gets the discovery script).
#[utoipa::path(get, path = "/boot/ipxe/{mac}", tag = "boot",
    params(("mac" = String, Path, description = "The booting NIC's MAC, e.g. 52:54:00:12:34:56")),
    responses(
        (status = 200, description = "An iPXE script", content_type = "text/plain", body = String),
        (status = 400, description = "Not a MAC address, or a bad Host header", content_type = "text/plain", body = String),
    ))]
fn boot_ipxe() {}

/// The machine's GRUB config (the same intent as its iPXE script).
#[utoipa::path(get, path = "/boot/grub/{mac}", tag = "boot",
    params(("mac" = String, Path, description = "The booting NIC's MAC")),
    responses(
        (status = 200, description = "A grub.cfg", content_type = "text/plain", body = String),
        (status = 400, description = "Not a MAC address", content_type = "text/plain", body = String),
    ))]
fn boot_grub() {}

/// The machine's pxelinux config, for debugging (records nothing; pxelinux
/// itself reads it over TFTP).
#[utoipa::path(get, path = "/boot/pxelinux/{mac}", tag = "boot",
    params(("mac" = String, Path, description = "The booting NIC's MAC")),
    responses(
        (status = 200, description = "A pxelinux.cfg file", content_type = "text/plain", body = String),
        (status = 400, description = "Not a MAC address", content_type = "text/plain", body = String),
    ))]
fn boot_pxelinux() {}

/// A configured loader file (iPXE for UEFI HTTP boot).
#[utoipa::path(get, path = "/boot/loader/{name}", tag = "boot",
    params(("name" = String, Path, description = "A loader named in [boot.loaders], e.g. snponly.efi")),
    responses(
        (status = 200, description = "The loader binary", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "Not a configured loader", content_type = "text/plain", body = String),
    ))]
fn boot_loader() {}

/// A file under the asset directory (kernels, initrds), with Range requests.
#[utoipa::path(get, path = "/assets/{path}", tag = "boot",
    params(("path" = String, Path, description = "Path under the asset directory; may contain '/'")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such file", content_type = "text/plain", body = String),
    ))]
fn asset() {}

/// The deploy agent's RAM-disk (`vmlinuz`, `initramfs.img`); no secrets.
#[utoipa::path(get, path = "/ramdisk/{path}", tag = "boot",
    params(("path" = String, Path, description = "A file of the RAM-disk directory")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such file, or no RAM-disk built", content_type = "text/plain", body = String),
    ))]
fn ramdisk() {}

/// The image catalog (manifests and zstd frames), with Range requests.
#[utoipa::path(get, path = "/images/{path}", tag = "boot",
    params(("path" = String, Path, description = "`<image>/manifest.json` or a frame file; may contain '/'")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such file", content_type = "text/plain", body = String),
    ))]
fn image_file() {}

/// A file of an imported installation tree (the OS catalog), with Range requests.
#[utoipa::path(get, path = "/os/{path}", tag = "boot",
    params(("path" = String, Path, description = "`<os id>/<path in the tree>`")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such file", content_type = "text/plain", body = String),
    ))]
fn os_file() {}

/// A pending install's unattended file (preseed, kickstart, autoinstall,
/// AutoYaST, unattend.xml, ESXi ks) and companions such as `meta-data`,
/// rendered on request. Served only under the install's secret (in the
/// machine's boot script only), to the machine's address (rackboot's DHCP
/// lease of it, else the first address that fetched its script), until its
/// installer reports started or `boot.install_files_window_secs` after the
/// first fetch. `/install/{id}/{file}` without the secret is 404.
#[utoipa::path(get, path = "/install/{id}/{secret}/{file}", tag = "boot",
    params(
        ("id" = String, Path, description = "Install id"),
        ("secret" = String, Path, description = "The install's files secret, from the machine's boot script"),
        ("file" = String, Path, description = "File name, e.g. preseed.cfg"),
    ),
    responses(
        (status = 200, description = "The rendered file", content_type = "text/plain", body = String),
        (status = 403, description = "Asked from another address than the machine's", content_type = "text/plain", body = String),
        (status = 404, description = "No such install or file, or a wrong secret", content_type = "text/plain", body = String),
        (status = 410, description = "The install completed or was cancelled, its installer reported started, or its window ended", content_type = "text/plain", body = String),
    ))]
fn install_file() {}

/// The installer read its file (recorded as an event; its files are no
/// longer served). From the machine's address only. GET or POST.
#[utoipa::path(get, path = "/install/{id}/started/{token}", tag = "boot",
    params(
        ("id" = String, Path, description = "Install id"),
        ("token" = String, Path, description = "The install's callback token"),
    ),
    responses(
        (status = 200, description = "Recorded", content_type = "text/plain", body = String),
        (status = 403, description = "From another address than the machine's", content_type = "text/plain", body = String),
        (status = 404, description = "No such install", content_type = "text/plain", body = String),
    ))]
fn install_started() {}

/// The installer finished (its last step, before it reboots): the install
/// becomes `installed`, the machine is set to boot its disk (and its BMC, if
/// it has one, to disk boot). Idempotent; from the machine's address only.
/// GET or POST.
#[utoipa::path(get, path = "/install/{id}/installed/{token}", tag = "boot",
    params(
        ("id" = String, Path, description = "Install id"),
        ("token" = String, Path, description = "The install's callback token"),
    ),
    responses(
        (status = 200, description = "Installed (or already installed or completed)", content_type = "text/plain", body = String),
        (status = 403, description = "From another address than the machine's", content_type = "text/plain", body = String),
        (status = 404, description = "No such install, or a wrong token", content_type = "text/plain", body = String),
        (status = 409, description = "The install was cancelled", content_type = "text/plain", body = String),
    ))]
fn install_installed() {}

/// The completion callback: the installed system's first-boot report (or,
/// for a template without one, the installer's last step, which also sets
/// the machine to boot its disk). Idempotent. From the machine's address;
/// the installed system's report also once from another address (a static
/// one), which is then the only other address accepted. GET or POST.
#[utoipa::path(get, path = "/install/{id}/done/{token}", tag = "boot",
    params(
        ("id" = String, Path, description = "Install id"),
        ("token" = String, Path, description = "The install's callback token"),
    ),
    responses(
        (status = 200, description = "Completed (or already completed)", content_type = "text/plain", body = String),
        (status = 403, description = "From an address the install does not accept", content_type = "text/plain", body = String),
        (status = 404, description = "No such install", content_type = "text/plain", body = String),
    ))]
fn install_done() {}

/// The agent's first request after it starts.
#[utoipa::path(post, path = "/agent/v1/hello", tag = "agent", request_body = Hello,
    responses(
        (status = 200, description = "Who it is and how often to send heartbeats", body = HelloReply),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "The token from another address", body = ErrorBody),
    ))]
fn agent_hello() {}

/// The agent's periodic report; the reply carries its next step or a cancel.
#[utoipa::path(post, path = "/agent/v1/heartbeat", tag = "agent", request_body = Heartbeat,
    responses(
        (status = 200, description = "What to do next", body = HeartbeatReply),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "The token from another address", body = ErrorBody),
    ))]
fn agent_heartbeat() {}

/// Progress of the running step.
#[utoipa::path(post, path = "/agent/v1/attempts/{attempt}/progress", tag = "agent", request_body = Progress,
    params(("attempt" = String, Path, description = "Step attempt id")),
    responses(
        (status = 204, description = "Recorded"),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 409, description = "The attempt is no longer current (drop the report)", body = ErrorBody),
    ))]
fn agent_progress() {}

/// The step's outcome.
#[utoipa::path(post, path = "/agent/v1/attempts/{attempt}/result", tag = "agent", request_body = StepReport,
    params(("attempt" = String, Path, description = "Step attempt id")),
    responses(
        (status = 204, description = "Recorded"),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 409, description = "The attempt is no longer current (drop the report)", body = ErrorBody),
    ))]
fn agent_result() {}

/// The agent's log (plain text, at most 1 MiB), kept with the machine.
#[utoipa::path(post, path = "/agent/v1/log", tag = "agent", request_body(content = String, content_type = "text/plain"),
    params(("attempt" = Option<String>, Query, description = "The step attempt the log belongs to")),
    responses(
        (status = 204, description = "Stored"),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 413, description = "Over 1 MiB", body = ErrorBody),
    ))]
fn agent_log() {}

/// The deployed system's first-boot callback. GET or POST.
#[utoipa::path(get, path = "/deploy/{workflow}/booted/{token}", tag = "agent",
    params(
        ("workflow" = String, Path, description = "Deploy workflow id"),
        ("token" = String, Path, description = "The deploy's first-boot token"),
    ),
    responses(
        (status = 200, description = "Seen (or already seen)", content_type = "text/plain", body = String),
        (status = 400, description = "Not a workflow id", body = ErrorBody),
        (status = 403, description = "Wrong token", body = ErrorBody),
    ))]
fn deploy_booted() {}
