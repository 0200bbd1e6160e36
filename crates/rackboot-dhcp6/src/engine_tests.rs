//! Engine decisions on parsed requests built the way clients build them.

use chrono::{DateTime, Utc};
use rackboot_core::LeaseState;
use rackboot_wire::dhcp6::{IaAddr, IaNa, MessageType, Request, Status};

use crate::config::Dhcp6Config;
use crate::engine::{Client, Engine, Outcome, Timings};

const SERVER_DUID: &[u8] = &[0, 3, 0, 1, 2, 0, 0, 0, 0, 1];

fn engine() -> Engine {
    let cfg: Dhcp6Config = toml::from_str(
        r#"
        [[subnets]]
        prefix = "2001:db8:77::/64"
        ranges = ["2001:db8:77::100-2001:db8:77::101"]
        reservations = [{ mac = "52:54:00:bb:00:02", ip = "2001:db8:77::10", hostname = "n2" }]
        "#,
    )
    .unwrap();
    Engine::new(
        cfg.compile().unwrap(),
        Timings {
            offer_hold_secs: 60,
            decline_hold_secs: 600,
        },
        SERVER_DUID.to_vec(),
        true,
        &["2001:db8:77::1".parse().unwrap()],
    )
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn req(kind: MessageType, duid: &[u8], addrs: &[&str]) -> Request {
    Request {
        kind,
        xid: [1, 2, 3],
        client_id: Some(duid.to_vec()),
        server_id: matches!(
            kind,
            MessageType::Request | MessageType::Renew | MessageType::Release | MessageType::Decline
        )
        .then(|| SERVER_DUID.to_vec()),
        ia_na: vec![IaNa {
            iaid: 1,
            t1: 0,
            t2: 0,
            addrs: addrs
                .iter()
                .map(|a| IaAddr {
                    addr: a.parse().unwrap(),
                    preferred: 0,
                    valid: 0,
                })
                .collect(),
            status: None,
        }],
        ia_ta: vec![],
        ia_pd: vec![],
        oro: vec![],
        rapid_commit: false,
        client_arch: vec![],
        nii: None,
        user_class: vec![],
        vendor_class: None,
        relays: vec![],
    }
}

fn client(duid: &[u8]) -> Client {
    Client {
        duid: crate::engine::duid_hex(duid),
        mac: None,
    }
}

fn answer(o: Outcome) -> crate::engine::Answer {
    match o {
        Outcome::Answer(a) => a,
        Outcome::Ignore(why) => panic!("ignored: {why}"),
    }
}

fn first_addr(a: &crate::engine::Answer) -> String {
    a.ias[0].0.addrs[0].addr.to_string()
}

#[test]
fn advertise_then_request_binds_and_persists() {
    let mut e = engine();
    let a = answer(e.handle(
        &req(MessageType::Solicit, b"\0\x01a", &[]),
        &client(b"\0\x01a"),
        now(),
    ));
    assert_eq!(a.kind, MessageType::Advertise);
    assert!(a.persist.is_empty(), "an advertisement writes nothing");
    let ip = first_addr(&a);
    let r = answer(e.handle(
        &req(MessageType::Request, b"\0\x01a", &[&ip]),
        &client(b"\0\x01a"),
        now(),
    ));
    assert_eq!((r.kind, first_addr(&r)), (MessageType::Reply, ip.clone()));
    assert_eq!(r.persist.len(), 1);
    assert_eq!(r.persist[0].state, LeaseState::Bound);
    // Another client cannot get it.
    let b = answer(e.handle(
        &req(MessageType::Request, b"\0\x01b", &[&ip]),
        &client(b"\0\x01b"),
        now(),
    ));
    assert_ne!(first_addr(&b), ip);
}

#[test]
fn rapid_commit_replies_at_once_and_an_empty_pool_says_so() {
    let mut e = engine();
    for duid in [b"\0\x01a", b"\0\x01b"] {
        let mut s = req(MessageType::Solicit, duid, &[]);
        s.rapid_commit = true;
        let a = answer(e.handle(&s, &client(duid), now()));
        assert_eq!(a.kind, MessageType::Reply);
        assert!(a.rapid_commit);
        assert_eq!(a.persist.len(), 1);
    }
    let a = answer(e.handle(
        &req(MessageType::Solicit, b"\0\x01c", &[]),
        &client(b"\0\x01c"),
        now(),
    ));
    assert_eq!(a.kind, MessageType::Advertise);
    assert!(a.ias.is_empty());
    assert_eq!(a.status.map(|s| s.0), Some(Status::NoAddrsAvail));
}

#[test]
fn reservation_by_mac_with_hostname() {
    let mut e = engine();
    let mut c = client(b"\0\x04uuid-client");
    c.mac = Some("52:54:00:bb:00:02".parse().unwrap());
    let r = answer(e.handle(
        &req(MessageType::Request, b"\0\x04uuid-client", &[]),
        &c,
        now(),
    ));
    assert_eq!(first_addr(&r), "2001:db8:77::10");
    assert_eq!(r.persist[0].hostname.as_deref(), Some("n2"));
    // Nobody else gets the reserved address, even asking for it.
    let o = answer(e.handle(
        &req(MessageType::Request, b"\0\x01x", &["2001:db8:77::10"]),
        &client(b"\0\x01x"),
        now(),
    ));
    assert_ne!(first_addr(&o), "2001:db8:77::10");
}

#[test]
fn decline_takes_the_address_out_and_the_client_gets_another() {
    let mut e = engine();
    let r = answer(e.handle(
        &req(MessageType::Request, b"\0\x01a", &[]),
        &client(b"\0\x01a"),
        now(),
    ));
    let ip = first_addr(&r);
    let d = answer(e.handle(
        &req(MessageType::Decline, b"\0\x01a", &[&ip]),
        &client(b"\0\x01a"),
        now(),
    ));
    assert_eq!(d.status.map(|s| s.0), Some(Status::Success));
    assert_eq!(d.persist[0].state, LeaseState::Declined);
    let again = answer(e.handle(
        &req(MessageType::Request, b"\0\x01a", &[&ip]),
        &client(b"\0\x01a"),
        now(),
    ));
    assert_ne!(first_addr(&again), ip);
}

#[test]
fn confirm_renew_and_other_servers() {
    let mut e = engine();
    let on = answer(e.handle(
        &req(MessageType::Confirm, b"\0\x01a", &["2001:db8:77::5"]),
        &client(b"\0\x01a"),
        now(),
    ));
    assert_eq!(on.status.map(|s| s.0), Some(Status::Success));
    let off = answer(e.handle(
        &req(MessageType::Confirm, b"\0\x01a", &["2001:db8:99::5"]),
        &client(b"\0\x01a"),
        now(),
    ));
    assert_eq!(off.status.map(|s| s.0), Some(Status::NotOnLink));
    // Renew of an address outside the pool: no binding, the address with lifetimes 0.
    let r = answer(e.handle(
        &req(MessageType::Renew, b"\0\x01a", &["2001:db8:77::5"]),
        &client(b"\0\x01a"),
        now(),
    ));
    assert_eq!(r.ias[0].1.map(|s| s.0), Some(Status::NoBinding));
    assert_eq!(r.ias[0].0.addrs[0].valid, 0);
    let mut other = req(MessageType::Request, b"\0\x01a", &[]);
    other.server_id = Some(vec![0, 3, 0, 1, 9, 9, 9, 9, 9, 9]);
    assert_eq!(
        e.handle(&other, &client(b"\0\x01a"), now()),
        Outcome::Ignore("other_server")
    );
}
