//! DHCPv6 (RFC 8415) messages as a server reads and writes them: client messages
//! (relayed or not) in, replies (wrapped back in Relay-Reply) out. Also the boot
//! options of RFC 5970 (boot file URL and parameters, client architecture, network
//! interface identifier) and the relay's client link-layer address (RFC 6939).
//!
//! Our own codec, not dhcproto's v6 module: that one panics on a short
//! Authentication option (`len - 11` underflows), drops an odd byte of an ORO
//! silently and types neither options 59/60/62 nor 79. Here every length is
//! checked and a malformed message is an error naming what is wrong, so the server
//! can drop and count it.

use std::net::Ipv6Addr;

use rackboot_core::{Arch, MacAddr, PxeClient};

pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 7.1): where clients send.
pub const ALL_DHCP_RELAY_AGENTS_AND_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// RFC 8415 7.6: relays nest at most this deep.
pub const HOP_COUNT_LIMIT: u8 = 8;

/// Option codes rackboot reads or writes.
pub mod code {
    pub const CLIENTID: u16 = 1;
    pub const SERVERID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IA_TA: u16 = 4;
    pub const IAADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const RELAY_MSG: u16 = 9;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const USER_CLASS: u16 = 15;
    pub const VENDOR_CLASS: u16 = 16;
    pub const INTERFACE_ID: u16 = 18;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
    pub const IA_PD: u16 = 25;
    pub const BOOTFILE_URL: u16 = 59;
    pub const BOOTFILE_PARAM: u16 = 60;
    pub const CLIENT_ARCH_TYPE: u16 = 61;
    pub const NII: u16 = 62;
    pub const CLIENT_LINKLAYER_ADDR: u16 = 79;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Solicit,
    Advertise,
    Request,
    Confirm,
    Renew,
    Rebind,
    Reply,
    Release,
    Decline,
    Reconfigure,
    InformationRequest,
    RelayForw,
    RelayRepl,
}

impl MessageType {
    pub fn from_code(code: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match code {
            1 => Solicit,
            2 => Advertise,
            3 => Request,
            4 => Confirm,
            5 => Renew,
            6 => Rebind,
            7 => Reply,
            8 => Release,
            9 => Decline,
            10 => Reconfigure,
            11 => InformationRequest,
            12 => RelayForw,
            13 => RelayRepl,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        use MessageType::*;
        match self {
            Solicit => 1,
            Advertise => 2,
            Request => 3,
            Confirm => 4,
            Renew => 5,
            Rebind => 6,
            Reply => 7,
            Release => 8,
            Decline => 9,
            Reconfigure => 10,
            InformationRequest => 11,
            RelayForw => 12,
            RelayRepl => 13,
        }
    }

    /// Metric and event label.
    pub fn as_str(self) -> &'static str {
        use MessageType::*;
        match self {
            Solicit => "solicit",
            Advertise => "advertise",
            Request => "request",
            Confirm => "confirm",
            Renew => "renew",
            Rebind => "rebind",
            Reply => "reply",
            Release => "release",
            Decline => "decline",
            Reconfigure => "reconfigure",
            InformationRequest => "information_request",
            RelayForw => "relay_forw",
            RelayRepl => "relay_repl",
        }
    }
}

/// Status codes (RFC 8415 21.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success = 0,
    UnspecFail = 1,
    NoAddrsAvail = 2,
    NoBinding = 3,
    NotOnLink = 4,
    UseMulticast = 5,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dhcp6Error {
    #[error("{0} bytes is shorter than a DHCPv6 message header")]
    Truncated(usize),
    #[error("unknown DHCPv6 message type {0}")]
    UnknownType(u8),
    #[error("{0} is not sent by clients")]
    NotClientMessage(&'static str),
    #[error("option at byte {0} runs past the end")]
    OptionOverrun(usize),
    #[error("option {code} has a bad length {len}")]
    BadOptionLength { code: u16, len: usize },
    #[error("option {0} appears twice")]
    DuplicateOption(u16),
    #[error("{0} without a client identifier")]
    MissingClientId(&'static str),
    #[error("{0} without a server identifier")]
    MissingServerId(&'static str),
    #[error("{0} must not carry a server identifier")]
    UnexpectedServerId(&'static str),
    #[error("relay chain deeper than {HOP_COUNT_LIMIT}")]
    RelayTooDeep,
    #[error("Relay-Forward without a relayed message")]
    RelayWithoutMessage,
}

impl Dhcp6Error {
    /// Label for the dropped-packet metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Dhcp6Error::Truncated(_) => "truncated",
            Dhcp6Error::UnknownType(_) => "unknown_type",
            Dhcp6Error::NotClientMessage(_) => "not_client_message",
            Dhcp6Error::OptionOverrun(_) | Dhcp6Error::BadOptionLength { .. } => "bad_option",
            Dhcp6Error::DuplicateOption(_) => "duplicate_option",
            Dhcp6Error::MissingClientId(_) => "missing_client_id",
            Dhcp6Error::MissingServerId(_) => "missing_server_id",
            Dhcp6Error::UnexpectedServerId(_) => "unexpected_server_id",
            Dhcp6Error::RelayTooDeep | Dhcp6Error::RelayWithoutMessage => "bad_relay",
        }
    }
}

/// One option, its data borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOption<'a> {
    pub code: u16,
    pub data: &'a [u8],
}

/// Splits an option area into options (RFC 8415 21.1: code, length, data).
pub fn parse_options(bytes: &[u8]) -> Result<Vec<RawOption<'_>>, Dhcp6Error> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes.get(at..at + 4).ok_or(Dhcp6Error::OptionOverrun(at))?;
        let code = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let data = bytes
            .get(at + 4..at + 4 + len)
            .ok_or(Dhcp6Error::OptionOverrun(at))?;
        out.push(RawOption { code, data });
        at += 4 + len;
    }
    Ok(out)
}

/// An address inside an IA (IAADDR, RFC 8415 21.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaAddr {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
}

/// An Identity Association for Non-temporary Addresses (RFC 8415 21.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub addrs: Vec<IaAddr>,
    /// Status code inside the IA (replies only).
    pub status: Option<u16>,
}

/// Parses an IA_NA option's data.
pub fn parse_ia_na(data: &[u8]) -> Result<IaNa, Dhcp6Error> {
    let bad = || Dhcp6Error::BadOptionLength {
        code: code::IA_NA,
        len: data.len(),
    };
    if data.len() < 12 {
        return Err(bad());
    }
    let u32_at = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let mut ia = IaNa {
        iaid: u32_at(0),
        t1: u32_at(4),
        t2: u32_at(8),
        addrs: Vec::new(),
        status: None,
    };
    for o in parse_options(&data[12..])? {
        match o.code {
            code::IAADDR => ia.addrs.push(parse_ia_addr(o.data)?),
            code::STATUS_CODE => ia.status = Some(parse_status(o.data)?.0),
            _ => {}
        }
    }
    Ok(ia)
}

fn parse_ia_addr(data: &[u8]) -> Result<IaAddr, Dhcp6Error> {
    if data.len() < 24 {
        return Err(Dhcp6Error::BadOptionLength {
            code: code::IAADDR,
            len: data.len(),
        });
    }
    let octets: [u8; 16] = data[..16].try_into().expect("16 bytes");
    let u32_at = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    Ok(IaAddr {
        addr: Ipv6Addr::from(octets),
        preferred: u32_at(16),
        valid: u32_at(20),
    })
}

/// Status code and message of a STATUS_CODE option.
pub fn parse_status(data: &[u8]) -> Result<(u16, String), Dhcp6Error> {
    if data.len() < 2 {
        return Err(Dhcp6Error::BadOptionLength {
            code: code::STATUS_CODE,
            len: data.len(),
        });
    }
    Ok((
        u16::from_be_bytes([data[0], data[1]]),
        String::from_utf8_lossy(&data[2..]).into_owned(),
    ))
}

/// A relay agent the message passed through (RFC 8415 9), outermost first in
/// [`Request::relays`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHop {
    pub hop_count: u8,
    /// An address on the client's link (selects the subnet), or unspecified.
    pub link_addr: Ipv6Addr,
    /// The address of the client (or inner relay) the message came from.
    pub peer_addr: Ipv6Addr,
    /// Interface-Id, echoed in the Relay-Reply.
    pub interface_id: Option<Vec<u8>>,
    /// RFC 6939 client link-layer address: (hardware type, address).
    pub client_link_addr: Option<(u16, Vec<u8>)>,
}

/// The Vendor Class option (RFC 8415 21.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorClass {
    pub enterprise: u32,
    pub data: Vec<Vec<u8>>,
}

/// A client message, relay encapsulation removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: MessageType,
    pub xid: [u8; 3],
    /// The client's DUID.
    pub client_id: Option<Vec<u8>>,
    pub server_id: Option<Vec<u8>>,
    pub ia_na: Vec<IaNa>,
    /// IAIDs of IA_TA and IA_PD options, which rackboot does not serve.
    pub ia_ta: Vec<u32>,
    pub ia_pd: Vec<u32>,
    pub oro: Vec<u16>,
    pub rapid_commit: bool,
    pub client_arch: Vec<u16>,
    /// Network interface identifier (type, major, minor), RFC 5970 3.4.
    pub nii: Option<[u8; 3]>,
    pub user_class: Vec<Vec<u8>>,
    pub vendor_class: Option<VendorClass>,
    /// Outermost relay first; empty when the client sent it straight to us.
    pub relays: Vec<RelayHop>,
}

impl Request {
    pub fn is_relayed(&self) -> bool {
        !self.relays.is_empty()
    }

    /// The relay nearest the client (its link address picks the subnet).
    pub fn first_relay(&self) -> Option<&RelayHop> {
        self.relays.last()
    }

    /// True when the client listed `option` in its Option Request.
    pub fn wants(&self, option: u16) -> bool {
        self.oro.contains(&option)
    }

    /// The client's Ethernet address, from (in this order) the first relay's
    /// client link-layer option (RFC 6939), a DUID-LL or DUID-LLT, or an EUI-64
    /// link-local source address (`source` for an unrelayed message, the first
    /// relay's peer address otherwise). `None` for a DUID-UUID or DUID-EN client
    /// with a privacy (non-EUI-64) link-local address.
    pub fn mac(&self, source: Ipv6Addr) -> Option<MacAddr> {
        if let Some(relay) = self.first_relay()
            && let Some((1, addr)) = &relay.client_link_addr
            && let Some(mac) = MacAddr::from_slice(addr)
        {
            return Some(mac);
        }
        if let Some(mac) = self.client_id.as_deref().and_then(duid_mac) {
            return Some(mac);
        }
        let peer = self.first_relay().map_or(source, |r| r.peer_addr);
        mac_from_link_local(peer)
    }
}

/// The Ethernet address in a DUID-LLT (type 1) or DUID-LL (type 3) with
/// hardware type 1.
pub fn duid_mac(duid: &[u8]) -> Option<MacAddr> {
    match duid {
        [0, 1, 0, 1, _, _, _, _, addr @ ..] | [0, 3, 0, 1, addr @ ..] if addr.len() == 6 => {
            MacAddr::from_slice(addr)
        }
        _ => None,
    }
}

/// The UUID of a DUID-UUID (type 4, RFC 6355). UEFI firmware puts the SMBIOS
/// UUID there in SMBIOS byte order (first three fields little-endian), as it does
/// in DHCPv4 option 97 (seen in the OVMF capture), so it is read the same way as
/// [`crate::pxe::uuid_from_option97`] reads that option.
pub fn duid_uuid(duid: &[u8]) -> Option<uuid::Uuid> {
    match duid {
        [0, 4, rest @ ..] if rest.len() == 16 => {
            Some(uuid::Uuid::from_bytes_le(rest.try_into().ok()?))
        }
        _ => None,
    }
}

/// DUID-LL (type 3, hardware type 1) of `mac`: what rackboot uses as its server id.
pub fn duid_ll(mac: MacAddr) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(&mac.octets());
    d
}

/// The MAC in a modified EUI-64 link-local address (fe80::/64, ff:fe in the
/// middle, universal/local bit flipped).
pub fn mac_from_link_local(addr: Ipv6Addr) -> Option<MacAddr> {
    let o = addr.octets();
    if o[..8] != [0xfe, 0x80, 0, 0, 0, 0, 0, 0] || o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    MacAddr::from_slice(&[o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]])
}

/// Parses a message a server receives: a client message, or a Relay-Forward
/// around one (nested at most [`HOP_COUNT_LIMIT`] deep). Checks the identifier
/// rules of RFC 8415 16 that do not depend on the server.
pub fn parse_request(bytes: &[u8]) -> Result<Request, Dhcp6Error> {
    let mut relays = Vec::new();
    let mut msg = bytes;
    loop {
        let &first = msg.first().ok_or(Dhcp6Error::Truncated(0))?;
        let kind = MessageType::from_code(first).ok_or(Dhcp6Error::UnknownType(first))?;
        if kind != MessageType::RelayForw {
            let mut req = parse_client_message(kind, msg)?;
            req.relays = relays;
            return Ok(req);
        }
        if relays.len() > usize::from(HOP_COUNT_LIMIT) {
            return Err(Dhcp6Error::RelayTooDeep);
        }
        if msg.len() < 34 {
            return Err(Dhcp6Error::Truncated(msg.len()));
        }
        let addr = |i: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&msg[i..i + 16]).expect("16"));
        let mut hop = RelayHop {
            hop_count: msg[1],
            link_addr: addr(2),
            peer_addr: addr(18),
            interface_id: None,
            client_link_addr: None,
        };
        let mut inner = None;
        for o in parse_options(&msg[34..])? {
            match o.code {
                code::RELAY_MSG => inner = Some(o.data),
                code::INTERFACE_ID => hop.interface_id = Some(o.data.to_vec()),
                code::CLIENT_LINKLAYER_ADDR => {
                    if o.data.len() < 2 {
                        return Err(Dhcp6Error::BadOptionLength {
                            code: o.code,
                            len: o.data.len(),
                        });
                    }
                    let htype = u16::from_be_bytes([o.data[0], o.data[1]]);
                    hop.client_link_addr = Some((htype, o.data[2..].to_vec()));
                }
                _ => {}
            }
        }
        relays.push(hop);
        msg = inner.ok_or(Dhcp6Error::RelayWithoutMessage)?;
    }
}

fn parse_client_message(kind: MessageType, msg: &[u8]) -> Result<Request, Dhcp6Error> {
    use MessageType as T;
    if matches!(
        kind,
        T::Advertise | T::Reply | T::Reconfigure | T::RelayRepl
    ) {
        return Err(Dhcp6Error::NotClientMessage(kind.as_str()));
    }
    if msg.len() < 4 {
        return Err(Dhcp6Error::Truncated(msg.len()));
    }
    let mut req = Request {
        kind,
        xid: [msg[1], msg[2], msg[3]],
        client_id: None,
        server_id: None,
        ia_na: Vec::new(),
        ia_ta: Vec::new(),
        ia_pd: Vec::new(),
        oro: Vec::new(),
        rapid_commit: false,
        client_arch: Vec::new(),
        nii: None,
        user_class: Vec::new(),
        vendor_class: None,
        relays: Vec::new(),
    };
    for o in parse_options(&msg[4..])? {
        let bad = || Dhcp6Error::BadOptionLength {
            code: o.code,
            len: o.data.len(),
        };
        match o.code {
            code::CLIENTID | code::SERVERID => {
                if o.data.len() < 2 || o.data.len() > 130 {
                    return Err(bad());
                }
                let slot = if o.code == code::CLIENTID {
                    &mut req.client_id
                } else {
                    &mut req.server_id
                };
                if slot.replace(o.data.to_vec()).is_some() {
                    return Err(Dhcp6Error::DuplicateOption(o.code));
                }
            }
            code::IA_NA => req.ia_na.push(parse_ia_na(o.data)?),
            code::IA_TA | code::IA_PD => {
                let iaid = o.data.get(..4).ok_or_else(bad)?;
                let iaid = u32::from_be_bytes(iaid.try_into().expect("4 bytes"));
                if o.code == code::IA_TA {
                    req.ia_ta.push(iaid);
                } else {
                    req.ia_pd.push(iaid);
                }
            }
            code::ORO => {
                if !o.data.len().is_multiple_of(2) {
                    return Err(bad());
                }
                req.oro = o
                    .data
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
            }
            code::RAPID_COMMIT => req.rapid_commit = true,
            code::CLIENT_ARCH_TYPE => {
                if o.data.is_empty() || !o.data.len().is_multiple_of(2) {
                    return Err(bad());
                }
                req.client_arch = o
                    .data
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
            }
            code::NII => {
                let nii: [u8; 3] = o.data.try_into().map_err(|_| bad())?;
                req.nii = Some(nii);
            }
            code::USER_CLASS => req.user_class = length_prefixed(o.data).ok_or_else(bad)?,
            code::VENDOR_CLASS => {
                let enterprise = o.data.get(..4).ok_or_else(bad)?;
                req.vendor_class = Some(VendorClass {
                    enterprise: u32::from_be_bytes(enterprise.try_into().expect("4 bytes")),
                    data: length_prefixed(&o.data[4..]).ok_or_else(bad)?,
                });
            }
            _ => {}
        }
    }
    // RFC 8415 16.2-16.12: which identifiers each message must (not) carry.
    let name = kind.as_str();
    match kind {
        T::Solicit | T::Confirm | T::Rebind => {
            if req.client_id.is_none() {
                return Err(Dhcp6Error::MissingClientId(name));
            }
            if req.server_id.is_some() {
                return Err(Dhcp6Error::UnexpectedServerId(name));
            }
        }
        T::Request | T::Renew | T::Release | T::Decline => {
            if req.client_id.is_none() {
                return Err(Dhcp6Error::MissingClientId(name));
            }
            if req.server_id.is_none() {
                return Err(Dhcp6Error::MissingServerId(name));
            }
        }
        _ => {}
    }
    Ok(req)
}

/// Splits data made of (2-byte length, bytes) items: user and vendor classes,
/// boot file parameters.
fn length_prefixed(mut data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = usize::from(u16::from_be_bytes([*data.first()?, *data.get(1)?]));
        out.push(data.get(2..2 + len)?.to_vec());
        data = &data[2 + len..];
    }
    Some(out)
}

/// What a DHCPv6 boot client said about itself, in the terms the DHCPv4 side
/// uses: option 61 for the architecture, vendor class "HTTPClient" for UEFI HTTP
/// boot, user class "iPXE" for iPXE, a DUID-UUID for the machine's UUID, option
/// 62 for the UNDI version. `None` when the message has none of options 61,
/// 15 "iPXE" or a PXEClient/HTTPClient vendor class: not a network-boot client.
pub fn classify(req: &Request) -> Option<PxeClient> {
    let ipxe = req.user_class.iter().any(|c| c.as_slice() == b"iPXE");
    let vendor = req
        .vendor_class
        .as_ref()
        .and_then(|v| v.data.first())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let http_boot = vendor.starts_with(b"HTTPClient");
    let pxe_vendor = vendor.starts_with(b"PXEClient");
    let arch = req.client_arch.first().copied();
    if arch.is_none() && !ipxe && !http_boot && !pxe_vendor {
        return None;
    }
    Some(PxeClient {
        arch: Arch::from_client_arch(arch.unwrap_or(0)),
        http_boot: http_boot || matches!(arch, Some(15 | 16 | 19)),
        ipxe,
        uuid: req.client_id.as_deref().and_then(duid_uuid),
        undi: req.nii.map(|[_, major, minor]| (major, minor)),
    })
}

/// Writes a server message: header, then options in the order they are added.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    pub fn new(kind: MessageType, xid: [u8; 3]) -> MessageBuilder {
        let mut buf = Vec::with_capacity(256);
        buf.push(kind.code());
        buf.extend_from_slice(&xid);
        MessageBuilder { buf }
    }

    /// One option. Data over 65535 bytes cannot be encoded and is cut (no option
    /// rackboot sends comes near).
    pub fn option(&mut self, code: u16, data: &[u8]) -> &mut Self {
        put_option(&mut self.buf, code, data);
        self
    }

    pub fn status(&mut self, status: Status, message: &str) -> &mut Self {
        let data = status_data(status, message);
        self.option(code::STATUS_CODE, &data)
    }

    /// An IA_NA with its addresses and, when given, a status code inside it.
    pub fn ia_na(&mut self, ia: &IaNa, status: Option<(Status, &str)>) -> &mut Self {
        let mut data = Vec::with_capacity(12 + ia.addrs.len() * 28);
        data.extend_from_slice(&ia.iaid.to_be_bytes());
        data.extend_from_slice(&ia.t1.to_be_bytes());
        data.extend_from_slice(&ia.t2.to_be_bytes());
        for a in &ia.addrs {
            let mut addr = Vec::with_capacity(24);
            addr.extend_from_slice(&a.addr.octets());
            addr.extend_from_slice(&a.preferred.to_be_bytes());
            addr.extend_from_slice(&a.valid.to_be_bytes());
            put_option(&mut data, code::IAADDR, &addr);
        }
        if let Some((s, message)) = status {
            put_option(&mut data, code::STATUS_CODE, &status_data(s, message));
        }
        self.option(code::IA_NA, &data)
    }

    /// Option 59: the boot file URL.
    pub fn bootfile_url(&mut self, url: &str) -> &mut Self {
        self.option(code::BOOTFILE_URL, url.as_bytes())
    }

    /// Option 60: boot file parameters, each length-prefixed.
    pub fn bootfile_params(&mut self, params: &[String]) -> &mut Self {
        let mut data = Vec::new();
        for p in params {
            let len = u16::try_from(p.len()).unwrap_or(u16::MAX);
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(&p.as_bytes()[..usize::from(len)]);
        }
        self.option(code::BOOTFILE_PARAM, &data)
    }

    pub fn addresses(&mut self, option: u16, addrs: &[Ipv6Addr]) -> &mut Self {
        let data: Vec<u8> = addrs.iter().flat_map(|a| a.octets()).collect();
        self.option(option, &data)
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

fn put_option(buf: &mut Vec<u8>, code: u16, data: &[u8]) {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&data[..usize::from(len)]);
}

fn status_data(status: Status, message: &str) -> Vec<u8> {
    let mut data = (status as u16).to_be_bytes().to_vec();
    data.extend_from_slice(message.as_bytes());
    data
}

/// Wraps a reply in one Relay-Reply per relay of the request (RFC 8415 19.3),
/// echoing each relay's hop count, addresses and Interface-Id; the result goes to
/// the outermost relay.
pub fn wrap_relay_reply(relays: &[RelayHop], reply: Vec<u8>) -> Vec<u8> {
    let mut msg = reply;
    for hop in relays.iter().rev() {
        let mut outer = Vec::with_capacity(msg.len() + 64);
        outer.push(MessageType::RelayRepl.code());
        outer.push(hop.hop_count);
        outer.extend_from_slice(&hop.link_addr.octets());
        outer.extend_from_slice(&hop.peer_addr.octets());
        if let Some(id) = &hop.interface_id {
            put_option(&mut outer, code::INTERFACE_ID, id);
        }
        put_option(&mut outer, code::RELAY_MSG, &msg);
        msg = outer;
    }
    msg
}

/// Encodes a Relay-Forward around `inner` (what a relay agent sends; for tests and
/// load generators).
pub fn relay_forward(hop: &RelayHop, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![MessageType::RelayForw.code(), hop.hop_count];
    out.extend_from_slice(&hop.link_addr.octets());
    out.extend_from_slice(&hop.peer_addr.octets());
    if let Some(id) = &hop.interface_id {
        put_option(&mut out, code::INTERFACE_ID, id);
    }
    if let Some((htype, addr)) = &hop.client_link_addr {
        let mut data = htype.to_be_bytes().to_vec();
        data.extend_from_slice(addr);
        put_option(&mut out, code::CLIENT_LINKLAYER_ADDR, &data);
    }
    put_option(&mut out, code::RELAY_MSG, inner);
    out
}

#[cfg(test)]
mod tests;
