//! The pure half of `boot-storm` (N machines network-booting at once against
//! one `rackboot serve`): the DHCP messages a PXE ROM and iPXE send and what
//! their replies say, the broadcast frame a client without an address sends,
//! the netlink request that gives a client its leased address, the files an
//! iPXE script loads, the stages of a boot and their report. No sockets,
//! processes or clocks here.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::fleet::{Latencies, LatencySummary};

/// Who is asking: the NIC's PXE ROM (which loads iPXE over TFTP) or the
/// iPXE it loaded (which asks again and gets its script URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    PxeRom,
    Ipxe,
}

impl Firmware {
    /// Seconds between retransmissions of a DISCOVER or REQUEST, then give up.
    /// A PXE ROM waits 4, 8, 16, 32 s (PXE 2.1, as EDK2 and Intel's ROMs do);
    /// iPXE starts at 1 s and doubles up to 10 s.
    pub fn retransmit_secs(self) -> &'static [u64] {
        match self {
            Firmware::PxeRom => &[4, 8, 16, 32],
            Firmware::Ipxe => &[1, 2, 4, 8, 10],
        }
    }
}

/// A BIOS PXE ROM's vendor class: arch 0 (x86 BIOS), UNDI 2.1.
const PXE_VENDOR_CLASS: &[u8] = b"PXEClient:Arch:00000:UNDI:002001";

/// Machine `i`'s boot NIC address: locally administered, unique up to 2^24.
pub fn machine_mac(i: usize) -> [u8; 6] {
    [0x02, 0x5b, 0x00, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Machine `i`'s SMBIOS UUID, as option 97 carries it (type 0 + 16 bytes).
pub fn machine_uuid_option(i: usize) -> Vec<u8> {
    let mut v = vec![0u8; 17];
    v[1..5].copy_from_slice(b"STRM");
    v[9..17].copy_from_slice(&(i as u64).to_be_bytes());
    v
}

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub mac: [u8; 6],
    pub xid: u32,
    pub firmware: Firmware,
    /// Option 97 value.
    pub uuid: Vec<u8>,
    /// `None`: DISCOVER; `Some((offered, server))`: the REQUEST for that offer.
    pub request: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Seconds since the client started (the `secs` field).
    pub secs: u16,
}

/// Encodes `m` as the firmware would send it: the broadcast flag set (iPXE
/// always sets it, and so do common PXE ROMs), the PXE vendor class, client
/// architecture, UNDI version and UUID; iPXE adds its user class and option 175.
pub fn encode_client_message(m: &ClientMessage) -> Vec<u8> {
    let u = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new(u, u, u, u, &m.mac);
    msg.set_xid(m.xid)
        .set_flags(Flags::default().set_broadcast())
        .set_secs(m.secs);
    let opts = msg.opts_mut();
    let kind = if m.request.is_some() {
        MessageType::Request
    } else {
        MessageType::Discover
    };
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::MaxMessageSize(1472));
    opts.insert(DhcpOption::ClassIdentifier(PXE_VENDOR_CLASS.to_vec()));
    opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(0)));
    opts.insert(DhcpOption::ClientNetworkInterface(1, 2, 1));
    opts.insert(DhcpOption::ClientMachineIdentifier(m.uuid.clone()));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::DomainName,
        OptionCode::VendorExtensions,
        OptionCode::ClassIdentifier,
        OptionCode::TFTPServerName,
        OptionCode::BootfileName,
    ]));
    if m.firmware == Firmware::Ipxe {
        opts.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        // iPXE's feature list (option 175): here just "HTTP supported" (19 = 1).
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(175),
            vec![19, 1, 1],
        )));
    }
    if let Some((ip, server)) = m.request {
        opts.insert(DhcpOption::RequestedIpAddress(ip));
        opts.insert(DhcpOption::ServerIdentifier(server));
    }
    let mut buf = Vec::with_capacity(400);
    msg.encode(&mut Encoder::new(&mut buf))
        .expect("a client message always encodes");
    buf
}

/// What a server's reply says, as far as a booting client cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub xid: u32,
    pub mac: [u8; 6],
    pub kind: MessageType,
    pub yiaddr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    /// Option 67, else the `file` field.
    pub boot_file: Option<String>,
    /// Option 66 as an address, else `siaddr`.
    pub next_server: Ipv4Addr,
    /// From the subnet mask (option 1).
    pub prefix_len: Option<u8>,
}

/// Decodes a BOOTREPLY; `None` for anything else.
pub fn parse_server_reply(bytes: &[u8]) -> Option<ServerReply> {
    let m = Message::decode(&mut Decoder::new(bytes)).ok()?;
    if m.opcode() != dhcproto::v4::Opcode::BootReply || m.chaddr().len() < 6 {
        return None;
    }
    let opts = m.opts();
    let kind = opts.msg_type()?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&m.chaddr()[..6]);
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let nul_trimmed = |b: &[u8]| {
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        String::from_utf8(b[..end].to_vec())
            .ok()
            .filter(|s| !s.is_empty())
    };
    let boot_file = match opts.get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) => nul_trimmed(b),
        _ => None,
    }
    .or_else(|| m.fname().and_then(nul_trimmed));
    let next_server = match opts.get(OptionCode::TFTPServerName) {
        Some(DhcpOption::TFTPServerName(b)) => nul_trimmed(b).and_then(|s| s.parse().ok()),
        _ => None,
    }
    .unwrap_or(m.siaddr());
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => Some(u32::from(*mask).leading_ones() as u8),
        _ => None,
    };
    Some(ServerReply {
        xid: m.xid(),
        mac,
        kind,
        yiaddr: m.yiaddr(),
        server_id,
        boot_file,
        next_server,
        prefix_len,
    })
}

/// An Ethernet frame from `src_mac`, 0.0.0.0:68 to 255.255.255.255:67 carrying
/// `payload`: what a client without an address puts on the wire. The UDP
/// checksum is left 0 (optional over IPv4).
pub fn dhcp_broadcast_frame(src_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0x10]); // IPv4, 20-byte header; TOS low delay, as PXE ROMs send
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]); // id, flags, fragment offset
    f.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (below)
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&[255, 255, 255, 255]);
    let sum = ip_checksum(&f[ip_start..ip_start + 20]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&67u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The Internet checksum (RFC 1071) of a header whose checksum field is 0.
pub fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An RTM_NEWADDR request adding `ip/prefix_len` to interface `ifindex`
/// (netlink, host byte order), asking for an acknowledgement.
pub fn netlink_new_address(seq: u32, ifindex: u32, ip: Ipv4Addr, prefix_len: u8) -> Vec<u8> {
    const RTM_NEWADDR: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_ACK: u16 = 0x4;
    const NLM_F_EXCL: u16 = 0x200;
    const NLM_F_CREATE: u16 = 0x400;
    const AF_INET: u8 = 2;
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&40u32.to_ne_bytes());
    m.extend_from_slice(&RTM_NEWADDR.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // ifaddrmsg: family, prefix length, flags, scope (universe), interface.
    m.extend_from_slice(&[AF_INET, prefix_len, 0, 0]);
    m.extend_from_slice(&ifindex.to_ne_bytes());
    for kind in [IFA_LOCAL, IFA_ADDRESS] {
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&ip.octets());
    }
    m
}

/// The outcome of a netlink request from its NLMSG_ERROR answer: `Ok` for an
/// acknowledgement or an address that was already there (EEXIST: the same
/// client asking twice), the errno otherwise.
pub fn netlink_ack(answer: &[u8], seq: u32) -> Result<(), i32> {
    const NLMSG_ERROR: u16 = 2;
    const EEXIST: i32 = 17;
    if answer.len() < 20 {
        return Err(-1);
    }
    let kind = u16::from_ne_bytes([answer[4], answer[5]]);
    let got_seq = u32::from_ne_bytes([answer[8], answer[9], answer[10], answer[11]]);
    if kind != NLMSG_ERROR || got_seq != seq {
        return Err(-1);
    }
    match -i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]) {
        0 | EEXIST => Ok(()),
        errno => Err(errno),
    }
}

/// The kernel and initrds an iPXE script loads (`kernel URL ...`,
/// `initrd [--name N] URL`), in order.
pub fn boot_files_in_ipxe_script(script: &str) -> Option<(String, Vec<String>)> {
    let mut kernel = None;
    let mut initrds = Vec::new();
    for line in script.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("kernel" | "chain" | "imgexec") => kernel = image_url(words),
            Some("initrd" | "imgfetch" | "module") => initrds.extend(image_url(words)),
            _ => {}
        }
    }
    Some((kernel?, initrds))
}

/// The image an iPXE image command names: its first word that is not an
/// option (`--name N` / `-n N` take a value, other `--flags` do not).
fn image_url<'a>(mut words: impl Iterator<Item = &'a str>) -> Option<String> {
    while let Some(w) = words.next() {
        if w == "--name" || w == "-n" {
            words.next();
        } else if !w.starts_with('-') {
            return Some(w.to_string());
        }
    }
    None
}

/// The steps of one machine's boot, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// DISCOVER to ACK as the PXE ROM, and the address configured.
    DhcpRom,
    /// The loader (iPXE) over TFTP.
    Tftp,
    /// DISCOVER to ACK again, as iPXE.
    DhcpIpxe,
    /// The iPXE script over HTTP.
    Script,
    Kernel,
    Initrd,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::DhcpRom,
        Stage::Tftp,
        Stage::DhcpIpxe,
        Stage::Script,
        Stage::Kernel,
        Stage::Initrd,
    ];

    /// Key in the output (`stage_<key>=...`).
    pub fn key(self) -> &'static str {
        match self {
            Stage::DhcpRom => "dhcp_rom",
            Stage::Tftp => "tftp_loader",
            Stage::DhcpIpxe => "dhcp_ipxe",
            Stage::Script => "http_script",
            Stage::Kernel => "http_kernel",
            Stage::Initrd => "http_initrd",
        }
    }

    /// For people.
    pub fn label(self) -> &'static str {
        match self {
            Stage::DhcpRom => "DHCP as the PXE ROM (DISCOVER to ACK)",
            Stage::Tftp => "TFTP of the loader (undionly.kpxe)",
            Stage::DhcpIpxe => "DHCP as iPXE (DISCOVER to ACK)",
            Stage::Script => "HTTP of the iPXE script",
            Stage::Kernel => "HTTP of the kernel",
            Stage::Initrd => "HTTP of the initrd",
        }
    }
}

/// What happened to one machine.
#[derive(Debug, Clone, Default)]
pub struct MachineRun {
    /// Each stage finished, with its duration in microseconds.
    pub stages: Vec<(Stage, u64)>,
    /// The stage that failed and why.
    pub failure: Option<(Stage, String)>,
    /// Power-on to the last byte of the last initrd, when it got there.
    pub total_micros: Option<u64>,
    pub dhcp_retransmits: u32,
    pub tftp_retransmits: u32,
    pub http_bytes: u64,
}

/// Figures of a whole storm.
#[derive(Debug, Clone, Default)]
pub struct StormSummary {
    pub machines: usize,
    pub served: usize,
    /// Failures by stage, with one example reason each.
    pub failed: Vec<(Stage, usize, String)>,
    pub stages: Vec<(Stage, Option<LatencySummary>)>,
    pub total: Option<LatencySummary>,
    pub dhcp_retransmits: u64,
    pub tftp_retransmits: u64,
    pub http_bytes: u64,
}

/// Adds up the machines' runs.
pub fn summarize(runs: &[MachineRun]) -> StormSummary {
    let mut s = StormSummary {
        machines: runs.len(),
        ..StormSummary::default()
    };
    let mut per_stage: Vec<Latencies> = Stage::ALL.iter().map(|_| Latencies::default()).collect();
    let mut total = Latencies::default();
    for r in runs {
        for (stage, micros) in &r.stages {
            per_stage[stage_index(*stage)].add_micros(*micros);
        }
        match &r.failure {
            None if r.total_micros.is_some() => s.served += 1,
            None => {}
            Some((stage, why)) => {
                per_stage[stage_index(*stage)].errors += 1;
                match s.failed.iter_mut().find(|(st, _, _)| st == stage) {
                    Some(entry) => entry.1 += 1,
                    None => s.failed.push((*stage, 1, why.clone())),
                }
            }
        }
        if let Some(t) = r.total_micros {
            total.add_micros(t);
        }
        s.dhcp_retransmits += u64::from(r.dhcp_retransmits);
        s.tftp_retransmits += u64::from(r.tftp_retransmits);
        s.http_bytes += r.http_bytes;
    }
    s.failed.sort_by_key(|(st, _, _)| *st);
    s.stages = Stage::ALL
        .iter()
        .map(|st| (*st, per_stage[stage_index(*st)].summary()))
        .collect();
    s.total = total.summary();
    s
}

fn stage_index(stage: Stage) -> usize {
    Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)
}

/// `count errors p50 p99 max` (ms), or `0 ERRORS - - -` without samples.
pub fn latency_fields(l: Option<LatencySummary>, errors_without_samples: usize) -> String {
    match l {
        Some(l) => format!(
            "{} {} {:.1} {:.1} {:.1}",
            l.count, l.errors, l.p50_ms, l.p99_ms, l.max_ms
        ),
        None => format!("0 {errors_without_samples} - - -"),
    }
}

/// The summary's `key=value` lines.
pub fn summary_lines(s: &StormSummary) -> String {
    let mut out = String::new();
    writeln!(out, "machines={}", s.machines).unwrap();
    writeln!(out, "served={}", s.served).unwrap();
    writeln!(out, "failed={}", s.machines - s.served).unwrap();
    for (stage, n, why) in &s.failed {
        writeln!(out, "failed_{}={n} ({why})", stage.key()).unwrap();
    }
    for (stage, l) in &s.stages {
        let errors = s
            .failed
            .iter()
            .find(|(st, _, _)| st == stage)
            .map_or(0, |f| f.1);
        writeln!(out, "stage_{}={}", stage.key(), latency_fields(*l, errors)).unwrap();
    }
    writeln!(out, "stage_total={}", latency_fields(s.total, 0)).unwrap();
    writeln!(out, "dhcp_retransmits={}", s.dhcp_retransmits).unwrap();
    writeln!(out, "tftp_retransmits={}", s.tftp_retransmits).unwrap();
    writeln!(out, "http_bytes={}", s.http_bytes).unwrap();
    out
}

/// A size: bytes, or with a K, M or G suffix (powers of 1024).
pub fn parse_size(text: &str) -> anyhow::Result<usize> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => anyhow::bail!("size {text:?}: the unit must be K, M or G"),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("size {text:?}: a whole number, then K, M or G"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| anyhow::anyhow!("size {text:?} is too large"))
}

/// `len` bytes that differ per file (`seed`) and compress poorly, fast to
/// make (xorshift), so a kernel or initrd of realistic size costs no disk reads.
pub fn pattern_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackboot_wire::dhcp::parse_request;
    use rackboot_wire::pxe;

    fn message(firmware: Firmware, request: Option<(Ipv4Addr, Ipv4Addr)>) -> ClientMessage {
        ClientMessage {
            mac: machine_mac(0x01_02_03),
            xid: 0xdead_beef,
            firmware,
            uuid: machine_uuid_option(7),
            request,
            secs: 3,
        }
    }

    #[test]
    fn client_messages_parse_as_the_server_sees_them() {
        let cases = [
            (Firmware::PxeRom, None, false),
            (Firmware::Ipxe, None, true),
            (
                Firmware::PxeRom,
                Some(("10.80.1.5".parse().unwrap(), "10.80.0.1".parse().unwrap())),
                false,
            ),
            (
                Firmware::Ipxe,
                Some(("10.80.1.5".parse().unwrap(), "10.80.0.1".parse().unwrap())),
                true,
            ),
        ];
        for (firmware, request, ipxe) in cases {
            let bytes = encode_client_message(&message(firmware, request));
            let req = parse_request(&bytes).unwrap();
            assert_eq!(req.xid(), 0xdead_beef);
            assert!(req.broadcast_flag());
            assert_eq!(req.mac.to_string(), "02:5b:00:01:02:03");
            let kind = req.msg.opts().msg_type().unwrap();
            let want = if request.is_some() {
                MessageType::Request
            } else {
                MessageType::Discover
            };
            assert_eq!(kind, want, "{firmware:?} {request:?}");
            let client = pxe::classify(&req.msg).expect("a PXE client");
            assert_eq!(client.ipxe, ipxe, "{firmware:?}");
            assert_eq!(client.arch, rackboot_core::Arch::Bios);
            assert_eq!(client.undi, Some((2, 1)));
            if let Some((ip, server)) = request {
                assert!(matches!(
                    req.msg.opts().get(OptionCode::RequestedIpAddress),
                    Some(DhcpOption::RequestedIpAddress(x)) if *x == ip
                ));
                assert!(matches!(
                    req.msg.opts().get(OptionCode::ServerIdentifier),
                    Some(DhcpOption::ServerIdentifier(x)) if *x == server
                ));
            }
        }
    }

    fn reply(file_field: &str, option67: Option<&str>, option66: Option<&str>) -> Vec<u8> {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            "10.80.1.9".parse().unwrap(),
            "10.80.0.1".parse().unwrap(),
            Ipv4Addr::UNSPECIFIED,
            &machine_mac(5),
        );
        m.set_opcode(dhcproto::v4::Opcode::BootReply).set_xid(42);
        m.set_fname_str(file_field);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Offer));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier("10.80.0.1".parse().unwrap()));
        m.opts_mut()
            .insert(DhcpOption::SubnetMask("255.255.0.0".parse().unwrap()));
        if let Some(f) = option67 {
            m.opts_mut()
                .insert(DhcpOption::BootfileName(f.as_bytes().to_vec()));
        }
        if let Some(s) = option66 {
            m.opts_mut()
                .insert(DhcpOption::TFTPServerName(s.as_bytes().to_vec()));
        }
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    #[test]
    fn replies_give_address_file_and_next_server() {
        // (file field, option 67, option 66) -> (boot file, next server)
        let table = [
            (
                "undionly.kpxe",
                None,
                None,
                Some("undionly.kpxe"),
                "10.80.0.1",
            ),
            (
                "",
                Some("http://10.80.0.1:8080/boot/ipxe/02-5b-00-00-00-05"),
                None,
                Some("http://10.80.0.1:8080/boot/ipxe/02-5b-00-00-00-05"),
                "10.80.0.1",
            ),
            (
                "old",
                Some("new"),
                Some("10.80.0.7"),
                Some("new"),
                "10.80.0.7",
            ),
            ("", None, None, None, "10.80.0.1"),
        ];
        for (field, o67, o66, want_file, want_next) in table {
            let r = parse_server_reply(&reply(field, o67, o66)).unwrap();
            assert_eq!(r.xid, 42);
            assert_eq!(r.mac, machine_mac(5));
            assert_eq!(r.kind, MessageType::Offer);
            assert_eq!(r.yiaddr, "10.80.1.9".parse::<Ipv4Addr>().unwrap());
            assert_eq!(r.server_id, Some("10.80.0.1".parse().unwrap()));
            assert_eq!(r.boot_file.as_deref(), want_file, "{field:?} {o67:?}");
            assert_eq!(r.next_server.to_string(), want_next);
            assert_eq!(r.prefix_len, Some(16));
        }
        // A request (BOOTREQUEST) is not a reply.
        let req = encode_client_message(&message(Firmware::PxeRom, None));
        assert!(parse_server_reply(&req).is_none());
        assert!(parse_server_reply(b"junk").is_none());
    }

    #[test]
    fn broadcast_frame_is_valid_ipv4_udp() {
        let payload = encode_client_message(&message(Firmware::PxeRom, None));
        let f = dhcp_broadcast_frame(machine_mac(9), &payload);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &machine_mac(9));
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = &f[14..34];
        // A header with its checksum in place sums to zero.
        assert_eq!(ip_checksum(ip), 0);
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            f.len() - 14
        );
        assert_eq!(&ip[12..16], &[0, 0, 0, 0]);
        assert_eq!(&ip[16..20], &[255, 255, 255, 255]);
        let udp = &f[34..42];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 68);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 67);
        assert_eq!(
            usize::from(u16::from_be_bytes([udp[4], udp[5]])),
            payload.len() + 8
        );
        assert_eq!(&f[42..], &payload[..]);
        // RFC 1071's example: 0001 f203 f4f5 f6f7 sums to ddf2, checksum 220d.
        assert_eq!(
            ip_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn netlink_request_and_acks() {
        let m = netlink_new_address(7, 3, "10.80.1.2".parse().unwrap(), 16);
        assert_eq!(m.len(), 40);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 20);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[2, 16, 0, 0]);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 3);
        assert_eq!(&m[28..32], &[10, 80, 1, 2]);
        assert_eq!(&m[36..40], &[10, 80, 1, 2]);

        let ack = |kind: u16, seq: u32, errno: i32| {
            let mut a = vec![0u8; 36];
            a[0..4].copy_from_slice(&36u32.to_ne_bytes());
            a[4..6].copy_from_slice(&kind.to_ne_bytes());
            a[8..12].copy_from_slice(&seq.to_ne_bytes());
            a[16..20].copy_from_slice(&(-errno).to_ne_bytes());
            a
        };
        assert_eq!(netlink_ack(&ack(2, 7, 0), 7), Ok(()));
        assert_eq!(netlink_ack(&ack(2, 7, 17), 7), Ok(()), "EEXIST");
        assert_eq!(netlink_ack(&ack(2, 7, 1), 7), Err(1), "EPERM");
        assert_eq!(netlink_ack(&ack(2, 8, 0), 7), Err(-1), "another request");
        assert_eq!(
            netlink_ack(&ack(3, 7, 0), 7),
            Err(-1),
            "not an error message"
        );
        assert_eq!(netlink_ack(&[0; 8], 7), Err(-1));
    }

    #[test]
    fn boot_files_of_scripts() {
        let script = "#!ipxe\necho booting\nkernel http://s/assets/storm/vmlinuz initrd=initrd0 console=ttyS0\n\
                      initrd --name initrd0 http://s/assets/storm/initrd\nboot\n";
        assert_eq!(
            boot_files_in_ipxe_script(script),
            Some((
                "http://s/assets/storm/vmlinuz".to_string(),
                vec!["http://s/assets/storm/initrd".to_string()]
            ))
        );
        let two = "kernel --name k http://a/k\ninitrd http://a/i1\ninitrd -n x http://a/i2\n";
        assert_eq!(
            boot_files_in_ipxe_script(two),
            Some((
                "http://a/k".to_string(),
                vec!["http://a/i1".to_string(), "http://a/i2".to_string()]
            ))
        );
        assert_eq!(boot_files_in_ipxe_script("#!ipxe\nexit\n"), None);
    }

    #[test]
    fn summary_counts_served_failed_and_stages() {
        let ok = |t: u64| MachineRun {
            stages: Stage::ALL.iter().map(|s| (*s, 1000)).collect(),
            total_micros: Some(t),
            http_bytes: 10,
            dhcp_retransmits: 1,
            ..MachineRun::default()
        };
        let failed = MachineRun {
            stages: vec![(Stage::DhcpRom, 2000)],
            failure: Some((Stage::Tftp, "timed out".into())),
            tftp_retransmits: 5,
            ..MachineRun::default()
        };
        let s = summarize(&[ok(5000), ok(7000), failed.clone(), failed]);
        assert_eq!((s.machines, s.served), (4, 2));
        assert_eq!(s.failed, vec![(Stage::Tftp, 2, "timed out".to_string())]);
        assert_eq!(s.dhcp_retransmits, 2);
        assert_eq!(s.tftp_retransmits, 10);
        assert_eq!(s.http_bytes, 20);
        let dhcp = s.stages[0].1.unwrap();
        assert_eq!((dhcp.count, dhcp.max_ms), (4, 2.0));
        let tftp = s.stages[1].1.unwrap();
        assert_eq!((tftp.count, tftp.errors), (2, 2));
        assert_eq!(s.total.unwrap().p50_ms, 5.0);
        let lines = summary_lines(&s);
        assert!(lines.contains("served=2\n"), "{lines}");
        assert!(lines.contains("failed=2\n"), "{lines}");
        assert!(
            lines.contains("failed_tftp_loader=2 (timed out)\n"),
            "{lines}"
        );
        assert!(
            lines.contains("stage_dhcp_rom=4 0 1.0 2.0 2.0\n"),
            "{lines}"
        );
        assert!(lines.contains("stage_total=2 0 5.0 7.0 7.0\n"), "{lines}");
    }

    #[test]
    fn sizes() {
        let table = [
            ("300", Some(300)),
            ("8M", Some(8 << 20)),
            ("50m", Some(50 << 20)),
            ("64K", Some(65536)),
            ("1G", Some(1 << 30)),
            ("", None),
            ("M", None),
            ("8X", None),
            ("-1", None),
            ("1.5M", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_size(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn patterns_differ_by_seed_and_have_the_length() {
        let a = pattern_bytes(1001, 1);
        assert_eq!(a.len(), 1001);
        assert_ne!(a, pattern_bytes(1001, 2));
        assert_eq!(a, pattern_bytes(1001, 1));
    }
}
