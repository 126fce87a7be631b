//! The `[limits]` section: how long each phase of a connection may take and how the
//! connection slots and request-body memory are shared, so that no client without a
//! certificate can take the service away from those with one.
//!
//! Every value has a default that is safe on the open Internet; times are seconds (fractions
//! allowed: tests use short ones).

use std::time::Duration;

use serde::Deserialize;

/// `[limits]` as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Seconds a client gets from TCP connect to a completed TLS handshake (10).
    pub handshake_timeout: f64,
    /// Seconds from the handshake to a connection's first complete request head, HTTP/2
    /// preface included (10). A client that connects and sends nothing is closed then.
    pub request_head_timeout: f64,
    /// Seconds a kept-alive connection (HTTP/1.1 or HTTP/2) may stay without a request
    /// before it is closed (30); the next request head must be complete within this time.
    pub idle_timeout: f64,
    /// Bytes per second a request body must at least arrive at, averaged from its start
    /// (10240). A body slower than that is cut with 408 and its connection closed.
    pub body_min_rate: u64,
    /// Seconds of a body's start during which `body_min_rate` is not yet enforced (10): a slow
    /// start (TCP ramp-up, a client preparing its data) is not a stall.
    pub body_grace: f64,
    /// Seconds between HTTP/2 PING frames on a connection (20), and how long the answer may
    /// take before the connection is considered dead (`http2_ping_timeout`, 10).
    pub http2_ping_interval: f64,
    pub http2_ping_timeout: f64,
    /// Connections at once from one client address (128); more are refused until one of the
    /// address's own connections closes.
    pub max_connections_per_address: usize,
    /// Percent of `max_connections` that connections without a client certificate may hold,
    /// handshakes in progress included (50): the rest is kept for certificate holders.
    pub anonymous_share: u8,
    /// Request-body bytes held in memory at once, all requests together (128 MiB). A request
    /// that does not fit waits briefly, then gets 503.
    pub body_bytes_in_flight: usize,
}

/// The largest body an endpoint takes (`POST /jobs`, 16 MiB): the body budget must hold at
/// least one, or such a submission could never be read.
pub const MIN_BODY_BUDGET: usize = 16 * 1024 * 1024;
/// No deadline may exceed a day: a longer one is a typo (milliseconds meant as seconds), and it
/// would let idle connections pile up again.
pub const MAX_DEADLINE_SECONDS: f64 = 86_400.0;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            handshake_timeout: 10.0,
            request_head_timeout: 10.0,
            idle_timeout: 30.0,
            body_min_rate: 10 * 1024,
            body_grace: 10.0,
            http2_ping_interval: 20.0,
            http2_ping_timeout: 10.0,
            max_connections_per_address: 128,
            anonymous_share: 50,
            body_bytes_in_flight: 128 * 1024 * 1024,
        }
    }
}

/// `[limits]` resolved against `max_connections`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub request_head_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_min_rate: u64,
    pub body_grace: Duration,
    pub http2_ping_interval: Duration,
    pub http2_ping_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// `anonymous_share` of `max_connections`, at least 1.
    pub max_anonymous_connections: usize,
    pub body_bytes_in_flight: usize,
}

/// A `[limits]` value the service cannot work with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("[limits] {field}: {reason}")]
pub struct LimitsError {
    pub field: &'static str,
    pub reason: String,
}

impl LimitsConfig {
    /// Check every value and apply `max_connections`.
    pub fn resolve(&self, max_connections: usize) -> Result<Limits, LimitsError> {
        let seconds = |field: &'static str, value: f64| {
            if value.is_finite() && value > 0.0 && value <= MAX_DEADLINE_SECONDS {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(LimitsError {
                    field,
                    reason: format!(
                        "{value} is not a number of seconds between 0 (excluded) and {MAX_DEADLINE_SECONDS}"
                    ),
                })
            }
        };
        let at_least = |field: &'static str, value: usize, min: usize, what: &str| {
            if value >= min {
                Ok(value)
            } else {
                Err(LimitsError {
                    field,
                    reason: format!("{value} is less than {min} ({what})"),
                })
            }
        };
        if !(1..=100).contains(&self.anonymous_share) {
            return Err(LimitsError {
                field: "anonymous_share",
                reason: format!(
                    "{} is not a percentage between 1 and 100",
                    self.anonymous_share
                ),
            });
        }
        let max_connections = max_connections.max(1);
        let share = usize::from(self.anonymous_share);
        Ok(Limits {
            handshake_timeout: seconds("handshake_timeout", self.handshake_timeout)?,
            request_head_timeout: seconds("request_head_timeout", self.request_head_timeout)?,
            idle_timeout: seconds("idle_timeout", self.idle_timeout)?,
            body_min_rate: at_least(
                "body_min_rate",
                usize::try_from(self.body_min_rate).unwrap_or(usize::MAX),
                1,
                "bytes per second",
            )? as u64,
            body_grace: seconds("body_grace", self.body_grace)?,
            http2_ping_interval: seconds("http2_ping_interval", self.http2_ping_interval)?,
            http2_ping_timeout: seconds("http2_ping_timeout", self.http2_ping_timeout)?,
            max_connections,
            max_connections_per_address: at_least(
                "max_connections_per_address",
                self.max_connections_per_address,
                1,
                "connections",
            )?,
            max_anonymous_connections: (max_connections * share / 100).max(1),
            body_bytes_in_flight: at_least(
                "body_bytes_in_flight",
                self.body_bytes_in_flight,
                MIN_BODY_BUDGET,
                "the largest request body, a 16 MiB submission, must fit",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let limits = LimitsConfig::default().resolve(1024).unwrap();
        assert_eq!(limits.max_anonymous_connections, 512);
        assert_eq!(limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(
            LimitsConfig::default()
                .resolve(1)
                .unwrap()
                .max_anonymous_connections,
            1
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let bad = |tweak: fn(&mut LimitsConfig)| {
            let mut c = LimitsConfig::default();
            tweak(&mut c);
            c.resolve(100).unwrap_err().field
        };
        assert_eq!(bad(|c| c.idle_timeout = 0.0), "idle_timeout");
        assert_eq!(bad(|c| c.handshake_timeout = f64::NAN), "handshake_timeout");
        assert_eq!(bad(|c| c.body_grace = 1e9), "body_grace");
        assert_eq!(bad(|c| c.anonymous_share = 0), "anonymous_share");
        assert_eq!(bad(|c| c.anonymous_share = 101), "anonymous_share");
        assert_eq!(bad(|c| c.body_min_rate = 0), "body_min_rate");
        assert_eq!(
            bad(|c| c.max_connections_per_address = 0),
            "max_connections_per_address"
        );
        assert_eq!(
            bad(|c| c.body_bytes_in_flight = 1024),
            "body_bytes_in_flight"
        );
    }
}
