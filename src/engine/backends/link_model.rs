//! A shared-capacity network link, for test labs and the optimizer simulation: concurrent
//! transfers share the link's bandwidth, each is held below a per-transfer ceiling (one TCP
//! stream's window), starts after a latency, and fails more often once the link carries more
//! transfers than its concurrency limit (overloaded storage or congestion).
//!
//! Pure arithmetic: the mock backend and the simulator both drive it with their own clock.

use serde::Deserialize;

/// The behaviour of one link.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkModel {
    /// Bytes per second the link carries in total.
    pub bandwidth: f64,
    /// Bytes per second one transfer reaches at most.
    pub per_transfer: f64,
    /// Seconds before a transfer moves its first byte.
    #[serde(default)]
    pub latency: f64,
    /// Failure probability of a transfer at or below the concurrency limit.
    #[serde(default)]
    pub failure_rate: f64,
    /// Transfers the link carries without extra failures.
    pub concurrency_limit: u32,
    /// Extra failure probability per transfer above the limit.
    #[serde(default = "default_failure_step")]
    pub failure_step: f64,
}

/// Each transfer above the limit adds 2 % failure probability: a few over the limit push the
/// success rate under the optimizer's 97 % threshold.
fn default_failure_step() -> f64 {
    0.02
}

/// Failure probability never goes beyond this: some transfers still get through.
const MAX_FAILURE: f64 = 0.9;

impl LinkModel {
    /// Bytes per second of each of `n` concurrent transfers.
    pub fn rate(&self, n: usize) -> f64 {
        if n == 0 {
            return self.per_transfer;
        }
        (self.bandwidth / n as f64).min(self.per_transfer)
    }

    /// Probability that a transfer fails when `n` run at once.
    pub fn failure_probability(&self, n: usize) -> f64 {
        let over = (n as f64 - f64::from(self.concurrency_limit)).max(0.0);
        (self.failure_rate + over * self.failure_step).min(MAX_FAILURE)
    }
}

/// A small deterministic generator (xorshift64*): reproducible runs without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_shared_and_failures_rise_past_the_limit() {
        let m = LinkModel {
            bandwidth: 1000.0,
            per_transfer: 100.0,
            latency: 0.0,
            failure_rate: 0.0,
            concurrency_limit: 30,
            failure_step: 0.02,
        };
        assert_eq!(m.rate(5), 100.0);
        assert_eq!(m.rate(20), 50.0);
        assert_eq!(m.failure_probability(30), 0.0);
        assert!((m.failure_probability(35) - 0.1).abs() < 1e-9);
        assert_eq!(m.failure_probability(1000), MAX_FAILURE);
        let mut rng = Rng::new(7);
        let mean = (0..10_000).map(|_| rng.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
