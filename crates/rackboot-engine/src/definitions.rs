//! Workflow definitions: the built-in ones and operators' own, which live as
//! `<name>.toml` files in the workflows directory. A file is checked when it
//! is loaded; one that does not check is reported with its line and left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rackboot_steps::file::{self, FileError, WorkflowDef};
use serde::Serialize;
use utoipa::ToSchema;

/// Every definition the engine can run, by name.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    defs: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    def: WorkflowDef,
    source: String,
    builtin: bool,
}

/// A definition as the API lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DefinitionInfo {
    pub name: String,
    pub description: String,
    pub lifecycle: String,
    pub builtin: bool,
    /// Step names in order, with the library step each uses.
    pub steps: Vec<String>,
    /// The TOML text.
    pub source: String,
}

/// A file in the workflows directory that did not load.
#[derive(Debug, Clone)]
pub struct LoadProblem {
    pub path: PathBuf,
    pub error: String,
}

impl Definitions {
    pub fn builtin() -> Definitions {
        let mut defs = BTreeMap::new();
        for def in rackboot_steps::builtin::all() {
            defs.insert(
                def.name.clone(),
                Entry {
                    def: def.clone(),
                    source: rackboot_steps::builtin::source(&def.name)
                        .unwrap_or_default()
                        .to_string(),
                    builtin: true,
                },
            );
        }
        Definitions { defs }
    }

    /// The built-ins plus every `*.toml` of `dir` that checks. An operator's
    /// file may not reuse a built-in's name.
    pub fn load(dir: Option<&Path>) -> (Definitions, Vec<LoadProblem>) {
        let mut defs = Definitions::builtin();
        let mut problems = Vec::new();
        let Some(dir) = dir else {
            return (defs, problems);
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (defs, problems);
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let result = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| defs.add(&text).map_err(|e| e.to_string()));
            if let Err(error) = result {
                problems.push(LoadProblem { path, error });
            }
        }
        (defs, problems)
    }

    /// Checks `text` and adds (or replaces) an operator's definition.
    pub fn add(&mut self, text: &str) -> Result<WorkflowDef, FileError> {
        let def = file::parse(text)?;
        if self.defs.get(&def.name).is_some_and(|e| e.builtin) {
            return Err(FileError {
                line: 1,
                message: format!(
                    "{:?} is a built-in workflow; give yours another name",
                    def.name
                ),
            });
        }
        self.defs.insert(
            def.name.clone(),
            Entry {
                def: def.clone(),
                source: text.to_string(),
                builtin: false,
            },
        );
        Ok(def)
    }

    pub fn remove(&mut self, name: &str) -> Result<(), String> {
        match self.defs.get(name) {
            None => Err(format!("no workflow definition {name:?}")),
            Some(e) if e.builtin => Err(format!("{name:?} is built in and cannot be deleted")),
            Some(_) => {
                self.defs.remove(name);
                Ok(())
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&WorkflowDef> {
        self.defs.get(name).map(|e| &e.def)
    }

    pub fn names(&self) -> Vec<&str> {
        self.defs.keys().map(|k| k.as_str()).collect()
    }

    pub fn infos(&self) -> Vec<DefinitionInfo> {
        self.defs
            .values()
            .map(|e| DefinitionInfo {
                name: e.def.name.clone(),
                description: e.def.description.clone(),
                lifecycle: e.def.lifecycle.as_str().to_string(),
                builtin: e.builtin,
                steps: e
                    .def
                    .steps
                    .iter()
                    .map(|s| format!("{} ({})", s.name, s.kind))
                    .collect(),
                source: e.source.clone(),
            })
            .collect()
    }
}

/// The file an operator's definition is stored in.
pub fn file_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_files_load_beside_the_builtins_and_bad_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("burn-in.toml"),
            "name = \"burn-in\"\nlifecycle = \"none\"\n[[step]]\nname = \"a\"\nuses = \"wait\"\nwith = { secs = 1 }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("broken.toml"),
            "name = \"broken\"\nlifecycle = \"none\"\n[[step]]\nname = \"a\"\nuses = \"nope\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("deploy.toml"),
            "name = \"deploy\"\nlifecycle = \"none\"\n[[step]]\nname = \"a\"\nuses = \"power_on\"\n",
        )
        .unwrap();
        let (defs, problems) = Definitions::load(Some(dir.path()));
        assert!(defs.get("burn-in").is_some());
        assert!(defs.get("deploy").unwrap().steps.len() > 1, "built-in kept");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.error.contains("line 5")));
        assert!(problems.iter().any(|p| p.error.contains("built-in")));
        let mut defs = defs;
        assert!(defs.remove("deploy").is_err());
        defs.remove("burn-in").unwrap();
        assert!(defs.get("burn-in").is_none());
    }
}
