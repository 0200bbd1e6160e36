//! The machine list filtered and sorted, and the fleet's summary, for people
//! looking at a whole fleet (the dashboard, `GET /api/v1/machines?state=...`).
//!
//! Filters and sorts are answered from the in-memory snapshot (a scan of
//! 10,000 machines takes about a millisecond); the plain list by name keeps
//! its indexed store path. A page of a sorted list is cut after the cursor
//! `KEY/NAME` of its last machine (names hold no `/`), so a page costs the same
//! wherever it is and a machine changing between pages is not shown twice.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use rackboot_core::fact_match::FactMatch;
use rackboot_core::{Machine, ProvisionState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;

/// The response header counting every machine a filtered list keeps.
pub const TOTAL_COUNT: &str = "x-total-count";

/// Query of `GET /api/v1/machines`: paging, filters and sort.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MachineListQuery {
    /// At most this many machines (1 to 10,000; default 1,000).
    pub limit: Option<u32>,
    /// Where to continue: the `X-Next-Cursor` header of the previous page.
    pub cursor: Option<String>,
    /// Only machines whose name contains this text (case-insensitive).
    pub name: Option<String>,
    /// Only machines with these labels: `KEY=VALUE` (or `KEY`: the label is
    /// set), several separated by commas.
    pub label: Option<String>,
    /// Only machines in these lifecycle states, separated by commas;
    /// `failed` stands for every failed state, `busy` for every state in
    /// which a workflow runs.
    pub state: Option<String>,
    /// Only machines whose inspected facts match, as in selectors:
    /// `memory_gib=>=60`, `cpu_model=*Xeon*`; several separated by commas.
    pub fact: Option<String>,
    /// `name` (default), `state`, `state_changed`, `updated` or `created`;
    /// a leading `-` sorts descending. Ties are broken by name.
    pub sort: Option<String>,
}

impl MachineListQuery {
    /// True when the plain list by name (the store's indexed path) answers it.
    pub fn is_plain(&self) -> bool {
        self.name.is_none()
            && self.label.is_none()
            && self.state.is_none()
            && self.fact.is_none()
            && matches!(self.sort.as_deref(), None | Some("name"))
    }
}

/// Which machines a list keeps; parsed once from the query.
#[derive(Debug, Default)]
pub struct MachineFilter {
    /// Lower-case.
    name: Option<String>,
    /// A key and, when given, the value it must have.
    labels: Vec<(String, Option<String>)>,
    /// Any of these; empty means any state.
    states: Vec<ProvisionState>,
    facts: Vec<FactMatch>,
}

/// Comma-separated items, trimmed, empty ones dropped.
fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl MachineFilter {
    /// The filter of a query; errors name the parameter.
    pub fn parse(q: &MachineListQuery) -> ApiResult<MachineFilter> {
        let mut f = MachineFilter {
            name: q
                .name
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_lowercase),
            ..MachineFilter::default()
        };
        for item in items(q.label.as_deref().unwrap_or("")) {
            f.labels.push(match item.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
                None => (item.to_string(), None),
            });
        }
        for item in items(q.state.as_deref().unwrap_or("")) {
            match item {
                "failed" => f
                    .states
                    .extend(ProvisionState::ALL.iter().filter(|s| s.is_failed())),
                "busy" => f
                    .states
                    .extend(ProvisionState::ALL.iter().filter(|s| s.is_transitional())),
                _ => f.states.push(ProvisionState::parse(item).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "state: unknown state {item:?}; use failed, busy or one of {}",
                        ProvisionState::ALL.map(|s| s.as_str()).join(", ")
                    ))
                })?),
            }
        }
        for item in items(q.fact.as_deref().unwrap_or("")) {
            let (key, cond) = item.split_once('=').ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "fact: {item:?} is not KEY=CONDITION (e.g. memory_gib=>=60)"
                ))
            })?;
            f.facts.push(
                FactMatch::parse(key.trim(), cond)
                    .map_err(|e| ApiError::BadRequest(format!("fact: {key}: {e}")))?,
            );
        }
        Ok(f)
    }

    pub fn matches(&self, m: &Machine) -> bool {
        self.name
            .as_ref()
            .is_none_or(|n| m.name.to_lowercase().contains(n))
            && self.labels.iter().all(|(k, v)| match (m.labels.get(k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
            && (self.states.is_empty() || self.states.contains(&m.state))
            && (self.facts.is_empty()
                || m.facts
                    .as_ref()
                    .is_some_and(|facts| self.facts.iter().all(|f| f.matches(facts))))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortField {
    Name,
    /// Lifecycle order (`ProvisionState::ALL`).
    State,
    StateChanged,
    Updated,
    Created,
}

/// The order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineSort {
    field: SortField,
    descending: bool,
}

/// A time as a key that sorts as text: milliseconds since 1970, shifted
/// so times before it stay positive, zero-padded.
fn time_key(t: Option<DateTime<Utc>>) -> String {
    let ms = t.map_or(0, |t| t.timestamp_millis());
    format!("{:020}", (ms as i128 + (1i128 << 62)) as u64)
}

impl MachineSort {
    pub fn parse(s: Option<&str>) -> ApiResult<MachineSort> {
        let s = s.unwrap_or("name").trim();
        let (descending, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let field = match name {
            "name" => SortField::Name,
            "state" => SortField::State,
            "state_changed" => SortField::StateChanged,
            "updated" => SortField::Updated,
            "created" => SortField::Created,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "sort: {s:?}; use name, state, state_changed, updated or created, \
                     with a leading - for descending"
                )));
            }
        };
        Ok(MachineSort { field, descending })
    }

    /// What the list is ordered by, before the name; contains no `/`.
    fn key(&self, m: &Machine) -> String {
        match self.field {
            SortField::Name => String::new(),
            SortField::State => format!(
                "{:02}",
                ProvisionState::ALL
                    .iter()
                    .position(|s| *s == m.state)
                    .unwrap_or(99)
            ),
            SortField::StateChanged => time_key(m.state_changed_at),
            SortField::Updated => time_key(Some(m.updated_at)),
            SortField::Created => time_key(Some(m.created_at)),
        }
    }

    /// The cursor that continues after `m`.
    pub fn cursor(&self, m: &Machine) -> String {
        format!("{}/{}", self.key(m), m.name)
    }

    fn compare(&self, a: (&str, &str), b: (&str, &str)) -> Ordering {
        let o = a.cmp(&b);
        if self.descending { o.reverse() } else { o }
    }
}

/// One page of a filtered, sorted list.
#[derive(Debug)]
pub struct MachinePage {
    pub machines: Vec<Machine>,
    /// Every machine the filter keeps, on all pages.
    pub total: usize,
    /// Where the next page starts; `None` on the last.
    pub next: Option<String>,
}

/// The page of `machines` after `cursor` (a previous page's `next`), at
/// most `limit` long, that `filter` keeps, in `sort` order.
pub fn select<'a>(
    machines: impl Iterator<Item = &'a Machine>,
    filter: &MachineFilter,
    sort: MachineSort,
    cursor: Option<&str>,
    limit: usize,
) -> ApiResult<MachinePage> {
    let after = match cursor {
        Some(c) => Some(c.split_once('/').ok_or_else(|| {
            ApiError::BadRequest(format!("cursor: {c:?} is not a machine list cursor"))
        })?),
        None => None,
    };
    let mut kept: Vec<(String, &Machine)> = Vec::new();
    let mut total = 0;
    for m in machines.filter(|m| filter.matches(m)) {
        total += 1;
        let key = sort.key(m);
        if after.is_none_or(|a| sort.compare((&key, &m.name), a) == Ordering::Greater) {
            kept.push((key, m));
        }
    }
    // Only the page is ordered in full; the rest only needs to be behind it.
    let by = |a: &(String, &Machine), b: &(String, &Machine)| {
        sort.compare((&a.0, &a.1.name), (&b.0, &b.1.name))
    };
    if kept.len() > limit {
        kept.select_nth_unstable_by(limit, by);
        kept.truncate(limit);
    }
    kept.sort_unstable_by(by);
    let full = kept.len() >= limit;
    let next = if full {
        kept.last().map(|(_, m)| sort.cursor(m))
    } else {
        None
    };
    Ok(MachinePage {
        machines: kept.into_iter().map(|(_, m)| m.clone()).collect(),
        total,
        next,
    })
}

/// Query of `GET /api/v1/machines:summary`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// A machine whose workflow has run longer than this many seconds (its
    /// state unchanged) counts as waiting too long. Default 1,800.
    pub stuck_after_secs: Option<u64>,
}

/// Default of `stuck_after_secs`.
pub const DEFAULT_STUCK_AFTER_SECS: u64 = 1800;
/// Most machines listed in `waiting_too_long`.
pub const MAX_WAITING_LISTED: usize = 100;

/// Machines in one lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StateCount {
    pub state: ProvisionState,
    pub count: usize,
}

/// A machine whose workflow has run for long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WaitingMachine {
    pub name: String,
    pub state: ProvisionState,
    /// In this state since.
    pub since: DateTime<Utc>,
    pub seconds: u64,
}

/// The fleet at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FleetSummary {
    pub total: usize,
    /// Machines per lifecycle state: failed states first, then states in
    /// which a workflow runs, then the rest, each in lifecycle order.
    /// States without machines are left out.
    pub states: Vec<StateCount>,
    /// Machines in any failed state.
    pub failed: usize,
    /// Machines with a workflow running.
    pub busy: usize,
    pub maintenance: usize,
    /// Machines whose workflow has run longer than `stuck_after_secs`,
    /// longest first (at most 100 listed; `waiting_too_long_count` counts all).
    pub waiting_too_long: Vec<WaitingMachine>,
    pub waiting_too_long_count: usize,
    pub stuck_after_secs: u64,
}

/// Counts `machines` by state and finds those waiting too long at `now`.
pub fn summarize<'a>(
    machines: impl Iterator<Item = &'a Machine>,
    now: DateTime<Utc>,
    stuck_after_secs: u64,
) -> FleetSummary {
    let mut counts = [0usize; ProvisionState::ALL.len()];
    let (mut total, mut maintenance) = (0, 0);
    let mut waiting = Vec::new();
    for m in machines {
        total += 1;
        if let Some(i) = ProvisionState::ALL.iter().position(|s| *s == m.state) {
            counts[i] += 1;
        }
        if m.maintenance.is_some() {
            maintenance += 1;
        }
        if m.state.is_transitional() {
            let since = m.state_changed_at.unwrap_or(m.updated_at);
            let seconds = (now - since).num_seconds().max(0) as u64;
            if seconds > stuck_after_secs {
                waiting.push(WaitingMachine {
                    name: m.name.clone(),
                    state: m.state,
                    since,
                    seconds,
                });
            }
        }
    }
    let rank = |s: &ProvisionState| {
        if s.is_failed() {
            0
        } else if s.is_transitional() {
            1
        } else {
            2
        }
    };
    let mut states: Vec<StateCount> = ProvisionState::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(s, count)| StateCount { state: *s, count })
        .collect();
    // Stable: lifecycle order within each rank.
    states.sort_by_key(|c| rank(&c.state));
    let count_where = |f: fn(&ProvisionState) -> bool| -> usize {
        states.iter().filter(|c| f(&c.state)).map(|c| c.count).sum()
    };
    waiting.sort_by(|a, b| b.seconds.cmp(&a.seconds).then(a.name.cmp(&b.name)));
    let waiting_too_long_count = waiting.len();
    waiting.truncate(MAX_WAITING_LISTED);
    FleetSummary {
        total,
        failed: count_where(ProvisionState::is_failed),
        busy: count_where(ProvisionState::is_transitional),
        states,
        maintenance,
        waiting_too_long: waiting,
        waiting_too_long_count,
        stuck_after_secs,
    }
}

/// Machines per lifecycle state (failed and busy first), and those whose
/// workflow has run too long.
#[utoipa::path(get, path = "/api/v1/machines:summary", tag = "lifecycle", params(SummaryQuery),
    responses(
        (status = 200, description = "The fleet at a glance", body = FleetSummary),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ))]
pub async fn fleet_summary(
    axum::extract::State(state): axum::extract::State<ApiState>,
    ApiQuery(query): ApiQuery<SummaryQuery>,
) -> ApiResult<axum::Json<FleetSummary>> {
    let snapshot = state.fleet.snapshot();
    Ok(axum::Json(summarize(
        snapshot.machines.iter().map(|m| m.as_ref()),
        Utc::now(),
        query.stuck_after_secs.unwrap_or(DEFAULT_STUCK_AFTER_SECS),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackboot_core::{BootIntent, Facts, MacAddr};
    use std::collections::BTreeMap;

    fn machine(
        name: &str,
        state: ProvisionState,
        labels: &[(&str, &str)],
        minutes: i64,
    ) -> Machine {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Machine {
            id: uuid::Uuid::new_v4(),
            name: name.into(),
            macs: vec![MacAddr([0x52, 0x54, 0, 0, 0, 1])],
            uuid: None,
            arch: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            intent: BootIntent::Discover,
            bmc: None,
            state,
            state_reason: None,
            state_changed_at: Some(t - chrono::Duration::minutes(minutes)),
            maintenance: None,
            facts: None,
            facts_at: None,
            created_at: t - chrono::Duration::minutes(minutes),
            updated_at: t,
        }
    }

    fn query(pairs: &[(&str, &str)]) -> MachineListQuery {
        let mut q = MachineListQuery::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "name" => q.name = v,
                "label" => q.label = v,
                "state" => q.state = v,
                "fact" => q.fact = v,
                "sort" => q.sort = v,
                _ => unreachable!(),
            }
        }
        q
    }

    fn fleet() -> Vec<Machine> {
        use ProvisionState::*;
        let mut big = machine("db-01", Active, &[("rack", "r1"), ("role", "db")], 50);
        big.facts = Some(Facts {
            memory_bytes: 64 << 30,
            ..Facts::default()
        });
        let mut small = machine("web-02", Available, &[("rack", "r2")], 5);
        small.facts = Some(Facts {
            memory_bytes: 8 << 30,
            ..Facts::default()
        });
        vec![
            big,
            small,
            machine("web-01", DeployFailed, &[("rack", "r1")], 20),
            machine("Web-03", Deploying, &[], 40),
            machine("m-5254", Enrolled, &[], 1),
        ]
    }

    fn names(page: &MachinePage) -> Vec<&str> {
        page.machines.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn filters_keep_what_they_say() {
        let all = fleet();
        for (q, want) in [
            (vec![("name", "WEB")], vec!["Web-03", "web-01", "web-02"]),
            (vec![("label", "rack=r1")], vec!["db-01", "web-01"]),
            (vec![("label", "role")], vec!["db-01"]),
            (vec![("label", "rack=r1, role=db")], vec!["db-01"]),
            (vec![("state", "failed")], vec!["web-01"]),
            (vec![("state", "busy,enrolled")], vec!["Web-03", "m-5254"]),
            (vec![("state", "active")], vec!["db-01"]),
            (vec![("fact", "memory_gib=>=60")], vec!["db-01"]),
            (vec![("fact", "memory_gib=<60")], vec!["web-02"]),
            (vec![("name", "web"), ("label", "rack=r2")], vec!["web-02"]),
            (vec![("name", "nothing")], vec![]),
        ] {
            let f = MachineFilter::parse(&query(&q)).unwrap();
            let page =
                select(all.iter(), &f, MachineSort::parse(None).unwrap(), None, 100).unwrap();
            assert_eq!(names(&page), want, "{q:?}");
            assert_eq!(page.total, want.len());
            assert_eq!(page.next, None);
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        for (q, start) in [
            (vec![("state", "sleeping")], "state: "),
            (vec![("fact", "memory_gib")], "fact: "),
            (vec![("fact", "colour=blue")], "fact: colour"),
            (vec![("fact", "memory_gib=lots")], "fact: memory_gib"),
        ] {
            let err = MachineFilter::parse(&query(&q)).unwrap_err().to_string();
            assert!(err.starts_with(start), "{q:?}: {err}");
        }
        for bad in ["size", "-", "--name"] {
            let err = MachineSort::parse(Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("sort: "), "{bad}: {err}");
        }
        let f = MachineFilter::default();
        let err = select(
            fleet().iter(),
            &f,
            MachineSort::parse(None).unwrap(),
            Some("x"),
            2,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("cursor: "), "{err}");
    }

    #[test]
    fn sorted_pages_follow_each_other_without_gaps_or_repeats() {
        let all = fleet();
        let f = MachineFilter::default();
        for (sort, want) in [
            (
                "name",
                vec!["Web-03", "db-01", "m-5254", "web-01", "web-02"],
            ),
            (
                "-name",
                vec!["web-02", "web-01", "m-5254", "db-01", "Web-03"],
            ),
            // Lifecycle order: enrolled, available, deploying, deploy_failed, active.
            (
                "state",
                vec!["m-5254", "web-02", "Web-03", "web-01", "db-01"],
            ),
            (
                "-state",
                vec!["db-01", "web-01", "Web-03", "web-02", "m-5254"],
            ),
            // Oldest state change first.
            (
                "state_changed",
                vec!["db-01", "Web-03", "web-01", "web-02", "m-5254"],
            ),
            (
                "-created",
                vec!["m-5254", "web-02", "web-01", "Web-03", "db-01"],
            ),
        ] {
            let sort = MachineSort::parse(Some(sort)).unwrap();
            let mut seen = Vec::new();
            let mut cursor = None;
            for _ in 0..10 {
                let page = select(all.iter(), &f, sort, cursor.as_deref(), 2).unwrap();
                assert_eq!(page.total, 5);
                seen.extend(page.machines.iter().map(|m| m.name.clone()));
                cursor = page.next;
                if cursor.is_none() {
                    break;
                }
            }
            assert_eq!(seen, want, "{sort:?}");
        }
    }

    #[test]
    fn plain_queries_use_the_store() {
        assert!(MachineListQuery::default().is_plain());
        assert!(query(&[("sort", "name")]).is_plain());
        assert!(!query(&[("sort", "-name")]).is_plain());
        assert!(!query(&[("state", "active")]).is_plain());
    }

    #[test]
    fn summary_puts_failed_and_busy_first_and_finds_long_waits() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut all = fleet();
        all[1].maintenance = Some(rackboot_core::Maintenance {
            reason: "fan".into(),
            by: "api".into(),
            since: now,
        });
        let s = summarize(all.iter(), now, 30 * 60);
        let states: Vec<(&str, usize)> = s
            .states
            .iter()
            .map(|c| (c.state.as_str(), c.count))
            .collect();
        assert_eq!(
            states,
            [
                ("deploy_failed", 1),
                ("deploying", 1),
                ("enrolled", 1),
                ("available", 1),
                ("active", 1)
            ]
        );
        assert_eq!((s.total, s.failed, s.busy, s.maintenance), (5, 1, 1, 1));
        // Web-03 has been deploying for 40 minutes; db-01 (50) is active, not waiting.
        assert_eq!(s.waiting_too_long_count, 1);
        assert_eq!(s.waiting_too_long[0].name, "Web-03");
        assert_eq!(s.waiting_too_long[0].seconds, 40 * 60);
        assert_eq!(summarize(all.iter(), now, 3600).waiting_too_long_count, 0);
    }
}
