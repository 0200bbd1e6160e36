//! Domain types shared by every rackboot crate.
//!
//! Nothing here does I/O: these are the nouns (machines, profiles, selectors,
//! boot intent, leases, events) and the small traits through which the network
//! services ask the boot logic what to hand a client.

pub mod access;
pub mod agent;
pub mod arch;
pub mod boot;
pub mod event;
pub mod fact_match;
pub mod install;
pub mod lease;
pub mod lifecycle;
pub mod mac;
pub mod machine;
pub mod os;
pub mod secret;
pub mod selector;
pub mod webhook;
pub mod workflow;

pub use access::{ApiToken, Role};
pub use agent::AgentSession;
pub use arch::{Arch, PxeClient};
pub use boot::{BootResponder, Dhcp6Boot, DhcpBoot, GeneratedFile, TftpContent, ipv6_boot_url};
pub use event::{ClientAttribution, Event, EventHub, EventKind, EventPersistQueue, NewEvent};
pub use install::{InstallRequest, InstallState, InstallTemplate};
pub use lease::{BoundLeases, Lease, LeaseState};
pub use lifecycle::{Lifecycle, Maintenance, ProvisionState, Transition};
pub use mac::MacAddr;
pub use machine::{
    Bmc, BootIntent, LoaderKind, Machine, MachineId, Menu, MenuEntry, MenuInstall, Profile,
};
pub use os::OsFamily;
/// Hardware facts as the agent reports them (the agent's wire types).
pub use rackboot_agent_proto::Facts;
pub use selector::{Selector, SelectorError};
pub use webhook::{Delivery, DeliveryState, Webhook};
pub use workflow::{Batch, RetryPolicy, StepRun, StepState, Workflow, WorkflowId, WorkflowState};
