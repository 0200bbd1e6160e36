//! Async RMCP+ client over a connected tokio UDP socket.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use metrics::counter;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::commands::{
    self, BOOT_PARAM_BOOT_FLAGS, BOOT_PARAM_BOOT_INFO_ACK, BOOT_PARAM_SET_IN_PROGRESS, BootDevice,
    BootFlags, BootOptionResponse, ChannelAuthCapabilities, ChassisControl, ChassisStatus, Command,
    DeviceId,
};
use crate::crypto::{CipherSuite, derive_session_keys};
use crate::error::{AuthFailure, CompletionCode, DecodeError, IpmiError, RakpStatus};
use crate::msg::{IpmiRequest, IpmiResponse};
use crate::rakp::{
    OpenSessionRequest, OpenSessionResponse, Privilege, ROLE_NAME_ONLY_LOOKUP, Rakp1, Rakp2, Rakp3,
    Rakp4, RakpContext,
};
use crate::rmcp::{RmcpClass, RmcpHeader};
use crate::session::{
    PayloadType, SessionSecurity, decode_v2, decode_v15, encode_v2, encode_v15_unauthenticated,
    is_rmcp_plus,
};

/// Which cipher suite to negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CipherSuiteChoice {
    /// Try 17 (SHA256) first, fall back to 3 (SHA1) when the BMC refuses 17.
    #[default]
    Auto,
    Suite3,
    Suite17,
}

/// Connection options. `IpmiOptions::default()` gives Auto suite, Administrator,
/// 1 s per attempt and 3 retries (so an unreachable BMC fails after about 4 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiOptions {
    pub cipher_suite: CipherSuiteChoice,
    pub privilege: Privilege,
    /// How long to wait for each answer before retransmitting.
    pub timeout: Duration,
    /// Retransmissions after the first attempt.
    pub retries: u32,
    /// The BMC key Kg ("two-key login"); `None` means Kg = the user password.
    pub bmc_key: Option<Vec<u8>>,
}

impl Default for IpmiOptions {
    fn default() -> Self {
        IpmiOptions {
            cipher_suite: CipherSuiteChoice::Auto,
            privilege: Privilege::Administrator,
            timeout: Duration::from_secs(1),
            retries: 3,
            bmc_key: None,
        }
    }
}

/// Send an ASF Presence Ping (no session, no credentials) and wait for the pong: a cheap
/// "is there a BMC on this address" probe. Same retry/timeout rules as the client.
pub async fn presence_ping(
    target: SocketAddr,
    opts: &IpmiOptions,
) -> Result<crate::rmcp::PresencePong, IpmiError> {
    let socket = bind_connected(target).await?;
    let tag: u8 = rand::random::<u8>() & 0xfe; // 0xff means "no tag"
    let pkt = crate::rmcp::encode_presence_ping(tag);
    let mut ignored = 0;
    exchange(
        &socket,
        target,
        opts,
        "ASF Presence Ping",
        &mut ignored,
        || pkt.clone(),
        |buf| match crate::rmcp::decode_presence_pong(buf) {
            Ok(p) if p.tag == tag => Ok(p),
            Ok(_) => Err("stale message tag"),
            Err(_) => Err("not an ASF pong"),
        },
    )
    .await
}

async fn bind_connected(target: SocketAddr) -> Result<UdpSocket, IpmiError> {
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let io = |source| IpmiError::Io { target, source };
    let socket = UdpSocket::bind(bind).await.map_err(io)?;
    socket.connect(target).await.map_err(io)?;
    Ok(socket)
}

/// An authenticated, encrypted RMCP+ session with one BMC.
///
/// Methods take `&mut self`: one request is outstanding at a time, as IPMI expects.
/// Share a client between tasks with a `tokio::sync::Mutex`. When a call fails with a
/// transient error ([`IpmiError::is_transient`]) the session may be gone on the BMC side
/// (BMCs drop idle sessions after ~60 s): drop the client and connect again.
pub struct IpmiClient {
    target: SocketAddr,
    socket: UdpSocket,
    opts: IpmiOptions,
    suite: CipherSuite,
    console_session_id: u32,
    bmc_session_id: u32,
    security: SessionSecurity,
    next_session_seq: u32,
    next_rq_seq: u8,
    /// Highest session sequence number accepted from the BMC: older ones are replays.
    last_inbound_seq: u32,
    ignored_packets: u64,
    closed: bool,
}

impl std::fmt::Debug for IpmiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiClient")
            .field("target", &self.target)
            .field("suite", &self.suite)
            .field(
                "bmc_session_id",
                &format_args!("0x{:08x}", self.bmc_session_id),
            )
            .field("closed", &self.closed)
            .finish()
    }
}

/// State shared by the pre-session handshake steps.
struct Handshake<'a> {
    target: SocketAddr,
    socket: &'a UdpSocket,
    opts: &'a IpmiOptions,
    username: &'a str,
    password: &'a str,
    ignored: u64,
    rq_seq: u8,
    tag: u8,
}

impl IpmiClient {
    /// Open an RMCP+ session: Get Channel Authentication Capabilities, Open Session,
    /// RAKP 1-4, then Set Session Privilege Level to `opts.privilege`.
    pub async fn connect(
        target: SocketAddr,
        username: &str,
        password: &str,
        opts: IpmiOptions,
    ) -> Result<IpmiClient, IpmiError> {
        if username.len() > 16 {
            return Err(IpmiError::InvalidArgument(format!(
                "IPMI user name is {} bytes, at most 16",
                username.len()
            )));
        }
        if password.len() > 20 {
            return Err(IpmiError::InvalidArgument(format!(
                "IPMI v2.0 password is {} bytes, at most 20",
                password.len()
            )));
        }
        if let Some(kg) = &opts.bmc_key
            && kg.len() > 20
        {
            return Err(IpmiError::InvalidArgument(format!(
                "IPMI BMC key (Kg) is {} bytes, at most 20",
                kg.len()
            )));
        }
        let socket = bind_connected(target).await?;
        let mut hs = Handshake {
            target,
            socket: &socket,
            opts: &opts,
            username,
            password,
            ignored: 0,
            rq_seq: rand::random::<u8>() & 0x3f,
            tag: rand::random(),
        };
        let caps = hs.channel_auth_caps().await?;
        if !caps.supports_ipmi_v2() {
            return Err(IpmiError::Unsupported {
                target,
                what: "IPMI v2.0 / RMCP+ (channel authentication capabilities say v1.5 only)"
                    .into(),
            });
        }
        let suites: &[CipherSuite] = match opts.cipher_suite {
            CipherSuiteChoice::Auto => &[CipherSuite::Suite17, CipherSuite::Suite3],
            CipherSuiteChoice::Suite3 => &[CipherSuite::Suite3],
            CipherSuiteChoice::Suite17 => &[CipherSuite::Suite17],
        };
        let mut last_err = None;
        let mut established = None;
        for (i, suite) in suites.iter().enumerate() {
            match hs.open_session(*suite).await {
                Ok(s) => {
                    established = Some((*suite, s));
                    break;
                }
                Err(e @ IpmiError::Unsupported { .. }) if i + 1 < suites.len() => {
                    tracing::debug!(%target, suite = suite.id(), error = %e, "cipher suite refused, falling back");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let Some((suite, (console_session_id, bmc_session_id, security))) = established else {
            return Err(last_err.expect("at least one suite was tried"));
        };
        let rq_seq = hs.rq_seq;
        let ignored = hs.ignored;
        let mut client = IpmiClient {
            target,
            socket,
            opts,
            suite,
            console_session_id,
            bmc_session_id,
            security,
            next_session_seq: 1,
            next_rq_seq: rq_seq,
            last_inbound_seq: 0,
            ignored_packets: ignored,
            closed: false,
        };
        let privilege = client.opts.privilege;
        match client
            .command(
                commands::SET_SESSION_PRIVILEGE_LEVEL,
                &commands::set_session_privilege_request(privilege),
            )
            .await
        {
            Ok(data) => {
                commands::decode_set_session_privilege(&data).map_err(|source| {
                    IpmiError::Protocol {
                        target,
                        what: "Set Session Privilege Level",
                        source,
                    }
                })?;
            }
            Err(IpmiError::Completion { code, .. }) => {
                return Err(IpmiError::AuthFailed {
                    target,
                    user: username.to_string(),
                    reason: AuthFailure::PrivilegeRefused(code),
                });
            }
            Err(e) => return Err(e),
        }
        counter!("rackboot_ipmi_sessions_opened_total", "suite" => suite.id().to_string())
            .increment(1);
        Ok(client)
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The cipher suite the session runs with.
    pub fn cipher_suite(&self) -> CipherSuite {
        self.suite
    }

    /// Datagrams received and ignored so far (stale retransmission answers, foreign
    /// sessions, bad integrity, garbage).
    pub fn ignored_packets(&self) -> u64 {
        self.ignored_packets
    }

    pub async fn get_device_id(&mut self) -> Result<DeviceId, IpmiError> {
        let data = self.command(commands::GET_DEVICE_ID, &[]).await?;
        self.decode_with(commands::GET_DEVICE_ID, DeviceId::decode(&data))
    }

    pub async fn chassis_status(&mut self) -> Result<ChassisStatus, IpmiError> {
        let data = self.command(commands::GET_CHASSIS_STATUS, &[]).await?;
        self.decode_with(commands::GET_CHASSIS_STATUS, ChassisStatus::decode(&data))
    }

    pub async fn chassis_control(&mut self, action: ChassisControl) -> Result<(), IpmiError> {
        self.command(commands::CHASSIS_CONTROL, &[action.code()])
            .await
            .map(|_| ())
    }

    /// Force the next boot (or, with `persistent`, every boot) from `device`, in EFI or
    /// legacy mode. Follows ipmitool's sequence: set-in-progress, boot info acknowledge,
    /// boot flags, set-complete. Refusals of the bracketing steps are tolerated (many
    /// BMCs, ipmi_sim included, don't implement them); the boot flags write is not.
    pub async fn set_boot_device(
        &mut self,
        device: BootDevice,
        persistent: bool,
        efi: bool,
    ) -> Result<(), IpmiError> {
        let in_progress = self
            .optional_boot_param(BOOT_PARAM_SET_IN_PROGRESS, &[0x01])
            .await?;
        self.optional_boot_param(BOOT_PARAM_BOOT_INFO_ACK, &[0x01, 0x01])
            .await?;
        let flags = BootFlags::encode(device, persistent, efi);
        self.command(
            commands::SET_SYSTEM_BOOT_OPTIONS,
            &commands::set_boot_option_request(BOOT_PARAM_BOOT_FLAGS, &flags),
        )
        .await?;
        if in_progress {
            self.optional_boot_param(BOOT_PARAM_SET_IN_PROGRESS, &[0x00])
                .await?;
        }
        Ok(())
    }

    /// Read boot option parameter 5 (boot flags).
    pub async fn get_boot_device(&mut self) -> Result<BootFlags, IpmiError> {
        let data = self
            .command(
                commands::GET_SYSTEM_BOOT_OPTIONS,
                &commands::get_boot_option_request(BOOT_PARAM_BOOT_FLAGS),
            )
            .await?;
        let cmd = commands::GET_SYSTEM_BOOT_OPTIONS;
        let resp = self.decode_with(cmd, BootOptionResponse::decode(&data))?;
        if resp.param != BOOT_PARAM_BOOT_FLAGS {
            return Err(IpmiError::Protocol {
                target: self.target,
                what: cmd.name,
                source: DecodeError::invalid(
                    "Get System Boot Options response",
                    format!("parameter {} instead of 5", resp.param),
                ),
            });
        }
        self.decode_with(cmd, BootFlags::decode(&resp.data))
    }

    /// Close the session on the BMC. Later calls return [`IpmiError::Closed`].
    ///
    /// No answer at all is not an error: when the BMC's reply is lost, it ignores our
    /// retransmissions because the session they name no longer exists.
    pub async fn close(&mut self) -> Result<(), IpmiError> {
        if self.closed {
            return Ok(());
        }
        let r = self
            .command(
                commands::CLOSE_SESSION,
                &commands::close_session_request(self.bmc_session_id),
            )
            .await;
        self.closed = true;
        match r {
            Ok(_) => Ok(()),
            Err(e @ IpmiError::Unreachable { .. }) => {
                tracing::debug!(target = %self.target, error = %e, "Close Session unanswered");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Send any command in the session; returns the response data after a zero
    /// completion code. Completion code 0xc1 (invalid command) maps to
    /// [`IpmiError::Unsupported`], other non-zero codes to [`IpmiError::Completion`].
    pub async fn raw(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Result<Vec<u8>, IpmiError> {
        self.command(
            Command {
                netfn,
                cmd,
                name: "raw command",
            },
            data,
        )
        .await
    }

    async fn optional_boot_param(&mut self, param: u8, data: &[u8]) -> Result<bool, IpmiError> {
        match self
            .command(
                commands::SET_SYSTEM_BOOT_OPTIONS,
                &commands::set_boot_option_request(param, data),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e @ (IpmiError::Completion { .. } | IpmiError::Unsupported { .. })) => {
                tracing::debug!(target = %self.target, param, error = %e, "optional boot parameter refused");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn decode_with<T>(&self, cmd: Command, r: Result<T, DecodeError>) -> Result<T, IpmiError> {
        r.map_err(|source| IpmiError::Protocol {
            target: self.target,
            what: cmd.name,
            source,
        })
    }

    async fn command(&mut self, cmd: Command, data: &[u8]) -> Result<Vec<u8>, IpmiError> {
        if self.closed {
            return Err(IpmiError::Closed {
                target: self.target,
            });
        }
        let req = IpmiRequest {
            netfn: cmd.netfn,
            cmd: cmd.cmd,
            rq_seq: self.next_rq_seq,
            data: data.to_vec(),
        };
        self.next_rq_seq = (self.next_rq_seq + 1) & 0x3f;
        let message = req.encode();
        let target = self.target;
        let (security, bmc_sid, console_sid) =
            (&self.security, self.bmc_session_id, self.console_session_id);
        let next_seq = &mut self.next_session_seq;
        let last_inbound_seq = &mut self.last_inbound_seq;
        let ignored = &mut self.ignored_packets;
        let authcode_len = security.integrity.authcode_len();
        let resp = exchange(
            &self.socket,
            target,
            &self.opts,
            cmd.name,
            ignored,
            // Every transmission, retransmissions included, takes a new session sequence
            // number (the BMC rejects replays); the rqSeq stays the same so a late answer
            // to an earlier transmission still matches.
            || {
                let seq = *next_seq;
                *next_seq = next_seq.wrapping_add(1).max(1);
                encode_v2(
                    PayloadType::Ipmi,
                    bmc_sid,
                    seq,
                    &message,
                    Some((security, rand::random())),
                )
            },
            |pkt| {
                if !is_rmcp_plus(pkt) {
                    return Err("not RMCP+");
                }
                let p = decode_v2(pkt, authcode_len).map_err(|_| "undecodable")?;
                if p.header.payload_type != PayloadType::Ipmi {
                    return Err("unexpected payload type");
                }
                if p.header.session_id != console_sid {
                    return Err("foreign session");
                }
                p.verify(security).map_err(|_| "bad integrity")?;
                // Checked after the authcode so a forged packet cannot move the window.
                if p.header.session_seq != 0 && p.header.session_seq <= *last_inbound_seq {
                    return Err("replayed session sequence");
                }
                let clear = p
                    .open_payload(Some(security))
                    .map_err(|_| "undecryptable")?;
                let resp = IpmiResponse::decode(&clear).map_err(|_| "bad IPMI message")?;
                *last_inbound_seq = (*last_inbound_seq).max(p.header.session_seq);
                if !resp.answers(&req) {
                    return Err("stale or unmatched rqSeq");
                }
                Ok(resp)
            },
        )
        .await?;
        completion_to_result(target, cmd, resp)
    }
}

impl Drop for IpmiClient {
    /// Best effort: send Close Session without waiting, so the BMC frees the slot now
    /// rather than after its idle timeout.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let req = IpmiRequest {
            netfn: commands::CLOSE_SESSION.netfn,
            cmd: commands::CLOSE_SESSION.cmd,
            rq_seq: self.next_rq_seq,
            data: commands::close_session_request(self.bmc_session_id),
        };
        let pkt = encode_v2(
            PayloadType::Ipmi,
            self.bmc_session_id,
            self.next_session_seq,
            &req.encode(),
            Some((&self.security, rand::random())),
        );
        let _ = self.socket.try_send(&pkt);
    }
}

fn completion_to_result(
    target: SocketAddr,
    cmd: Command,
    resp: IpmiResponse,
) -> Result<Vec<u8>, IpmiError> {
    match resp.completion {
        CompletionCode::OK => Ok(resp.data),
        CompletionCode::INVALID_COMMAND => Err(IpmiError::Unsupported {
            target,
            what: format!(
                "{} (netFn 0x{:02x} cmd 0x{:02x}): completion code {}",
                cmd.name, cmd.netfn, cmd.cmd, resp.completion
            ),
        }),
        code => Err(IpmiError::Completion {
            target,
            command: cmd.name,
            code,
        }),
    }
}

/// Send `build()` up to `retries + 1` times, waiting `timeout` after each for a datagram
/// that `accept` takes (`Ok`). Datagrams `accept` rejects are counted and ignored.
async fn exchange<T>(
    socket: &UdpSocket,
    target: SocketAddr,
    opts: &IpmiOptions,
    what: &'static str,
    ignored: &mut u64,
    mut build: impl FnMut() -> Vec<u8>,
    mut accept: impl FnMut(&[u8]) -> Result<T, &'static str>,
) -> Result<T, IpmiError> {
    let attempts = opts.retries.saturating_add(1);
    let mut buf = vec![0u8; 2048];
    let mut last_io_error = None;
    for attempt in 0..attempts {
        let pkt = build();
        let deadline = Instant::now() + opts.timeout;
        if attempt > 0 {
            counter!("rackboot_ipmi_retransmits_total").increment(1);
        }
        if let Err(e) = socket.send(&pkt).await {
            if !is_soft_io_error(&e) {
                return Err(IpmiError::Io { target, source: e });
            }
            last_io_error = Some(e.to_string());
            tokio::time::sleep_until(deadline).await;
            continue;
        }
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_elapsed) => break,
                Ok(Err(e)) => {
                    if !is_soft_io_error(&e) {
                        return Err(IpmiError::Io { target, source: e });
                    }
                    // ICMP port unreachable surfaces as ConnectionRefused on a connected
                    // socket: the BMC may be rebooting, so wait out the attempt.
                    last_io_error = Some(e.to_string());
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
                Ok(Ok(n)) => match accept(&buf[..n]) {
                    Ok(v) => return Ok(v),
                    Err(reason) => {
                        *ignored += 1;
                        counter!("rackboot_ipmi_ignored_packets_total", "reason" => reason)
                            .increment(1);
                        tracing::debug!(%target, what, reason, len = n, "ignored datagram");
                    }
                },
            }
        }
    }
    counter!("rackboot_ipmi_timeouts_total").increment(1);
    Err(IpmiError::Unreachable {
        target,
        what,
        attempts,
        timeout: opts.timeout,
        last_io_error,
    })
}

fn is_soft_io_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable | Interrupted
    ) || e.raw_os_error() == Some(113) // EHOSTUNREACH
}

/// Errors for a failed RAKP/Open Session status.
fn status_error(
    target: SocketAddr,
    user: &str,
    stage: &'static str,
    suite: CipherSuite,
    status: RakpStatus,
) -> IpmiError {
    if status.is_algorithm_refusal() {
        IpmiError::Unsupported {
            target,
            what: format!("cipher suite {} ({stage}: {status})", suite.id()),
        }
    } else if status.is_auth_refusal() {
        IpmiError::AuthFailed {
            target,
            user: user.to_string(),
            reason: AuthFailure::Refused(status),
        }
    } else {
        IpmiError::SessionRefused {
            target,
            stage,
            status,
        }
    }
}

impl Handshake<'_> {
    fn next_tag(&mut self) -> u8 {
        self.tag = self.tag.wrapping_add(1);
        self.tag
    }

    async fn channel_auth_caps(&mut self) -> Result<ChannelAuthCapabilities, IpmiError> {
        let cmd = commands::GET_CHANNEL_AUTH_CAPABILITIES;
        let req = IpmiRequest {
            netfn: cmd.netfn,
            cmd: cmd.cmd,
            rq_seq: self.rq_seq,
            data: commands::get_channel_auth_caps_request(self.opts.privilege),
        };
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        let pkt = encode_v15_unauthenticated(&req.encode());
        let resp = exchange(
            self.socket,
            self.target,
            self.opts,
            cmd.name,
            &mut self.ignored,
            || pkt.clone(),
            |buf| {
                let (rmcp, rest) = RmcpHeader::decode(buf).map_err(|_| "bad RMCP header")?;
                if rmcp.class != RmcpClass::Ipmi || is_rmcp_plus(buf) {
                    return Err("not an IPMI v1.5 packet");
                }
                let s = decode_v15(rest).map_err(|_| "bad v1.5 session")?;
                let resp = IpmiResponse::decode(s.message).map_err(|_| "bad IPMI message")?;
                if !resp.answers(&req) {
                    return Err("stale or unmatched rqSeq");
                }
                Ok(resp)
            },
        )
        .await?;
        let data = completion_to_result(self.target, cmd, resp)?;
        ChannelAuthCapabilities::decode(&data).map_err(|source| IpmiError::Protocol {
            target: self.target,
            what: cmd.name,
            source,
        })
    }

    /// Open Session + RAKP 1-4. Returns (console session id, BMC session id, security).
    async fn open_session(
        &mut self,
        suite: CipherSuite,
    ) -> Result<(u32, u32, SessionSecurity), IpmiError> {
        let target = self.target;
        let user = self.username;
        let protocol = |what, source| IpmiError::Protocol {
            target,
            what,
            source,
        };
        let console_session_id = rand::random::<u32>().max(1);
        let auth = suite.auth();

        // Open Session.
        let tag = self.next_tag();
        let req = OpenSessionRequest::for_suite(
            tag,
            self.opts.privilege.level(),
            console_session_id,
            suite,
        );
        let pkt = encode_v2(PayloadType::OpenSessionRequest, 0, 0, &req.encode(), None);
        let resp = exchange(
            self.socket,
            target,
            self.opts,
            "RMCP+ Open Session",
            &mut self.ignored,
            || pkt.clone(),
            |buf| {
                let p = decode_v2(buf, 0).map_err(|_| "undecodable")?;
                if p.header.payload_type != PayloadType::OpenSessionResponse {
                    return Err("unexpected payload type");
                }
                let r = OpenSessionResponse::decode(p.payload).map_err(|_| "bad open session")?;
                if r.tag != tag {
                    return Err("stale message tag");
                }
                if r.status == RakpStatus::OK && r.console_session_id != console_session_id {
                    return Err("foreign session");
                }
                Ok(r)
            },
        )
        .await?;
        if resp.status != RakpStatus::OK {
            return Err(status_error(
                target,
                user,
                "Open Session",
                suite,
                resp.status,
            ));
        }
        let accepted = resp.accepted.expect("status OK carries algorithms");
        if !accepted.matches(suite) {
            return Err(IpmiError::Unsupported {
                target,
                what: format!(
                    "cipher suite {} (BMC answered with algorithms {}/{}/{})",
                    suite.id(),
                    accepted.auth,
                    accepted.integrity,
                    accepted.confidentiality
                ),
            });
        }
        let bmc_session_id = accepted.bmc_session_id;

        // RAKP 1 / 2.
        let tag = self.next_tag();
        let console_random: [u8; 16] = rand::random();
        let role = self.opts.privilege.level() | ROLE_NAME_ONLY_LOOKUP;
        let rakp1 = Rakp1 {
            tag,
            bmc_session_id,
            console_random,
            role,
            username: user.as_bytes().to_vec(),
        };
        let pkt = encode_v2(PayloadType::Rakp1, 0, 0, &rakp1.encode(), None);
        let rakp2 = exchange(
            self.socket,
            target,
            self.opts,
            "RAKP 1",
            &mut self.ignored,
            || pkt.clone(),
            |buf| {
                let p = decode_v2(buf, 0).map_err(|_| "undecodable")?;
                if p.header.payload_type != PayloadType::Rakp2 {
                    return Err("unexpected payload type");
                }
                let r = Rakp2::decode(p.payload).map_err(|_| "bad RAKP 2")?;
                if r.tag != tag {
                    return Err("stale message tag");
                }
                if r.status == RakpStatus::OK && r.console_session_id != console_session_id {
                    return Err("foreign session");
                }
                Ok(r)
            },
        )
        .await?;
        let Some(body) = rakp2.body else {
            return Err(status_error(target, user, "RAKP 2", suite, rakp2.status));
        };
        let ctx = RakpContext {
            auth,
            console_session_id,
            bmc_session_id,
            console_random,
            bmc_random: body.bmc_random,
            bmc_guid: body.bmc_guid,
            role,
            username: user.as_bytes().to_vec(),
        };
        let kuid = self.password.as_bytes();
        if body.authcode.len() != auth.mac_len() {
            return Err(protocol(
                "RAKP 2",
                DecodeError::invalid(
                    "RAKP 2",
                    format!(
                        "key exchange authcode is {} bytes, expected {}",
                        body.authcode.len(),
                        auth.mac_len()
                    ),
                ),
            ));
        }
        if !crate::crypto::ct_eq(&ctx.rakp2_authcode(kuid), &body.authcode) {
            // Tell the BMC to drop the half-open session, as ipmitool does.
            let tag = self.next_tag();
            let nack = Rakp3 {
                tag,
                status: RakpStatus::INVALID_INTEGRITY_CHECK,
                bmc_session_id,
                authcode: Vec::new(),
            };
            let _ = self
                .socket
                .send(&encode_v2(PayloadType::Rakp3, 0, 0, &nack.encode(), None))
                .await;
            return Err(IpmiError::AuthFailed {
                target,
                user: user.to_string(),
                reason: AuthFailure::Rakp2AuthcodeMismatch,
            });
        }
        let kg = self.opts.bmc_key.as_deref().unwrap_or(kuid);
        let keys = derive_session_keys(
            auth,
            kg,
            &console_random,
            &body.bmc_random,
            role,
            user.as_bytes(),
        );

        // RAKP 3 / 4.
        let tag = self.next_tag();
        let rakp3 = Rakp3 {
            tag,
            status: RakpStatus::OK,
            bmc_session_id,
            authcode: ctx.rakp3_authcode(kuid),
        };
        let pkt = encode_v2(PayloadType::Rakp3, 0, 0, &rakp3.encode(), None);
        let rakp4 = exchange(
            self.socket,
            target,
            self.opts,
            "RAKP 3",
            &mut self.ignored,
            || pkt.clone(),
            |buf| {
                let p = decode_v2(buf, 0).map_err(|_| "undecodable")?;
                if p.header.payload_type != PayloadType::Rakp4 {
                    return Err("unexpected payload type");
                }
                let r = Rakp4::decode(p.payload).map_err(|_| "bad RAKP 4")?;
                if r.tag != tag {
                    return Err("stale message tag");
                }
                if r.status == RakpStatus::OK && r.console_session_id != console_session_id {
                    return Err("foreign session");
                }
                Ok(r)
            },
        )
        .await?;
        if rakp4.status != RakpStatus::OK {
            return Err(status_error(target, user, "RAKP 4", suite, rakp4.status));
        }
        if !crate::crypto::ct_eq(&ctx.rakp4_icv(&keys.sik), &rakp4.icv) {
            return Err(IpmiError::AuthFailed {
                target,
                user: user.to_string(),
                reason: AuthFailure::Rakp4IcvMismatch,
            });
        }
        Ok((
            console_session_id,
            bmc_session_id,
            SessionSecurity {
                keys,
                integrity: suite.integrity(),
                confidentiality: suite.confidentiality(),
            },
        ))
    }
}
