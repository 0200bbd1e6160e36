//! The pure half of `fleet-sim`: reading boot scripts and seeds, latency
//! percentiles, the agents' request logs, and the audit of a fleet deploy
//! (workflow records and the event log in, lost steps and peak concurrency
//! out). No sockets, processes or clocks here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

/// The agent token an iPXE script carries (`rackboot.token=HEX`), if any.
pub fn token_in_script(script: &str) -> Option<&str> {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rackboot.token="))
        .filter(|t| !t.is_empty())
}

/// The first-boot URL (cloud-init `phone_home`) in a NoCloud user-data.
pub fn booted_url_in_user_data(user_data: &str) -> Option<&str> {
    user_data
        .split_whitespace()
        .find(|w| w.contains("/booted/"))
        .map(|w| w.trim_matches(|c| c == '"' || c == '\'' || c == ','))
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
}

/// Latencies of one kind of request.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    micros: Vec<u64>,
    /// Requests that got no answer or an error status.
    pub errors: usize,
}

/// Percentiles of a [`Latencies`], in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub count: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latencies {
    pub fn add(&mut self, d: Duration) {
        self.micros.push(d.as_micros() as u64);
    }

    pub fn add_micros(&mut self, micros: u64) {
        self.micros.push(micros);
    }

    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// Nearest-rank percentiles; None without samples.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.micros.is_empty() {
            return None;
        }
        let mut v = self.micros.clone();
        v.sort_unstable();
        let rank = |q: f64| {
            let r = (q * v.len() as f64).ceil() as usize;
            v[r.clamp(1, v.len()) - 1] as f64 / 1000.0
        };
        Some(LatencySummary {
            count: v.len(),
            errors: self.errors,
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: *v.last().unwrap() as f64 / 1000.0,
        })
    }
}

/// What an agent request was, from its path (`/agent/v1/heartbeat`,
/// `/agent/v1/attempts/ID/result`...).
pub fn agent_request_kind(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    match path.rsplit('/').next().unwrap_or("") {
        "hello" => "hello",
        "heartbeat" => "heartbeat",
        "progress" => "progress",
        "result" => "result",
        "log" => "log",
        _ => "other",
    }
}

/// Adds the lines of an agent's `--request-log` (`PATH STATUS MICROS`) to
/// `by_kind`; status 0 (no answer) and non-2xx count as errors. Returns the
/// number of lines it could not read.
pub fn add_request_log(text: &str, by_kind: &mut BTreeMap<&'static str, Latencies>) -> usize {
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(path), Some(status), Some(micros), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            bad += 1;
            continue;
        };
        let (Ok(status), Ok(micros)) = (status.parse::<u16>(), micros.parse::<u64>()) else {
            bad += 1;
            continue;
        };
        let l = by_kind.entry(agent_request_kind(path)).or_default();
        l.add_micros(micros);
        if !(200..300).contains(&status) {
            l.errors += 1;
        }
    }
    bad
}

/// The outcome of a fleet deploy, read back from the server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audit {
    pub workflows: usize,
    /// Final workflow states: succeeded, failed, running (stuck)...
    pub by_state: BTreeMap<String, usize>,
    /// Step records over all workflows.
    pub steps: usize,
    /// Attempts over all steps; more than one per run step means retries.
    pub attempts: u64,
    pub retried_attempts: u64,
    /// One line per lost step (see [`audit`]).
    pub lost: Vec<String>,
    /// Most workflows running at once, from the started/ended events.
    pub peak_running: usize,
}

fn workflow_of(e: &Value) -> Option<&str> {
    e["data"]["workflow"].as_str()
}

/// Checks every workflow record against the event log. A step is **lost**
/// when its record does not end `succeeded` or `skipped`, or when its
/// attempts and the events disagree: every attempt the record counts must
/// have exactly one `step_started` event and exactly one end event
/// (`step_succeeded`, `step_failed`, or `step_skipped`), a succeeded step
/// exactly one `step_succeeded`, and no event may name an attempt the record
/// does not have. A workflow must also have exactly one `workflow_started`
/// and one end event. So an attempt that was handed out and never came back,
/// a result applied twice, or a step that silently never ran all count.
pub fn audit(workflows: &[Value], events: &[Value]) -> Audit {
    // (workflow, step) -> kind -> attempt numbers seen (0: the event has none).
    let mut step_events: HashMap<(&str, &str), HashMap<&str, Vec<u64>>> = HashMap::new();
    let mut wf_events: HashMap<&str, HashMap<&str, usize>> = HashMap::new();
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| e["id"].as_i64().unwrap_or(0));
    let mut running: HashSet<&str> = HashSet::new();
    let mut peak = 0;
    for e in &sorted {
        let Some(wf) = workflow_of(e) else {
            continue;
        };
        let kind = e["kind"].as_str().unwrap_or("");
        match kind {
            "step_started" | "step_succeeded" | "step_failed" | "step_skipped" => {
                let step = e["data"]["step"].as_str().unwrap_or("");
                let attempt = match kind {
                    "step_succeeded" => e["data"]["attempts"].as_u64(),
                    _ => e["data"]["attempt"].as_u64(),
                }
                .unwrap_or(0);
                step_events
                    .entry((wf, step))
                    .or_default()
                    .entry(kind)
                    .or_default()
                    .push(attempt);
            }
            "workflow_started" => {
                *wf_events.entry(wf).or_default().entry(kind).or_default() += 1;
                running.insert(wf);
                peak = peak.max(running.len());
            }
            "workflow_succeeded" | "workflow_failed" | "workflow_aborted" => {
                *wf_events.entry(wf).or_default().entry("ended").or_default() += 1;
                running.remove(wf);
            }
            _ => {}
        }
    }
    let mut a = Audit {
        workflows: workflows.len(),
        peak_running: peak,
        ..Audit::default()
    };
    let none = HashMap::new();
    for wf in workflows {
        let id = wf["id"].as_str().unwrap_or("?");
        let state = wf["state"].as_str().unwrap_or("?");
        *a.by_state.entry(state.to_string()).or_default() += 1;
        let counts = wf_events.get(id);
        let count = |k: &str| counts.and_then(|c| c.get(k)).copied().unwrap_or(0);
        let short = &id[..id.len().min(8)];
        if count("workflow_started") != 1 || count("ended") != 1 {
            a.lost.push(format!(
                "workflow {short}: {} workflow_started and {} end events (want 1 and 1)",
                count("workflow_started"),
                count("ended")
            ));
        }
        for s in wf["steps"].as_array().into_iter().flatten() {
            a.steps += 1;
            let name = s["name"].as_str().unwrap_or("?");
            let step_state = s["state"].as_str().unwrap_or("?");
            let attempts = s["attempts"].as_u64().unwrap_or(0);
            a.attempts += attempts;
            if step_state == "succeeded" {
                a.retried_attempts += attempts.saturating_sub(1);
            }
            let ev = step_events.get(&(id, name)).unwrap_or(&none);
            let of = |k: &str| ev.get(k).cloned().unwrap_or_default();
            let started = of("step_started");
            let succeeded = of("step_succeeded");
            let failed = of("step_failed");
            let skipped = of("step_skipped");
            let mut why = Vec::new();
            if !matches!(step_state, "succeeded" | "skipped") {
                why.push(format!("ended {step_state}"));
            }
            let mut started_sorted = started.clone();
            started_sorted.sort_unstable();
            if started_sorted != (1..=attempts).collect::<Vec<_>>() {
                why.push(format!(
                    "{attempts} attempt(s) recorded but step_started for attempts {started_sorted:?}"
                ));
            }
            let ends = succeeded.len() + failed.len() + skipped.len();
            let want_ends = (attempts as usize).max(usize::from(step_state == "skipped"));
            if ends != want_ends {
                why.push(format!(
                    "{ends} end event(s) for {want_ends} attempt(s) ({} succeeded, {} failed, {} skipped)",
                    succeeded.len(),
                    failed.len(),
                    skipped.len()
                ));
            }
            if step_state == "succeeded" && succeeded != [attempts] {
                why.push(format!(
                    "succeeded at attempt {attempts} but step_succeeded for {succeeded:?}"
                ));
            }
            if let Some(extra) = failed.iter().find(|n| **n == 0 || **n > attempts) {
                why.push(format!("step_failed names attempt {extra}"));
            }
            if !why.is_empty() {
                a.lost
                    .push(format!("workflow {short} step {name}: {}", why.join("; ")));
            }
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scripts_and_seeds() {
        let script = "#!ipxe\nkernel http://127.0.0.1:9/ramdisk/vmlinuz console=ttyS0 rackboot.url=http://127.0.0.1:9 rackboot.token=abcdef0123456789\ninitrd http://127.0.0.1:9/ramdisk/initramfs.img\nboot\n";
        assert_eq!(token_in_script(script), Some("abcdef0123456789"));
        assert_eq!(token_in_script("#!ipxe\nexit\n"), None);
        assert_eq!(token_in_script("rackboot.token= x"), None);
        let user_data = "#cloud-config\nphone_home:\n  url: \"http://127.0.0.1:9/deploy/42/booted/tok\"\n  post: []\n";
        assert_eq!(
            booted_url_in_user_data(user_data),
            Some("http://127.0.0.1:9/deploy/42/booted/tok")
        );
        assert_eq!(booted_url_in_user_data("#cloud-config\n"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut l = Latencies::default();
        assert_eq!(l.summary(), None);
        for ms in 1..=100u64 {
            l.add(Duration::from_millis(ms));
        }
        let s = l.summary().unwrap();
        assert_eq!(
            (s.count, s.p50_ms, s.p99_ms, s.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        let mut one = Latencies::default();
        one.add_micros(1500);
        let s = one.summary().unwrap();
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (1.5, 1.5, 1.5));
    }

    #[test]
    fn request_logs_by_kind() {
        let mut by = BTreeMap::new();
        let bad = add_request_log(
            "/agent/v1/hello 200 1200\n/agent/v1/heartbeat 200 800\n/agent/v1/heartbeat 0 10000000\n\
             /agent/v1/attempts/0b6e/result 200 3000\n/agent/v1/log?attempt=x 204 10\ngarbage\n/a 2x 1\n",
            &mut by,
        );
        assert_eq!(bad, 2);
        assert_eq!(by["heartbeat"].len(), 2);
        assert_eq!(by["heartbeat"].errors, 1);
        assert_eq!(by["result"].len(), 1);
        assert_eq!(by["log"].len(), 1);
        assert_eq!(by["hello"].summary().unwrap().max_ms, 1.2);
    }

    fn ev(id: i64, kind: &str, wf: &str, data: Value) -> Value {
        let mut data = data;
        data["workflow"] = json!(wf);
        json!({"id": id, "kind": kind, "data": data})
    }

    fn step(name: &str, state: &str, attempts: u64) -> Value {
        json!({"name": name, "state": state, "attempts": attempts})
    }

    #[test]
    fn a_clean_run_has_no_lost_steps() {
        let wfs = [json!({"id": "w1", "state": "succeeded", "steps": [
            step("inspect", "succeeded", 1), step("write", "succeeded", 2), step("raid", "skipped", 0)]})];
        let events = [
            ev(1, "workflow_started", "w1", json!({})),
            ev(
                2,
                "step_started",
                "w1",
                json!({"step": "inspect", "attempt": 1}),
            ),
            ev(
                3,
                "step_succeeded",
                "w1",
                json!({"step": "inspect", "attempts": 1}),
            ),
            ev(4, "step_skipped", "w1", json!({"step": "raid"})),
            ev(
                5,
                "step_started",
                "w1",
                json!({"step": "write", "attempt": 1}),
            ),
            ev(
                6,
                "step_failed",
                "w1",
                json!({"step": "write", "attempt": 1}),
            ),
            ev(
                7,
                "step_started",
                "w1",
                json!({"step": "write", "attempt": 2}),
            ),
            ev(
                8,
                "step_succeeded",
                "w1",
                json!({"step": "write", "attempts": 2}),
            ),
            ev(9, "workflow_succeeded", "w1", json!({})),
        ];
        let a = audit(&wfs, &events);
        assert_eq!(a.lost, Vec::<String>::new());
        assert_eq!((a.steps, a.attempts, a.retried_attempts), (3, 3, 1));
        assert_eq!(a.by_state["succeeded"], 1);
        assert_eq!(a.peak_running, 1);
    }

    #[test]
    fn lost_steps_are_named() {
        let wfs = [
            // An attempt that never ended, and a stuck workflow.
            json!({"id": "w1", "state": "running", "steps": [step("write", "running", 1)]}),
            // A result applied twice.
            json!({"id": "w2", "state": "succeeded", "steps": [step("inspect", "succeeded", 1)]}),
            // A step recorded as succeeded that never started.
            json!({"id": "w3", "state": "succeeded", "steps": [step("erase", "succeeded", 1)]}),
        ];
        let events = [
            ev(1, "workflow_started", "w1", json!({})),
            ev(2, "workflow_started", "w2", json!({})),
            ev(3, "workflow_started", "w3", json!({})),
            ev(
                4,
                "step_started",
                "w1",
                json!({"step": "write", "attempt": 1}),
            ),
            ev(
                5,
                "step_started",
                "w2",
                json!({"step": "inspect", "attempt": 1}),
            ),
            ev(
                6,
                "step_succeeded",
                "w2",
                json!({"step": "inspect", "attempts": 1}),
            ),
            ev(
                7,
                "step_succeeded",
                "w2",
                json!({"step": "inspect", "attempts": 1}),
            ),
            ev(
                8,
                "step_succeeded",
                "w3",
                json!({"step": "erase", "attempts": 1}),
            ),
            ev(9, "workflow_succeeded", "w2", json!({})),
            ev(10, "workflow_succeeded", "w3", json!({})),
        ];
        let a = audit(&wfs, &events);
        assert_eq!(a.peak_running, 3);
        assert_eq!(a.by_state["running"], 1);
        assert_eq!(a.lost.len(), 4, "{:#?}", a.lost);
        assert!(
            a.lost[0].contains("w1: 1 workflow_started and 0 end"),
            "{}",
            a.lost[0]
        );
        assert!(a.lost[1].contains("ended running") && a.lost[1].contains("0 end event(s) for 1"));
        assert!(
            a.lost[2].contains("w2 step inspect: 2 end event(s)"),
            "{}",
            a.lost[2]
        );
        assert!(
            a.lost[3].contains("w3 step erase")
                && a.lost[3].contains("step_started for attempts []")
        );
    }
}
