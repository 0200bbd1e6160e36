//! Boot decisions and boot HTTP: inventory cache, first-stage file choice,
//! per-machine iPXE/GRUB/pxelinux rendering, asset serving.

pub mod inventory;

pub use inventory::{Inventory, Snapshot};
