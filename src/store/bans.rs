//! Bans and the configuration audit: banned storage elements per VO, banned users, and the
//! audit trail every configuration change writes. A ban, its effect on queued work
//! ([`crate::model::ban`]) and its audit entry are one write transaction.
//!
//! The transfer engine consults [`Redb::se_ban_status`] before starting work on a storage.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::{Redb, StoreError, codec, jobs::update_jobs_in, schema};
use crate::model::{
    audit::AuditEntry,
    ban::{self, ANY_VO, BanStatus, DnBan, SeBan},
    job::{File, FileState, Job},
};

impl codec::Record for SeBan {
    const NAME: &'static str = "se_ban";
    const VERSION: u8 = 1;
}

impl codec::Record for DnBan {
    const NAME: &'static str = "dn_ban";
    const VERSION: u8 = 1;
}

impl codec::Record for AuditEntry {
    const NAME: &'static str = "config_audit";
    const VERSION: u8 = 1;
}

/// Append one audit entry under the next sequence number (for every operation that audits).
pub(crate) fn append_audit(tx: &WriteTransaction, entry: &AuditEntry) -> Result<(), StoreError> {
    let mut table = tx.open_table(schema::CONFIG_AUDIT)?;
    let next = match table.last()? {
        Some((k, _)) => k.value() + 1,
        None => 1,
    };
    table.insert(next, codec::encode(entry).as_slice())?;
    Ok(())
}

/// Ids of the jobs with a file in one of `states` on storage `se` (source or destination) for
/// `vo` (`*`: every VO), through the file state index.
fn jobs_on_storage(
    tx: &WriteTransaction,
    states: &[FileState],
    se: &str,
    vo: &str,
) -> Result<Vec<String>, StoreError> {
    let index = tx.open_table(schema::FILES_BY_STATE)?;
    let files = tx.open_table(schema::FILES)?;
    let mut jobs = BTreeSet::new();
    for state in states {
        let s = state.as_str();
        let range = (s, "", "", "", 0u64)..=(s, "\u{10FFFF}", "\u{10FFFF}", "\u{10FFFF}", u64::MAX);
        for row in index.range(range)? {
            let (key, _) = row?;
            let (_, src, dst, file_vo, file_id) = key.value();
            if (src != se && dst != se) || (vo != ANY_VO && file_vo != vo) {
                continue;
            }
            if let Some(v) = files.get(file_id)? {
                let f: File = codec::decode(v.value())?;
                jobs.insert(f.job_id);
            }
        }
    }
    Ok(jobs.into_iter().collect())
}

/// Every storage ban, keyed by (se, vo).
fn read_se_bans(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
) -> Result<Vec<SeBan>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, v) = row?;
        out.push(codec::decode(v.value())?);
    }
    Ok(out)
}

fn affected(results: Vec<Option<bool>>, ids: Vec<String>) -> Vec<String> {
    ids.into_iter()
        .zip(results)
        .filter(|(_, changed)| *changed == Some(true))
        .map(|(id, _)| id)
        .collect()
}

impl Redb {
    /// Ban a storage for a VO (replacing an earlier ban of the same pair), apply the ban to
    /// queued work and write `audit`, in one transaction. Returns the ids of affected jobs.
    pub fn ban_se(&self, ban: &SeBan, audit: &AuditEntry) -> Result<Vec<String>, StoreError> {
        self.write(|tx| {
            tx.open_table(schema::SE_BANS)?.insert(
                (ban.se.as_str(), ban.vo.as_str()),
                codec::encode(ban).as_slice(),
            )?;
            let (se, vo) = (ban.se.as_str(), ban.vo.as_str());
            let affected_ids = if ban.status.is_wait() {
                let ids = jobs_on_storage(tx, &[FileState::Submitted, FileState::Staging], se, vo)?;
                let results = update_jobs_in(tx, &ids, |_: &mut Job, files| {
                    ban::hold_storage(files, se, vo)
                })?;
                affected(results, ids)
            } else {
                let mut states: Vec<FileState> = FileState::ALL
                    .into_iter()
                    .filter(|s| s.is_active())
                    .collect();
                states.push(FileState::NotUsed);
                let ids = jobs_on_storage(tx, &states, se, vo)?;
                let now = ban.addition_time;
                let results = update_jobs_in(tx, &ids, |job, files| {
                    ban::cancel_storage(job, files, se, vo, now)
                })?;
                affected(results, ids)
            };
            append_audit(tx, audit)?;
            Ok(affected_ids)
        })
    }

    /// Lift the ban of `se` for `vo`: its held files go back to the queue (unless a wait ban
    /// of their other storage still holds them); writes `audit`. Returns whether a ban existed.
    pub fn unban_se(&self, se: &str, vo: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::SE_BANS)?;
            let existed = table.remove((se, vo))?.is_some();
            let waiting: HashMap<(String, String), BanStatus> = read_se_bans(&table)?
                .into_iter()
                .filter(|b| b.status.is_wait())
                .map(|b| ((b.se, b.vo), b.status))
                .collect();
            drop(table);
            let held_by = |storage: &str, file_vo: &str| {
                waiting.contains_key(&(storage.to_string(), file_vo.to_string()))
                    || waiting.contains_key(&(storage.to_string(), ANY_VO.to_string()))
            };
            let ids = jobs_on_storage(tx, &[FileState::OnHold, FileState::OnHoldStaging], se, vo)?;
            update_jobs_in(tx, &ids, |_: &mut Job, files| {
                ban::release_storage(files, se, vo, |f| {
                    held_by(&f.source_se, &f.vo_name) || held_by(&f.dest_se, &f.vo_name)
                })
            })?;
            append_audit(tx, audit)?;
            Ok(existed)
        })
    }

    /// Every storage ban, by storage then VO.
    pub fn se_bans(&self) -> Result<Vec<SeBan>, StoreError> {
        let tx = self.db.begin_read()?;
        read_se_bans(&tx.open_table(schema::SE_BANS)?)
    }

    /// Is `se` banned for `vo` (its own ban first, then a ban of every VO), and how?
    pub fn se_ban_status(&self, se: &str, vo: &str) -> Result<Option<BanStatus>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::SE_BANS)?;
        for key in [(se, vo), (se, ANY_VO)] {
            if let Some(v) = table.get(key)? {
                let ban: SeBan = codec::decode(v.value())?;
                return Ok(Some(ban.status));
            }
        }
        Ok(None)
    }

    /// The storages banned for `vo` (its own bans win over bans of every VO), for checking a
    /// submission in one read. The table holds one row per banned storage and VO: small.
    pub fn se_bans_for_vo(&self, vo: &str) -> Result<BTreeMap<String, BanStatus>, StoreError> {
        let mut out = BTreeMap::new();
        let mut any = BTreeMap::new();
        for ban in self.se_bans()? {
            if ban.vo == vo {
                out.insert(ban.se, ban.status);
            } else if ban.vo == ANY_VO {
                any.insert(ban.se, ban.status);
            }
        }
        for (se, status) in any {
            out.entry(se).or_insert(status);
        }
        Ok(out)
    }

    /// Ban a user (replacing an earlier ban), cancel their unfinished jobs and write `audit`, in
    /// one transaction. Returns the ids of the canceled jobs.
    pub fn ban_dn(&self, ban: &DnBan, audit: &AuditEntry) -> Result<Vec<String>, StoreError> {
        self.write(|tx| {
            tx.open_table(schema::DN_BANS)?
                .insert(ban.dn.as_str(), codec::encode(ban).as_slice())?;
            let mut ids = Vec::new();
            {
                let by_dn = tx.open_table(schema::JOBS_BY_DN)?;
                let dn = ban.dn.as_str();
                for row in by_dn.range((dn, i64::MIN, "")..=(dn, i64::MAX, "\u{10FFFF}"))? {
                    ids.push(row?.0.value().2.to_string());
                }
            }
            let now = ban.addition_time;
            let results =
                update_jobs_in(tx, &ids, |job, files| ban::cancel_user_job(job, files, now))?;
            append_audit(tx, audit)?;
            Ok(affected(results, ids))
        })
    }

    /// Lift a user ban; writes `audit`. Returns whether a ban existed.
    pub fn unban_dn(&self, dn: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.write(|tx| {
            let existed = tx.open_table(schema::DN_BANS)?.remove(dn)?.is_some();
            append_audit(tx, audit)?;
            Ok(existed)
        })
    }

    /// Every user ban, by DN.
    pub fn dn_bans(&self) -> Result<Vec<DnBan>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::DN_BANS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(codec::decode(v.value())?);
        }
        Ok(out)
    }

    /// Is this DN banned?
    pub fn dn_banned(&self, dn: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(schema::DN_BANS)?.get(dn)?.is_some())
    }

    /// The newest `limit` audit entries, newest first (read backwards from the end).
    pub fn audit_entries(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::CONFIG_AUDIT)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for row in table.iter()?.rev().take(limit) {
            let (_, v) = row?;
            out.push(codec::decode(v.value())?);
        }
        Ok(out)
    }
}
