//! The built-in workflows, written in the workflow file format (workflows/*.toml)
//! so that they are checked like an operator's and serve as examples.

use std::sync::LazyLock;

use rackboot_core::Lifecycle;

use crate::file::{WorkflowDef, parse};

const SOURCES: [(&str, &str); 7] = [
    ("deploy", include_str!("../workflows/deploy.toml")),
    ("inspect", include_str!("../workflows/inspect.toml")),
    ("clean", include_str!("../workflows/clean.toml")),
    ("undeploy", include_str!("../workflows/undeploy.toml")),
    ("rescue", include_str!("../workflows/rescue.toml")),
    ("unrescue", include_str!("../workflows/unrescue.toml")),
    ("verify", include_str!("../workflows/verify.toml")),
];

static BUILTIN: LazyLock<Vec<WorkflowDef>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|(name, text)| parse(text).unwrap_or_else(|e| panic!("built-in workflow {name}: {e}")))
        .collect()
});

/// Every built-in workflow.
pub fn all() -> &'static [WorkflowDef] {
    &BUILTIN
}

/// A built-in workflow by name.
pub fn get(name: &str) -> Option<&'static WorkflowDef> {
    BUILTIN.iter().find(|d| d.name == name)
}

/// The built-in workflow that implements `lifecycle` (deploy for Deploy...).
pub fn for_lifecycle(lifecycle: Lifecycle) -> Option<&'static WorkflowDef> {
    BUILTIN.iter().find(|d| d.lifecycle == lifecycle)
}

/// The text of a built-in workflow, for `rackboot workflow show-definition`
/// and as a starting point for an operator's own.
pub fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_is_named_after_its_file() {
        for (name, _) in SOURCES {
            let def = get(name).unwrap();
            assert_eq!(def.name, name);
        }
        let deploy = get("deploy").unwrap();
        let reboot = deploy.steps.iter().find(|s| s.name == "reboot").unwrap();
        assert_eq!(reboot.after, ["configure", "boot-from-disk"]);
        assert_eq!(for_lifecycle(Lifecycle::Undeploy).unwrap().name, "undeploy");
    }
}
