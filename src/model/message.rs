//! Monitoring messages as FTS3 sends them to its message broker (engine spec §4.6, tokens spec
//! Part B): transfer start (`ST`), transfer complete (`CO`), state change (`SS`) and optimizer
//! decision (`OP`), with FTS3's field names and JSON types (`msg-ifce.cpp` of `fts_url_copy`
//! and the server's state and optimizer reporters).
//!
//! The builders are pure: the store calls [`on_file_change`] inside the transaction that changes
//! a file, so that a message exists exactly when its change is committed (the outbox). What the
//! publisher adds at send time ([`Message::wire_body`]): `endpnt` (the configured alias, as
//! `fts_activemq` overwrites it), `fqdn` when asked, and the one trailing space FTS3 appends
//! since 3.6 (it was 0x04, which makes Rucio's `json.loads` fail).
//!
//! Times in the bodies are unix milliseconds, as FTS3's. Our rows keep seconds, so the
//! milliseconds are whole seconds. `Deviation:` fields FTS3 fills from measurements ftsd does not
//! make (SRM preparation, checksum phases, TCP buffer, streams) carry FTS3's "not measured"
//! values: 0 for times and sizes, -1 for the eviction/cleanup/deletion codes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    job::{File, FileState, Job, JobType, JsonText},
    optimizer::Decision,
};

/// The four message types and where each goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Start,
    Complete,
    State,
    Optimizer,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Start, Kind::Complete, Kind::State, Kind::Optimizer];

    /// FTS3's two-letter type (the dirq prefix, and the name in logs).
    pub fn code(self) -> &'static str {
        match self {
            Kind::Start => "ST",
            Kind::Complete => "CO",
            Kind::State => "SS",
            Kind::Optimizer => "OP",
        }
    }

    /// The destination name, FTS3's defaults (`fts-msg-monitoring.conf`).
    pub fn destination(self) -> &'static str {
        match self {
            Kind::Start => "transfer.fts_monitoring_start",
            Kind::Complete => "transfer.fts_monitoring_complete",
            Kind::State => "transfer.fts_monitoring_state",
            Kind::Optimizer => "transfer.fts_monitoring_queue_state",
        }
    }

    /// FTS3 sends ST/CO/SS persistent and OP non-persistent (an optimizer decision is
    /// superseded a minute later; losing one on a broker restart costs nothing).
    pub fn persistent(self) -> bool {
        !matches!(self, Kind::Optimizer)
    }

    fn bit(self) -> u8 {
        match self {
            Kind::Start => 1,
            Kind::Complete => 2,
            Kind::State => 4,
            Kind::Optimizer => 8,
        }
    }
}

/// Which message types are produced (`[messages] start/complete/state/optimizer`). Empty when
/// messaging is off: then no message is built or stored at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub const NONE: Kinds = Kinds(0);

    pub fn of(kinds: &[Kind]) -> Kinds {
        Kinds(kinds.iter().fold(0, |acc, k| acc | k.bit()))
    }

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// As stored beside the data (the store keeps the set it was opened with).
    pub fn bits(self) -> u64 {
        u64::from(self.0)
    }

    pub fn from_bits(bits: u64) -> Kinds {
        Kinds((bits & 0xf) as u8)
    }
}

/// One message waiting in the outbox: its type, when it was made and its JSON body (without
/// `endpnt`/`fqdn` and the trailing space, added at send time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub kind: Kind,
    /// Unix milliseconds; with the TTL it gives the `expires` header.
    pub created_ms: i64,
    pub body: String,
}

/// What the publisher adds to every body: FTS3's `Alias` (mandatory there) and, with
/// `PUBLISH_FQDN`, this host's name.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub alias: String,
    pub fqdn: Option<String>,
}

impl Message {
    fn new(kind: Kind, created_ms: i64, body: Value) -> Message {
        Message {
            kind,
            created_ms,
            body: body.to_string(),
        }
    }

    /// The body as sent: `endpnt` set, `fqdn` added if configured, then one space. A body that
    /// is not a JSON object (it never is one: the builders make objects) goes as stored.
    pub fn wire_body(&self, endpoint: &Endpoint) -> String {
        let mut text = match serde_json::from_str::<Value>(&self.body) {
            Ok(Value::Object(mut map)) => {
                map.insert("endpnt".into(), Value::String(endpoint.alias.clone()));
                if let Some(fqdn) = &endpoint.fqdn {
                    map.insert("fqdn".into(), Value::String(fqdn.clone()));
                }
                Value::Object(map).to_string()
            }
            _ => self.body.clone(),
        };
        text.push(' ');
        text
    }

    /// The `vo` header: FTS3 sets it only when the body has `vo_name`, i.e. on state messages.
    pub fn vo_header(&self) -> Option<String> {
        if self.kind != Kind::State {
            return None;
        }
        serde_json::from_str::<Value>(&self.body)
            .ok()?
            .get("vo_name")?
            .as_str()
            .map(str::to_string)
    }
}

/// What the outbox holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub depth: u64,
    /// Dropped since the database was created (full outbox or past the TTL).
    pub dropped: u64,
}

/// The messages a change of one file causes, given the enabled `kinds`: `old` is `None` for a
/// file just submitted. `show_user_dn` is the VO's setting (SS carries the DN only then).
/// `now` is unix seconds.
pub fn on_file_change(
    kinds: Kinds,
    job: &Job,
    files: &[File],
    old: Option<&File>,
    new: &File,
    show_user_dn: bool,
    now: i64,
) -> Vec<Message> {
    let mut out = Vec::new();
    let old_state = old.map(|f| f.file_state);
    if old_state == Some(new.file_state) && old.map(|f| f.retry) == Some(new.retry) {
        return out;
    }
    let ms = now.saturating_mul(1000);
    let was_running = matches!(old_state, Some(FileState::Ready | FileState::Active));
    if kinds.contains(Kind::Start)
        && new.file_state == FileState::Active
        && old_state != Some(FileState::Active)
    {
        out.push(Message::new(Kind::Start, ms, start(job, new, ms)));
    }
    if kinds.contains(Kind::Complete) && was_running {
        let attempt_over = match new.file_state {
            FileState::Finished
            | FileState::Archiving
            | FileState::Failed
            | FileState::Canceled => true,
            // A retry: the attempt failed and the file is queued again.
            FileState::Submitted => old.is_some_and(|o| new.retry > o.retry),
            _ => false,
        };
        if let (true, Some(old)) = (attempt_over, old) {
            out.push(Message::new(
                Kind::Complete,
                ms,
                complete(job, files, old, new, ms),
            ));
        }
    }
    if kinds.contains(Kind::State) && old_state != Some(new.file_state) {
        out.push(Message::new(
            Kind::State,
            ms,
            state(job, new, show_user_dn, ms),
        ));
    }
    out
}

/// The `OP` message of an optimizer decision.
pub fn optimizer(decision: &Decision) -> Message {
    let ms = decision.datetime / 1000;
    let body = json!({
        "source_se": decision.source_se,
        "dest_se": decision.dest_se,
        "throughput": decision.throughput,
        "throughput_ema": decision.ema,
        // Deviation: the optimizer keeps no average duration; FTS3's "none" value.
        "duration_avg": 0,
        "filesize_avg": decision.filesize_avg,
        "filesize_stddev": decision.filesize_stddev,
        "success_rate": decision.success,
        "retry_count": decision.retry_count,
        "active_count": decision.actual_active,
        "submitted_count": decision.queue_size,
        "connections": decision.active,
        "diff": decision.diff,
        "rationale": decision.rationale.clone().unwrap_or_default(),
        "timestamp": ms,
    });
    Message::new(Kind::Optimizer, ms, body)
}

/// FTS3's `set_metadata`: the stored text as JSON when it parses, else as a string (`""` when
/// there is none).
fn metadata(text: &JsonText) -> Value {
    match text.0.as_deref() {
        None | Some("") | Some("x") => Value::String(String::new()),
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
    }
}

/// `scheme://host[:port]/...` → (scheme, host).
fn split_url(url: &str) -> (&str, &str) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return ("", "");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    (scheme, host)
}

fn srm_version(scheme: &str) -> &'static str {
    if scheme == "srm" { "2.2.0" } else { "" }
}

/// FTS3's transfer protocol of a scheme: http/dav/s3/gcloud → `http`, their TLS forms →
/// `https`, others as they are.
fn transfer_protocol(scheme: &str) -> String {
    match scheme {
        "http" | "dav" | "s3" | "gcloud" => "http".into(),
        "https" | "davs" | "s3s" | "gclouds" => "https".into(),
        other => other.into(),
    }
}

/// The transfer id of FTS3's logs and messages: `<YYYY-MM-DD-HHMM>__<src>__<dst>__<file>__<job>`
/// (Rucio takes the job id after the last `__`).
fn transfer_id(file: &File, started: i64) -> String {
    let (_, src) = split_url(&file.source_surl);
    let (_, dst) = split_url(&file.dest_surl);
    let date = time::OffsetDateTime::from_unix_timestamp(started)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02}-{:02}{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_default();
    format!("{date}__{src}__{dst}__{}__{}", file.file_id, file.job_id)
}

fn start(job: &Job, file: &File, ms: i64) -> Value {
    let (src_scheme, src_host) = split_url(&file.source_surl);
    let (dst_scheme, dst_host) = split_url(&file.dest_surl);
    json!({
        "transfer_id": transfer_id(file, file.start_time.unwrap_or(ms / 1000)),
        "job_id": job.job_id,
        "file_id": file.file_id,
        "endpnt": "",
        "timestamp": ms,
        "src_srm_v": srm_version(src_scheme),
        "dest_srm_v": srm_version(dst_scheme),
        "vo": job.vo_name,
        "src_url": file.source_surl,
        "dst_url": file.dest_surl,
        "src_hostname": src_host,
        "dst_hostname": dst_host,
        "src_site_name": "",
        "dst_site_name": "",
        "t_channel": format!("{src_host}__{dst_host}"),
        "srm_space_token_src": job.source_spacetoken.clone().unwrap_or_default(),
        "srm_space_token_dst": job.destination_spacetoken.clone().unwrap_or_default(),
        "user_dn": job.user_dn,
        "is_archiving": job.archive_timeout > 0,
        "file_metadata": metadata(&file.file_metadata),
        "job_metadata": metadata(&job.job_metadata),
    })
}

/// The errno in a reason `"<SCOPE> [<errno>] <message>"`, and the message.
fn split_reason(reason: &str) -> (i64, &str) {
    if let Some(open) = reason.find(" [") {
        let rest = &reason[open + 2..];
        if let Some(close) = rest.find("] ") {
            if let Ok(code) = rest[..close].parse() {
                return (code, &rest[close + 2..]);
            }
        }
    }
    (0, reason)
}

/// FTS3's `t__error_message`: non-printables become spaces, newlines and quotes go, at most
/// 1024 characters.
fn clean_error_message(message: &str) -> String {
    message
        .chars()
        .filter(|c| !matches!(c, '\n' | '\'' | '"'))
        .map(|c| if (' '..='\x7f').contains(&c) { c } else { ' ' })
        .take(1024)
        .collect()
}

/// The CO body for the attempt that went from `old` (READY/ACTIVE) to `new`.
fn complete(job: &Job, files: &[File], old: &File, new: &File, ms: i64) -> Value {
    let (src_scheme, src_host) = split_url(&new.source_surl);
    let (dst_scheme, dst_host) = split_url(&new.dest_surl);
    let started_s = old.start_time.unwrap_or(ms / 1000);
    let start_ms = started_s.saturating_mul(1000);
    let success = matches!(new.file_state, FileState::Finished | FileState::Archiving);
    let aborted = new.file_state == FileState::Canceled;
    let (final_state, flag) = match (success, aborted) {
        (true, _) => ("Ok", 1),
        (false, true) => ("Abort", 0),
        (false, false) => ("Error", 0),
    };
    let reason = if success {
        ""
    } else {
        new.reason.as_deref().unwrap_or("")
    };
    let (code, message) = split_reason(reason);
    let size = new
        .filesize
        .or(old.filesize)
        .map(|s| s as i64)
        .unwrap_or(new.user_filesize as i64);
    let transfer_ms = if success {
        new.tx_duration
            .map(|d| (d * 1000.0).round() as i64)
            .unwrap_or(0)
    } else {
        0
    };
    let throughput = if transfer_ms > 0 {
        size as f64 / (transfer_ms as f64 / 1000.0)
    } else {
        -1.0
    };
    let last_hop = new.file_index == files.iter().map(|f| f.file_index).max().unwrap_or(0);
    let job_state = match (job.job_type, success) {
        (JobType::MultipleReplica, true) => "FINISHED",
        (JobType::MultipleReplica, false) => {
            if files.iter().any(|f| f.file_state == FileState::NotUsed) {
                "ACTIVE"
            } else {
                "FAILED"
            }
        }
        (JobType::Multihop, true) if last_hop => "FINISHED",
        (JobType::Multihop, true) => "ACTIVE",
        (JobType::Multihop, false) => "FAILED",
        _ => "UNKNOWN",
    };
    let final_destination = if job.job_type == JobType::Multihop {
        files
            .iter()
            .max_by_key(|f| f.file_index)
            .map(|f| f.dest_surl.clone())
            .unwrap_or_default()
    } else {
        new.dest_surl.clone()
    };
    let src_tp = transfer_protocol(src_scheme);
    let dst_tp = transfer_protocol(dst_scheme);
    let plain = |p: &str| p.trim_end_matches('s').to_string();
    let fields: Vec<(&str, Value)> = vec![
        ("tr_id", json!(transfer_id(new, started_s))),
        ("job_id", json!(job.job_id)),
        ("file_id", json!(new.file_id)),
        ("endpnt", json!("")),
        ("src_srm_v", json!(srm_version(src_scheme))),
        ("dest_srm_v", json!(srm_version(dst_scheme))),
        ("vo", json!(job.vo_name)),
        ("src_url", json!(new.source_surl)),
        ("dst_url", json!(new.dest_surl)),
        ("src_hostname", json!(src_host)),
        ("dst_hostname", json!(dst_host)),
        ("src_se", json!(new.source_se)),
        ("dst_se", json!(new.dest_se)),
        ("protocol", json!(dst_scheme)),
        ("src_site_name", json!("")),
        ("dst_site_name", json!("")),
        ("t_channel", json!(format!("{src_host}__{dst_host}"))),
        ("timestamp_tr_st", json!(start_ms)),
        ("timestamp_tr_comp", json!(ms)),
        ("timestamp_chk_src_st", json!(0)),
        ("timestamp_chk_src_ended", json!(0)),
        ("timestamp_checksum_dest_st", json!(0)),
        ("timestamp_checksum_dest_ended", json!(0)),
        ("t_timeout", json!(0)),
        ("chk_timeout", json!(0)),
        ("t_error_code", json!(code)),
        (
            "tr_error_scope",
            json!(if success {
                ""
            } else {
                new.error_scope.as_deref().unwrap_or("")
            }),
        ),
        (
            "t_failure_phase",
            json!(if success {
                ""
            } else {
                new.error_phase.as_deref().unwrap_or("")
            }),
        ),
        (
            "tr_error_category",
            json!(if success {
                ""
            } else {
                new.reason_class.as_deref().unwrap_or("")
            }),
        ),
        ("t_final_transfer_state", json!(final_state)),
        ("t_final_transfer_state_flag", json!(flag)),
        (
            "tr_bt_transfered",
            json!(if success { new.transferred } else { 0 }),
        ),
        ("nstreams", json!(0)),
        ("buf_size", json!(0)),
        ("tcp_buf_size", json!(0)),
        ("block_size", json!(0)),
        ("scitag", json!(new.scitag.unwrap_or(0))),
        ("f_size", json!(size)),
        ("file_size", json!(size)),
        ("time_srm_prep_st", json!(0)),
        ("time_srm_prep_end", json!(0)),
        ("time_srm_fin_st", json!(0)),
        ("time_srm_fin_end", json!(0)),
        (
            "srm_space_token_src",
            json!(job.source_spacetoken.clone().unwrap_or_default()),
        ),
        (
            "srm_space_token_dst",
            json!(job.destination_spacetoken.clone().unwrap_or_default()),
        ),
        ("t__error_message", json!(clean_error_message(message))),
        ("tr_timestamp_start", json!(start_ms)),
        ("tr_timestamp_complete", json!(ms)),
        ("transfer_time", json!(transfer_ms)),
        ("operation_time", json!(ms.saturating_sub(start_ms))),
        ("throughput", json!(throughput)),
        ("srm_preparation_time", json!(0)),
        ("srm_finalization_time", json!(0)),
        ("srm_overhead_time", json!(0)),
        ("srm_overhead_percentage", json!(0.0)),
        ("timestamp_checksum_src_diff", json!(0)),
        ("timestamp_checksum_dst_diff", json!(0)),
        ("channel_type", json!("urlcopy")),
        ("user_dn", json!(job.user_dn)),
        ("file_metadata", json!(metadata(&new.file_metadata))),
        ("job_metadata", json!(metadata(&job.job_metadata))),
        ("activity", json!(new.activity)),
        ("retry", json!(old.retry)),
        ("retry_max", json!(job.retry.max(0))),
        (
            "job_m_replica",
            json!(job.job_type == JobType::MultipleReplica),
        ),
        ("job_multihop", json!(job.job_type == JobType::Multihop)),
        (
            "transfer_lasthop",
            json!(job.job_type == JobType::Multihop && last_hop),
        ),
        (
            "is_archiving",
            json!(new.file_state == FileState::Archiving),
        ),
        ("job_state", json!(job_state)),
        (
            "is_recoverable",
            json!(!success && new.current_failures > 0),
        ),
        ("ipv6", json!(false)),
        ("ipver", json!("unknown")),
        ("eviction_code", json!(-1)),
        ("cleanup_code", json!(-1)),
        ("final_destination", json!(final_destination)),
        // Deviation: gfal2's transfer type (3rd push/pull, streamed) is not reported to the
        // store; empty as FTS3 leaves it when gfal2 says nothing.
        ("transfer_type", json!("")),
        ("auth_method", json!("certificate")),
        (
            "overwrite_on_disk_flag",
            json!(job.overwrite_flag.as_deref() == Some("D")),
        ),
        ("overwrite_on_disk_deletion_code", json!(-1)),
        ("src_protocol", json!(src_scheme)),
        ("dst_protocol", json!(dst_scheme)),
        ("src_transfer_protocol", json!(src_tp)),
        ("dst_transfer_protocol", json!(dst_tp)),
        (
            "protocol_translation",
            json!(plain(&src_tp) != plain(&dst_tp)),
        ),
    ];
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn state(job: &Job, file: &File, show_user_dn: bool, ms: i64) -> Value {
    let secs_to_ms = |t: Option<i64>| t.map(|t| t.saturating_mul(1000)).unwrap_or(0);
    let mut body = Map::new();
    let mut put = |k: &str, v: Value| {
        body.insert(k.to_string(), v);
    };
    put(
        "user_dn",
        json!(if show_user_dn {
            job.user_dn.as_str()
        } else {
            ""
        }),
    );
    put("src_url", json!(file.source_surl));
    put("dst_url", json!(file.dest_surl));
    put("vo_name", json!(job.vo_name));
    put("source_se", json!(file.source_se));
    put("dest_se", json!(file.dest_se));
    put("job_id", json!(job.job_id));
    put("file_id", json!(file.file_id));
    put("job_state", json!(job.job_state.as_str()));
    put("file_state", json!(file.file_state.as_str()));
    put("retry_counter", json!(file.retry));
    put("retry_max", json!(job.retry.max(0)));
    put("user_filesize", json!(file.user_filesize as i64));
    put("timestamp", json!(ms));
    put("submit_time", json!(job.submit_time.saturating_mul(1000)));
    put("staging_start", json!(secs_to_ms(file.staging_start)));
    put("staging_finished", json!(secs_to_ms(file.staging_finished)));
    put(
        "staging",
        json!(matches!(
            file.file_state,
            FileState::Staging | FileState::Started
        )),
    );
    put(
        "archiving_start",
        json!(secs_to_ms(file.archive_start_time)),
    );
    put(
        "archiving_finished",
        json!(secs_to_ms(file.archive_finish_time)),
    );
    put("archiving", json!(file.file_state == FileState::Archiving));
    put("reason", json!(file.reason.clone().unwrap_or_default()));
    put("job_metadata", metadata(&job.job_metadata));
    put("file_metadata", metadata(&file.file_metadata));
    if file.file_state == FileState::Submitted && file.retry == 0 {
        // The REST's SUBMITTED message also carries these.
        put("staging_metadata", metadata(&file.staging_metadata));
        put("archive_metadata", metadata(&file.archive_metadata));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests;
