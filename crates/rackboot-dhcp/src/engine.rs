//! The lease engine: pools, reservations and the RFC 2131 server state machine.
//! State lives in memory; the clock is passed in; every decision is a value the
//! socket loop acts on (reply, persist, drop). No I/O here.

// foldhash: the lease tables are looked up several times per request, and std's
// SipHash was a fifth of the lease engine's time. It is seeded per process, so
// client-chosen keys (MACs, client ids) cannot be aimed at one bucket in advance.
use foldhash::HashMap;
use std::net::Ipv4Addr;

use chrono::{DateTime, Duration, Utc};
use dhcproto::v4::MessageType;
use rackboot_core::{Lease, LeaseState, MacAddr};
use rackboot_wire::dhcp::Request;

use crate::config::{Reservation, Subnet};

/// How a client is recognised: option 61 when sent, else its MAC (RFC 2131 4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Id(Vec<u8>),
    Mac(MacAddr),
}

impl ClientKey {
    pub fn of(req: &Request) -> ClientKey {
        ClientKey::new(req.client_id.as_deref(), req.mac)
    }

    /// A client identifier that is only the client's own Ethernet address (type 1,
    /// then the MAC) says no more than the MAC, and counts as the MAC. One machine
    /// boots through stages that differ here: UEFI's PXE client sends no option 61,
    /// then iPXE and most operating systems send 01:MAC. Keyed apart, each stage
    /// got its own address, so every UEFI boot took two from the pool and the
    /// machine changed address between firmware and iPXE.
    pub fn new(client_id: Option<&[u8]>, mac: MacAddr) -> ClientKey {
        match client_id {
            Some([1, rest @ ..]) if rest == mac.octets() => ClientKey::Mac(mac),
            Some(id) if !id.is_empty() => ClientKey::Id(id.to_vec()),
            _ => ClientKey::Mac(mac),
        }
    }
}

/// Timing knobs of the engine.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub offer_hold_secs: u32,
    pub decline_hold_secs: u32,
}

/// What the server should do about one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send an OFFER of `ip`. `probe` is true when the address is new to this client
    /// (an ICMP probe may run first when enabled).
    Offer {
        ip: Ipv4Addr,
        subnet: usize,
        lease_secs: u32,
        probe: bool,
    },
    /// Persist `lease`, then send an ACK.
    Ack {
        lease: Lease,
        subnet: usize,
        lease_secs: u32,
    },
    /// Send a NAK.
    Nak { why: &'static str },
    /// INFORM: ACK with the subnet's options, no address, no lease time.
    Inform { subnet: usize },
    /// Persist `lease`; no reply (DECLINE, RELEASE).
    Persist { lease: Lease, kind: MessageType },
    /// The client chose another server's offer of another address (RFC 2131
    /// 4.3.2): persist the end of ours (`lease`, expired), say nothing.
    Withdraw { lease: Lease },
    /// Say nothing.
    Ignore(Ignore),
}

/// Why a valid request gets no answer; `reason()` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignore {
    /// No configured subnet for the relay/interface the request came from.
    NoSubnet,
    /// No free address left.
    PoolExhausted,
    /// REQUEST selecting another server's offer.
    OtherServer,
    /// REBINDING/DECLINE/RELEASE for an address we know nothing about.
    NotOurs,
    /// REQUEST with neither server id, requested address nor ciaddr.
    IncompleteRequest,
}

impl Ignore {
    pub fn reason(&self) -> &'static str {
        match self {
            Ignore::NoSubnet => "no_subnet",
            Ignore::PoolExhausted => "pool_exhausted",
            Ignore::OtherServer => "other_server",
            Ignore::NotOurs => "not_ours",
            Ignore::IncompleteRequest => "incomplete_request",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    lease: Lease,
    key: Option<ClientKey>,
    subnet: usize,
}

/// Free addresses of one subnet's pool at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub subnet: String,
    pub size: u64,
    pub free: u64,
}

pub struct LeaseEngine {
    subnets: Vec<Subnet>,
    timings: Timings,
    /// The server's own address: picks the local subnet for unrelayed requests.
    server_ip: Ipv4Addr,
    leases: HashMap<Ipv4Addr, Entry>,
    /// Each client's current address per subnet.
    clients: HashMap<(usize, ClientKey), Ipv4Addr>,
    reservations_by_mac: HashMap<MacAddr, (usize, Reservation)>,
    reserved_ips: HashMap<Ipv4Addr, MacAddr>,
    /// Per subnet: how many never-used addresses were tried so far.
    fresh_cursor: Vec<u64>,
    /// Per subnet: the pool index fresh addresses are tried from (then on,
    /// wrapping). 0 for one server; servers sharing a pool start apart.
    fresh_start: Vec<u64>,
}

const MIN_LEASE_SECS: u32 = 60;

impl LeaseEngine {
    pub fn new(subnets: Vec<Subnet>, timings: Timings, server_ip: Ipv4Addr) -> LeaseEngine {
        let mut reservations_by_mac = HashMap::default();
        let mut reserved_ips = HashMap::default();
        for (i, s) in subnets.iter().enumerate() {
            for r in &s.reservations {
                reservations_by_mac.insert(r.mac, (i, r.clone()));
                reserved_ips.insert(r.ip, r.mac);
            }
        }
        LeaseEngine {
            fresh_cursor: vec![0; subnets.len()],
            fresh_start: vec![0; subnets.len()],
            subnets,
            timings,
            server_ip,
            leases: HashMap::default(),
            clients: HashMap::default(),
            reservations_by_mac,
            reserved_ips,
        }
    }

    pub fn subnets(&self) -> &[Subnet] {
        &self.subnets
    }

    pub fn subnet(&self, i: usize) -> &Subnet {
        &self.subnets[i]
    }

    pub fn reservation(&self, mac: MacAddr) -> Option<&Reservation> {
        self.reservations_by_mac.get(&mac).map(|(_, r)| r)
    }

    /// Starts each pool's never-used addresses at a point chosen by `seed`
    /// (the servers sharing a pool pass different seeds), so servers handing
    /// out fresh addresses at once rarely pick the same one. Whatever they
    /// pick, the store decides who gets an address (`Store::claim_leases`).
    pub fn spread_fresh_addresses(&mut self, seed: u64) {
        for (i, s) in self.subnets.iter().enumerate() {
            let size = s.pool_size();
            if size > 0 {
                let mixed = seed
                    .wrapping_add(i as u64)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                self.fresh_start[i] = (mixed ^ (mixed >> 29)) % size;
            }
        }
    }

    /// Loads leases from the store at start. Leases outside every configured
    /// subnet are skipped and counted in the return value.
    pub fn load(&mut self, leases: Vec<Lease>) -> usize {
        let mut skipped = 0;
        for lease in leases {
            let Some(subnet) = self.subnets.iter().position(|s| s.contains(lease.ip)) else {
                skipped += 1;
                continue;
            };
            let key = match (&lease.client_id, lease.mac) {
                (_, None) => None,
                (Some(hex), Some(mac)) => Some(ClientKey::new(decode_hex(hex).as_deref(), mac)),
                (None, Some(mac)) => Some(ClientKey::Mac(mac)),
            };
            if let Some(k) = &key
                && lease.state != LeaseState::Declined
            {
                self.clients.insert((subnet, k.clone()), lease.ip);
            }
            self.leases.insert(lease.ip, Entry { lease, key, subnet });
        }
        skipped
    }

    /// Learns a lease another server sharing the store wrote (the store holds
    /// it, so its address is that client's now). Unlike [`LeaseEngine::load`],
    /// the client's address here changes only to a binding at least as
    /// recent as the one this server knows: another server's offer, arriving
    /// after this server bound the client, does not move it (the servers
    /// would otherwise keep offering each other's addresses).
    pub fn learn(&mut self, lease: Lease, now: DateTime<Utc>) {
        let Some(subnet) = self.subnets.iter().position(|s| s.contains(lease.ip)) else {
            return;
        };
        let key = match (&lease.client_id, lease.mac) {
            (_, None) => None,
            (Some(hex), Some(mac)) => Some(ClientKey::new(decode_hex(hex).as_deref(), mac)),
            (None, Some(mac)) => Some(ClientKey::Mac(mac)),
        };
        if let Some(k) = &key
            && matches!(lease.state, LeaseState::Bound | LeaseState::Offered)
            && lease.expires_at > now
        {
            let current = self
                .clients
                .get(&(subnet, k.clone()))
                .copied()
                .filter(|&ip| ip != lease.ip)
                .and_then(|ip| self.leases.get(&ip).map(|e| (ip, e.clone())))
                .filter(|(_, e)| e.key.as_ref() == Some(k) && e.lease.expires_at > now);
            // Another server's offer moves a client this server knows
            // nothing current of; a binding moves it from an offer (the
            // client took the other one) or from an older binding. An offer
            // never replaces this server's own offer: the client may still
            // take it, and must then get it.
            let moves = match &current {
                None => true,
                Some((_, e)) => match (e.lease.state, lease.state) {
                    (_, LeaseState::Offered) => false,
                    (LeaseState::Bound, LeaseState::Bound) => {
                        lease.updated_at >= e.lease.updated_at
                    }
                    _ => true,
                },
            };
            if moves {
                // An offer of ours the client will not take now.
                if let Some((old, e)) = current
                    && e.lease.state == LeaseState::Offered
                    && let Some(entry) = self.leases.get_mut(&old)
                {
                    entry.lease.state = LeaseState::Expired;
                    entry.lease.expires_at = now;
                }
                self.clients.insert((subnet, k.clone()), lease.ip);
            }
        }
        // Whoever held this address before no longer does.
        if let Some(prev) = self.leases.get(&lease.ip)
            && let Some(pk) = &prev.key
            && key.as_ref() != Some(pk)
            && self.clients.get(&(prev.subnet, pk.clone())) == Some(&lease.ip)
        {
            let pk = pk.clone();
            self.clients.remove(&(prev.subnet, pk));
        }
        self.leases.insert(lease.ip, Entry { lease, key, subnet });
    }

    /// The subnet a request belongs to: the relay's (giaddr), else the one holding
    /// the client's address (INFORM, RENEW), else the server's own.
    pub fn select_subnet(&self, req: &Request) -> Option<usize> {
        let find = |ip: Ipv4Addr| self.subnets.iter().position(|s| s.contains(ip));
        if req.is_relayed() {
            return find(req.giaddr());
        }
        if !req.ciaddr().is_unspecified()
            && let Some(i) = find(req.ciaddr())
        {
            return Some(i);
        }
        find(self.server_ip)
    }

    /// Decides what to do about `req`.
    pub fn handle(&mut self, req: &Request, now: DateTime<Utc>) -> Outcome {
        let Some(subnet) = self.select_subnet(req) else {
            return Outcome::Ignore(Ignore::NoSubnet);
        };
        match req.kind {
            MessageType::Discover => self.discover(req, subnet, now),
            MessageType::Request => self.request(req, subnet, now),
            MessageType::Decline => self.decline(req, now),
            MessageType::Release => self.release(req, now),
            MessageType::Inform => Outcome::Inform { subnet },
            // parse_request lets only client messages through.
            _ => Outcome::Ignore(Ignore::IncompleteRequest),
        }
    }

    /// Lease length for `req` in `subnet`: the client's wish within [60 s, configured].
    pub fn lease_secs(&self, req: &Request, subnet: usize) -> u32 {
        let max = self.subnets[subnet].lease_time_secs;
        req.lease_time
            .map_or(max, |t| t.clamp(MIN_LEASE_SECS.min(max), max))
    }

    /// True when `ip` may be given to `key` now.
    fn available_for(
        &self,
        ip: Ipv4Addr,
        key: &ClientKey,
        mac: MacAddr,
        now: DateTime<Utc>,
    ) -> bool {
        if let Some(owner) = self.reserved_ips.get(&ip)
            && *owner != mac
        {
            return false;
        }
        match self.leases.get(&ip) {
            None => true,
            Some(e) => match e.lease.state {
                LeaseState::Declined => e.lease.expires_at <= now,
                _ if e.key.as_ref() == Some(key) => true,
                LeaseState::Released | LeaseState::Expired => true,
                LeaseState::Bound | LeaseState::Offered => e.lease.expires_at <= now,
            },
        }
    }

    /// The address this client should get in `subnet`, and whether it is new to it.
    fn choose(
        &mut self,
        req: &Request,
        key: &ClientKey,
        subnet: usize,
        now: DateTime<Utc>,
    ) -> Option<(Ipv4Addr, bool)> {
        if let Some((s, r)) = self.reservations_by_mac.get(&req.mac)
            && *s == subnet
        {
            return Some((r.ip, false));
        }
        if let Some(ip) = self.clients.get(&(subnet, key.clone())).copied()
            && self.subnets[subnet].in_pool(ip)
            && self.available_for(ip, key, req.mac, now)
        {
            return Some((ip, false));
        }
        if let Some(ip) = req.requested_ip
            && self.subnets[subnet].in_pool(ip)
            && self.available_for(ip, key, req.mac, now)
        {
            return Some((ip, true));
        }
        self.allocate(subnet, key, req.mac, now)
            .map(|ip| (ip, true))
    }

    /// A never-used pool address first; once none is left, the free one unused longest.
    fn allocate(
        &mut self,
        subnet: usize,
        key: &ClientKey,
        mac: MacAddr,
        now: DateTime<Utc>,
    ) -> Option<Ipv4Addr> {
        let s = &self.subnets[subnet];
        let size = s.pool_size();
        while self.fresh_cursor[subnet] < size {
            let ip = nth_in_pool(
                s,
                (self.fresh_start[subnet] + self.fresh_cursor[subnet]) % size,
            );
            self.fresh_cursor[subnet] += 1;
            if !self.leases.contains_key(&ip) && !self.reserved_ips.contains_key(&ip) {
                return Some(ip);
            }
        }
        let mut best: Option<(Option<DateTime<Utc>>, Ipv4Addr)> = None;
        for ip in s.pool() {
            if !self.available_for(ip, key, mac, now) {
                continue;
            }
            let since = self.leases.get(&ip).map(|e| e.lease.expires_at);
            // Never-leased (None) sorts first, then oldest expiry.
            if best.as_ref().is_none_or(|(b, _)| since < *b) {
                best = Some((since, ip));
                if since.is_none() {
                    break;
                }
            }
        }
        best.map(|(_, ip)| ip)
    }

    fn discover(&mut self, req: &Request, subnet: usize, now: DateTime<Utc>) -> Outcome {
        let key = ClientKey::of(req);
        let Some((ip, new)) = self.choose(req, &key, subnet, now) else {
            return Outcome::Ignore(Ignore::PoolExhausted);
        };
        let lease_secs = self.lease_secs(req, subnet);
        // A bound lease stays bound while offered again (client rebooted); otherwise hold it.
        let keep_bound = self.leases.get(&ip).is_some_and(|e| {
            e.key.as_ref() == Some(&key)
                && e.lease.state == LeaseState::Bound
                && e.lease.expires_at > now
        });
        if !keep_bound {
            let expires = now + Duration::seconds(i64::from(self.timings.offer_hold_secs));
            self.put(
                ip,
                subnet,
                Some(key),
                req,
                LeaseState::Offered,
                expires,
                now,
            );
        }
        Outcome::Offer {
            ip,
            subnet,
            lease_secs,
            probe: new,
        }
    }

    fn request(&mut self, req: &Request, subnet: usize, now: DateTime<Utc>) -> Outcome {
        let key = ClientKey::of(req);
        let s = &self.subnets[subnet];
        // SELECTING: the client names the server it chose.
        if let Some(server) = req.server_id {
            if server != self.server_ip {
                // It took another server's offer: free ours now. In the
                // store too, unless the other server offered the same
                // address (it is binding that row now).
                if let Some(ip) = self.clients.get(&(subnet, key.clone())).copied()
                    && let Some(e) = self.leases.get_mut(&ip)
                    && e.key.as_ref() == Some(&key)
                    && e.lease.state == LeaseState::Offered
                    && e.lease.expires_at > now
                {
                    e.lease.state = LeaseState::Expired;
                    e.lease.expires_at = now;
                    e.lease.updated_at = now;
                    if req.requested_ip.is_some_and(|r| r != ip) {
                        return Outcome::Withdraw {
                            lease: e.lease.clone(),
                        };
                    }
                }
                return Outcome::Ignore(Ignore::OtherServer);
            }
            let ip = req.requested_ip.unwrap_or(req.ciaddr());
            let ours = self.clients.get(&(subnet, key.clone())) == Some(&ip);
            if ours && self.available_for(ip, &key, req.mac, now) {
                return self.bind(req, key, ip, subnet, now);
            }
            return Outcome::Nak {
                why: "requested address is not the one offered",
            };
        }
        // INIT-REBOOT: verifying a remembered address.
        if let Some(ip) = req.requested_ip {
            if !s.contains(ip) {
                return Outcome::Nak {
                    why: "address is not on this network",
                };
            }
            return self.confirm(req, key, ip, subnet, now);
        }
        // RENEWING (unicast) or REBINDING (broadcast).
        let ip = req.ciaddr();
        if ip.is_unspecified() {
            return Outcome::Ignore(Ignore::IncompleteRequest);
        }
        if !self.subnets.iter().any(|s| s.contains(ip)) {
            return Outcome::Ignore(Ignore::NotOurs);
        }
        self.confirm(req, key, ip, subnet, now)
    }

    /// INIT-REBOOT / RENEW / REBIND of `ip`: ACK when it is (or may be) the client's.
    fn confirm(
        &mut self,
        req: &Request,
        key: ClientKey,
        ip: Ipv4Addr,
        subnet: usize,
        now: DateTime<Utc>,
    ) -> Outcome {
        let reserved_here = self
            .reservations_by_mac
            .get(&req.mac)
            .filter(|(s, _)| *s == subnet)
            .map(|(_, r)| r.ip);
        if let Some(r) = reserved_here {
            return if r == ip {
                self.bind(req, key, ip, subnet, now)
            } else {
                Outcome::Nak {
                    why: "client has a reserved address",
                }
            };
        }
        let known = self.clients.get(&(subnet, key.clone())) == Some(&ip);
        let s = &self.subnets[subnet];
        if known && self.available_for(ip, &key, req.mac, now) {
            return self.bind(req, key, ip, subnet, now);
        }
        // Authoritative for our pools: an unknown but free pool address is granted
        // (e.g. a client whose lease we lost), anything else is refused.
        if s.in_pool(ip) && self.available_for(ip, &key, req.mac, now) && !known {
            let has_other = self
                .clients
                .get(&(subnet, key.clone()))
                .is_some_and(|other| {
                    *other != ip
                        && self.leases.get(other).is_some_and(|e| {
                            e.lease.state == LeaseState::Bound && e.lease.expires_at > now
                        })
                });
            if !has_other {
                return self.bind(req, key, ip, subnet, now);
            }
        }
        Outcome::Nak {
            why: "address is not available to this client",
        }
    }

    fn bind(
        &mut self,
        req: &Request,
        key: ClientKey,
        ip: Ipv4Addr,
        subnet: usize,
        now: DateTime<Utc>,
    ) -> Outcome {
        let lease_secs = self.lease_secs(req, subnet);
        let expires = now + Duration::seconds(i64::from(lease_secs));
        let lease = self.put(ip, subnet, Some(key), req, LeaseState::Bound, expires, now);
        Outcome::Ack {
            lease,
            subnet,
            lease_secs,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        ip: Ipv4Addr,
        subnet: usize,
        key: Option<ClientKey>,
        req: &Request,
        state: LeaseState,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Lease {
        let hostname = self
            .reservations_by_mac
            .get(&req.mac)
            .and_then(|(_, r)| r.hostname.clone())
            .or_else(|| req.hostname.clone());
        let lease = Lease {
            ip,
            mac: key.as_ref().map(|_| req.mac),
            client_id: match &key {
                Some(ClientKey::Id(id)) => Some(encode_hex(id)),
                _ => None,
            },
            hostname: if key.is_some() { hostname } else { None },
            state,
            expires_at,
            subnet: self.subnets[subnet].name.clone(),
            updated_at: now,
        };
        if let Some(k) = &key {
            // The client moves: its previous address in this subnet is no longer its.
            if let Some(old) = self.clients.insert((subnet, k.clone()), ip)
                && old != ip
                && let Some(e) = self.leases.get_mut(&old)
                && e.key.as_ref() == Some(k)
                && matches!(e.lease.state, LeaseState::Offered)
            {
                e.lease.state = LeaseState::Expired;
                e.lease.expires_at = now;
            }
        }
        // The previous holder of this address (expired) forgets it.
        if let Some(prev) = self.leases.get(&ip)
            && let Some(pk) = &prev.key
            && key.as_ref() != Some(pk)
        {
            let pk = pk.clone();
            if self.clients.get(&(prev.subnet, pk.clone())) == Some(&ip) {
                self.clients.remove(&(prev.subnet, pk));
            }
        }
        self.leases.insert(
            ip,
            Entry {
                lease: lease.clone(),
                key,
                subnet,
            },
        );
        lease
    }

    fn decline(&mut self, req: &Request, now: DateTime<Utc>) -> Outcome {
        if req.server_id.is_some_and(|s| s != self.server_ip) {
            return Outcome::Ignore(Ignore::OtherServer);
        }
        let key = ClientKey::of(req);
        let Some(ip) = req.requested_ip else {
            return Outcome::Ignore(Ignore::IncompleteRequest);
        };
        let Some(e) = self.leases.get(&ip) else {
            return Outcome::Ignore(Ignore::NotOurs);
        };
        if e.key.as_ref() != Some(&key) {
            return Outcome::Ignore(Ignore::NotOurs);
        }
        let subnet = e.subnet;
        self.clients.remove(&(subnet, key));
        let lease = self.set_declined(ip, subnet, now);
        Outcome::Persist {
            lease,
            kind: MessageType::Decline,
        }
    }

    fn set_declined(&mut self, ip: Ipv4Addr, subnet: usize, now: DateTime<Utc>) -> Lease {
        let lease = Lease {
            ip,
            mac: None,
            client_id: None,
            hostname: None,
            state: LeaseState::Declined,
            expires_at: now + Duration::seconds(i64::from(self.timings.decline_hold_secs)),
            subnet: self.subnets[subnet].name.clone(),
            updated_at: now,
        };
        self.leases.insert(
            ip,
            Entry {
                lease: lease.clone(),
                key: None,
                subnet,
            },
        );
        lease
    }

    /// An ICMP probe found `ip` in use: keep it out of the pool like a DECLINE.
    pub fn mark_conflict(&mut self, ip: Ipv4Addr, now: DateTime<Utc>) -> Option<Lease> {
        let subnet = self.subnets.iter().position(|s| s.contains(ip))?;
        if let Some(e) = self.leases.get(&ip)
            && let Some(k) = e.key.clone()
        {
            self.clients.remove(&(e.subnet, k));
        }
        Some(self.set_declined(ip, subnet, now))
    }

    /// The store refused `lease` (this engine's offer or binding): it is not
    /// the client's. Its address goes back to what the store says holds it
    /// (the caller loads that next); the client no longer points at it.
    pub fn drop_refused(&mut self, lease: &Lease, now: DateTime<Utc>) {
        if let Some(e) = self.leases.get_mut(&lease.ip)
            && e.lease == *lease
        {
            e.lease.state = LeaseState::Expired;
            e.lease.expires_at = now;
            if let Some(k) = e.key.clone()
                && self.clients.get(&(e.subnet, k.clone())) == Some(&lease.ip)
            {
                self.clients.remove(&(e.subnet, k));
            }
        }
    }

    /// The client of `req` moves off `ip` (this engine chose another address
    /// for it, though it holds `ip`: its reservation, or `ip` left the
    /// pool): its lease of `ip` ends (released), and is returned to write.
    pub fn end_moved(&mut self, ip: Ipv4Addr, req: &Request, now: DateTime<Utc>) -> Option<Lease> {
        let key = ClientKey::of(req);
        let e = self.leases.get_mut(&ip)?;
        if e.key.as_ref() != Some(&key)
            || !matches!(e.lease.state, LeaseState::Bound | LeaseState::Offered)
        {
            return None;
        }
        e.lease.state = LeaseState::Released;
        e.lease.expires_at = now;
        e.lease.updated_at = now;
        let ended = e.lease.clone();
        if self.clients.get(&(e.subnet, key.clone())) == Some(&ip) {
            self.clients.remove(&(e.subnet, key));
        }
        Some(ended)
    }

    /// True while `ip` is still offered to the client of `req` (the probe finished in time).
    pub fn still_offered(&self, req: &Request, ip: Ipv4Addr, now: DateTime<Utc>) -> bool {
        let key = ClientKey::of(req);
        self.leases.get(&ip).is_some_and(|e| {
            e.key.as_ref() == Some(&key)
                && e.lease.expires_at > now
                && matches!(e.lease.state, LeaseState::Offered | LeaseState::Bound)
        })
    }

    fn release(&mut self, req: &Request, now: DateTime<Utc>) -> Outcome {
        if req.server_id.is_some_and(|s| s != self.server_ip) {
            return Outcome::Ignore(Ignore::OtherServer);
        }
        let key = ClientKey::of(req);
        let ip = req.ciaddr();
        match self.leases.get_mut(&ip) {
            Some(e) if e.key.as_ref() == Some(&key) && e.lease.state == LeaseState::Bound => {
                e.lease.state = LeaseState::Released;
                e.lease.expires_at = now;
                e.lease.updated_at = now;
                Outcome::Persist {
                    lease: e.lease.clone(),
                    kind: MessageType::Release,
                }
            }
            _ => Outcome::Ignore(Ignore::NotOurs),
        }
    }

    /// The lease of `ip`, as the engine currently sees it.
    pub fn lease(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.get(&ip).map(|e| &e.lease)
    }

    /// Free addresses per subnet (pool minus active offers, bindings, declines and
    /// addresses reserved inside the pool).
    pub fn pool_stats(&self, now: DateTime<Utc>) -> Vec<PoolStats> {
        let mut used = vec![0u64; self.subnets.len()];
        for (ip, e) in &self.leases {
            let active = match e.lease.state {
                LeaseState::Bound | LeaseState::Offered | LeaseState::Declined => {
                    e.lease.expires_at > now
                }
                LeaseState::Released | LeaseState::Expired => false,
            };
            if active && self.subnets[e.subnet].in_pool(*ip) && !self.reserved_ips.contains_key(ip)
            {
                used[e.subnet] += 1;
            }
        }
        self.subnets
            .iter()
            .zip(used)
            .map(|(s, used)| {
                let reserved_in_pool =
                    s.reservations.iter().filter(|r| s.in_pool(r.ip)).count() as u64;
                let size = s.pool_size();
                PoolStats {
                    subnet: s.name.clone(),
                    size,
                    free: size.saturating_sub(used + reserved_in_pool),
                }
            })
            .collect()
    }
}

fn nth_in_pool(s: &Subnet, mut n: u64) -> Ipv4Addr {
    for (a, b) in &s.ranges {
        let len = u64::from(u32::from(*b) - u32::from(*a)) + 1;
        if n < len {
            return Ipv4Addr::from(u32::from(*a) + n as u32);
        }
        n -= len;
    }
    unreachable!("n < pool_size checked by the caller")
}

pub(crate) fn encode_hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 0xf)] as char);
    }
    s
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DhcpConfig;
    use dhcproto::v4::{DhcpOption, Encodable, Encoder, Message};
    use rackboot_wire::dhcp::parse_request;

    #[test]
    fn client_id_hex_round_trips() {
        for (bytes, hex) in [
            (&[][..], ""),
            (
                &[0x01, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef][..],
                "01525400abcdef",
            ),
            (&[0x00, 0x0f, 0xf0, 0xff][..], "000ff0ff"),
        ] {
            assert_eq!(encode_hex(bytes), hex);
            assert_eq!(decode_hex(hex).as_deref(), Some(bytes));
        }
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

    fn engine() -> LeaseEngine {
        let cfg: DhcpConfig = toml::from_str(
            r#"
            [[subnets]]
            name = "local"
            cidr = "10.77.0.0/24"
            ranges = ["10.77.0.100-10.77.0.103"]
            [[subnets.reservations]]
            mac = "52:54:00:00:00:99"
            ip = "10.77.0.50"
            hostname = "fixed"
            [[subnets]]
            name = "remote"
            cidr = "10.88.0.0/24"
            ranges = ["10.88.0.10-10.88.0.11"]
            "#,
        )
        .unwrap();
        LeaseEngine::new(
            cfg.compile().unwrap(),
            Timings {
                offer_hold_secs: 60,
                decline_hold_secs: 600,
            },
            SERVER,
        )
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    /// A request as a client would send it, through the real parser.
    #[derive(Clone, Default)]
    struct R {
        kind: Option<MessageType>,
        mac: u8,
        ciaddr: Option<[u8; 4]>,
        giaddr: Option<[u8; 4]>,
        requested: Option<[u8; 4]>,
        server: Option<Ipv4Addr>,
        lease: Option<u32>,
        client_id: Option<Vec<u8>>,
    }

    fn req(r: R) -> Request {
        let mut m = Message::new(
            r.ciaddr
                .map(Ipv4Addr::from)
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            r.giaddr
                .map(Ipv4Addr::from)
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
            &mac(r.mac).octets(),
        );
        m.opts_mut()
            .insert(DhcpOption::MessageType(r.kind.unwrap()));
        if let Some(ip) = r.requested {
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(ip.into()));
        }
        if let Some(s) = r.server {
            m.opts_mut().insert(DhcpOption::ServerIdentifier(s));
        }
        if let Some(t) = r.lease {
            m.opts_mut().insert(DhcpOption::AddressLeaseTime(t));
        }
        if let Some(id) = r.client_id {
            m.opts_mut().insert(DhcpOption::ClientIdentifier(id));
        }
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        parse_request(&buf).unwrap()
    }

    fn discover(mac: u8) -> Request {
        req(R {
            kind: Some(MessageType::Discover),
            mac,
            ..R::default()
        })
    }

    fn select(mac: u8, ip: [u8; 4], server: Ipv4Addr) -> Request {
        req(R {
            kind: Some(MessageType::Request),
            mac,
            requested: Some(ip),
            server: Some(server),
            ..R::default()
        })
    }

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    /// `mac`'s binding of `ip` in subnet "local", from t0 for an hour.
    fn bound_an_hour(ip: Ipv4Addr, mac: MacAddr) -> Lease {
        Lease {
            ip,
            mac: Some(mac),
            client_id: None,
            hostname: None,
            state: LeaseState::Bound,
            expires_at: t0() + Duration::seconds(3600),
            subnet: "local".into(),
            updated_at: t0(),
        }
    }

    fn offered(o: &Outcome) -> Ipv4Addr {
        match o {
            Outcome::Offer { ip, .. } => *ip,
            other => panic!("expected an offer, got {other:?}"),
        }
    }

    fn acked(o: &Outcome) -> &Lease {
        match o {
            Outcome::Ack { lease, .. } => lease,
            other => panic!("expected an ACK, got {other:?}"),
        }
    }

    #[test]
    fn dora_then_same_address_again() {
        let mut e = engine();
        let now = t0();
        let o = e.handle(&discover(1), now);
        assert_eq!(offered(&o), Ipv4Addr::new(10, 77, 0, 100));
        assert!(matches!(
            o,
            Outcome::Offer {
                probe: true,
                lease_secs: 3600,
                ..
            }
        ));
        let a = e.handle(&select(1, [10, 77, 0, 100], SERVER), now);
        let lease = acked(&a);
        assert_eq!(lease.state, LeaseState::Bound);
        assert_eq!(lease.mac, Some(mac(1)));
        assert_eq!(lease.subnet, "local");
        assert_eq!(lease.expires_at, now + Duration::seconds(3600));
        // A second client gets the next address; the first one keeps its own.
        assert_eq!(
            offered(&e.handle(&discover(2), now)),
            Ipv4Addr::new(10, 77, 0, 101)
        );
        let again = e.handle(&discover(1), now + Duration::seconds(10));
        assert!(matches!(again, Outcome::Offer { probe: false, .. }));
        assert_eq!(offered(&again), Ipv4Addr::new(10, 77, 0, 100));
        // Rebooting bound client: the lease stays bound while re-offered.
        assert_eq!(
            e.lease(Ipv4Addr::new(10, 77, 0, 100)).unwrap().state,
            LeaseState::Bound
        );
    }

    #[test]
    fn requested_lease_time_is_capped_and_floored() {
        let mut e = engine();
        let mut r = discover(1);
        r.lease_time = Some(10);
        assert!(matches!(
            e.handle(&r, t0()),
            Outcome::Offer { lease_secs: 60, .. }
        ));
        r.lease_time = Some(99999);
        assert!(matches!(
            e.handle(&r, t0()),
            Outcome::Offer {
                lease_secs: 3600,
                ..
            }
        ));
    }

    #[test]
    fn request_for_another_server_is_dropped_and_frees_our_offer() {
        let mut e = engine();
        let ip = offered(&e.handle(&discover(1), t0()));
        assert_eq!(
            e.handle(&select(1, ip.octets(), OTHER_SERVER), t0()),
            Outcome::Ignore(Ignore::OtherServer)
        );
        // The address is free for someone else at once.
        assert_eq!(e.pool_stats(t0())[0].free, 4);
        assert_eq!(e.lease(ip).unwrap().state, LeaseState::Expired);
    }

    /// RFC 2131 4.3.2: a REQUEST naming another server for another address
    /// ends our offer in the store too; for the address we offered as well
    /// (both servers offered it), only here: the other server binds that row.
    #[test]
    fn request_for_another_servers_other_address_withdraws_our_offer() {
        let mut e = engine();
        let ip = offered(&e.handle(&discover(1), t0()));
        let theirs = if ip.octets()[3] == 103 {
            [10, 77, 0, 102]
        } else {
            [10, 77, 0, 103]
        };
        match e.handle(&select(1, theirs, OTHER_SERVER), t0()) {
            Outcome::Withdraw { lease } => {
                assert_eq!((lease.ip, lease.state), (ip, LeaseState::Expired));
                assert_eq!(lease.mac, Some(mac(1)));
                assert_eq!(lease.expires_at, t0());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.pool_stats(t0())[0].free, 4);
        // Only once: the offer is gone.
        assert_eq!(
            e.handle(&select(1, theirs, OTHER_SERVER), t0()),
            Outcome::Ignore(Ignore::OtherServer)
        );
    }

    #[test]
    fn a_refused_claim_leaves_the_client_and_the_address() {
        let mut e = engine();
        let ip = offered(&e.handle(&discover(1), t0()));
        let claimed = e.lease(ip).unwrap().clone();
        e.drop_refused(&claimed, t0());
        assert_eq!(e.lease(ip).unwrap().state, LeaseState::Expired);
        // The store said client 1 holds another address: it is offered that.
        let theirs = Lease {
            ip: Ipv4Addr::new(10, 77, 0, if ip.octets()[3] == 103 { 102 } else { 103 }),
            state: LeaseState::Bound,
            expires_at: t0() + Duration::seconds(3600),
            ..claimed
        };
        e.load(vec![theirs.clone()]);
        assert_eq!(offered(&e.handle(&discover(1), t0())), theirs.ip);
        assert_eq!(e.lease(theirs.ip).unwrap().state, LeaseState::Bound);
    }

    /// A client bound to a pool address that now has a reservation: the
    /// engine offers the reservation, and (with a shared store, which refuses
    /// a client's second address) ends the old binding to move it.
    #[test]
    fn a_client_moved_to_its_reservation_ends_its_old_lease() {
        let mut e = engine();
        let old = Ipv4Addr::new(10, 77, 0, 101);
        e.load(vec![bound_an_hour(old, mac(0x99))]);
        assert_eq!(
            offered(&e.handle(&discover(0x99), t0())),
            Ipv4Addr::new(10, 77, 0, 50)
        );
        let ended = e.end_moved(old, &discover(0x99), t0()).unwrap();
        assert_eq!((ended.ip, ended.state), (old, LeaseState::Released));
        assert_eq!(ended.mac, Some(mac(0x99)));
        // Only the client's own lease, and only once.
        assert_eq!(e.end_moved(old, &discover(0x99), t0()), None);
        let theirs = offered(&e.handle(&discover(2), t0()));
        assert_eq!(e.end_moved(theirs, &discover(0x99), t0()), None);
    }

    #[test]
    fn request_for_an_address_not_offered_is_naked() {
        let mut e = engine();
        offered(&e.handle(&discover(1), t0()));
        assert!(matches!(
            e.handle(&select(1, [10, 77, 0, 103], SERVER), t0()),
            Outcome::Nak { .. }
        ));
    }

    #[test]
    fn init_reboot_table() {
        let mut e = engine();
        let now = t0();
        let ip = offered(&e.handle(&discover(1), now));
        acked(&e.handle(&select(1, ip.octets(), SERVER), now));
        let reboot = |mac, ip: [u8; 4]| {
            req(R {
                kind: Some(MessageType::Request),
                mac,
                requested: Some(ip),
                ..R::default()
            })
        };
        // Its own address: ACK.
        acked(&e.handle(&reboot(1, ip.octets()), now));
        // Someone else's address: NAK.
        assert!(matches!(
            e.handle(&reboot(2, ip.octets()), now),
            Outcome::Nak { .. }
        ));
        // An address from another network (moved laptop): NAK.
        assert_eq!(
            e.handle(&reboot(3, [192, 168, 1, 20]), now),
            Outcome::Nak {
                why: "address is not on this network"
            }
        );
        // A different address while it holds one: NAK.
        assert!(matches!(
            e.handle(&reboot(1, [10, 77, 0, 102]), now),
            Outcome::Nak { .. }
        ));
        // Reserved client asking for a pool address: NAK (it must use its reservation).
        assert!(matches!(
            e.handle(&reboot(0x99, [10, 77, 0, 103]), now),
            Outcome::Nak { .. }
        ));
        acked(&e.handle(&reboot(0x99, [10, 77, 0, 50]), now));
    }

    #[test]
    fn renew_and_rebind_extend_the_lease() {
        let mut e = engine();
        let now = t0();
        let ip = offered(&e.handle(&discover(1), now));
        acked(&e.handle(&select(1, ip.octets(), SERVER), now));
        let later = now + Duration::seconds(1800);
        let renew = req(R {
            kind: Some(MessageType::Request),
            mac: 1,
            ciaddr: Some(ip.octets()),
            ..R::default()
        });
        let l = acked(&e.handle(&renew, later)).clone();
        assert_eq!(l.expires_at, later + Duration::seconds(3600));
        // Someone else renewing our client's address: NAK.
        let mut thief = renew.clone();
        thief.mac = mac(7);
        assert!(matches!(e.handle(&thief, later), Outcome::Nak { .. }));
        // Renewing an address outside all our subnets: not ours, silence.
        let foreign = req(R {
            kind: Some(MessageType::Request),
            mac: 8,
            ciaddr: Some([192, 168, 5, 5]),
            ..R::default()
        });
        assert_eq!(e.handle(&foreign, later), Outcome::Ignore(Ignore::NotOurs));
    }

    #[test]
    fn decline_holds_the_address_then_it_returns() {
        let mut e = engine();
        let now = t0();
        let ip = offered(&e.handle(&discover(1), now));
        acked(&e.handle(&select(1, ip.octets(), SERVER), now));
        let decline = req(R {
            kind: Some(MessageType::Decline),
            mac: 1,
            requested: Some(ip.octets()),
            server: Some(SERVER),
            ..R::default()
        });
        match e.handle(&decline, now) {
            Outcome::Persist { lease, kind } => {
                assert_eq!(kind, MessageType::Decline);
                assert_eq!(lease.state, LeaseState::Declined);
                assert_eq!(lease.mac, None);
                assert_eq!(lease.expires_at, now + Duration::seconds(600));
            }
            other => panic!("{other:?}"),
        }
        // Not reoffered, not even to the same client, during the hold.
        for m in 1..=3 {
            assert_ne!(offered(&e.handle(&discover(m), now)), ip);
        }
        assert_eq!(e.pool_stats(now)[0].free, 0, "3 offers + 1 declined of 4");
        // After the hold (and the offers expiring) it is back.
        let after = now + Duration::seconds(601);
        assert_eq!(e.pool_stats(after)[0].free, 4);
        // A DECLINE for an address the client does not hold is ignored.
        let bogus = req(R {
            kind: Some(MessageType::Decline),
            mac: 5,
            requested: Some([10, 77, 0, 101]),
            ..R::default()
        });
        assert_eq!(e.handle(&bogus, now), Outcome::Ignore(Ignore::NotOurs));
    }

    #[test]
    fn release_frees_and_remembers() {
        let mut e = engine();
        let now = t0();
        let ip = offered(&e.handle(&discover(1), now));
        acked(&e.handle(&select(1, ip.octets(), SERVER), now));
        let release = req(R {
            kind: Some(MessageType::Release),
            mac: 1,
            ciaddr: Some(ip.octets()),
            server: Some(SERVER),
            ..R::default()
        });
        match e.handle(&release, now) {
            Outcome::Persist { lease, .. } => assert_eq!(lease.state, LeaseState::Released),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.handle(&release, now),
            Outcome::Ignore(Ignore::NotOurs),
            "only once"
        );
        // The same client gets the same address back.
        assert_eq!(offered(&e.handle(&discover(1), now)), ip);
    }

    #[test]
    fn pool_exhaustion_then_reuse_of_expired() {
        let mut e = engine();
        let now = t0();
        for m in 1..=4 {
            let ip = offered(&e.handle(&discover(m), now));
            acked(&e.handle(&select(m, ip.octets(), SERVER), now));
        }
        assert_eq!(
            e.handle(&discover(5), now),
            Outcome::Ignore(Ignore::PoolExhausted)
        );
        assert_eq!(e.pool_stats(now)[0].free, 0);
        // After the leases expire a newcomer gets the one that expired first.
        let later = now + Duration::seconds(3601);
        assert_eq!(
            offered(&e.handle(&discover(5), later)),
            Ipv4Addr::new(10, 77, 0, 100)
        );
    }

    #[test]
    fn reservation_wins_and_carries_hostname() {
        let mut e = engine();
        let now = t0();
        let o = e.handle(&discover(0x99), now);
        assert!(matches!(o, Outcome::Offer { probe: false, .. }));
        assert_eq!(offered(&o), Ipv4Addr::new(10, 77, 0, 50));
        let l = acked(&e.handle(&select(0x99, [10, 77, 0, 50], SERVER), now)).clone();
        assert_eq!(l.hostname.as_deref(), Some("fixed"));
        // Nobody else may take a reserved address even if they ask for it.
        let mut r = discover(3);
        r.requested_ip = Some(Ipv4Addr::new(10, 77, 0, 50));
        assert_ne!(offered(&e.handle(&r, now)), Ipv4Addr::new(10, 77, 0, 50));
    }

    #[test]
    fn relayed_requests_use_the_relay_subnet() {
        let mut e = engine();
        let r = req(R {
            kind: Some(MessageType::Discover),
            mac: 1,
            giaddr: Some([10, 88, 0, 1]),
            ..R::default()
        });
        match e.handle(&r, t0()) {
            Outcome::Offer { ip, subnet, .. } => {
                assert_eq!(ip, Ipv4Addr::new(10, 88, 0, 10));
                assert_eq!(e.subnet(subnet).name, "remote");
            }
            other => panic!("{other:?}"),
        }
        let unknown_relay = req(R {
            kind: Some(MessageType::Discover),
            mac: 1,
            giaddr: Some([172, 16, 0, 1]),
            ..R::default()
        });
        assert_eq!(
            e.handle(&unknown_relay, t0()),
            Outcome::Ignore(Ignore::NoSubnet)
        );
    }

    #[test]
    fn inform_gets_options_only() {
        let mut e = engine();
        let r = req(R {
            kind: Some(MessageType::Inform),
            mac: 1,
            ciaddr: Some([10, 88, 0, 200]),
            ..R::default()
        });
        assert_eq!(e.handle(&r, t0()), Outcome::Inform { subnet: 1 });
    }

    #[test]
    fn conflict_marks_declined_and_next_discover_moves_on() {
        let mut e = engine();
        let now = t0();
        let ip = offered(&e.handle(&discover(1), now));
        let lease = e.mark_conflict(ip, now).unwrap();
        assert_eq!(lease.state, LeaseState::Declined);
        assert!(!e.still_offered(&discover(1), ip, now));
        let next = offered(&e.handle(&discover(1), now));
        assert_ne!(next, ip);
        assert!(e.still_offered(&discover(1), next, now));
    }

    #[test]
    fn spread_fresh_addresses_start_apart_and_cover_the_pool() {
        let mut a = engine();
        let mut b = engine();
        a.spread_fresh_addresses(1);
        b.spread_fresh_addresses(2);
        let first = |e: &mut LeaseEngine| offered(&e.handle(&discover(1), t0()));
        let (ia, ib) = (first(&mut a), first(&mut b));
        assert_ne!(ia, ib, "two servers' first fresh addresses");
        // Every pool address is still handed out once before any repeats.
        let size = a.subnet(0).pool_size();
        let mut seen = std::collections::HashSet::new();
        seen.insert(ia);
        for n in 2..=size {
            let ip = offered(&a.handle(&discover(n as u8), t0()));
            assert!(seen.insert(ip), "{ip} twice");
        }
        assert_eq!(seen.len() as u64, size);
    }

    #[test]
    fn a_binding_learnt_from_another_server_is_offered_again() {
        let mut e = engine();
        let mine = offered(&e.handle(&discover(1), t0()));
        // Another server bound client 1 to another address meanwhile.
        let theirs = if mine == Ipv4Addr::new(10, 77, 0, 103) {
            Ipv4Addr::new(10, 77, 0, 102)
        } else {
            Ipv4Addr::new(10, 77, 0, 103)
        };
        e.load(vec![bound_an_hour(theirs, mac(1))]);
        assert_eq!(offered(&e.handle(&discover(1), t0())), theirs);
        // And an address another server's client holds is not offered.
        e.load(vec![Lease {
            ip: mine,
            mac: Some(mac(9)),
            client_id: None,
            hostname: None,
            state: LeaseState::Offered,
            expires_at: t0() + Duration::seconds(60),
            subnet: "local".into(),
            updated_at: t0(),
        }]);
        assert_ne!(offered(&e.handle(&discover(2), t0())), mine);
    }

    #[test]
    fn another_servers_offer_does_not_replace_this_servers_offer() {
        let mut e = engine();
        let here = offered(&e.handle(&discover(1), t0()));
        let there = if here.octets()[3] == 103 {
            [10, 77, 0, 102]
        } else {
            [10, 77, 0, 103]
        };
        e.learn(
            Lease {
                ip: Ipv4Addr::from(there),
                mac: Some(mac(1)),
                client_id: None,
                hostname: None,
                state: LeaseState::Offered,
                expires_at: t0() + Duration::seconds(60),
                subnet: "local".into(),
                updated_at: t0(),
            },
            t0(),
        );
        // The client takes this server's offer: it gets it.
        let ack = e.handle(&select(1, here.octets(), SERVER), t0());
        assert_eq!(acked(&ack).ip, here);
    }

    #[test]
    fn another_servers_late_offer_does_not_move_a_bound_client() {
        let mut e = engine();
        let lease = |ip: [u8; 4], state: LeaseState, secs: i64| Lease {
            ip: Ipv4Addr::from(ip),
            mac: Some(mac(1)),
            client_id: None,
            hostname: None,
            state,
            expires_at: t0() + Duration::seconds(secs),
            subnet: "local".into(),
            updated_at: t0(),
        };
        // Client 1 took this server's offer and is bound here...
        let here = offered(&e.handle(&discover(1), t0()));
        let ack = e.handle(&select(1, here.octets(), SERVER), t0());
        assert_eq!(acked(&ack).ip, here);
        // ...when the other server's offer to it (made at the same time)
        // arrives: the client stays where it is bound.
        let there = if here.octets()[3] == 103 {
            [10, 77, 0, 102]
        } else {
            [10, 77, 0, 103]
        };
        e.learn(lease(there, LeaseState::Offered, 60), t0());
        assert_eq!(offered(&e.handle(&discover(1), t0())), here);
        // A later binding elsewhere moves it.
        let mut bound = lease(there, LeaseState::Bound, 3600);
        bound.updated_at = t0() + Duration::seconds(1);
        e.learn(bound, t0() + Duration::seconds(1));
        assert_eq!(
            offered(&e.handle(&discover(1), t0() + Duration::seconds(1))),
            Ipv4Addr::from(there)
        );
    }

    #[test]
    fn loaded_leases_are_honoured() {
        let now = t0();
        let mut e = engine();
        let ip = offered(&e.handle(&discover(1), now));
        let bound = acked(&e.handle(&select(1, ip.octets(), SERVER), now)).clone();
        let outside = Lease {
            ip: Ipv4Addr::new(192, 168, 9, 9),
            ..bound.clone()
        };
        // A restarted server knows client 1 and does not give its address away.
        let mut e2 = engine();
        assert_eq!(e2.load(vec![bound.clone(), outside]), 1);
        assert_ne!(offered(&e2.handle(&discover(2), now)), ip);
        assert_eq!(offered(&e2.handle(&discover(1), now)), ip);
        let renew = req(R {
            kind: Some(MessageType::Request),
            mac: 1,
            ciaddr: Some(ip.octets()),
            ..R::default()
        });
        acked(&e2.handle(&renew, now));
    }

    /// UEFI's PXE client (no option 61), then iPXE (01:MAC) on the same NIC: one
    /// client, one address. A client id naming another MAC, or of another type,
    /// is still a client of its own.
    #[test]
    fn client_id_of_its_own_mac_is_the_mac() {
        let now = t0();
        let mut e = engine();
        let with_id = |id: Vec<u8>| {
            req(R {
                kind: Some(MessageType::Discover),
                mac: 1,
                client_id: Some(id),
                ..R::default()
            })
        };
        let firmware = offered(&e.handle(&discover(1), now));
        let bound = acked(&e.handle(&select(1, firmware.octets(), SERVER), now)).clone();
        assert_eq!(bound.client_id, None);
        let own_mac = [&[1u8][..], &mac(1).octets()].concat();
        assert_eq!(offered(&e.handle(&with_id(own_mac.clone()), now)), firmware);
        let other_mac = [&[1u8][..], &mac(9).octets()].concat();
        assert_ne!(offered(&e.handle(&with_id(other_mac), now)), firmware);
        let duid = vec![255, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4];
        assert_ne!(offered(&e.handle(&with_id(duid), now)), firmware);

        // A lease stored under 01:MAC (before this rule) is the MAC's after a restart.
        let stored = Lease {
            client_id: Some(encode_hex(&own_mac)),
            ..bound
        };
        let mut e2 = engine();
        assert_eq!(e2.load(vec![stored]), 0);
        assert_eq!(offered(&e2.handle(&discover(1), now)), firmware);
    }
}
