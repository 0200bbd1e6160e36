//! Several servers on one PostgreSQL database, each with its own store (its
//! own connections, as separate processes have): the change feed, cluster
//! membership, workflow claims and fencing, and conditional lease writes.

#[allow(dead_code)] // `url` is used here; other helpers are for other suites.
mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use rackboot_core::{
    AgentSession, Lease, LeaseState, Lifecycle, MacAddr, Machine, ProvisionState, Workflow,
    WorkflowState,
};
use rackboot_store::{Change, ChangeFeed, Member, Store, StoreError, open};
use serde_json::json;

use common::TestDb;

fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
        .parse()
        .unwrap()
}

fn machine(name: &str, i: u32) -> Machine {
    let mut m = Machine::discovered(mac(i), None, None);
    m.name = name.into();
    m
}

/// A second store on the same database: another server.
async fn other_server(db: &TestDb) -> Arc<dyn Store> {
    open(&db.url).await.expect("a second store on the database")
}

/// The changes the feed delivers within `wait` of quiet.
async fn drain(feed: &mut ChangeFeed, wait: Duration) -> Vec<Change> {
    let mut got = Vec::new();
    while let Ok(Some(c)) = tokio::time::timeout(wait, feed.next()).await {
        got.push(c);
    }
    got
}

/// Changes that are expected: waits up to 5 s for the first (a NOTIFY can be
/// slow on a loaded machine), then takes the rest until `quiet`.
async fn drain_expected(feed: &mut ChangeFeed, quiet: Duration) -> Vec<Change> {
    match tokio::time::timeout(Duration::from_secs(5), feed.next()).await {
        Ok(Some(first)) => {
            let mut got = vec![first];
            got.extend(drain(feed, quiet).await);
            got
        }
        _ => Vec::new(),
    }
}

fn workflow(m: &Machine, state: WorkflowState) -> Workflow {
    Workflow {
        id: uuid::Uuid::new_v4(),
        machine: m.id,
        name: "soak".into(),
        lifecycle: Lifecycle::None,
        state,
        started_from: ProvisionState::Enrolled,
        params: json!({}),
        steps: vec![],
        created_by: "test".into(),
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
        updated_at: Utc::now(),
        error: None,
        batch: None,
    }
}

#[tokio::test]
async fn a_write_on_one_server_reaches_the_others_feed_only() {
    if !common::backend_available("postgres") {
        return;
    }
    let db = TestDb::postgres().await;
    let a = db.store.clone();
    let b = other_server(&db).await;
    let mut feed_a = a
        .change_feed()
        .await
        .unwrap()
        .expect("PostgreSQL has a feed");
    let mut feed_b = b
        .change_feed()
        .await
        .unwrap()
        .expect("PostgreSQL has a feed");

    let m = machine("n1", 1);
    a.create_machine(&m).await.unwrap();
    let mut changed = m.clone();
    changed.labels.insert("rack".into(), "r2".into());
    a.update_machine(&changed).await.unwrap();
    a.put_profile(&rackboot_core::Profile {
        name: "p".into(),
        description: String::new(),
        kernel: None,
        initrds: vec![],
        cmdline: String::new(),
        ipxe_script: Some("#!ipxe\nexit\n".into()),
        loader: rackboot_core::LoaderKind::Ipxe,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    })
    .await
    .unwrap();
    let session = AgentSession {
        machine: m.id,
        token_sha256: "ab".repeat(32),
        bound_ip: "10.0.0.9".parse().unwrap(),
        issued_at: Utc::now(),
        workflow: None,
        instance: None,
        boot_id: None,
    };
    a.put_agent_session(&session).await.unwrap();
    let wf = workflow(&m, WorkflowState::Queued);
    a.put_workflow(&wf).await.unwrap();
    a.delete_machine(m.id).await.unwrap();

    let got = drain_expected(&mut feed_b, Duration::from_millis(500)).await;
    let want = [
        Change::Machine(m.id),
        Change::Machine(m.id),
        Change::Catalog,
        Change::AgentSession(m.id),
        Change::Workflow {
            id: wf.id,
            machine: m.id,
        },
    ];
    assert_eq!(got[..want.len()], want, "{got:?}");
    // The delete cascades: the machine, its session and its workflow.
    let rest = &got[want.len()..];
    assert!(rest.contains(&Change::Machine(m.id)), "{rest:?}");
    assert!(rest.contains(&Change::AgentSession(m.id)), "{rest:?}");
    // A server does not hear its own writes.
    assert_eq!(drain(&mut feed_a, Duration::from_millis(200)).await, []);
    // And the session is readable by machine on the other server.
    assert_eq!(b.get_agent_session(m.id).await.unwrap(), None);
    db.finish().await;
}

#[tokio::test]
async fn membership_by_heartbeat_and_departure() {
    if !common::backend_available("postgres") {
        return;
    }
    let db = TestDb::postgres().await;
    let a = db.store.clone();
    let b = other_server(&db).await;
    let mut feed = a.change_feed().await.unwrap().unwrap();
    let member = |name: &str| Member {
        id: uuid::Uuid::new_v4(),
        name: name.into(),
        api_url: format!("http://{name}:8080"),
        started_at: Utc::now(),
        heartbeat_at: Utc::now(),
    };
    let (ma, mb) = (member("a"), member("b"));
    // 5 s: a slow first heartbeat on a loaded machine must not look dead.
    let dead_after = Duration::from_secs(5);
    let live = a.member_heartbeat(&ma, dead_after).await.unwrap();
    assert_eq!(live.iter().map(|m| m.id).collect::<Vec<_>>(), [ma.id]);
    let live = b.member_heartbeat(&mb, dead_after).await.unwrap();
    let mut want = vec![ma.id, mb.id];
    want.sort();
    assert_eq!(live.iter().map(|m| m.id).collect::<Vec<_>>(), want);
    assert_eq!(
        live.iter().find(|m| m.id == mb.id).unwrap().api_url,
        "http://b:8080"
    );
    // b joining was announced; a's heartbeats are not.
    let changes = drain_expected(&mut feed, Duration::from_millis(300)).await;
    assert_eq!(changes, [Change::Members], "{changes:?}");
    a.member_heartbeat(&ma, dead_after).await.unwrap();
    assert_eq!(drain(&mut feed, Duration::from_millis(300)).await, []);
    // b stops: after dead_after only a is live.
    tokio::time::sleep(dead_after + Duration::from_millis(200)).await;
    let live = a.member_heartbeat(&ma, dead_after).await.unwrap();
    assert_eq!(live.iter().map(|m| m.id).collect::<Vec<_>>(), [ma.id]);
    // Leaving is immediate, and announced.
    b.member_heartbeat(&mb, dead_after).await.unwrap();
    drain(&mut feed, Duration::from_millis(200)).await;
    b.member_leave(mb.id).await.unwrap();
    assert_eq!(
        drain_expected(&mut feed, Duration::from_millis(300)).await,
        [Change::Members]
    );
    let live = a.member_heartbeat(&ma, dead_after).await.unwrap();
    assert_eq!(live.len(), 1);
    db.finish().await;
}

#[tokio::test]
async fn workflows_are_claimed_once_and_writes_are_fenced() {
    if !common::backend_available("postgres") {
        return;
    }
    let db = TestDb::postgres().await;
    let a = db.store.clone();
    let b = other_server(&db).await;
    let (x, y) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let m = machine("w", 1);
    a.create_machine(&m).await.unwrap();
    let mut wf = workflow(&m, WorkflowState::Queued);
    // Written unfenced (by a server not yet in a cluster): nobody's.
    a.put_workflow(&wf).await.unwrap();
    assert_eq!(
        a.active_workflow_owners().await.unwrap(),
        [(wf.id, m.id, None)]
    );
    // x claims it; y cannot while x is live, can once x is dead.
    assert!(a.claim_workflow(wf.id, x, &[x, y]).await.unwrap());
    assert!(
        a.claim_workflow(wf.id, x, &[x, y]).await.unwrap(),
        "again: still x's"
    );
    assert!(!b.claim_workflow(wf.id, y, &[x, y]).await.unwrap());
    assert_eq!(
        b.active_workflow_owners().await.unwrap(),
        [(wf.id, m.id, Some(x))]
    );
    a.set_workflow_owner(Some(x));
    b.set_workflow_owner(Some(y));
    wf.state = WorkflowState::Running;
    a.put_workflow(&wf).await.unwrap();
    match b.put_workflow(&wf).await {
        Err(StoreError::Fenced(msg)) => assert!(msg.contains(&wf.id.to_string()), "{msg}"),
        other => panic!("y's write must be fenced: {other:?}"),
    }
    // x is declared dead: y takes over; x's next write is refused, so x
    // cannot act on it when it comes back.
    assert!(b.claim_workflow(wf.id, y, &[y]).await.unwrap());
    b.put_workflow(&wf).await.unwrap();
    assert!(matches!(
        a.put_workflow(&wf).await,
        Err(StoreError::Fenced(_))
    ));
    // A new workflow written by a fenced server is its own.
    let other = workflow(&m, WorkflowState::Queued);
    a.put_workflow(&other).await.unwrap();
    assert!(!b.claim_workflow(other.id, y, &[x, y]).await.unwrap());
    // Finished workflows are not claimed.
    wf.state = WorkflowState::Succeeded;
    b.put_workflow(&wf).await.unwrap();
    assert!(!a.claim_workflow(wf.id, x, &[x]).await.unwrap());
    db.finish().await;
}

fn lease(last: u8, client: u32, state: LeaseState, secs: i64) -> Lease {
    Lease {
        ip: Ipv4Addr::new(10, 9, 0, last),
        mac: Some(mac(client)),
        client_id: None,
        hostname: None,
        state,
        expires_at: Utc::now() + TimeDelta::seconds(secs),
        subnet: "lab".into(),
        updated_at: Utc::now(),
    }
}

#[tokio::test]
async fn an_address_is_held_by_one_client_across_servers() {
    if !common::backend_available("postgres") {
        return;
    }
    let db = TestDb::postgres().await;
    let a = db.store.clone();
    let b = other_server(&db).await;
    // a offers .5 to client 1; b's offer of .5 to client 2 is refused and
    // comes back as client 1's lease.
    assert_eq!(
        a.claim_leases(&[lease(5, 1, LeaseState::Offered, 30)])
            .await
            .unwrap(),
        []
    );
    let refused = b
        .claim_leases(&[
            lease(5, 2, LeaseState::Offered, 30),
            lease(6, 2, LeaseState::Offered, 30),
        ])
        .await
        .unwrap();
    assert_eq!(refused.len(), 1);
    let holder = refused[0].holder.as_ref().unwrap();
    assert_eq!(
        (refused[0].ip.octets()[3], holder.ip.octets()[3], holder.mac),
        (5, 5, Some(mac(1)))
    );
    // Client 1 binds and renews .5 through either server.
    assert_eq!(
        b.claim_leases(&[lease(5, 1, LeaseState::Bound, 600)])
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        a.claim_leases(&[lease(5, 1, LeaseState::Bound, 600)])
            .await
            .unwrap(),
        []
    );
    // Released, it is free for client 2.
    assert_eq!(
        a.claim_leases(&[lease(5, 1, LeaseState::Released, 0)])
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        b.claim_leases(&[lease(5, 2, LeaseState::Bound, 600)])
            .await
            .unwrap(),
        []
    );
    // An expired lease is free too.
    a.put_leases(&[lease(7, 3, LeaseState::Bound, -1)])
        .await
        .unwrap();
    assert_eq!(
        b.claim_leases(&[lease(7, 4, LeaseState::Offered, 30)])
            .await
            .unwrap(),
        []
    );
    // A decline always lands, and then blocks everyone, the decliner too.
    let mut declined = lease(7, 4, LeaseState::Declined, 600);
    declined.mac = None;
    assert_eq!(a.claim_leases(&[declined]).await.unwrap(), []);
    assert_eq!(
        b.claim_leases(&[lease(7, 4, LeaseState::Offered, 30)])
            .await
            .unwrap()
            .len(),
        1
    );
    let held: Vec<(u8, Option<MacAddr>)> = a
        .list_leases()
        .await
        .unwrap()
        .iter()
        .map(|l| (l.ip.octets()[3], l.mac))
        .collect();
    assert_eq!(held, [(5, Some(mac(2))), (6, Some(mac(2))), (7, None)]);
    db.finish().await;
}

/// Two servers offering the same 64 addresses to different clients at once,
/// in batches: every address ends with exactly one client, and each server
/// was told which addresses it lost.
#[tokio::test]
async fn racing_servers_never_share_an_address() {
    if !common::backend_available("postgres") {
        return;
    }
    let db = TestDb::postgres().await;
    let a = db.store.clone();
    let b = other_server(&db).await;
    let round = |store: Arc<dyn Store>, client_base: u32| async move {
        let mut won = Vec::new();
        for chunk in (1..=64u8).collect::<Vec<_>>().chunks(8) {
            let batch: Vec<Lease> = chunk
                .iter()
                .map(|&i| lease(i, client_base + u32::from(i), LeaseState::Bound, 600))
                .collect();
            let lost = store.claim_leases(&batch).await.unwrap();
            for r in &lost {
                // Each refusal names the other server's client at its address.
                let holder = r.holder.as_ref().unwrap();
                assert_eq!(holder.ip, r.ip);
                assert_ne!(
                    holder.mac,
                    Some(mac(client_base + u32::from(r.ip.octets()[3])))
                );
            }
            for l in &batch {
                if !lost.iter().any(|x| x.ip == l.ip) {
                    won.push(l.ip);
                }
            }
        }
        won
    };
    let (won_a, won_b) = tokio::join!(round(a.clone(), 1000), round(b.clone(), 2000));
    let mut all: Vec<Ipv4Addr> = won_a.iter().chain(&won_b).copied().collect();
    all.sort();
    let total = all.len();
    all.dedup();
    assert_eq!(all.len(), total, "an address was granted twice");
    assert_eq!(total, 64, "every address was granted once");
    // The table agrees with what each server believes it won.
    for l in a.list_leases().await.unwrap() {
        let mine_a = won_a.contains(&l.ip);
        let client = l.mac.unwrap();
        let i = l.ip.octets()[3];
        let want = if mine_a {
            mac(1000 + u32::from(i))
        } else {
            mac(2000 + u32::from(i))
        };
        assert_eq!(client, want, "{}", l.ip);
    }
    db.finish().await;
}

/// A client holds one address across servers: another server's offer of a
/// second address is refused with the lease the client holds (so that server
/// offers that one); a binding ends the client's offers elsewhere; a second
/// binding is refused; a withdrawn offer never ends a binding.
#[tokio::test]
async fn a_client_holds_one_address_across_servers() {
    if !common::backend_available("postgres") {
        return;
    }
    let db = TestDb::postgres().await;
    let a = db.store.clone();
    let b = other_server(&db).await;
    let with_id = |mut l: Lease| {
        l.client_id = Some("ff0102".into());
        l
    };
    // a offers .20 to client 1 (with a client id).
    let offered_a = with_id(lease(20, 1, LeaseState::Offered, 30));
    assert_eq!(
        a.claim_leases(std::slice::from_ref(&offered_a))
            .await
            .unwrap(),
        []
    );
    // b's offer of .21 to the same client is refused: it holds .20.
    let refused = b
        .claim_leases(&[with_id(lease(21, 1, LeaseState::Offered, 30))])
        .await
        .unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].ip, Ipv4Addr::new(10, 9, 0, 21));
    let holder = refused[0].holder.clone().unwrap();
    assert_eq!(
        (holder.ip, holder.state, holder.client_id.as_deref()),
        (offered_a.ip, LeaseState::Offered, Some("ff0102"))
    );
    // ...so b offers .20 too, which the client may take from either.
    assert_eq!(
        b.claim_leases(&[with_id(lease(20, 1, LeaseState::Offered, 30))])
            .await
            .unwrap(),
        []
    );
    // The same MAC with another client id, or none, is another client.
    assert_eq!(
        b.claim_leases(&[lease(22, 1, LeaseState::Offered, 30)])
            .await
            .unwrap(),
        []
    );
    // Two offers written at once (servers racing: neither statement sees
    // the other's row) are both there...
    assert_eq!(
        a.claim_leases(&[with_id(lease(23, 3, LeaseState::Offered, 30))])
            .await
            .unwrap(),
        []
    );
    a.put_leases(&[with_id(lease(24, 3, LeaseState::Offered, 30))])
        .await
        .unwrap();
    // ...but the binding of one ends the other.
    assert_eq!(
        b.claim_leases(&[with_id(lease(24, 3, LeaseState::Bound, 600))])
            .await
            .unwrap(),
        []
    );
    // A second binding for a bound client is refused with its binding.
    let refused = a
        .claim_leases(&[with_id(lease(25, 3, LeaseState::Bound, 600))])
        .await
        .unwrap();
    let holder = refused[0].holder.clone().unwrap();
    assert_eq!(
        (holder.ip.octets()[3], holder.state),
        (24, LeaseState::Bound)
    );
    // And so is a new offer to it.
    let refused = a
        .claim_leases(&[with_id(lease(26, 3, LeaseState::Offered, 30))])
        .await
        .unwrap();
    assert_eq!(refused[0].holder.as_ref().unwrap().ip.octets()[3], 24);
    // A server moving the client (its reservation) ends the old binding in
    // the same batch as the new claim: both are written.
    assert_eq!(
        a.claim_leases(&[
            with_id(lease(24, 3, LeaseState::Released, 0)),
            with_id(lease(27, 3, LeaseState::Offered, 30)),
        ])
        .await
        .unwrap(),
        []
    );
    assert_eq!(
        a.claim_leases(&[with_id(lease(27, 3, LeaseState::Bound, 600))])
            .await
            .unwrap(),
        []
    );
    // A withdrawn offer (written as expired) ends an offer, not a binding.
    assert_eq!(
        a.claim_leases(&[with_id(lease(27, 3, LeaseState::Expired, 0))])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        a.claim_leases(&[with_id(lease(20, 1, LeaseState::Expired, 0))])
            .await
            .unwrap(),
        []
    );
    let now = Utc::now();
    let live: Vec<(u8, LeaseState)> = a
        .list_leases()
        .await
        .unwrap()
        .iter()
        .filter(|l| l.expires_at > now && l.mac.is_some())
        .map(|l| (l.ip.octets()[3], l.state))
        .collect();
    assert_eq!(
        live,
        [(22, LeaseState::Offered), (27, LeaseState::Bound)],
        "client 1 (with its id) withdrew .20, its MAC alone holds .22, client 3 moved to .27"
    );
    // The offer the binding ended is in the store as expired.
    let ended = a
        .list_leases()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.ip.octets()[3] == 23)
        .unwrap();
    assert_eq!(ended.state, LeaseState::Expired);
    db.finish().await;
}

/// DHCP servers follow each other's leases (offers too) on their own feed.
#[tokio::test]
async fn lease_writes_reach_the_other_servers_lease_feed() {
    if !common::backend_available("postgres") {
        return;
    }
    let db = TestDb::postgres().await;
    let a = db.store.clone();
    let b = other_server(&db).await;
    let mut leases_b = b
        .lease_feed()
        .await
        .unwrap()
        .expect("PostgreSQL has a lease feed");
    let mut changes_b = b.change_feed().await.unwrap().unwrap();
    let mut offered = lease(9, 1, LeaseState::Offered, 30);
    offered.client_id = Some("01abcd".into());
    a.claim_leases(std::slice::from_ref(&offered))
        .await
        .unwrap();
    let bound = lease(9, 1, LeaseState::Bound, 600);
    a.put_leases(std::slice::from_ref(&bound)).await.unwrap();
    let got = drain_expected(&mut leases_b, Duration::from_millis(500)).await;
    let got: Vec<(Ipv4Addr, Option<MacAddr>, LeaseState, Option<String>)> = got
        .into_iter()
        .map(|c| match c {
            Change::Lease(l) => (l.ip, l.mac, l.state, l.client_id),
            other => panic!("not a lease: {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                offered.ip,
                offered.mac,
                LeaseState::Offered,
                Some("01abcd".into())
            ),
            (bound.ip, bound.mac, LeaseState::Bound, None),
        ]
    );
    // Leases do not go to the snapshot's feed.
    assert_eq!(drain(&mut changes_b, Duration::from_millis(200)).await, []);
    db.finish().await;
}
