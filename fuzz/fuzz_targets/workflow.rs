#![no_main]
//! A workflow definition file as an operator uploads it
//! (`PUT /api/v1/workflow-definitions`): parsed and checked, with errors
//! naming lines. None may panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match rackboot_steps::file::parse(text) {
            Ok(def) => {
                let _ = format!("{def:?}");
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
