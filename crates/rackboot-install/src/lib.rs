//! Unattended-install files for every OS family rackboot installs with the
//! distribution's own installer: Kickstart (RHEL/Rocky/Alma 8-10, ESXi 7/8),
//! preseed (Debian 11/12), autoinstall user-data (Ubuntu 22.04/24.04),
//! AutoYaST (SLES 15) and unattend.xml (Windows Server 2019/2022 via wimboot).
//!
//! - [`InstallVars`]: typed per-machine values; [`render`] validates them,
//!   renders a built-in or user template (minijinja, strict undefined, fuel
//!   limit, no loader) and checks the output is a well-formed file of the
//!   family's format. Nothing half-rendered ever comes out.
//! - [`validate_template`]: the upload-time check for user templates.
//! - [`boot_entry`] / [`kernel_args`]: how to boot each installer so it
//!   finds its rendered file, in one struct for every boot-script renderer.
//! - [`hash_root_password`]: SHA-512 crypt at input time; templates only see
//!   hashes. Windows needs its password at render time: see [`password`].
//!
//! - [`render_target_network`] / [`render_nocloud_seed`]: the same network
//!   ([`NetworkVars`], the network part of [`InstallVars`]) as files for a
//!   deployed image's root file system, per [`TargetFamily`], or as a
//!   cloud-init NoCloud seed. See [`netconfig`].
//!
//! Every installer's last step POSTs to `callback_url` (retrying); see
//! each template's end. The template variables are documented in
//! [`context`].

pub mod boot;
pub mod check;
pub mod context;
mod error;
pub mod netconfig;
pub mod password;
mod render;
pub mod sample;
pub mod vars;

pub use boot::{
    BootContext, BootEntry, BootError, BootFile, BootMethod, Firmware, boot_entry, esxi_boot_cfg,
    kernel_args,
};
pub use error::{PasswordError, RenderError, TemplateError, TemplateErrorKind};
pub use netconfig::{
    SeedInput, TargetFamily, TargetFile, render_nocloud_seed, render_target_network,
    target_cleanup_paths,
};
pub use password::{encode_windows_password, hash_root_password};
pub use render::{
    BUILTIN_TEMPLATES, BuiltinTemplate, Companion, FUEL, Rendered, TemplateChoice,
    builtin_template, file_name, render, validate_template,
};
pub use vars::{
    BondConfig, BondMode, DiskSelector, EXAMPLE_NETWORK_JSON, EXAMPLE_VARS_JSON, InstallVars,
    InstallerNetwork, Ipv4Config, NetworkVars, NicConfig, PartitionLayout, RenderSecrets,
    Repository, VlanConfig, WindowsFirmware, WindowsVars,
};
