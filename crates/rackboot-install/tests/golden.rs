//! Golden files of every family and version for a few machines. Regenerate
//! with `UPDATE_GOLDEN=1 cargo test -p rackboot-install --test golden`.

mod common;

use std::path::PathBuf;

use rackboot_install::{TemplateChoice, render};

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
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut expected_files = Vec::new();
    let mut failures = Vec::new();
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
            let mut files = vec![(
                format!("{family}-{version}-{machine}.{}", extension(*family)),
                rendered.body.clone(),
            )];
            for c in &rendered.companions {
                files.push((
                    format!("{family}-{version}-{machine}.{}", c.file_name),
                    c.body.clone(),
                ));
            }
            for (name, body) in files {
                let path = golden_dir().join(&name);
                expected_files.push(name.clone());
                if update {
                    std::fs::write(&path, &body).unwrap();
                    continue;
                }
                match std::fs::read_to_string(&path) {
                    Ok(want) if want == body => {}
                    Ok(_) => failures.push(format!("{name} differs (UPDATE_GOLDEN=1 to accept)")),
                    Err(e) => failures.push(format!("{name}: {e} (UPDATE_GOLDEN=1 to create)")),
                }
            }
        }
    }
    // No stale golden files left behind.
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if !expected_files.contains(&name) {
            if update {
                std::fs::remove_file(golden_dir().join(&name)).unwrap();
            } else {
                failures.push(format!("{name} is not produced by any case (stale)"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(expected_files.len() >= 50, "{}", expected_files.len());
}
