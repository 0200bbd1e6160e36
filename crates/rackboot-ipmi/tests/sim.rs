//! Integration tests against OpenIPMI's ipmi_sim (Debian package `openipmi`) on
//! 127.0.0.1. ipmi_sim implements cipher suite 3 but not 17, so suite 17 is covered by
//! the fixed vectors in tests/suite17_vectors.rs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rackboot_ipmi::{
    AuthFailure, BootDevice, BootDeviceSelector, ChassisControl, CipherSuite, CipherSuiteChoice,
    IpmiClient, IpmiError, IpmiOptions, Privilege, RakpStatus,
};

fn suite3() -> IpmiOptions {
    IpmiOptions {
        cipher_suite: CipherSuiteChoice::Suite3,
        ..IpmiOptions::default()
    }
}

async fn admin(sim: &SimBmc) -> IpmiClient {
    IpmiClient::connect(sim.addr, ADMIN_USER, ADMIN_PASSWORD, suite3())
        .await
        .expect("connect with cipher suite 3")
}

/// Wait (bounded) until the chassis script's state file says `want`.
async fn wait_file(sim: &SimBmc, name: &str, want: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if sim.file(name).as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{name} is {:?}, expected {want:?}; chassis log: {:?}",
        sim.file(name),
        sim.file("chassis.log")
    );
}

#[tokio::test]
async fn suite3_session_get_device_id_and_close() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    let sim = SimBmc::start();
    let mut bmc = admin(&sim).await;
    assert_eq!(bmc.cipher_suite(), CipherSuite::Suite3);
    let id = bmc.get_device_id().await.unwrap();
    // emu.cmds: mc_add <addr 0x20> <device id 0> no-device-sdrs <device rev 0x23>
    // <fw 9> <fw minor 8> <support 0x9f> <mfg 0x1291> <product 0xf02>; `ipmitool mc info`
    // shows the same: device 0, revision 3, firmware 9.08.
    assert_eq!(id.device_id, 0);
    assert_eq!(id.device_revision, 3);
    assert_eq!(id.firmware_major, 9);
    assert_eq!(id.firmware_minor, 0x08);
    assert_eq!(id.additional_support, 0x9f);
    assert_eq!(id.manufacturer_id, 0x1291);
    assert_eq!(id.product_id, 0xf02);
    assert_eq!(id.ipmi_version, (2, 0));
    bmc.close().await.unwrap();
    match bmc.get_device_id().await {
        Err(IpmiError::Closed { .. }) => {}
        other => panic!("expected Closed after close(), got {other:?}"),
    }
    // The BMC really dropped the session: a fresh one still works.
    let mut again = admin(&sim).await;
    again.get_device_id().await.unwrap();
    again.close().await.unwrap();
}

#[tokio::test]
async fn auto_suite_falls_back_to_3_when_17_is_refused() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    let sim = SimBmc::start();
    let mut bmc = IpmiClient::connect(sim.addr, ADMIN_USER, ADMIN_PASSWORD, IpmiOptions::default())
        .await
        .expect("auto suite connect");
    assert_eq!(bmc.cipher_suite(), CipherSuite::Suite3);
    bmc.chassis_status().await.unwrap();
    bmc.close().await.unwrap();
}

#[tokio::test]
async fn explicit_suite17_against_ipmi_sim_is_unsupported() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    let sim = SimBmc::start();
    let opts = IpmiOptions {
        cipher_suite: CipherSuiteChoice::Suite17,
        ..IpmiOptions::default()
    };
    let err = IpmiClient::connect(sim.addr, ADMIN_USER, ADMIN_PASSWORD, opts)
        .await
        .expect_err("ipmi_sim lacks suite 17");
    assert!(matches!(err, IpmiError::Unsupported { .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn power_on_off_cycle_reset_softoff_round_trip() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    let sim = SimBmc::start();
    let mut bmc = admin(&sim).await;
    assert!(!bmc.chassis_status().await.unwrap().power_on);

    bmc.chassis_control(ChassisControl::PowerUp).await.unwrap();
    wait_file(&sim, "power", "1").await;
    assert!(bmc.chassis_status().await.unwrap().power_on);

    bmc.chassis_control(ChassisControl::PowerDown)
        .await
        .unwrap();
    wait_file(&sim, "power", "0").await;
    assert!(!bmc.chassis_status().await.unwrap().power_on);

    // ipmi_sim's power cycle: off now, on again after one second.
    bmc.chassis_control(ChassisControl::PowerUp).await.unwrap();
    wait_file(&sim, "power", "1").await;
    let before = sim.file("chassis.log").unwrap().len();
    bmc.chassis_control(ChassisControl::PowerCycle)
        .await
        .unwrap();
    // ipmi_sim turns the power off at once and on again from a one-second timer.
    let start = Instant::now();
    let cycled = loop {
        let log = sim.file("chassis.log").unwrap();
        let new = log[before..].to_string();
        if new.contains("set power 1") || start.elapsed() > Duration::from_secs(5) {
            break new;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let off = cycled.find("set power 0").expect("cycle powers off");
    let on = cycled.find("set power 1").expect("cycle powers on again");
    assert!(off < on, "off then on: {cycled}");
    assert!(bmc.chassis_status().await.unwrap().power_on);

    bmc.chassis_control(ChassisControl::HardReset)
        .await
        .unwrap();
    wait_file(&sim, "resets", "1").await;

    bmc.chassis_control(ChassisControl::SoftOff).await.unwrap();
    wait_file(&sim, "shutdowns", "1").await;
    assert!(!bmc.chassis_status().await.unwrap().power_on);
    bmc.close().await.unwrap();
}

#[tokio::test]
async fn set_boot_device_and_read_it_back() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    let sim = SimBmc::start();
    let mut bmc = admin(&sim).await;

    bmc.set_boot_device(BootDevice::Pxe, false, true)
        .await
        .unwrap();
    assert_eq!(sim.file("boot").as_deref(), Some("pxe"));
    let flags = bmc.get_boot_device().await.unwrap();
    assert_eq!(flags.device, BootDeviceSelector::Pxe);
    assert_eq!(flags.device.as_boot_device(), Some(BootDevice::Pxe));

    // ipmi_sim's chassis program knows hard disk as "default" (selector 2).
    bmc.set_boot_device(BootDevice::Disk, true, false)
        .await
        .unwrap();
    assert_eq!(sim.file("boot").as_deref(), Some("default"));
    let flags = bmc.get_boot_device().await.unwrap();
    assert_eq!(flags.device, BootDeviceSelector::Disk);
    bmc.close().await.unwrap();
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_quickly() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    let sim = SimBmc::start();
    let start = Instant::now();
    let err = IpmiClient::connect(sim.addr, ADMIN_USER, "not-the-password", suite3())
        .await
        .expect_err("wrong password must fail");
    // Quick means no retries: seconds, not a hang (loaded machine).
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    match &err {
        IpmiError::AuthFailed { reason, .. } => {
            assert_eq!(*reason, AuthFailure::Rakp2AuthcodeMismatch)
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    assert!(err.is_auth_failure());
    assert!(!err.is_transient());
    // The right password still works afterwards.
    admin(&sim).await.close().await.unwrap();
}

#[tokio::test]
async fn unknown_user_is_an_auth_error() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    let sim = SimBmc::start();
    let err = IpmiClient::connect(sim.addr, "nobody", "whatever", suite3())
        .await
        .expect_err("unknown user must fail");
    match &err {
        IpmiError::AuthFailed {
            reason: AuthFailure::Refused(status),
            ..
        } => assert_eq!(*status, RakpStatus::UNAUTHORIZED_NAME),
        other => panic!("expected AuthFailed(unauthorized name), got {other:?}"),
    }
}

#[tokio::test]
async fn operator_privilege_session() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    // (ipmi_sim does not enforce a user's privilege limit over RMCP+, ipmitool included,
    // so refusal of a too-high privilege cannot be tested here.)
    let sim = SimBmc::start();
    let opts = IpmiOptions {
        privilege: Privilege::Operator,
        ..suite3()
    };
    let mut bmc = IpmiClient::connect(sim.addr, OPERATOR_USER, OPERATOR_PASSWORD, opts)
        .await
        .expect("operator at operator privilege");
    bmc.chassis_status().await.unwrap();
    bmc.close().await.unwrap();
}

#[tokio::test]
async fn nobody_listening_is_unreachable_within_a_few_seconds() {
    let port = free_udp_port();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let err = IpmiClient::connect(target, ADMIN_USER, ADMIN_PASSWORD, IpmiOptions::default())
        .await
        .expect_err("nothing listens there");
    let took = start.elapsed();
    // Four attempts take about 3.5 s; the bound only tells "seconds" from
    // "hangs" on a loaded machine.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    match &err {
        IpmiError::Unreachable { attempts, .. } => assert_eq!(*attempts, 4),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(err.is_transient());
}

#[tokio::test]
async fn asf_presence_ping() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    let sim = SimBmc::start();
    let pong = rackboot_ipmi::presence_ping(sim.addr, &IpmiOptions::default())
        .await
        .unwrap();
    assert!(pong.ipmi_supported());
    assert_eq!(pong.iana, 4542);
    let nobody = std::net::SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let opts = IpmiOptions {
        timeout: Duration::from_millis(200),
        retries: 1,
        ..IpmiOptions::default()
    };
    let err = rackboot_ipmi::presence_ping(nobody, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpmiError::Unreachable { attempts: 2, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_command_maps_to_unsupported() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    let sim = SimBmc::start();
    let mut bmc = admin(&sim).await;
    // netFn 0x06 cmd 0xff is not an IPMI command.
    let err = bmc.raw(0x06, 0xff, &[]).await.expect_err("bogus command");
    assert!(matches!(err, IpmiError::Unsupported { .. }), "{err:?}");
    // The session is still usable.
    bmc.get_device_id().await.unwrap();
    bmc.close().await.unwrap();
}

/// A UDP relay between the client and ipmi_sim that, once the session is up, drops
/// every other in-session BMC reply, sends a garbage datagram before every reply it
/// passes on, and repeats the previous reply (a stale answer) too. Bounded: it stops
/// with the test's runtime.
async fn lossy_relay(
    sim_addr: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::net::UdpSocket;
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(sim_addr).await.unwrap();
    let addr = front.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut client = None;
        let mut previous: Option<Vec<u8>> = None;
        let mut in_session_replies = 0u32;
        let (mut a, mut b) = (vec![0u8; 2048], vec![0u8; 2048]);
        loop {
            tokio::select! {
                r = front.recv_from(&mut a) => {
                    let (n, from) = r.unwrap();
                    client = Some(from);
                    back.send(&a[..n]).await.unwrap();
                }
                r = back.recv(&mut b) => {
                    let n = r.unwrap();
                    let Some(to) = client else { continue };
                    let pkt = b[..n].to_vec();
                    // RMCP+ IPMI payload (type 0) with the authenticated bit: in session.
                    let in_session = n > 6 && pkt[4] == 0x06 && pkt[5] & 0x3f == 0 && pkt[5] & 0x40 != 0;
                    if in_session {
                        in_session_replies += 1;
                        if in_session_replies % 2 == 1 {
                            continue; // dropped: the client must retransmit
                        }
                        front.send_to(b"\x06\x00\xff\x07garbage", to).await.unwrap();
                        if let Some(p) = &previous {
                            front.send_to(p, to).await.unwrap();
                        }
                        previous = Some(pkt.clone());
                    }
                    front.send_to(&pkt, to).await.unwrap();
                }
            }
        }
    });
    (addr, task)
}

#[tokio::test]
async fn retransmits_through_loss_and_ignores_stale_and_garbage() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    let sim = SimBmc::start();
    let (relay, task) = lossy_relay(sim.addr).await;
    // 1 s: a slow (not lost) reply under load must not use up the retries.
    let opts = IpmiOptions {
        timeout: Duration::from_secs(1),
        ..suite3()
    };
    let mut bmc = IpmiClient::connect(relay, ADMIN_USER, ADMIN_PASSWORD, opts)
        .await
        .expect("connect through the lossy relay");
    for _ in 0..3 {
        let id = bmc.get_device_id().await.unwrap();
        assert_eq!(id.manufacturer_id, 0x1291);
        assert!(!bmc.chassis_status().await.unwrap().power_on);
    }
    bmc.chassis_control(ChassisControl::PowerUp).await.unwrap();
    wait_file(&sim, "power", "1").await;
    assert!(bmc.chassis_status().await.unwrap().power_on);
    // Garbage and stale replies were seen and ignored, not taken as answers.
    assert!(
        bmc.ignored_packets() >= 8,
        "ignored {}",
        bmc.ignored_packets()
    );
    bmc.close().await.unwrap();
    task.abort();
}

#[tokio::test]
async fn bmc_key_two_key_login() {
    if !rackboot_testenv::programs(&["ipmi_sim"]) {
        return;
    }
    // (ipmi_sim keeps at most 19 characters of bmc_key, so ipmitool -k fails with a
    // 20-character key too: use a shorter one.)
    const KG: &str = "two-key-secret";
    let sim = SimBmc::start_with_bmc_key(Some(KG));
    let opts = IpmiOptions {
        bmc_key: Some(KG.as_bytes().to_vec()),
        ..suite3()
    };
    let mut bmc = IpmiClient::connect(sim.addr, ADMIN_USER, ADMIN_PASSWORD, opts)
        .await
        .expect("two-key login");
    bmc.get_device_id().await.unwrap();
    bmc.close().await.unwrap();
    // Without the BMC key the password still passes RAKP 2, but the session keys differ:
    // RAKP 4's integrity check value gives it away.
    let err = IpmiClient::connect(sim.addr, ADMIN_USER, ADMIN_PASSWORD, suite3())
        .await
        .expect_err("Kg missing");
    match &err {
        IpmiError::AuthFailed { reason, .. } => assert_eq!(*reason, AuthFailure::Rakp4IcvMismatch),
        other => panic!("expected AuthFailed(RAKP 4), got {other:?}"),
    }
}
