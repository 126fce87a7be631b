//! The optimizer against a simulated link, in virtual time: a scheduler that keeps the
//! decided number of transfers running from an endless queue, transfers sharing the link as
//! [`LinkModel`] says, and the optimizer core run every interval on measurements computed as
//! §3.1 does (window from the average duration, in-window bytes of finished and running
//! transfers, recoverable failures). Hours take milliseconds; `benches/optimizer_sim.rs`
//! prints the comparison of `BENCHMARKS.md`.

use crate::engine::backends::link_model::{LinkModel, Rng};

use super::core::{self, History, Input, Limits, Measurement, Mode, Outcome, State};

/// One simulated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub link: LinkModel,
    /// Bytes per file.
    pub filesize: f64,
    pub limits: Limits,
    pub mode: Mode,
    pub history: History,
    /// Seconds between optimizer runs.
    pub interval: i64,
    /// Seconds simulated.
    pub duration: i64,
    /// At this second the link's bandwidth is multiplied by `drop_factor`.
    pub drop_at: Option<i64>,
    pub drop_factor: f64,
    /// The value the link starts from (the scheduler's default before any decision).
    pub start_active: i64,
    pub seed: u64,
}

/// What happened, second by second and decision by decision.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Bytes moved in each second.
    pub bytes: Vec<f64>,
    /// (second, decided value) of each decision.
    pub decisions: Vec<(i64, i64)>,
    /// (second, ok) of each finished attempt.
    pub completions: Vec<(i64, bool)>,
}

struct Transfer {
    start: i64,
    done: f64,
}

struct Finished {
    start: i64,
    end: i64,
    size: f64,
    ok: bool,
}

/// Run a scenario.
pub fn run(s: &Scenario) -> Trace {
    let mut rng = Rng::new(s.seed);
    let mut trace = Trace::default();
    let mut link = s.link;
    let mut active: Vec<Transfer> = Vec::new();
    let mut history: Vec<Finished> = Vec::new();
    let mut state = State {
        active: s.start_active,
        ..State::default()
    };
    let mut cap = s.start_active;
    // An endless queue: the link always has work.
    let queue = 100_000;
    for now in 0..s.duration {
        if s.drop_at == Some(now) {
            link.bandwidth *= s.drop_factor;
        }
        while (active.len() as i64) < cap {
            active.push(Transfer {
                start: now,
                done: 0.0,
            });
        }
        let moving = active
            .iter()
            .filter(|t| (now - t.start) as f64 >= link.latency)
            .count();
        let rate = link.rate(moving);
        let mut moved = 0.0;
        let n = active.len();
        let mut i = 0;
        while i < active.len() {
            let t = &mut active[i];
            if (now - t.start) as f64 >= link.latency {
                let step = rate.min(s.filesize - t.done);
                t.done += step;
                moved += step;
            }
            if t.done >= s.filesize {
                let ok = rng.next_f64() >= link.failure_probability(n);
                history.push(Finished {
                    start: t.start,
                    end: now + 1,
                    size: s.filesize,
                    ok,
                });
                trace.completions.push((now + 1, ok));
                active.swap_remove(i);
            } else {
                i += 1;
            }
        }
        trace.bytes.push(moved);

        if now > 0 && now % s.interval == 0 {
            history.retain(|f| f.end >= now - 1800);
            let m = measure(now, &active, &history, queue);
            // The start value is a stored value without measurements: the first run compares
            // with an EMA of 0, as the reference's first run after a restart would not.
            let out = core::decide(Input {
                now,
                measurement: &m,
                previous: Some(&state),
                limits: &s.limits,
                mode: s.mode,
                history: s.history,
            });
            if let Outcome::Decided(d) = out {
                state = d.state;
                cap = d.active.max(1);
                trace.decisions.push((now, d.active));
            }
        }
    }
    trace
}

/// §3.1's measurements over the simulated records.
fn measure(now: i64, active: &[Transfer], history: &[Finished], queue: i64) -> Measurement {
    let recent: Vec<&Finished> = history.iter().filter(|f| f.ok).collect();
    let avg = if recent.is_empty() {
        0
    } else {
        recent.iter().map(|f| f.end - f.start).sum::<i64>() / recent.len() as i64
    };
    let w = core::window(avg);
    let from = now - w;
    let mut bytes = 0.0;
    for t in active {
        let dur = (now - t.start).max(1) as f64;
        let in_win = (now - t.start.max(from)) as f64;
        bytes += (t.done / dur).floor() * in_win;
    }
    let (mut ok, mut failed) = (0, 0);
    for f in history.iter().filter(|f| f.end >= from) {
        if f.ok {
            ok += 1;
            let dur = (f.end - f.start) as f64;
            let in_win = (f.end - f.start.max(from)) as f64;
            bytes += if dur > 0.0 {
                (f.size / dur) * in_win
            } else {
                f.size
            };
        } else {
            failed += 1;
        }
    }
    Measurement {
        throughput: bytes / w as f64,
        success: core::success_rate(ok, failed),
        retry_count: 0,
        active_count: active.len() as i64,
        queue_size: queue,
        filesize_avg: history.first().map_or(0.0, |f| f.size),
        filesize_stddev: 0.0,
        source_throughput: 0.0,
        dest_throughput: 0.0,
    }
}

/// The figures of `BENCHMARKS.md` for one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// First second (from 0) at which the one-minute average reaches 90 % of the capacity.
    pub time_to_90: Option<i64>,
    /// Mean throughput (fraction of the capacity) over `[from, to)`.
    pub steady_throughput: f64,
    /// Smallest and largest decision over `[from, to)`, and the standard deviation.
    pub steady_range: (i64, i64),
    pub steady_stddev: f64,
    /// Failed attempts over `[from, to)`, and their share.
    pub failures: usize,
    pub failure_share: f64,
}

/// Summarise `[from, to)` of a trace against `capacity` (bytes/s).
pub fn summarize(trace: &Trace, capacity: f64, from: i64, to: i64) -> Summary {
    let minute: Vec<f64> = trace
        .bytes
        .windows(60)
        .map(|w| w.iter().sum::<f64>() / 60.0)
        .collect();
    let time_to_90 = minute
        .iter()
        .position(|b| *b >= 0.9 * capacity)
        .map(|i| i as i64 + 60);
    let slice = &trace.bytes[from as usize..(to as usize).min(trace.bytes.len())];
    let steady_throughput = slice.iter().sum::<f64>() / slice.len().max(1) as f64 / capacity;
    let values: Vec<i64> = trace
        .decisions
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, a)| *a)
        .collect();
    let mean = values.iter().sum::<i64>() as f64 / values.len().max(1) as f64;
    let var = values
        .iter()
        .map(|v| (*v as f64 - mean).powi(2))
        .sum::<f64>()
        / values.len().max(1) as f64;
    let attempts: Vec<bool> = trace
        .completions
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, ok)| *ok)
        .collect();
    let failures = attempts.iter().filter(|ok| !**ok).count();
    Summary {
        time_to_90,
        steady_throughput,
        steady_range: (
            values.iter().copied().min().unwrap_or(0),
            values.iter().copied().max().unwrap_or(0),
        ),
        steady_stddev: var.sqrt(),
        failures,
        failure_share: failures as f64 / attempts.len().max(1) as f64,
    }
}

/// The benchmark's link: capacity `capacity` bytes/s, a per-transfer ceiling of a tenth of it,
/// 2 s of latency, failures rising past 30 concurrent transfers; 2 GB files; the shipped
/// `* → *` range (2..130, mode 2 "normal"); 4 hours, capacity halved after 2.
pub fn reference_scenario(history: History) -> Scenario {
    let capacity = 1e9;
    Scenario {
        link: LinkModel {
            bandwidth: capacity,
            per_transfer: capacity / 10.0,
            latency: 2.0,
            failure_rate: 0.0,
            concurrency_limit: 30,
            failure_step: 0.02,
        },
        filesize: 2e9,
        limits: Limits {
            min_active: 2,
            max_active: 130,
            specific: false,
            source_max_active: 200,
            dest_max_active: 200,
            source_max_throughput: 0.0,
            dest_max_throughput: 0.0,
            lan: false,
        },
        mode: Mode::Normal,
        history,
        interval: 60,
        duration: 4 * 3600,
        drop_at: Some(2 * 3600),
        drop_factor: 0.5,
        start_active: 2,
        seed: 42,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_optimizer_fills_a_shared_link() {
        for history in [History::Persistent, History::Memoryless, History::Probing] {
            let s = reference_scenario(history);
            let trace = run(&s);
            let sum = summarize(&trace, s.link.bandwidth, 3600, 7200);
            assert!(sum.time_to_90.is_some(), "{history:?}: {sum:?}");
            assert!(sum.steady_throughput > 0.8, "{history:?}: {sum:?}");
        }
    }

    /// `cargo test --lib engine::optimizer::sim -- --ignored --nocapture` prints the figures.
    #[test]
    #[ignore]
    fn print_summaries() {
        for history in [History::Persistent, History::Memoryless, History::Probing] {
            let s = reference_scenario(history);
            let t = run(&s);
            let c = s.link.bandwidth;
            println!("{history:?}");
            println!("  up    {:?}", summarize(&t, c, 3600, 7200));
            println!(
                "  down  {:?}",
                summarize(&t, c / 2.0, 7200 + 1800, 4 * 3600)
            );
            let d: Vec<_> = t.decisions.iter().map(|d| d.1).collect();
            println!("  {:?}", &d[..60.min(d.len())]);
            println!("  {:?}", &d[120..180.min(d.len())]);
        }
    }
}
