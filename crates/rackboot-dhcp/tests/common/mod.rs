//! Test lab: two network namespaces joined by a veth pair, a rackboot DHCP server
//! running in-process with its sockets created inside the server namespace, and
//! helpers to run real clients in the client namespace. Everything is named with
//! the PID and a counter and deleted on drop, even when the test fails.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dhcproto::v4::{DhcpOption, Encodable, Encoder, Message, MessageType};
use rackboot_core::{
    BootResponder, DhcpBoot, Event, EventHub, Lease, MacAddr, Machine, MachineId, NewEvent,
    Profile, PxeClient, Selector,
};
use rackboot_dhcp::{DhcpConfig, DhcpSockets};
use rackboot_store::{EventFilter, Store, StoreError};
use tokio_util::sync::CancellationToken;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces and a veth pair: `server_if` (10.99.0.1/24) and `client_if` (no address).
pub struct Lab {
    pub server_ns: String,
    pub client_ns: String,
    pub server_if: String,
    pub client_if: String,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{}{}", pid % 100000, n);
        let lab = Lab {
            server_ns: format!("rbt-dhcp-{pid}-{n}-s"),
            client_ns: format!("rbt-dhcp-{pid}-{n}-c"),
            server_if: format!("rbs{tag}"),
            client_if: format!("rbc{tag}"),
            dir: tempfile::tempdir().unwrap(),
        };
        ip(&["netns", "add", &lab.server_ns]);
        ip(&["netns", "add", &lab.client_ns]);
        ip(&["-n", &lab.server_ns, "link", "set", "lo", "up"]);
        ip(&["-n", &lab.client_ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &lab.server_ns,
            "link",
            "add",
            &lab.server_if,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "netns",
            &lab.client_ns,
        ]);
        ip(&[
            "-n",
            &lab.server_ns,
            "addr",
            "add",
            "10.99.0.1/24",
            "dev",
            &lab.server_if,
        ]);
        ip(&["-n", &lab.server_ns, "link", "set", &lab.server_if, "up"]);
        ip(&["-n", &lab.client_ns, "link", "set", &lab.client_if, "up"]);
        lab
    }

    /// Runs `f` on a thread inside namespace `ns`; sockets it creates stay there.
    pub fn in_ns<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    }

    /// `ip netns exec CLIENT_NS program args...`
    pub fn client_cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.client_ns, program]);
        c
    }

    pub fn client(&self, args: &[&str]) {
        ip(&[&["-n", self.client_ns.as_str()], args].concat());
    }

    pub fn server(&self, args: &[&str]) {
        ip(&[&["-n", self.server_ns.as_str()], args].concat());
    }

    /// Server sockets bound inside the server namespace.
    pub fn server_sockets(&self, proxy: bool, icmp: bool) -> DhcpSockets {
        let ifname = self.server_if.clone();
        self.in_ns(&self.server_ns.clone(), move || {
            let dhcp = rackboot_dhcp::bind_interface(&ifname, 67).unwrap();
            let pxe = proxy.then(|| rackboot_dhcp::bind_interface(&ifname, 4011).unwrap());
            let mut s = DhcpSockets::new(dhcp, pxe, SERVER_IP);
            if icmp {
                s.icmp = Some(rackboot_dhcp::bind_icmp(Some(&ifname)).unwrap());
            }
            s
        })
    }

    /// A UDP socket in the client namespace bound to `addr`, on the client interface.
    pub fn client_socket(&self, port: u16) -> UdpSocket {
        let ifname = self.client_if.clone();
        self.in_ns(&self.client_ns.clone(), move || {
            let s = rackboot_dhcp::bind_interface(&ifname, port).unwrap();
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting the namespaces removes the veth pair too.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.server_ns])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.client_ns])
            .status();
    }
}

/// Kills a child by PID on drop.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boot answers for tests: BIOS gets undionly.kpxe, UEFI ipxe.efi, iPXE a script URL.
pub struct TestBoot;

impl BootResponder for TestBoot {
    fn dhcp_boot(&self, mac: MacAddr, client: &PxeClient, server_ip: Ipv4Addr) -> Option<DhcpBoot> {
        let filename = if client.ipxe || client.http_boot {
            format!("http://{server_ip}:8080/boot/ipxe?mac={mac}")
        } else if client.arch.is_uefi() {
            "ipxe.efi".into()
        } else {
            "undionly.kpxe".into()
        };
        Some(DhcpBoot {
            filename,
            next_server: None,
            http_client: client.http_boot,
        })
    }
}

/// In-memory Store for the lease paths; `gate` holds put_leases until opened.
#[derive(Default)]
pub struct MemStore {
    pub leases: std::sync::Mutex<std::collections::BTreeMap<Ipv4Addr, Lease>>,
    pub batches: std::sync::Mutex<Vec<usize>>,
    pub gate: tokio::sync::RwLock<()>,
}

fn unsupported(what: &'static str) -> StoreError {
    StoreError::NotFound {
        what,
        key: "MemStore keeps leases only".into(),
    }
}

#[async_trait]
impl Store for MemStore {
    fn backend(&self) -> &'static str {
        "memory"
    }
    async fn create_machine(&self, _: &Machine) -> rackboot_store::Result<()> {
        Err(unsupported("machine"))
    }
    async fn update_machine(&self, _: &Machine) -> rackboot_store::Result<()> {
        Err(unsupported("machine"))
    }
    async fn delete_machine(&self, _: MachineId) -> rackboot_store::Result<()> {
        Err(unsupported("machine"))
    }
    async fn get_machine(&self, _: MachineId) -> rackboot_store::Result<Machine> {
        Err(unsupported("machine"))
    }
    async fn find_machine_by_name(&self, _: &str) -> rackboot_store::Result<Option<Machine>> {
        Ok(None)
    }
    async fn find_machine_by_mac(&self, _: MacAddr) -> rackboot_store::Result<Option<Machine>> {
        Ok(None)
    }
    async fn list_machines(&self) -> rackboot_store::Result<Vec<Machine>> {
        Ok(vec![])
    }
    async fn put_profile(&self, _: &Profile) -> rackboot_store::Result<()> {
        Err(unsupported("profile"))
    }
    async fn delete_profile(&self, _: &str) -> rackboot_store::Result<()> {
        Err(unsupported("profile"))
    }
    async fn get_profile(&self, _: &str) -> rackboot_store::Result<Profile> {
        Err(unsupported("profile"))
    }
    async fn list_profiles(&self) -> rackboot_store::Result<Vec<Profile>> {
        Ok(vec![])
    }
    async fn put_selector(&self, _: &Selector) -> rackboot_store::Result<()> {
        Err(unsupported("selector"))
    }
    async fn delete_selector(&self, _: &str) -> rackboot_store::Result<()> {
        Err(unsupported("selector"))
    }
    async fn list_selectors(&self) -> rackboot_store::Result<Vec<Selector>> {
        Ok(vec![])
    }
    async fn put_leases(&self, leases: &[Lease]) -> rackboot_store::Result<()> {
        let _open = self.gate.read().await;
        let mut map = self.leases.lock().unwrap();
        for l in leases {
            map.insert(l.ip, l.clone());
        }
        self.batches.lock().unwrap().push(leases.len());
        Ok(())
    }
    async fn delete_lease(&self, ip: Ipv4Addr) -> rackboot_store::Result<()> {
        self.leases.lock().unwrap().remove(&ip);
        Ok(())
    }
    async fn list_leases(&self) -> rackboot_store::Result<Vec<Lease>> {
        Ok(self.leases.lock().unwrap().values().cloned().collect())
    }
    async fn append_events(&self, events: Vec<NewEvent>) -> rackboot_store::Result<Vec<Event>> {
        Ok(events
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.with_id(i as i64 + 1))
            .collect())
    }
    async fn list_events(&self, _: &EventFilter) -> rackboot_store::Result<Vec<Event>> {
        Ok(vec![])
    }
    async fn put_template(&self, _: &rackboot_core::InstallTemplate) -> rackboot_store::Result<()> {
        Err(unsupported("install template"))
    }
    async fn get_template(
        &self,
        _: &str,
    ) -> rackboot_store::Result<rackboot_core::InstallTemplate> {
        Err(unsupported("install template"))
    }
    async fn list_templates(&self) -> rackboot_store::Result<Vec<rackboot_core::InstallTemplate>> {
        Ok(vec![])
    }
    async fn delete_template(&self, _: &str) -> rackboot_store::Result<()> {
        Err(unsupported("install template"))
    }
    async fn replace_installs(
        &self,
        _: rackboot_core::MachineId,
        _: &[rackboot_core::InstallRequest],
        _: &rackboot_core::BootIntent,
        _: chrono::DateTime<chrono::Utc>,
    ) -> rackboot_store::Result<()> {
        Err(unsupported("install"))
    }
    async fn get_install(
        &self,
        _: uuid::Uuid,
    ) -> rackboot_store::Result<rackboot_core::InstallRequest> {
        Err(unsupported("install"))
    }
    async fn list_installs(
        &self,
        _: Option<MachineId>,
    ) -> rackboot_store::Result<Vec<rackboot_core::InstallRequest>> {
        Ok(vec![])
    }
    async fn advance_install(
        &self,
        _: uuid::Uuid,
        _: &str,
        _: rackboot_core::InstallState,
        _: chrono::DateTime<chrono::Utc>,
    ) -> rackboot_store::Result<(rackboot_core::InstallRequest, bool)> {
        Err(unsupported("install"))
    }
    async fn apply_lifecycle(&self, _: &rackboot_store::LifecycleChange) -> R<()> {
        Err(unsupported("lifecycle"))
    }
    async fn set_maintenance(
        &self,
        _: MachineId,
        _: Option<&rackboot_core::Maintenance>,
        _: &rackboot_core::Transition,
    ) -> R<()> {
        Err(unsupported("maintenance"))
    }
    async fn list_transitions(&self, _: MachineId, _: u32) -> R<Vec<rackboot_core::Transition>> {
        Ok(vec![])
    }
    async fn set_facts(
        &self,
        _: MachineId,
        _: &rackboot_core::Facts,
        _: chrono::DateTime<chrono::Utc>,
    ) -> R<()> {
        Err(unsupported("facts"))
    }
    async fn put_workflow(&self, _: &rackboot_core::Workflow) -> R<()> {
        Err(unsupported("workflow"))
    }
    async fn get_workflow(&self, _: rackboot_core::WorkflowId) -> R<rackboot_core::Workflow> {
        Err(unsupported("workflow"))
    }
    async fn list_workflows(
        &self,
        _: &rackboot_store::WorkflowFilter,
    ) -> R<Vec<rackboot_core::Workflow>> {
        Ok(vec![])
    }
    async fn put_agent_session(&self, _: &rackboot_core::AgentSession) -> R<()> {
        Err(unsupported("agent session"))
    }
    async fn list_agent_sessions(&self) -> R<Vec<rackboot_core::AgentSession>> {
        Ok(vec![])
    }
    async fn delete_agent_session(&self, _: MachineId) -> R<()> {
        Err(unsupported("agent session"))
    }
    async fn put_webhook(&self, _: &rackboot_core::Webhook) -> R<()> {
        Err(unsupported("webhook"))
    }
    async fn list_webhooks(&self) -> R<Vec<rackboot_core::Webhook>> {
        Ok(vec![])
    }
    async fn delete_webhook(&self, _: &str) -> R<()> {
        Err(unsupported("webhook"))
    }
    async fn enqueue_deliveries(
        &self,
        _: &[rackboot_core::Delivery],
    ) -> R<Vec<rackboot_core::Delivery>> {
        Err(unsupported("delivery"))
    }
    async fn due_deliveries(
        &self,
        _: chrono::DateTime<chrono::Utc>,
        _: u32,
    ) -> R<Vec<rackboot_core::Delivery>> {
        Ok(vec![])
    }
    async fn update_delivery(&self, _: &rackboot_core::Delivery) -> R<()> {
        Err(unsupported("delivery"))
    }
    async fn list_deliveries(&self, _: Option<&str>, _: u32) -> R<Vec<rackboot_core::Delivery>> {
        Ok(vec![])
    }
}

type R<T> = rackboot_store::Result<T>;

/// A running server and what it writes to.
pub struct Running {
    /// What the server reports as bound, by MAC (boot HTTP binds agent tokens to it).
    pub bound: rackboot_core::BoundLeases,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), rackboot_dhcp::DhcpError>>,
    pub events: tokio::sync::broadcast::Receiver<Event>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub fn start(sockets: DhcpSockets, config: DhcpConfig, store: Arc<dyn Store>) -> Running {
    start_with(sockets, config, store, None)
}

/// [`start`] for a member of a cluster whose live set `peers` follows.
pub fn start_in_cluster(
    sockets: DhcpSockets,
    config: DhcpConfig,
    store: Arc<dyn Store>,
    peers: tokio::sync::watch::Receiver<rackboot_dhcp::Peers>,
) -> Running {
    start_with(sockets, config, store, Some(peers))
}

fn start_with(
    sockets: DhcpSockets,
    config: DhcpConfig,
    store: Arc<dyn Store>,
    peers: Option<tokio::sync::watch::Receiver<rackboot_dhcp::Peers>>,
) -> Running {
    let (hub, queue) = EventHub::new(4096);
    let events = hub.subscribe();
    tokio::spawn(queue.run_unpersisted(hub.clone()));
    let shutdown = CancellationToken::new();
    let bound = rackboot_core::BoundLeases::default();
    let task = tokio::spawn(rackboot_dhcp::run_in_cluster(
        sockets,
        config,
        store,
        hub,
        Arc::new(TestBoot),
        bound.clone(),
        peers,
        shutdown.clone(),
    ));
    Running {
        bound,
        shutdown,
        task,
        events,
    }
}

pub fn config(lease_secs: u32, extra: &str) -> DhcpConfig {
    toml::from_str(&format!(
        r#"
        {extra}
        [[subnets]]
        name = "local"
        cidr = "10.99.0.0/24"
        ranges = ["10.99.0.100-10.99.0.120"]
        router = "10.99.0.1"
        dns = ["10.99.0.1"]
        domain = "lab.test"
        lease_time_secs = {lease_secs}
        options = [{{ code = 252, string = "http://10.99.0.1/wpad.dat" }}]
        [[subnets.reservations]]
        mac = "02:00:00:00:00:99"
        ip = "10.99.0.50"
        hostname = "fixed-host"
        [[subnets]]
        name = "remote"
        cidr = "10.123.0.0/24"
        ranges = ["10.123.0.10-10.123.0.20"]
        router = "10.123.0.1"
        "#
    ))
    .unwrap()
}

/// A client request built with dhcproto, as bytes.
pub fn packet(kind: MessageType, mac: [u8; 6], build: impl FnOnce(&mut Message)) -> Vec<u8> {
    let mut m = Message::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    build(&mut m);
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

/// Receives until a reply with `xid` arrives (or the socket times out).
pub fn recv_reply(sock: &UdpSocket, xid: u32) -> Option<(Message, SocketAddr)> {
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).ok()?;
        if let Some(m) = rackboot_wire::dhcp::decode_reply(&buf[..n])
            && m.xid() == xid
        {
            return Some((m, from));
        }
    }
}

/// Waits up to `secs` for `path` to contain `needle`.
pub async fn wait_for_file(path: &std::path::Path, needle: &str, secs: u64) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{} never contained {needle:?}; it has:\n{text}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
