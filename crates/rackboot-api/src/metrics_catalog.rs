//! Every metric rackboot exports, with its help text: the Prometheus
//! recorder is installed from here so each family has `# HELP` and `# TYPE`,
//! the series that need no label (and the known values of some labels) are
//! present from the start at zero, durations are histograms (buckets are
//! monotonic by construction; the exporter's summaries could show a 0.5
//! quantile below the 0 quantile), and the inventory gauges are set at each
//! scrape.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rackboot_core::{LeaseState, ProvisionState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Label sets registered at zero on start: `&[&[]]` for a metric without
    /// labels; empty when its label values are only known when they happen.
    pub initial: &'static [&'static [(&'static str, &'static str)]],
}

const NONE: &[&[(&str, &str)]] = &[&[]];
const LATER: &[&[(&str, &str)]] = &[];

const fn m(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    initial: &'static [&'static [(&'static str, &'static str)]],
) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        help,
        initial,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// Every family, by name.
pub const METRICS: &[MetricInfo] = &[
    m(
        "rackboot_agent_auth_refused_total",
        Counter,
        "Agent requests refused: missing, unknown or misplaced per-boot token.",
        NONE,
    ),
    m(
        "rackboot_agent_tokens_refused_total",
        Counter,
        "Agent tokens refused by the fleet (unknown or bound to another address).",
        NONE,
    ),
    m(
        "rackboot_alerts_events_missed_total",
        Counter,
        "Events the alerts task missed because it fell behind the live stream.",
        NONE,
    ),
    m(
        "rackboot_alerts_lagged_total",
        Counter,
        "Times the alerts task fell behind the live event stream.",
        NONE,
    ),
    m(
        "rackboot_api_auth_failures_total",
        Counter,
        "API requests refused for a missing or wrong bearer token.",
        NONE,
    ),
    m(
        "rackboot_api_forbidden_total",
        Counter,
        "API requests refused because the token's role does not allow the operation.",
        NONE,
    ),
    m(
        "rackboot_api_requests_limited_total",
        Counter,
        "API requests refused by a limit: body_too_large (413), body_timeout (408), timeout (503, the work was stopped).",
        &[
            &[("reason", "body_too_large")],
            &[("reason", "body_timeout")],
            &[("reason", "timeout")],
        ],
    ),
    m(
        "rackboot_api_requests_total",
        Counter,
        "HTTP requests answered, by method and status.",
        LATER,
    ),
    m(
        "rackboot_api_sse_lagged_total",
        Counter,
        "Event-stream subscribers that fell behind and were replayed from the store.",
        NONE,
    ),
    m(
        "rackboot_boot_asset_bytes_total",
        Counter,
        "Bytes of kernels, initrds and images served under /assets/.",
        NONE,
    ),
    m(
        "rackboot_boot_http_refused_total",
        Counter,
        "Boot HTTP requests for a FIFO, socket or device in a served tree (/assets, /os, /images, /ramdisk, loaders): refused with 403, never opened for reading.",
        &[&[("reason", "not_regular")]],
    ),
    m(
        "rackboot_boot_assets_served_total",
        Counter,
        "Asset requests served under /assets/.",
        NONE,
    ),
    m(
        "rackboot_boot_dhcp_answers_total",
        Counter,
        "Boot files named in DHCP answers, by file.",
        LATER,
    ),
    m(
        "rackboot_boot_discovered_total",
        Counter,
        "Machines recorded on their first PXE request.",
        NONE,
    ),
    m(
        "rackboot_boot_discovery_errors_total",
        Counter,
        "Discoveries that could not be stored.",
        NONE,
    ),
    m(
        "rackboot_boot_scripts_served_total",
        Counter,
        "Per-machine boot scripts and configs served, by format.",
        &[
            &[("format", "ipxe")],
            &[("format", "grub")],
            &[("format", "pxelinux")],
        ],
    ),
    m(
        "rackboot_build_info",
        Gauge,
        "Always 1; the version of the running rackboot is its label.",
        LATER,
    ),
    m(
        "rackboot_cluster_members",
        Gauge,
        "Live servers in this server's cluster, itself included (0 while it cannot record its heartbeat).",
        NONE,
    ),
    m(
        "rackboot_cluster_resyncs_total",
        Counter,
        "Full re-reads of the inventory after a gap in the change feed or on the resync timer (several servers on one store).",
        NONE,
    ),
    m(
        "rackboot_cluster_workflows_taken_over_total",
        Counter,
        "Workflows this server claimed because their machine's owner died or another server accepted them.",
        NONE,
    ),
    m(
        "rackboot_dhcp6_dropped_total",
        Counter,
        "DHCPv6 packets dropped (malformed, for another server, unanswerable), by reason.",
        LATER,
    ),
    m(
        "rackboot_dhcp6_lease_write_seconds",
        Histogram,
        "Time to write one group commit of IPv6 leases.",
        NONE,
    ),
    m(
        "rackboot_dhcp6_ra_dropped_total",
        Counter,
        "ICMPv6 router messages ignored, by reason.",
        LATER,
    ),
    m(
        "rackboot_dhcp6_ra_sent_total",
        Counter,
        "Router advertisements sent by the DHCPv6 service.",
        NONE,
    ),
    m(
        "rackboot_dhcp6_received_total",
        Counter,
        "DHCPv6 client messages received, by message type.",
        LATER,
    ),
    m(
        "rackboot_dhcp6_recv_errors_total",
        Counter,
        "Errors receiving DHCPv6 packets.",
        NONE,
    ),
    m(
        "rackboot_dhcp6_replied_total",
        Counter,
        "DHCPv6 replies sent, by message type.",
        LATER,
    ),
    m(
        "rackboot_dhcp6_send_errors_total",
        Counter,
        "Errors sending DHCPv6 replies.",
        NONE,
    ),
    m(
        "rackboot_dhcp_claims_lost_total",
        Counter,
        "Offers and acknowledgements not sent because another server's client holds the address (several servers on one store): the server offered another address or refused the request.",
        NONE,
    ),
    m(
        "rackboot_dhcp_dropped_total",
        Counter,
        "DHCP requests dropped, by reason.",
        LATER,
    ),
    m(
        "rackboot_dhcp_ipxe_ra_dropped_total",
        Counter,
        "IPv6 router solicitations from iPXE not answered, by reason.",
        LATER,
    ),
    m(
        "rackboot_dhcp_ipxe_ra_sent_total",
        Counter,
        "Empty router advertisements sent to iPXE clients.",
        NONE,
    ),
    m(
        "rackboot_dhcp_lease_batch_size",
        Histogram,
        "Leases written per group commit.",
        NONE,
    ),
    m(
        "rackboot_dhcp_lease_write_errors_total",
        Counter,
        "Group commits of leases that failed.",
        NONE,
    ),
    m(
        "rackboot_dhcp_lease_write_seconds",
        Histogram,
        "Time to write one group commit of leases.",
        NONE,
    ),
    m(
        "rackboot_dhcp_lease_writes_total",
        Counter,
        "Group commits of leases written.",
        NONE,
    ),
    m(
        "rackboot_dhcp_peer_owned_total",
        Counter,
        "DHCP requests (DISCOVERs, broadcast REQUESTs; by message type) left unanswered because another live server of the cluster owns the client (load split by rendezvous hash of client id or MAC).",
        LATER,
    ),
    m(
        "rackboot_dhcp_pool_free",
        Gauge,
        "Free addresses in a subnet's pool.",
        LATER,
    ),
    m(
        "rackboot_dhcp_pool_size",
        Gauge,
        "Addresses in a subnet's pool.",
        LATER,
    ),
    m(
        "rackboot_dhcp_probe_conflicts_total",
        Counter,
        "Addresses found in use by the ICMP probe before an offer.",
        NONE,
    ),
    m(
        "rackboot_dhcp_recv_errors_total",
        Counter,
        "Errors receiving DHCP packets.",
        NONE,
    ),
    m(
        "rackboot_dhcp_send_errors_total",
        Counter,
        "Errors sending DHCP replies.",
        NONE,
    ),
    m(
        "rackboot_discovery_dropped_total",
        Counter,
        "Unknown MACs not recorded because discovery was over its bound ([discovery] per_minute); each MAC counted once a minute.",
        NONE,
    ),
    m(
        "rackboot_events_lost_total",
        Counter,
        "Event batches that could not be stored.",
        NONE,
    ),
    m(
        "rackboot_events_pruned_total",
        Counter,
        "Events deleted by the retention policy ([events] retention).",
        NONE,
    ),
    m(
        "rackboot_http_connections_capped_total",
        Counter,
        "Times an HTTP listener (listener: http, http6, api) reached its connection cap ([listen] http_max_connections, [api] max_connections) and stopped accepting until a connection closed.",
        LATER,
    ),
    m(
        "rackboot_http_connections_open",
        Gauge,
        "HTTP connections open, by listener (http, http6, api).",
        LATER,
    ),
    m(
        "rackboot_http_header_timeouts_total",
        Counter,
        "HTTP connections closed because a request's head did not arrive within the header-read timeout ([listen] http_header_read_timeout_secs, [api] header_read_timeout_secs), by listener.",
        LATER,
    ),
    m(
        "rackboot_install_access_refused_total",
        Counter,
        "Requests for an install's script, files or callbacks refused: asked (script, tftp_config, file, started, installed, done) and reason (wrong_address, no_lease, closed, expired, bad_secret, not_bound, no_peer).",
        LATER,
    ),
    m(
        "rackboot_install_file_errors_total",
        Counter,
        "Unattended install files that failed to render on request.",
        NONE,
    ),
    m(
        "rackboot_install_files_served_total",
        Counter,
        "Unattended install files served, by format.",
        LATER,
    ),
    m(
        "rackboot_installs_completed_total",
        Counter,
        "Installs whose completion callback arrived.",
        NONE,
    ),
    m(
        "rackboot_inventory_loads_total",
        Counter,
        "Full reads of the inventory from the store.",
        NONE,
    ),
    m(
        "rackboot_ipmi_ignored_packets_total",
        Counter,
        "IPMI packets ignored, by reason.",
        LATER,
    ),
    m(
        "rackboot_ipmi_retransmits_total",
        Counter,
        "IPMI requests sent again after a timeout.",
        NONE,
    ),
    m(
        "rackboot_ipmi_sessions_opened_total",
        Counter,
        "IPMI sessions opened, by cipher suite.",
        LATER,
    ),
    m(
        "rackboot_ipmi_timeouts_total",
        Counter,
        "IPMI requests that got no answer.",
        NONE,
    ),
    m(
        "rackboot_leases",
        Gauge,
        "DHCP lease rows, by state.",
        LATER,
    ),
    m(
        "rackboot_machines",
        Gauge,
        "Machines, by provisioning state.",
        LATER,
    ),
    m(
        "rackboot_power_operation_seconds",
        Histogram,
        "Time of one BMC operation, by operation.",
        LATER,
    ),
    m(
        "rackboot_power_operations_total",
        Counter,
        "BMC operations, by operation and result.",
        LATER,
    ),
    m(
        "rackboot_power_retries_total",
        Counter,
        "BMC operations retried, by error kind.",
        LATER,
    ),
    m(
        "rackboot_start_time_seconds",
        Gauge,
        "When this rackboot started, in seconds since the Unix epoch.",
        NONE,
    ),
    m(
        "rackboot_tftp_active_transfers",
        Gauge,
        "TFTP transfers in progress.",
        NONE,
    ),
    m(
        "rackboot_tftp_bytes_sent_total",
        Counter,
        "Bytes of file data sent over TFTP.",
        NONE,
    ),
    m(
        "rackboot_tftp_dropped_total",
        Counter,
        "TFTP packets dropped, by reason.",
        LATER,
    ),
    m(
        "rackboot_tftp_requests_rejected_total",
        Counter,
        "TFTP requests refused, by reason (not_regular: a FIFO, socket or device in a served tree).",
        &[
            &[("reason", "not_found")],
            &[("reason", "write_request")],
            &[("reason", "not_regular")],
        ],
    ),
    m(
        "rackboot_tftp_retransmits_total",
        Counter,
        "TFTP blocks sent again after a timeout.",
        NONE,
    ),
    m(
        "rackboot_tftp_transfer_duration_seconds",
        Histogram,
        "Time of one completed TFTP transfer.",
        NONE,
    ),
    m(
        "rackboot_tftp_transfers_aborted_total",
        Counter,
        "TFTP transfers the client aborted.",
        NONE,
    ),
    m(
        "rackboot_tftp_transfers_completed_total",
        Counter,
        "TFTP transfers completed.",
        NONE,
    ),
    m(
        "rackboot_tftp_transfers_failed_total",
        Counter,
        "TFTP transfers that failed, by reason.",
        LATER,
    ),
    m(
        "rackboot_tftp_transfers_started_total",
        Counter,
        "TFTP transfers started.",
        NONE,
    ),
    m(
        "rackboot_webhook_deliveries_total",
        Counter,
        "Webhook delivery attempts, by result.",
        &[
            &[("result", "delivered")],
            &[("result", "failed")],
            &[("result", "retry")],
        ],
    ),
    m(
        "rackboot_webhook_enqueue_errors_total",
        Counter,
        "Events that could not be queued for webhooks.",
        NONE,
    ),
    m(
        "rackboot_webhook_enqueued_total",
        Counter,
        "Deliveries queued for webhooks.",
        NONE,
    ),
    m(
        "rackboot_webhook_outbox_pending",
        Gauge,
        "Webhook deliveries waiting in the outbox.",
        NONE,
    ),
];

/// Histogram buckets: seconds for durations, counts for batch sizes.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Installs the process-wide Prometheus recorder with every family described
/// and its unlabelled series at zero; `None` when a recorder is already
/// installed (tests that start several servers in one process).
pub fn install_recorder() -> Option<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for info in METRICS.iter().filter(|i| i.kind == Histogram) {
        let buckets = if info.name.ends_with("_seconds") {
            SECONDS_BUCKETS
        } else {
            SIZE_BUCKETS
        };
        builder = builder
            .set_buckets_for_metric(Matcher::Full(info.name.to_string()), buckets)
            .ok()?;
    }
    let handle = builder.install_recorder().ok()?;
    register_all();
    Some(handle)
}

/// Describes every family and registers its initial series at zero.
fn register_all() {
    for info in METRICS {
        match info.kind {
            Counter => metrics::describe_counter!(info.name, info.help),
            Gauge => metrics::describe_gauge!(info.name, info.help),
            Histogram => metrics::describe_histogram!(info.name, info.help),
        }
        for labels in info.initial {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, *v))
                .collect();
            match info.kind {
                Counter => metrics::counter!(info.name, labels).increment(0),
                Gauge => metrics::gauge!(info.name, labels).increment(0.0),
                Histogram => {
                    let _ = metrics::histogram!(info.name, labels);
                }
            }
        }
    }
    metrics::gauge!("rackboot_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("rackboot_start_time_seconds").set(started);
}

/// Sets the inventory gauges (machines by state, leases by state) from what
/// the server holds now; every state is present, at zero when empty.
pub fn set_inventory_gauges(
    machines: impl IntoIterator<Item = ProvisionState>,
    leases: impl IntoIterator<Item = LeaseState>,
) {
    let mut by_state: std::collections::BTreeMap<&'static str, f64> = ProvisionState::ALL
        .iter()
        .map(|s| (s.as_str(), 0.0))
        .collect();
    for s in machines {
        *by_state.entry(s.as_str()).or_default() += 1.0;
    }
    for (state, n) in by_state {
        metrics::gauge!("rackboot_machines", "state" => state).set(n);
    }
    let mut by_lease: std::collections::BTreeMap<&'static str, f64> = [
        LeaseState::Offered,
        LeaseState::Bound,
        LeaseState::Declined,
        LeaseState::Released,
        LeaseState::Expired,
    ]
    .iter()
    .map(|s| (s.as_str(), 0.0))
    .collect();
    for s in leases {
        *by_lease.entry(s.as_str()).or_default() += 1.0;
    }
    for (state, n) in by_lease {
        metrics::gauge!("rackboot_leases", "state" => state).set(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the workspace's code emits is in the catalog (so it has
    /// help text), and the catalog names nothing the code no longer emits.
    #[test]
    fn catalog_covers_every_metric_in_the_code() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut used = std::collections::BTreeSet::new();
        let mut stack = vec![crates];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if path.is_dir() {
                    // Benchmarks' own figures are not the server's metrics.
                    if !matches!(
                        name.as_str(),
                        "target" | "rackboot-bench" | "tests" | "fuzz"
                    ) {
                        stack.push(path);
                    }
                } else if name.ends_with(".rs") && name != "metrics_catalog.rs" {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                        for (i, _) in text.match_indices(macro_name) {
                            let rest = text[i + macro_name.len()..].trim_start();
                            if let Some(rest) = rest.strip_prefix('"') {
                                used.insert(rest.split('"').next().unwrap().to_string());
                            }
                        }
                    }
                }
            }
        }
        let known: std::collections::BTreeSet<String> =
            METRICS.iter().map(|m| m.name.to_string()).collect();
        let missing: Vec<_> = used.difference(&known).collect();
        assert!(missing.is_empty(), "metrics without help text: {missing:?}");
        let set_here = [
            "rackboot_build_info",
            "rackboot_start_time_seconds",
            "rackboot_machines",
            "rackboot_leases",
        ];
        let stale: Vec<_> = known
            .difference(&used)
            .filter(|n| !set_here.contains(&n.as_str()))
            .collect();
        assert!(stale.is_empty(), "catalogued but never emitted: {stale:?}");
        let mut names: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "a metric is listed twice");
    }
}
