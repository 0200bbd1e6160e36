//! Boot decisions and boot HTTP: inventory cache, first-stage file choice,
//! per-machine iPXE/GRUB/pxelinux rendering, asset serving.
//!
//! The `rackboot` binary builds a [`Fleet`], a [`BootService`] over it and a
//! [`BootConfig`], hands the service to DHCP (as `BootResponder`) and TFTP (as
//! `TftpContent`), and serves [`http::router`] (or [`http::serve`]).

pub mod access;
mod agent_tftp;
pub mod config;
pub mod conn;
mod file_serve;
pub mod http;
pub mod install;
mod install_gate;
mod install_http;
pub mod pe;
mod regular_files;
pub mod render;
pub mod service;

pub use config::{BootConfig, BootConfigError, LoaderFiles, ServedSubnet, UnknownPolicy};
pub use conn::{ConnLimits, serve_http};
pub use http::{router, serve};
pub use rackboot_fleet::{DiscoveryOutcome, Fleet, Inventory, Snapshot};
pub use render::{
    AgentBoot, AgentPlan, BootPlan, InstallPlan, ServerUrls, validate_profile_templates,
};
pub use service::{BootService, RAMDISK_INITRD, RAMDISK_KERNEL, RAMDISK_TFTP_DIR, Resolved};
