//! Golden files of every family and version for a few machines, and of the
//! network files of deployed images. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p rackboot-install --test golden`.

mod common;

use std::path::PathBuf;

use rackboot_install::{
    TargetFamily, TemplateChoice, render, render_nocloud_seed, render_target_network,
    target_cleanup_paths,
};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn extension(family: rackboot_core::OsFamily) -> &'static str {
    match rackboot_install::file_name(family).0 {
        "ks.cfg" => "ks",
        "preseed.cfg" => "preseed",
        "user-data" => "user-data",
        _ => "xml",
    }
}

#[test]
fn golden_files() {
    let mut files = Vec::new();
    for (family, version) in common::RELEASES {
        for (machine, vars) in common::machines(*family) {
            let rendered = render(
                *family,
                version,
                TemplateChoice::Builtin,
                &vars,
                &common::secrets(*family),
            )
            .unwrap_or_else(|e| panic!("{family} {version} {machine}: {e}"));
            files.push((
                format!("{family}-{version}-{machine}.{}", extension(*family)),
                rendered.body.clone(),
            ));
            for c in &rendered.companions {
                files.push((
                    format!("{family}-{version}-{machine}.{}", c.file_name),
                    c.body.clone(),
                ));
            }
        }
    }
    let failures = common::check_golden(&golden_dir(), &files);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(files.len() >= 50, "{}", files.len());
}

/// A deployed image's network files per target family, and the NoCloud seed,
/// under tests/golden-network/CASE/: `FAMILY/<path in the root>`, with
/// `FAMILY.files` listing each file's mode and the paths removed first.
#[test]
fn network_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden-network");
    let mut files = Vec::new();
    for (case, net, seed) in common::network_cases() {
        for family in TargetFamily::ALL {
            let rendered = render_target_network(family, &net)
                .unwrap_or_else(|e| panic!("{case} {family}: {e}"));
            let mut manifest = String::new();
            for path in target_cleanup_paths(family) {
                manifest.push_str(&format!("remove {path}\n"));
            }
            for f in &rendered {
                manifest.push_str(&format!("{:04o} {}\n", f.mode, f.path));
                files.push((format!("{case}/{family}{}", f.path), f.content.clone()));
            }
            files.push((format!("{case}/{family}.files"), manifest));
        }
        for (name, body) in render_nocloud_seed(&net, &seed).unwrap() {
            files.push((format!("{case}/nocloud/{name}"), body));
        }
    }
    let failures = common::check_golden(&dir, &files);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
