//! Everything that happens (lease given, file sent, script served, machine
//! discovered) is an event. Services emit without waiting; one task persists
//! events in batches and then broadcasts them, with their store ids, to live
//! subscribers (the SSE stream, webhooks later).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::ToSchema;

use crate::{MacAddr, MachineId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LeaseOffered,
    LeaseAcked,
    LeaseNak,
    LeaseDeclined,
    LeaseReleased,
    DhcpInform,
    ProxyDhcpReply,
    PoolLow,
    TftpSent,
    TftpFailed,
    ScriptServed,
    AssetServed,
    MachineDiscovered,
    MachineChanged,
    ProfileChanged,
    ServiceStarted,
    PowerChanged,
    PowerActionDone,
    PowerActionFailed,
    BootDeviceSet,
    InstallRequested,
    InstallFileServed,
    InstallStarted,
    InstallCompleted,
    MachineStateChanged,
    MaintenanceChanged,
    FactsUpdated,
    WorkflowQueued,
    WorkflowStarted,
    WorkflowSucceeded,
    WorkflowFailed,
    WorkflowAborted,
    StepStarted,
    StepProgress,
    StepSucceeded,
    StepFailed,
    StepSkipped,
    AgentTokenIssued,
    AgentHello,
    AgentLost,
    AgentLog,
    MachineBooted,
    ImageImported,
    ImageDeleted,
    WebhookFailed,
    BmcUnreachable,
    BmcReachable,
    /// An API token was created or revoked.
    TokenChanged,
    /// Boot HTTP or TFTP refused a machine's install script, file or
    /// callback, or its agent token, to a requester (wrong address, window
    /// closed, wrong secret); at most one per machine and reason a minute.
    AccessRefused,
}

impl EventKind {
    pub const ALL: [EventKind; 49] = [
        EventKind::LeaseOffered,
        EventKind::LeaseAcked,
        EventKind::LeaseNak,
        EventKind::LeaseDeclined,
        EventKind::LeaseReleased,
        EventKind::DhcpInform,
        EventKind::ProxyDhcpReply,
        EventKind::PoolLow,
        EventKind::TftpSent,
        EventKind::TftpFailed,
        EventKind::ScriptServed,
        EventKind::AssetServed,
        EventKind::MachineDiscovered,
        EventKind::MachineChanged,
        EventKind::ProfileChanged,
        EventKind::ServiceStarted,
        EventKind::PowerChanged,
        EventKind::PowerActionDone,
        EventKind::PowerActionFailed,
        EventKind::BootDeviceSet,
        EventKind::InstallRequested,
        EventKind::InstallFileServed,
        EventKind::InstallStarted,
        EventKind::InstallCompleted,
        EventKind::MachineStateChanged,
        EventKind::MaintenanceChanged,
        EventKind::FactsUpdated,
        EventKind::WorkflowQueued,
        EventKind::WorkflowStarted,
        EventKind::WorkflowSucceeded,
        EventKind::WorkflowFailed,
        EventKind::WorkflowAborted,
        EventKind::StepStarted,
        EventKind::StepProgress,
        EventKind::StepSucceeded,
        EventKind::StepFailed,
        EventKind::StepSkipped,
        EventKind::AgentTokenIssued,
        EventKind::AgentHello,
        EventKind::AgentLost,
        EventKind::AgentLog,
        EventKind::MachineBooted,
        EventKind::ImageImported,
        EventKind::ImageDeleted,
        EventKind::WebhookFailed,
        EventKind::BmcUnreachable,
        EventKind::BmcReachable,
        EventKind::TokenChanged,
        EventKind::AccessRefused,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::LeaseOffered => "lease_offered",
            EventKind::LeaseAcked => "lease_acked",
            EventKind::LeaseNak => "lease_nak",
            EventKind::LeaseDeclined => "lease_declined",
            EventKind::LeaseReleased => "lease_released",
            EventKind::DhcpInform => "dhcp_inform",
            EventKind::ProxyDhcpReply => "proxy_dhcp_reply",
            EventKind::PoolLow => "pool_low",
            EventKind::TftpSent => "tftp_sent",
            EventKind::TftpFailed => "tftp_failed",
            EventKind::ScriptServed => "script_served",
            EventKind::AssetServed => "asset_served",
            EventKind::MachineDiscovered => "machine_discovered",
            EventKind::MachineChanged => "machine_changed",
            EventKind::ProfileChanged => "profile_changed",
            EventKind::ServiceStarted => "service_started",
            EventKind::PowerChanged => "power_changed",
            EventKind::PowerActionDone => "power_action_done",
            EventKind::PowerActionFailed => "power_action_failed",
            EventKind::BootDeviceSet => "boot_device_set",
            EventKind::InstallRequested => "install_requested",
            EventKind::InstallFileServed => "install_file_served",
            EventKind::InstallStarted => "install_started",
            EventKind::InstallCompleted => "install_completed",
            EventKind::MachineStateChanged => "machine_state_changed",
            EventKind::MaintenanceChanged => "maintenance_changed",
            EventKind::FactsUpdated => "facts_updated",
            EventKind::WorkflowQueued => "workflow_queued",
            EventKind::WorkflowStarted => "workflow_started",
            EventKind::WorkflowSucceeded => "workflow_succeeded",
            EventKind::WorkflowFailed => "workflow_failed",
            EventKind::WorkflowAborted => "workflow_aborted",
            EventKind::StepStarted => "step_started",
            EventKind::StepProgress => "step_progress",
            EventKind::StepSucceeded => "step_succeeded",
            EventKind::StepFailed => "step_failed",
            EventKind::StepSkipped => "step_skipped",
            EventKind::AgentTokenIssued => "agent_token_issued",
            EventKind::AgentHello => "agent_hello",
            EventKind::AgentLost => "agent_lost",
            EventKind::AgentLog => "agent_log",
            EventKind::MachineBooted => "machine_booted",
            EventKind::ImageImported => "image_imported",
            EventKind::ImageDeleted => "image_deleted",
            EventKind::WebhookFailed => "webhook_failed",
            EventKind::BmcUnreachable => "bmc_unreachable",
            EventKind::BmcReachable => "bmc_reachable",
            EventKind::TokenChanged => "token_changed",
            EventKind::AccessRefused => "access_refused",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Warnings are worth an operator's attention (shown highlighted, sent to alert hooks).
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            EventKind::PoolLow
                | EventKind::TftpFailed
                | EventKind::LeaseDeclined
                | EventKind::LeaseNak
                | EventKind::PowerActionFailed
                | EventKind::WorkflowFailed
                | EventKind::StepFailed
                | EventKind::AgentLost
                | EventKind::WebhookFailed
                | EventKind::BmcUnreachable
                | EventKind::AccessRefused
        )
    }
}

/// An event as emitted by a service, before it has a store id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    /// The machine, when the emitter knows it.
    pub machine: Option<MachineId>,
    /// The client MAC, when known; timelines match on machine id or any of its MACs.
    pub mac: Option<MacAddr>,
    /// One line for people: "offered 10.77.0.10 to 52:54:00:12:34:56".
    pub message: String,
    /// Structured detail for scripts (addresses, file names, byte counts).
    pub data: serde_json::Value,
}

impl NewEvent {
    pub fn new(kind: EventKind, message: impl Into<String>) -> NewEvent {
        NewEvent {
            at: Utc::now(),
            kind,
            machine: None,
            mac: None,
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }

    pub fn machine(mut self, id: MachineId) -> Self {
        self.machine = Some(id);
        self
    }

    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }

    pub fn with_id(self, id: i64) -> Event {
        Event {
            id,
            at: self.at,
            kind: self.kind,
            machine: self.machine,
            mac: self.mac,
            message: self.message,
            data: self.data,
        }
    }
}

/// A persisted event. `id` increases with time and is the SSE `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub machine: Option<MachineId>,
    pub mac: Option<MacAddr>,
    pub message: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Emit side, cheap to clone into every service.
#[derive(Clone)]
pub struct EventHub {
    queue: mpsc::Sender<NewEvent>,
    live: broadcast::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

/// Persist side: one task drains it, stores each batch, then calls [`EventHub::publish`].
pub struct EventPersistQueue {
    rx: mpsc::Receiver<NewEvent>,
}

/// Live subscribers' backlog at most. tokio's broadcast channel allocates and
/// initialises every slot up front (65,536 events were ~10 MB of idle RSS); a
/// subscriber that lags further is backfilled from the store by the API.
pub const MAX_LIVE_BACKLOG: usize = 4096;

impl EventHub {
    /// `capacity` bounds the persist queue (allocated as used) and, up to
    /// [`MAX_LIVE_BACKLOG`], each live subscriber's lag.
    pub fn new(capacity: usize) -> (EventHub, EventPersistQueue) {
        let (queue, rx) = mpsc::channel(capacity);
        let (live, _) = broadcast::channel(capacity.clamp(1, MAX_LIVE_BACKLOG));
        let hub = EventHub {
            queue,
            live,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (hub, EventPersistQueue { rx })
    }

    /// Never blocks: when the persist queue is full the event is dropped and counted,
    /// because a DHCP or TFTP reply must not wait for the event log.
    pub fn emit(&self, event: NewEvent) {
        if self.queue.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events lost because the persist queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Called by the persist task once events are stored.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            // No subscribers is fine.
            let _ = self.live.send(e);
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

impl EventPersistQueue {
    /// Waits for at least one event, then takes up to `max` without waiting.
    /// `None` once every [`EventHub`] is dropped and the queue is empty.
    pub async fn next_batch(&mut self, max: usize) -> Option<Vec<NewEvent>> {
        let mut batch = Vec::new();
        let n = self.rx.recv_many(&mut batch, max).await;
        (n > 0).then_some(batch)
    }

    /// Moves queued events into `batch`, without waiting, until it holds `max`.
    pub fn take_ready(&mut self, batch: &mut Vec<NewEvent>, max: usize) {
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => return,
            }
        }
    }

    /// For tests and tools without a store: numbers events in memory and publishes them.
    pub async fn run_unpersisted(mut self, hub: EventHub) {
        let mut next_id = 1;
        while let Some(batch) = self.next_batch(256).await {
            let events: Vec<Event> = batch
                .into_iter()
                .map(|e| {
                    next_id += 1;
                    e.with_id(next_id - 1)
                })
                .collect();
            hub.publish(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn emit_persist_publish() {
        let (hub, queue) = EventHub::new(4);
        let mut live = hub.subscribe();
        tokio::spawn(queue.run_unpersisted(hub.clone()));
        hub.emit(NewEvent::new(EventKind::LeaseOffered, "offered"));
        let e = live.recv().await.unwrap();
        assert_eq!((e.id, e.kind), (1, EventKind::LeaseOffered));
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let (hub, _queue) = EventHub::new(1);
        hub.emit(NewEvent::new(EventKind::TftpSent, "a"));
        hub.emit(NewEvent::new(EventKind::TftpSent, "b"));
        assert_eq!(hub.dropped(), 1);
    }

    #[test]
    fn kind_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}

/// Attributes events that only know a client's IP address (TFTP transfers, HTTP
/// downloads) to that client's MAC, learned from the DHCP events that went
/// before, so a machine's timeline shows every step of its boot. Pure: fed the
/// event stream in order by the persist task.
#[derive(Debug, Default)]
pub struct ClientAttribution {
    mac_by_ip: std::collections::HashMap<std::net::IpAddr, MacAddr>,
}

impl ClientAttribution {
    /// Bound on remembered addresses; the oldest are forgotten wholesale when
    /// exceeded (a /16 of clients still fits).
    const MAX: usize = 65_536;

    pub fn observe(&mut self, event: &mut NewEvent) {
        let ip_field = |key: &str| {
            event
                .data
                .get(key)
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<std::net::IpAddr>().ok())
        };
        match (event.kind, event.mac) {
            (
                EventKind::LeaseAcked | EventKind::DhcpInform | EventKind::ProxyDhcpReply,
                Some(mac),
            ) => {
                // DHCPv4 names one address ("ip"); DHCPv6 lists its IA addresses ("ipv6").
                let v6 = event
                    .data
                    .get("ipv6")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str()?.parse::<std::net::IpAddr>().ok());
                let ips: Vec<std::net::IpAddr> = ip_field("ip")
                    .or_else(|| ip_field("client_ip"))
                    .into_iter()
                    .chain(v6)
                    .collect();
                for ip in ips {
                    if self.mac_by_ip.len() >= Self::MAX {
                        self.mac_by_ip.clear();
                    }
                    self.mac_by_ip.insert(ip, mac);
                }
            }
            (_, None) => {
                if let Some(mac) = ip_field("client_ip").and_then(|ip| self.mac_by_ip.get(&ip)) {
                    event.mac = Some(*mac);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod attribution_tests {
    use super::*;

    #[test]
    fn tftp_event_gets_the_mac_of_the_lease_holder() {
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let mut attr = ClientAttribution::default();
        let mut ack = NewEvent::new(EventKind::LeaseAcked, "ack")
            .mac(mac)
            .data(serde_json::json!({"ip": "10.77.0.100"}));
        attr.observe(&mut ack);
        let mut sent = NewEvent::new(EventKind::TftpSent, "sent")
            .data(serde_json::json!({"client_ip": "10.77.0.100"}));
        attr.observe(&mut sent);
        assert_eq!(sent.mac, Some(mac));
        let mut other = NewEvent::new(EventKind::TftpSent, "sent")
            .data(serde_json::json!({"client_ip": "10.77.0.200"}));
        attr.observe(&mut other);
        assert_eq!(other.mac, None);
    }

    #[test]
    fn ipv6_lease_addresses_attribute_later_events() {
        let mac: MacAddr = "52:54:00:00:00:02".parse().unwrap();
        let mut attr = ClientAttribution::default();
        let mut ack = NewEvent::new(EventKind::LeaseAcked, "ack")
            .mac(mac)
            .data(serde_json::json!({"ipv6": ["2001:db8:77::105", "2001:db8:77::106"]}));
        attr.observe(&mut ack);
        for ip in ["2001:db8:77::105", "2001:db8:77::106"] {
            let mut sent = NewEvent::new(EventKind::AssetServed, "sent")
                .data(serde_json::json!({"client_ip": ip}));
            attr.observe(&mut sent);
            assert_eq!(sent.mac, Some(mac), "{ip}");
        }
        let mut other = NewEvent::new(EventKind::TftpSent, "sent")
            .data(serde_json::json!({"client_ip": "2001:db8:77::107"}));
        attr.observe(&mut other);
        assert_eq!(other.mac, None);
    }
}
