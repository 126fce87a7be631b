//! The optimizer's decision for one link, as a pure function (engine spec §3.2): measurements,
//! the previous state, the link's range and SE limits and the optimizer mode in; the decision
//! (active transfers, streams, rationale, diff) and the state to remember out. No I/O, no clock:
//! the caller passes `now`.
//!
//! The algorithm is the designed one of FTS 3.13, whose optimizer kept each link's previous
//! state for the life of the process; here that state comes from the stored current value
//! (`OptimizerCurrent`), so it also survives restarts (spec §9 quirk 1). [`History::Memoryless`]
//! reproduces 3.14, where the previous state is always the current measurement, for comparison.
//! [`History::Probing`] is an opt-in variant measured in `BENCHMARKS.md`.

/// EMA weight of the newest throughput sample (`OptimizerEMAAlpha`).
pub const EMA_ALPHA: f64 = 0.1;
/// Below this success rate (percent) the link backs off (`OptimizerLowSuccessRate`).
pub const LOW_SUCCESS_RATE: f64 = 97.0;
/// A bad but improving link at or above this rate is held (`OptimizerBaseSuccessRate`).
pub const BASE_SUCCESS_RATE: f64 = 96.0;
/// Increase step in modes 0 and 1 (`OptimizerIncreaseStep`).
pub const INCREASE_STEP: i64 = 1;
/// Increase step in modes 2 and 3 (`OptimizerAggressiveIncreaseStep`).
pub const AGGRESSIVE_INCREASE_STEP: i64 = 2;
/// Decrease step (`OptimizerDecreaseStep`).
pub const DECREASE_STEP: i64 = 1;
/// Most streams per transfer (`OptimizerMaxStreams`; also bounds actives per queued file).
pub const MAX_STREAMS: i64 = 16;
/// Without change in success and EMA, a link is re-evaluated only after this long
/// (`OptimizerSteadyInterval`, seconds).
pub const STEADY_INTERVAL: i64 = 300;
/// Lower end of the range of a WAN link without a configured minimum.
pub const DEFAULT_MIN_ACTIVE: i64 = 2;
/// Lower end of the range of a LAN link without a configured minimum.
pub const DEFAULT_LAN_ACTIVE: i64 = 10;

/// `t_link_config.optimizer_mode`, clamped to 0..=3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Pins streams to 1; actives are still optimized, with the small step and no queue gate.
    Disabled = 0,
    Conservative = 1,
    Normal = 2,
    Aggressive = 3,
}

impl Mode {
    /// The mode of a link configuration value (missing: the built-in 1).
    pub fn from_config(value: Option<i64>) -> Mode {
        match value.unwrap_or(1).clamp(0, 3) {
            0 => Mode::Disabled,
            1 => Mode::Conservative,
            2 => Mode::Normal,
            _ => Mode::Aggressive,
        }
    }
}

/// What the optimizer compares a run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum History {
    /// The designed (3.13) behaviour: the previous run's state, kept across restarts.
    #[default]
    Persistent,
    /// 3.14's effective behaviour: every run is a first run (previous == current).
    Memoryless,
    /// Persistent history, plus: while the link is healthy and every slot is busy, grow by
    /// half the current value instead of the fixed step, and stop growing as soon as the EMA
    /// no longer improves (see `BENCHMARKS.md`).
    Probing,
}

impl History {
    pub fn parse(name: &str) -> Option<History> {
        match name {
            "persistent" => Some(History::Persistent),
            "memoryless" => Some(History::Memoryless),
            "probing" => Some(History::Probing),
            _ => None,
        }
    }
}

/// One run's measurements of a link (spec §3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measurement {
    /// Bytes per second over the window.
    pub throughput: f64,
    /// Percent, 100 without samples.
    pub success: f64,
    pub retry_count: i64,
    /// ACTIVE transfers on the link.
    pub active_count: i64,
    /// SUBMITTED files on the link.
    pub queue_size: i64,
    pub filesize_avg: f64,
    pub filesize_stddev: f64,
    /// Throughput (as url-copy reports it, MiB/s) of everything ACTIVE from the source SE and
    /// into the destination SE.
    pub source_throughput: f64,
    pub dest_throughput: f64,
}

/// The state a decision leaves behind (what the next run compares with).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct State {
    /// Unix seconds of the decision.
    pub timestamp: i64,
    /// The decided value (`t_optimizer.active`); 0 = never decided.
    pub active: i64,
    pub ema: f64,
    pub throughput: f64,
    pub success: f64,
    pub retry_count: i64,
    pub active_count: i64,
    pub queue_size: i64,
    pub filesize_avg: f64,
    pub filesize_stddev: f64,
}

/// The link's limits, as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// From the link configuration (≤ 0: unset).
    pub min_active: i64,
    pub max_active: i64,
    /// The link configuration came from an exact, `src → *` or `* → dst` row (not `* → *`).
    pub specific: bool,
    /// Source outbound and destination inbound active limits.
    pub source_max_active: i64,
    pub dest_max_active: i64,
    /// Source outbound and destination inbound throughput limits (MiB/s, ≤ 0: none).
    pub source_max_throughput: f64,
    pub dest_max_throughput: f64,
    /// Source and destination are on the same LAN.
    pub lan: bool,
}

/// The working range of a link (spec §3.1, last point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: i64,
    pub max: i64,
    pub specific: bool,
    /// The maximum came from the SE limits.
    pub storage_specific: bool,
}

impl Limits {
    pub fn range(&self) -> Range {
        let min = if self.min_active > 0 {
            self.min_active
        } else if self.lan {
            DEFAULT_LAN_ACTIVE
        } else {
            DEFAULT_MIN_ACTIVE
        };
        let (max, storage_specific) = if self.max_active > 0 {
            (self.max_active, false)
        } else {
            (self.source_max_active.min(self.dest_max_active), true)
        };
        Range {
            min,
            max: max.max(min),
            specific: self.specific,
            storage_specific,
        }
    }
}

/// LAN detection: identical SE strings, or identical text after the first `.` of each
/// (`mock://a.cern.ch` and `mock://b.cern.ch`).
pub fn is_lan(source_se: &str, dest_se: &str) -> bool {
    if source_se == dest_se {
        return true;
    }
    match (source_se.split_once('.'), dest_se.split_once('.')) {
        (Some((_, a)), Some((_, b))) => a == b,
        _ => false,
    }
}

/// A stored decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub active: i64,
    pub streams: i64,
    pub rationale: String,
    /// Decision minus the previous value (the decision itself on the first one; 0 for
    /// "Range fixed" and bandwidth limits).
    pub diff: i64,
    /// What to remember (and store beside the current value).
    pub state: State,
}

/// The outcome of one run for one link.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Decided(Decision),
    /// Nothing changed and the steady interval has not passed: no decision, no write.
    Steady,
}

/// Everything one decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub now: i64,
    pub measurement: &'a Measurement,
    /// The stored state (`None`: no row, never decided).
    pub previous: Option<&'a State>,
    pub limits: &'a Limits,
    pub mode: Mode,
    pub history: History,
}

/// Decide for one link.
pub fn decide(input: Input<'_>) -> Outcome {
    let m = input.measurement;
    let range = input.limits.range();
    let previous_value = input.previous.map_or(0, |p| p.active);
    let current = |active: i64, ema: f64| State {
        timestamp: input.now,
        active,
        ema,
        throughput: m.throughput,
        success: m.success,
        retry_count: m.retry_count,
        active_count: m.active_count,
        queue_size: m.queue_size,
        filesize_avg: m.filesize_avg,
        filesize_stddev: m.filesize_stddev,
    };
    let decided = |active: i64, ema: f64, rationale: String, diff: i64| {
        Outcome::Decided(Decision {
            active,
            streams: streams(active, m, input.mode),
            rationale,
            diff,
            state: current(active, ema),
        })
    };

    // 1. Never decided.
    if previous_value <= 0 {
        let (decision, rationale) = if range.specific {
            (range.max, "No information. Use configured range max.")
        } else {
            (
                range.min + (range.max - range.min) / 2,
                "No information. Start halfway.",
            )
        };
        return decided(decision, m.throughput, rationale.into(), decision);
    }

    // 2. The previous state: the stored one, or (memoryless) the current measurement.
    let (previous, first_run) = match (input.history, input.previous) {
        (History::Memoryless, _) | (_, None) => (current(previous_value, m.throughput), true),
        (_, Some(p)) => (*p, false),
    };

    // 3. EMA; an empty window does not decay it.
    let ema = if m.throughput > 0.0 {
        EMA_ALPHA * m.throughput + (1.0 - EMA_ALPHA) * previous.ema
    } else {
        previous.ema
    };

    // 4. Fixed range.
    if range.min == range.max {
        return decided(range.min, ema, "Range fixed".into(), 0);
    }

    // 5. Bandwidth caps (no range clamping on this path).
    let caps = [
        (
            input.limits.source_max_throughput,
            m.source_throughput,
            "Source",
        ),
        (
            input.limits.dest_max_throughput,
            m.dest_throughput,
            "Destination",
        ),
    ];
    for (limit, used, side) in caps {
        if limit > 0.0 && used > limit {
            return decided(
                previous_value - DECREASE_STEP,
                ema,
                format!("{side} throughput limitation reached ({limit})"),
                0,
            );
        }
    }

    // 6. Nothing new: skip until the steady interval has passed.
    if !first_run
        && m.success == previous.success
        && ema == previous.ema
        && input.now - previous.timestamp < STEADY_INTERVAL
    {
        return Outcome::Steady;
    }

    // 7. Choose.
    let step = if input.mode >= Mode::Normal {
        AGGRESSIVE_INCREASE_STEP
    } else {
        INCREASE_STEP
    };
    let log = |x: f64| x.log10().round();
    let (mut decision, rationale) = if m.success < LOW_SUCCESS_RATE {
        if m.success > previous.success
            && m.success >= BASE_SUCCESS_RATE
            && m.retry_count <= previous.retry_count
        {
            (
                previous_value,
                "Bad link efficiency but progressively improving",
            )
        } else if m.success < previous.success {
            (previous_value - DECREASE_STEP, "Bad link efficiency")
        } else {
            (
                previous_value - DECREASE_STEP,
                "Bad link efficiency, no changes",
            )
        }
    } else if ema == 0.0 {
        (previous_value, "Steady, not enough throughput information")
    } else if m.queue_size < previous_value {
        (previous_value, "Queue emptying. Hold on.")
    } else if ema < previous.ema {
        if log(m.filesize_avg) < log(previous.filesize_avg) {
            (
                previous_value + step,
                "Good link efficiency, throughput deterioration, avg. filesize decreasing",
            )
        } else if log(ema) < log(previous.ema) {
            (
                previous_value - DECREASE_STEP,
                "Good link efficiency, throughput deterioration",
            )
        } else {
            (
                previous_value,
                "Good link efficiency, small throughput deterioration",
            )
        }
    } else if ema > previous.ema {
        let grow = if input.history == History::Probing && m.active_count >= previous_value {
            step.max(previous_value / 2)
        } else {
            step
        };
        (
            previous_value + grow,
            "Good link efficiency, current average throughput is larger than the preceding average",
        )
    } else {
        (previous_value + step, "Good link efficiency. Increment")
    };
    let mut rationale = rationale.to_string();

    // Probing: a healthy link whose EMA stopped growing while every slot was busy has found
    // its knee; settle one step back instead of climbing to the range maximum.
    if input.history == History::Probing
        && m.success >= LOW_SUCCESS_RATE
        && ema > 0.0
        && ema <= previous.ema * 1.01
        && decision > previous_value
        && m.active_count >= previous_value
    {
        decision = previous_value;
        rationale = "Good link efficiency, throughput saturated. Hold on.".into();
    }

    // 8. Range.
    if decision < range.min {
        decision = range.min;
        rationale.push_str(". Hit lower range limit");
        if !range.specific {
            rationale.push_str(". Using *->* link configuration");
        }
    } else if decision > range.max {
        decision = range.max;
        rationale.push_str(". Hit upper range limit");
        if !range.specific {
            rationale.push_str(". Using *->* link configuration");
        } else if range.storage_specific {
            rationale.push_str(". Link not configured. Using SE limits");
        }
    }

    // 9. Mode gates, on increases only.
    let decision = mode_gate(
        decision,
        previous_value,
        m.queue_size,
        input.mode,
        &mut rationale,
    );

    // 10. Store.
    decided(decision, ema, rationale, decision - previous_value)
}

/// The mode gates of an increase (spec §3.2 step 9): conservative links grow only while the
/// queue holds enough files for the new value; normal and aggressive links never run more
/// transfers than `queue × MAX_STREAMS`. With the reference's order of branches the second
/// gate cannot fire (a link whose queue is shorter than its value holds first), but it is kept
/// as the guard it is meant to be.
fn mode_gate(decision: i64, previous: i64, queue: i64, mode: Mode, rationale: &mut String) -> i64 {
    if decision <= previous {
        return decision;
    }
    if mode == Mode::Conservative && queue < decision {
        rationale.push_str(". Not enough files in the queue");
        return previous;
    }
    if mode >= Mode::Normal && decision > queue * MAX_STREAMS {
        rationale.push_str(". Too many streams");
        return previous;
    }
    decision
}

/// Streams per transfer for a decision: 1 in modes 0 and 1; otherwise the decision spread
/// over what runs and waits, within [1, MAX_STREAMS].
pub fn streams(decision: i64, m: &Measurement, mode: Mode) -> i64 {
    let files = m.active_count + m.queue_size;
    if mode <= Mode::Conservative || files <= 0 {
        return 1;
    }
    (decision / files).clamp(1, MAX_STREAMS)
}

/// The time window (seconds) of the success rate and throughput, from the average duration
/// of the last 30 minutes' transfers (truncated to whole seconds).
pub fn window(avg_duration: i64) -> i64 {
    if avg_duration > 0 && avg_duration < 30 {
        5 * 60
    } else if avg_duration > 30 && avg_duration < 900 {
        15 * 60
    } else {
        30 * 60
    }
}

/// The success rate (percent) of `ok` successes and `failed` recoverable failures: rounded up,
/// 100 without samples (an idle link never backs off).
pub fn success_rate(ok: u64, failed: u64) -> f64 {
    let total = ok + failed;
    if total == 0 {
        return 100.0;
    }
    (100.0 * ok as f64 / total as f64).ceil()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn limits() -> Limits {
        Limits {
            min_active: 2,
            max_active: 60,
            specific: true,
            source_max_active: 200,
            dest_max_active: 200,
            source_max_throughput: 0.0,
            dest_max_throughput: 0.0,
            lan: false,
        }
    }

    fn measured() -> Measurement {
        Measurement {
            throughput: 1000.0,
            success: 100.0,
            retry_count: 0,
            active_count: 10,
            queue_size: 100,
            filesize_avg: 1e6,
            filesize_stddev: 0.0,
            source_throughput: 0.0,
            dest_throughput: 0.0,
        }
    }

    fn state(active: i64) -> State {
        State {
            timestamp: NOW - 60,
            active,
            ema: 1000.0,
            throughput: 1000.0,
            success: 100.0,
            retry_count: 0,
            active_count: 10,
            queue_size: 100,
            filesize_avg: 1e6,
            filesize_stddev: 0.0,
        }
    }

    fn run(m: &Measurement, prev: Option<&State>, l: &Limits, mode: Mode) -> Outcome {
        decide(Input {
            now: NOW,
            measurement: m,
            previous: prev,
            limits: l,
            mode,
            history: History::Persistent,
        })
    }

    /// Decide and return (active, rationale, diff).
    fn outcome(
        m: &Measurement,
        prev: Option<&State>,
        l: &Limits,
        mode: Mode,
    ) -> (i64, String, i64) {
        match run(m, prev, l, mode) {
            Outcome::Decided(d) => (d.active, d.rationale, d.diff),
            Outcome::Steady => panic!("no decision"),
        }
    }

    fn normal(m: &Measurement, prev: &State) -> (i64, String, i64) {
        outcome(m, Some(prev), &limits(), Mode::Normal)
    }

    #[test]
    fn no_information_starts_at_configured_max_or_halfway() {
        let m = measured();
        let (a, r, d) = outcome(&m, None, &limits(), Mode::Normal);
        assert_eq!(
            (a, r.as_str(), d),
            (60, "No information. Use configured range max.", 60)
        );
        let generic = Limits {
            specific: false,
            max_active: 130,
            ..limits()
        };
        let (a, r, d) = outcome(&m, None, &generic, Mode::Normal);
        assert_eq!(
            (a, r.as_str(), d),
            (66, "No information. Start halfway.", 66)
        );
        // A stored value of 0 (a bandwidth decrease that reached 0) is "no information" too.
        let (a, _, _) = outcome(&m, Some(&state(0)), &generic, Mode::Normal);
        assert_eq!(a, 66);
        // The state is seeded with the throughput as EMA.
        let Outcome::Decided(d) = run(&m, None, &limits(), Mode::Normal) else {
            panic!()
        };
        assert_eq!(d.state.ema, 1000.0);
    }

    #[test]
    fn ema_moves_by_alpha_and_ignores_empty_windows() {
        let mut m = measured();
        m.throughput = 2000.0;
        let Outcome::Decided(d) = run(&m, Some(&state(10)), &limits(), Mode::Normal) else {
            panic!()
        };
        assert_eq!(d.state.ema, 0.1 * 2000.0 + 0.9 * 1000.0);
        m.throughput = 0.0;
        let old = State {
            timestamp: 0,
            ..state(10)
        };
        let Outcome::Decided(d) = run(&m, Some(&old), &limits(), Mode::Normal) else {
            panic!()
        };
        assert_eq!(d.state.ema, 1000.0);
    }

    #[test]
    fn fixed_range_pins_the_value() {
        let l = Limits {
            min_active: 7,
            max_active: 7,
            ..limits()
        };
        let (a, r, d) = outcome(&measured(), Some(&state(10)), &l, Mode::Normal);
        assert_eq!((a, r.as_str(), d), (7, "Range fixed", 0));
    }

    #[test]
    fn bandwidth_limits_step_down_without_clamping() {
        let mut m = measured();
        m.source_throughput = 120.0;
        let l = Limits {
            source_max_throughput: 100.0,
            ..limits()
        };
        let (a, r, d) = outcome(&m, Some(&state(2)), &l, Mode::Normal);
        assert_eq!(
            (a, r.as_str(), d),
            (1, "Source throughput limitation reached (100)", 0)
        );
        let mut m = measured();
        m.dest_throughput = 60.5;
        let l = Limits {
            dest_max_throughput: 50.5,
            ..limits()
        };
        let (a, r, d) = outcome(&m, Some(&state(10)), &l, Mode::Normal);
        assert_eq!(
            (a, r.as_str(), d),
            (9, "Destination throughput limitation reached (50.5)", 0)
        );
    }

    #[test]
    fn unchanged_link_is_skipped_until_the_steady_interval() {
        let m = measured();
        let prev = state(10);
        assert_eq!(
            run(&m, Some(&prev), &limits(), Mode::Normal),
            Outcome::Steady
        );
        let old = State {
            timestamp: NOW - STEADY_INTERVAL,
            ..prev
        };
        let (a, r, _) = normal(&m, &old);
        assert_eq!((a, r.as_str()), (12, "Good link efficiency. Increment"));
        // Memoryless runs are always first runs: never skipped.
        let out = decide(Input {
            now: NOW,
            measurement: &m,
            previous: Some(&prev),
            limits: &limits(),
            mode: Mode::Normal,
            history: History::Memoryless,
        });
        assert!(matches!(out, Outcome::Decided(_)));
    }

    #[test]
    fn low_success_branches() {
        let prev = State {
            success: 95.0,
            retry_count: 3,
            ..state(10)
        };
        let mut m = measured();
        m.success = 96.0;
        m.retry_count = 3;
        let (a, r, d) = normal(&m, &prev);
        assert_eq!(
            (a, r.as_str(), d),
            (10, "Bad link efficiency but progressively improving", 0)
        );
        // Improving but with more retries: no changes.
        m.retry_count = 4;
        let (a, r, _) = normal(&m, &prev);
        assert_eq!((a, r.as_str()), (9, "Bad link efficiency, no changes"));
        // Improving but below the base rate.
        let prev_low = State {
            success: 90.0,
            ..prev
        };
        m.success = 95.0;
        m.retry_count = 0;
        let (a, r, _) = normal(&m, &prev_low);
        assert_eq!((a, r.as_str()), (9, "Bad link efficiency, no changes"));
        // Dropping.
        m.success = 80.0;
        let (a, r, d) = normal(&m, &prev);
        assert_eq!((a, r.as_str(), d), (9, "Bad link efficiency", -1));
    }

    #[test]
    fn good_success_branches() {
        let prev = state(10);
        let mut m = measured();
        m.throughput = 0.0;
        let zero = State {
            ema: 0.0,
            success: 99.0,
            ..prev
        };
        let (a, r, _) = normal(&m, &zero);
        assert_eq!(
            (a, r.as_str()),
            (10, "Steady, not enough throughput information")
        );

        let mut m = measured();
        m.queue_size = 9;
        m.throughput = 5000.0;
        let (a, r, _) = normal(&m, &prev);
        assert_eq!((a, r.as_str()), (10, "Queue emptying. Hold on."));

        let mut m = measured();
        m.throughput = 5000.0;
        let (a, r, d) = normal(&m, &prev);
        assert_eq!(
            (a, r.as_str(), d),
            (
                12,
                "Good link efficiency, current average throughput is larger than the preceding average",
                2
            )
        );
        let (a, _, _) = outcome(&m, Some(&prev), &limits(), Mode::Conservative);
        assert_eq!(a, 11);
        let (a, _, _) = outcome(&m, Some(&prev), &limits(), Mode::Disabled);
        assert_eq!(a, 11);

        // Deterioration: smaller files, large drop, small drop.
        let mut m = measured();
        m.throughput = 100.0;
        m.filesize_avg = 1e4;
        let (a, r, _) = normal(&m, &prev);
        assert_eq!(
            (a, r.as_str()),
            (
                12,
                "Good link efficiency, throughput deterioration, avg. filesize decreasing"
            )
        );
        let big = State {
            ema: 3500.0,
            ..prev
        };
        m.filesize_avg = 1e6;
        let (a, r, _) = normal(&m, &big);
        assert_eq!(
            (a, r.as_str()),
            (9, "Good link efficiency, throughput deterioration")
        );
        let (a, r, _) = normal(&m, &prev);
        assert_eq!(
            (a, r.as_str()),
            (10, "Good link efficiency, small throughput deterioration")
        );

        // Equal EMA after the steady interval.
        let old = State {
            timestamp: NOW - 1000,
            ..prev
        };
        let (a, r, _) = normal(&measured(), &old);
        assert_eq!((a, r.as_str()), (12, "Good link efficiency. Increment"));
    }

    #[test]
    fn range_limits_are_applied_with_their_suffixes() {
        let mut m = measured();
        m.success = 50.0;
        let (a, r, _) = normal(&m, &state(2));
        assert_eq!(
            (a, r.as_str()),
            (2, "Bad link efficiency. Hit lower range limit")
        );
        let generic = Limits {
            specific: false,
            ..limits()
        };
        let (a, r, _) = outcome(&m, Some(&state(2)), &generic, Mode::Normal);
        assert_eq!(
            (a, r.as_str()),
            (
                2,
                "Bad link efficiency. Hit lower range limit. Using *->* link configuration"
            )
        );

        let mut m = measured();
        m.throughput = 5000.0;
        m.queue_size = 1000;
        let (a, r, _) = normal(&m, &state(59));
        assert_eq!(
            (a, r.as_str()),
            (
                60,
                "Good link efficiency, current average throughput is larger than the preceding average. Hit upper range limit"
            )
        );
        let (_, r, _) = outcome(&m, Some(&state(59)), &generic, Mode::Normal);
        assert!(
            r.ends_with(". Hit upper range limit. Using *->* link configuration"),
            "{r}"
        );
        let se = Limits {
            max_active: 0,
            source_max_active: 30,
            dest_max_active: 40,
            ..limits()
        };
        let (a, r, _) = outcome(&m, Some(&state(30)), &se, Mode::Normal);
        assert_eq!(a, 30);
        assert!(
            r.ends_with(". Hit upper range limit. Link not configured. Using SE limits"),
            "{r}"
        );
    }

    #[test]
    fn working_range_defaults() {
        let l = Limits {
            min_active: 0,
            max_active: 0,
            source_max_active: 1,
            dest_max_active: 5,
            ..limits()
        };
        let r = l.range();
        assert_eq!((r.min, r.max, r.storage_specific), (2, 2, true));
        let lan = Limits { lan: true, ..l };
        assert_eq!(lan.range().min, 10);
        assert!(is_lan("mock://a.cern.ch", "mock://b.cern.ch"));
        assert!(is_lan("mock://x", "mock://x"));
        assert!(!is_lan("mock://a.cern.ch", "mock://b.desy.de"));
        assert!(!is_lan("mock://a", "mock://b"));
    }

    #[test]
    fn mode_gates_apply_to_increases_only() {
        let mut m = measured();
        m.throughput = 5000.0;
        m.queue_size = 10;
        let (a, r, _) = outcome(&m, Some(&state(10)), &limits(), Mode::Conservative);
        assert_eq!(
            (a, r.as_str()),
            (
                10,
                "Good link efficiency, current average throughput is larger than the preceding average. Not enough files in the queue"
            )
        );
        // Normal: at most queue × MAX_STREAMS.
        let (a, r, _) = outcome(&m, Some(&state(10)), &limits(), Mode::Normal);
        assert_eq!(a, 12);
        assert!(!r.contains("streams"));
        m.queue_size = 1;
        let prev = State {
            queue_size: 1,
            ..state(1)
        };
        let l = Limits {
            min_active: 1,
            ..limits()
        };
        let (a, _, _) = outcome(&m, Some(&prev), &l, Mode::Normal);
        assert_eq!(a, 3);
        let prev = state(16);
        let (a, r, _) = outcome(&m, Some(&prev), &l, Mode::Aggressive);
        // Queue emptying holds before any gate.
        assert_eq!((a, r.as_str()), (16, "Queue emptying. Hold on."));
        let mut r = String::from("x");
        assert_eq!(mode_gate(40, 30, 2, Mode::Normal, &mut r), 30);
        assert_eq!(r, "x. Too many streams");
        let mut r = String::from("x");
        assert_eq!(mode_gate(32, 30, 2, Mode::Aggressive, &mut r), 32);
        assert_eq!(mode_gate(20, 30, 0, Mode::Normal, &mut r), 20);
        assert_eq!(mode_gate(40, 30, 0, Mode::Disabled, &mut r), 40);
        assert_eq!(r, "x");
        // Mode 0 has no gate.
        m.queue_size = 10;
        let (a, _, _) = outcome(&m, Some(&state(10)), &limits(), Mode::Disabled);
        assert_eq!(a, 11);
        // Decreases pass the gates.
        m.success = 10.0;
        let (a, _, _) = outcome(&m, Some(&state(10)), &limits(), Mode::Conservative);
        assert_eq!(a, 9);
    }

    #[test]
    fn streams_follow_the_mode_and_the_files() {
        let mut m = measured();
        m.active_count = 2;
        m.queue_size = 2;
        assert_eq!(streams(20, &m, Mode::Conservative), 1);
        assert_eq!(streams(20, &m, Mode::Normal), 5);
        assert_eq!(streams(200, &m, Mode::Normal), MAX_STREAMS);
        assert_eq!(streams(2, &m, Mode::Normal), 1);
        m.active_count = 0;
        m.queue_size = 0;
        assert_eq!(streams(20, &m, Mode::Aggressive), 1);
        assert_eq!(Mode::from_config(None), Mode::Conservative);
        assert_eq!(Mode::from_config(Some(9)), Mode::Aggressive);
        assert_eq!(Mode::from_config(Some(-1)), Mode::Disabled);
    }

    #[test]
    fn memoryless_reproduces_3_14() {
        let m = Measurement {
            throughput: 5000.0,
            ..measured()
        };
        let prev = state(10);
        let out = |m: &Measurement| match decide(Input {
            now: NOW,
            measurement: m,
            previous: Some(&prev),
            limits: &limits(),
            mode: Mode::Normal,
            history: History::Memoryless,
        }) {
            Outcome::Decided(d) => (d.active, d.rationale),
            Outcome::Steady => panic!(),
        };
        assert_eq!(out(&m), (12, "Good link efficiency. Increment".to_string()));
        let bad = Measurement { success: 50.0, ..m };
        assert_eq!(
            out(&bad),
            (9, "Bad link efficiency, no changes".to_string())
        );
    }

    #[test]
    fn windows_and_success_rates() {
        assert_eq!(window(0), 1800);
        assert_eq!(window(29), 300);
        assert_eq!(window(30), 1800);
        assert_eq!(window(31), 900);
        assert_eq!(window(900), 1800);
        assert_eq!(success_rate(0, 0), 100.0);
        assert_eq!(success_rate(97, 3), 97.0);
        assert_eq!(success_rate(1, 2), 34.0);
    }
}
