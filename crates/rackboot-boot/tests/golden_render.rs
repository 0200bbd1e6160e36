//! Golden files: every intent rendered as iPXE, pxelinux and GRUB, compared with
//! the checked-in tests/golden/<case>.<format>. `UPDATE_GOLDEN=1 cargo test` rewrites them.

mod common;

use std::path::PathBuf;

use common::{kernel_profile, machine};
use rackboot_boot::render::{BootPlan, plan_for, render_grub, render_ipxe, render_pxelinux};
use rackboot_boot::{ServerUrls, Snapshot};
use rackboot_core::{BootIntent, LoaderKind, Machine, Menu, MenuEntry, Profile, Selector};

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
    Snapshot::new(Vec::new(), profiles, selectors)
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
                    },
                    MenuEntry {
                        profile: "gone".into(),
                        label: None,
                    },
                    MenuEntry {
                        profile: "inspect".into(),
                        label: None,
                    },
                ],
                default: Some("inspect".into()),
                timeout_secs: 5,
            })),
            discovery: None,
        },
        Case {
            name: "menu_local_default",
            machine: m(BootIntent::Menu(Menu {
                entries: vec![MenuEntry {
                    profile: "debian".into(),
                    label: None,
                }],
                default: None,
                timeout_secs: 10,
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
        ]
    );
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
