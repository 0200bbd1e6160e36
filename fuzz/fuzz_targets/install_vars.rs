#![no_main]
//! An install request's variables as the API receives them (JSON) or the CLI
//! reads them (`--vars FILE.toml`): decoded, validated for the family, and
//! rendered with the family's built-in template and checked, as a request is
//! before it is accepted. None may panic.
//!
//! Input: one byte choosing the family, one choosing JSON or TOML, the text.

use libfuzzer_sys::fuzz_target;
use rackboot_core::OsFamily;
use rackboot_install::{InstallVars, TemplateChoice, render, sample::sample_machine};

const FAMILIES: [OsFamily; 6] = [
    OsFamily::Rhel,
    OsFamily::Esxi,
    OsFamily::Debian,
    OsFamily::Ubuntu,
    OsFamily::Suse,
    OsFamily::Windows,
];

fuzz_target!(|data: &[u8]| {
    let [family, format, text @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let family = FAMILIES[usize::from(*family) % FAMILIES.len()];
    let vars: InstallVars = match format % 2 {
        0 => match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return,
        },
        _ => match toml::from_str(text) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    let (version, _, secrets) = sample_machine(family);
    if vars.validate(family, &secrets).is_ok() {
        let _ = render(family, version, TemplateChoice::Builtin, &vars, &secrets);
    }
});
