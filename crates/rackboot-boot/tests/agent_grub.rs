//! The agent's boot through GRUB: its per-machine config, generated for the
//! TFTP server, carries the RAM-disk and a per-boot token minted under the
//! rules of the iPXE script (bound to the machine's lease, or to the address
//! that asked; the next boot's token replaces it), against the real SQLite
//! store. The config is generated on a thread outside the runtime, as TFTP's
//! transfer threads are.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::{collect_events, machine};
use rackboot_boot::{BootConfig, BootService, Fleet};
use rackboot_core::{BootIntent, BoundLeases, EventHub, GeneratedFile, MacAddr, TftpContent};

const MAC: &str = "52:54:00:12:34:56";
const CONFIG: &str = "grub/grub.cfg-01-52:54:00:12:34:56";

struct Setup {
    service: Arc<BootService>,
    fleet: Arc<Fleet>,
    leases: BoundLeases,
    _ramdisk: tempfile::TempDir,
}

/// A Secure Boot machine (its label) whose workflow needs the agent.
async fn setup() -> Setup {
    let store = rackboot_store::open_sqlite_in_memory().await.unwrap();
    let mut m = machine("node1", MAC, BootIntent::Agent { workflow: None });
    m.labels.insert("secure_boot".into(), "true".into());
    store.create_machine(&m).await.unwrap();
    let (hub, queue) = EventHub::new(1024);
    collect_events(queue);
    let fleet = Fleet::load(store, None, hub).await.unwrap();
    let ramdisk = tempfile::tempdir().unwrap();
    for file in [rackboot_boot::RAMDISK_KERNEL, rackboot_boot::RAMDISK_INITRD] {
        std::fs::write(ramdisk.path().join(file), b"x").unwrap();
    }
    let config = BootConfig {
        ramdisk_dir: Some(ramdisk.path().to_path_buf()),
        ..BootConfig::default()
    };
    let leases = BoundLeases::default();
    let service = BootService::with_parts(fleet.clone(), config, None, leases.clone()).unwrap();
    Setup {
        service,
        fleet,
        leases,
        _ramdisk: ramdisk,
    }
}

/// The GRUB config as the TFTP server gets it for `client`.
async fn grub_config(service: &Arc<BootService>, client: IpAddr) -> String {
    let service = service.clone();
    let file = tokio::task::spawn_blocking(move || service.generate_for(CONFIG, client))
        .await
        .unwrap();
    match file {
        GeneratedFile::Content(bytes) => String::from_utf8(bytes).unwrap(),
        other => panic!("no GRUB config: {other:?}"),
    }
}

fn token_in(config: &str) -> Option<String> {
    config
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rackboot.token="))
        .map(str::to_string)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grub_config_boots_the_agent_with_a_token_bound_to_the_asker() {
    let s = setup().await;
    let asker = ip("127.0.0.1");
    // GRUB's read request and its retransmission, handled at once by two
    // transfer threads: one token for the boot (a second would replace the
    // one GRUB boots with).
    let (config, twin) = tokio::join!(
        grub_config(&s.service, asker),
        grub_config(&s.service, asker)
    );
    assert!(
        config.contains("\nlinux (tftp)/ramdisk/vmlinuz "),
        "{config}"
    );
    assert!(
        config.contains("\ninitrd (tftp)/ramdisk/initramfs.img\nboot\n"),
        "{config}"
    );
    assert!(
        config.contains(" rackboot.url=http://127.0.0.1:8080 "),
        "{config}"
    );
    assert!(config.contains(" BOOTIF=01-52-54-00-12-34-56"), "{config}");
    assert!(!config.contains("rackboot.ip6="), "{config}");
    let token = token_in(&config).unwrap_or_else(|| panic!("no token: {config}"));
    assert_eq!(token_in(&twin).as_deref(), Some(token.as_str()), "{twin}");
    let session = s
        .fleet
        .authenticate_agent(Some(&token), asker)
        .expect("the token opens a session from the address that asked");
    assert_eq!(session.bound_ip, asker);
    assert!(
        s.fleet
            .authenticate_agent(Some(&token), ip("127.0.0.2"))
            .is_err(),
        "bound to the asker only"
    );
    // Asked again a moment later (GRUB retransmitting after its 400 ms):
    // the same config.
    let again = grub_config(&s.service, asker).await;
    assert_eq!(token_in(&again).as_deref(), Some(token.as_str()));
    assert!(s.fleet.authenticate_agent(Some(&token), asker).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grub_config_token_is_bound_to_the_lease() {
    let s = setup().await;
    let mac: MacAddr = MAC.parse().unwrap();
    s.leases.set(mac, Ipv4Addr::new(127, 0, 0, 1));
    // Another address asks for the machine's config: no token, and the
    // machine's own token (none yet) is not replaced.
    let refused = grub_config(&s.service, ip("127.0.0.9")).await;
    assert!(token_in(&refused).is_none(), "{refused}");
    assert!(!refused.contains("\nlinux "), "{refused}");
    // The lease holder gets one bound to its lease.
    let config = grub_config(&s.service, ip("127.0.0.1")).await;
    let token = token_in(&config).unwrap_or_else(|| panic!("no token: {config}"));
    assert!(
        s.fleet
            .authenticate_agent(Some(&token), ip("127.0.0.1"))
            .is_ok()
    );
    // The refusal did not spoil the holder's token.
    let again = grub_config(&s.service, ip("127.0.0.9")).await;
    assert!(token_in(&again).is_none(), "{again}");
    assert!(
        s.fleet
            .authenticate_agent(Some(&token), ip("127.0.0.1"))
            .is_ok()
    );
}
