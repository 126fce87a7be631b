//! The optimizer's API (`/optimizer/*`, API spec §3.7), the historic pair status
//! (`/snapshot`, `/optimizer/snapshot`) and the server status (`/status/hosts`, §3.8).
//!
//! Authorization: the reference checks nothing on the optimizer endpoints. The readers stay
//! open to every caller (anonymous included; a banned DN is still refused, as everywhere).
//! Decision: `POST /optimizer/current` requires the `config` level. In the reference anyone who
//! can reach the port may set any link's concurrency and streams, which lets an anonymous
//! client stall (active 0) or flood (active 4096) a storage; no client of the reference writes
//! there, so closing it costs nothing. `/status/hosts` needs a certificate and `config`, as in
//! the reference.

use serde_json::{Map, Value};

use super::{Parsed, Service, ServiceError};
use crate::model::{
    identity::{AuthMethod, User},
    optimizer::{Decision, EvolutionEntry, HostActivity, LinkFilter, OptimizerCurrent, PairStatus},
    query::PairFilter,
    submit::{python_float, python_float_text, python_int_checked},
};

/// `GET /optimizer/evolution` returns this many decisions, newest first (the reference's cut).
pub const EVOLUTION_LIMIT: usize = 50;

/// Seconds of history the pair status covers.
pub const PAIR_STATUS_WINDOW: i64 = 3600;

fn bad(m: String) -> ServiceError {
    ServiceError::BadRequest(m)
}

/// A parameter as text: strings as they are, other JSON values as their JSON text; empty is
/// absent (the reference tests `if not value`).
fn text(input: &Map<String, Value>, key: &str) -> Option<String> {
    match input.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// `Field` as the reference capitalises it in messages (`queue_size` → `Queue_size`).
fn capitalised(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An integer field with the reference's default, conversion and messages.
fn int_field(input: &Map<String, Value>, key: &str, default: i64) -> Result<i64, ServiceError> {
    let name = capitalised(key);
    let value = match input.get(key) {
        None => default,
        Some(v) => {
            python_int_checked(v).map_err(|e| bad(format!("{name} must be an integer ({e})")))?
        }
    };
    if value < 0 {
        return Err(bad(format!("{name} must be positive ({value})")));
    }
    Ok(value)
}

/// A float field with the reference's default (0), conversion and messages.
fn float_field(input: &Map<String, Value>, key: &str) -> Result<f64, ServiceError> {
    let name = capitalised(key);
    let value = match input.get(key) {
        None => 0.0,
        Some(v) => python_float(v).map_err(|e| bad(format!("{name} must be a float ({e})")))?,
    };
    if value < 0.0 {
        return Err(bad(format!(
            "{name} must be positive ({})",
            python_float_text(value)
        )));
    }
    Ok(value)
}

/// Read a `POST /optimizer/current` body into a decision made at `now` (unix µs). Fields are
/// checked in the reference's order, so the first bad one is reported.
pub fn decision_from_input(input: &Map<String, Value>, now: i64) -> Result<Decision, ServiceError> {
    let (Some(source_se), Some(dest_se)) = (text(input, "source_se"), text(input, "dest_se"))
    else {
        return Err(bad("Missing source and/or destination".into()));
    };
    let active = int_field(input, "active", 2)?;
    let nostreams = int_field(input, "nostreams", 1)?;
    let diff = int_field(input, "diff", 1)?;
    let actual_active = int_field(input, "actual_active", 1)?;
    let queue_size = int_field(input, "queue_size", 1)?;
    let ema = float_field(input, "ema")?;
    let throughput = float_field(input, "throughput")?;
    let success = float_field(input, "success")?;
    let filesize_avg = float_field(input, "filesize_avg")?;
    let filesize_stddev = float_field(input, "filesize_stddev")?;
    // The reference then copies every raw input key onto both records unvalidated (and, under
    // Python 3, fails on `dict.iteritems`); ftsd stores the validated values only.
    Ok(Decision {
        source_se,
        dest_se,
        datetime: now,
        active,
        nostreams,
        ema,
        throughput,
        success,
        rationale: text(input, "rationale"),
        diff,
        actual_active,
        queue_size,
        filesize_avg,
        filesize_stddev,
        retry_count: 0,
    })
}

/// A `POST /optimizer/current` body parsed at the edge: the decision, made now.
pub fn decision_request(input: &Map<String, Value>) -> Parsed<Decision> {
    decision_from_input(input, now_micros())
}

/// Now in unix microseconds.
fn now_micros() -> i64 {
    i64::try_from(crate::model::time::now_nanos() / 1000).unwrap_or(i64::MAX)
}

impl Service {
    /// `GET /optimizer`: whether the optimizer runs. ftsd has no switch to turn it off.
    pub fn optimizer_enabled(&self, _user: &User) -> bool {
        true
    }

    /// `GET /optimizer/evolution`: the newest [`EVOLUTION_LIMIT`] decisions of the links
    /// matching `filter`.
    pub async fn optimizer_evolution(
        &self,
        _user: &User,
        filter: &LinkFilter,
    ) -> Result<Vec<EvolutionEntry>, ServiceError> {
        Ok(self
            .store
            .evolution(filter, None, None, EVOLUTION_LIMIT)
            .await?)
    }

    /// `GET /optimizer/current`: current values of the matching links, newest first.
    pub async fn optimizer_values(
        &self,
        _user: &User,
        filter: &LinkFilter,
    ) -> Result<Vec<OptimizerCurrent>, ServiceError> {
        Ok(self.store.optimizer_values(filter).await?)
    }

    /// `POST /optimizer/current` (config level, see the module note).
    pub async fn set_optimizer_values(
        &self,
        user: &User,
        input: Parsed<Decision>,
    ) -> Result<(EvolutionEntry, OptimizerCurrent), ServiceError> {
        self.require_config(user)?;
        let decision = input?;
        let stored = self.store.set_optimizer(&decision).await?;
        tracing::warn!(
            link = %format!("{} => {}", decision.source_se, decision.dest_se),
            active = decision.active,
            nostreams = decision.nostreams,
            admin = %user.user_dn,
            "optimizer value set by hand"
        );
        Ok(stored)
    }

    /// `GET /snapshot`: one entry per (VO, source, destination) with files, over the last hour.
    /// `limits` are not part of this: they come from the storage configuration (`/config/se`
    /// inbound/outbound throughput), which the API layer adds when that configuration exists.
    pub async fn pair_status(
        &self,
        _user: &User,
        filter: &PairFilter,
    ) -> Result<Vec<PairStatus>, ServiceError> {
        Ok(self
            .store
            .pair_status(filter, crate::model::time::now())
            .await?)
    }

    /// `GET /status/hosts`: running work per host (certificate and config level).
    pub async fn host_activity(
        &self,
        user: &User,
    ) -> Result<std::collections::BTreeMap<String, HostActivity>, ServiceError> {
        if user.method != AuthMethod::Certificate {
            return Err(ServiceError::Forbidden("Certificate required".into()));
        }
        self.require_config(user)?;
        Ok(self.store.host_activity().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn message(v: Value) -> String {
        match decision_from_input(&input(v), 0).unwrap_err() {
            ServiceError::BadRequest(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_reference() {
        let d = decision_from_input(&input(json!({"source_se": "a", "dest_se": "b"})), 7).unwrap();
        assert_eq!(
            (d.active, d.nostreams, d.diff, d.actual_active, d.queue_size),
            (2, 1, 1, 1, 1)
        );
        assert_eq!((d.ema, d.throughput, d.success), (0.0, 0.0, 0.0));
        assert_eq!(d.rationale, None);
        assert_eq!(d.datetime, 7);
        let d = decision_from_input(
            &input(json!({"source_se": "a", "dest_se": "b", "active": "12", "ema": "1.5", "nostreams": 3.9})),
            0,
        )
        .unwrap();
        assert_eq!((d.active, d.nostreams, d.ema), (12, 3, 1.5));
    }

    #[test]
    fn messages_follow_the_reference() {
        assert_eq!(
            message(json!({"dest_se": "b"})),
            "Missing source and/or destination"
        );
        assert_eq!(
            message(json!({"source_se": "", "dest_se": "b"})),
            "Missing source and/or destination"
        );
        let m = |k: &str, v: Value| {
            let mut o = json!({"source_se": "a", "dest_se": "b"});
            o[k] = v;
            message(o)
        };
        assert_eq!(
            m("active", json!("x")),
            "Active must be an integer (invalid literal for int() with base 10: 'x')"
        );
        assert_eq!(
            m("queue_size", json!(null)),
            "Queue_size must be an integer (int() argument must be a string, a bytes-like object or a real number, not 'NoneType')"
        );
        assert_eq!(
            m("nostreams", json!(-16)),
            "Nostreams must be positive (-16)"
        );
        assert_eq!(
            m("filesize_avg", json!("big")),
            "Filesize_avg must be a float (could not convert string to float: 'big')"
        );
        assert_eq!(m("ema", json!(-1)), "Ema must be positive (-1.0)");
        assert_eq!(
            m("success", json!("-0.5")),
            "Success must be positive (-0.5)"
        );
    }
}
