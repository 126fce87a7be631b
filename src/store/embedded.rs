//! [`RedbStore`]: the [`Store`] interface over the embedded database. Every write runs on tokio's
//! blocking pool (redb blocks on fsync and on its single writer lock), except submissions, which
//! go to the group-commit writer thread (`writer`): concurrent submitters share one durable
//! commit. Scans and other reads of unbounded size run on the blocking pool too.
//!
//! Deviation (measured, see BENCHMARKS.md): the point reads every request makes ([`Store::access`],
//! [`Store::job`], [`Store::file`]: one row each) run inline. A redb read
//! transaction never waits for the writer (readers see the last commit) and never syncs; one
//! point read on cached pages costs less CPU than the two thread hand-offs a trip through the
//! blocking pool takes, which tripled the CPU of `GET /jobs/{id}`.
//!
//! The monitoring counts (`monitor_rows`, `monitor_totals`, ...) run inline as well: they read
//! the in-memory aggregates (`aggregates`), no page of the database, and hold their lock only
//! while copying out what was asked (bounded by the rows × the minutes of the window; the
//! overview of 1,000 links answers in well under a millisecond, see BENCHMARKS.md).
//!
//! The handle is cheap to clone; the database closes (and the writer thread is joined, every
//! queued submission answered) when the last clone is dropped.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use async_trait::async_trait;

use super::{
    Redb, Store, StoreError,
    interface::{FieldChanges, NewJob},
    writer::JobWriter,
};
use crate::model::{
    audit::AuditEntry,
    ban::{BanStatus, DnBan, SeBan},
    change::JobEdit,
    config::{
        ActivityShare, EffectiveServerConfig, Host, LinkConfig, OperationLimit, SeConfig, SeUpdate,
        ServerConfig, ShareConfig,
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

/// The embedded database behind the [`Store`] interface.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Redb>,
    writer: Arc<JobWriter>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.db.path())
            .finish()
    }
}

impl RedbStore {
    /// Open (or create) the database in `data_dir` (see [`Redb::open`]) and start its writer
    /// thread. Blocking: call it before the runtime serves, or on the blocking pool.
    pub fn open(data_dir: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::new(Redb::open(data_dir)?)
    }

    /// The interface over an open database.
    pub fn new(db: Redb) -> Result<RedbStore, StoreError> {
        let db = Arc::new(db);
        let writer = JobWriter::start(db.clone()).map_err(|source| StoreError::Io {
            path: db.path().to_path_buf(),
            source,
        })?;
        Ok(RedbStore {
            db,
            writer: Arc::new(writer),
        })
    }

    /// The synchronous database, for offline tools and tests.
    pub fn redb(&self) -> &Redb {
        &self.db
    }

    /// Run a bounded point read here, on the caller's thread (see the module note).
    fn point_read<T>(
        &self,
        f: impl FnOnce(&Redb) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&self.db)
    }

    /// Run `f` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Redb) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[async_trait]
impl Store for RedbStore {
    fn location(&self) -> String {
        self.db.path().display().to_string()
    }

    async fn check(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|db| db.check_indexes()).await
    }

    async fn submit(&self, job: NewJob) -> Result<Result<(), InsertConflict>, StoreError> {
        self.writer.insert(job.0, job.1).await
    }

    async fn access(&self, dn: &str) -> Result<StoredAccess, StoreError> {
        self.point_read(|db| db.access(dn))
    }

    async fn grant_dn(
        &self,
        dn: &str,
        operation: &str,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let dn = dn.to_string();
        let operation = operation.to_string();
        let audit = audit.clone();
        self.blocking(move |db| db.grant_dn_audited(&dn, &operation, now, &audit))
            .await
    }

    async fn revoke_dn(
        &self,
        dn: &str,
        operation: Option<&str>,
        keep: &[&str],
        audit: &AuditEntry,
    ) -> Result<usize, StoreError> {
        let dn = dn.to_string();
        let operation = operation.map(str::to_string);
        let keep: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        let audit = audit.clone();
        self.blocking(move |db| {
            db.revoke_dn_audited(
                &dn,
                operation.as_deref(),
                &keep.iter().map(String::as_str).collect::<Vec<_>>(),
                &audit,
            )
        })
        .await
    }

    async fn list_grants(
        &self,
        dn: Option<&str>,
        operation: Option<&str>,
    ) -> Result<Vec<Grant>, StoreError> {
        let dn = dn.map(str::to_string);
        let operation = operation.map(str::to_string);
        self.blocking(move |db| db.list_grants(dn.as_deref(), operation.as_deref()))
            .await
    }

    async fn ban_se(&self, ban: &SeBan, audit: &AuditEntry) -> Result<Vec<String>, StoreError> {
        let ban = ban.clone();
        let audit = audit.clone();
        self.blocking(move |db| db.ban_se(&ban, &audit)).await
    }

    async fn unban_se(&self, se: &str, vo: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        let se = se.to_string();
        let vo = vo.to_string();
        let audit = audit.clone();
        self.blocking(move |db| db.unban_se(&se, &vo, &audit)).await
    }

    async fn se_bans(&self) -> Result<Vec<SeBan>, StoreError> {
        self.blocking(move |db| db.se_bans()).await
    }

    async fn se_ban_status(&self, se: &str, vo: &str) -> Result<Option<BanStatus>, StoreError> {
        let se = se.to_string();
        let vo = vo.to_string();
        self.blocking(move |db| db.se_ban_status(&se, &vo)).await
    }

    async fn se_bans_for_vo(&self, vo: &str) -> Result<BTreeMap<String, BanStatus>, StoreError> {
        let vo = vo.to_string();
        self.blocking(move |db| db.se_bans_for_vo(&vo)).await
    }

    async fn ban_dn(&self, ban: &DnBan, audit: &AuditEntry) -> Result<Vec<String>, StoreError> {
        let ban = ban.clone();
        let audit = audit.clone();
        self.blocking(move |db| db.ban_dn(&ban, &audit)).await
    }

    async fn unban_dn(&self, dn: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        let dn = dn.to_string();
        let audit = audit.clone();
        self.blocking(move |db| db.unban_dn(&dn, &audit)).await
    }

    async fn dn_bans(&self) -> Result<Vec<DnBan>, StoreError> {
        self.blocking(move |db| db.dn_bans()).await
    }

    async fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.blocking(move |db| db.audit_entries(limit)).await
    }

    async fn beat_host(&self, hostname: &str, service: &str, now: i64) -> Result<(), StoreError> {
        let hostname = hostname.to_string();
        let service = service.to_string();
        self.blocking(move |db| db.beat_host(&hostname, &service, now))
            .await
    }

    async fn hosts(&self) -> Result<Vec<Host>, StoreError> {
        self.blocking(move |db| db.hosts()).await
    }

    async fn set_drain(
        &self,
        hostname: &str,
        drain: bool,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let hostname = hostname.to_string();
        let audit = audit.clone();
        self.blocking(move |db| db.set_drain(&hostname, drain, &audit))
            .await
    }

    async fn host_draining(&self, hostname: &str) -> Result<bool, StoreError> {
        let hostname = hostname.to_string();
        self.blocking(move |db| db.host_draining(&hostname)).await
    }

    async fn server_configs(&self) -> Result<Vec<ServerConfig>, StoreError> {
        self.blocking(move |db| db.server_configs()).await
    }

    async fn set_server_config(
        &self,
        vo: &str,
        fields: &FieldChanges,
        audit: &AuditEntry,
    ) -> Result<ServerConfig, StoreError> {
        let vo = vo.to_string();
        let fields = fields.clone();
        let audit = audit.clone();
        self.blocking(move |db| db.set_server_config(&vo, &fields, &audit))
            .await
    }

    async fn delete_server_config(&self, vo: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        let vo = vo.to_string();
        let audit = audit.clone();
        self.blocking(move |db| db.delete_server_config(&vo, &audit))
            .await
    }

    async fn server_config(&self, vo: &str) -> Result<EffectiveServerConfig, StoreError> {
        let vo = vo.to_string();
        self.blocking(move |db| db.server_config(&vo)).await
    }

    async fn link_configs(&self) -> Result<Vec<LinkConfig>, StoreError> {
        self.blocking(move |db| db.link_configs()).await
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkConfig>, StoreError> {
        let name = name.to_string();
        self.blocking(move |db| db.link_by_name(&name)).await
    }

    async fn set_link(
        &self,
        name: &str,
        fresh: &LinkConfig,
        fields: &FieldChanges,
        audit: &AuditEntry,
    ) -> Result<LinkConfig, StoreError> {
        let name = name.to_string();
        let fresh = fresh.clone();
        let fields = fields.clone();
        let audit = audit.clone();
        self.blocking(move |db| db.set_link(&name, &fresh, &fields, &audit))
            .await
    }

    async fn delete_link(&self, name: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        let name = name.to_string();
        let audit = audit.clone();
        self.blocking(move |db| db.delete_link(&name, &audit)).await
    }

    async fn link_config(&self, source_se: &str, dest_se: &str) -> Result<LinkConfig, StoreError> {
        let source_se = source_se.to_string();
        let dest_se = dest_se.to_string();
        self.blocking(move |db| db.link_config(&source_se, &dest_se))
            .await
    }

    async fn shares(&self) -> Result<Vec<ShareConfig>, StoreError> {
        self.blocking(move |db| db.shares()).await
    }

    async fn set_share(&self, share: &ShareConfig, audit: &AuditEntry) -> Result<bool, StoreError> {
        let share = share.clone();
        let audit = audit.clone();
        self.blocking(move |db| db.set_share(&share, &audit)).await
    }

    async fn delete_share(
        &self,
        source: &str,
        destination: &str,
        vo: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let source = source.to_string();
        let destination = destination.to_string();
        let vo = vo.to_string();
        let audit = audit.clone();
        self.blocking(move |db| db.delete_share(&source, &destination, &vo, &audit))
            .await
    }

    async fn shares_for_link(
        &self,
        source: &str,
        dest: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let source = source.to_string();
        let dest = dest.to_string();
        self.blocking(move |db| db.shares_for_link(&source, &dest))
            .await
    }

    async fn se_configs(
        &self,
        storage: Option<&str>,
    ) -> Result<(Vec<SeConfig>, Vec<OperationLimit>), StoreError> {
        let storage = storage.map(str::to_string);
        self.blocking(move |db| db.se_configs(storage.as_deref()))
            .await
    }

    async fn set_se_configs(
        &self,
        updates: &[SeUpdate],
        audits: &[AuditEntry],
    ) -> Result<(), StoreError> {
        let updates = updates.to_vec();
        let audits = audits.to_vec();
        self.blocking(move |db| db.set_se_configs(&updates, &audits))
            .await
    }

    async fn delete_se_config(&self, storage: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        let storage = storage.to_string();
        let audit = audit.clone();
        self.blocking(move |db| db.delete_se_config(&storage, &audit))
            .await
    }

    async fn se_config(&self, se: &str) -> Result<SeConfig, StoreError> {
        let se = se.to_string();
        self.blocking(move |db| db.se_config(&se)).await
    }

    async fn activity_share_rows(&self) -> Result<Vec<ActivityShare>, StoreError> {
        self.blocking(move |db| db.activity_share_rows()).await
    }

    async fn activity_share_row(&self, vo: &str) -> Result<Option<ActivityShare>, StoreError> {
        let vo = vo.to_string();
        self.blocking(move |db| db.activity_share_row(&vo)).await
    }

    async fn set_activity_share(
        &self,
        row: &ActivityShare,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let row = row.clone();
        let audit = audit.clone();
        self.blocking(move |db| db.set_activity_share(&row, &audit))
            .await
    }

    async fn delete_activity_share(
        &self,
        vo: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let vo = vo.to_string();
        let audit = audit.clone();
        self.blocking(move |db| db.delete_activity_share(&vo, &audit))
            .await
    }

    async fn activity_shares(
        &self,
        vo: &str,
    ) -> Result<Option<(Vec<(String, f64)>, bool)>, StoreError> {
        let vo = vo.to_string();
        self.blocking(move |db| db.activity_shares(&vo)).await
    }

    async fn pending_request(
        &self,
        dlg_id: &str,
        dn: &str,
    ) -> Result<Option<PendingRequest>, StoreError> {
        let dlg_id = dlg_id.to_string();
        let dn = dn.to_string();
        self.blocking(move |db| db.pending_request(&dlg_id, &dn))
            .await
    }

    async fn save_pending_request(
        &self,
        dlg_id: &str,
        dn: &str,
        request: &PendingRequest,
        key_pem: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        let dlg_id = dlg_id.to_string();
        let dn = dn.to_string();
        let request = request.clone();
        let key_pem = key_pem.to_vec();
        self.blocking(move |db| db.save_pending_request(&dlg_id, &dn, &request, &key_pem, now))
            .await
    }

    async fn store_credential(
        &self,
        dlg_id: &str,
        dn: &str,
        new: &NewCredential,
        now: i64,
    ) -> Result<StoreOutcome, StoreError> {
        let dlg_id = dlg_id.to_string();
        let dn = dn.to_string();
        let new = new.clone();
        self.blocking(move |db| db.store_credential(&dlg_id, &dn, &new, now))
            .await
    }

    async fn credential(
        &self,
        dlg_id: &str,
        dn: &str,
    ) -> Result<Option<CredentialInfo>, StoreError> {
        let dlg_id = dlg_id.to_string();
        let dn = dn.to_string();
        self.blocking(move |db| db.credential(&dlg_id, &dn)).await
    }

    async fn delete_credential(&self, dlg_id: &str, dn: &str) -> Result<bool, StoreError> {
        let dlg_id = dlg_id.to_string();
        let dn = dn.to_string();
        self.blocking(move |db| db.delete_credential(&dlg_id, &dn))
            .await
    }

    async fn credential_material(
        &self,
        dlg_id: &str,
        dn: &str,
    ) -> Result<Option<ProxyMaterial>, StoreError> {
        let dlg_id = dlg_id.to_string();
        let dn = dn.to_string();
        self.blocking(move |db| db.credential_material(&dlg_id, &dn))
            .await
    }

    async fn put_tokens(&self, tokens: &[NewToken], now: i64) -> Result<Vec<bool>, StoreError> {
        let tokens = tokens.to_vec();
        self.blocking(move |db| db.put_tokens(&tokens, now)).await
    }

    async fn token(&self, token_id: &str) -> Result<Option<TokenMaterial>, StoreError> {
        let token_id = token_id.to_string();
        self.blocking(move |db| db.token(&token_id)).await
    }

    async fn update_token(
        &self,
        token_id: &str,
        change: &TokenChange,
        now: i64,
    ) -> Result<bool, StoreError> {
        let token_id = token_id.to_string();
        let change = change.clone();
        self.blocking(move |db| db.update_token(&token_id, &change, now))
            .await
    }

    async fn job(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        self.point_read(|db| db.job(job_id))
    }

    async fn job_with_files(&self, job_id: &str) -> Result<Option<(Job, Vec<File>)>, StoreError> {
        // A job's files may be thousands of rows: the blocking pool.
        let job_id = job_id.to_string();
        self.blocking(move |db| db.job_with_files(&job_id)).await
    }

    async fn file(&self, file_id: u64) -> Result<Option<File>, StoreError> {
        self.point_read(|db| db.file(file_id))
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let filter = filter.clone();
        self.blocking(move |db| db.list_jobs(&filter)).await
    }

    async fn list_files(&self, filter: &FileFilter) -> Result<Vec<File>, StoreError> {
        let filter = filter.clone();
        self.blocking(move |db| db.list_files(&filter)).await
    }

    async fn queued_counts(
        &self,
        sources: &[String],
        dest_se: &str,
        vo: &str,
    ) -> Result<Vec<u64>, StoreError> {
        let sources = sources.to_vec();
        let dest_se = dest_se.to_string();
        let vo = vo.to_string();
        self.blocking(move |db| db.queued_counts(&sources, &dest_se, &vo))
            .await
    }

    async fn job_ids_in_states(
        &self,
        states: &[JobState],
        vo: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let states = states.to_vec();
        let vo = vo.map(str::to_string);
        self.blocking(move |db| db.job_ids_in_states(&states, vo.as_deref()))
            .await
    }

    async fn edit_jobs(
        &self,
        job_ids: &[String],
        edit: &JobEdit,
        now: i64,
    ) -> Result<Vec<Option<(JobChange, usize)>>, StoreError> {
        let job_ids = job_ids.to_vec();
        let edit = edit.clone();
        self.blocking(move |db| db.edit_jobs(&job_ids, &edit, now))
            .await
    }

    async fn cancel_files(
        &self,
        job_id: &str,
        wanted: &[Option<u64>],
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let job_id = job_id.to_string();
        let wanted = wanted.to_vec();
        self.blocking(move |db| db.cancel_files(&job_id, &wanted, now))
            .await
    }

    async fn force_start(&self, file_id: u64) -> Result<Option<bool>, StoreError> {
        self.blocking(move |db| db.force_start(file_id)).await
    }

    async fn file_retries(&self, file_id: u64) -> Result<Vec<RetryRow>, StoreError> {
        self.blocking(move |db| db.file_retries(file_id)).await
    }

    async fn submitted_queues(&self) -> Result<Vec<QueueKey>, StoreError> {
        self.blocking(move |db| db.submitted_queues()).await
    }

    async fn queue_candidates(
        &self,
        queue: &QueueKey,
        limit: usize,
        now: i64,
        reuse: bool,
    ) -> Result<Vec<(Job, File)>, StoreError> {
        let queue = queue.clone();
        self.blocking(move |db| db.queue_candidates(&queue, limit, now, reuse))
            .await
    }

    async fn files_in_state(
        &self,
        state: FileState,
        limit: usize,
    ) -> Result<Vec<(Job, File)>, StoreError> {
        self.blocking(move |db| db.files_in_state(state, limit))
            .await
    }

    async fn claim(&self, claim: &Claim) -> Result<Vec<(Job, File)>, StoreError> {
        let claim = claim.clone();
        self.blocking(move |db| db.claim(&claim)).await
    }

    async fn shared_load(&self) -> Result<Option<Load>, StoreError> {
        // One process runs transfers on this store: the engine's own count is exact.
        Ok(None)
    }

    async fn apply_events(
        &self,
        events: &[Event],
        host: &str,
        now: i64,
    ) -> Result<Vec<Applied>, StoreError> {
        let events = events.to_vec();
        let host = host.to_string();
        self.blocking(move |db| db.apply_events(&events, &host, now))
            .await
    }

    async fn file_states(&self, ids: &[u64]) -> Result<Vec<(u64, Option<FileState>)>, StoreError> {
        let ids = ids.to_vec();
        self.blocking(move |db| db.file_states(&ids)).await
    }

    async fn expire_queued(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.blocking(move |db| db.expire_queued(now)).await
    }

    async fn expire_global(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.blocking(move |db| db.expire_global(now)).await
    }

    async fn recover_interrupted(&self, _host: &str, now: i64) -> Result<Vec<Applied>, StoreError> {
        // One process owns this database: every READY/ACTIVE file was its own.
        self.blocking(move |db| db.recover_interrupted(now)).await
    }

    async fn repair_multihop(&self, now: i64) -> Result<Vec<Applied>, StoreError> {
        self.blocking(move |db| db.repair_multihop(now)).await
    }

    async fn optimizer_current(
        &self,
        source_se: &str,
        dest_se: &str,
    ) -> Result<Option<OptimizerCurrent>, StoreError> {
        let source_se = source_se.to_string();
        let dest_se = dest_se.to_string();
        self.blocking(move |db| db.optimizer_current(&source_se, &dest_se))
            .await
    }

    async fn optimizer_values(
        &self,
        filter: &LinkFilter,
    ) -> Result<Vec<OptimizerCurrent>, StoreError> {
        let filter = filter.clone();
        self.blocking(move |db| db.optimizer_values(&filter)).await
    }

    async fn set_optimizer(
        &self,
        decision: &Decision,
    ) -> Result<(EvolutionEntry, OptimizerCurrent), StoreError> {
        let decision = decision.clone();
        self.blocking(move |db| db.set_optimizer(&decision)).await
    }

    async fn evolution(
        &self,
        filter: &LinkFilter,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Result<Vec<EvolutionEntry>, StoreError> {
        let filter = filter.clone();
        self.blocking(move |db| db.evolution(&filter, from, to, limit))
            .await
    }

    async fn delete_evolution_before(&self, before: i64) -> Result<usize, StoreError> {
        self.blocking(move |db| db.delete_evolution_before(before))
            .await
    }

    async fn link_stats(
        &self,
        source_se: &str,
        dest_se: &str,
        vo: Option<&str>,
        since: i64,
    ) -> Result<LinkStats, StoreError> {
        let source_se = source_se.to_string();
        let dest_se = dest_se.to_string();
        let vo = vo.map(str::to_string);
        self.blocking(move |db| db.link_stats(&source_se, &dest_se, vo.as_deref(), since))
            .await
    }

    async fn optimizer_links(&self) -> Result<Vec<LinkLoad>, StoreError> {
        self.blocking(move |db| db.optimizer_links()).await
    }

    async fn optimizer_samples(
        &self,
        source_se: &str,
        dest_se: &str,
        since: i64,
    ) -> Result<OptimizerSamples, StoreError> {
        let source_se = source_se.to_string();
        let dest_se = dest_se.to_string();
        self.blocking(move |db| db.optimizer_samples(&source_se, &dest_se, since))
            .await
    }

    async fn pair_status(
        &self,
        filter: &PairFilter,
        now: i64,
    ) -> Result<Vec<PairStatus>, StoreError> {
        let filter = filter.clone();
        self.blocking(move |db| db.pair_status(&filter, now)).await
    }

    async fn host_activity(&self) -> Result<BTreeMap<String, HostActivity>, StoreError> {
        self.blocking(move |db| db.host_activity()).await
    }

    async fn outbox_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, StoreError> {
        self.blocking(move |db| db.outbox_after(after, limit)).await
    }

    async fn outbox_remove(&self, seqs: &[u64]) -> Result<(), StoreError> {
        let seqs = seqs.to_vec();
        self.blocking(move |db| db.outbox_remove(&seqs)).await
    }

    async fn outbox_expire(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.blocking(move |db| db.outbox_expire(before_ms)).await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.blocking(move |db| db.outbox_stats()).await
    }

    // Aggregate reads: memory only, inline (see the module note).

    async fn monitor_rows(
        &self,
        filter: &RowFilter,
        since: i64,
    ) -> Result<Vec<RowStats>, StoreError> {
        Ok(self.db.monitor_rows(filter, since))
    }

    async fn monitor_minutes(
        &self,
        filter: &RowFilter,
        since: i64,
    ) -> Result<Vec<MinuteSlot>, StoreError> {
        Ok(self.db.monitor_minutes(filter, since))
    }

    async fn monitor_errors(
        &self,
        filter: &RowFilter,
        since: i64,
    ) -> Result<Vec<ErrorCount>, StoreError> {
        Ok(self.db.monitor_errors(filter, since))
    }

    async fn monitor_hosts(&self, since: i64) -> Result<Vec<HostStats>, StoreError> {
        Ok(self.db.monitor_hosts(since))
    }

    async fn monitor_jobs(&self) -> Result<Vec<(String, JobState, u64)>, StoreError> {
        Ok(self.db.monitor_jobs())
    }

    async fn monitor_totals(&self) -> Result<Totals, StoreError> {
        Ok(self.db.monitor_totals())
    }

    // Row listings: index walks of up to `MAX_SCAN` rows, on the blocking pool.

    async fn monitor_job_page(&self, query: &JobListQuery) -> Result<Page<JobSummary>, StoreError> {
        let query = query.clone();
        self.blocking(move |db| db.monitor_job_page(&query)).await
    }

    async fn monitor_transfer_page(&self, query: &TransferQuery) -> Result<Page<File>, StoreError> {
        let query = query.clone();
        self.blocking(move |db| db.monitor_transfer_page(&query))
            .await
    }

    async fn monitor_error_reasons(
        &self,
        source_se: &str,
        dest_se: &str,
        vo: Option<&str>,
        since: i64,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let (source_se, dest_se) = (source_se.to_string(), dest_se.to_string());
        let vo = vo.map(str::to_string);
        self.blocking(move |db| {
            db.monitor_error_reasons(&source_se, &dest_se, vo.as_deref(), since)
        })
        .await
    }

    async fn monitor_oldest_jobs(
        &self,
        state: JobState,
        vos: &[String],
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let vos = vos.to_vec();
        self.blocking(move |db| db.monitor_oldest_jobs(state, &vos))
            .await
    }

    async fn monitor_submissions(&self, since: i64) -> Result<BTreeMap<String, u64>, StoreError> {
        self.blocking(move |db| db.monitor_submissions(since)).await
    }
}
