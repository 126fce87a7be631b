//! The store: the interface the service and the engine speak to ([`Store`], in `interface`),
//! and its embedded backend on redb (this module is the only one that imports redb).
//!
//! - `interface`: the [`Store`] trait, in domain terms (`model` types in and out).
//! - `embedded`: [`RedbStore`], the async [`Store`] over [`Redb`]: blocking work on the blocking
//!   pool, submissions group-committed by one writer thread.
//! - `schema`: every table, with versioned names, and the schema version.
//! - `codec`: versioned row encoding.
//! - `index`: the only writer of index tables, and the consistency check.
//! - `seal`: private keys and tokens sealed at rest under a key file beside the database.
//! - `aggregates`: the live monitoring counters, fed by the index hook and applied at commit.
//! - `outbox`: monitoring messages, written in the transaction of the change that causes them
//!   and kept until the broker's receipt.
//! - one file per domain (`authz`, `config`, `credentials`, ...) with batch operations; callers never
//!   see redb types.
//!
//! Invariants: one write transaction per logical operation, committed with
//! `Durability::Immediate` before the caller is told it succeeded; index entries change in the
//! same transaction as their row. redb is synchronous: [`RedbStore`] keeps it off the runtime
//! threads.

pub mod aggregates;
pub mod authz;
pub mod bans;
pub mod check;
pub mod codec;
pub mod config;
pub mod credentials;
pub mod embedded;
pub mod engine;
pub mod index;
pub mod interface;
pub mod jobs;
pub mod monitor_rows;
pub mod optimizer;
pub mod outbox;
pub mod schema;
pub mod seal;
#[cfg(test)]
mod suite;
pub mod tokens;
pub mod writer;

use std::{
    fs,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};

pub use embedded::RedbStore;
pub use interface::Store;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("stored value: {0}")]
    Codec(#[from] codec::CodecError),
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A change the store refused as inconsistent (a caller's bug): nothing was written.
    #[error("invalid change: {0}")]
    Invalid(String),
    /// The blocking task or the writer thread running the operation is gone.
    #[error("store task failed: {0}")]
    Task(String),
    #[error(
        "the database {path} is in use by another process: is another ftsd running on this \
         data directory?"
    )]
    InUse { path: PathBuf },
    #[error(
        "the database {path} has schema version {found}, newer than this ftsd understands ({supported}); \
         run the newer ftsd or restore a backup"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
}

macro_rules! redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(redb::Error::from(e))
            }
        }
    )*};
}
redb_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// The database file name inside the data directory.
pub const DB_FILE: &str = "ftsd.redb";

/// An open embedded database, with synchronous operations (they block on disk I/O and on the
/// single writer). The async [`Store`] over it is [`RedbStore`]; offline tools and tests may use
/// this directly.
pub struct Redb {
    db: Database,
    path: PathBuf,
    sealer: seal::Sealer,
    quick_repair: bool,
    /// Whether opening it walked the whole file to repair it (a crash, without quick repair).
    repaired: bool,
    /// The monitoring aggregates (`aggregates.rs`), built at open, changed at each commit.
    live: aggregates::Live,
}

/// How the database is opened and written.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// redb's quick repair: every commit also saves the allocator state, so that opening the
    /// database after a crash reads it back instead of walking every page to rebuild it. On a
    /// store of a million files (1.1 GB) a restart after `kill -9` then takes 0.04 s instead of
    /// 1.05 s, and a 1-file commit 1.07 ms instead of 0.84 ms. On by default, as the service's
    /// `quick_repair` (see there and RELIABILITY.md), so that a store last written by an
    /// offline tool also opens at once after a crash.
    pub quick_repair: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { quick_repair: true }
    }
}

impl std::fmt::Debug for Redb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redb").field("path", &self.path).finish()
    }
}

impl Redb {
    /// Open (or create) the database in `data_dir`, which is created 0700; the file is 0600
    /// from its creation on, since it will hold credentials.
    pub fn open(data_dir: &Path) -> Result<Redb, StoreError> {
        Redb::open_with(data_dir, Options::default())
    }

    /// [`Redb::open`] with options.
    pub fn open_with(data_dir: &Path, options: Options) -> Result<Redb, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700)).map_err(io(data_dir))?;
        let path = data_dir.join(DB_FILE);
        // Create the file ourselves so that it is never world-readable, then let redb
        // initialise it (redb accepts an empty file as a new database).
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
        let sealer = seal::Sealer::load_or_create(data_dir)?;
        let started = std::time::Instant::now();
        // redb calls back only for a full repair: a crash whose last commit saved no allocator
        // state (quick repair off), or a damaged file.
        let repairing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let repair_seen = repairing.clone();
        let db = Database::builder()
            .set_repair_callback(move |session| {
                if !repair_seen.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!("the database was not closed cleanly: repairing it");
                }
                tracing::debug!(progress = session.progress(), "repairing the database");
            })
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::InUse { path: path.clone() }
                }
                e => StoreError::from(e),
            })?;
        let repaired = repairing.load(std::sync::atomic::Ordering::Relaxed);
        if repaired {
            tracing::warn!(
                seconds = started.elapsed().as_secs_f64(),
                "database repaired (quick_repair = true makes this instant)"
            );
        } else {
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                "database file open"
            );
        }
        let mut store = Redb {
            db,
            path,
            sealer,
            quick_repair: options.quick_repair,
            repaired,
            live: aggregates::Live::empty(),
        };
        store.init_schema()?;
        store.live = aggregates::Live::load(&store.db.begin_read()?, crate::model::time::now())?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether opening the database walked the whole file to repair it: a crash whose last
    /// commit was made without quick repair ([`Options::quick_repair`]).
    pub fn was_repaired(&self) -> bool {
        self.repaired
    }

    /// Create missing tables, record the schema version of a new database, refuse a newer one.
    fn init_schema(&self) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut meta = tx.open_table(schema::META)?;
            let found = meta.get(schema::META_SCHEMA_VERSION)?.map(|v| v.value());
            match found {
                None => {
                    meta.insert(schema::META_SCHEMA_VERSION, schema::SCHEMA_VERSION)?;
                }
                Some(v) if v > schema::SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: self.path.clone(),
                        found: v,
                        supported: schema::SCHEMA_VERSION,
                    });
                }
                Some(v) if v < schema::SCHEMA_VERSION => {
                    if v < 2 {
                        // Version 2 added the engine's indexes; fill them from the rows.
                        index::fill_engine_indexes(tx)?;
                    }
                    // Version 2 added the file-derived counters (version 3 the optimizer's):
                    // count the existing files into what the database lacks.
                    let files = tx.open_table(schema::FILES)?;
                    let mut indexes = index::JobIndexes::open(tx)?;
                    for row in files.iter()? {
                        let (_, value) = row?;
                        let file = codec::decode(value.value())?;
                        if v < 2 {
                            indexes.backfill_file_counters(&file)?;
                        } else {
                            indexes.backfill_optimizer_counters(&file)?;
                        }
                    }
                    meta.insert(schema::META_SCHEMA_VERSION, schema::SCHEMA_VERSION)?;
                    tracing::info!(from = v, to = schema::SCHEMA_VERSION, "database migrated");
                }
                Some(_) => {}
            }
            tx.open_table(schema::AUTHZ_DN)?;
            tx.open_multimap_table(schema::AUTHZ_DN_BY_OPERATION)?;
            tx.open_table(schema::CREDENTIAL_REQUESTS)?;
            tx.open_table(schema::CREDENTIALS)?;
            tx.open_table(schema::TOKENS)?;
            tx.open_table(schema::JOBS)?;
            tx.open_table(schema::FILES)?;
            index::JobIndexes::open(tx)?;
            tx.open_table(schema::SE_BANS)?;
            tx.open_table(schema::DN_BANS)?;
            tx.open_table(schema::CONFIG_AUDIT)?;
            tx.open_table(schema::FILE_RETRIES)?;
            tx.open_table(schema::FILE_INTERRUPTIONS)?;
            tx.open_table(schema::HOSTS)?;
            tx.open_table(schema::SERVER_CONFIG)?;
            tx.open_table(schema::LINK_CONFIG)?;
            tx.open_table(schema::SHARE_CONFIG)?;
            tx.open_table(schema::SE_CONFIG)?;
            tx.open_table(schema::OPERATION_LIMITS)?;
            tx.open_table(schema::ACTIVITY_SHARES)?;
            tx.open_table(schema::OPTIMIZER)?;
            tx.open_table(schema::OPTIMIZER_EVOLUTION)?;
            tx.open_table(schema::OPTIMIZER_EVOLUTION_BY_TIME)?;
            tx.open_table(schema::OUTBOX)?;
            Ok(())
        })
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(schema::META)?;
        Ok(meta
            .get(schema::META_SCHEMA_VERSION)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Run `f` in one write transaction committed durably; nothing is written if `f` fails.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.set_quick_repair(self.quick_repair);
        aggregates::discard();
        match f(&tx) {
            Ok(value) => {
                let started = std::time::Instant::now();
                if let Err(e) = tx.commit() {
                    aggregates::discard();
                    return Err(e.into());
                }
                self.live
                    .committed(started.elapsed(), crate::model::time::now());
                Ok(value)
            }
            Err(e) => {
                aggregates::discard();
                tx.abort()?;
                Err(e)
            }
        }
    }

    /// Rebuild every index from the rows and list the differences (empty when consistent).
    pub fn check_indexes(&self) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut problems = index::check(&tx)?;
        aggregates::check(&tx, &self.live, crate::model::time::now(), &mut problems)?;
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn new_database_is_private_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = Redb::open(&data).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::SCHEMA_VERSION);
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(data.join(DB_FILE)).unwrap().mode() & 0o777,
            0o600
        );
    }

    /// The file as a crash leaves it: a copy taken while the database is open, after a commit.
    fn crashed_copy(store: &Redb, to: &Path) {
        fs::create_dir_all(to).unwrap();
        fs::copy(store.path(), to.join(DB_FILE)).unwrap();
        let from = store.path().parent().unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != DB_FILE && entry.file_type().unwrap().is_file() {
                fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn after_a_crash_the_default_store_opens_without_the_full_repair() {
        let dir = tempfile::tempdir().unwrap();
        for (options, repaired) in [
            (Options::default(), false),
            (
                Options {
                    quick_repair: false,
                },
                true,
            ),
        ] {
            let live = dir.path().join(format!("live-{repaired}"));
            let crashed = dir.path().join(format!("crashed-{repaired}"));
            let store = Redb::open_with(&live, options).unwrap();
            assert!(store.grant_dn("/CN=a", "config", 1).unwrap());
            crashed_copy(&store, &crashed);
            let reopened = Redb::open_with(&crashed, options).unwrap();
            assert_eq!(reopened.was_repaired(), repaired, "{options:?}");
            assert_eq!(reopened.dn_grants("/CN=a").unwrap(), vec!["config"]);
            assert!(reopened.check_indexes().unwrap().is_empty());
        }
    }

    #[test]
    fn grants_survive_reopen_and_keep_the_index_consistent() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Redb::open(dir.path()).unwrap();
            assert!(store.grant_dn("/CN=a", "config", 1).unwrap());
            assert!(!store.grant_dn("/CN=a", "config", 2).unwrap());
            assert!(store.grant_dn("/CN=a", "admin", 3).unwrap());
            assert!(store.grant_dn("/CN=b", "config", 4).unwrap());
            assert!(store.grant_dn("/CN=a/CN=x", "deleg", 5).unwrap());
            assert!(store.check_indexes().unwrap().is_empty());
        }
        let store = Redb::open(dir.path()).unwrap();
        assert_eq!(store.dn_grants("/CN=a").unwrap(), vec!["admin", "config"]);
        let by_op: Vec<String> = store
            .list_grants(None, Some("config"))
            .unwrap()
            .into_iter()
            .map(|g| g.dn)
            .collect();
        assert_eq!(by_op, vec!["/CN=a", "/CN=b"]);
        assert_eq!(store.list_grants(Some("/CN=a"), None).unwrap().len(), 2);
        assert_eq!(store.revoke_dn("/CN=a", None).unwrap(), 2);
        assert_eq!(store.revoke_dn("/CN=b", Some("admin")).unwrap(), 0);
        assert!(store.dn_grants("/CN=a").unwrap().is_empty());
        assert_eq!(store.dn_grants("/CN=a/CN=x").unwrap(), vec!["deleg"]);
        assert!(store.check_indexes().unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Redb::open(dir.path()).unwrap();
            store
                .write(|tx| {
                    tx.open_table(schema::META)?
                        .insert(schema::META_SCHEMA_VERSION, schema::SCHEMA_VERSION + 1)?;
                    Ok(())
                })
                .unwrap();
        }
        let err = Redb::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    }

    #[test]
    fn index_check_notices_a_missing_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Redb::open(dir.path()).unwrap();
        store.grant_dn("/CN=a", "config", 1).unwrap();
        store
            .write(|tx| {
                tx.open_multimap_table(schema::AUTHZ_DN_BY_OPERATION)?
                    .remove("config", "/CN=a")?;
                Ok(())
            })
            .unwrap();
        let problems = store.check_indexes().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
