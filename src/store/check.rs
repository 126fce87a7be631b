//! `ftsd check`: the offline integrity check of a data directory's database.
//!
//! It opens the file the way the service does (so a database left by a crash is repaired by
//! redb first, and the time that takes is reported), runs redb's own integrity check (every
//! page's checksum, the allocator state), then rebuilds every index and counter from the rows
//! and compares them with what is stored, and checks the id counter. It never creates a
//! database, and it refuses to run beside a service that has the file open (redb locks it).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{DB_FILE, StoreError, index, schema};

/// What the check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// The database file checked.
    pub path: PathBuf,
    /// Facts worth telling (a repair after a crash, sizes, timings).
    pub notes: Vec<String>,
    /// Inconsistencies: anything here means the database is damaged.
    pub problems: Vec<String>,
}

/// Why the check could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}: no database there (is this the data directory?)")]
    Missing(PathBuf),
    #[error("{0}: the database is open in a running ftsd; stop it first, or check a copy")]
    InUse(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Check the database of `data_dir`.
pub fn check(data_dir: &Path) -> Result<CheckReport, CheckError> {
    let path = data_dir.join(DB_FILE);
    if !path.is_file() {
        return Err(CheckError::Missing(path));
    }
    let mut report = CheckReport {
        path: path.clone(),
        ..CheckReport::default()
    };
    let repaired = Arc::new(AtomicBool::new(false));
    let flag = repaired.clone();
    let started = Instant::now();
    let opened = Database::builder()
        .set_repair_callback(move |_| flag.store(true, Ordering::Relaxed))
        .open(&path);
    let mut db = match opened {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(CheckError::InUse(path)),
        Err(e) => {
            report
                .problems
                .push(format!("redb cannot open the database: {e}"));
            return Ok(report);
        }
    };
    if repaired.load(Ordering::Relaxed) {
        report.notes.push(format!(
            "the database was not closed cleanly (crash, kill -9, power loss): redb repaired it \
             on open in {:.2} s, as the service does at start",
            started.elapsed().as_secs_f64()
        ));
    }
    let started = Instant::now();
    match db.check_integrity() {
        Ok(true) => report.notes.push(format!(
            "redb integrity check passed in {:.2} s",
            started.elapsed().as_secs_f64()
        )),
        Ok(false) => report
            .problems
            .push("redb integrity check found damage (and repaired what it could)".into()),
        Err(e) => report
            .problems
            .push(format!("redb integrity check failed: {e}")),
    }
    if let Err(e) = check_rows(&db, &mut report) {
        report
            .problems
            .push(format!("the rows cannot be read: {e}"));
    }
    Ok(report)
}

/// Schema version, id counter, and every index and counter rebuilt from the rows.
fn check_rows(db: &Database, report: &mut CheckReport) -> Result<(), StoreError> {
    let started = Instant::now();
    let tx = db.begin_read()?;
    let meta = tx.open_table(schema::META)?;
    match meta.get(schema::META_SCHEMA_VERSION)?.map(|v| v.value()) {
        None => report
            .problems
            .push("no schema version recorded (not an ftsd database, or never opened)".into()),
        Some(v) if v > schema::SCHEMA_VERSION => report.problems.push(format!(
            "schema version {v} is newer than this ftsd understands ({})",
            schema::SCHEMA_VERSION
        )),
        Some(v) if v < schema::SCHEMA_VERSION => report.notes.push(format!(
            "schema version {v}: the service migrates it to {} at start",
            schema::SCHEMA_VERSION
        )),
        Some(_) => {}
    }
    let next = meta.get(schema::META_NEXT_FILE_ID)?.map(|v| v.value());
    let files = tx.open_table(schema::FILES)?;
    let last = files.last()?.map(|(k, _)| k.value());
    if let (Some(last), next) = (last, next) {
        if next.is_none_or(|n| n <= last) {
            report.problems.push(format!(
                "the next file id ({}) is not above the largest stored one ({last}): new files \
                 would overwrite old ones",
                next.map_or("unset".to_string(), |n| n.to_string())
            ));
        }
    }
    let jobs = tx.open_table(schema::JOBS)?.len()?;
    let count = files.len()?;
    report.problems.extend(index::check(&tx)?);
    report.notes.push(format!(
        "{jobs} jobs, {count} files: indexes and counters rebuilt from the rows and compared in \
         {:.2} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Redb;

    #[test]
    fn a_healthy_store_passes_and_a_broken_index_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Redb::open(dir.path()).unwrap();
            store.grant_dn("/CN=a", "config", 1).unwrap();
        }
        let report = check(dir.path()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("integrity check passed"))
        );
        {
            let store = Redb::open(dir.path()).unwrap();
            store
                .write(|tx| {
                    tx.open_multimap_table(schema::AUTHZ_DN_BY_OPERATION)?
                        .remove("config", "/CN=a")?;
                    Ok(())
                })
                .unwrap();
        }
        let report = check(dir.path()).unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    }

    #[test]
    fn no_database_and_a_database_in_use_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(check(dir.path()), Err(CheckError::Missing(_))));
        let _store = Redb::open(dir.path()).unwrap();
        assert!(matches!(check(dir.path()), Err(CheckError::InUse(_))));
    }
}
