//! Who may fetch a pending install's boot script and files, and call its
//! callbacks. Pure rules over the install's access record
//! (`rackboot_store::InstallAccess`), rackboot's DHCP lease of the machine
//! and the asking address; the boot HTTP handlers and TFTP apply them.
//!
//! - Every install file URL carries a per-install secret
//!   ([`files_secret`]) that is only in that machine's boot script.
//! - The script and the files go only to the machine's address: rackboot's
//!   DHCP lease of it, else the address that fetched first (bound then and
//!   recorded: ProxyDHCP, no DHCP), and only until its installer reports
//!   `started` or `boot.install_files_window_secs` after the first fetch.
//! - `started` and `installed` (and `done` while the install is pending: a
//!   template whose installer's last step completes it) are accepted only
//!   from that address. `done` of an installed install (the installed
//!   system's first boot, which may have a static address of its own) is
//!   accepted from that address or, once, from another, which is recorded:
//!   repeats come from one of those two. A token seen in use cannot move a
//!   machine to its disk from another address: only `installed`, or `done`
//!   of a pending install, do that.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rackboot_core::{InstallRequest, InstallState};
use rackboot_store::InstallAccess;

/// Hex digits of [`files_secret`]: 128 bits.
pub const FILES_SECRET_LEN: usize = 32;

/// The per-install secret in every install file URL
/// (`/install/<id>/<secret>/<file>`): derived one way from the install's
/// random callback token, so it needs no storage, is new with every install
/// request, and reveals nothing of the token (which is only in the files).
pub fn files_secret(install: &InstallRequest) -> String {
    let digest = rackboot_fleet::token_sha256(&format!(
        "rackboot install files\n{}\n{}",
        install.id, install.token
    ));
    digest[..FILES_SECRET_LEN].to_string()
}

/// Whether `given` is the install's files secret (constant time).
pub fn files_secret_matches(install: &InstallRequest, given: &str) -> bool {
    rackboot_core::secret::constant_time_eq(files_secret(install).as_bytes(), given.as_bytes())
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) is that IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why a request about an install was refused. Never carries the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessRefusal {
    #[error("install {install} is served to {allowed} only, not to {peer}")]
    WrongAddress {
        install: uuid::Uuid,
        allowed: IpAddr,
        peer: IpAddr,
    },
    #[error(
        "install {install}'s files closed at {at} when its installer reported started; request the install again to serve them again"
    )]
    Closed {
        install: uuid::Uuid,
        at: DateTime<Utc>,
    },
    #[error(
        "install {install}'s files were served for {window_secs} s after their first fetch at {first}; request the install again to serve them again"
    )]
    Expired {
        install: uuid::Uuid,
        first: DateTime<Utc>,
        window_secs: u64,
    },
    #[error(
        "{peer} asked for install {install}, but rackboot's DHCP serves that subnet and has leased its machine no address"
    )]
    NoLease { install: uuid::Uuid, peer: IpAddr },
    /// A file URL without the install's secret (guessed, or from before).
    #[error("install {install} has no such file")]
    BadSecret { install: uuid::Uuid },
    #[error("install {install} was never fetched, so no address may call it back")]
    NotBound { install: uuid::Uuid },
    #[error("cannot tell which address asked for install {install}")]
    NoPeer { install: uuid::Uuid },
}

impl AccessRefusal {
    /// 410 once the files are over; 403 for the wrong asker.
    pub fn status(&self) -> StatusCode {
        match self {
            AccessRefusal::Closed { .. } | AccessRefusal::Expired { .. } => StatusCode::GONE,
            AccessRefusal::BadSecret { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// The install asked about.
    pub fn install(&self) -> uuid::Uuid {
        match self {
            AccessRefusal::WrongAddress { install, .. }
            | AccessRefusal::Closed { install, .. }
            | AccessRefusal::Expired { install, .. }
            | AccessRefusal::NoLease { install, .. }
            | AccessRefusal::BadSecret { install }
            | AccessRefusal::NotBound { install }
            | AccessRefusal::NoPeer { install } => *install,
        }
    }

    /// A bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            AccessRefusal::WrongAddress { .. } => "wrong_address",
            AccessRefusal::Closed { .. } => "closed",
            AccessRefusal::Expired { .. } => "expired",
            AccessRefusal::NoLease { .. } => "no_lease",
            AccessRefusal::BadSecret { .. } => "bad_secret",
            AccessRefusal::NotBound { .. } => "not_bound",
            AccessRefusal::NoPeer { .. } => "no_peer",
        }
    }
}

/// What a fetch of an install's script or file may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Serve it.
    Serve,
    /// The first fetch: bind the install to this address (and record the
    /// time), then serve it.
    Bind(IpAddr),
}

/// A fetch of `install`'s boot script or one of its files by `peer`, given
/// the install's `record`, rackboot's `lease` of the machine (if any), and
/// whether rackboot's DHCP serves `peer`'s subnet. The first fetch binds:
/// the lease when there is one (and only from it); without one, the asker,
/// unless rackboot's DHCP serves its subnet (then the machine has simply
/// not been leased an address yet, and the asker is someone else). After
/// that the record's address is the only one served.
pub fn check_fetch(
    install: uuid::Uuid,
    record: Option<&InstallAccess>,
    lease: Option<IpAddr>,
    dhcp_serves_peer: bool,
    peer: IpAddr,
    now: DateTime<Utc>,
    window: Duration,
) -> Result<Fetch, AccessRefusal> {
    let peer = canonical_ip(peer);
    let Some(record) = record else {
        return match lease.map(canonical_ip) {
            Some(allowed) if allowed != peer => Err(AccessRefusal::WrongAddress {
                install,
                allowed,
                peer,
            }),
            Some(_) => Ok(Fetch::Bind(peer)),
            None if dhcp_serves_peer => Err(AccessRefusal::NoLease { install, peer }),
            None => Ok(Fetch::Bind(peer)),
        };
    };
    let allowed = record.bound_ip;
    if allowed != peer {
        return Err(AccessRefusal::WrongAddress {
            install,
            allowed,
            peer,
        });
    }
    if let Some(at) = record.closed_at {
        return Err(AccessRefusal::Closed { install, at });
    }
    let open_for = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    if now.signed_duration_since(record.first_fetch_at) > open_for {
        return Err(AccessRefusal::Expired {
            install,
            first: record.first_fetch_at,
            window_secs: window.as_secs(),
        });
    }
    Ok(Fetch::Serve)
}

/// The installer's callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callback {
    /// The installer read its file (closes the files).
    Started,
    /// The installer finished (the machine boots its disk from now on).
    Installed,
    /// The installed system's first boot (or a pending install's last step).
    Done,
}

impl Callback {
    pub fn as_str(&self) -> &'static str {
        match self {
            Callback::Started => "started",
            Callback::Installed => "installed",
            Callback::Done => "done",
        }
    }
}

/// What an accepted callback must also record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Plain,
    /// The installed system's first completion from an address other than
    /// the bound one: record it (repeats must come from it).
    RecordDoneAddress(IpAddr),
}

/// A callback of `kind` for `install` (in `state`) from `peer`: the
/// record's address (rackboot's lease of the machine when there is no
/// record here: another server bound it). The token is checked by the
/// caller first: this only says whether the address may use it.
pub fn check_callback(
    kind: Callback,
    install: uuid::Uuid,
    state: InstallState,
    lease: Option<IpAddr>,
    record: Option<&InstallAccess>,
    peer: IpAddr,
) -> Result<Accepted, AccessRefusal> {
    let peer = canonical_ip(peer);
    let allowed = record
        .map(|r| r.bound_ip)
        .or(lease.map(canonical_ip))
        .ok_or(AccessRefusal::NotBound { install })?;
    if peer == allowed {
        return Ok(Accepted::Plain);
    }
    let wrong = AccessRefusal::WrongAddress {
        install,
        allowed,
        peer,
    };
    // Only the installed system's report may come from elsewhere: it no
    // longer moves the machine (the installer's `installed` did).
    if kind != Callback::Done || state == InstallState::Pending {
        return Err(wrong);
    }
    match record.map(|r| r.done_ip) {
        Some(None) => Ok(Accepted::RecordDoneAddress(peer)),
        Some(Some(done)) if done == peer => Ok(Accepted::Plain),
        _ => Err(wrong),
    }
}

/// The address a machine's agent token for this boot is bound to, for a
/// boot script asked for by `peer`: rackboot's `lease` of the machine (and
/// only for a request from it); without one, the address its `current`
/// token for the same workflow is bound to (the first to fetch its script,
/// e.g. under ProxyDHCP), and only for a request from there; else `peer`,
/// unless rackboot's DHCP serves `peer`'s subnet (the machine has not been
/// leased an address yet, so the asker is another host). The error says
/// why no token is issued; the machine's current token stays valid.
pub fn agent_token_address(
    mac: rackboot_core::MacAddr,
    lease: Option<std::net::Ipv4Addr>,
    current: Option<IpAddr>,
    dhcp_serves_peer: bool,
    peer: IpAddr,
) -> Result<IpAddr, AgentTokenRefusal> {
    let peer = canonical_ip(peer);
    let refuse = |reason, message| Err(AgentTokenRefusal { reason, message });
    match (lease, current) {
        (Some(leased), _) if IpAddr::V4(leased) != peer => refuse(
            "wrong_address",
            format!(
                "{peer} asked for {mac}'s agent boot, but {mac} holds the lease {leased}: no agent token issued"
            ),
        ),
        (Some(leased), _) => Ok(IpAddr::V4(leased)),
        (None, Some(bound)) if bound != peer => refuse(
            "wrong_address",
            format!(
                "{peer} asked for {mac}'s agent boot, but this workflow's agent token is bound to {bound}, which fetched it first: no agent token issued"
            ),
        ),
        (None, Some(bound)) => Ok(bound),
        (None, None) if dhcp_serves_peer => refuse(
            "no_lease",
            format!(
                "{peer} asked for {mac}'s agent boot, but rackboot's DHCP serves that subnet and has leased {mac} no address: no agent token issued"
            ),
        ),
        (None, None) => Ok(peer),
    }
}

/// Why no agent token was issued: a bounded label (as
/// [`AccessRefusal::reason`]) and the sentence for logs and the timeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AgentTokenRefusal {
    pub reason: &'static str,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap()
    }

    const ID: uuid::Uuid = uuid::Uuid::from_u128(0x15);
    const WINDOW: Duration = Duration::from_secs(600);

    fn record(bound: &str, closed: Option<i64>, done: Option<&str>) -> InstallAccess {
        InstallAccess {
            install: ID,
            bound_ip: ip(bound),
            first_fetch_at: at(0),
            closed_at: closed.map(at),
            done_ip: done.map(ip),
        }
    }

    #[test]
    fn fetches_go_to_the_lease_or_the_first_asker_within_the_window() {
        let a = "10.77.0.101";
        let b = "10.77.0.200";
        let bound = record(a, None, None);
        let closed = record(a, Some(30), None);
        let wrong = |allowed: &str, peer: &str| {
            Err(AccessRefusal::WrongAddress {
                install: ID,
                allowed: ip(allowed),
                peer: ip(peer),
            })
        };
        // (lease, record, peer, now) -> decision
        let expired = Err(AccessRefusal::Expired {
            install: ID,
            first: at(0),
            window_secs: 600,
        });
        // (record, lease, DHCP serves the asker, asker, now) -> decision
        type Case<'a> = (
            Option<&'a InstallAccess>,
            Option<&'a str>,
            bool,
            &'a str,
            i64,
            Result<Fetch, AccessRefusal>,
        );
        let cases: Vec<Case> = vec![
            // First fetch, no lease, rackboot's DHCP not serving (ProxyDHCP):
            // the asker is bound.
            (None, None, false, b, 0, Ok(Fetch::Bind(ip(b)))),
            (
                None,
                None,
                false,
                "::ffff:10.77.0.200",
                0,
                Ok(Fetch::Bind(ip(b))),
            ),
            // rackboot's DHCP serves the asker's subnet: only the lease.
            (None, Some(a), true, a, 0, Ok(Fetch::Bind(ip(a)))),
            (None, Some(a), true, b, 0, wrong(a, b)),
            (None, Some(a), false, b, 0, wrong(a, b)),
            (
                None,
                None,
                true,
                b,
                0,
                Err(AccessRefusal::NoLease {
                    install: ID,
                    peer: ip(b),
                }),
            ),
            // Bound: only the bound address, within the window.
            (Some(&bound), None, false, a, 10, Ok(Fetch::Serve)),
            (Some(&bound), None, false, b, 10, wrong(a, b)),
            (Some(&bound), None, false, a, 600, Ok(Fetch::Serve)),
            (Some(&bound), None, false, a, 601, expired.clone()),
            // The wrong asker learns nothing about the window.
            (Some(&bound), None, false, b, 601, wrong(a, b)),
            // After the first fetch the record is the address, whatever
            // lease another client holds now.
            (Some(&bound), Some(b), true, b, 10, wrong(a, b)),
            (Some(&bound), Some(b), true, a, 10, Ok(Fetch::Serve)),
            // Closed by `started`.
            (
                Some(&closed),
                None,
                false,
                a,
                40,
                Err(AccessRefusal::Closed {
                    install: ID,
                    at: at(30),
                }),
            ),
        ];
        for (rec, lease, serves, peer, now, want) in cases {
            let got = check_fetch(ID, rec, lease.map(ip), serves, ip(peer), at(now), WINDOW);
            assert_eq!(
                got, want,
                "record {rec:?} lease {lease:?} served {serves} asker {peer} at {now}"
            );
        }
        for (got, status) in [
            (
                check_fetch(ID, Some(&closed), None, false, ip(a), at(40), WINDOW),
                StatusCode::GONE,
            ),
            (
                check_fetch(ID, Some(&bound), None, false, ip(a), at(700), WINDOW),
                StatusCode::GONE,
            ),
            (
                check_fetch(ID, Some(&bound), None, false, ip(b), at(0), WINDOW),
                StatusCode::FORBIDDEN,
            ),
            (
                check_fetch(ID, None, None, true, ip(b), at(0), WINDOW),
                StatusCode::FORBIDDEN,
            ),
        ] {
            assert_eq!(got.unwrap_err().status(), status);
        }
    }

    #[test]
    fn callbacks_come_from_the_machine_and_done_once_from_elsewhere() {
        use Callback::{Done, Installed, Started};
        use InstallState::{Completed, Pending};
        let a = "10.77.0.101";
        let b = "10.77.0.200";
        let c = "10.77.0.50";
        let bound = record(a, Some(5), None);
        let done_elsewhere = record(a, Some(5), Some(c));
        let wrong = |peer: &str| {
            Err(AccessRefusal::WrongAddress {
                install: ID,
                allowed: ip(a),
                peer: ip(peer),
            })
        };
        type Case<'a> = (
            Callback,
            InstallState,
            Option<&'a str>,
            Option<&'a InstallAccess>,
            &'a str,
            Result<Accepted, AccessRefusal>,
        );
        let cases: Vec<Case> = vec![
            (Started, Pending, None, Some(&bound), a, Ok(Accepted::Plain)),
            (Started, Pending, None, Some(&bound), b, wrong(b)),
            (
                Installed,
                Pending,
                None,
                Some(&bound),
                a,
                Ok(Accepted::Plain),
            ),
            (Installed, Pending, None, Some(&bound), b, wrong(b)),
            // A repeat of `installed` is idempotent from the machine only.
            (
                Installed,
                InstallState::Installed,
                None,
                Some(&bound),
                a,
                Ok(Accepted::Plain),
            ),
            (
                Installed,
                InstallState::Installed,
                None,
                Some(&bound),
                b,
                wrong(b),
            ),
            // The lease alone is enough (the record is on another server).
            (Installed, Pending, Some(a), None, a, Ok(Accepted::Plain)),
            (
                Installed,
                Pending,
                None,
                None,
                a,
                Err(AccessRefusal::NotBound { install: ID }),
            ),
            // `done` of a pending install moves the machine: bound address only.
            (Done, Pending, None, Some(&bound), b, wrong(b)),
            (Done, Pending, None, Some(&bound), a, Ok(Accepted::Plain)),
            // The installed system's report: from the machine, or once from
            // another address, which is then the only other one accepted.
            (
                Done,
                InstallState::Installed,
                None,
                Some(&bound),
                a,
                Ok(Accepted::Plain),
            ),
            (
                Done,
                InstallState::Installed,
                None,
                Some(&bound),
                c,
                Ok(Accepted::RecordDoneAddress(ip(c))),
            ),
            (
                Done,
                Completed,
                None,
                Some(&done_elsewhere),
                c,
                Ok(Accepted::Plain),
            ),
            (
                Done,
                Completed,
                None,
                Some(&done_elsewhere),
                a,
                Ok(Accepted::Plain),
            ),
            (Done, Completed, None, Some(&done_elsewhere), b, wrong(b)),
            (Done, InstallState::Installed, Some(a), None, c, wrong(c)),
        ];
        for (kind, state, lease, rec, peer, want) in cases {
            let got = check_callback(kind, ID, state, lease.map(ip), rec, ip(peer));
            assert_eq!(
                got, want,
                "{kind:?} {state:?} lease {lease:?} {rec:?} from {peer}"
            );
        }
    }

    #[test]
    fn agent_tokens_are_bound_to_the_lease_or_the_first_asker() {
        let mac: rackboot_core::MacAddr = "52:54:00:aa:00:01".parse().unwrap();
        let a = ip("10.77.0.101");
        let b = ip("10.77.0.200");
        let leased = Some("10.77.0.101".parse().unwrap());
        let ok = |ip: IpAddr| Ok::<IpAddr, ()>(ip);
        // (lease, current token's address, DHCP serves the asker, asker) -> bound
        let cases = [
            (leased, None, true, a, ok(a)),
            (leased, None, true, b, Err(())),
            (leased, Some(b), true, a, ok(a)),
            (None, None, false, b, ok(b)),
            (None, None, true, b, Err(())),
            (None, Some(a), false, a, ok(a)),
            (None, Some(a), false, b, Err(())),
            (None, None, false, ip("::ffff:10.77.0.200"), ok(b)),
        ];
        for (lease, current, serves, peer, want) in cases {
            let got = agent_token_address(mac, lease, current, serves, peer);
            assert_eq!(
                got.clone().map_err(|_| ()),
                want,
                "lease {lease:?} current {current:?} served {serves} asker {peer}: {got:?}"
            );
            if let Err(AgentTokenRefusal { message, .. }) = got {
                assert!(
                    message.contains("no agent token issued")
                        && message.contains(&peer.to_string().replace("::ffff:", "")),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn the_files_secret_is_per_install_and_not_the_token() {
        let install = |id: u128, token: &str| InstallRequest {
            id: uuid::Uuid::from_u128(id),
            machine: uuid::Uuid::from_u128(1),
            os: "debian-12-amd64".into(),
            template: None,
            vars: serde_json::json!({}),
            token: token.into(),
            state: InstallState::Pending,
            requested_at: at(0),
            completed_at: None,
        };
        let one = install(1, "0123456789abcdef0123456789abcdef");
        let secret = files_secret(&one);
        assert_eq!(secret.len(), FILES_SECRET_LEN);
        assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!secret.contains(&one.token) && !one.token.contains(&secret));
        assert_eq!(files_secret(&one), secret, "stable across renders");
        assert_ne!(files_secret(&install(2, &one.token)), secret);
        assert_ne!(files_secret(&install(1, "another token")), secret);
        assert!(files_secret_matches(&one, &secret));
        assert!(!files_secret_matches(&one, &secret[..31]));
        assert!(!files_secret_matches(&one, ""));
    }
}
