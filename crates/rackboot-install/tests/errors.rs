//! Bad values and bad templates are refused with errors that say what is
//! wrong, and a runaway template stops instead of hanging.

mod common;

use std::time::{Duration, Instant};

use rackboot_core::OsFamily;
use rackboot_install::{
    DiskSelector, Ipv4Config, RenderError, TemplateChoice, TemplateErrorKind, builtin_template,
    render, validate_template,
};

/// A named change to the base machine.
type Mutation = (
    &'static str,
    Box<dyn Fn(&mut rackboot_install::InstallVars)>,
);

fn render_rhel(vars: &rackboot_install::InstallVars) -> Result<String, RenderError> {
    render(
        OsFamily::Rhel,
        "9",
        TemplateChoice::Builtin,
        vars,
        &common::secrets(OsFamily::Rhel),
    )
    .map(|r| r.body)
}

#[test]
fn missing_required_values_are_named() {
    let cases: Vec<Mutation> = vec![
        ("hostname", Box::new(|v| v.hostname.clear())),
        ("callback_url", Box::new(|v| v.callback_url.clear())),
        (
            "install_source_url",
            Box::new(|v| v.install_source_url.clear()),
        ),
        (
            "disk.value",
            Box::new(|v| v.disk = DiskSelector::Path(String::new())),
        ),
        ("nics", Box::new(|v| v.nics[0].ipv4 = Ipv4Config::None)),
    ];
    for (name, mutate) in cases {
        let mut vars = common::base(OsFamily::Rhel);
        mutate(&mut vars);
        match render_rhel(&vars) {
            Err(RenderError::MissingValue { name: got }) => {
                assert!(got.starts_with(name), "{name}: got {got}")
            }
            other => panic!("{name}: expected MissingValue, got {other:?}"),
        }
    }
    // Windows needs the Administrator password at render time.
    let vars = common::base(OsFamily::Windows);
    let err = render(
        OsFamily::Windows,
        "2022",
        TemplateChoice::Builtin,
        &vars,
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        RenderError::MissingValue {
            name: "windows_admin_password".into()
        }
    );
    // ESXi needs a root password hash.
    let mut vars = common::base(OsFamily::Esxi);
    vars.root_password_hash = None;
    let err = render(
        OsFamily::Esxi,
        "8.0",
        TemplateChoice::Builtin,
        &vars,
        &Default::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("root_password_hash"), "{err}");
}

#[test]
fn invalid_values_are_named_and_never_reach_a_template() {
    let cases: Vec<Mutation> = vec![
        ("hostname", Box::new(|v| v.hostname = "node;reboot".into())),
        ("hostname", Box::new(|v| v.hostname = "-bad".into())),
        ("domain", Box::new(|v| v.domain = Some("a..b".into()))),
        (
            "callback_url",
            Box::new(|v| v.callback_url = "http://h/done/x' ; rm -rf /".into()),
        ),
        (
            "callback_url",
            Box::new(|v| v.callback_url = "ftp://h/done".into()),
        ),
        (
            "install_source_url",
            Box::new(|v| v.install_source_url = "not a url".into()),
        ),
        // Variables are stored and shown in clear: no password in a URL.
        (
            "install_source_url",
            Box::new(|v| v.install_source_url = "http://mirror:s3cret@10.1.0.1/rocky/".into()),
        ),
        (
            "root_password_hash",
            Box::new(|v| v.root_password_hash = Some("plaintext".into())),
        ),
        (
            "ssh_authorized_keys[0]",
            Box::new(|v| v.ssh_authorized_keys = vec!["ssh-rsa AAAA x'y".into()]),
        ),
        (
            "ssh_authorized_keys[0]",
            Box::new(|v| v.ssh_authorized_keys = vec!["garbage".into()]),
        ),
        (
            "packages[2]",
            Box::new(|v| v.packages.push("vim; reboot".into())),
        ),
        (
            "timezone",
            Box::new(|v| v.timezone = "Mars/Olympus Mons".into()),
        ),
        (
            "disk.value",
            Box::new(|v| v.disk = DiskSelector::Path("sda".into())),
        ),
        (
            "disk.value",
            Box::new(|v| v.disk = DiskSelector::Serial("a b".into())),
        ),
        (
            "nics[0].ipv4.gateway",
            Box::new(|v| {
                v.nics[0].ipv4 = Ipv4Config::Static {
                    address: [10, 0, 0, 5].into(),
                    prefix: 24,
                    gateway: Some([10, 0, 1, 1].into()),
                    dns: vec![],
                }
            }),
        ),
        (
            "nics[0].ipv4.prefix",
            Box::new(|v| {
                v.nics[0].ipv4 = Ipv4Config::Static {
                    address: [10, 0, 0, 5].into(),
                    prefix: 33,
                    gateway: None,
                    dns: vec![],
                }
            }),
        ),
        ("nics[1].mac", Box::new(|v| v.nics.push(v.nics[0].clone()))),
        ("nics[0].mtu", Box::new(|v| v.nics[0].mtu = Some(10))),
        (
            "vlans[0].parent",
            Box::new(|v| {
                v.vlans.push(rackboot_install::VlanConfig {
                    id: 10,
                    parent: "bond9".into(),
                    ipv4: Ipv4Config::Dhcp,
                    mtu: None,
                })
            }),
        ),
        (
            "root_password_hash",
            Box::new(|v| {
                v.root_password_hash = None;
                v.ssh_authorized_keys.clear();
            }),
        ),
    ];
    for (name, mutate) in cases {
        let mut vars = common::base(OsFamily::Rhel);
        mutate(&mut vars);
        match render_rhel(&vars) {
            Err(RenderError::InvalidValue { name: got, reason }) => {
                assert_eq!(got, name, "{reason}")
            }
            other => panic!("{name}: expected InvalidValue, got {other:?}"),
        }
    }
}

#[test]
fn families_refuse_what_they_cannot_express() {
    // ESXi: one management interface, no bonds.
    let mut vars = common::base(OsFamily::Esxi);
    vars.nics.push(rackboot_install::NicConfig {
        mac: "52:54:00:00:07:09".parse().unwrap(),
        name: None,
        ipv4: Ipv4Config::Dhcp,
        mtu: None,
    });
    let err = render(
        OsFamily::Esxi,
        "8.0",
        TemplateChoice::Builtin,
        &vars,
        &Default::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RenderError::Unsupported {
                family: OsFamily::Esxi,
                ..
            }
        ),
        "{err}"
    );
    // Windows: disk rules other than a disk number.
    let mut vars = common::base(OsFamily::Windows);
    vars.disk = DiskSelector::Largest;
    let err = render(
        OsFamily::Windows,
        "2022",
        TemplateChoice::Builtin,
        &vars,
        &common::secrets(OsFamily::Windows),
    )
    .unwrap_err();
    assert!(matches!(err, RenderError::Unsupported { .. }), "{err}");
    // Windows: Windows Setup installs from SMB, not HTTP.
    let mut vars = common::base(OsFamily::Windows);
    vars.install_source_url = "http://10.1.0.1/win/".into();
    let err = render(
        OsFamily::Windows,
        "2022",
        TemplateChoice::Builtin,
        &vars,
        &common::secrets(OsFamily::Windows),
    )
    .unwrap_err();
    assert!(err.to_string().contains("SMB"), "{err}");
    // Windows: the share's password goes in windows_share_password (sealed),
    // never in the URL.
    let mut vars = common::base(OsFamily::Windows);
    vars.install_source_url = "smb://install:s3cret@10.1.0.1/win/2022".into();
    let err = render(
        OsFamily::Windows,
        "2022",
        TemplateChoice::Builtin,
        &vars,
        &common::secrets(OsFamily::Windows),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("install_source_url") && message.contains("windows_share_password"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    // Windows: the post script must fit a 1024-character command line.
    let mut vars = common::base(OsFamily::Windows);
    vars.post_script = Some("Write-Output 'x'\n".repeat(40));
    let err = render(
        OsFamily::Windows,
        "2022",
        TemplateChoice::Builtin,
        &vars,
        &common::secrets(OsFamily::Windows),
    )
    .unwrap_err();
    assert!(err.to_string().contains("post_script"), "{err}");
    vars.post_script = Some("Write-Output 'x'\n".repeat(20));
    let r = render(
        OsFamily::Windows,
        "2022",
        TemplateChoice::Builtin,
        &vars,
        &common::secrets(OsFamily::Windows),
    )
    .unwrap();
    let doc = roxmltree::Document::parse(&r.body).unwrap();
    for line in doc.descendants().filter(|n| n.has_tag_name("CommandLine")) {
        assert!(line.text().unwrap().len() <= 1024, "{:?}", line.text());
    }
    // -EncodedCommand is base64 of UTF-16LE: decode it back.
    let encoded = doc
        .descendants()
        .filter_map(|n| n.text())
        .find_map(|t| {
            t.strip_prefix("powershell -NoProfile -ExecutionPolicy Bypass -EncodedCommand ")
        })
        .unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(
        String::from_utf16(&units).unwrap(),
        vars.post_script.clone().unwrap()
    );
    // Unknown version.
    let err = render(
        OsFamily::Rhel,
        "7",
        TemplateChoice::Builtin,
        &common::base(OsFamily::Rhel),
        &Default::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("8, 9, 10"), "{err}");
}

#[test]
fn broken_template_is_refused_with_its_line() {
    let source =
        "text\nlang {{ locale }}\nkeyboard us\n{% if hostname %}\nrootpw --lock\n{% endfor %}\n";
    let err = validate_template(OsFamily::Rhel, source).unwrap_err();
    assert_eq!(err.kind, TemplateErrorKind::Syntax, "{err}");
    assert_eq!(err.line, Some(6), "{err}");
    assert!(err.to_string().contains("line 6"), "{err}");

    let source = "text\nlang {{ locale }\n";
    let err = validate_template(OsFamily::Rhel, source).unwrap_err();
    assert_eq!(
        (err.kind, err.line),
        (TemplateErrorKind::Syntax, Some(2)),
        "{err}"
    );
}

#[test]
fn undefined_and_unset_values_are_errors_with_line_and_source() {
    // A misspelt variable: strict undefined.
    let source = "text\n\nlang {{ locael }}\n";
    let err = validate_template(OsFamily::Rhel, source).unwrap_err();
    assert_eq!(err.kind, TemplateErrorKind::Undefined, "{err}");
    assert_eq!(err.line, Some(3));
    assert!(err.reason.contains("locael"), "{err}");
    // A missing attribute of a real value.
    let err = validate_template(OsFamily::Rhel, "text\n{{ primary.ipv4.netmsk }}\n").unwrap_err();
    assert_eq!(
        (err.kind, err.line),
        (TemplateErrorKind::Undefined, Some(2)),
        "{err}"
    );
    assert!(err.reason.contains("netmsk"), "{err}");
    // Printing a value that is unset for this machine (the sample's
    // second NIC is DHCP: no address).
    let err = validate_template(
        OsFamily::Rhel,
        "text\n{% for l in links %}\nnetwork --ip={{ l.ipv4.address }}\n{% endfor %}\n",
    )
    .unwrap_err();
    assert_eq!(err.kind, TemplateErrorKind::Undefined, "{err}");
    assert_eq!(err.line, Some(3), "{err}");
}

#[test]
fn runaway_template_runs_out_of_fuel_quickly() {
    let source = "text\n{% for i in range(100000) %}{% for j in range(100000) %}{{ hostname }}{% endfor %}{% endfor %}\n";
    let start = Instant::now();
    let err = validate_template(OsFamily::Rhel, source).unwrap_err();
    assert_eq!(err.kind, TemplateErrorKind::OutOfFuel, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Recursion is bounded too.
    let source = "text\n{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}\n";
    let err = validate_template(OsFamily::Rhel, source).unwrap_err();
    assert_ne!(err.kind, TemplateErrorKind::Syntax, "{err}");
}

#[test]
fn rendered_output_must_be_well_formed_and_keep_the_callback() {
    // XML that does not close.
    let err = validate_template(OsFamily::Suse, "<profile>{{ callback_url }}").unwrap_err();
    assert!(err.reason.contains("malformed"), "{err}");
    // YAML without the header.
    let err = validate_template(
        OsFamily::Ubuntu,
        "autoinstall:\n  version: 1\n  late-commands: [{{ callback_sh | yaml }}]\n",
    )
    .unwrap_err();
    assert!(err.reason.contains("#cloud-config"), "{err}");
    // A preseed line without a type.
    let err = validate_template(
        OsFamily::Debian,
        "d-i preseed/late_command {{ callback_sh }}\n",
    )
    .unwrap_err();
    assert!(err.reason.contains("line 1"), "{err}");
    // A kickstart that forgets the callback would reinstall forever.
    let err = validate_template(OsFamily::Rhel, "text\nlang {{ locale }}\nreboot\n").unwrap_err();
    assert!(err.reason.contains("callback_url"), "{err}");
}

#[test]
fn every_builtin_passes_upload_validation() {
    for t in rackboot_install::BUILTIN_TEMPLATES {
        validate_template(t.family, t.source).unwrap_or_else(|e| panic!("{}: {e}", t.name));
    }
    assert!(builtin_template(OsFamily::Suse, "15.6").is_ok());
}

#[test]
fn xml_values_are_escaped() {
    let mut vars = common::base(OsFamily::Windows);
    vars.windows.as_mut().unwrap().organization = Some("R&D <lab>".into());
    let r = render(
        OsFamily::Windows,
        "2022",
        TemplateChoice::Builtin,
        &vars,
        &common::secrets(OsFamily::Windows),
    )
    .unwrap();
    assert!(
        r.body
            .contains("<Organization>R&amp;D &lt;lab&gt;</Organization>")
    );
    // The Administrator password is never in clear text.
    assert!(!r.body.contains("Rack&Boot"));
    assert!(!r.body.contains("Rack&amp;Boot"));
    let doc = roxmltree::Document::parse(&r.body).unwrap();
    let org = doc
        .descendants()
        .find(|n| n.has_tag_name("Organization"))
        .unwrap();
    assert_eq!(org.text(), Some("R&D <lab>"));
}

#[test]
fn post_script_content_cannot_break_out() {
    // A script containing section markers and quotes lands intact.
    let script = "echo '%end'\n%end\ncat <<'RACKBOOT_EOF'\n\"quoted\" $HOME `x`\n";
    for (family, version) in common::RELEASES {
        if *family == OsFamily::Windows {
            continue;
        }
        let mut vars = common::base(*family);
        vars.post_script = Some(script.into());
        let r = render(
            *family,
            version,
            TemplateChoice::Builtin,
            &vars,
            &common::secrets(*family),
        )
        .unwrap_or_else(|e| panic!("{family} {version}: {e}"));
        // Kickstart sections end at a `%end` line: the script must not
        // produce one. (The other formats escape or quote it, and their
        // well-formedness check passed.)
        if matches!(family, OsFamily::Rhel | OsFamily::Esxi) {
            assert!(
                !r.body.contains("\n%end\ncat"),
                "{family}: script leaked into the file"
            );
        }
    }
}
