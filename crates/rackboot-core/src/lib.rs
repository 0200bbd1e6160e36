//! Domain types shared by every rackboot crate.
//!
//! Nothing here does I/O: these are the nouns (machines, profiles, selectors,
//! boot intent, leases, events) and the small traits through which the network
//! services ask the boot logic what to hand a client.

pub mod arch;
pub mod boot;
pub mod event;
pub mod install;
pub mod lease;
pub mod mac;
pub mod machine;
pub mod os;
pub mod secret;
pub mod selector;

pub use arch::{Arch, PxeClient};
pub use boot::{BootResponder, DhcpBoot, GeneratedFile, TftpContent};
pub use event::{ClientAttribution, Event, EventHub, EventKind, EventPersistQueue, NewEvent};
pub use install::{InstallRequest, InstallState, InstallTemplate};
pub use lease::{Lease, LeaseState};
pub use mac::MacAddr;
pub use machine::{
    Bmc, BootIntent, LoaderKind, Machine, MachineId, Menu, MenuEntry, MenuInstall, Profile,
};
pub use os::OsFamily;
pub use selector::{Selector, SelectorError};
