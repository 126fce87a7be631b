//! The monitoring-message outbox (garage's durable queue in the key-value store): messages are
//! written in the write transaction of the change that causes them ([`record_file_changes`],
//! called by `jobs::update_jobs_in` and `insert_jobs`; [`record`] for optimizer decisions), and
//! leave only when the publisher reports the broker's RECEIPT ([`Redb::outbox_remove`]). A crash
//! at any point loses nothing: a message whose receipt was not yet recorded is sent again.
//!
//! Invariants: the outbox holds at most `outbox_max` messages: a full outbox drops its oldest
//! (counted in `META_OUTBOX_DROPPED`, with a warning) and never refuses the change that writes
//! it, so a broker outage can never stop transfers. With no message kinds configured nothing is
//! built or written.

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::{Redb, StoreError, codec, schema};
use crate::model::{
    config::{ANY, EffectiveServerConfig, ServerConfig},
    job::{File, Job},
    message::{self, Kinds, Message, OutboxStats},
};

impl codec::Record for Message {
    const NAME: &'static str = "message";
    const VERSION: u8 = 1;
}

/// While the outbox is full, a warning is logged once per this many dropped messages (a long
/// outage at a busy node would otherwise log one per state change).
const DROP_LOG_EVERY: u64 = 1000;

fn meta_u64(tx: &WriteTransaction, key: &str) -> Result<u64, StoreError> {
    let meta = tx.open_table(schema::META)?;
    Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
}

/// The message kinds this node produces (empty: messaging is off).
pub(crate) fn kinds(tx: &WriteTransaction) -> Result<Kinds, StoreError> {
    Ok(Kinds::from_bits(meta_u64(tx, schema::META_MESSAGE_KINDS)?))
}

/// Append `messages` to the outbox, dropping the oldest past the bound.
pub(crate) fn record(tx: &WriteTransaction, messages: Vec<Message>) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut meta = tx.open_table(schema::META)?;
    let mut seq = meta
        .get(schema::META_NEXT_OUTBOX_SEQ)?
        .map(|v| v.value())
        .unwrap_or(1);
    let max = meta
        .get(schema::META_OUTBOX_MAX)?
        .map(|v| v.value())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut outbox = tx.open_table(schema::OUTBOX)?;
    for m in &messages {
        outbox.insert(seq, codec::encode(m).as_slice())?;
        seq += 1;
    }
    meta.insert(schema::META_NEXT_OUTBOX_SEQ, seq)?;
    let len = outbox.len()?;
    if len > max {
        let excess = len - max;
        let mut dropped = 0u64;
        while dropped < excess {
            if outbox.pop_first()?.is_none() {
                break;
            }
            dropped += 1;
        }
        let total = meta
            .get(schema::META_OUTBOX_DROPPED)?
            .map(|v| v.value())
            .unwrap_or(0)
            + dropped;
        meta.insert(schema::META_OUTBOX_DROPPED, total)?;
        // A full outbox drops at every change: one line per DROP_LOG_EVERY drops (and the
        // first ones), not one per transaction.
        if total <= DROP_LOG_EVERY || total / DROP_LOG_EVERY != (total - dropped) / DROP_LOG_EVERY {
            tracing::warn!(
                dropped,
                dropped_total = total,
                outbox_max = max,
                "monitoring outbox full (the broker is unreachable or slow): oldest messages \
                 dropped"
            );
        }
    }
    Ok(())
}

/// Build and record the messages of one job's file changes (`old` as read, `new` as written; a
/// file missing from `old` was just submitted).
pub(crate) fn record_file_changes(
    tx: &WriteTransaction,
    job: &Job,
    old: &[File],
    new: &[File],
) -> Result<(), StoreError> {
    let kinds = kinds(tx)?;
    if kinds.is_empty() {
        return Ok(());
    }
    let old_by_id: HashMap<u64, &File> = old.iter().map(|f| (f.file_id, f)).collect();
    let changed: Vec<(Option<&File>, &File)> = new
        .iter()
        .map(|f| (old_by_id.get(&f.file_id).copied(), f))
        .filter(|(o, f)| o.is_none_or(|o| o.file_state != f.file_state || o.retry != f.retry))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let show_user_dn = kinds.contains(message::Kind::State) && show_user_dn(tx, &job.vo_name)?;
    let now = crate::model::time::now();
    let mut out = Vec::new();
    for (o, f) in changed {
        out.extend(message::on_file_change(
            kinds,
            job,
            new,
            o,
            f,
            show_user_dn,
            now,
        ));
    }
    record(tx, out)
}

/// The VO's `show_user_dn` (its row, then `*`).
fn show_user_dn(tx: &WriteTransaction, vo: &str) -> Result<bool, StoreError> {
    let table = tx.open_table(schema::SERVER_CONFIG)?;
    let row = |name: &str| -> Result<Option<ServerConfig>, StoreError> {
        match table.get(name)? {
            Some(v) => Ok(Some(codec::decode(v.value())?)),
            None => Ok(None),
        }
    };
    let (own, any) = (row(vo)?, row(ANY)?);
    Ok(EffectiveServerConfig::resolve(own.as_ref(), any.as_ref()).show_user_dn)
}

impl Redb {
    /// Which messages to produce and how many the outbox may hold (`max` ≥ 1), recorded at
    /// every start from the configuration.
    pub fn set_message_policy(&self, kinds: Kinds, max: u64) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut meta = tx.open_table(schema::META)?;
            meta.insert(schema::META_MESSAGE_KINDS, kinds.bits())?;
            meta.insert(schema::META_OUTBOX_MAX, max.max(1))?;
            Ok(())
        })
    }

    /// Up to `limit` messages with a sequence number above `after`, oldest first.
    pub fn outbox_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::OUTBOX)?;
        let mut out = Vec::new();
        for row in table.range(after.saturating_add(1)..)?.take(limit) {
            let (k, v) = row?;
            out.push((k.value(), codec::decode(v.value())?));
        }
        Ok(out)
    }

    /// Remove delivered messages (their receipts arrived); unknown ids are ignored.
    pub fn outbox_remove(&self, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut table = tx.open_table(schema::OUTBOX)?;
            for s in seqs {
                table.remove(*s)?;
            }
            Ok(())
        })
    }

    /// Drop messages made before `before_ms` (past their TTL: the broker would discard them);
    /// how many went. They are counted with the dropped ones.
    pub fn outbox_expire(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(schema::OUTBOX)?;
            let mut gone = 0u64;
            // Oldest first: stop at the first message still alive (creation order is seq order).
            loop {
                let first = match table.first()? {
                    Some((k, v)) => (k.value(), codec::decode::<Message>(v.value())?),
                    None => break,
                };
                if first.1.created_ms >= before_ms {
                    break;
                }
                table.remove(first.0)?;
                gone += 1;
            }
            if gone > 0 {
                let mut meta = tx.open_table(schema::META)?;
                let total = meta
                    .get(schema::META_OUTBOX_DROPPED)?
                    .map(|v| v.value())
                    .unwrap_or(0)
                    + gone;
                meta.insert(schema::META_OUTBOX_DROPPED, total)?;
            }
            Ok(gone)
        })
    }

    pub fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::OUTBOX)?;
        let meta = tx.open_table(schema::META)?;
        Ok(OutboxStats {
            depth: table.len()?,
            dropped: meta
                .get(schema::META_OUTBOX_DROPPED)?
                .map(|v| v.value())
                .unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        job::{FileState, JobType, fixtures},
        lifecycle::Success,
        message::Kind,
        transfer::{Claim, Event},
    };

    fn open(kinds: Kinds, max: u64) -> (tempfile::TempDir, Redb) {
        let dir = tempfile::tempdir().unwrap();
        let store = Redb::open(dir.path()).unwrap();
        store.set_message_policy(kinds, max).unwrap();
        (dir, store)
    }

    fn submit(store: &Redb, id: &str, files: usize) {
        let mut j = fixtures::job(JobType::Normal);
        j.job_id = id.into();
        let fs = (0..files)
            .map(|i| {
                let mut f = fixtures::file(0, i as u32, FileState::Submitted);
                f.job_id = id.into();
                f.dest_surl = format!("mock://b/{id}/{i}");
                f
            })
            .collect();
        for r in store.insert_jobs(&mut [(j, fs)]).unwrap() {
            r.unwrap();
        }
    }

    fn kinds_in(store: &Redb) -> Vec<(String, String)> {
        store
            .outbox_after(0, 1000)
            .unwrap()
            .into_iter()
            .map(|(_, m)| {
                let v: serde_json::Value = serde_json::from_str(&m.body).unwrap();
                let state = v["file_state"]
                    .as_str()
                    .or(v["t_final_transfer_state"].as_str())
                    .unwrap_or("")
                    .to_string();
                (m.kind.code().to_string(), state)
            })
            .collect()
    }

    #[test]
    fn a_transfer_leaves_its_messages_in_the_outbox_in_order() {
        let (_dir, store) = open(Kinds::of(&Kind::ALL), 1000);
        submit(&store, "j1", 1);
        let claim = Claim {
            file_ids: vec![1],
            host: "h".into(),
            now: 10,
            caps: Default::default(),
        };
        assert_eq!(store.claim(&claim).unwrap().len(), 1);
        let started = Event::Started {
            file_id: 1,
            log_file: None,
        };
        store.apply_events(&[started], "h", 11).unwrap();
        let success = Success {
            filesize: 10,
            duration: 1.0,
            throughput: 1.0,
        };
        store
            .apply_events(
                &[Event::Finished {
                    file_id: 1,
                    success,
                }],
                "h",
                12,
            )
            .unwrap();
        let expected = [
            ("SS", "SUBMITTED"),
            ("SS", "READY"),
            ("ST", ""),
            ("SS", "ACTIVE"),
            ("CO", "Ok"),
            ("SS", "FINISHED"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(kinds_in(&store), expected);
        assert_eq!(store.outbox_stats().unwrap().depth, 6);
    }

    #[test]
    fn messages_stay_until_removed_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Redb::open(dir.path()).unwrap();
            store
                .set_message_policy(Kinds::of(&[Kind::State]), 100)
                .unwrap();
            submit(&store, "j1", 3);
            let first = store.outbox_after(0, 2).unwrap();
            assert_eq!(first.len(), 2);
            store.outbox_remove(&[first[0].0]).unwrap();
            // Dropped without any shutdown, as after a crash the last commit is what is found.
        }
        let store = Redb::open(dir.path()).unwrap();
        let left = store.outbox_after(0, 10).unwrap();
        assert_eq!(left.len(), 2, "only the acknowledged one went");
        let after = store.outbox_after(left[0].0, 10).unwrap();
        assert_eq!(after.len(), 1, "the cursor skips what is in flight");
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts_them() {
        let (_dir, store) = open(Kinds::of(&[Kind::State]), 3);
        submit(&store, "j1", 5);
        let stats = store.outbox_stats().unwrap();
        assert_eq!(
            stats,
            OutboxStats {
                depth: 3,
                dropped: 2
            }
        );
        let left: Vec<u64> = store
            .outbox_after(0, 10)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(left, vec![3, 4, 5], "the newest kept");
    }

    #[test]
    fn messaging_off_writes_nothing() {
        let (_dir, store) = open(Kinds::NONE, 100);
        submit(&store, "j1", 2);
        assert_eq!(store.outbox_stats().unwrap().depth, 0);
    }

    #[test]
    fn expired_messages_are_dropped_and_counted() {
        let (_dir, store) = open(Kinds::of(&[Kind::State]), 100);
        submit(&store, "j1", 2);
        let now_ms = crate::model::time::now() * 1000;
        assert_eq!(store.outbox_expire(now_ms - 60_000).unwrap(), 0);
        assert_eq!(store.outbox_expire(now_ms + 60_000).unwrap(), 2);
        assert_eq!(
            store.outbox_stats().unwrap(),
            OutboxStats {
                depth: 0,
                dropped: 2
            }
        );
    }

    #[test]
    fn an_optimizer_decision_makes_an_op_message() {
        let (_dir, store) = open(Kinds::of(&[Kind::Optimizer]), 100);
        let d = crate::model::optimizer::Decision {
            source_se: "mock://a".into(),
            dest_se: "mock://b".into(),
            datetime: 1_000_000,
            active: 2,
            nostreams: 1,
            ema: 0.0,
            throughput: 0.0,
            success: 100.0,
            rationale: None,
            diff: 0,
            actual_active: 0,
            queue_size: 0,
            filesize_avg: 0.0,
            filesize_stddev: 0.0,
            retry_count: 0,
        };
        store.set_optimizer(&d).unwrap();
        assert_eq!(kinds_in(&store), vec![("OP".to_string(), String::new())]);
    }
}
