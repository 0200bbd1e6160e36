//! BootResponder table (arch × iPXE × HTTP boot × profile loader → boot file),
//! TftpContent lookups, and discovery under concurrency.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use rackboot_boot::{BootConfig, BootService, Fleet, Inventory, UnknownPolicy};
use rackboot_core::{
    Arch, BootIntent, BootResponder, DhcpBoot, EventHub, EventKind, GeneratedFile, LoaderKind,
    PxeClient, TftpContent,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const M_IPXE: &str = "52:54:00:00:00:01";
const M_PXELINUX: &str = "52:54:00:00:00:02";
const M_GRUB: &str = "52:54:00:00:00:03";
const M_UNKNOWN: &str = "52:54:00:00:00:99";

fn store() -> MemStore {
    let s = MemStore::default();
    let mut m1 = machine(
        "ipxe",
        M_IPXE,
        BootIntent::Profile {
            name: Some("p-ipxe".into()),
        },
    );
    m1.id = uuid::Uuid::from_u128(1);
    m1.uuid = Some(uuid::Uuid::from_u128(0xaaaa));
    let mut m2 = machine(
        "pxelinux",
        M_PXELINUX,
        BootIntent::Profile {
            name: Some("p-pxelinux".into()),
        },
    );
    m2.id = uuid::Uuid::from_u128(2);
    let mut m3 = machine(
        "grub",
        M_GRUB,
        BootIntent::Profile {
            name: Some("p-grub".into()),
        },
    );
    m3.id = uuid::Uuid::from_u128(3);
    *s.machines.lock().unwrap() = vec![m1, m2, m3];
    *s.profiles.lock().unwrap() = vec![
        kernel_profile("p-ipxe", LoaderKind::Ipxe),
        kernel_profile("p-pxelinux", LoaderKind::Pxelinux),
        kernel_profile("p-grub", LoaderKind::Grub),
    ];
    s
}

fn full_config() -> BootConfig {
    let mut c = BootConfig::default();
    c.loaders.uefi_arm64 = Some("arm64/ipxe.efi".into());
    c.loaders.uefi_x64_grub = Some("grubx64.efi".into());
    c
}

fn client(arch: Arch, ipxe: bool, http_boot: bool) -> PxeClient {
    PxeClient {
        arch,
        http_boot,
        ipxe,
        uuid: None,
        undi: None,
    }
}

fn tftp(file: &str) -> Option<DhcpBoot> {
    Some(DhcpBoot {
        filename: file.into(),
        next_server: None,
        http_client: false,
    })
}

fn http(file: &str) -> Option<DhcpBoot> {
    Some(DhcpBoot {
        filename: format!("http://10.77.0.1:8080/boot/loader/{file}"),
        next_server: None,
        http_client: true,
    })
}

fn script(mac: &str) -> Option<DhcpBoot> {
    Some(DhcpBoot {
        filename: format!("http://10.77.0.1:8080/boot/ipxe/{}", mac.replace(':', "-")),
        next_server: None,
        http_client: false,
    })
}

#[tokio::test]
async fn boot_file_table() {
    let full = fixture(store(), full_config()).await;
    let bare = fixture(store(), BootConfig::default()).await;
    use Arch::*;
    type Row = (
        &'static str,
        bool,
        &'static str,
        Arch,
        bool,
        bool,
        Option<DhcpBoot>,
    );
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // (row, full config?, machine, arch, ipxe, http_boot, expected)
        ("bios ipxe-profile",        true,  M_IPXE,     Bios,      false, false, tftp("undionly.kpxe")),
        ("bios pxelinux-profile",    true,  M_PXELINUX, Bios,      false, false, tftp("pxelinux.0")),
        ("bios grub-profile",        true,  M_GRUB,     Bios,      false, false, tftp("undionly.kpxe")),
        ("uefi ipxe-profile",        true,  M_IPXE,     UefiX64,   false, false, tftp("snponly.efi")),
        ("uefi pxelinux-profile",    true,  M_PXELINUX, UefiX64,   false, false, tftp("snponly.efi")),
        ("uefi grub-profile",        true,  M_GRUB,     UefiX64,   false, false, tftp("grubx64.efi")),
        ("uefi grub, no grub conf",  false, M_GRUB,     UefiX64,   false, false, tftp("snponly.efi")),
        ("arm64",                    true,  M_IPXE,     UefiArm64, false, false, tftp("arm64/ipxe.efi")),
        ("arm64 without iPXE: GRUB", false, M_IPXE,     UefiArm64, false, false, tftp("grubaa64.efi")),
        ("ia32 has no loader",       true,  M_IPXE,     UefiIa32,  false, false, None),
        ("other arch",               true,  M_IPXE,     Other(99), false, false, None),
        ("http boot x64",            true,  M_IPXE,     UefiX64,   false, true,  http("snponly.efi")),
        ("http boot x64 grub-prof",  true,  M_GRUB,     UefiX64,   false, true,  http("snponly.efi")),
        ("http boot arm64",          true,  M_IPXE,     UefiArm64, false, true,  http("arm64/ipxe.efi")),
        ("http boot arm64 unconf",   false, M_IPXE,     UefiArm64, false, true,  None),
        ("ipxe bios",                true,  M_IPXE,     Bios,      true,  false, script(M_IPXE)),
        ("ipxe uefi pxelinux-prof",  true,  M_PXELINUX, UefiX64,   true,  false, script(M_PXELINUX)),
        ("ipxe over http boot",      true,  M_GRUB,     UefiX64,   true,  true,  script(M_GRUB)),
        ("unknown bios",             true,  M_UNKNOWN,  Bios,      false, false, tftp("undionly.kpxe")),
        ("unknown ipxe",             true,  M_UNKNOWN,  Bios,      true,  false, script(M_UNKNOWN)),
    ];
    for (row, full_conf, m, arch, ipxe, http_boot, want) in rows {
        let f = if full_conf { &full } else { &bare };
        let got = f
            .service
            .dhcp_boot(mac(m), &client(arch, ipxe, http_boot), SERVER);
        assert_eq!(got, want, "row {row:?}");
    }
}

#[tokio::test]
async fn public_url_overrides_server_address() {
    let c = BootConfig {
        public_url: Some("http://boot.rack1:9000/".into()),
        ..BootConfig::default()
    };
    let f = fixture(store(), c).await;
    let got = f
        .service
        .dhcp_boot(mac(M_IPXE), &client(Arch::Bios, true, false), SERVER)
        .unwrap();
    assert_eq!(
        got.filename,
        "http://boot.rack1:9000/boot/ipxe/52-54-00-00-00-01"
    );
}

#[tokio::test]
async fn discovery_profile_loader_decides_for_unknown_machines() {
    let s = store();
    s.profiles
        .lock()
        .unwrap()
        .push(kernel_profile("inspect", LoaderKind::Pxelinux));
    let c = BootConfig {
        discovery_profile: Some("inspect".into()),
        ..BootConfig::default()
    };
    let f = fixture(s, c).await;
    let got = f
        .service
        .dhcp_boot(mac(M_UNKNOWN), &client(Arch::Bios, false, false), SERVER);
    assert_eq!(got, tftp("pxelinux.0"));
    f.settle().await;
    assert_eq!(f.store.machines.lock().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_records_exactly_one_machine_under_50_concurrent_calls() {
    let s = MemStore {
        create_delay: Some(Duration::from_millis(30)),
        ..store()
    };
    let f = fixture(s, BootConfig::default()).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let service = f.service.clone();
        tasks.push(tokio::spawn(async move {
            // Spread calls over the create window and after it.
            tokio::time::sleep(Duration::from_millis(i % 10 * 5)).await;
            service.dhcp_boot(
                mac(M_UNKNOWN),
                &client(Arch::UefiX64, i % 2 == 0, false),
                SERVER,
            )
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_some(), "every call is answered");
    }
    f.settle().await;
    let machines = f.store.machines.lock().unwrap().clone();
    let found: Vec<_> = machines
        .iter()
        .filter(|m| m.macs.contains(&mac(M_UNKNOWN)))
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].intent, BootIntent::Discover);
    assert_eq!(found[0].arch, Some(Arch::UefiX64));
    // Multi-threaded: the event may still be on its way to the list.
    assert_eq!(
        f.wait_events(EventKind::MachineDiscovered, 1).await.len(),
        1
    );
    assert_eq!(
        f.store.create_calls.load(Ordering::SeqCst),
        1,
        "in-flight dedupe"
    );
    assert!(
        f.service
            .inventory()
            .snapshot()
            .machine_by_mac(mac(M_UNKNOWN))
            .is_some()
    );
}

#[tokio::test]
async fn two_servers_racing_on_one_store_record_once() {
    let shared = Arc::new(MemStore {
        create_delay: Some(Duration::from_millis(20)),
        ..store()
    });
    let mut services = Vec::new();
    let (hub, queue) = EventHub::new(64);
    let events = collect_events(queue);
    for _ in 0..2 {
        let fleet = Fleet::load(shared.clone(), None, hub.clone())
            .await
            .unwrap();
        services.push(BootService::new(fleet, BootConfig::default()).unwrap());
    }
    for s in &services {
        s.dhcp_boot(mac(M_UNKNOWN), &client(Arch::Bios, false, false), SERVER);
    }
    for _ in 0..200 {
        if services.iter().all(|s| s.discoveries_in_flight() == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(shared.create_calls.load(Ordering::SeqCst), 2, "both tried");
    assert_eq!(shared.machines.lock().unwrap().len(), 4, "one was created");
    // Events reach the list through a task: wait for them (bounded), then
    // check there is exactly one.
    let mut discovered = 0;
    for _ in 0..500 {
        discovered = count_of(&events, EventKind::MachineDiscovered);
        if discovered >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(discovered, 1);
    for s in &services {
        assert!(
            s.inventory()
                .snapshot()
                .machine_by_mac(mac(M_UNKNOWN))
                .is_some(),
            "the loser reloaded too"
        );
    }
}

#[tokio::test]
async fn menu_policy_does_not_record() {
    let c = BootConfig {
        unknown_machines: UnknownPolicy::Menu,
        ..BootConfig::default()
    };
    let f = fixture(store(), c).await;
    f.service
        .dhcp_boot(mac(M_UNKNOWN), &client(Arch::Bios, false, false), SERVER);
    f.service
        .dhcp_boot(mac(M_UNKNOWN), &client(Arch::Bios, true, false), SERVER);
    f.settle().await;
    assert_eq!(f.store.machines.lock().unwrap().len(), 3);
    let snap = f.service.inventory().snapshot();
    let r = f.service.resolve(&snap, mac(M_UNKNOWN), None, None, true);
    match r.plan {
        rackboot_boot::BootPlan::Menu(m) => {
            let names: Vec<_> = m
                .entries
                .iter()
                .map(|(_, t)| match t {
                    rackboot_boot::render::MenuTarget::Profile(p) => p.name.as_str(),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(
                names,
                ["p-grub", "p-ipxe", "p-pxelinux"],
                "all profiles by name"
            );
            assert_eq!(m.default, None);
        }
        other => panic!("{other:?}"),
    }
}

fn content(g: GeneratedFile) -> String {
    match g {
        GeneratedFile::Content(b) => String::from_utf8(b).unwrap(),
        other => panic!("expected content, got {other:?}"),
    }
}

#[tokio::test]
async fn tftp_generated_files() {
    let f = fixture(store(), full_config()).await;
    let lo = Ipv4Addr::LOCALHOST;
    let s = &f.service;

    let cfg = content(s.generate("pxelinux.cfg/01-52-54-00-00-00-02", lo));
    assert!(cfg.contains("KERNEL /assets/p-pxelinux/linux"), "{cfg}");
    assert!(
        cfg.contains("url=http://127.0.0.1:8080/ks/52:54:00:00:00:02"),
        "server address towards the client: {cfg}"
    );
    let by_uuid = content(s.generate("pxelinux.cfg/00000000-0000-0000-0000-00000000aaaa", lo));
    assert!(by_uuid.contains("boots profile p-ipxe"), "{by_uuid}");
    assert_eq!(
        s.generate("pxelinux.cfg/00000000-0000-0000-0000-00000000bbbb", lo),
        GeneratedFile::NotFound
    );
    for hex in ["7F000001", "7F00000", "7F", "7"] {
        assert_eq!(
            s.generate(&format!("pxelinux.cfg/{hex}"), lo),
            GeneratedFile::NotFound,
            "{hex}"
        );
    }
    assert_eq!(
        s.generate("pxelinux.cfg/default", lo),
        GeneratedFile::NotGenerated
    );
    assert_eq!(s.generate("pxelinux.0", lo), GeneratedFile::NotGenerated);
    assert_eq!(s.generate("ldlinux.c32", lo), GeneratedFile::NotGenerated);

    let grub = content(s.generate("grub/grub.cfg-01-52-54-00-00-00-03", lo));
    assert!(grub.contains("linux (tftp)/assets/p-grub/linux"), "{grub}");
    // The generic grub.cfg asks for grub.cfg-01-<net_default_mac>, with colons.
    let generic = content(s.generate("grub/grub.cfg", lo));
    assert!(generic.contains("${net_default_mac}"), "{generic}");
    assert_eq!(
        content(s.generate("grub/grub.cfg-01-52:54:00:00:00:03", lo)),
        grub
    );
    assert_eq!(
        content(s.generate("grub/grub.cfg-52-54-00-00-00-03", lo)),
        grub
    );
    assert_eq!(
        s.generate("grub/grub.cfg-7F000001", lo),
        GeneratedFile::NotFound
    );
    assert_eq!(
        s.generate("grub/x86_64-efi/normal.mod", lo),
        GeneratedFile::NotGenerated
    );

    // Without a GRUB loader an operator's own grub.cfg is left alone.
    let bare = fixture(store(), BootConfig::default()).await;
    assert_eq!(
        bare.service.generate("grub/grub.cfg", lo),
        GeneratedFile::NotGenerated
    );

    // An unknown MAC asking pxelinux is recorded and gets the discovery config.
    let unknown = content(s.generate("pxelinux.cfg/01-52-54-00-00-00-99", lo));
    assert!(unknown.contains("LOCALBOOT 0"), "{unknown}");
    f.settle().await;
    assert_eq!(f.store.machines.lock().unwrap().len(), 4);
    assert_eq!(
        f.events_of(EventKind::ScriptServed).len(),
        6,
        "one per per-machine file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reloads_end_with_the_newest_state() {
    let s = Arc::new(store());
    let inv = Inventory::load(s.clone()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let s = s.clone();
        let inv = inv.clone();
        tasks.push(tokio::spawn(async move {
            use rackboot_store::Store;
            let m = rackboot_core::Machine::discovered(
                rackboot_core::MacAddr([2, 0, 0, 0, 0, i]),
                None,
                None,
            );
            s.create_machine(&m).await.unwrap();
            inv.reload().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(inv.snapshot().machines.len(), 23);
}

/// Secure Boot machines get shim (never iPXE), decided by the machine's
/// `secure_boot` label, else its profile's loader (`shim`), else the site
/// default; and the GRUB configs shim's GRUB asks for are generated for them.
#[tokio::test]
async fn secure_boot_machines_get_shim() {
    const M_SHIM: &str = "52:54:00:00:00:04";
    const M_LABEL_ON: &str = "52:54:00:00:00:05";
    const M_LABEL_OFF: &str = "52:54:00:00:00:06";
    let with_shim = || {
        let s = store();
        let mut extra = Vec::new();
        for (i, (name, m, profile, label)) in [
            ("shim", M_SHIM, "p-shim", None),
            ("label-on", M_LABEL_ON, "p-ipxe", Some("true")),
            ("label-off", M_LABEL_OFF, "p-shim", Some("false")),
        ]
        .into_iter()
        .enumerate()
        {
            let mut machine = machine(
                name,
                m,
                BootIntent::Profile {
                    name: Some(profile.into()),
                },
            );
            machine.id = uuid::Uuid::from_u128(10 + i as u128);
            if let Some(v) = label {
                machine.labels.insert("secure_boot".into(), v.into());
            }
            extra.push(machine);
        }
        s.machines.lock().unwrap().extend(extra);
        s.profiles
            .lock()
            .unwrap()
            .push(kernel_profile("p-shim", LoaderKind::Shim));
        s
    };
    let plain = fixture(with_shim(), BootConfig::default()).await;
    let site = fixture(
        with_shim(),
        BootConfig {
            secure_boot: true,
            ..BootConfig::default()
        },
    )
    .await;
    use Arch::*;
    type Row = (
        &'static str,
        bool,
        &'static str,
        Arch,
        bool,
        Option<DhcpBoot>,
    );
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // (row, site default on?, machine, arch, http_boot, expected)
        ("shim profile",             false, M_SHIM,      UefiX64, false, tftp("shimx64.efi")),
        ("shim profile, http boot",  false, M_SHIM,      UefiX64, true,  http("shimx64.efi")),
        ("shim profile on bios",     false, M_SHIM,      Bios,    false, tftp("undionly.kpxe")),
        ("label on, ipxe profile",   false, M_LABEL_ON,  UefiX64, false, tftp("shimx64.efi")),
        ("label off, shim profile",  false, M_LABEL_OFF, UefiX64, false, tftp("snponly.efi")),
        ("plain machine",            false, M_IPXE,      UefiX64, false, tftp("snponly.efi")),
        ("site default",             true,  M_IPXE,      UefiX64, false, tftp("shimx64.efi")),
        ("site default, label off",  true,  M_LABEL_OFF, UefiX64, false, tftp("snponly.efi")),
        ("site default, unknown",    true,  M_UNKNOWN,   UefiX64, false, tftp("shimx64.efi")),
    ];
    for (row, site_default, m, arch, http_boot, want) in rows {
        let f = if site_default { &site } else { &plain };
        let got = f
            .service
            .dhcp_boot(mac(m), &client(arch, false, http_boot), SERVER);
        assert_eq!(got, want, "row {row:?}");
    }
    // No GRUB loader configured, yet shim's GRUB finds its configs.
    let lo = Ipv4Addr::LOCALHOST;
    let generic = content(plain.service.generate("grub/grub.cfg", lo));
    assert!(generic.contains("configfile"), "{generic}");
    let per_mac = content(
        plain
            .service
            .generate(&format!("grub/grub.cfg-01-{M_SHIM}"), lo),
    );
    assert!(per_mac.contains("linux (tftp)/assets/"), "{per_mac}");
    // Without Secure Boot anywhere, an operator's own grub.cfg is not shadowed.
    let none = fixture(store(), BootConfig::default()).await;
    assert_eq!(
        none.service.generate("grub/grub.cfg", lo),
        GeneratedFile::NotGenerated
    );
}

/// arm64 machines get Debian's arm64 network GRUB, whose generated config
/// loads the kernel a per-architecture profile names (`{{ arch }}`).
#[tokio::test]
async fn arm64_machines_get_grub_and_their_architectures_kernel() {
    const M_ARM: &str = "52:54:00:00:00:07";
    let s = store();
    let mut m = machine(
        "arm",
        M_ARM,
        BootIntent::Profile {
            name: Some("p-any".into()),
        },
    );
    m.id = uuid::Uuid::from_u128(20);
    m.arch = Some(Arch::UefiArm64);
    s.machines.lock().unwrap().push(m);
    let mut any = kernel_profile("p-any", LoaderKind::Ipxe);
    any.kernel = Some("{{ arch }}/vmlinuz".into());
    any.initrds = vec!["{{ arch }}/initrd.img".into()];
    s.profiles.lock().unwrap().push(any);
    let f = fixture(s, BootConfig::default()).await;
    assert_eq!(
        f.service
            .dhcp_boot(mac(M_ARM), &client(Arch::UefiArm64, false, false), SERVER),
        tftp("grubaa64.efi")
    );
    let lo = Ipv4Addr::LOCALHOST;
    assert!(content(f.service.generate("grub/grub.cfg", lo)).contains("configfile"));
    let cfg = content(f.service.generate(&format!("grub/grub.cfg-01-{M_ARM}"), lo));
    assert!(
        cfg.contains("linux (tftp)/assets/arm64/vmlinuz")
            && cfg.contains("initrd (tftp)/assets/arm64/initrd.img"),
        "{cfg}"
    );
}
