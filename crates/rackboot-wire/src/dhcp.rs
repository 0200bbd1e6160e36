//! DHCP message helpers over dhcproto: validate a request (malformed packets get a
//! reason, never a panic), build OFFER/ACK/NAK and ProxyDHCP replies, PXE vendor
//! option 43, option 82 echo, and the RFC 2131 4.1 reply destination. Pure: no I/O.

use std::net::Ipv4Addr;

use dhcproto::v4::{
    self, DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use rackboot_core::MacAddr;

/// Server port (requests from clients and relays, replies to relays).
pub const SERVER_PORT: u16 = 67;
/// Client port (replies to clients).
pub const CLIENT_PORT: u16 = 68;
/// PXE boot server port (ProxyDHCP REQUEST/ACK after the port 67 exchange).
pub const PXE_PORT: u16 = 4011;
/// Fixed BOOTP header length before the magic cookie.
const HEADER_LEN: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Replies are padded to the BOOTP minimum; some firmware drops shorter packets.
pub const MIN_REPLY_LEN: usize = 300;
/// Option 43 / 82 / 97 codes that helpers here read or write raw.
pub const OPT_VENDOR: u8 = 43;
pub const OPT_RELAY_AGENT: u8 = 82;
pub const OPT_CLIENT_UUID: u8 = 97;

/// Why a packet was dropped before any server logic saw it. `reason()` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Malformed {
    #[error("packet of {len} bytes is shorter than a DHCP header")]
    TooShort { len: usize },
    #[error("missing DHCP magic cookie (BOOTP-only or garbage)")]
    BadMagic,
    #[error("op is not BOOTREQUEST")]
    NotBootRequest,
    #[error("hardware type {htype} / length {hlen} is not Ethernet")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("option {code} runs past the end of the packet")]
    OptionOverrun { code: u8 },
    #[error("option {code} has an invalid value")]
    BadOptionValue { code: u8 },
    #[error("no message type option (53)")]
    MissingMessageType,
    #[error("message type {0} is not a client request")]
    NotClientMessage(u8),
}

impl Malformed {
    /// Short label for `rackboot_dhcp_dropped_total{reason=...}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Malformed::TooShort { .. } => "too_short",
            Malformed::BadMagic => "bad_magic",
            Malformed::NotBootRequest => "not_bootrequest",
            Malformed::NotEthernet { .. } => "not_ethernet",
            Malformed::OptionOverrun { .. } => "option_overrun",
            Malformed::BadOptionValue { .. } => "bad_option_value",
            Malformed::MissingMessageType => "missing_message_type",
            Malformed::NotClientMessage(_) => "not_client_message",
        }
    }
}

/// A validated client request with the fields server logic needs pulled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The decoded message (for PXE classification and anything else).
    pub msg: Message,
    pub kind: MessageType,
    pub mac: MacAddr,
    /// Option 61, raw.
    pub client_id: Option<Vec<u8>>,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 12, when valid UTF-8.
    pub hostname: Option<String>,
    /// Option 51.
    pub lease_time: Option<u32>,
    /// Option 82 exactly as the relay sent it, to echo back unchanged.
    pub relay_info: Option<Vec<u8>>,
    /// Option 97 raw (PXE replies echo it).
    pub client_uuid: Option<Vec<u8>>,
    /// Option 55.
    pub params: Vec<u8>,
}

impl Request {
    pub fn xid(&self) -> u32 {
        self.msg.xid()
    }
    pub fn ciaddr(&self) -> Ipv4Addr {
        self.msg.ciaddr()
    }
    pub fn giaddr(&self) -> Ipv4Addr {
        self.msg.giaddr()
    }
    pub fn broadcast_flag(&self) -> bool {
        self.msg.flags().broadcast()
    }
    /// True when a relay agent forwarded the request.
    pub fn is_relayed(&self) -> bool {
        !self.giaddr().is_unspecified()
    }
}

/// Walks the options area and checks every length, because dhcproto silently stops
/// at the first option it cannot read. Returns (code, value) pairs in order.
fn scan_options(opts: &[u8]) -> Result<Vec<(u8, &[u8])>, Malformed> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < opts.len() {
        let code = opts[i];
        match code {
            0 => i += 1,
            255 => return Ok(out),
            _ => {
                let len = *opts.get(i + 1).ok_or(Malformed::OptionOverrun { code })? as usize;
                let value = opts
                    .get(i + 2..i + 2 + len)
                    .ok_or(Malformed::OptionOverrun { code })?;
                out.push((code, value));
                i += 2 + len;
            }
        }
    }
    // No end option: tolerated (several old clients omit it) since every length checked out.
    Ok(out)
}

/// Lengths dhcproto asserts on (debug) or underflows on (release) instead of
/// returning an error; checked before handing it the option.
fn length_ok(code: u8, len: usize) -> bool {
    match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        151 => len >= 1,
        152..=155 => len == 4,
        _ => true,
    }
}

/// Decodes the fixed header, then each option on its own: dhcproto reads fixed-size
/// options without checking their length, so an option must decode from exactly its
/// own bytes or the packet is malformed.
fn decode_message(header: &[u8], raw: &[(u8, &[u8])]) -> Result<Message, Malformed> {
    let mut head = header.to_vec();
    head.push(255);
    let mut msg = Message::decode(&mut Decoder::new(&head))
        .map_err(|_| Malformed::TooShort { len: header.len() })?;
    // RFC 3396: a repeated option is one long option; concatenate in order.
    let mut merged: Vec<(u8, Vec<u8>)> = Vec::new();
    for (code, value) in raw {
        match merged.iter_mut().find(|(c, _)| c == code) {
            Some((_, v)) => v.extend_from_slice(value),
            None => merged.push((*code, value.to_vec())),
        }
    }
    let mut opts = v4::DhcpOptions::new();
    for (code, value) in merged {
        let bad = Malformed::BadOptionValue { code };
        if !length_ok(code, value.len()) {
            return Err(bad);
        }
        let opt = if value.len() > 255 {
            // Only a concatenated long option gets here; keep it raw.
            DhcpOption::Unknown(UnknownOption::new(OptionCode::from(code), value))
        } else {
            let mut one = Vec::with_capacity(value.len() + 2);
            one.push(code);
            one.push(value.len() as u8);
            one.extend_from_slice(&value);
            let mut d = Decoder::new(&one);
            let opt = DhcpOption::decode(&mut d).map_err(|_| bad)?;
            if !d.buffer().is_empty() {
                return Err(bad);
            }
            opt
        };
        opts.insert(opt);
    }
    msg.set_opts(opts);
    Ok(msg)
}

/// The `file` header field without its NUL padding.
pub fn file_field(m: &Message) -> Option<String> {
    let f = m.fname()?;
    let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    String::from_utf8(f[..end].to_vec()).ok()
}

/// Validates and decodes a packet received on the server port (or 4011).
pub fn parse_request(bytes: &[u8]) -> Result<Request, Malformed> {
    if bytes.len() < HEADER_LEN + MAGIC.len() {
        return Err(Malformed::TooShort { len: bytes.len() });
    }
    if bytes[HEADER_LEN..HEADER_LEN + 4] != MAGIC {
        return Err(Malformed::BadMagic);
    }
    if bytes[0] != 1 {
        return Err(Malformed::NotBootRequest);
    }
    let (htype, hlen) = (bytes[1], bytes[2]);
    if htype != 1 || hlen != 6 {
        return Err(Malformed::NotEthernet { htype, hlen });
    }
    let raw = scan_options(&bytes[HEADER_LEN + 4..])?;
    let msg = decode_message(&bytes[..HEADER_LEN + 4], &raw)?;
    // An option split over several instances is their concatenation (RFC 3396).
    let get = |code: u8| {
        let mut parts = raw.iter().filter(|(c, _)| *c == code).map(|(_, v)| *v);
        let first = parts.next()?;
        let mut value = first.to_vec();
        for more in parts {
            value.extend_from_slice(more);
        }
        Some(value)
    };
    let kind = match get(53).as_deref() {
        None => return Err(Malformed::MissingMessageType),
        Some([t]) => match MessageType::from(*t) {
            k @ (MessageType::Discover
            | MessageType::Request
            | MessageType::Decline
            | MessageType::Release
            | MessageType::Inform) => k,
            _ => return Err(Malformed::NotClientMessage(*t)),
        },
        Some(_) => return Err(Malformed::BadOptionValue { code: 53 }),
    };
    let ip = |code: u8| -> Result<Option<Ipv4Addr>, Malformed> {
        match get(code) {
            None => Ok(None),
            Some(v) => <[u8; 4]>::try_from(v.as_slice())
                .map(|a| Some(Ipv4Addr::from(a)))
                .map_err(|_| Malformed::BadOptionValue { code }),
        }
    };
    let lease_time = match get(51) {
        None => None,
        Some(v) => Some(u32::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| Malformed::BadOptionValue { code: 51 })?,
        )),
    };
    Ok(Request {
        kind,
        mac: MacAddr::from_slice(msg.chaddr()).ok_or(Malformed::NotEthernet { htype, hlen })?,
        client_id: get(61),
        requested_ip: ip(50)?,
        server_id: ip(54)?,
        hostname: get(12).and_then(|h| String::from_utf8(h).ok()),
        lease_time,
        relay_info: get(OPT_RELAY_AGENT),
        client_uuid: get(OPT_CLIENT_UUID),
        params: get(55).unwrap_or_default(),
        msg,
    })
}

/// A reply skeleton for `req`: op BOOTREPLY, same xid/flags/giaddr/chaddr, message
/// type and server identifier set, option 82 echoed (RFC 3046 2.2).
pub fn reply(req: &Request, kind: MessageType, server_id: Ipv4Addr) -> Message {
    let mut m = Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        &req.mac.octets(),
    );
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.msg.flags());
    // RFC 2131 table 3: ACK (to REQUEST in RENEWING/REBINDING, or to INFORM) echoes ciaddr.
    if kind == MessageType::Ack {
        m.set_ciaddr(req.ciaddr());
    }
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server_id));
    if let Some(info) = &req.relay_info {
        set_raw_option(&mut m, OPT_RELAY_AGENT, info.clone());
    }
    m
}

/// A DHCPNAK: no address, no lease options, option 56 says why. Relayed NAKs set the
/// broadcast bit so the relay broadcasts them (RFC 2131 4.3.2).
pub fn nak(req: &Request, server_id: Ipv4Addr, why: &str) -> Message {
    let mut m = reply(req, MessageType::Nak, server_id);
    m.opts_mut().insert(DhcpOption::Message(why.to_string()));
    if req.is_relayed() {
        m.set_flags(Flags::default().set_broadcast());
    }
    m
}

/// Options 51, 58 (T1 = 1/2) and 59 (T2 = 7/8) for a lease of `secs`.
pub fn set_lease_times(m: &mut Message, secs: u32) {
    m.opts_mut().insert(DhcpOption::AddressLeaseTime(secs));
    m.opts_mut().insert(DhcpOption::Renewal(secs / 2));
    m.opts_mut()
        .insert(DhcpOption::Rebinding((secs as u64 * 7 / 8) as u32));
}

/// Inserts an option from raw bytes (configured extra options, option 82 echo).
/// Values longer than 255 bytes must be rejected by the caller (config validation).
pub fn set_raw_option(m: &mut Message, code: u8, value: Vec<u8>) {
    m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
        OptionCode::from(code),
        value,
    )));
}

/// Boot file fields for a PXE/HTTP client: `file` and option 67, `siaddr` and
/// option 66 (TFTP server as dotted quad), option 60 "HTTPClient" for HTTP boot.
pub fn set_boot(m: &mut Message, filename: &str, next_server: Ipv4Addr, http_client: bool) {
    // `file` is 128 bytes with a NUL; longer names (URLs) only go in option 67.
    if filename.len() < 128 {
        m.set_fname_str(filename);
    }
    m.set_siaddr(next_server);
    m.opts_mut()
        .insert(DhcpOption::BootfileName(filename.as_bytes().to_vec()));
    m.opts_mut().insert(DhcpOption::TFTPServerName(
        next_server.to_string().into_bytes(),
    ));
    if http_client {
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
    }
}

/// iPXE's "no-pxedhcp" setting (option 175, sub-option 176 = 1). iPXE otherwise
/// waits about 2 s after an offer for ProxyDHCP offers; a full DHCP server that
/// gives the boot file itself has none coming. Left alone when the reply already
/// carries option 175 (the operator's own iPXE settings win).
pub fn set_ipxe_no_pxedhcp(m: &mut Message) {
    const NO_PXEDHCP: u8 = 176;
    let code = OptionCode::from(crate::pxe::IPXE_ENCAP_OPTION);
    if m.opts().get(code).is_none() {
        set_raw_option(m, crate::pxe::IPXE_ENCAP_OPTION, vec![NO_PXEDHCP, 1, 1]);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode DHCP reply: {0}")]
pub struct EncodeError(String);

/// Encodes a reply, padded to [`MIN_REPLY_LEN`].
pub fn encode(m: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut buf = Vec::with_capacity(576);
    m.encode(&mut Encoder::new(&mut buf))
        .map_err(|e| EncodeError(e.to_string()))?;
    if buf.len() < MIN_REPLY_LEN {
        buf.resize(MIN_REPLY_LEN, 0);
    }
    Ok(buf)
}

/// Where a reply goes (RFC 2131 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTo {
    /// To the relay agent at `giaddr`, server port 67.
    Relay(Ipv4Addr),
    /// To a configured client at `ciaddr`, port 68.
    Unicast(Ipv4Addr),
    /// 255.255.255.255:68 on the receiving interface.
    Broadcast,
    /// To `yiaddr` at the client's hardware address, port 68. The client has no
    /// address yet, so this needs an ARP entry; a server that cannot add one broadcasts.
    Hardware { ip: Ipv4Addr, mac: MacAddr },
}

/// RFC 2131 4.1: giaddr → relay; else NAK → broadcast; else ciaddr → unicast;
/// else broadcast bit → broadcast; else unicast to chaddr/yiaddr.
pub fn reply_destination(req: &Request, reply_kind: MessageType, yiaddr: Ipv4Addr) -> ReplyTo {
    if req.is_relayed() {
        ReplyTo::Relay(req.giaddr())
    } else if reply_kind == MessageType::Nak {
        ReplyTo::Broadcast
    } else if !req.ciaddr().is_unspecified() {
        ReplyTo::Unicast(req.ciaddr())
    } else if req.broadcast_flag() || yiaddr.is_unspecified() {
        ReplyTo::Broadcast
    } else {
        ReplyTo::Hardware {
            ip: yiaddr,
            mac: req.mac,
        }
    }
}

/// PXE vendor options (option 43 encapsulated, PXE 2.1 spec).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PxeVendorOptions {
    /// Sub-option 6 PXE_DISCOVERY_CONTROL. [`DISCOVERY_USE_BOOTFILE`] tells
    /// firmware to take the boot file from this offer and skip boot server discovery.
    pub discovery_control: Option<u8>,
    /// Sub-option 9 PXE_BOOT_MENU: (boot server type, description).
    pub boot_menu: Vec<(u16, String)>,
    /// Sub-option 10 PXE_MENU_PROMPT: (timeout seconds, prompt).
    pub menu_prompt: Option<(u8, String)>,
}

/// Discovery control bit 3: use the boot file name from the (Proxy)DHCP offer directly.
pub const DISCOVERY_USE_BOOTFILE: u8 = 0x08;
/// Discovery control bits 0+1: no broadcast and no multicast discovery.
pub const DISCOVERY_NO_BROADCAST_MULTICAST: u8 = 0x03;

impl PxeVendorOptions {
    /// What a ProxyDHCP offer carries so PXE ROMs boot the file in it without a menu.
    pub fn boot_file_only() -> PxeVendorOptions {
        PxeVendorOptions {
            discovery_control: Some(DISCOVERY_USE_BOOTFILE | DISCOVERY_NO_BROADCAST_MULTICAST),
            ..Default::default()
        }
    }

    /// Encapsulated bytes ending with 255; `None` when a menu text is too long.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(c) = self.discovery_control {
            out.extend_from_slice(&[6, 1, c]);
        }
        if !self.boot_menu.is_empty() {
            let mut menu = Vec::new();
            for (ty, desc) in &self.boot_menu {
                menu.extend_from_slice(&ty.to_be_bytes());
                menu.push(u8::try_from(desc.len()).ok()?);
                menu.extend_from_slice(desc.as_bytes());
            }
            out.push(9);
            out.push(u8::try_from(menu.len()).ok()?);
            out.extend_from_slice(&menu);
        }
        if let Some((timeout, prompt)) = &self.menu_prompt {
            out.push(10);
            out.push(u8::try_from(prompt.len() + 1).ok()?);
            out.push(*timeout);
            out.extend_from_slice(prompt.as_bytes());
        }
        out.push(255);
        (out.len() <= 255).then_some(out)
    }
}

/// A ProxyDHCP reply (OFFER on port 67, ACK on 4011): no address, vendor class
/// "PXEClient", option 43, client UUID echoed, boot file.
pub fn proxy_reply(
    req: &Request,
    kind: MessageType,
    server_id: Ipv4Addr,
    filename: &str,
    next_server: Ipv4Addr,
    http_client: bool,
) -> Message {
    let mut m = reply(req, kind, server_id);
    m.opts_mut()
        .insert(DhcpOption::ClassIdentifier(if http_client {
            b"HTTPClient".to_vec()
        } else {
            b"PXEClient".to_vec()
        }));
    if !http_client && let Some(vendor) = PxeVendorOptions::boot_file_only().encode() {
        m.opts_mut().insert(DhcpOption::VendorExtensions(vendor));
    }
    if let Some(uuid) = &req.client_uuid {
        set_raw_option(&mut m, OPT_CLIENT_UUID, uuid.clone());
    }
    set_boot(&mut m, filename, next_server, false);
    m
}

/// Reads back what a reply says, for tests and tools. Options go through the
/// same checked decoding as requests: dhcproto's own decoder asserts on the
/// length of some fixed-size options (a debug build panics on a bad one).
pub fn decode_reply(bytes: &[u8]) -> Option<Message> {
    if bytes.len() < HEADER_LEN + MAGIC.len()
        || bytes[HEADER_LEN..HEADER_LEN + 4] != MAGIC
        || bytes[0] != 2
    {
        return None;
    }
    let raw = scan_options(&bytes[HEADER_LEN + 4..]).ok()?;
    let m = decode_message(&bytes[..HEADER_LEN + 4], &raw).ok()?;
    (m.opcode() == Opcode::BootReply).then_some(m)
}

/// Raw value of an option in a decoded message, re-encoded (for comparing echoes).
pub fn option_bytes(m: &Message, code: u8) -> Option<Vec<u8>> {
    let opt = m.opts().get(OptionCode::from(code))?;
    let mut buf = Vec::new();
    opt.encode(&mut Encoder::new(&mut buf)).ok()?;
    // code, len, value...
    Some(buf.get(2..)?.to_vec())
}

/// Message type of a decoded message.
pub fn message_type(m: &Message) -> Option<v4::MessageType> {
    m.opts().msg_type()
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// Found by fuzz/ (target dhcp4): option 94 (client network interface)
    /// with length 0 made dhcproto's decoder assert (debug builds) when the
    /// packet went through `decode_reply`.
    #[test]
    fn option_94_of_the_wrong_length_is_refused_not_a_panic() {
        let request = include_bytes!("../testdata/fuzz/dhcp4-option94-empty").to_vec();
        assert!(decode_reply(&request).is_none(), "a request is not a reply");
        // No message type: refused, not a panic.
        let parsed = parse_request(&request);
        assert!(parsed.is_err(), "{parsed:?}");
        let mut reply = request.clone();
        reply[0] = 2;
        // As a reply it went to dhcproto's decoder whole, which asserted.
        let _ = decode_reply(&reply);
        // One instance of 0 bytes: malformed.
        let mut alone = reply[..HEADER_LEN].to_vec();
        alone.extend_from_slice(&MAGIC);
        alone.extend_from_slice(&[94, 0, 255]);
        assert!(decode_reply(&alone).is_none());
        let mut as_request = alone.clone();
        as_request[0] = 1;
        as_request.splice(as_request.len() - 1..as_request.len() - 1, [53, 1, 1]);
        let parsed = parse_request(&as_request);
        assert!(
            matches!(parsed, Err(Malformed::BadOptionValue { code: 94 })),
            "{parsed:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pxe;
    use rackboot_core::Arch;

    fn load(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/dhcp/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let hex: String = text.split_whitespace().collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn all_captures() -> Vec<String> {
        let dir = format!("{}/testdata/dhcp", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".hex"))
            .collect();
        names.sort();
        names
    }

    struct Capture {
        file: &'static str,
        kind: MessageType,
        mac: &'static str,
        arch: Arch,
        ipxe: bool,
        uuid: &'static str,
        undi: (u8, u8),
        requested: Option<&'static str>,
    }

    const BIOS_UUID: &str = "12345678-9abc-def0-1122-334455667788";
    const UEFI_UUID: &str = "87654321-4321-abcd-ef01-0a0b0c0d0e0f";

    fn captures() -> Vec<Capture> {
        let bios = |file, kind, requested| Capture {
            file,
            kind,
            mac: "52:54:00:aa:00:01",
            arch: Arch::Bios,
            ipxe: true,
            uuid: BIOS_UUID,
            undi: (2, 1),
            requested,
        };
        let uefi = |file, kind, ipxe, undi, requested| Capture {
            file,
            kind,
            mac: "52:54:00:bb:00:02",
            arch: Arch::UefiX64,
            ipxe,
            uuid: UEFI_UUID,
            undi,
            requested,
        };
        use MessageType::{Discover, Request};
        vec![
            bios("bios-ipxe-rom-01-discover.hex", Discover, None),
            bios("bios-ipxe-rom-02-discover.hex", Discover, None),
            bios("bios-ipxe-rom-03-request.hex", Request, Some("10.77.0.100")),
            uefi(
                "uefi-ipxe-rom-01-discover.hex",
                Discover,
                true,
                (3, 10),
                None,
            ),
            uefi(
                "uefi-ipxe-rom-02-discover.hex",
                Discover,
                true,
                (3, 10),
                None,
            ),
            uefi(
                "uefi-ipxe-rom-03-discover.hex",
                Discover,
                true,
                (3, 10),
                None,
            ),
            uefi(
                "uefi-ipxe-rom-04-request.hex",
                Request,
                true,
                (3, 10),
                Some("10.77.0.101"),
            ),
            uefi(
                "uefi-edk2-pxe-05-discover.hex",
                Discover,
                false,
                (3, 1),
                None,
            ),
            uefi(
                "uefi-edk2-pxe-06-request.hex",
                Request,
                false,
                (3, 1),
                Some("10.77.0.101"),
            ),
            uefi(
                "uefi-ipxe-efi-chainloaded-07-discover.hex",
                Discover,
                true,
                (3, 10),
                None,
            ),
            uefi(
                "uefi-ipxe-efi-chainloaded-08-discover.hex",
                Discover,
                true,
                (3, 10),
                None,
            ),
            uefi(
                "uefi-ipxe-efi-chainloaded-09-request.hex",
                Request,
                true,
                (3, 10),
                Some("10.77.0.101"),
            ),
        ]
    }

    #[test]
    fn real_firmware_requests_classify() {
        let table = captures();
        // Every capture on disk is in the table.
        let mut listed: Vec<String> = table.iter().map(|c| c.file.to_string()).collect();
        listed.sort();
        assert_eq!(listed, all_captures());
        for c in table {
            let req = parse_request(&load(c.file)).unwrap_or_else(|e| panic!("{}: {e}", c.file));
            assert_eq!(req.kind, c.kind, "{}", c.file);
            assert_eq!(req.mac.to_string(), c.mac, "{}", c.file);
            assert_eq!(
                req.requested_ip,
                c.requested.map(|s| s.parse().unwrap()),
                "{}",
                c.file
            );
            if c.kind == MessageType::Request {
                assert_eq!(
                    req.server_id,
                    Some(Ipv4Addr::new(10, 77, 0, 1)),
                    "{}",
                    c.file
                );
            }
            let pxe = pxe::classify(&req.msg).unwrap_or_else(|| panic!("{}: not PXE", c.file));
            assert_eq!(pxe.arch, c.arch, "{}", c.file);
            assert_eq!(pxe.ipxe, c.ipxe, "{}", c.file);
            assert!(!pxe.http_boot, "{}", c.file);
            assert_eq!(pxe.uuid, Some(c.uuid.parse().unwrap()), "{}", c.file);
            assert_eq!(pxe.undi, Some(c.undi), "{}", c.file);
        }
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_or_a_request_never_a_panic() {
        for name in all_captures() {
            let full = load(&name);
            for len in 0..full.len() {
                let cut = &full[..len];
                match parse_request(cut) {
                    // Cutting only trailing options/padding can leave a valid request.
                    Ok(req) => assert!(len > 240, "{name} cut at {len} parsed as {req:?}"),
                    Err(e) => {
                        let _ = e.reason();
                    }
                }
                if let Ok(req) = parse_request(cut) {
                    let _ = pxe::classify(&req.msg);
                }
            }
            // Deterministic byte corruption over the options area.
            let mut state = 0x9e3779b9u32;
            for _ in 0..2000 {
                let mut bad = full.clone();
                for _ in 0..3 {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    let pos = 240 + (state as usize % (full.len() - 240));
                    bad[pos] = (state >> 8) as u8;
                }
                if let Ok(req) = parse_request(&bad) {
                    let _ = pxe::classify(&req.msg);
                    let m = reply(&req, MessageType::Offer, Ipv4Addr::new(10, 0, 0, 1));
                    encode(&m).unwrap();
                }
            }
        }
    }

    #[test]
    fn every_option_code_with_odd_lengths_never_panics() {
        let base = load("bios-ipxe-rom-01-discover.hex")[..240].to_vec();
        for code in 1..=254u8 {
            for len in 0..=20usize {
                for fill in [0u8, 0xff, 0x41, 0x3f] {
                    let mut b = base.clone();
                    b.extend_from_slice(&[53, 1, 1, code, len as u8]);
                    b.extend(std::iter::repeat_n(fill, len));
                    b.push(255);
                    if let Ok(req) = parse_request(&b) {
                        let _ = pxe::classify(&req.msg);
                        let m = reply(&req, MessageType::Offer, Ipv4Addr::new(10, 0, 0, 1));
                        encode(&m).unwrap();
                    }
                }
            }
        }
    }

    /// RFC 3396: an option given in several instances is their concatenation.
    #[test]
    fn split_options_are_concatenated() {
        let mut b = vec![0u8; HEADER_LEN];
        b[..3].copy_from_slice(&[1, 1, 6]);
        b[28..34].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[53, 1, 1]);
        b.extend_from_slice(&[61, 3, 0x01, 0x52, 0x54]);
        b.extend_from_slice(&[12, 3, b'n', b'o', b'd']);
        b.extend_from_slice(&[61, 4, 0x00, 0x12, 0x34, 0x56]);
        b.extend_from_slice(&[12, 3, b'e', b'0', b'1']);
        b.push(255);
        let req = parse_request(&b).unwrap();
        assert_eq!(req.kind, MessageType::Discover);
        assert_eq!(
            req.client_id.as_deref(),
            Some(&[0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56][..])
        );
        assert_eq!(req.hostname.as_deref(), Some("node01"));
        assert_eq!(req.requested_ip, None);
    }

    #[test]
    fn malformed_table() {
        let good = load("bios-ipxe-rom-01-discover.hex");
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            b
        };
        let opts_start = 240;
        let cases: Vec<(&str, Vec<u8>, Malformed)> = vec![
            ("empty", vec![], Malformed::TooShort { len: 0 }),
            (
                "header only",
                good[..236].to_vec(),
                Malformed::TooShort { len: 236 },
            ),
            ("bad magic", with(&|b| b[236] = 0), Malformed::BadMagic),
            ("reply op", with(&|b| b[0] = 2), Malformed::NotBootRequest),
            (
                "token ring",
                with(&|b| b[1] = 6),
                Malformed::NotEthernet { htype: 6, hlen: 6 },
            ),
            (
                "option overrun",
                with(&|b| {
                    b.truncate(opts_start);
                    b.extend_from_slice(&[53, 1, 1, 61, 9, 1, 2]);
                }),
                Malformed::OptionOverrun { code: 61 },
            ),
            (
                "no type",
                with(&|b| {
                    b.truncate(opts_start);
                    b.extend_from_slice(&[61, 2, 1, 2, 255]);
                }),
                Malformed::MissingMessageType,
            ),
            (
                "offer sent to server",
                with(&|b| {
                    b.truncate(opts_start);
                    b.extend_from_slice(&[53, 1, 2, 255]);
                }),
                Malformed::NotClientMessage(2),
            ),
            (
                "requested ip too short",
                with(&|b| {
                    b.truncate(opts_start);
                    b.extend_from_slice(&[53, 1, 3, 50, 3, 10, 0, 0, 255]);
                }),
                Malformed::BadOptionValue { code: 50 },
            ),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(parse_request(&bytes), Err(want), "{name}");
        }
    }

    fn request_from(name: &str) -> Request {
        parse_request(&load(name)).unwrap()
    }

    #[test]
    fn offer_ack_nak_shapes() {
        let server = Ipv4Addr::new(10, 77, 0, 1);
        let req = request_from("uefi-edk2-pxe-06-request.hex");
        let mut ack = reply(&req, MessageType::Ack, server);
        ack.set_yiaddr(Ipv4Addr::new(10, 77, 0, 101));
        set_lease_times(&mut ack, 3600);
        set_boot(&mut ack, "ipxe.efi", server, false);
        let bytes = encode(&ack).unwrap();
        assert!(bytes.len() >= MIN_REPLY_LEN);
        let back = decode_reply(&bytes).unwrap();
        assert_eq!(back.xid(), req.xid());
        assert_eq!(back.chaddr()[..6], req.mac.octets());
        assert!(back.flags().broadcast(), "EDK2 set the broadcast bit");
        assert_eq!(message_type(&back), Some(MessageType::Ack));
        assert_eq!(file_field(&back).as_deref(), Some("ipxe.efi"));
        assert_eq!(back.siaddr(), server);
        assert_eq!(
            option_bytes(&back, 58),
            Some(1800u32.to_be_bytes().to_vec())
        );
        assert_eq!(
            option_bytes(&back, 59),
            Some(3150u32.to_be_bytes().to_vec())
        );
        assert_eq!(option_bytes(&back, 66), Some(b"10.77.0.1".to_vec()));

        let n = nak(&req, server, "wrong address");
        let back = decode_reply(&encode(&n).unwrap()).unwrap();
        assert_eq!(back.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(!back.opts().contains(OptionCode::AddressLeaseTime));
        assert_eq!(option_bytes(&back, 56), Some(b"wrong address".to_vec()));
        assert_eq!(
            reply_destination(&req, MessageType::Nak, Ipv4Addr::UNSPECIFIED),
            ReplyTo::Broadcast
        );
    }

    #[test]
    fn relay_agent_information_is_echoed_byte_for_byte_and_last() {
        let mut bytes = load("bios-ipxe-rom-01-discover.hex");
        // giaddr 10.1.0.1, and option 82 with circuit-id "eth0/1" and remote-id "sw1".
        bytes[24..28].copy_from_slice(&[10, 1, 0, 1]);
        let end = bytes.iter().rposition(|b| *b == 255).unwrap();
        bytes.truncate(end);
        let info = [
            1, 6, b'e', b't', b'h', b'0', b'/', b'1', 2, 3, b's', b'w', b'1',
        ];
        bytes.extend_from_slice(&[82, info.len() as u8]);
        bytes.extend_from_slice(&info);
        bytes.push(255);
        let req = parse_request(&bytes).unwrap();
        assert_eq!(req.relay_info.as_deref(), Some(&info[..]));
        let mut offer = reply(&req, MessageType::Offer, Ipv4Addr::new(10, 1, 0, 254));
        offer
            .opts_mut()
            .insert(DhcpOption::Router(vec![[10, 1, 0, 1].into()]));
        let out = encode(&offer).unwrap();
        // Last option before END is 82 with exactly the relay's bytes.
        let tail = [&[82, info.len() as u8][..], &info[..], &[255]].concat();
        let pos = out
            .windows(tail.len())
            .position(|w| w == tail.as_slice())
            .expect("option 82 followed by END");
        assert!(out[pos + tail.len()..].iter().all(|b| *b == 0));
        assert_eq!(
            reply_destination(&req, MessageType::Offer, Ipv4Addr::new(10, 1, 0, 9)),
            ReplyTo::Relay(Ipv4Addr::new(10, 1, 0, 1))
        );
        // Relayed NAKs ask the relay to broadcast.
        assert!(
            nak(&req, Ipv4Addr::new(10, 1, 0, 254), "x")
                .flags()
                .broadcast()
        );
    }

    #[test]
    fn reply_destinations() {
        let yi = Ipv4Addr::new(10, 77, 0, 5);
        let mut bios = request_from("bios-ipxe-rom-01-discover.hex");
        assert_eq!(
            reply_destination(&bios, MessageType::Offer, yi),
            ReplyTo::Hardware {
                ip: yi,
                mac: bios.mac
            }
        );
        bios.msg.set_flags(Flags::default().set_broadcast());
        assert_eq!(
            reply_destination(&bios, MessageType::Offer, yi),
            ReplyTo::Broadcast
        );
        bios.msg.set_ciaddr(Ipv4Addr::new(10, 77, 0, 7));
        assert_eq!(
            reply_destination(&bios, MessageType::Ack, yi),
            ReplyTo::Unicast(Ipv4Addr::new(10, 77, 0, 7))
        );
    }

    #[test]
    fn pxe_vendor_options_encoding() {
        assert_eq!(
            PxeVendorOptions::boot_file_only().encode(),
            Some(vec![6, 1, 0x0b, 255])
        );
        let menu = PxeVendorOptions {
            discovery_control: None,
            boot_menu: vec![(0x8000, "rackboot".into())],
            menu_prompt: Some((0, "PXE".into())),
        };
        assert_eq!(
            menu.encode().unwrap(),
            [
                &[9, 11, 0x80, 0, 8][..],
                b"rackboot",
                &[10, 4, 0],
                b"PXE",
                &[255]
            ]
            .concat()
        );
        let too_long = PxeVendorOptions {
            menu_prompt: Some((0, "x".repeat(300))),
            ..Default::default()
        };
        assert_eq!(too_long.encode(), None);
    }

    #[test]
    fn ipxe_no_pxedhcp_unless_the_operator_set_option_175() {
        let req = request_from("bios-ipxe-rom-01-discover.hex");
        let server = Ipv4Addr::new(10, 77, 0, 1);
        let mut m = reply(&req, MessageType::Offer, server);
        set_ipxe_no_pxedhcp(&mut m);
        let back = decode_reply(&encode(&m).unwrap()).unwrap();
        assert_eq!(option_bytes(&back, 175), Some(vec![176, 1, 1]));
        let mut m = reply(&req, MessageType::Offer, server);
        set_raw_option(&mut m, 175, vec![190, 1, 1]);
        set_ipxe_no_pxedhcp(&mut m);
        let back = decode_reply(&encode(&m).unwrap()).unwrap();
        assert_eq!(option_bytes(&back, 175), Some(vec![190, 1, 1]));
    }

    #[test]
    fn proxy_offer_has_no_address_and_pxe_class() {
        let req = request_from("uefi-edk2-pxe-05-discover.hex");
        let server = Ipv4Addr::new(10, 77, 0, 1);
        let m = proxy_reply(&req, MessageType::Offer, server, "ipxe.efi", server, false);
        let back = decode_reply(&encode(&m).unwrap()).unwrap();
        assert_eq!(back.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(option_bytes(&back, 60), Some(b"PXEClient".to_vec()));
        assert_eq!(option_bytes(&back, 43), Some(vec![6, 1, 0x0b, 255]));
        assert_eq!(option_bytes(&back, 97), req.client_uuid);
        assert_eq!(option_bytes(&back, 67), Some(b"ipxe.efi".to_vec()));
        assert_eq!(file_field(&back).as_deref(), Some("ipxe.efi"));
    }
}
