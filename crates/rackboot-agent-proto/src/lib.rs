//! The wire contract between the rackboot server and `rackboot-agent`, the
//! program that runs in the deploy RAM-disk on a machine.
//!
//! Types only: no I/O, no clocks. The agent links this crate and nothing else
//! of rackboot's; the server links it with the `openapi` feature for its API
//! document.
//!
//! # How an agent talks to the server
//!
//! 1. The machine network-boots the RAM-disk; its kernel command line carries
//!    [`BootArgs`] (`rackboot.url=... rackboot.token=...`). The token is minted
//!    for this boot only and is accepted only from the address the server bound
//!    it to (the machine's lease, or the address that fetched its boot script).
//! 2. The agent sends [`Hello`] to [`paths::HELLO`], then [`Heartbeat`]s to
//!    [`paths::HEARTBEAT`] every [`HelloReply::heartbeat_secs`]. A heartbeat
//!    reply may carry one [`Command`]: a step attempt to run.
//! 3. While a step runs the agent posts [`Progress`] to
//!    [`paths::progress`]`(attempt)` and, once done, a [`StepReport`] to
//!    [`paths::result`]`(attempt)`. Every request is retried with backoff until
//!    the server answers, so a server restart loses nothing. A 409 answer to a
//!    progress or result post means the attempt is no longer current (aborted,
//!    timed out, superseded): the agent drops it.
//! 4. On a failure the agent uploads its log to [`paths::LOG`].
//!
//! Every request carries `Authorization: Bearer <token>`.

pub mod bootargs;
pub mod facts;
pub mod image;
pub mod step;

pub use bootargs::{BootArgs, BootArgsError};
pub use facts::{
    BootFacts, BootMode, CpuFacts, DiskFacts, DmiFacts, Facts, LldpNeighbor, NicFacts,
};
pub use image::{FRAME_RAW_SIZE, ImageManifest, ManifestError};
pub use step::{
    Action, ConfigureAction, DiskTarget, EraseAction, EraseMode, ErasedDisk, FileSpec,
    ImageWritten, RaidAction, RaidBuilt, RaidLevel, RootSelector, SeedSpec, StepOutput,
    WriteImageAction,
};

use serde::{Deserialize, Serialize};

/// Version of this contract; the server refuses agents of another major.
pub const PROTOCOL_VERSION: u32 = 1;

/// Endpoint paths on the server's boot HTTP listener.
pub mod paths {
    pub const HELLO: &str = "/agent/v1/hello";
    pub const HEARTBEAT: &str = "/agent/v1/heartbeat";
    /// `text/plain` body (at most [`crate::MAX_LOG_BYTES`]), `?attempt=<uuid>` optional.
    pub const LOG: &str = "/agent/v1/log";

    pub fn progress(attempt: uuid::Uuid) -> String {
        format!("/agent/v1/attempts/{attempt}/progress")
    }

    pub fn result(attempt: uuid::Uuid) -> String {
        format!("/agent/v1/attempts/{attempt}/result")
    }
}

/// Largest log upload the server keeps (the tail of a longer log is sent).
pub const MAX_LOG_BYTES: usize = 1 << 20;

/// First message of an agent process. Sent again after an agent restart (a
/// new `instance`), which tells the server that a step the old process was
/// running has been lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hello {
    pub protocol: u32,
    /// `rackboot-agent` version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): the same for
    /// every agent process of one boot.
    pub boot_id: String,
    /// Random per agent process.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub instance: uuid::Uuid,
    /// MAC addresses of the machine's NICs, `aa:bb:cc:dd:ee:ff`.
    pub macs: Vec<String>,
    /// The attempt this process is running, when it resumed one (see
    /// [`Heartbeat::running`]).
    #[serde(default)]
    pub running: Option<RunningStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HelloReply {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub machine_id: uuid::Uuid,
    pub machine_name: String,
    /// Seconds between heartbeats.
    pub heartbeat_secs: u32,
}

/// Sent every [`HelloReply::heartbeat_secs`] (and at once when a step ends),
/// saying what the agent is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub instance: uuid::Uuid,
    /// The attempt being run now, if any.
    #[serde(default)]
    pub running: Option<RunningStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunningStep {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub attempt: uuid::Uuid,
    #[serde(default)]
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatReply {
    /// A step attempt to start. Only sent when the agent runs nothing.
    #[serde(default)]
    pub command: Option<Command>,
    /// Attempts the agent must stop (aborted or timed out on the server).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub cancel: Vec<uuid::Uuid>,
}

/// One attempt of one workflow step, for the agent to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Command {
    /// Identifies this attempt in progress and result posts.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub attempt: uuid::Uuid,
    /// The step's name in its workflow (`erase`, `write-image`), for logs.
    pub step: String,
    /// The server fails the attempt after this long; the agent may give up earlier.
    pub timeout_secs: u64,
    pub action: Action,
}

/// Progress of a running attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    /// Units done so far (bytes for erase and image writes).
    pub done: u64,
    /// Units in all, when known.
    #[serde(default)]
    pub total: Option<u64>,
    /// What is happening now, one line: "writing /dev/vda", "erasing 2 disks".
    #[serde(default)]
    pub message: String,
}

/// How an attempt ended, posted to [`paths::result`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StepReport {
    Succeeded {
        output: StepOutput,
    },
    Failed {
        /// One line saying what failed and why.
        message: String,
        /// True when trying again may succeed (a network error, a checksum
        /// mismatch after a broken download); false when it cannot (no such
        /// disk, image larger than the disk).
        transient: bool,
        /// Stable machine-readable reason: see [`error_codes`].
        #[serde(default)]
        code: Option<String>,
    },
}

/// Values of [`StepReport::Failed::code`].
pub mod error_codes {
    pub const CHECKSUM_MISMATCH: &str = "checksum_mismatch";
    pub const DOWNLOAD: &str = "download";
    pub const DISK_NOT_FOUND: &str = "disk_not_found";
    pub const DISK_MISMATCH: &str = "disk_mismatch";
    pub const TOO_SMALL: &str = "too_small";
    pub const IO: &str = "io";
    pub const TOOL: &str = "tool";
    pub const NO_ROOT_FS: &str = "no_root_fs";
    pub const CANCELLED: &str = "cancelled";
    pub const UNSUPPORTED: &str = "unsupported";
}

/// An error body from the server (the same shape as the REST API's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
