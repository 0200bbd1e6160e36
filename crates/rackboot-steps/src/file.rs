//! Workflow definition files (TOML). A file is checked completely when it is
//! loaded, and every problem is reported with its line:
//!
//! ```toml
//! name = "burn-in"
//! description = "boot the agent, inspect, erase everything, power off"
//! lifecycle = "none"           # verify, inspect, clean, deploy, undeploy, rescue, unrescue, none
//!
//! [[step]]
//! name = "boot-agent"
//! uses = "boot_agent"
//! timeout = "20m"              # or seconds: 1200
//!
//! [[step]]
//! name = "erase"
//! uses = "erase"
//! with = { mode = "full" }
//! retry = { attempts = 2, backoff = "30s", backoff_max = "5m", on = "transient" }
//!
//! [[step]]                     # `after` defaults to the step above; steps with
//! name = "off"                 # the same `after` run in parallel
//! uses = "power_off"
//! after = ["erase"]
//! ```

use std::collections::HashSet;

use rackboot_core::{Lifecycle, RetryPolicy, machine::validate_name};
use serde::Deserialize;
use toml::Spanned;

use crate::library::StepKind;

/// A checked workflow definition, whatever file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowDef {
    pub name: String,
    pub description: String,
    pub lifecycle: Lifecycle,
    pub steps: Vec<StepDef>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepDef {
    pub name: String,
    pub kind: StepKind,
    pub with: serde_json::Value,
    pub after: Vec<String>,
    pub timeout_secs: u64,
    pub retry: RetryPolicy,
}

/// A problem in a workflow file, at a line (1-based; 0 when the file as a
/// whole is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    lifecycle: Spanned<String>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Spanned<String>,
    uses: Spanned<String>,
    #[serde(default)]
    after: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    with: Option<Spanned<toml::Table>>,
    #[serde(default)]
    timeout: Option<Spanned<toml::Value>>,
    #[serde(default)]
    retry: Option<Spanned<RawRetry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    attempts: Option<u32>,
    backoff: Option<toml::Value>,
    backoff_max: Option<toml::Value>,
    /// `transient` (default) or `any`.
    on: Option<String>,
}

/// Bounds on what a file may ask for.
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
const MAX_ATTEMPTS: u32 = 20;
const MAX_BACKOFF_SECS: u64 = 3600;

/// Parses and checks a workflow file.
pub fn parse(text: &str) -> Result<WorkflowDef, FileError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let at = |span: std::ops::Range<usize>, message: String| FileError {
        line: line_of(span.start),
        message,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| FileError {
        line: e.span().map_or(0, |s| line_of(s.start)),
        message: e.message().trim().to_string(),
    })?;

    validate_name("workflow name", raw.name.get_ref()).map_err(|m| at(raw.name.span(), m))?;
    let lifecycle = Lifecycle::parse(raw.lifecycle.get_ref()).ok_or_else(|| {
        at(
            raw.lifecycle.span(),
            format!(
                "unknown lifecycle {:?}: use verify, inspect, clean, deploy, undeploy, rescue, unrescue or none",
                raw.lifecycle.get_ref()
            ),
        )
    })?;
    if raw.step.is_empty() {
        return Err(FileError {
            line: 0,
            message: "a workflow needs at least one [[step]]".into(),
        });
    }

    let mut steps: Vec<StepDef> = Vec::with_capacity(raw.step.len());
    let mut names = HashSet::new();
    // Steps that run after a boot_agent step (or are one).
    let mut agent_up: HashSet<String> = HashSet::new();
    for raw_step in &raw.step {
        let s = raw_step.get_ref();
        let name = s.name.get_ref().clone();
        validate_name("step name", &name).map_err(|m| at(s.name.span(), m))?;
        if !names.insert(name.clone()) {
            return Err(at(s.name.span(), format!("step {name:?} is defined twice")));
        }
        let kind = StepKind::parse(s.uses.get_ref()).ok_or_else(|| {
            at(
                s.uses.span(),
                format!(
                    "unknown step {:?}; the library has: {}",
                    s.uses.get_ref(),
                    StepKind::ALL.map(|k| k.as_str()).join(", ")
                ),
            )
        })?;
        let after = match &s.after {
            Some(list) => {
                for a in list.get_ref() {
                    if !steps.iter().any(|d| &d.name == a) {
                        return Err(at(
                            list.span(),
                            format!(
                                "step {name:?} runs after {a:?}, which is not defined above it"
                            ),
                        ));
                    }
                }
                list.get_ref().clone()
            }
            None => steps
                .last()
                .map(|d| vec![d.name.clone()])
                .unwrap_or_default(),
        };
        let with = match &s.with {
            Some(t) => {
                serde_json::to_value(t.get_ref()).map_err(|e| at(t.span(), e.to_string()))?
            }
            None => serde_json::Value::Null,
        };
        kind.parse_with(&with).map_err(|m| {
            let span = s.with.as_ref().map_or(s.uses.span(), |w| w.span());
            at(span, format!("step {name:?} ({kind}): with: {m}"))
        })?;
        let after_agent = after.iter().any(|a| agent_up.contains(a));
        if kind.needs_agent() && !after_agent {
            return Err(at(
                raw_step.span(),
                format!("step {name:?} ({kind}) runs in the agent: put it after a boot_agent step"),
            ));
        }
        if kind == StepKind::BootAgent || after_agent {
            agent_up.insert(name.clone());
        }
        let timeout_secs = match &s.timeout {
            Some(t) => {
                let secs = duration_secs(t.get_ref())
                    .map_err(|m| at(t.span(), format!("timeout: {m}")))?;
                if secs == 0 || secs > MAX_TIMEOUT_SECS {
                    return Err(at(
                        t.span(),
                        format!("timeout: between 1s and {MAX_TIMEOUT_SECS}s"),
                    ));
                }
                secs
            }
            None => kind.default_timeout_secs(),
        };
        let retry = match &s.retry {
            Some(r) => {
                retry_policy(kind, r.get_ref()).map_err(|m| at(r.span(), format!("retry: {m}")))?
            }
            None => kind.default_retry(),
        };
        steps.push(StepDef {
            name,
            kind,
            with,
            after,
            timeout_secs,
            retry,
        });
    }
    Ok(WorkflowDef {
        name: raw.name.into_inner(),
        description: raw.description,
        lifecycle,
        steps,
    })
}

fn retry_policy(kind: StepKind, r: &RawRetry) -> Result<RetryPolicy, String> {
    let mut p = kind.default_retry();
    if let Some(a) = r.attempts {
        if a == 0 || a > MAX_ATTEMPTS {
            return Err(format!("attempts: between 1 and {MAX_ATTEMPTS}"));
        }
        p.max_attempts = a;
    }
    for (field, value, slot) in [
        ("backoff", &r.backoff, &mut p.backoff_secs),
        ("backoff_max", &r.backoff_max, &mut p.backoff_max_secs),
    ] {
        if let Some(v) = value {
            let secs = duration_secs(v).map_err(|m| format!("{field}: {m}"))?;
            if secs > MAX_BACKOFF_SECS {
                return Err(format!("{field}: at most {MAX_BACKOFF_SECS}s"));
            }
            *slot = secs as u32;
        }
    }
    if p.backoff_max_secs < p.backoff_secs {
        p.backoff_max_secs = p.backoff_secs;
    }
    match r.on.as_deref() {
        None | Some("transient") => p.transient_only = true,
        Some("any") => p.transient_only = false,
        Some(other) => return Err(format!("on: {other:?}: use transient or any")),
    }
    Ok(p)
}

/// `90`, `"90s"`, `"20m"`, `"2h"`, `"1d"`.
pub fn duration_secs(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        toml::Value::String(s) => parse_duration(s),
        other => Err(format!(
            "{other} is not a duration (use 90, \"90s\", \"20m\", \"2h\")"
        )),
    }
}

pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use \"90s\", \"20m\", \"2h\")"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "burn-in"
description = "test"
lifecycle = "none"

[[step]]
name = "boot-agent"
uses = "boot_agent"
timeout = "20m"

[[step]]
name = "inspect"
uses = "inspect"
with = { lldp_wait_secs = 35 }

[[step]]
name = "erase"
uses = "erase"
after = ["inspect"]
with = { mode = "full" }
retry = { attempts = 2, backoff = "30s", backoff_max = "5m", on = "any" }

[[step]]
name = "soak"
uses = "wait"
after = ["inspect"]
with = { secs = 600 }

[[step]]
name = "off"
uses = "power_off"
after = ["erase", "soak"]
"#;

    #[test]
    fn a_good_file_parses_with_defaults_and_a_dag() {
        let def = parse(GOOD).unwrap();
        assert_eq!(def.name, "burn-in");
        assert_eq!(def.lifecycle, Lifecycle::None);
        let names: Vec<&str> = def.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["boot-agent", "inspect", "erase", "soak", "off"]);
        assert_eq!(def.steps[0].timeout_secs, 1200);
        assert_eq!(
            def.steps[1].after,
            ["boot-agent"],
            "defaults to the step above"
        );
        assert_eq!(def.steps[2].retry.max_attempts, 2);
        assert_eq!(def.steps[2].retry.backoff_secs, 30);
        assert!(!def.steps[2].retry.transient_only);
        assert_eq!(def.steps[4].after, ["erase", "soak"]);
        assert_eq!(def.steps[1].with["lldp_wait_secs"], 35);
    }

    /// Each broken file, the line reported and words of the reason.
    #[test]
    fn errors_name_the_line_and_the_reason() {
        let table: &[(&str, usize, &str)] = &[
            (
                "name = \"x\"\nlifecycle = \"none\"\n[[step]]\nname = \"a\"\nuses = \"teleport\"\n",
                5,
                "unknown step \"teleport\"",
            ),
            (
                "name = \"x\"\nlifecycle = \"sometimes\"\n",
                2,
                "unknown lifecycle",
            ),
            (
                "name = \"x\"\nlifecycle = \"none\"\n",
                0,
                "at least one [[step]]",
            ),
            (
                "name = \"x\"\nlifecycle = \"none\"\ncolour = 1\n",
                3,
                "unknown field `colour`",
            ),
            (
                "name = \"x\"\nlifecycle = \"none\"\n[[step]]\nname = \"a\"\nuses = \"inspect\"\n",
                3,
                "put it after a boot_agent step",
            ),
            (
                "name = \"x\"\nlifecycle = \"none\"\n[[step]]\nname = \"a\"\nuses = \"wait\"\nwith = { secs = 5 }\n[[step]]\nname = \"a\"\nuses = \"power_off\"\n",
                8,
                "defined twice",
            ),
            (
                "name = \"x\"\nlifecycle = \"none\"\n[[step]]\nname = \"a\"\nuses = \"power_on\"\nafter = [\"b\"]\n",
                6,
                "not defined above it",
            ),
            (
                "name = \"x\"\nlifecycle = \"none\"\n[[step]]\nname = \"a\"\nuses = \"wait\"\nwith = { seconds = 5 }\n",
                6,
                "unknown field `seconds`",
            ),
            (
                "name = \"x\"\nlifecycle = \"none\"\n[[step]]\nname = \"a\"\nuses = \"power_on\"\ntimeout = \"5 fortnights\"\n",
                6,
                "unit must be",
            ),
            (
                "name = \"x\"\nlifecycle = \"none\"\n[[step]]\nname = \"a\"\nuses = \"power_on\"\nretry = { attempts = 0 }\n",
                6,
                "attempts: between 1",
            ),
            (
                "name = \"x y\"\nlifecycle = \"none\"\n",
                1,
                "invalid workflow name",
            ),
            ("name = \"x\"\nlifecycle = \"none\"\n[[step]\n", 3, ""),
        ];
        for (text, line, words) in table {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, *line, "{text}\n→ {e}");
            assert!(e.message.contains(words), "{text}\n→ {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("20m"), Ok(1200));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
