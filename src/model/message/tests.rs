//! The builders against FTS3's field sets: every key FTS 3.14 sends, with its JSON type.

use super::*;
use crate::model::{
    job::{
        JobState,
        fixtures::{file, job},
    },
    lifecycle::{Failure, Success},
};

/// The keys of `SendTransferStartMessage` (msg-ifce.cpp).
const ST_KEYS: &[&str] = &[
    "transfer_id",
    "job_id",
    "file_id",
    "endpnt",
    "timestamp",
    "src_srm_v",
    "dest_srm_v",
    "vo",
    "src_url",
    "dst_url",
    "src_hostname",
    "dst_hostname",
    "src_site_name",
    "dst_site_name",
    "t_channel",
    "srm_space_token_src",
    "srm_space_token_dst",
    "user_dn",
    "is_archiving",
    "file_metadata",
    "job_metadata",
];

/// The keys of `SendTransferFinishMessage`, plus 3.14's protocol fields.
const CO_KEYS: &[&str] = &[
    "tr_id",
    "job_id",
    "file_id",
    "endpnt",
    "src_srm_v",
    "dest_srm_v",
    "vo",
    "src_url",
    "dst_url",
    "src_hostname",
    "dst_hostname",
    "src_se",
    "dst_se",
    "protocol",
    "src_site_name",
    "dst_site_name",
    "t_channel",
    "timestamp_tr_st",
    "timestamp_tr_comp",
    "timestamp_chk_src_st",
    "timestamp_chk_src_ended",
    "timestamp_checksum_dest_st",
    "timestamp_checksum_dest_ended",
    "t_timeout",
    "chk_timeout",
    "t_error_code",
    "tr_error_scope",
    "t_failure_phase",
    "tr_error_category",
    "t_final_transfer_state",
    "t_final_transfer_state_flag",
    "tr_bt_transfered",
    "nstreams",
    "buf_size",
    "tcp_buf_size",
    "block_size",
    "scitag",
    "f_size",
    "file_size",
    "time_srm_prep_st",
    "time_srm_prep_end",
    "time_srm_fin_st",
    "time_srm_fin_end",
    "srm_space_token_src",
    "srm_space_token_dst",
    "t__error_message",
    "tr_timestamp_start",
    "tr_timestamp_complete",
    "transfer_time",
    "operation_time",
    "throughput",
    "srm_preparation_time",
    "srm_finalization_time",
    "srm_overhead_time",
    "srm_overhead_percentage",
    "timestamp_checksum_src_diff",
    "timestamp_checksum_dst_diff",
    "channel_type",
    "user_dn",
    "file_metadata",
    "job_metadata",
    "activity",
    "retry",
    "retry_max",
    "job_m_replica",
    "job_multihop",
    "transfer_lasthop",
    "is_archiving",
    "job_state",
    "is_recoverable",
    "ipv6",
    "ipver",
    "eviction_code",
    "cleanup_code",
    "final_destination",
    "transfer_type",
    "auth_method",
    "overwrite_on_disk_flag",
    "overwrite_on_disk_deletion_code",
    "src_protocol",
    "dst_protocol",
    "src_transfer_protocol",
    "dst_transfer_protocol",
    "protocol_translation",
];

/// The keys of `SendTransferStatusChange`.
const SS_KEYS: &[&str] = &[
    "user_dn",
    "src_url",
    "dst_url",
    "vo_name",
    "source_se",
    "dest_se",
    "job_id",
    "file_id",
    "job_state",
    "file_state",
    "retry_counter",
    "retry_max",
    "user_filesize",
    "timestamp",
    "submit_time",
    "staging_start",
    "staging_finished",
    "staging",
    "archiving_start",
    "archiving_finished",
    "archiving",
    "reason",
    "job_metadata",
    "file_metadata",
];

/// The keys of `SendOptimizer`.
const OP_KEYS: &[&str] = &[
    "source_se",
    "dest_se",
    "throughput",
    "throughput_ema",
    "duration_avg",
    "filesize_avg",
    "filesize_stddev",
    "success_rate",
    "retry_count",
    "active_count",
    "submitted_count",
    "connections",
    "diff",
    "rationale",
    "timestamp",
];

fn keys(m: &Message) -> Vec<String> {
    let v: Value = serde_json::from_str(&m.body).unwrap();
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn sorted(keys: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

fn body(m: &Message) -> Value {
    serde_json::from_str(&m.body).unwrap()
}

const ALL: [Kind; 4] = Kind::ALL;

fn rucio_job() -> Job {
    let mut j = job(JobType::Normal);
    j.job_id = "0b9c1d3e-aaaa-11ef-9000-000000000001".into();
    j.vo_name = "atlas".into();
    j.job_metadata = JsonText(Some(r#"{"issuer":"rucio","multi_sources":false}"#.into()));
    j.retry = 2;
    j
}

fn running(id: u64) -> File {
    let mut f = file(id, 0, FileState::Submitted);
    f.job_id = "0b9c1d3e-aaaa-11ef-9000-000000000001".into();
    f.source_surl = "mock://src.example.org:1094/path/a?size=10".into();
    f.dest_surl = "davs://dst.example.org/path/b".into();
    f.file_metadata = JsonText(Some(r#"{"request_id":"r1"}"#.into()));
    assert!(f.claim(1_700_000_000, "host"));
    assert!(f.activate(1_700_000_001, None));
    f
}

#[test]
fn start_message_has_fts3s_fields_and_is_made_when_the_transfer_goes_active() {
    let j = rucio_job();
    let mut ready = running(7);
    ready.file_state = FileState::Ready;
    let active = running(7);
    let msgs = on_file_change(
        Kinds::of(&ALL),
        &j,
        std::slice::from_ref(&active),
        Some(&ready),
        &active,
        false,
        1_700_000_001,
    );
    let kinds: Vec<Kind> = msgs.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, vec![Kind::Start, Kind::State]);
    let st = &msgs[0];
    assert_eq!(keys(st), sorted(ST_KEYS));
    let b = body(st);
    assert_eq!(b["file_id"], json!(7));
    assert_eq!(b["timestamp"], json!(1_700_000_001_000i64));
    assert_eq!(b["vo"], "atlas");
    assert_eq!(b["src_hostname"], "src.example.org");
    assert_eq!(b["t_channel"], "src.example.org__dst.example.org");
    assert_eq!(
        b["job_metadata"]["issuer"], "rucio",
        "metadata as JSON, not text"
    );
    assert_eq!(
        b["transfer_id"],
        "2023-11-14-2213__src.example.org__dst.example.org__7__0b9c1d3e-aaaa-11ef-9000-000000000001"
    );
    assert_eq!(st.vo_header(), None, "ST carries vo in the body only");
}

#[test]
fn complete_message_of_a_success_has_fts3s_fields_and_types() {
    let j = rucio_job();
    let old = running(7);
    let mut new = old.clone();
    assert!(new.finish(
        1_700_000_011,
        &Success {
            filesize: 1_000_000,
            duration: 2.5,
            throughput: 0.4
        },
        false
    ));
    let msgs = on_file_change(
        Kinds::of(&[Kind::Complete]),
        &j,
        std::slice::from_ref(&new),
        Some(&old),
        &new,
        false,
        1_700_000_011,
    );
    assert_eq!(msgs.len(), 1);
    let co = &msgs[0];
    assert_eq!(co.kind, Kind::Complete);
    assert_eq!(keys(co), sorted(CO_KEYS));
    let b = body(co);
    assert_eq!(b["t_final_transfer_state"], "Ok");
    assert_eq!(b["t_final_transfer_state_flag"], json!(1));
    assert_eq!(b["tr_timestamp_start"], json!(1_700_000_001_000i64));
    assert_eq!(b["tr_timestamp_complete"], json!(1_700_000_011_000i64));
    assert_eq!(b["transfer_time"], json!(2500));
    assert_eq!(b["throughput"], json!(400_000.0), "bytes/s");
    assert_eq!(b["file_size"], json!(1_000_000));
    assert_eq!(b["tr_bt_transfered"], json!(1_000_000));
    assert_eq!(b["t_error_code"], json!(0));
    assert_eq!(b["job_state"], "UNKNOWN", "FTS3's guess for a normal job");
    assert_eq!(b["file_metadata"]["request_id"], "r1");
    assert_eq!(b["retry_max"], json!(2));
    assert_eq!(b["is_archiving"], json!(false));
    assert_eq!(b["job_multihop"], json!(false));
    assert_eq!(b["protocol"], "davs");
    assert_eq!(b["src_transfer_protocol"], "mock");
    assert_eq!(b["dst_transfer_protocol"], "https");
    assert_eq!(b["protocol_translation"], json!(true));
    assert!(
        b["tr_id"]
            .as_str()
            .unwrap()
            .ends_with("__0b9c1d3e-aaaa-11ef-9000-000000000001")
    );
}

#[test]
fn complete_message_of_a_failure_carries_scope_phase_code_and_a_cleaned_message() {
    let j = rucio_job();
    let old = running(7);
    let mut new = old.clone();
    let failure = Failure {
        reason: "TRANSFER [2] no \"such\"\nfile\u{7}".into(),
        scope: "TRANSFER".into(),
        phase: "TRANSFER".into(),
        class: "NO_SUCH_FILE_OR_DIRECTORY".into(),
        recoverable: false,
        dst_file: None,
    };
    assert!(new.fail(1_700_000_005, &failure));
    let msgs = on_file_change(
        Kinds::of(&ALL),
        &j,
        std::slice::from_ref(&new),
        Some(&old),
        &new,
        false,
        1_700_000_005,
    );
    let co = msgs.iter().find(|m| m.kind == Kind::Complete).unwrap();
    let b = body(co);
    assert_eq!(b["t_final_transfer_state"], "Error");
    assert_eq!(b["t_final_transfer_state_flag"], json!(0));
    assert_eq!(b["t_error_code"], json!(2));
    assert_eq!(b["tr_error_scope"], "TRANSFER");
    assert_eq!(b["t_failure_phase"], "TRANSFER");
    assert_eq!(b["tr_error_category"], "NO_SUCH_FILE_OR_DIRECTORY");
    assert_eq!(b["t__error_message"], "no suchfile ");
    assert_eq!(b["is_recoverable"], json!(false));
    assert_eq!(b["throughput"], json!(-1.0));
}

#[test]
fn a_retry_sends_complete_and_a_cancel_sends_abort() {
    let j = rucio_job();
    let old = running(7);
    let mut retried = old.clone();
    let failure = Failure {
        reason: "TRANSFER [110] timeout".into(),
        scope: "TRANSFER".into(),
        phase: "TRANSFER".into(),
        class: "CONNECTION_TIMED_OUT".into(),
        recoverable: true,
        dst_file: None,
    };
    assert!(retried.requeue(1_700_000_005, 0, &failure));
    let msgs = on_file_change(
        Kinds::of(&ALL),
        &j,
        std::slice::from_ref(&retried),
        Some(&old),
        &retried,
        false,
        1_700_000_005,
    );
    let co = msgs
        .iter()
        .find(|m| m.kind == Kind::Complete)
        .expect("CO of the failed attempt");
    assert_eq!(body(co)["is_recoverable"], json!(true));
    assert_eq!(
        body(co)["tr_timestamp_start"],
        json!(1_700_000_001_000i64),
        "the attempt's start"
    );

    let mut canceled = old.clone();
    assert!(canceled.cancel(1_700_000_006, "Job canceled by the user"));
    let msgs = on_file_change(
        Kinds::of(&ALL),
        &j,
        std::slice::from_ref(&canceled),
        Some(&old),
        &canceled,
        false,
        1_700_000_006,
    );
    let co = msgs.iter().find(|m| m.kind == Kind::Complete).unwrap();
    assert_eq!(body(co)["t_final_transfer_state"], "Abort");
}

#[test]
fn an_interruption_is_no_completion() {
    let j = rucio_job();
    let old = running(7);
    let mut back = old.clone();
    assert!(back.unclaim());
    let msgs = on_file_change(
        Kinds::of(&ALL),
        &j,
        std::slice::from_ref(&back),
        Some(&old),
        &back,
        false,
        5,
    );
    let kinds: Vec<Kind> = msgs.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, vec![Kind::State], "the state change only");
}

#[test]
fn multihop_job_state_is_ftss_guess_per_hop() {
    let mut j = rucio_job();
    j.job_type = JobType::Multihop;
    let hop1_old = running(1);
    let mut hop1 = hop1_old.clone();
    let mut hop2 = file(2, 1, FileState::NotUsed);
    hop2.dest_surl = "root://final.example.org/x".into();
    assert!(hop1.finish(
        10,
        &Success {
            filesize: 1,
            duration: 1.0,
            throughput: 0.0
        },
        false
    ));
    let files = [hop1.clone(), hop2.clone()];
    let m = on_file_change(
        Kinds::of(&[Kind::Complete]),
        &j,
        &files,
        Some(&hop1_old),
        &hop1,
        false,
        10,
    );
    let b = body(&m[0]);
    assert_eq!(b["job_state"], "ACTIVE", "an intermediate hop");
    assert_eq!(b["job_multihop"], json!(true));
    assert_eq!(b["transfer_lasthop"], json!(false));
    assert_eq!(b["final_destination"], "root://final.example.org/x");

    let mut hop2_old = hop2.clone();
    hop2_old.file_state = FileState::Active;
    hop2_old.start_time = Some(11);
    let mut hop2_done = hop2_old.clone();
    assert!(hop2_done.finish(
        12,
        &Success {
            filesize: 1,
            duration: 1.0,
            throughput: 0.0
        },
        false
    ));
    let files = [hop1, hop2_done.clone()];
    let m = on_file_change(
        Kinds::of(&[Kind::Complete]),
        &j,
        &files,
        Some(&hop2_old),
        &hop2_done,
        false,
        12,
    );
    let b = body(&m[0]);
    assert_eq!(b["job_state"], "FINISHED");
    assert_eq!(b["transfer_lasthop"], json!(true));
}

#[test]
fn state_message_has_fts3s_fields_and_the_vo_header() {
    let mut j = rucio_job();
    j.job_state = JobState::Submitted;
    j.submit_time = 1_700_000_000;
    let f = file(3, 0, FileState::Submitted);
    let msgs = on_file_change(
        Kinds::of(&ALL),
        &j,
        std::slice::from_ref(&f),
        None,
        &f,
        false,
        1_700_000_000,
    );
    assert_eq!(msgs.len(), 1, "a submission: one SS");
    let ss = &msgs[0];
    assert_eq!(ss.kind, Kind::State);
    let mut expected: Vec<&str> = SS_KEYS.to_vec();
    expected.extend(["staging_metadata", "archive_metadata"]);
    assert_eq!(
        keys(ss),
        sorted(&expected),
        "SUBMITTED also carries the REST's extras"
    );
    let b = body(ss);
    assert_eq!(b["file_state"], "SUBMITTED");
    assert_eq!(b["job_state"], "SUBMITTED");
    assert_eq!(b["submit_time"], json!(1_700_000_000_000i64));
    assert_eq!(
        b["user_dn"], "",
        "not shown unless the VO says show_user_dn"
    );
    assert_eq!(ss.vo_header().as_deref(), Some("atlas"));

    let mut active = f.clone();
    active.file_state = FileState::Ready;
    let msgs = on_file_change(
        Kinds::of(&[Kind::State]),
        &j,
        std::slice::from_ref(&active),
        Some(&f),
        &active,
        true,
        1_700_000_001,
    );
    assert_eq!(keys(&msgs[0]), sorted(SS_KEYS));
    assert_eq!(body(&msgs[0])["user_dn"], "/CN=u");
}

#[test]
fn disabled_kinds_make_nothing_and_unchanged_files_make_nothing() {
    let j = rucio_job();
    let f = running(1);
    assert!(
        on_file_change(
            Kinds::NONE,
            &j,
            std::slice::from_ref(&f),
            None,
            &f,
            false,
            1
        )
        .is_empty()
    );
    assert!(
        on_file_change(
            Kinds::of(&ALL),
            &j,
            std::slice::from_ref(&f),
            Some(&f),
            &f,
            false,
            1
        )
        .is_empty()
    );
    let mut ready = f.clone();
    ready.file_state = FileState::Ready;
    let only_co = on_file_change(
        Kinds::of(&[Kind::Complete]),
        &j,
        std::slice::from_ref(&f),
        Some(&ready),
        &f,
        false,
        1,
    );
    assert!(only_co.is_empty(), "ST is off");
}

#[test]
fn optimizer_message_has_fts3s_fields() {
    let d = Decision {
        source_se: "mock://a".into(),
        dest_se: "mock://b".into(),
        datetime: 1_700_000_000_123_456,
        active: 5,
        nostreams: 1,
        ema: 1.5,
        throughput: 2.0,
        success: 100.0,
        rationale: Some("Good link".into()),
        diff: 1,
        actual_active: 4,
        queue_size: 10,
        filesize_avg: 3.0,
        filesize_stddev: 0.5,
        retry_count: 0,
    };
    let m = optimizer(&d);
    assert_eq!(m.kind, Kind::Optimizer);
    assert!(!m.kind.persistent());
    assert_eq!(keys(&m), sorted(OP_KEYS));
    let b = body(&m);
    assert_eq!(b["connections"], json!(5));
    assert_eq!(b["active_count"], json!(4));
    assert_eq!(b["timestamp"], json!(1_700_000_000_123i64));
    assert_eq!(m.vo_header(), None);
}

#[test]
fn the_wire_body_sets_endpnt_and_fqdn_and_ends_with_one_space() {
    let j = rucio_job();
    let f = running(1);
    let mut ready = f.clone();
    ready.file_state = FileState::Ready;
    let st = on_file_change(
        Kinds::of(&[Kind::Start]),
        &j,
        std::slice::from_ref(&f),
        Some(&ready),
        &f,
        false,
        1,
    )
    .remove(0);
    let endpoint = Endpoint {
        alias: "fts3.example.org".into(),
        fqdn: Some("node1.example.org".into()),
    };
    let wire = st.wire_body(&endpoint);
    assert!(wire.ends_with("} "), "one space, never 0x04");
    assert!(!wire.contains('\u{4}'));
    let v: Value = serde_json::from_str(&wire).unwrap();
    assert_eq!(v["endpnt"], "fts3.example.org");
    assert_eq!(v["fqdn"], "node1.example.org");
    let plain = st.wire_body(&Endpoint {
        alias: "a".into(),
        fqdn: None,
    });
    assert!(
        serde_json::from_str::<Value>(&plain)
            .unwrap()
            .get("fqdn")
            .is_none()
    );
}

#[test]
fn kinds_round_trip_through_their_bits() {
    let k = Kinds::of(&[Kind::Start, Kind::Optimizer]);
    assert_eq!(Kinds::from_bits(k.bits()), k);
    assert!(k.contains(Kind::Start) && !k.contains(Kind::State));
    assert!(Kinds::NONE.is_empty());
}
