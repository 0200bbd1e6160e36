//! Boot decisions and boot HTTP: inventory cache, first-stage file choice,
//! per-machine iPXE/GRUB/pxelinux rendering, asset serving.
//!
//! The `rackboot` binary builds an [`Inventory`], a [`BootService`] from it and a
//! [`BootConfig`], hands the service to DHCP (as `BootResponder`) and TFTP (as
//! `TftpContent`), and serves [`http::router`] (or [`http::serve`]).

pub mod config;
pub mod http;
pub mod install;
mod install_http;
pub mod inventory;
pub mod render;
pub mod service;

pub use config::{BootConfig, BootConfigError, LoaderFiles, UnknownPolicy};
pub use http::{router, serve};
pub use inventory::{Inventory, Snapshot};
pub use render::{BootPlan, InstallPlan, ServerUrls, validate_profile_templates};
pub use service::{BootService, DiscoveryOutcome, Resolved};
