//! The DHCPv6 lease engine: pools, reservations by DUID or MAC, and what the
//! server answers to each client message (RFC 8415 18.3). State is in memory; the
//! clock is passed in; every decision is a value the socket loop acts on (leases
//! to make durable, then the reply). No I/O here.

use std::net::Ipv6Addr;

use chrono::{DateTime, Duration, Utc};
use foldhash::HashMap;
use rackboot_core::{LeaseState, MacAddr};
use rackboot_store::Lease6;
use rackboot_wire::dhcp6::{IaAddr, IaNa, MessageType, Request, Status};

use crate::config::{Reservation6, Subnet6};

/// Timing knobs.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub offer_hold_secs: u32,
    pub decline_hold_secs: u32,
}

/// What to answer: leases to write first, then a reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Advertise or Reply.
    pub kind: MessageType,
    /// The subnet the client is on, when known (options come from it).
    pub subnet: Option<usize>,
    /// IAs of the reply, each with a status when it has no usable address.
    pub ias: Vec<(IaNa, Option<(Status, &'static str)>)>,
    /// A status for the whole message.
    pub status: Option<(Status, &'static str)>,
    /// Reply to a Rapid Commit Solicit (the reply carries the option).
    pub rapid_commit: bool,
    /// Written to the store before the reply leaves (group commit).
    pub persist: Vec<Lease6>,
    /// From the client's reservation.
    pub hostname: Option<String>,
}

/// Why a valid message gets no answer; the metric label.
pub type Ignore = &'static str;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Answer(Answer),
    Ignore(Ignore),
}

#[derive(Debug, Clone)]
struct Entry {
    lease: Lease6,
    subnet: usize,
}

/// Who is asking: the DUID (hex, the lease key with the IAID) and the MAC when known.
#[derive(Debug, Clone)]
pub struct Client {
    pub duid: String,
    pub mac: Option<MacAddr>,
}

pub struct Engine {
    subnets: Vec<Subnet6>,
    timings: Timings,
    server_duid: Vec<u8>,
    rapid_commit: bool,
    /// The subnet of the interface (for messages not relayed).
    local: Option<usize>,
    leases: HashMap<Ipv6Addr, Entry>,
    /// Each (subnet, DUID, IAID)'s current address.
    clients: HashMap<(usize, String, u32), Ipv6Addr>,
    by_duid: HashMap<String, (usize, usize)>,
    by_mac: HashMap<MacAddr, (usize, usize)>,
    reserved: HashMap<Ipv6Addr, (usize, usize)>,
    /// Per subnet: index of the next never-used pool address to try.
    fresh_cursor: Vec<u128>,
}

/// Lowercase hex of a DUID (how leases store it).
pub fn duid_hex(duid: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(duid.len() * 2);
    for b in duid {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

impl Engine {
    pub fn new(
        subnets: Vec<Subnet6>,
        timings: Timings,
        server_duid: Vec<u8>,
        rapid_commit: bool,
        server_addrs: &[Ipv6Addr],
    ) -> Engine {
        let mut by_duid = HashMap::default();
        let mut by_mac = HashMap::default();
        let mut reserved = HashMap::default();
        for (i, s) in subnets.iter().enumerate() {
            for (j, r) in s.reservations.iter().enumerate() {
                if let Some(d) = &r.duid {
                    by_duid.insert(d.clone(), (i, j));
                }
                if let Some(m) = r.mac {
                    by_mac.insert(m, (i, j));
                }
                reserved.insert(r.ip, (i, j));
            }
        }
        let local = subnets
            .iter()
            .position(|s| server_addrs.iter().any(|a| s.contains(*a)));
        Engine {
            fresh_cursor: vec![0; subnets.len()],
            subnets,
            timings,
            server_duid,
            rapid_commit,
            local,
            leases: HashMap::default(),
            clients: HashMap::default(),
            by_duid,
            by_mac,
            reserved,
        }
    }

    pub fn subnet(&self, i: usize) -> &Subnet6 {
        &self.subnets[i]
    }

    pub fn server_duid(&self) -> &[u8] {
        &self.server_duid
    }

    pub fn lease(&self, ip: Ipv6Addr) -> Option<&Lease6> {
        self.leases.get(&ip).map(|e| &e.lease)
    }

    /// Loads stored leases; those outside every subnet are skipped and counted.
    pub fn load(&mut self, leases: Vec<Lease6>) -> usize {
        let mut skipped = 0;
        for lease in leases {
            let Some(subnet) = self.subnets.iter().position(|s| s.contains(lease.ip)) else {
                skipped += 1;
                continue;
            };
            if lease.state != LeaseState::Declined {
                self.clients
                    .insert((subnet, lease.duid.clone(), lease.iaid), lease.ip);
            }
            self.leases.insert(lease.ip, Entry { lease, subnet });
        }
        skipped
    }

    /// The relay's link address picks the subnet; an unrelayed message is on
    /// the interface's own subnet.
    pub fn select_subnet(&self, req: &Request) -> Option<usize> {
        match req.first_relay() {
            Some(hop) => self.subnets.iter().position(|s| s.contains(hop.link_addr)),
            None => self.local,
        }
    }

    /// The interface's own subnet.
    pub fn select_subnet_local(&self) -> Option<usize> {
        self.local
    }

    fn reservation(&self, subnet: usize, client: &Client) -> Option<&Reservation6> {
        let hit = self
            .by_duid
            .get(&client.duid)
            .or_else(|| client.mac.and_then(|m| self.by_mac.get(&m)))?;
        (hit.0 == subnet).then(|| &self.subnets[hit.0].reservations[hit.1])
    }

    /// True when `ip` may be given to `client` now.
    fn available_for(&self, ip: Ipv6Addr, client: &Client, now: DateTime<Utc>) -> bool {
        if let Some(&(s, r)) = self.reserved.get(&ip) {
            let res = &self.subnets[s].reservations[r];
            let mine = res.duid.as_deref() == Some(client.duid.as_str())
                || (res.duid.is_none() && res.mac.is_some() && res.mac == client.mac);
            if !mine {
                return false;
            }
        }
        match self.leases.get(&ip) {
            None => true,
            Some(e) => match e.lease.state {
                LeaseState::Declined => e.lease.expires_at <= now,
                _ if e.lease.duid == client.duid => true,
                LeaseState::Released | LeaseState::Expired => true,
                LeaseState::Bound | LeaseState::Offered => e.lease.expires_at <= now,
            },
        }
    }

    /// The address for one IA: reservation, the IA's current address, the
    /// client's hint, else a fresh one.
    fn choose(
        &mut self,
        subnet: usize,
        client: &Client,
        ia: &IaNa,
        first_ia: bool,
        now: DateTime<Utc>,
    ) -> Option<Ipv6Addr> {
        if first_ia && let Some(r) = self.reservation(subnet, client) {
            return Some(r.ip);
        }
        let key = (subnet, client.duid.clone(), ia.iaid);
        if let Some(ip) = self.clients.get(&key).copied()
            && self.subnets[subnet].in_pool(ip)
            && self.available_for(ip, client, now)
        {
            return Some(ip);
        }
        for hint in &ia.addrs {
            if self.subnets[subnet].in_pool(hint.addr) && self.available_for(hint.addr, client, now)
            {
                return Some(hint.addr);
            }
        }
        self.allocate(subnet, client, now)
    }

    /// A never-used pool address first; once none is left, the free one unused longest.
    fn allocate(&mut self, subnet: usize, client: &Client, now: DateTime<Utc>) -> Option<Ipv6Addr> {
        let s = &self.subnets[subnet];
        let size = s.pool_size();
        while self.fresh_cursor[subnet] < size {
            let ip = s.nth(self.fresh_cursor[subnet])?;
            self.fresh_cursor[subnet] += 1;
            if !self.leases.contains_key(&ip) && !self.reserved.contains_key(&ip) {
                return Some(ip);
            }
        }
        // Every pool address has a lease entry: reuse the one expired longest.
        self.leases
            .iter()
            .filter(|(ip, e)| e.subnet == subnet && s.in_pool(**ip))
            .filter(|(ip, _)| self.available_for(**ip, client, now))
            .min_by_key(|(_, e)| e.lease.expires_at)
            .map(|(ip, _)| *ip)
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        ip: Ipv6Addr,
        subnet: usize,
        client: &Client,
        iaid: u32,
        state: LeaseState,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Lease6 {
        let hostname = self
            .reservation(subnet, client)
            .and_then(|r| r.hostname.clone());
        // The address's previous holder no longer has it.
        if let Some(old) = self.leases.get(&ip)
            && (old.lease.duid != client.duid || old.lease.iaid != iaid)
        {
            let old_key = (old.subnet, old.lease.duid.clone(), old.lease.iaid);
            if self.clients.get(&old_key) == Some(&ip) {
                self.clients.remove(&old_key);
            }
        }
        let lease = Lease6 {
            ip,
            duid: client.duid.clone(),
            iaid,
            mac: client.mac,
            hostname,
            state,
            expires_at,
            subnet: self.subnets[subnet].name.clone(),
            updated_at: now,
        };
        self.clients.insert((subnet, client.duid.clone(), iaid), ip);
        self.leases.insert(
            ip,
            Entry {
                lease: lease.clone(),
                subnet,
            },
        );
        lease
    }

    fn ia_with(&self, subnet: usize, iaid: u32, ip: Ipv6Addr) -> IaNa {
        let s = &self.subnets[subnet];
        let (t1, t2) = s.t1_t2();
        IaNa {
            iaid,
            t1,
            t2,
            addrs: vec![IaAddr {
                addr: ip,
                preferred: s.preferred_secs,
                valid: s.valid_secs,
            }],
            status: None,
        }
    }

    fn answer(&self, kind: MessageType, subnet: Option<usize>) -> Answer {
        Answer {
            kind,
            subnet,
            ias: Vec::new(),
            status: None,
            rapid_commit: false,
            persist: Vec::new(),
            hostname: None,
        }
    }

    /// Decides what to answer to `req` from `client`.
    pub fn handle(&mut self, req: &Request, client: &Client, now: DateTime<Utc>) -> Outcome {
        use MessageType as T;
        let subnet = self.select_subnet(req);
        // Messages for a chosen server: ignore those for another (RFC 8415 16).
        if let Some(id) = &req.server_id
            && *id != self.server_duid
        {
            return Outcome::Ignore("other_server");
        }
        if req.kind == T::InformationRequest {
            return Outcome::Answer(self.answer(T::Reply, subnet));
        }
        let Some(subnet) = subnet else {
            return Outcome::Ignore("no_subnet");
        };
        let mut answer = match req.kind {
            T::Solicit => self.solicit(req, client, subnet, now),
            T::Request => self.request(req, client, subnet, now),
            T::Renew | T::Rebind => self.renew(req, client, subnet, now),
            T::Release => self.release(req, client, subnet, now),
            T::Decline => self.decline(req, client, subnet, now),
            T::Confirm => {
                let addrs: Vec<Ipv6Addr> = req
                    .ia_na
                    .iter()
                    .flat_map(|ia| ia.addrs.iter().map(|a| a.addr))
                    .collect();
                if addrs.is_empty() {
                    return Outcome::Ignore("confirm_without_addresses");
                }
                let mut a = self.answer(T::Reply, Some(subnet));
                a.status = Some(
                    if addrs.iter().all(|ip| self.subnets[subnet].contains(*ip)) {
                        (Status::Success, "all addresses on link")
                    } else {
                        (Status::NotOnLink, "not on this link")
                    },
                );
                a
            }
            // parse_request lets only client messages through.
            _ => return Outcome::Ignore("unexpected_type"),
        };
        answer.hostname = self
            .reservation(subnet, client)
            .and_then(|r| r.hostname.clone());
        Outcome::Answer(answer)
    }

    fn solicit(
        &mut self,
        req: &Request,
        client: &Client,
        subnet: usize,
        now: DateTime<Utc>,
    ) -> Answer {
        let commit = req.rapid_commit && self.rapid_commit;
        let mut a = self.answer(
            if commit {
                MessageType::Reply
            } else {
                MessageType::Advertise
            },
            Some(subnet),
        );
        a.rapid_commit = commit;
        let valid = Duration::seconds(i64::from(self.subnets[subnet].valid_secs));
        let hold = Duration::seconds(i64::from(self.timings.offer_hold_secs));
        for (i, ia) in req.ia_na.iter().enumerate() {
            let Some(ip) = self.choose(subnet, client, ia, i == 0, now) else {
                continue;
            };
            if commit {
                let lease = self.put(
                    ip,
                    subnet,
                    client,
                    ia.iaid,
                    LeaseState::Bound,
                    now + valid,
                    now,
                );
                a.persist.push(lease);
            } else {
                // A bound lease stays bound while advertised again (client restarted).
                let keep_bound = self.leases.get(&ip).is_some_and(|e| {
                    e.lease.duid == client.duid
                        && e.lease.state == LeaseState::Bound
                        && e.lease.expires_at > now
                });
                if !keep_bound {
                    self.put(
                        ip,
                        subnet,
                        client,
                        ia.iaid,
                        LeaseState::Offered,
                        now + hold,
                        now,
                    );
                }
            }
            a.ias.push((self.ia_with(subnet, ia.iaid, ip), None));
        }
        if a.ias.is_empty() {
            // RFC 8415 18.3.9: nothing to offer: only a status.
            a.status = Some((Status::NoAddrsAvail, "no addresses available"));
            a.rapid_commit = false;
            a.kind = MessageType::Advertise;
        }
        a
    }

    fn request(
        &mut self,
        req: &Request,
        client: &Client,
        subnet: usize,
        now: DateTime<Utc>,
    ) -> Answer {
        let mut a = self.answer(MessageType::Reply, Some(subnet));
        let valid = Duration::seconds(i64::from(self.subnets[subnet].valid_secs));
        for (i, ia) in req.ia_na.iter().enumerate() {
            match self.choose(subnet, client, ia, i == 0, now) {
                Some(ip) => {
                    let lease = self.put(
                        ip,
                        subnet,
                        client,
                        ia.iaid,
                        LeaseState::Bound,
                        now + valid,
                        now,
                    );
                    a.persist.push(lease);
                    a.ias.push((self.ia_with(subnet, ia.iaid, ip), None));
                }
                None => a.ias.push((
                    empty_ia(ia.iaid),
                    Some((Status::NoAddrsAvail, "no addresses available")),
                )),
            }
        }
        a
    }

    /// Renew and Rebind: extend the IA's binding; addresses that are not (or no
    /// longer) the client's go back with lifetimes 0 (RFC 8415 18.3.4-5).
    fn renew(
        &mut self,
        req: &Request,
        client: &Client,
        subnet: usize,
        now: DateTime<Utc>,
    ) -> Answer {
        let mut a = self.answer(MessageType::Reply, Some(subnet));
        let valid = Duration::seconds(i64::from(self.subnets[subnet].valid_secs));
        for ia in &req.ia_na {
            let key = (subnet, client.duid.clone(), ia.iaid);
            let bound = self.clients.get(&key).copied().filter(|ip| {
                self.leases.get(ip).is_some_and(|e| {
                    e.lease.duid == client.duid && e.lease.state != LeaseState::Declined
                }) && self.available_for(*ip, client, now)
            });
            // The binding, else an address the client holds that is still free for it.
            let keep = bound.or_else(|| {
                ia.addrs.iter().map(|x| x.addr).find(|ip| {
                    self.subnets[subnet].in_pool(*ip) && self.available_for(*ip, client, now)
                })
            });
            let mut reply_ia = empty_ia(ia.iaid);
            let mut status = None;
            match keep {
                Some(ip) => {
                    let lease = self.put(
                        ip,
                        subnet,
                        client,
                        ia.iaid,
                        LeaseState::Bound,
                        now + valid,
                        now,
                    );
                    a.persist.push(lease);
                    reply_ia = self.ia_with(subnet, ia.iaid, ip);
                }
                None => status = Some((Status::NoBinding, "no binding for this IA")),
            }
            for x in &ia.addrs {
                if Some(x.addr) != keep {
                    reply_ia.addrs.push(IaAddr {
                        addr: x.addr,
                        preferred: 0,
                        valid: 0,
                    });
                }
            }
            a.ias.push((reply_ia, status));
        }
        a
    }

    fn release(
        &mut self,
        req: &Request,
        client: &Client,
        subnet: usize,
        now: DateTime<Utc>,
    ) -> Answer {
        let mut a = self.answer(MessageType::Reply, Some(subnet));
        for ia in &req.ia_na {
            let mut released = false;
            for x in &ia.addrs {
                if let Some(e) = self.leases.get_mut(&x.addr)
                    && e.lease.duid == client.duid
                    && e.lease.iaid == ia.iaid
                    && e.lease.state != LeaseState::Declined
                {
                    // Remembered, so the client gets the same address next time.
                    e.lease.state = LeaseState::Released;
                    e.lease.expires_at = now;
                    e.lease.updated_at = now;
                    a.persist.push(e.lease.clone());
                    released = true;
                }
            }
            if !released {
                a.ias.push((
                    empty_ia(ia.iaid),
                    Some((Status::NoBinding, "no binding for this IA")),
                ));
            }
        }
        a.status = Some((Status::Success, "released"));
        a
    }

    fn decline(
        &mut self,
        req: &Request,
        client: &Client,
        subnet: usize,
        now: DateTime<Utc>,
    ) -> Answer {
        let mut a = self.answer(MessageType::Reply, Some(subnet));
        let hold = Duration::seconds(i64::from(self.timings.decline_hold_secs));
        for ia in &req.ia_na {
            let mut declined = false;
            for x in &ia.addrs {
                if let Some(e) = self.leases.get_mut(&x.addr)
                    && e.lease.duid == client.duid
                    && e.lease.iaid == ia.iaid
                {
                    // In use by someone else: out of the pool for a while, and
                    // this IA gets another address on its next Solicit.
                    e.lease.state = LeaseState::Declined;
                    e.lease.expires_at = now + hold;
                    e.lease.updated_at = now;
                    a.persist.push(e.lease.clone());
                    self.clients.remove(&(subnet, client.duid.clone(), ia.iaid));
                    declined = true;
                }
            }
            if !declined {
                a.ias.push((
                    empty_ia(ia.iaid),
                    Some((Status::NoBinding, "no binding for this IA")),
                ));
            }
        }
        a.status = Some((Status::Success, "declined"));
        a
    }
}

fn empty_ia(iaid: u32) -> IaNa {
    IaNa {
        iaid,
        t1: 0,
        t2: 0,
        addrs: Vec::new(),
        status: None,
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
