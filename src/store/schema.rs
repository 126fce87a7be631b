//! Every table of the database, in one place. Names carry a version: a change of key or value
//! layout creates a new table and a migration moves the rows (see `migrate` in `mod.rs`).
//!
//! Rows are stored as versioned codec bytes (`codec.rs`); keys are plain redb types so that
//! tuple keys give ordered prefix scans. Secondary indexes are multimap tables written only by
//! `index.rs`.

use redb::{MultimapTableDefinition, TableDefinition};

/// Version of the table layout as a whole, recorded in [`META`] under [`META_SCHEMA_VERSION`].
/// Version 2 added the engine's indexes (`files_queued_v1`, `jobs_by_expiry_v1`),
/// `file_retries_v1` and the file-derived counters (`FILE_COUNT_BY_PAIR` ... `HOST_ACTIVITY`),
/// which a version 1 database gets from its rows once. Version 3 added
/// `link_minute_optimizer_v1`, counted from the rows of a version 2 database once.
pub const SCHEMA_VERSION: u64 = 3;

/// Database-wide facts: `schema_version`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const META_SCHEMA_VERSION: &str = "schema_version";

/// Operator grants by DN (`/config/authorize`, the reference's `t_authz_dn`):
/// `(dn, operation)` → [`crate::store::authz::GrantRow`].
pub const AUTHZ_DN: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("authz_dn_v1");

/// Index of [`AUTHZ_DN`] by operation: `operation` → `dn`.
pub const AUTHZ_DN_BY_OPERATION: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("authz_dn_by_operation_v1");

/// Transfer tokens (the reference's `t_token`): `token_id` → [`crate::store::tokens::TokenRow`];
/// the access and refresh tokens inside are sealed.
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens_v1");

/// Pending delegation requests (the reference's `t_credential_cache`): `(dlg_id, dn)` →
/// [`crate::store::credentials::PendingRow`]; the private key inside is sealed.
pub const CREDENTIAL_REQUESTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("credential_requests_v1");

/// Delegated proxies (the reference's `t_credential`): `(dlg_id, dn)` →
/// [`crate::store::credentials::CredentialRow`]; the private key inside is sealed.
pub const CREDENTIALS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("credentials_v1");

/// Jobs: `job_id` → [`crate::model::job::Job`] (codec).
pub const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs_v1");
/// Crash interruptions of a transfer so far (`file_id` → count): how often it was found running
/// at start. Written by start-up recovery only; an entry of a finished file is dead weight of a
/// few bytes, removed at the next recovery.
pub const FILE_INTERRUPTIONS: TableDefinition<u64, u32> =
    TableDefinition::new("file_interruptions_v1");
/// Files: `file_id` → [`crate::model::job::File`] (codec).
pub const FILES: TableDefinition<u64, &[u8]> = TableDefinition::new("files_v1");
/// Next file id to hand out (ids are never reused).
pub const META_NEXT_FILE_ID: &str = "next_file_id";

// Job indexes (keys only). The submit time in the key orders listings; the job id makes the key
// unique.
/// `(job_state, submit_time, job_id)`.
pub const JOBS_BY_STATE: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("jobs_by_state_v1");
/// `(user_dn, submit_time, job_id)`.
pub const JOBS_BY_DN: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("jobs_by_dn_v1");
/// `(vo_name, submit_time, job_id)`.
pub const JOBS_BY_VO: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("jobs_by_vo_v1");
/// `(cred_id, submit_time, job_id)`.
pub const JOBS_BY_DLG: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("jobs_by_dlg_v1");
/// `(source_se, dest_se, submit_time, job_id)` (empty strings for jobs without a common SE).
pub const JOBS_BY_LINK: TableDefinition<(&str, &str, i64, &str), ()> =
    TableDefinition::new("jobs_by_link_v1");
/// `(submit_time, job_id)`.
pub const JOBS_BY_SUBMIT_TIME: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("jobs_by_submit_time_v1");
/// `(job_finished, job_id)` for terminal jobs.
pub const JOBS_BY_FINISHED: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("jobs_by_finished_v1");

// File indexes.
/// `(job_id, file_id)`: the files of a job.
pub const FILES_BY_JOB: TableDefinition<(&str, u64), ()> = TableDefinition::new("files_by_job_v1");
/// `(file_state, source_se, dest_se, vo_name, file_id)`: queues per link and VO.
pub const FILES_BY_STATE: TableDefinition<(&str, &str, &str, &str, u64), ()> =
    TableDefinition::new("files_by_state_v1");
/// `(dest_surl, file_id)`: "is this destination already queued?".
pub const FILES_BY_DEST_SURL: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("files_by_dest_surl_v1");
/// `dest_surl_uuid` → `file_id`: unique, for CheckDuplicates.
pub const FILES_BY_DEST_UUID: TableDefinition<&str, u64> =
    TableDefinition::new("files_by_dest_uuid_v1");

/// Banned storage elements (the reference's `t_bad_ses`): `(se, vo)` →
/// [`crate::model::ban::SeBan`] (codec). `vo` is `*` for a ban of every VO.
pub const SE_BANS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("se_bans_v1");
/// Banned users (the reference's `t_bad_dns`): `dn` → [`crate::model::ban::DnBan`] (codec).
pub const DN_BANS: TableDefinition<&str, &[u8]> = TableDefinition::new("dn_bans_v1");
/// Configuration audit (the reference's `t_config_audit`): a sequence number that only grows →
/// [`crate::model::audit::AuditEntry`] (codec). Reading backwards from the end gives the newest
/// entries without a scan.
pub const CONFIG_AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("config_audit_v1");

// The transfer engine's tables.
/// The scheduler's queues: `(source_se, dest_se, vo_name, -priority, file_id)` for every
/// SUBMITTED file, so the first entries of a queue are its highest priority in FIFO order.
pub const FILES_QUEUED: TableDefinition<(&str, &str, &str, i32, u64), ()> =
    TableDefinition::new("files_queued_v1");
/// `(max_time_in_queue, job_id)` for unfinished jobs with a queue deadline.
pub const JOBS_BY_EXPIRY: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("jobs_by_expiry_v1");
/// Failed attempts that were retried (the reference's `t_file_retry_errors`):
/// `(file_id, attempt)` → [`crate::store::engine::RetryRow`] (codec).
pub const FILE_RETRIES: TableDefinition<(u64, u32), &[u8]> =
    TableDefinition::new("file_retries_v1");
// Operator configuration (`/config/*`); rows are codec-encoded `crate::model::config` types.
/// Services and their heartbeat and drain flag (`t_hosts`): `(hostname, service_name)` →
/// [`crate::model::config::Host`].
pub const HOSTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("hosts_v1");
/// Server settings (`t_server_config`): `vo_name` (`*` for every VO) →
/// [`crate::model::config::ServerConfig`].
pub const SERVER_CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("server_config_v1");
/// Link limits (`t_link_config`): `(source, destination)` →
/// [`crate::model::config::LinkConfig`]. Symbolic names are unique; the table is small, so a
/// lookup by name scans it rather than keeping an index.
pub const LINK_CONFIG: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("link_config_v1");
/// VO shares per link (`t_share_config`): `(source, destination, vo)` →
/// [`crate::model::config::ShareConfig`].
pub const SHARE_CONFIG: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("share_config_v1");
/// Storage settings (`t_se`): `storage` → [`crate::model::config::SeConfig`].
pub const SE_CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("se_config_v1");
/// Operation limits (`t_stage_req`): `(host, vo_name, operation)` →
/// [`crate::model::config::OperationLimit`]; the storage comes first so that one storage's
/// limits are one prefix range.
pub const OPERATION_LIMITS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("operation_limits_v1");
/// Activity shares (`t_activity_share_config`): `vo` →
/// [`crate::model::config::ActivityShare`].
pub const ACTIVITY_SHARES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("activity_shares_v1");
// File-derived counters, written only by `index.rs` with the file rows (see `index::apply_file`).
/// `(source_se, dest_se, vo_name)` → number of file rows: the pairs that have jobs.
pub const FILE_COUNT_BY_PAIR: TableDefinition<(&str, &str, &str), u64> =
    TableDefinition::new("file_count_by_pair_v1");
/// `(source_se, dest_se, vo_name, minute)` → terminal-transfer counters of the files that
/// finished in that minute (unix seconds of its start): `(finished, failed, throughput sum in
/// thousandths, finished files with a throughput, duration sum in milliseconds, finished files
/// with a duration)`. Fixed-point sums so that adding and removing a file is exact.
pub const LINK_MINUTE_STATS: TableDefinition<(&str, &str, &str, i64), MinuteCounters> =
    TableDefinition::new("link_minute_stats_v1");
/// The value of a [`LINK_MINUTE_STATS`] row.
pub type MinuteCounters = (u64, u64, u64, u64, u64, u64);
/// `(source_se, dest_se, vo_name, minute)` → what the optimizer reads besides
/// [`LINK_MINUTE_STATS`] (engine spec §3.1): see [`OptimizerCounters`]. FINISHED and ARCHIVING
/// files count at the minute of their `finish_time`, recoverable FAILED files too, requeued
/// (SUBMITTED, `retry > 0`) files at the minute of their `retry_timestamp`.
pub const LINK_MINUTE_OPTIMIZER: TableDefinition<(&str, &str, &str, i64), OptimizerCounters> =
    TableDefinition::new("link_minute_optimizer_v1");
/// The value of a [`LINK_MINUTE_OPTIMIZER`] row: `(successes, recoverable failures and
/// requeued attempts, retries of the requeued attempts, successes with a size, their byte sum,
/// their sum of squared bytes)`. Integers, so that adding and removing a file is exact.
pub type OptimizerCounters = (u64, u64, u64, u64, u64, u128);
/// `(source_se, dest_se, vo_name, minute, reason)` → FAILED files of that minute with that reason.
pub const LINK_MINUTE_ERRORS: TableDefinition<(&str, &str, &str, i64, &str), u64> =
    TableDefinition::new("link_minute_errors_v1");
/// `(host, kind)` → running work on a host: kind `active` counts ACTIVE files by
/// `transfer_host`, `staging` counts STARTED files by `staging_host` (no host: `null`).
pub const HOST_ACTIVITY: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("host_activity_v1");

/// The optimizer's current value per link (the reference's `t_optimizer`), with its previous
/// state: `(source_se, dest_se)` → [`crate::model::optimizer::OptimizerCurrent`] (codec).
pub const OPTIMIZER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("optimizer_v1");
/// The optimizer's decisions (`t_optimizer_evolution`): `(source_se, dest_se, datetime µs,
/// seq)` → [`crate::model::optimizer::EvolutionEntry`] (codec). A link and time range is one
/// range scan; `seq` (from [`META_NEXT_EVOLUTION_SEQ`]) keeps decisions of the same
/// microsecond apart.
pub const OPTIMIZER_EVOLUTION: TableDefinition<(&str, &str, i64, u64), &[u8]> =
    TableDefinition::new("optimizer_evolution_v1");
/// Index of [`OPTIMIZER_EVOLUTION`] by time: `(datetime µs, seq, source_se, dest_se)`, for the
/// newest decisions over all links and for retention.
pub const OPTIMIZER_EVOLUTION_BY_TIME: TableDefinition<(i64, u64, &str, &str), ()> =
    TableDefinition::new("optimizer_evolution_by_time_v1");
/// Next evolution sequence number.
pub const META_NEXT_EVOLUTION_SEQ: &str = "next_evolution_seq";

/// The monitoring-message outbox: `seq` → [`crate::model::message::Message`] (codec), written in
/// the transaction of the change that causes the message and removed once the broker's RECEIPT
/// for it arrived. Ordered by `seq` (from [`META_NEXT_OUTBOX_SEQ`]), oldest first.
pub const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_v1");
/// Next outbox sequence number (never reused, so that a publisher's cursor stays valid).
pub const META_NEXT_OUTBOX_SEQ: &str = "next_outbox_seq";
/// The message types this node produces ([`crate::model::message::Kinds`] bits); 0: none.
/// Written at every open from the configuration, read by every transaction that changes files.
pub const META_MESSAGE_KINDS: &str = "message_kinds";
/// Most messages the outbox holds; past it the oldest are dropped (and counted).
pub const META_OUTBOX_MAX: &str = "outbox_max";
/// Messages dropped so far because the outbox was full or they outlived their TTL.
pub const META_OUTBOX_DROPPED: &str = "outbox_dropped";
