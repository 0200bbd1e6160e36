//! Golden files: every intent rendered as iPXE, pxelinux and GRUB, compared with
//! the checked-in tests/golden/<case>.<format>. `UPDATE_GOLDEN=1 cargo test` rewrites them.

mod common;

use std::path::PathBuf;

use common::{kernel_profile, machine};
use rackboot_boot::render::{BootPlan, plan_for, render_grub, render_ipxe, render_pxelinux};
use rackboot_boot::{ServerUrls, Snapshot};
use rackboot_core::{
    BootIntent, InstallRequest, InstallState, LoaderKind, Machine, Menu, MenuEntry, MenuInstall,
    OsFamily, Profile, Selector,
};
use rackboot_oscatalog::{OsRelease, SourceKind};

const DEBIAN_INSTALL: uuid::Uuid = uuid::Uuid::from_u128(0x1111);
const ESXI_INSTALL: uuid::Uuid = uuid::Uuid::from_u128(0x2222);
/// A menu entry's install that was completed or cancelled: not in the snapshot.
const GONE_INSTALL: uuid::Uuid = uuid::Uuid::from_u128(0x3333);

fn release(id: &str, family: OsFamily, version: &str, kernel: &str, initrd: &str) -> OsRelease {
    OsRelease {
        id: id.into(),
        family,
        distro: id.split('-').next().unwrap().into(),
        version: version.into(),
        arch: "amd64".into(),
        name: format!("{family} {version}"),
        kernel: kernel.into(),
        initrd: initrd.into(),
        extra_boot_files: vec![],
        boot_config: None,
        bootloader_bios: None,
        bootloader_efi: None,
        source_kind: SourceKind::Tree,
        repository: None,
    }
}

fn install(id: uuid::Uuid, os: &str, machine: &Machine) -> InstallRequest {
    InstallRequest {
        id,
        machine: machine.id,
        os: os.into(),
        template: None,
        vars: serde_json::json!({"vars": {}, "kernel_args": ["console=ttyS0,115200"]}),
        token: "t0ken".into(),
        state: InstallState::Pending,
        requested_at: chrono::DateTime::from_timestamp(1_767_323_045, 0).unwrap(),
        completed_at: None,
    }
}

fn snapshot() -> Snapshot {
    let mut script = kernel_profile("rescue", LoaderKind::Ipxe);
    script.kernel = None;
    script.initrds.clear();
    script.cmdline = String::new();
    script.ipxe_script = Some(
        "#!ipxe\necho rescue for {{ machine.name }} ({{ mac }})\nchain {{ base_url }}/rescue/{{ machine.id }}.ipxe\n"
            .into(),
    );
    let mut labelled = kernel_profile("rack1", LoaderKind::Pxelinux);
    labelled.cmdline = "console=ttyS0 rack={{ machine.labels.rack }}".into();
    let profiles: Vec<Profile> = vec![
        kernel_profile("debian", LoaderKind::Ipxe),
        kernel_profile("inspect", LoaderKind::Ipxe),
        labelled,
        script,
    ];
    let selectors = vec![Selector {
        name: "rack1".into(),
        profile: "rack1".into(),
        matches: [("label.rack".to_string(), "r1".to_string())].into(),
    }];
    let mut snap = Snapshot::new(Vec::new(), profiles, selectors);
    for r in [
        release(
            "debian-12-amd64",
            OsFamily::Debian,
            "12",
            "debian-installer/amd64/linux",
            "debian-installer/amd64/initrd.gz",
        ),
        release(
            "esxi-8.0-x86_64",
            OsFamily::Esxi,
            "8.0",
            "b.b00",
            "jumpstrt.gz",
        ),
    ] {
        snap.os.insert(r.id.clone(), r);
    }
    let node = machine("node1", "52:54:00:12:34:56", BootIntent::LocalDisk);
    snap.installs.insert(
        DEBIAN_INSTALL,
        install(DEBIAN_INSTALL, "debian-12-amd64", &node),
    );
    snap.installs.insert(
        ESXI_INSTALL,
        install(ESXI_INSTALL, "esxi-8.0-x86_64", &node),
    );
    snap
}

fn install_entry(id: uuid::Uuid, os: &str) -> MenuEntry {
    MenuEntry {
        install: Some(MenuInstall { id, os: os.into() }),
        ..Default::default()
    }
}

struct Case {
    name: &'static str,
    machine: Machine,
    discovery: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let m = |intent| machine("node1", "52:54:00:12:34:56", intent);
    let mut in_rack = m(BootIntent::Profile { name: None });
    in_rack.labels.insert("rack".into(), "r1".into());
    vec![
        Case {
            name: "profile_named",
            machine: m(BootIntent::Profile {
                name: Some("debian".into()),
            }),
            discovery: None,
        },
        Case {
            name: "profile_by_selector",
            machine: in_rack,
            discovery: None,
        },
        Case {
            name: "profile_no_selector",
            machine: m(BootIntent::Profile { name: None }),
            discovery: None,
        },
        Case {
            name: "profile_missing",
            machine: m(BootIntent::Profile {
                name: Some("nope".into()),
            }),
            discovery: None,
        },
        Case {
            name: "profile_ipxe_script",
            machine: m(BootIntent::Profile {
                name: Some("rescue".into()),
            }),
            discovery: None,
        },
        // rack1's cmdline uses machine.labels.rack, which this machine lacks.
        Case {
            name: "template_error",
            machine: m(BootIntent::Profile {
                name: Some("rack1".into()),
            }),
            discovery: None,
        },
        Case {
            name: "local_disk",
            machine: m(BootIntent::LocalDisk),
            discovery: None,
        },
        Case {
            name: "discover_profile",
            machine: m(BootIntent::Discover),
            discovery: Some("inspect"),
        },
        Case {
            name: "discover_no_profile",
            machine: m(BootIntent::Discover),
            discovery: None,
        },
        Case {
            name: "menu",
            machine: m(BootIntent::Menu(Menu {
                entries: vec![
                    MenuEntry {
                        profile: "debian".into(),
                        label: Some("Debian 12 installer".into()),
                        install: None,
                    },
                    MenuEntry {
                        profile: "gone".into(),
                        label: None,
                        install: None,
                    },
                    MenuEntry {
                        profile: "inspect".into(),
                        label: None,
                        install: None,
                    },
                ],
                default: Some("inspect".into()),
                timeout_secs: 5,
                loader: None,
            })),
            discovery: None,
        },
        Case {
            name: "menu_local_default",
            machine: m(BootIntent::Menu(Menu {
                entries: vec![MenuEntry {
                    profile: "debian".into(),
                    label: None,
                    install: None,
                }],
                default: None,
                timeout_secs: 10,
                loader: None,
            })),
            discovery: None,
        },
        Case {
            name: "install",
            machine: m(BootIntent::Install {
                id: DEBIAN_INSTALL,
                os: "debian-12-amd64".into(),
            }),
            discovery: None,
        },
        // ESXi boots through iPXE only: pxelinux and GRUB say so.
        Case {
            name: "install_esxi",
            machine: m(BootIntent::Install {
                id: ESXI_INSTALL,
                os: "esxi-8.0-x86_64".into(),
            }),
            discovery: None,
        },
        Case {
            name: "install_menu",
            machine: m(BootIntent::Menu(Menu {
                entries: vec![
                    install_entry(DEBIAN_INSTALL, "debian-12-amd64"),
                    install_entry(GONE_INSTALL, "debian-12-amd64"),
                    MenuEntry {
                        profile: "inspect".into(),
                        label: Some("Hardware inspection".into()),
                        install: None,
                    },
                ],
                default: None,
                timeout_secs: 30,
                loader: None,
            })),
            discovery: None,
        },
        Case {
            name: "install_menu_pxelinux",
            machine: m(BootIntent::Menu(Menu {
                entries: vec![
                    install_entry(DEBIAN_INSTALL, "debian-12-amd64"),
                    install_entry(GONE_INSTALL, "debian-12-amd64"),
                    MenuEntry {
                        profile: "inspect".into(),
                        label: Some("Hardware inspection".into()),
                        install: None,
                    },
                ],
                default: None,
                timeout_secs: 30,
                loader: Some(LoaderKind::Pxelinux),
            })),
            discovery: None,
        },
    ]
}

fn check(file: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert_eq!(got, want, "{file} differs from the golden file");
}

#[test]
fn golden_renders_for_every_intent_and_format() {
    let snap = snapshot();
    let urls = ServerUrls::new("http://10.77.0.1:8080", "assets");
    for case in cases() {
        let mac = case.machine.macs[0];
        let plan = plan_for(&case.machine, &snap, case.discovery);
        check(
            &format!("{}.ipxe", case.name),
            &render_ipxe(&case.machine, mac, &plan, &urls),
        );
        check(
            &format!("{}.pxelinux", case.name),
            &render_pxelinux(&case.machine, mac, &plan, &urls),
        );
        check(
            &format!("{}.grub", case.name),
            &render_grub(&case.machine, mac, &plan, &urls),
        );
    }
}

#[test]
fn plans_pick_the_right_thing() {
    let snap = snapshot();
    let kinds: Vec<(&str, &str)> = cases()
        .iter()
        .map(|c| (c.name, plan_for(&c.machine, &snap, c.discovery).kind()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("profile_named", "profile"),
            ("profile_by_selector", "profile"),
            ("profile_no_selector", "error"),
            ("profile_missing", "error"),
            ("profile_ipxe_script", "profile"),
            ("template_error", "profile"),
            ("local_disk", "local_disk"),
            ("discover_profile", "profile"),
            ("discover_no_profile", "next_device"),
            ("menu", "menu"),
            ("menu_local_default", "menu"),
            ("install", "install"),
            ("install_esxi", "install"),
            ("install_menu", "menu"),
            ("install_menu_pxelinux", "menu"),
        ]
    );
    let menu = cases()
        .into_iter()
        .find(|c| c.name == "install_menu")
        .unwrap();
    assert_eq!(
        plan_for(&menu.machine, &snap, None).loader(),
        LoaderKind::Ipxe,
        "a Linux installer and an iPXE profile"
    );
    let menu = cases()
        .into_iter()
        .find(|c| c.name == "install_menu_pxelinux")
        .unwrap();
    let plan = plan_for(&menu.machine, &snap, None);
    assert_eq!(plan.loader(), LoaderKind::Pxelinux, "the menu's own loader");
    match &plan {
        BootPlan::Menu(m) => {
            assert_eq!(m.entries.len(), 2, "the gone install is skipped: {m:?}");
            assert_eq!(m.skipped.len(), 1);
            assert_eq!(m.entries[0].0, "Install debian 12");
        }
        other => panic!("{other:?}"),
    }
    let c = &cases()[1];
    match plan_for(&c.machine, &snap, None) {
        BootPlan::Profile(p) => {
            assert_eq!((p.name.as_str(), p.loader), ("rack1", LoaderKind::Pxelinux))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_never_leave_half_a_script() {
    let snap = snapshot();
    let urls = ServerUrls::new("http://10.77.0.1:8080", "assets");
    let c = &cases()[5];
    let plan = plan_for(&c.machine, &snap, None);
    let script = render_ipxe(&c.machine, c.machine.macs[0], &plan, &urls);
    assert!(!script.contains("kernel "), "{script}");
    assert!(script.contains("rack"), "names the problem: {script}");
    assert!(script.ends_with("exit 1\n"), "{script}");
}

/// The agent's boot, its token issued, in iPXE and GRUB (which load the
/// RAM-disk over HTTP and TFTP); pxelinux issues no token and says so, and
/// a plan without a token is an error in every format.
#[test]
fn golden_agent_boot() {
    use rackboot_boot::{AgentBoot, AgentPlan};
    let machine = machine(
        "node1",
        "52:54:00:12:34:56",
        BootIntent::Agent {
            workflow: Some(uuid::Uuid::from_u128(0x4444)),
        },
    );
    let mac = machine.macs[0];
    let urls = ServerUrls::new("http://10.77.0.1:8080", "assets");
    let plan = BootPlan::Agent(AgentPlan {
        workflow: Some(uuid::Uuid::from_u128(0x4444)),
        boot: Some(AgentBoot {
            kernel_url: "http://10.77.0.1:8080/ramdisk/vmlinuz".into(),
            initrd_url: "http://10.77.0.1:8080/ramdisk/initramfs.img".into(),
            cmdline: "console=ttyS0 rackboot.url=http://10.77.0.1:8080 rackboot.token=0123456789abcdef0123456789abcdef BOOTIF=01-52-54-00-12-34-56".into(),
        }),
    });
    check("agent.ipxe", &render_ipxe(&machine, mac, &plan, &urls));
    check("agent.grub", &render_grub(&machine, mac, &plan, &urls));
    check(
        "agent.pxelinux",
        &render_pxelinux(&machine, mac, &plan, &urls),
    );
    let unminted = plan_for(&machine, &snapshot(), None);
    for text in [
        render_ipxe(&machine, mac, &unminted, &urls),
        render_grub(&machine, mac, &unminted, &urls),
    ] {
        assert!(text.contains("cannot boot"), "{text}");
        assert!(!text.contains("rackboot.token"), "{text}");
    }
    // A RAM-disk URL GRUB cannot fetch over TFTP is refused, not half rendered.
    let elsewhere = BootPlan::Agent(AgentPlan {
        workflow: None,
        boot: Some(AgentBoot {
            kernel_url: "http://mirror.example/vmlinuz".into(),
            initrd_url: "http://10.77.0.1:8080/ramdisk/initramfs.img".into(),
            cmdline: "rackboot.token=0123456789abcdef".into(),
        }),
    });
    let text = render_grub(&machine, mac, &elsewhere, &urls);
    assert!(
        text.contains("cannot boot") && !text.contains("linux "),
        "{text}"
    );
}
