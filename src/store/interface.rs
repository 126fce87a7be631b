//! The store interface: everything the service and the engine ask of a database, in domain
//! terms. `Service` and `Engine` hold an `Arc<dyn Store>`; the embedded redb database
//! ([`super::RedbStore`]) implements it, and a database shared by several nodes can implement it
//! without touching the layers above.
//!
//! Rules every backend follows:
//! - Each method is one operation: what must be atomic (a change and its audit entry, a claim, a
//!   batch of events with the job-state derivation) is one transaction inside the method. No
//!   closure crosses the interface: the rules applied inside a transaction are pure functions
//!   of `model` (`lifecycle`, `change`, `ban`) that every backend calls.
//! - A method returns once its change is durable: a client told "done" finds it after a crash.
//! - The methods are async and never block the caller's runtime thread on a write, a commit, a
//!   lock or a scan (the embedded backend runs them on the blocking pool, submissions on its
//!   group-commit writer; only its bounded point reads run inline).
//! - Arguments and results are `model` types; no backend type leaks out.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::StoreError;
use crate::model::{
    audit::AuditEntry,
    ban::{BanStatus, DnBan, SeBan},
    change::JobEdit,
    config::{
        ActivityShare, EffectiveServerConfig, FieldValue, Host, LinkConfig, OperationLimit,
        SeConfig, SeUpdate, ServerConfig, ShareConfig,
    },
    credential::{CredentialInfo, NewCredential, PendingRequest, ProxyMaterial, StoreOutcome},
    identity::{Grant, StoredAccess},
    job::{File, FileState, InsertConflict, Job, JobChange, JobState},
    message::{Message, OutboxStats},
    monitor::{
        ErrorCount, HostStats, JobListQuery, JobSummary, MinuteSlot, Page, RowFilter, RowStats,
        Totals, TransferQuery,
    },
    optimizer::{
        Decision, EvolutionEntry, HostActivity, LinkFilter, LinkLoad, LinkStats, OptimizerCurrent,
        OptimizerSamples, PairStatus,
    },
    query::{FileFilter, JobFilter, PairFilter},
    token::{NewToken, TokenChange, TokenMaterial},
    transfer::{Applied, Claim, Event, Load, QueueKey, RetryRow},
};

/// A job to store, with its files (file ids are assigned by the store).
pub type NewJob = (Job, Vec<File>);

/// Changed config fields, checked against their column types (`model::config::coerce`).
pub type FieldChanges = Vec<(String, FieldValue)>;

/// The database behind the service and the engine.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Where the data lives, for log lines (a path or a redacted URL).
    fn location(&self) -> String;

    /// Rebuild every derived structure (indexes, counters) from the rows and list the
    /// differences; empty when consistent.
    async fn check(&self) -> Result<Vec<String>, StoreError>;

    // --- Identities: DN grants and bans -------------------------------------------------------

    /// What the store says about a DN on every request: banned, and its operation grants.
    async fn access(&self, dn: &str) -> Result<StoredAccess, StoreError>;
    /// Grant `operation` to `dn` with `audit`; false if it was already granted.
    async fn grant_dn(
        &self,
        dn: &str,
        operation: &str,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
    /// Revoke the grants of `dn` (one operation, or all but `keep`) with `audit`; how many.
    async fn revoke_dn(
        &self,
        dn: &str,
        operation: Option<&str>,
        keep: &[&str],
        audit: &AuditEntry,
    ) -> Result<usize, StoreError>;
    async fn list_grants(
        &self,
        dn: Option<&str>,
        operation: Option<&str>,
    ) -> Result<Vec<Grant>, StoreError>;

    /// Ban a storage (canceling or holding its files as `ban.status` says) with `audit`;
    /// returns the ids of the jobs touched.
    async fn ban_se(&self, ban: &SeBan, audit: &AuditEntry) -> Result<Vec<String>, StoreError>;
    async fn unban_se(&self, se: &str, vo: &str, audit: &AuditEntry) -> Result<bool, StoreError>;
    async fn se_bans(&self) -> Result<Vec<SeBan>, StoreError>;
    async fn se_ban_status(&self, se: &str, vo: &str) -> Result<Option<BanStatus>, StoreError>;
    /// The bans that apply to submissions of `vo`, by storage.
    async fn se_bans_for_vo(&self, vo: &str) -> Result<BTreeMap<String, BanStatus>, StoreError>;
    /// Ban a DN and cancel its jobs, with `audit`; the ids of the jobs canceled.
    async fn ban_dn(&self, ban: &DnBan, audit: &AuditEntry) -> Result<Vec<String>, StoreError>;
    async fn unban_dn(&self, dn: &str, audit: &AuditEntry) -> Result<bool, StoreError>;
    async fn dn_bans(&self) -> Result<Vec<DnBan>, StoreError>;
    /// The newest `limit` audit entries, newest first.
    async fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    // --- Nodes -------------------------------------------------------------------------------

    /// Record that `hostname` runs `service` now (the node heartbeat).
    async fn beat_host(&self, hostname: &str, service: &str, now: i64) -> Result<(), StoreError>;
    async fn hosts(&self) -> Result<Vec<Host>, StoreError>;
    /// Set or clear the drain flag of a known host, with `audit`; false for an unknown host.
    async fn set_drain(
        &self,
        hostname: &str,
        drain: bool,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
    async fn host_draining(&self, hostname: &str) -> Result<bool, StoreError>;

    // --- Configuration -----------------------------------------------------------------------

    async fn server_configs(&self) -> Result<Vec<ServerConfig>, StoreError>;
    /// Apply `fields` to the row of `vo` (created if missing) and write `audit` with its
    /// `config` text set to the stored row's JSON. Returns the stored row.
    async fn set_server_config(
        &self,
        vo: &str,
        fields: &FieldChanges,
        audit: &AuditEntry,
    ) -> Result<ServerConfig, StoreError>;
    async fn delete_server_config(&self, vo: &str, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// The settings applied to jobs of `vo` (its row, then `*`, then defaults).
    async fn server_config(&self, vo: &str) -> Result<EffectiveServerConfig, StoreError>;

    async fn link_configs(&self) -> Result<Vec<LinkConfig>, StoreError>;
    async fn link_by_name(&self, name: &str) -> Result<Option<LinkConfig>, StoreError>;
    /// Apply `fields` to the link named `name`, or to `fresh` when there is none; the row moves
    /// if its source or destination changed. Writes `audit`; returns the stored row.
    async fn set_link(
        &self,
        name: &str,
        fresh: &LinkConfig,
        fields: &FieldChanges,
        audit: &AuditEntry,
    ) -> Result<LinkConfig, StoreError>;
    async fn delete_link(&self, name: &str, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// The limits of a link, resolved through the `*` rows.
    async fn link_config(&self, source_se: &str, dest_se: &str) -> Result<LinkConfig, StoreError>;

    async fn shares(&self) -> Result<Vec<ShareConfig>, StoreError>;
    async fn set_share(&self, share: &ShareConfig, audit: &AuditEntry) -> Result<bool, StoreError>;
    async fn delete_share(
        &self,
        source: &str,
        destination: &str,
        vo: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
    /// The VO weights configured on a link.
    async fn shares_for_link(
        &self,
        source: &str,
        dest: &str,
    ) -> Result<Vec<(String, i64)>, StoreError>;

    async fn se_configs(
        &self,
        storage: Option<&str>,
    ) -> Result<(Vec<SeConfig>, Vec<OperationLimit>), StoreError>;
    /// Several storages' changes and their audit entries in one transaction.
    async fn set_se_configs(
        &self,
        updates: &[SeUpdate],
        audits: &[AuditEntry],
    ) -> Result<(), StoreError>;
    async fn delete_se_config(&self, storage: &str, audit: &AuditEntry) -> Result<(), StoreError>;
    /// A storage's settings, resolved through the `*` row.
    async fn se_config(&self, se: &str) -> Result<SeConfig, StoreError>;

    async fn activity_share_rows(&self) -> Result<Vec<ActivityShare>, StoreError>;
    async fn activity_share_row(&self, vo: &str) -> Result<Option<ActivityShare>, StoreError>;
    async fn set_activity_share(
        &self,
        row: &ActivityShare,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    async fn delete_activity_share(&self, vo: &str, audit: &AuditEntry)
    -> Result<bool, StoreError>;
    /// The activity weights of `vo` and whether they are in force.
    async fn activity_shares(
        &self,
        vo: &str,
    ) -> Result<Option<(Vec<(String, f64)>, bool)>, StoreError>;

    // --- Credentials -------------------------------------------------------------------------

    async fn pending_request(
        &self,
        dlg_id: &str,
        dn: &str,
    ) -> Result<Option<PendingRequest>, StoreError>;
    /// Store a pending request with its private key (sealed by the store).
    async fn save_pending_request(
        &self,
        dlg_id: &str,
        dn: &str,
        request: &PendingRequest,
        key_pem: &[u8],
        now: i64,
    ) -> Result<(), StoreError>;
    /// Store a delegated proxy against the pending request it answers.
    async fn store_credential(
        &self,
        dlg_id: &str,
        dn: &str,
        new: &NewCredential,
        now: i64,
    ) -> Result<StoreOutcome, StoreError>;
    async fn credential(
        &self,
        dlg_id: &str,
        dn: &str,
    ) -> Result<Option<CredentialInfo>, StoreError>;
    async fn delete_credential(&self, dlg_id: &str, dn: &str) -> Result<bool, StoreError>;
    /// The proxy with its private key unsealed, to write a proxy file.
    async fn credential_material(
        &self,
        dlg_id: &str,
        dn: &str,
    ) -> Result<Option<ProxyMaterial>, StoreError>;

    // --- Transfer tokens -----------------------------------------------------------------------

    /// Store the tokens of a submission (sealed): new ones are inserted; a known one keeps its
    /// state and becomes managed if this submission manages it. Per token, in order: whether
    /// it is ready for transfers (unmanaged, or exchanged for a refresh token).
    async fn put_tokens(&self, tokens: &[NewToken], now: i64) -> Result<Vec<bool>, StoreError>;
    /// A token with its access and refresh tokens unsealed.
    async fn token(&self, token_id: &str) -> Result<Option<TokenMaterial>, StoreError>;
    /// Apply an exchange or refresh outcome to a token; false when there is no such token.
    async fn update_token(
        &self,
        token_id: &str,
        change: &TokenChange,
        now: i64,
    ) -> Result<bool, StoreError>;

    // --- Jobs --------------------------------------------------------------------------------

    /// Store one new job; returns once it is durable, or why it was refused. Concurrent
    /// submissions may share one commit (group commit).
    async fn submit(&self, job: NewJob) -> Result<Result<(), InsertConflict>, StoreError>;
    async fn job(&self, job_id: &str) -> Result<Option<Job>, StoreError>;
    /// A job and its files, read in one snapshot.
    async fn job_with_files(&self, job_id: &str) -> Result<Option<(Job, Vec<File>)>, StoreError>;
    async fn file(&self, file_id: u64) -> Result<Option<File>, StoreError>;
    /// Jobs matching `filter`, newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;
    /// Files matching `filter`, at most `filter.limit`.
    async fn list_files(&self, filter: &FileFilter) -> Result<Vec<File>, StoreError>;
    /// Queued (SUBMITTED) files of `vo` from each source towards `dest_se`, in order.
    async fn queued_counts(
        &self,
        sources: &[String],
        dest_se: &str,
        vo: &str,
    ) -> Result<Vec<u64>, StoreError>;
    /// Ids of jobs in any of `states` (optionally of one VO), oldest first.
    async fn job_ids_in_states(
        &self,
        states: &[JobState],
        vo: Option<&str>,
    ) -> Result<Vec<String>, StoreError>;
    /// Apply `edit` to each job of `job_ids` in one transaction (`model::change::edit_job`):
    /// per id, the change and the files it canceled, `None` for a missing job.
    async fn edit_jobs(
        &self,
        job_ids: &[String],
        edit: &JobEdit,
        now: i64,
    ) -> Result<Vec<Option<(JobChange, usize)>>, StoreError>;
    /// Cancel files of one job (`model::change::cancel_files`); `None` for a missing job.
    async fn cancel_files(
        &self,
        job_id: &str,
        wanted: &[Option<u64>],
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError>;
    /// SUBMITTED → FORCE_START: `None` for a missing file, else whether it moved.
    async fn force_start(&self, file_id: u64) -> Result<Option<bool>, StoreError>;
    /// The retried attempts of a file, oldest first.
    async fn file_retries(&self, file_id: u64) -> Result<Vec<RetryRow>, StoreError>;

    // --- The transfer engine -----------------------------------------------------------------

    /// Every (link, VO) with queued (SUBMITTED) files.
    async fn submitted_queues(&self) -> Result<Vec<QueueKey>, StoreError>;
    /// Up to `limit` files of a queue that may start now: its highest priority only, oldest
    /// first, retries past their delay; `reuse` selects session-reuse jobs' files instead of
    /// the others. Each file with its job.
    async fn queue_candidates(
        &self,
        queue: &QueueKey,
        limit: usize,
        now: i64,
        reuse: bool,
    ) -> Result<Vec<(Job, File)>, StoreError>;
    /// Files in `state`, oldest first, at most `limit`, with their jobs.
    async fn files_in_state(
        &self,
        state: FileState,
        limit: usize,
    ) -> Result<Vec<(Job, File)>, StoreError>;
    /// Claim files (a compare-and-swap of each file's state, see [`Claim`]): the files won,
    /// with their jobs as updated; a file that moved meanwhile is left out.
    async fn claim(&self, claim: &Claim) -> Result<Vec<(Job, File)>, StoreError>;
    /// The transfers running on every node, per link and storage, when several nodes share
    /// this store. `None` when this process is the only one that runs transfers: the engine's
    /// own count is then exact (and free).
    async fn shared_load(&self) -> Result<Option<Load>, StoreError>;
    /// Apply a batch of transfer events in one transaction, with the job-state derivation; the
    /// VO's retry setting is read in the same transaction.
    async fn apply_events(
        &self,
        events: &[Event],
        host: &str,
        now: i64,
    ) -> Result<Vec<Applied>, StoreError>;
    /// Current states of files (`None` for a missing file).
    async fn file_states(&self, ids: &[u64]) -> Result<Vec<(u64, Option<FileState>)>, StoreError>;
    /// Cancel the waiting files of jobs past their `max_time_in_queue`; the job ids changed.
    async fn expire_queued(&self, now: i64) -> Result<Vec<String>, StoreError>;
    /// The global queue timeout (`max_time_queue` hours of the VO's server config, or `*`):
    /// jobs still SUBMITTED/STAGING past it are canceled; the job ids changed.
    async fn expire_global(&self, now: i64) -> Result<Vec<String>, StoreError>;
    /// Restart recovery of `host`'s work after the service stopped while it ran (a crash, a
    /// `kill -9`): READY/ACTIVE files go back to the queue without counting an attempt
    /// (`Outcome::Interrupted` with the file's interruption count), unless this is their
    /// `lifecycle::MAX_INTERRUPTIONS`-th interruption: then they fail with
    /// `lifecycle::POISON_REASON` (a transfer that crashes the service must not crash it
    /// forever). The count is kept while the file lives. STARTED staging goes back to STAGING.
    /// One entry per file touched.
    async fn recover_interrupted(&self, host: &str, now: i64) -> Result<Vec<Applied>, StoreError>;

    /// Start-up repair of multihop jobs left without a queued hop (`lifecycle::repair_multihop`):
    /// one entry per hop queued.
    async fn repair_multihop(&self, now: i64) -> Result<Vec<Applied>, StoreError>;

    // --- The optimizer -----------------------------------------------------------------------

    async fn optimizer_current(
        &self,
        source_se: &str,
        dest_se: &str,
    ) -> Result<Option<OptimizerCurrent>, StoreError>;
    async fn optimizer_values(
        &self,
        filter: &LinkFilter,
    ) -> Result<Vec<OptimizerCurrent>, StoreError>;
    /// Store a decision as the link's current value and in the evolution, in one transaction.
    async fn set_optimizer(
        &self,
        decision: &Decision,
    ) -> Result<(EvolutionEntry, OptimizerCurrent), StoreError>;
    async fn evolution(
        &self,
        filter: &LinkFilter,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Result<Vec<EvolutionEntry>, StoreError>;
    /// Retention of the evolution; how many entries went.
    async fn delete_evolution_before(&self, before: i64) -> Result<usize, StoreError>;
    async fn link_stats(
        &self,
        source_se: &str,
        dest_se: &str,
        vo: Option<&str>,
        since: i64,
    ) -> Result<LinkStats, StoreError>;
    /// Every link with queued or running work.
    async fn optimizer_links(&self) -> Result<Vec<LinkLoad>, StoreError>;
    async fn optimizer_samples(
        &self,
        source_se: &str,
        dest_se: &str,
        since: i64,
    ) -> Result<OptimizerSamples, StoreError>;
    async fn pair_status(
        &self,
        filter: &PairFilter,
        now: i64,
    ) -> Result<Vec<PairStatus>, StoreError>;
    /// Running and queued work per host.
    async fn host_activity(&self) -> Result<BTreeMap<String, HostActivity>, StoreError>;

    // --- Monitoring-message outbox (written with the changes; see `outbox`) -------------------

    /// Up to `limit` waiting messages with a sequence number above `after`, oldest first.
    async fn outbox_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, StoreError>;
    /// Remove messages the broker acknowledged (RECEIPT).
    async fn outbox_remove(&self, seqs: &[u64]) -> Result<(), StoreError>;
    /// Drop messages made before `before_ms` (past their TTL); how many.
    async fn outbox_expire(&self, before_ms: i64) -> Result<u64, StoreError>;
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;
    // --- Monitoring --------------------------------------------------------------------------
    //
    // Counts come from aggregates kept current with every change of a job or file row (the
    // embedded backend keeps them in memory, fed by its index hook at commit; a shared
    // database would keep counter tables changed in the row's transaction). Times are unix
    // seconds; windows have minute resolution and reach back at most `RING_MINUTES`.

    /// Every row (link, VO, activity) matching `filter`, with its files per state now and its
    /// terminal files since `since`. Unordered.
    async fn monitor_rows(
        &self,
        filter: &RowFilter,
        since: i64,
    ) -> Result<Vec<RowStats>, StoreError>;
    /// The terminal files of the rows matching `filter`, summed per minute from `since` on,
    /// oldest first (only minutes with terminal files).
    async fn monitor_minutes(
        &self,
        filter: &RowFilter,
        since: i64,
    ) -> Result<Vec<MinuteSlot>, StoreError>;
    /// FAILED files since `since` per link, VO and error class of the rows matching `filter`
    /// (activities summed), most frequent first.
    async fn monitor_errors(
        &self,
        filter: &RowFilter,
        since: i64,
    ) -> Result<Vec<ErrorCount>, StoreError>;
    /// Per host, by name: files now per state and terminal files since `since`.
    async fn monitor_hosts(&self, since: i64) -> Result<Vec<HostStats>, StoreError>;
    /// Jobs per `(vo, state)` now, sorted; states without jobs are left out.
    async fn monitor_jobs(&self) -> Result<Vec<(String, JobState, u64)>, StoreError>;
    /// Everything `/metrics` exports from the stored rows (totals, histograms), sorted.
    async fn monitor_totals(&self) -> Result<Totals, StoreError>;
    /// A page of jobs (ftsmon's job list), each with its files counted per state.
    async fn monitor_job_page(&self, query: &JobListQuery) -> Result<Page<JobSummary>, StoreError>;
    /// A page of files (ftsmon's transfers).
    async fn monitor_transfer_page(&self, query: &TransferQuery) -> Result<Page<File>, StoreError>;
    /// FAILED files of a link since `since` per `(vo, reason)`, of one VO or all; most
    /// frequent first.
    async fn monitor_error_reasons(
        &self,
        source_se: &str,
        dest_se: &str,
        vo: Option<&str>,
        since: i64,
    ) -> Result<Vec<(String, String, u64)>, StoreError>;
    /// The submission time of the oldest job in `state` of each VO of `vos` (VOs without such
    /// a job are left out).
    async fn monitor_oldest_jobs(
        &self,
        state: JobState,
        vos: &[String],
    ) -> Result<BTreeMap<String, i64>, StoreError>;
    /// Jobs submitted since `since`, per `submit_host`.
    async fn monitor_submissions(&self, since: i64) -> Result<BTreeMap<String, u64>, StoreError>;
}
