//! The optimizer (engine spec §3): every `optimizer_interval`, one decision per link with
//! queued or running files. [`core`] decides (pure); this module measures, stores and keeps
//! the evolution's retention. [`sim`] runs the core against a simulated link.
//!
//! Measurements come from the counters kept beside the files (`link_minute_stats_v1` for the
//! average duration, `link_minute_optimizer_v1` for successes, recoverable failures, retries
//! and sizes), the state index (active and queued counts) and the engine's in-memory running
//! set (in-window bytes of running transfers, SE throughput); no file is read. The previous
//! state is the stored current value, so a restart continues where the optimizer stopped.
//!
//! One deviation from §3.1, forced by minute buckets: a finished transfer counts its whole size
//! in the window it finished in, also when it started before the window (the reference counts
//! only the in-window share). Running transfers are counted exactly.

pub mod core;
pub mod sim;

use std::{sync::Arc, time::Duration};

use self::core::{History, Input, Limits, Measurement, Mode, Outcome, State};
use super::Engine;
use crate::{
    model::{
        config::ANY,
        optimizer::{Decision, LinkLoad, OptimizerCurrent},
        time,
    },
    store::{Store, StoreError},
};

/// Optimizer settings (`optimizer_*` in `[engine]`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub interval: Duration,
    /// Evolution rows older than this are deleted.
    pub retention: Duration,
    pub history: History,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            interval: Duration::from_secs(60),
            retention: Duration::from_secs(7 * 24 * 3600),
            history: History::Persistent,
        }
    }
}

/// Bytes in a MiB: url-copy reports throughput, and SE throughput limits are set, in MiB/s.
const MIB: f64 = 1024.0 * 1024.0;

/// The optimizer task: runs until aborted by [`Engine::run`].
pub async fn run(engine: Arc<Engine>) {
    let settings = engine.settings.optimizer.clone();
    if !settings.enabled {
        return;
    }
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; the first decision waits one interval for measurements.
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = engine.optimize(&settings).await {
            tracing::warn!(error = %e, "optimizer run failed");
        }
    }
}

/// A running transfer as the optimizer sees it.
struct Live {
    source_se: String,
    dest_se: String,
    started: i64,
    transferred: u64,
}

impl Engine {
    /// One optimizer run over every link with work, then the evolution's retention.
    async fn optimize(&self, settings: &Settings) -> Result<(), super::EngineError> {
        let now = time::now();
        let live: Vec<Live> = self
            .running()
            .values()
            .filter(|r| r.counts)
            .map(|r| Live {
                source_se: r.source_se.clone(),
                dest_se: r.dest_se.clone(),
                started: r.started,
                transferred: r
                    .progress
                    .transferred
                    .load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        let store = self.store.as_ref();
        let history = settings.history;
        let retention = settings.retention.as_secs() as i64;
        for link in store.optimizer_links().await? {
            if let Some(d) = optimize_link(store, &link, &live, now, history).await? {
                let rationale = d.rationale.as_deref().unwrap_or_default();
                self.settings.metrics.optimizer_decision(
                    &d.source_se,
                    &d.dest_se,
                    d.diff,
                    rationale,
                );
            }
        }
        let deleted = store
            .delete_evolution_before((now - retention) * 1_000_000)
            .await?;
        if deleted > 0 {
            tracing::debug!(deleted, "optimizer evolution expired");
        }
        Ok(())
    }
}

/// Measure, decide and store for one link; the decision stored, if any.
async fn optimize_link(
    store: &dyn Store,
    link: &LinkLoad,
    live: &[Live],
    now: i64,
    history: History,
) -> Result<Option<Decision>, StoreError> {
    let started = std::time::Instant::now();
    let (src, dst) = (link.source_se.as_str(), link.dest_se.as_str());
    let measurement = measure(store, link, live, now).await?;
    let config = store.link_config(src, dst).await?;
    let (source, dest) = (store.se_config(src).await?, store.se_config(dst).await?);
    let limits = Limits {
        min_active: config.min_active,
        max_active: config.max_active,
        specific: !(config.source == ANY && config.destination == ANY),
        source_max_active: source.outbound_max_active.unwrap_or(0),
        dest_max_active: dest.inbound_max_active.unwrap_or(0),
        source_max_throughput: source.outbound_max_throughput.unwrap_or(0.0),
        dest_max_throughput: dest.inbound_max_throughput.unwrap_or(0.0),
        lan: core::is_lan(src, dst),
    };
    let previous = store
        .optimizer_current(src, dst)
        .await?
        .map(|c| state_of(&c));
    let outcome = core::decide(Input {
        now,
        measurement: &measurement,
        previous: previous.as_ref(),
        limits: &limits,
        mode: Mode::from_config(config.optimizer_mode),
        history,
    });
    let Outcome::Decided(d) = outcome else {
        return Ok(None);
    };
    let s = d.state;
    let decision = Decision {
        source_se: src.to_string(),
        dest_se: dst.to_string(),
        datetime: time::now_nanos() as i64 / 1000,
        active: d.active,
        nostreams: d.streams,
        ema: s.ema,
        throughput: s.throughput,
        success: s.success,
        rationale: Some(d.rationale.clone()),
        diff: d.diff,
        actual_active: s.active_count,
        queue_size: s.queue_size,
        filesize_avg: s.filesize_avg,
        filesize_stddev: s.filesize_stddev,
        retry_count: s.retry_count,
    };
    store.set_optimizer(&decision).await?;
    tracing::info!(
        link = %format!("{src}→{dst}"),
        decision = d.active,
        running = s.active_count,
        diff = d.diff,
        rationale = %d.rationale,
        ms = started.elapsed().as_millis() as u64,
        "Optimizer decision"
    );
    Ok(Some(decision))
}

/// The stored current value as the optimizer's previous state.
fn state_of(c: &OptimizerCurrent) -> State {
    State {
        timestamp: c.datetime.div_euclid(1_000_000),
        active: c.active,
        ema: c.ema,
        throughput: c.throughput,
        success: c.success,
        retry_count: c.retry_count,
        active_count: c.actual_active,
        queue_size: c.queue_size,
        filesize_avg: c.filesize_avg,
        filesize_stddev: c.filesize_stddev,
    }
}

/// §3.1's measurements of a link at `now`.
async fn measure(
    store: &dyn Store,
    link: &LinkLoad,
    live: &[Live],
    now: i64,
) -> Result<Measurement, StoreError> {
    let (src, dst) = (link.source_se.as_str(), link.dest_se.as_str());
    let recent = store.link_stats(src, dst, None, now - 30 * 60).await?;
    let avg_duration = recent.avg_duration().unwrap_or(0.0) as i64;
    let window = core::window(avg_duration);
    let from = now - window;
    let samples = store.optimizer_samples(src, dst, from).await?;
    // Running transfers: their rate times their time inside the window.
    let mut bytes = samples.bytes as f64;
    let (mut source_rate, mut dest_rate) = (0.0, 0.0);
    for t in live {
        let dur = (now - t.started).max(1);
        let rate = (t.transferred / dur as u64) as f64;
        if t.source_se == src {
            source_rate += rate;
        }
        if t.dest_se == dst {
            dest_rate += rate;
        }
        if t.source_se == src && t.dest_se == dst {
            bytes += rate * (now - t.started.max(from)) as f64;
        }
    }
    let (filesize_avg, filesize_stddev) = samples.filesize_stats();
    Ok(Measurement {
        throughput: bytes / window as f64,
        success: core::success_rate(samples.ok, samples.failed),
        retry_count: samples.retries as i64,
        active_count: link.active as i64,
        queue_size: link.queued as i64,
        filesize_avg,
        filesize_stddev,
        source_throughput: source_rate / MIB,
        dest_throughput: dest_rate / MIB,
    })
}
