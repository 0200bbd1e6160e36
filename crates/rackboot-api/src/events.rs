//! `/api/v1/events`: the event log, paged, and a live server-sent event stream
//! that first replays what a reconnecting client missed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{self, KeepAlive, Sse};
use futures::Stream;
use rackboot_core::{Event, EventKind, MacAddr, MachineId};
use rackboot_store::{EventFilter, Store};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;

use crate::ApiState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::machines::find_machine;
use crate::paging::Page;

/// Largest page a client may ask for, and the default.
pub const MAX_PAGE: u32 = 1000;
/// How far `GET /events?kind=` scans before answering with what it found, so one
/// request cannot walk an unbounded log. Clients page on with `after=<last id>`.
const MAX_KIND_SCAN: usize = 100_000;
/// Page size while replaying stored events into a stream.
const REPLAY_PAGE: u32 = 500;

pub(crate) fn page_limit(limit: Option<u32>) -> ApiResult<u32> {
    match limit {
        None => Ok(MAX_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit: {n} is out of range, use 1 to {MAX_PAGE}"
        ))),
    }
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with an id greater than this.
    pub after: Option<i64>,
    /// Where to continue (the `X-Next-Cursor` of the previous page): the
    /// same as `after`.
    pub cursor: Option<String>,
    /// At most this many events (default and maximum 1000).
    pub limit: Option<u32>,
    /// The newest this many events (1 to 1000) instead, still oldest first;
    /// `after` and `limit` do not apply.
    pub tail: Option<u32>,
    /// Only events about this MAC.
    pub mac: Option<MacAddr>,
    /// Only events of this machine (id, name or MAC): its id or any of its MACs.
    pub machine: Option<String>,
    /// Only events of this kind.
    pub kind: Option<EventKind>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Replay stored events after this id first; the `Last-Event-ID` header wins over it.
    pub after: Option<i64>,
    /// Only events about this MAC.
    pub mac: Option<MacAddr>,
    /// Only events of this machine (id, name or MAC): its id or any of its MACs.
    pub machine: Option<String>,
    /// Only events of this kind.
    pub kind: Option<EventKind>,
}

/// Which events a client wants, applied to stored and live events alike.
#[derive(Debug, Clone, Default)]
struct Wanted {
    kind: Option<EventKind>,
    mac: Option<MacAddr>,
    /// A machine's id and its MACs when the client connected.
    machine: Option<(MachineId, Vec<MacAddr>)>,
}

impl Wanted {
    fn matches(&self, e: &Event) -> bool {
        self.kind.is_none_or(|k| e.kind == k)
            && self.mac.is_none_or(|m| e.mac == Some(m))
            && self.machine.as_ref().is_none_or(|(id, macs)| {
                e.machine == Some(*id) || e.mac.is_some_and(|m| macs.contains(&m))
            })
    }

    fn store_filter(&self, after_id: Option<i64>, limit: u32) -> EventFilter {
        EventFilter {
            machine: self.machine.as_ref().map(|(id, _)| *id),
            mac: self.mac,
            after_id,
            limit,
        }
    }

    async fn resolve(
        fleet: &rackboot_fleet::Fleet,
        kind: Option<EventKind>,
        mac: Option<MacAddr>,
        machine: Option<&str>,
    ) -> ApiResult<Wanted> {
        let machine = match machine {
            Some(reference) => {
                let m = find_machine(fleet, reference).await?;
                Some((m.id, m.macs))
            }
            None => None,
        };
        Ok(Wanted { kind, mac, machine })
    }
}

/// Stored events, oldest first: after an id, or the newest ones (`tail`).
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "Events, oldest first. When more may follow, \
            `X-Next-Cursor` holds the cursor of the next page and `Link` its URL.",
            body = Vec<Event>,
            headers(
                ("X-Next-Cursor" = String, description = "Pass as `cursor` (or `after`) for the next page"),
                ("Link" = String, description = "The next page: `<URL>; rel=\"next\"`"),
            )),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 404, description = "`machine` names no machine", body = ErrorBody),
    ))]
pub async fn list_events(
    State(state): State<ApiState>,
    uri: Uri,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<Page<Event>> {
    let store = state.fleet.store().as_ref();
    let limit = page_limit(query.limit)?;
    let after = match (&query.cursor, query.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "cursor: give `cursor` or `after`, not both".into(),
            ));
        }
        (Some(c), None) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("cursor: {c:?} is not an event id")))?,
        ),
        (None, after) => after,
    };
    let wanted = Wanted::resolve(
        &state.fleet,
        query.kind,
        query.mac,
        query.machine.as_deref(),
    )
    .await?;
    if let Some(n) = query.tail {
        if after.is_some() {
            return Err(ApiError::BadRequest(
                "tail: give `tail` or `after`, not both".into(),
            ));
        }
        if !(1..=MAX_PAGE).contains(&n) {
            return Err(ApiError::BadRequest(format!(
                "tail: {n} is out of range, use 1 to {MAX_PAGE}"
            )));
        }
        let events = newest(store, &wanted, n).await?;
        return Ok(Page {
            items: events,
            next: None,
            uri,
        });
    }
    if wanted.kind.is_none() {
        let events = store
            .list_events(&wanted.store_filter(after, limit))
            .await?;
        return Ok(Page::new(events, limit, uri, |e| e.id.to_string()));
    }
    // The store filters by machine and MAC but not by kind: page through and keep matches.
    let mut found = Vec::new();
    let mut scanned_to = after;
    let mut scanned = 0;
    let mut more = false;
    loop {
        let page = store
            .list_events(&wanted.store_filter(scanned_to, MAX_PAGE))
            .await?;
        let full = page.len() >= MAX_PAGE as usize;
        scanned += page.len();
        for e in page {
            scanned_to = Some(e.id);
            if wanted.matches(&e) {
                found.push(e);
                if found.len() >= limit as usize {
                    break;
                }
            }
        }
        if found.len() >= limit as usize {
            more = true;
            break;
        }
        if !full {
            break;
        }
        if scanned >= MAX_KIND_SCAN {
            more = true;
            break;
        }
    }
    // The next page starts after the last event looked at, matching or not.
    let next = if more {
        scanned_to.map(|id| id.to_string())
    } else {
        None
    };
    Ok(Page {
        items: found,
        next,
        uri,
    })
}

/// Whether any event has an id greater than `after`.
async fn any_after(store: &dyn Store, after: i64) -> ApiResult<bool> {
    let filter = EventFilter {
        after_id: Some(after),
        limit: 1,
        ..EventFilter::default()
    };
    Ok(!store.list_events(&filter).await?.is_empty())
}

/// The highest event id (0 when the log is empty). The store pages oldest
/// first only, so it is found by galloping then bisecting on `after`: about
/// 2 log2(id) one-row reads.
async fn highest_event_id(store: &dyn Store) -> ApiResult<i64> {
    if !any_after(store, 0).await? {
        return Ok(0);
    }
    // Invariant: an event lies after `lo`, none after `hi`.
    let (mut lo, mut hi) = (0_i64, 1_i64);
    while any_after(store, hi).await? {
        lo = hi;
        hi = hi.saturating_mul(2);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if any_after(store, mid).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// The newest `n` events `wanted` matches, oldest first: reads a window of
/// ids below the highest, growing it fourfold until it holds `n` matches or
/// the whole log.
async fn newest(store: &dyn Store, wanted: &Wanted, n: u32) -> ApiResult<Vec<Event>> {
    let n = n as usize;
    let highest = highest_event_id(store).await?;
    let mut window = n as i64;
    loop {
        let start = highest.saturating_sub(window).max(0);
        let mut found: VecDeque<Event> = VecDeque::with_capacity(n + 1);
        let mut after = start;
        let mut scanned = 0;
        loop {
            let page = store
                .list_events(&wanted.store_filter(Some(after), MAX_PAGE))
                .await?;
            let full = page.len() >= MAX_PAGE as usize;
            scanned += page.len();
            after = page.last().map_or(after, |e| e.id);
            for e in page.into_iter().filter(|e| wanted.matches(e)) {
                found.push_back(e);
                if found.len() > n {
                    found.pop_front();
                }
            }
            if !full {
                break;
            }
        }
        // A kind filter reads unfiltered pages: bounded like `GET /events?kind=`.
        if found.len() >= n || start == 0 || scanned >= MAX_KIND_SCAN {
            return Ok(found.into());
        }
        window = window.saturating_mul(4);
    }
}

fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest("Last-Event-ID: expected a numeric event id".into()))
}

/// Live events as server-sent events.
///
/// Each event has `id` (the event id), `event` (its kind) and `data` (the JSON
/// event). With `Last-Event-ID` (or `?after=`) stored events after
/// it are replayed first, then live ones follow without gaps or duplicates. A
/// client that falls behind gets an `event: lagged` notice and the missed events
/// are replayed from the store. Comments are sent as keep-alives.
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Replay stored events after this id"),
    ),
    responses(
        (status = 200, description = "A text/event-stream of events", content_type = "text/event-stream", body = Event),
        (status = 400, description = "Bad query parameter or Last-Event-ID", body = ErrorBody),
        (status = 404, description = "`machine` names no machine", body = ErrorBody),
    ))]
pub async fn stream_events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>> {
    let resume_after = last_event_id(&headers)?.or(query.after);
    let store = state.fleet.store().clone();
    let wanted = Wanted::resolve(
        &state.fleet,
        query.kind,
        query.mac,
        query.machine.as_deref(),
    )
    .await?;
    // Subscribe before reading the store: every event is then either in what we
    // read or in the subscription (or both, and then skipped by id).
    let live = state.fleet.events().subscribe();
    let stream = event_stream(EventStream {
        store,
        live,
        wanted,
        phase: match resume_after {
            Some(after) => Phase::Replay { after },
            None => Phase::Live,
        },
        last_id: resume_after,
        pending: VecDeque::new(),
        shutdown: state.shutdown.clone(),
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(state.sse_keep_alive)))
}

enum Phase {
    /// Reading stored events with id > `after`.
    Replay {
        after: i64,
    },
    Live,
    /// The stream ends once `pending` is drained.
    Done,
}

struct EventStream {
    store: Arc<dyn Store>,
    live: broadcast::Receiver<Event>,
    wanted: Wanted,
    phase: Phase,
    /// Highest event id sent or deliberately skipped; live events up to it are duplicates.
    last_id: Option<i64>,
    pending: VecDeque<sse::Event>,
    shutdown: CancellationToken,
}

fn sse_event(e: &Event) -> sse::Event {
    sse::Event::default()
        .id(e.id.to_string())
        .event(e.kind.as_str())
        .data(serde_json::to_string(e).unwrap_or_default())
}

fn notice(kind: &str, data: serde_json::Value) -> sse::Event {
    sse::Event::default().event(kind).data(data.to_string())
}

fn event_stream(state: EventStream) -> impl Stream<Item = Result<sse::Event, Infallible>> {
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.shutdown.is_cancelled() {
                return None;
            }
            match st.phase {
                Phase::Done => return None,
                Phase::Replay { after } => {
                    let filter = st.wanted.store_filter(Some(after), REPLAY_PAGE);
                    match st.store.list_events(&filter).await {
                        Ok(page) => {
                            let full = page.len() >= REPLAY_PAGE as usize;
                            for e in page {
                                st.last_id = Some(st.last_id.map_or(e.id, |l| l.max(e.id)));
                                if st.wanted.matches(&e) {
                                    st.pending.push_back(sse_event(&e));
                                }
                            }
                            st.phase = match (full, st.last_id) {
                                (true, Some(last)) => Phase::Replay { after: last },
                                _ => Phase::Live,
                            };
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "event stream replay failed");
                            st.pending.push_back(notice(
                                "error",
                                serde_json::json!({ "error": format!("replaying stored events failed: {e}") }),
                            ));
                            st.phase = Phase::Done;
                        }
                    }
                }
                Phase::Live => {
                    let received = tokio::select! {
                        _ = st.shutdown.cancelled() => return None,
                        r = st.live.recv() => r,
                    };
                    match received {
                        Ok(e) => {
                            if st.last_id.is_some_and(|last| e.id <= last) {
                                continue;
                            }
                            st.last_id = Some(e.id);
                            if st.wanted.matches(&e) {
                                st.pending.push_back(sse_event(&e));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            metrics::counter!("rackboot_api_sse_lagged_total").increment(1);
                            // Events are stored before they are broadcast, so
                            // what this subscriber missed can be read back.
                            st.pending.push_back(notice(
                                "lagged",
                                serde_json::json!({
                                    "missed": missed,
                                    "replaying_after": st.last_id,
                                }),
                            ));
                            if let Some(after) = st.last_id {
                                st.phase = Phase::Replay { after };
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        }
    })
}

/// Keep-alive interval used when the caller does not set one.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);
