//! The completion callback is the last step of every family's file, and the
//! variables' JSON form is strict.

mod common;

use rackboot_core::OsFamily;
use rackboot_install::{EXAMPLE_VARS_JSON, InstallVars, TemplateChoice, render};

/// (family, name, body, the URL the installer's last step calls).
fn renders() -> Vec<(OsFamily, String, String, &'static str)> {
    let mut out = Vec::new();
    for (family, version) in common::RELEASES {
        for (machine, vars) in common::machines(*family) {
            let r = render(
                *family,
                version,
                TemplateChoice::Builtin,
                &vars,
                &common::secrets(*family),
            )
            .unwrap();
            // With `installed_url`, the families whose installed system can
            // report its first boot (systemd) end with "installed".
            let first_boot = vars.installed_url.is_some()
                && matches!(
                    family,
                    OsFamily::Rhel
                        | OsFamily::Debian
                        | OsFamily::Ubuntu
                        | OsFamily::Suse
                        | OsFamily::Esxi
                );
            let last = if first_boot { INSTALLED } else { CALLBACK };
            out.push((
                *family,
                format!("{family} {version} {machine}"),
                r.body,
                last,
            ));
        }
    }
    out
}

const CALLBACK: &str = "api/v1/install/done/3q2-7Yt_token";
const INSTALLED: &str = "api/v1/install/installed/3q2-7Yt_token";

/// Every base64 word of the body, decoded (the late scripts and unit files
/// templates embed).
fn decoded_words(body: &str) -> String {
    use base64::Engine as _;
    body.split(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '>' || c == '<')
        .filter(|w| w.len() > 40)
        .filter_map(|w| base64::engine::general_purpose::STANDARD.decode(w).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn installed_systems_report_their_first_boot_to_the_callback() {
    let mut checked = 0;
    for (family, name, body, last) in renders() {
        if last != INSTALLED {
            continue;
        }
        if family == OsFamily::Esxi {
            // ESXi runs %firstboot once on the installed host: it ends there.
            let firstboot = body.split("\n%firstboot").nth(1).unwrap();
            let last = firstboot
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap();
            assert!(last.contains(CALLBACK), "{name}: {last}");
            checked += 1;
            continue;
        }
        // The installer calls "installed"; the completion URL is only in the
        // first-boot script, which retries it and then removes itself.
        let decoded = decoded_words(&body);
        let script = decoded
            .split("#!/bin/sh\n# Written by rackboot at install time: tells rackboot")
            .nth(1)
            .unwrap_or_else(|| panic!("{name}: no first-boot script in\n{decoded}"));
        assert!(script.contains(CALLBACK), "{name}: {script}");
        assert!(
            script.contains("systemctl disable rackboot-firstboot.service"),
            "{name}"
        );
        assert!(
            decoded.contains("After=network-online.target")
                && decoded.contains("WantedBy=multi-user.target"),
            "{name}: no unit"
        );
        checked += 1;
    }
    assert_eq!(
        checked, 10,
        "rhel 8/9/10, debian 11/12, ubuntu 22.04/24.04, suse 15, esxi 7/8"
    );
}

#[test]
fn callback_is_the_last_step_of_every_file() {
    for (family, name, body, want) in renders() {
        match family {
            OsFamily::Rhel => {
                // The last section is the --nochroot %post with the callback.
                let last = body.rfind("\n%post").unwrap();
                let tail = &body[last..];
                assert!(
                    tail.starts_with("\n%post --nochroot --erroronfail"),
                    "{name}"
                );
                assert!(tail.contains(want), "{name}");
                assert!(tail.trim_end().ends_with("%end"), "{name}");
                assert_eq!(body.matches(want).count(), 3, "{name}: curl, wget, wget");
            }
            OsFamily::Esxi => {
                // %post (before the installer reboots) ends with the callback.
                let post = body.split("\n%post").nth(1).unwrap();
                let post = post.split("\n%firstboot").next().unwrap();
                let last = post.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
                assert!(last.contains(want), "{name}: {last}");
            }
            OsFamily::Debian => {
                let late = body
                    .lines()
                    .find(|l| l.starts_with("d-i preseed/late_command string "))
                    .unwrap();
                let last_cmd = late.rsplit(" && ").next().unwrap();
                assert!(
                    last_cmd.starts_with("in-target sh -c 'i=0; until curl"),
                    "{name}"
                );
                assert!(last_cmd.contains(want), "{name}");
                assert!(
                    !body
                        .lines()
                        .any(|l| l.starts_with("d-i preseed/late_command") && !l.contains(want)),
                    "{name}"
                );
            }
            OsFamily::Ubuntu => {
                let doc: serde_yaml::Value = serde_yaml::from_str(&body).unwrap();
                let cmds = doc["autoinstall"]["late-commands"].as_sequence().unwrap();
                let last = cmds.last().unwrap().as_str().unwrap();
                assert!(last.contains(want), "{name}");
                assert!(
                    cmds[..cmds.len() - 1]
                        .iter()
                        .all(|c| !c.as_str().unwrap().contains(want))
                );
            }
            OsFamily::Suse => {
                let doc = roxmltree::Document::parse_with_options(
                    &body,
                    roxmltree::ParsingOptions {
                        allow_dtd: true,
                        ..Default::default()
                    },
                )
                .unwrap();
                let chroot = doc
                    .descendants()
                    .find(|n| n.has_tag_name("chroot-scripts"))
                    .unwrap();
                let scripts: Vec<_> = chroot
                    .children()
                    .filter(|n| n.has_tag_name("script"))
                    .collect();
                let last = scripts.last().unwrap();
                let text = |tag: &str| {
                    last.children()
                        .find(|n| n.has_tag_name(tag))
                        .and_then(|n| n.text())
                        .unwrap()
                };
                assert!(text("source").contains(want), "{name}");
                // Chrooted scripts run after the boot loader is installed.
                assert_eq!(text("chrooted"), "true", "{name}");
                assert!(
                    doc.descendants()
                        .filter(|n| n.has_tag_name("init-scripts"))
                        .count()
                        == 0
                );
            }
            OsFamily::Windows => {
                let doc = roxmltree::Document::parse(&body).unwrap();
                let cmds: Vec<_> = doc
                    .descendants()
                    .filter(|n| n.has_tag_name("SynchronousCommand"))
                    .collect();
                let order = |n: &roxmltree::Node| -> u32 {
                    n.children()
                        .find(|c| c.has_tag_name("Order"))
                        .unwrap()
                        .text()
                        .unwrap()
                        .parse()
                        .unwrap()
                };
                let last = cmds.iter().max_by_key(|n| order(n)).unwrap();
                let line = last
                    .children()
                    .find(|c| c.has_tag_name("CommandLine"))
                    .unwrap()
                    .text()
                    .unwrap();
                assert!(
                    line.contains(CALLBACK) && line.contains("Invoke-WebRequest"),
                    "{name}"
                );
                // The password never appears in clear text.
                assert!(
                    !body.contains("Rack&amp;Boot") && !body.contains("Rack&Boot"),
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn example_vars_parse_and_render() {
    let vars: InstallVars = serde_json::from_str(EXAMPLE_VARS_JSON).unwrap();
    assert_eq!(vars.bonds[0].mode, rackboot_install::BondMode::Lacp);
    let r = render(
        OsFamily::Rhel,
        "9.4",
        TemplateChoice::Builtin,
        &vars,
        &Default::default(),
    )
    .unwrap();
    assert!(
        r.body
            .contains("--bondopts=mode=802.3ad,miimon=100 --vlanid=100"),
        "{}",
        r.body
    );
    // Round trip.
    let again: InstallVars = serde_json::from_value(serde_json::to_value(&vars).unwrap()).unwrap();
    assert_eq!(again, vars);
}

#[test]
fn json_is_strict_and_names_what_is_wrong() {
    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE_VARS_JSON).unwrap();
    v["hostnme"] = "typo".into();
    let err = serde_json::from_value::<InstallVars>(v)
        .unwrap_err()
        .to_string();
    assert!(err.contains("hostnme"), "{err}");

    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE_VARS_JSON).unwrap();
    v.as_object_mut().unwrap().remove("callback_url");
    let err = serde_json::from_value::<InstallVars>(v)
        .unwrap_err()
        .to_string();
    assert!(err.contains("callback_url"), "{err}");

    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE_VARS_JSON).unwrap();
    v["nics"][0]["mac"] = "52:54:00:zz:00:01".into();
    let err = serde_json::from_value::<InstallVars>(v)
        .unwrap_err()
        .to_string();
    assert!(err.contains("52:54:00:zz:00:01"), "{err}");

    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE_VARS_JSON).unwrap();
    v["disk"] = serde_json::json!({"rule": "biggest"});
    assert!(serde_json::from_value::<InstallVars>(v).is_err());
}
