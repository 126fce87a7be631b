//! `/metrics`: the service's state in OpenMetrics text (prometheus-client), the catalogue of
//! the monitoring spec §2.3.
//!
//! Two kinds of series:
//! - process metrics observed as things happen ([`Metrics`]): HTTP requests by route, method
//!   and code with their latency, scheduler cycles, queue waits, store commits;
//! - state read at scrape time from the live aggregates (never a scan), the progress board,
//!   the optimizer's current values, configuration and host heartbeats ([`Snapshot`], a
//!   `Collector`). Counters of that kind (`ftsd_transfers_completed_total`, ...) count the
//!   stored rows, so they survive restarts; `ftsd_transferred_bytes_total` counts since start.
//!
//! Cardinality is bounded: labels are VOs, states, storage names, hosts, error scope / phase /
//! errno category, never ids, DNs, URLs or reason texts. Per-link series are kept for the
//! `max_links` busiest links (`[metrics] per_link`, `max_links`); the others are counted in
//! `ftsd_metrics_links_dropped`, and per-VO totals (`ftsd_files`, `ftsd_transfer_failures`)
//! still include them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::{Service, ServiceError};
use crate::model::{
    job::{FileState, JobState},
    monitor::{self, DURATION_BUCKETS, RowKey, Totals},
    optimizer::{LinkFilter, OptimizerCurrent},
};

/// The content type of the answer (OpenMetrics 1.0 text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Per-link series for at most this many links by default: a few thousand series per
/// family at CERN-scale link counts, which one Prometheus handles without trouble.
pub const DEFAULT_MAX_LINKS: usize = 1000;

/// HTTP latency bounds: 0.5 ms doubling to ~16 s.
const HTTP_BUCKETS: (f64, f64, u16) = (0.0005, 2.0, 16);
/// Scheduler cycle bounds: 1 ms doubling to ~32 s.
const CYCLE_BUCKETS: (f64, f64, u16) = (0.001, 2.0, 16);

type Labels = Vec<(&'static str, String)>;

fn http_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        HTTP_BUCKETS.0,
        HTTP_BUCKETS.1,
        HTTP_BUCKETS.2,
    ))
}

fn wait_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Process metrics, observed as things happen; shared by the server, the engine and the
/// service.
#[derive(Debug)]
pub struct Metrics {
    http_requests: Family<Labels, Counter>,
    http_duration: Family<Labels, Histogram, fn() -> Histogram>,
    scheduler_cycle: Histogram,
    queue_wait: Family<Labels, Histogram, fn() -> Histogram>,
    /// Optimizer decisions per link and direction (exported for the kept links only).
    decisions: std::sync::Mutex<BTreeMap<(String, String, &'static str), u64>>,
    decision_reasons: Family<Labels, Counter>,
    /// `[metrics]` settings.
    pub settings: MetricsSettings,
}

/// `[metrics]` in the configuration.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Export per-link series at all.
    pub per_link: bool,
    /// Per-link series for at most this many links (the busiest).
    pub max_links: usize,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            per_link: true,
            max_links: DEFAULT_MAX_LINKS,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(MetricsSettings::default())
    }
}

impl Metrics {
    pub fn new(settings: MetricsSettings) -> Metrics {
        Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram),
            scheduler_cycle: Histogram::new(exponential_buckets(
                CYCLE_BUCKETS.0,
                CYCLE_BUCKETS.1,
                CYCLE_BUCKETS.2,
            )),
            queue_wait: Family::new_with_constructor(wait_histogram),
            decisions: Default::default(),
            decision_reasons: Family::default(),
            settings,
        }
    }

    /// One HTTP request answered. `route` is a route pattern (bounded), never the path.
    pub fn http(&self, route: &'static str, method: &str, code: u16, seconds: f64) {
        let labels: Labels = vec![
            ("route", route.to_string()),
            ("method", method.to_string()),
            ("code", code.to_string()),
        ];
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration.get_or_create(&labels).observe(seconds);
    }

    /// One scheduler pass took `seconds`.
    pub fn scheduler_cycle(&self, seconds: f64) {
        self.scheduler_cycle.observe(seconds);
    }

    /// A file of `vo` started `seconds` after its job was submitted.
    pub fn queue_wait(&self, vo: &str, seconds: f64) {
        self.queue_wait
            .get_or_create(&vec![("vo", vo.to_string())])
            .observe(seconds.max(0.0));
    }
}

/// The optimizer's rationale as a bounded label: its first clause, mapped to a name
/// (anything new is `other`, never the text).
pub fn decision_reason(rationale: &str) -> &'static str {
    const REASONS: &[(&str, &str)] = &[
        ("No information", "no_information"),
        ("Range fixed", "range_fixed"),
        ("Source throughput limitation", "src_throughput_limit"),
        ("Destination throughput limitation", "dst_throughput_limit"),
        (
            "Bad link efficiency but progressively improving",
            "bad_efficiency_improving",
        ),
        (
            "Bad link efficiency, no changes",
            "bad_efficiency_no_change",
        ),
        ("Bad link efficiency", "bad_efficiency"),
        (
            "Steady, not enough throughput information",
            "not_enough_info",
        ),
        ("Queue emptying", "queue_emptying"),
        (
            "Good link efficiency, throughput deterioration, avg. filesize decreasing",
            "throughput_deterioration_filesize",
        ),
        (
            "Good link efficiency, small throughput deterioration",
            "throughput_deterioration_small",
        ),
        (
            "Good link efficiency, throughput deterioration",
            "throughput_deterioration",
        ),
        (
            "Good link efficiency, throughput saturated",
            "throughput_saturated",
        ),
        (
            "Good link efficiency, current average throughput is larger",
            "throughput_increase",
        ),
        ("Good link efficiency. Increment", "increment"),
    ];
    REASONS
        .iter()
        .find(|(prefix, _)| rationale.starts_with(prefix))
        .map_or("other", |(_, name)| name)
}

impl Metrics {
    /// The optimizer decided for a link: `diff` is the change of its target.
    pub fn optimizer_decision(&self, source_se: &str, dest_se: &str, diff: i64, rationale: &str) {
        let direction = match diff {
            d if d > 0 => "increase",
            d if d < 0 => "decrease",
            _ => "steady",
        };
        if let Ok(mut map) = self.decisions.lock() {
            *map.entry((source_se.to_string(), dest_se.to_string(), direction))
                .or_default() += 1;
        }
        self.decision_reasons
            .get_or_create(&vec![("reason", decision_reason(rationale).to_string())])
            .inc();
    }
}

/// What the scrape-time collector exports, read once per scrape.
#[derive(Debug, Default)]
struct Snapshot {
    totals: Totals,
    bytes: HashMap<RowKey, u64>,
    oldest_queued: BTreeMap<String, i64>,
    optimizer: Vec<OptimizerCurrent>,
    links: Vec<crate::model::config::LinkConfig>,
    storages: Vec<crate::model::config::SeConfig>,
    hosts: Vec<crate::model::config::Host>,
    /// Links that get per-link series.
    kept: BTreeSet<(String, String)>,
    dropped: usize,
    decisions: BTreeMap<(String, String, &'static str), u64>,
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + Copy + std::fmt::Debug>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, V)>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    bounds: &[f64],
    series: impl IntoIterator<Item = (Labels, monitor::Histogram)>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        let buckets: Vec<(f64, u64)> = bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(h.buckets.iter().copied().chain(std::iter::repeat(0)))
            .collect();
        m.encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
    }
    Ok(())
}

fn l(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// States that are "now" (not terminal, not NOT_USED): the gauges' states.
fn live_states() -> impl Iterator<Item = FileState> {
    FileState::ALL
        .into_iter()
        .filter(|s| !s.is_terminal() && *s != FileState::NotUsed)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = &self.totals;
        let kept = |s: &str, d: &str| self.kept.contains(&(s.to_string(), d.to_string()));

        // Files and jobs by VO and state.
        let mut files: BTreeMap<(String, FileState), u64> = BTreeMap::new();
        let mut submitted: BTreeMap<String, u64> = BTreeMap::new();
        for (k, now, _) in &t.rows {
            for (st, n) in FileState::ALL.iter().zip(now.0) {
                *submitted.entry(k.vo_name.clone()).or_default() += n;
                if n > 0 && !st.is_terminal() && *st != FileState::NotUsed {
                    *files.entry((k.vo_name.clone(), *st)).or_default() += n;
                }
            }
        }
        gauge(
            &mut e,
            "ftsd_files",
            "Files now in each non-terminal state",
            files
                .iter()
                .map(|((vo, st), n)| (l(&[("vo", vo), ("state", st.as_str())]), *n as i64)),
        )?;
        let mut link_files = Vec::new();
        for (k, now, _) in t
            .rows
            .iter()
            .filter(|(k, _, _)| kept(&k.source_se, &k.dest_se))
        {
            for st in live_states() {
                let n = now.get(st);
                if n > 0 {
                    link_files.push((k, st, n));
                }
            }
        }
        let mut per_link: BTreeMap<(&str, &str, &str, FileState), u64> = BTreeMap::new();
        for (k, st, n) in link_files {
            *per_link
                .entry((&k.source_se, &k.dest_se, &k.vo_name, st))
                .or_default() += n;
        }
        gauge(
            &mut e,
            "ftsd_link_files",
            "Files now in each non-terminal state per link and VO (the overview's counts)",
            per_link.iter().map(|((s, d, vo, st), n)| {
                (
                    l(&[
                        ("source_se", s),
                        ("dest_se", d),
                        ("vo", vo),
                        ("state", st.as_str()),
                    ]),
                    *n as i64,
                )
            }),
        )?;
        gauge(
            &mut e,
            "ftsd_jobs",
            "Jobs now in each non-terminal state",
            t.jobs
                .iter()
                .filter(|(_, st, _)| !st.is_terminal())
                .map(|(vo, st, n)| (l(&[("vo", vo), ("state", st.as_str())]), *n as i64)),
        )?;
        gauge(
            &mut e,
            "ftsd_oldest_queued_timestamp_seconds",
            "Submission time of the oldest job still SUBMITTED",
            self.oldest_queued
                .iter()
                .map(|(vo, ts)| (l(&[("vo", vo)]), *ts)),
        )?;
        let mut jobs_total: BTreeMap<&str, u64> = BTreeMap::new();
        for (vo, _, n) in &t.jobs {
            *jobs_total.entry(vo).or_default() += n;
        }
        counter(
            &mut e,
            "ftsd_jobs_submitted",
            "Jobs stored (submitted and kept)",
            jobs_total.iter().map(|(vo, n)| (l(&[("vo", vo)]), *n)),
        )?;
        counter(
            &mut e,
            "ftsd_files_submitted",
            "Files stored (submitted and kept)",
            submitted.iter().map(|(vo, n)| (l(&[("vo", vo)]), *n)),
        )?;

        // Per link (capped).
        let mut completed: BTreeMap<(&str, &str, &str, FileState), u64> = BTreeMap::new();
        let mut retries: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
        for (k, now, r) in t
            .rows
            .iter()
            .filter(|(k, _, _)| kept(&k.source_se, &k.dest_se))
        {
            for st in [FileState::Finished, FileState::Failed, FileState::Canceled] {
                *completed
                    .entry((&k.source_se, &k.dest_se, &k.vo_name, st))
                    .or_default() += now.get(st);
            }
            *retries
                .entry((&k.source_se, &k.dest_se, &k.vo_name))
                .or_default() += r;
        }
        counter(
            &mut e,
            "ftsd_transfers_completed",
            "Transfers that ended, by final state (success ratio: FINISHED / (FINISHED + FAILED))",
            completed.iter().map(|((s, d, vo, st), n)| {
                (
                    l(&[
                        ("source_se", s),
                        ("dest_se", d),
                        ("vo", vo),
                        ("state", st.as_str()),
                    ]),
                    *n,
                )
            }),
        )?;
        counter(
            &mut e,
            "ftsd_transfer_retries",
            "Failed attempts sent back to the queue",
            retries
                .iter()
                .map(|((s, d, vo), n)| (l(&[("source_se", s), ("dest_se", d), ("vo", vo)]), *n)),
        )?;
        let mut bytes: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
        for (k, n) in self
            .bytes
            .iter()
            .filter(|(k, _)| kept(&k.source_se, &k.dest_se))
        {
            *bytes
                .entry((&k.source_se, &k.dest_se, &k.vo_name))
                .or_default() += n;
        }
        counter(
            &mut e,
            "ftsd_transferred_bytes",
            "Bytes moved since start, bumped as transfers report progress and at their end",
            bytes
                .iter()
                .map(|((s, d, vo), n)| (l(&[("source_se", s), ("dest_se", d), ("vo", vo)]), *n)),
        )?;

        // Failures.
        let mut classes: BTreeMap<(&str, &str, &str, &str, bool), u64> = BTreeMap::new();
        let mut link_scopes: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
        for f in &t.failures {
            let c = &f.class;
            *classes
                .entry((&f.vo_name, &c.scope, &c.phase, &c.category, c.recoverable))
                .or_default() += f.count;
            if kept(&f.source_se, &f.dest_se) {
                *link_scopes
                    .entry((&f.source_se, &f.dest_se, &c.scope))
                    .or_default() += f.count;
            }
        }
        counter(
            &mut e,
            "ftsd_transfer_failures",
            "Failed transfers by error scope, phase and errno category",
            classes.iter().map(|((vo, scope, phase, cat, rec), n)| {
                (
                    l(&[
                        ("vo", vo),
                        ("scope", scope),
                        ("phase", phase),
                        ("category", cat),
                        ("recoverable", if *rec { "true" } else { "false" }),
                    ]),
                    *n,
                )
            }),
        )?;
        counter(
            &mut e,
            "ftsd_link_transfer_failures",
            "Failed transfers per link and error scope",
            link_scopes.iter().map(|((s, d, scope), n)| {
                (l(&[("source_se", s), ("dest_se", d), ("scope", scope)]), *n)
            }),
        )?;

        // Histograms from the aggregates.
        histogram(
            &mut e,
            "ftsd_transfer_duration_seconds",
            "Durations of the transfers that ended",
            &DURATION_BUCKETS,
            t.durations
                .iter()
                .map(|(vo, st, h)| (l(&[("vo", vo), ("state", st.as_str())]), h.clone())),
        )?;
        histogram(
            &mut e,
            "ftsd_transfer_size_bytes",
            "Sizes of the files transferred",
            &monitor::SIZE_BUCKETS,
            t.sizes.iter().map(|(vo, h)| (l(&[("vo", vo)]), h.clone())),
        )?;
        histogram(
            &mut e,
            "ftsd_staging_duration_seconds",
            "Bring-online latencies",
            &DURATION_BUCKETS,
            t.staging
                .iter()
                .map(|(vo, h)| (l(&[("vo", vo)]), h.clone())),
        )?;
        histogram(
            &mut e,
            "ftsd_store_commit_duration_seconds",
            "Time to commit one database write transaction (durably)",
            &monitor::COMMIT_BUCKETS,
            [(Labels::new(), t.commit_seconds.clone())],
        )?;

        // Optimizer (per link, capped).
        let opt: Vec<&OptimizerCurrent> = self
            .optimizer
            .iter()
            .filter(|o| kept(&o.source_se, &o.dest_se))
            .collect();
        let link =
            |o: &OptimizerCurrent| l(&[("source_se", &o.source_se), ("dest_se", &o.dest_se)]);
        gauge(
            &mut e,
            "ftsd_optimizer_decision",
            "The optimizer's target of concurrent transfers",
            opt.iter().map(|o| (link(o), o.active)),
        )?;
        gauge(
            &mut e,
            "ftsd_optimizer_running",
            "Transfers running when the optimizer decided",
            opt.iter().map(|o| (link(o), o.actual_active)),
        )?;
        gauge(
            &mut e,
            "ftsd_optimizer_queue_size",
            "Queued files when the optimizer decided",
            opt.iter().map(|o| (link(o), o.queue_size)),
        )?;
        gauge(
            &mut e,
            "ftsd_optimizer_throughput_bytes_per_second",
            "Throughput the optimizer measured",
            opt.iter().map(|o| (link(o), o.throughput)),
        )?;
        gauge(
            &mut e,
            "ftsd_optimizer_ema_bytes_per_second",
            "The optimizer's moving average of the throughput",
            opt.iter().map(|o| (link(o), o.ema)),
        )?;
        gauge(
            &mut e,
            "ftsd_optimizer_success_ratio",
            "Success ratio the optimizer measured (0-1)",
            opt.iter().map(|o| (link(o), o.success / 100.0)),
        )?;
        gauge(
            &mut e,
            "ftsd_optimizer_filesize_mean_bytes",
            "Mean file size the optimizer saw",
            opt.iter().map(|o| (link(o), o.filesize_avg)),
        )?;
        gauge(
            &mut e,
            "ftsd_optimizer_filesize_stddev_bytes",
            "Standard deviation of the file sizes the optimizer saw",
            opt.iter().map(|o| (link(o), o.filesize_stddev)),
        )?;

        counter(
            &mut e,
            "ftsd_optimizer_decisions",
            "Optimizer decisions per link, by direction of the change",
            self.decisions
                .iter()
                .filter(|((s, d, _), _)| kept(s, d))
                .map(|((s, d, dir), n)| {
                    (
                        l(&[("source_se", s), ("dest_se", d), ("direction", dir)]),
                        *n,
                    )
                }),
        )?;

        // Configuration limits.
        let links: Vec<_> = self
            .links
            .iter()
            .filter(|c| {
                (c.source == "*" || c.destination == "*") || kept(&c.source, &c.destination)
            })
            .collect();
        gauge(
            &mut e,
            "ftsd_link_min_active",
            "Configured minimum of concurrent transfers per link",
            links.iter().map(|c| {
                (
                    l(&[("source_se", &c.source), ("dest_se", &c.destination)]),
                    c.min_active,
                )
            }),
        )?;
        gauge(
            &mut e,
            "ftsd_link_max_active",
            "Configured maximum of concurrent transfers per link",
            links.iter().map(|c| {
                (
                    l(&[("source_se", &c.source), ("dest_se", &c.destination)]),
                    c.max_active,
                )
            }),
        )?;
        let mut max_active = Vec::new();
        let mut max_thr = Vec::new();
        for s in &self.storages {
            for (dir, active, thr) in [
                ("inbound", s.inbound_max_active, s.inbound_max_throughput),
                ("outbound", s.outbound_max_active, s.outbound_max_throughput),
            ] {
                let labels = l(&[("storage", &s.storage), ("direction", dir)]);
                if let Some(a) = active {
                    max_active.push((labels.clone(), a));
                }
                if let Some(t) = thr {
                    // FTS keeps MiB/s.
                    max_thr.push((labels, t * 1024.0 * 1024.0));
                }
            }
        }
        gauge(
            &mut e,
            "ftsd_storage_max_active",
            "Configured maximum of concurrent transfers per storage",
            max_active,
        )?;
        gauge(
            &mut e,
            "ftsd_storage_max_throughput_bytes_per_second",
            "Configured maximum throughput per storage",
            max_thr,
        )?;

        // Hosts.
        gauge(
            &mut e,
            "ftsd_host_heartbeat_timestamp_seconds",
            "Last heartbeat of each host's service",
            self.hosts.iter().map(|h| {
                (
                    l(&[("host", &h.hostname), ("service", &h.service_name)]),
                    h.beat,
                )
            }),
        )?;
        gauge(
            &mut e,
            "ftsd_host_draining",
            "1 when the host's service is draining",
            self.hosts.iter().map(|h| {
                (
                    l(&[("host", &h.hostname), ("service", &h.service_name)]),
                    i64::from(h.drain),
                )
            }),
        )?;

        gauge(
            &mut e,
            "ftsd_metrics_links_dropped",
            "Links left out of the per-link series ([metrics] max_links)",
            [(Labels::new(), self.dropped as i64)],
        )?;
        gauge(
            &mut e,
            "ftsd_build_info",
            "The running ftsd",
            [(
                l(&[
                    ("version", env!("CARGO_PKG_VERSION")),
                    (
                        "revision",
                        option_env!("FTSD_REVISION").unwrap_or("unknown"),
                    ),
                ]),
                1i64,
            )],
        )?;
        Ok(())
    }
}

impl Service {
    /// The process metrics (for the server and the engine to record into).
    pub fn metrics(&self) -> &std::sync::Arc<Metrics> {
        &self.metrics
    }

    /// The `/metrics` answer: OpenMetrics text ending in `# EOF`. Needs a caller who may list
    /// jobs (any `transfer` level); the plain-HTTP loopback listener calls
    /// [`Service::metrics_text_unchecked`].
    pub async fn metrics_text(
        &self,
        user: &crate::model::identity::User,
    ) -> Result<String, ServiceError> {
        self.mon_visibility(user)?;
        self.metrics_text_unchecked().await
    }

    /// The `/metrics` answer without an authorization check.
    pub async fn metrics_text_unchecked(&self) -> Result<String, ServiceError> {
        let totals = self.store.monitor_totals().await?;
        let settings = &self.metrics.settings;
        // The busiest links: most files stored (ties by name), at most max_links.
        let mut weight: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (k, now, _) in &totals.rows {
            *weight
                .entry((k.source_se.clone(), k.dest_se.clone()))
                .or_default() += now.0.iter().sum::<u64>();
        }
        let mut ranked: Vec<((String, String), u64)> = weight.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let limit = if settings.per_link {
            settings.max_links
        } else {
            0
        };
        let dropped = ranked.len().saturating_sub(limit);
        let kept: BTreeSet<(String, String)> =
            ranked.into_iter().take(limit).map(|(k, _)| k).collect();
        let vos: Vec<String> = self
            .store
            .monitor_jobs()
            .await?
            .into_iter()
            .filter(|(_, st, _)| *st == JobState::Submitted)
            .map(|(vo, _, _)| vo)
            .collect();
        let (storages, _) = self.store.se_configs(None).await?;
        let snapshot = Snapshot {
            oldest_queued: self
                .store
                .monitor_oldest_jobs(JobState::Submitted, &vos)
                .await?,
            bytes: self.progress.bytes(),
            optimizer: self.store.optimizer_values(&LinkFilter::default()).await?,
            links: self.store.link_configs().await?,
            storages,
            hosts: self.store.hosts().await?,
            totals,
            kept,
            dropped,
            decisions: self
                .metrics
                .decisions
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
        };
        let mut registry = Registry::default();
        registry.register(
            "ftsd_http_requests",
            "HTTP requests answered, by route pattern, method and status code",
            self.metrics.http_requests.clone(),
        );
        registry.register(
            "ftsd_http_request_duration_seconds",
            "Time to answer HTTP requests",
            self.metrics.http_duration.clone(),
        );
        registry.register(
            "ftsd_scheduler_cycle_duration_seconds",
            "Time of one scheduler pass",
            self.metrics.scheduler_cycle.clone(),
        );
        registry.register(
            "ftsd_queue_wait_seconds",
            "Time from submission to the start of a transfer",
            self.metrics.queue_wait.clone(),
        );
        registry.register(
            "ftsd_optimizer_decision_reasons",
            "Optimizer decisions by their rationale",
            self.metrics.decision_reasons.clone(),
        );
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .map_err(|e| ServiceError::Io(format!("metrics encoding: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rationales_become_bounded_reasons() {
        assert_eq!(
            decision_reason("No information. Start halfway."),
            "no_information"
        );
        assert_eq!(
            decision_reason(
                "Bad link efficiency but progressively improving. Hit lower range limit"
            ),
            "bad_efficiency_improving"
        );
        assert_eq!(decision_reason("Bad link efficiency"), "bad_efficiency");
        assert_eq!(
            decision_reason("Source throughput limitation reached (10)"),
            "src_throughput_limit"
        );
        assert_eq!(decision_reason("something new /CN=x"), "other");
    }
}
