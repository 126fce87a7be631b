//! Operator configuration (`/config/*`, `../shared/spec/fts-rest-api.md` §3.9 and §5.5): hosts
//! and their drain flag, server settings per VO, link limits, VO shares per link, storage
//! settings and operation limits, activity shares. Pure: the rows, their defaults, and the
//! reference's value checking (`validate_type`).
//!
//! Invariant: every row a setter stores has passed [`coerce`] for every field, so readers never
//! meet a value of the wrong type.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The name a row uses for "every VO" / "every storage".
pub const ANY: &str = "*";
/// The service name this process registers in the host list (the reference's server daemon).
pub const SERVER_SERVICE: &str = "fts_server";

/// One service on one host (`t_hosts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub hostname: String,
    pub service_name: String,
    /// Last heartbeat, unix seconds.
    pub beat: i64,
    pub drain: bool,
}

/// The type of a configurable column, as `validate_type` maps SQLAlchemy column types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Int,
    Str,
    Bool,
    /// `Float` columns accept any number (`numbers.Number`).
    Number,
}

impl FieldType {
    /// Python's name of the expected type, as the messages say it.
    pub fn python_name(self) -> &'static str {
        match self {
            FieldType::Int => "int",
            FieldType::Str => "str",
            FieldType::Bool => "bool",
            FieldType::Number => "Number",
        }
    }
}

/// A checked value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    Int(i64),
    Str(String),
    Bool(bool),
    Number(f64),
}

impl FieldValue {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            FieldValue::Int(i) => Some(*i),
            FieldValue::Bool(b) => Some(i64::from(*b)),
            FieldValue::Number(f) => Some(*f as i64),
            FieldValue::Str(_) => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            FieldValue::Int(i) => Value::from(*i),
            FieldValue::Str(s) => Value::from(s.as_str()),
            FieldValue::Bool(b) => Value::from(*b),
            FieldValue::Number(f) => Value::from(*f),
        }
    }
}

fn expected(key: &str, ty: FieldType) -> String {
    format!("Field {key} is expected to be {}", ty.python_name())
}

/// The reference's `validate_type`: a value of the column's type passes (JSON booleans count as
/// ints, as Python's `bool` is an `int`); a string is cast (`int("42")`; for flags `true`, `yes`,
/// `on` in any case are true and anything else false; a string is never a `Number`); anything
/// else is refused with `"Field <key> is expected to be <type>"`.
pub fn coerce(key: &str, value: &Value, ty: FieldType) -> Result<FieldValue, String> {
    match (ty, value) {
        (FieldType::Int, Value::Bool(b)) => Ok(FieldValue::Int(i64::from(*b))),
        (FieldType::Int, Value::Number(n)) => n
            .as_i64()
            .map(FieldValue::Int)
            .ok_or_else(|| expected(key, ty)),
        (FieldType::Int, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(FieldValue::Int)
            .map_err(|_| expected(key, ty)),
        (FieldType::Str, Value::String(s)) => Ok(FieldValue::Str(s.clone())),
        (FieldType::Bool, Value::Bool(b)) => Ok(FieldValue::Bool(*b)),
        (FieldType::Bool, Value::String(s)) => Ok(FieldValue::Bool(matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "yes" | "on"
        ))),
        (FieldType::Number, Value::Bool(b)) => Ok(FieldValue::Number(f64::from(u8::from(*b)))),
        (FieldType::Number, Value::Number(n)) => n
            .as_f64()
            .map(FieldValue::Number)
            .ok_or_else(|| expected(key, ty)),
        _ => Err(expected(key, ty)),
    }
}

/// Server settings for one VO, or for every VO (`vo_name` `*`) (`t_server_config`). Unset
/// fields fall back to the `*` row, then to [`EffectiveServerConfig::default`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerConfig {
    pub vo_name: String,
    pub retry: Option<i64>,
    pub max_time_queue: Option<i64>,
    pub global_timeout: Option<i64>,
    pub sec_per_mb: Option<i64>,
    pub no_streaming: Option<bool>,
    pub show_user_dn: Option<bool>,
}

/// The columns of [`ServerConfig`] and their types.
pub const SERVER_CONFIG_FIELDS: &[(&str, FieldType)] = &[
    ("retry", FieldType::Int),
    ("max_time_queue", FieldType::Int),
    ("global_timeout", FieldType::Int),
    ("sec_per_mb", FieldType::Int),
    ("vo_name", FieldType::Str),
    ("no_streaming", FieldType::Bool),
    ("show_user_dn", FieldType::Bool),
];

fn field_type(fields: &[(&str, FieldType)], key: &str) -> Result<FieldType, String> {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("Field {key} unknown"))
}

impl ServerConfig {
    /// The reference's JSON of a row (also the audit text of `set-globals`).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "retry": self.retry,
            "max_time_queue": self.max_time_queue,
            "global_timeout": self.global_timeout,
            "sec_per_mb": self.sec_per_mb,
            "vo_name": self.vo_name,
            "no_streaming": self.no_streaming,
            "show_user_dn": self.show_user_dn,
        })
    }

    /// Apply one input field (already known to be a column) after checking it.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        let v = coerce(key, value, field_type(SERVER_CONFIG_FIELDS, key)?)?;
        self.apply(key, v)
    }

    /// Check one input field against its column type.
    pub fn check(key: &str, value: &Value) -> Result<FieldValue, String> {
        let v = coerce(key, value, field_type(SERVER_CONFIG_FIELDS, key)?)?;
        ServerConfig::default().apply(key, v.clone())?;
        Ok(v)
    }

    /// Apply one checked field.
    pub fn apply(&mut self, key: &str, v: FieldValue) -> Result<(), String> {
        match (key, v) {
            ("retry", FieldValue::Int(i)) => self.retry = Some(i),
            ("max_time_queue", FieldValue::Int(i)) => self.max_time_queue = Some(i),
            ("global_timeout", FieldValue::Int(i)) => self.global_timeout = Some(i),
            ("sec_per_mb", FieldValue::Int(i)) => self.sec_per_mb = Some(i),
            ("vo_name", FieldValue::Str(s)) => self.vo_name = s,
            ("no_streaming", FieldValue::Bool(b)) => self.no_streaming = Some(b),
            ("show_user_dn", FieldValue::Bool(b)) => self.show_user_dn = Some(b),
            _ => return Err(expected(key, FieldType::Str)),
        }
        Ok(())
    }
}

/// Server settings the engine applies to a VO: its row, falling back field by field to the `*`
/// row, then to these defaults (the reference's column defaults: zero and off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EffectiveServerConfig {
    pub retry: i64,
    pub max_time_queue: i64,
    pub global_timeout: i64,
    pub sec_per_mb: i64,
    pub no_streaming: bool,
    pub show_user_dn: bool,
}

impl EffectiveServerConfig {
    pub fn resolve(vo: Option<&ServerConfig>, any: Option<&ServerConfig>) -> Self {
        let pick = |f: fn(&ServerConfig) -> Option<i64>| {
            vo.and_then(f).or_else(|| any.and_then(f)).unwrap_or(0)
        };
        let flag = |f: fn(&ServerConfig) -> Option<bool>| {
            vo.and_then(f).or_else(|| any.and_then(f)).unwrap_or(false)
        };
        EffectiveServerConfig {
            retry: pick(|c| c.retry),
            max_time_queue: pick(|c| c.max_time_queue),
            global_timeout: pick(|c| c.global_timeout),
            sec_per_mb: pick(|c| c.sec_per_mb),
            no_streaming: flag(|c| c.no_streaming),
            show_user_dn: flag(|c| c.show_user_dn),
        }
    }
}

/// Limits of one link (`t_link_config`); `*` stands for any storage on either side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkConfig {
    pub source: String,
    pub destination: String,
    pub symbolicname: String,
    pub min_active: i64,
    pub max_active: i64,
    pub optimizer_mode: Option<i64>,
    pub tcp_buffer_size: Option<i64>,
    pub nostreams: Option<i64>,
    pub no_delegation: Option<bool>,
}

/// The columns of [`LinkConfig`] and their types.
pub const LINK_FIELDS: &[(&str, FieldType)] = &[
    ("source", FieldType::Str),
    ("destination", FieldType::Str),
    ("symbolicname", FieldType::Str),
    ("min_active", FieldType::Int),
    ("max_active", FieldType::Int),
    ("optimizer_mode", FieldType::Int),
    ("tcp_buffer_size", FieldType::Int),
    ("nostreams", FieldType::Int),
    ("no_delegation", FieldType::Bool),
];

impl LinkConfig {
    /// The `*` → `*` link used when nothing more specific is configured (the reference's
    /// default row `('*', '*', '*', 2, 130, 2, 0, 'off')`).
    pub fn default_link() -> LinkConfig {
        LinkConfig {
            source: ANY.into(),
            destination: ANY.into(),
            symbolicname: ANY.into(),
            min_active: 2,
            max_active: 130,
            optimizer_mode: Some(2),
            tcp_buffer_size: Some(0),
            nostreams: Some(0),
            no_delegation: Some(false),
        }
    }

    /// Apply one input field after checking it.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        let v = coerce(key, value, field_type(LINK_FIELDS, key)?)?;
        self.apply(key, v)
    }

    /// Check one input field against its column type.
    pub fn check(key: &str, value: &Value) -> Result<FieldValue, String> {
        let v = coerce(key, value, field_type(LINK_FIELDS, key)?)?;
        LinkConfig::default_link().apply(key, v.clone())?;
        Ok(v)
    }

    /// Apply one checked field.
    pub fn apply(&mut self, key: &str, v: FieldValue) -> Result<(), String> {
        match (key, v) {
            ("source", FieldValue::Str(s)) => self.source = s,
            ("destination", FieldValue::Str(s)) => self.destination = s,
            ("symbolicname", FieldValue::Str(s)) => self.symbolicname = s,
            ("min_active", FieldValue::Int(i)) => self.min_active = i,
            ("max_active", FieldValue::Int(i)) => self.max_active = i,
            ("optimizer_mode", FieldValue::Int(i)) => self.optimizer_mode = Some(i),
            ("tcp_buffer_size", FieldValue::Int(i)) => self.tcp_buffer_size = Some(i),
            ("nostreams", FieldValue::Int(i)) => self.nostreams = Some(i),
            ("no_delegation", FieldValue::Bool(b)) => self.no_delegation = Some(b),
            _ => return Err(expected(key, FieldType::Str)),
        }
        Ok(())
    }
}

/// The share of a VO on a link (`t_share_config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareConfig {
    pub source: String,
    pub destination: String,
    pub vo: String,
    pub share: i64,
}

/// `tpc_support` values a storage may declare.
pub const TPC_SUPPORT: &[&str] = &["FULL", "PULL", "PUSH", "NONE"];

/// Settings of one storage (`t_se`); field names are the JSON names of `se_info`. The `*` row
/// holds the defaults of every storage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeConfig {
    pub storage: String,
    pub inbound_max_active: Option<i64>,
    pub inbound_max_throughput: Option<f64>,
    pub outbound_max_active: Option<i64>,
    pub outbound_max_throughput: Option<f64>,
    pub udt: Option<i64>,
    pub ipv6: Option<i64>,
    pub se_metadata: Option<String>,
    pub site: Option<String>,
    pub debug_level: Option<i64>,
    pub eviction: Option<i64>,
    pub skip_eviction: Option<bool>,
    pub tpc_support: Option<String>,
    pub tape_endpoint: Option<bool>,
    pub overwrite_disk_enabled: Option<bool>,
}

/// The `se_info` fields and their types.
pub const SE_FIELDS: &[(&str, FieldType)] = &[
    ("inbound_max_active", FieldType::Int),
    ("inbound_max_throughput", FieldType::Number),
    ("outbound_max_active", FieldType::Int),
    ("outbound_max_throughput", FieldType::Number),
    ("udt", FieldType::Int),
    ("ipv6", FieldType::Int),
    ("se_metadata", FieldType::Str),
    ("site", FieldType::Str),
    ("debug_level", FieldType::Int),
    ("eviction", FieldType::Int),
    ("skip_eviction", FieldType::Bool),
    ("tpc_support", FieldType::Str),
    ("tape_endpoint", FieldType::Bool),
    ("overwrite_disk_enabled", FieldType::Bool),
];

/// Default inbound and outbound active limit of a storage without settings (the reference's
/// default `*` row of `t_se`).
pub const DEFAULT_SE_MAX_ACTIVE: i64 = 200;

impl SeConfig {
    /// Apply one `se_info` field after checking it; `null` leaves the field as it is.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        let ty = field_type(SE_FIELDS, key)?;
        if value.is_null() {
            return Ok(());
        }
        let v = coerce(key, value, ty)?;
        match (key, v) {
            ("inbound_max_active", FieldValue::Int(i)) => self.inbound_max_active = Some(i),
            ("inbound_max_throughput", FieldValue::Number(f)) => {
                self.inbound_max_throughput = Some(f)
            }
            ("outbound_max_active", FieldValue::Int(i)) => self.outbound_max_active = Some(i),
            ("outbound_max_throughput", FieldValue::Number(f)) => {
                self.outbound_max_throughput = Some(f)
            }
            ("udt", FieldValue::Int(i)) => self.udt = Some(i),
            ("ipv6", FieldValue::Int(i)) => self.ipv6 = Some(i),
            ("se_metadata", FieldValue::Str(s)) => self.se_metadata = Some(s),
            ("site", FieldValue::Str(s)) => self.site = Some(s),
            ("debug_level", FieldValue::Int(i)) => self.debug_level = Some(i),
            ("eviction", FieldValue::Int(i)) => self.eviction = Some(i),
            ("skip_eviction", FieldValue::Bool(b)) => self.skip_eviction = Some(b),
            ("tpc_support", FieldValue::Str(s)) => {
                let upper = s.to_ascii_uppercase();
                if !TPC_SUPPORT.contains(&upper.as_str()) {
                    return Err(format!(
                        "Field tpc_support is expected to be one of the following: {}",
                        TPC_SUPPORT.join(", ")
                    ));
                }
                self.tpc_support = Some(upper);
            }
            ("tape_endpoint", FieldValue::Bool(b)) => self.tape_endpoint = Some(b),
            ("overwrite_disk_enabled", FieldValue::Bool(b)) => {
                self.overwrite_disk_enabled = Some(b)
            }
            _ => return Err(expected(key, ty)),
        }
        Ok(())
    }

    /// This storage's settings with the unset fields taken from `any` (the `*` row), and the
    /// active limits defaulting to [`DEFAULT_SE_MAX_ACTIVE`].
    pub fn merged(own: Option<&SeConfig>, any: Option<&SeConfig>, storage: &str) -> SeConfig {
        let empty = SeConfig::default();
        let mut out = SeConfig::overlay(own.unwrap_or(&empty), any.unwrap_or(&empty));
        out.storage = storage.to_string();
        out.inbound_max_active = out.inbound_max_active.or(Some(DEFAULT_SE_MAX_ACTIVE));
        out.outbound_max_active = out.outbound_max_active.or(Some(DEFAULT_SE_MAX_ACTIVE));
        out
    }

    /// The fields set in `own`, the others from `base` (storage name from `own`).
    pub fn overlay(own: &SeConfig, base: &SeConfig) -> SeConfig {
        macro_rules! pick {
            ($f:ident) => {
                own.$f.clone().or_else(|| base.$f.clone())
            };
        }
        SeConfig {
            storage: own.storage.clone(),
            inbound_max_active: pick!(inbound_max_active),
            inbound_max_throughput: pick!(inbound_max_throughput),
            outbound_max_active: pick!(outbound_max_active),
            outbound_max_throughput: pick!(outbound_max_throughput),
            udt: pick!(udt),
            ipv6: pick!(ipv6),
            se_metadata: pick!(se_metadata),
            site: pick!(site),
            debug_level: pick!(debug_level),
            eviction: pick!(eviction),
            skip_eviction: pick!(skip_eviction),
            tpc_support: pick!(tpc_support),
            tape_endpoint: pick!(tape_endpoint),
            overwrite_disk_enabled: pick!(overwrite_disk_enabled),
        }
    }
}

/// How many operations of a kind (`staging`, `delete`, ...) a VO may run at once on a storage
/// (`t_stage_req`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationLimit {
    pub vo_name: String,
    pub host: String,
    pub operation: String,
    pub concurrent_ops: i64,
}

/// The longest serialised activity share list the reference's column holds.
pub const MAX_ACTIVITY_SHARE_LEN: usize = 1024;

/// Activity weights of a VO (`t_activity_share_config`). The list is kept as the reference
/// stores it: JSON text of a list of single-key objects, `[{"A": 1}, {"B": 2.5}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityShare {
    pub vo: String,
    pub activity_share: String,
    pub active: bool,
}

impl ActivityShare {
    /// The list as JSON (an empty list if the stored text were not one).
    pub fn share_list(&self) -> Vec<Value> {
        match serde_json::from_str(&self.activity_share) {
            Ok(Value::Array(items)) => items,
            _ => Vec::new(),
        }
    }

    /// `{"A": 1, "B": 2}`: the REST shape.
    pub fn share_map(&self) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        for item in self.share_list() {
            if let Value::Object(o) = item {
                map.extend(o);
            }
        }
        map
    }

    /// `(activity, weight)` in stored order.
    pub fn weights(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for item in self.share_list() {
            if let Value::Object(o) = item {
                for (k, v) in o {
                    out.push((k, v.as_f64().unwrap_or(0.0)));
                }
            }
        }
        out
    }
}

/// Read an activity share input (`{"A": 1}` or the legacy `[{"A": 1}, ...]`) into the stored
/// text, with the reference's checks and messages.
pub fn activity_share_text(share: &Value) -> Result<String, String> {
    let list: Vec<Value> = match share {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let mut one = serde_json::Map::new();
                one.insert(k.clone(), v.clone());
                Value::Object(one)
            })
            .collect(),
        Value::Array(items) => items.clone(),
        _ => return Err("Share weight must be a number".into()),
    };
    for item in &list {
        let Value::Object(entry) = item else {
            return Err("Share weight must be a number".into());
        };
        if !entry.values().all(|v| v.is_number()) {
            return Err("Share weight must be a number".into());
        }
    }
    let text = Value::Array(list).to_string();
    if text.len() > MAX_ACTIVITY_SHARE_LEN {
        return Err(format!(
            "Length {} exceeds allowed {MAX_ACTIVITY_SHARE_LEN}",
            text.len()
        ));
    }
    Ok(text)
}

/// A change of one storage's configuration (`POST /config/se`).
#[derive(Debug, Clone, PartialEq)]
pub struct SeUpdate {
    pub storage: String,
    /// Fields to set (unset fields keep their stored value); `None`: no `t_se` row is touched.
    pub se_info: Option<SeConfig>,
    /// Limits to set; a limit ≤ 0 removes the row.
    pub limits: Vec<OperationLimit>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coerce_follows_validate_type() {
        assert_eq!(
            coerce("retry", &json!(42), FieldType::Int),
            Ok(FieldValue::Int(42))
        );
        assert_eq!(
            coerce("retry", &json!("42"), FieldType::Int),
            Ok(FieldValue::Int(42))
        );
        assert_eq!(
            coerce("retry", &json!(true), FieldType::Int),
            Ok(FieldValue::Int(1))
        );
        assert_eq!(
            coerce("retry", &json!("this should be an integer"), FieldType::Int),
            Err("Field retry is expected to be int".into())
        );
        assert_eq!(
            coerce("retry", &json!(1.5), FieldType::Int),
            Err("Field retry is expected to be int".into())
        );
        assert_eq!(
            coerce("x", &json!(1), FieldType::Str),
            Err("Field x is expected to be str".into())
        );
        assert_eq!(
            coerce("f", &json!("Yes"), FieldType::Bool),
            Ok(FieldValue::Bool(true))
        );
        assert_eq!(
            coerce("f", &json!("nope"), FieldType::Bool),
            Ok(FieldValue::Bool(false))
        );
        assert_eq!(
            coerce("f", &json!(1), FieldType::Bool),
            Err("Field f is expected to be bool".into())
        );
        assert_eq!(
            coerce("t", &json!("1.5"), FieldType::Number),
            Err("Field t is expected to be Number".into())
        );
    }

    #[test]
    fn server_config_falls_back_to_the_global_row() {
        let vo = ServerConfig {
            vo_name: "dteam".into(),
            retry: Some(42),
            ..Default::default()
        };
        let any = ServerConfig {
            vo_name: ANY.into(),
            retry: Some(1),
            global_timeout: Some(55),
            show_user_dn: Some(true),
            ..Default::default()
        };
        let c = EffectiveServerConfig::resolve(Some(&vo), Some(&any));
        assert_eq!((c.retry, c.global_timeout, c.show_user_dn), (42, 55, true));
        assert_eq!(
            EffectiveServerConfig::resolve(None, None),
            EffectiveServerConfig::default()
        );
    }

    #[test]
    fn se_fields_are_checked_and_merged() {
        let mut se = SeConfig::default();
        assert_eq!(
            se.set("ipv6", &json!("invalid")),
            Err("Field ipv6 is expected to be int".into())
        );
        assert_eq!(
            se.set("tpc_support", &json!("whatever")),
            Err(
                "Field tpc_support is expected to be one of the following: FULL, PULL, PUSH, NONE"
                    .into()
            )
        );
        assert_eq!(
            se.set("bogus", &json!(1)),
            Err("Field bogus unknown".into())
        );
        se.set("ipv6", &json!(1)).unwrap();
        se.set("site", &Value::Null).unwrap();
        let any = SeConfig {
            storage: ANY.into(),
            outbound_max_active: Some(10),
            ..Default::default()
        };
        let m = SeConfig::merged(Some(&se), Some(&any), "s");
        assert_eq!(m.ipv6, Some(1));
        assert_eq!(m.outbound_max_active, Some(10));
        assert_eq!(m.inbound_max_active, Some(DEFAULT_SE_MAX_ACTIVE));
    }

    #[test]
    fn activity_shares_accept_both_shapes() {
        let text = activity_share_text(&json!({"A": 1, "B": 2.5})).unwrap();
        let legacy = activity_share_text(&json!([{"A": 1}, {"B": 2.5}])).unwrap();
        assert_eq!(text, legacy);
        let row = ActivityShare {
            vo: "v".into(),
            activity_share: text,
            active: true,
        };
        assert_eq!(row.weights(), vec![("A".into(), 1.0), ("B".into(), 2.5)]);
        assert_eq!(
            activity_share_text(&json!({"A": "x"})),
            Err("Share weight must be a number".into())
        );
        let long: serde_json::Map<String, Value> =
            (0..200).map(|i| (format!("act{i}"), json!(1))).collect();
        let err = activity_share_text(&Value::Object(long)).unwrap_err();
        assert!(err.starts_with("Length ") && err.ends_with("exceeds allowed 1024"));
    }
}
