//! The optimizer's tables and the link statistics it (and the pair status) reads.
//!
//! - [`Redb::set_optimizer`] upserts a link's current value and appends the same decision to
//!   the evolution, in one transaction; [`Redb::evolution`] reads a link and time range with
//!   one range scan, or the newest decisions of every link through the time index;
//!   [`Redb::delete_evolution_before`] is the retention.
//! - [`Redb::link_stats`], [`Redb::pair_status`] and [`Redb::host_activity`] read the
//!   counters `index.rs` keeps beside the files (per-minute terminal statistics, pair and host
//!   counts) and the file state index; none of them scans the files table.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use super::{
    Redb, StoreError, codec,
    index::{self, DURATION_SCALE, THROUGHPUT_SCALE, minute_of},
    jobs::MAX_SCAN,
    schema,
};
use crate::model::{
    job::{File, FileState, Job},
    optimizer::{
        Decision, EvolutionEntry, HostActivity, LinkFilter, LinkLoad, LinkStats, OptimizerCurrent,
        OptimizerSamples, PairStatus,
    },
    query::PairFilter,
};

impl codec::Record for OptimizerCurrent {
    const NAME: &'static str = "optimizer";
    const VERSION: u8 = 1;
}

impl codec::Record for EvolutionEntry {
    const NAME: &'static str = "optimizer_evolution";
    const VERSION: u8 = 1;
}

/// The average queueing time of a pair is taken over at most this many running transfers: the
/// running set is bounded by the optimizer's caps, this only guards a pathological store.
pub const MAX_QUEUED_SAMPLE: usize = 10_000;

/// The windows (minutes) of the pair status' average throughput.
pub const THROUGHPUT_WINDOWS: [u32; 4] = [60, 30, 15, 5];

/// Highest string used as the open end of a string range.
const MAX_STR: &str = "\u{10FFFF}";

impl Redb {
    /// The current value of a link, if the optimizer (or an operator) ever set one.
    pub fn optimizer_current(
        &self,
        source_se: &str,
        dest_se: &str,
    ) -> Result<Option<OptimizerCurrent>, StoreError> {
        let tx = self.db.begin_read()?;
        read_current(&tx, source_se, dest_se)
    }

    /// Current values of the links matching `filter`, newest decision first.
    pub fn optimizer_values(
        &self,
        filter: &LinkFilter,
    ) -> Result<Vec<OptimizerCurrent>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::OPTIMIZER)?;
        let mut out: Vec<OptimizerCurrent> = Vec::new();
        let rows = match &filter.source_se {
            Some(src) => table.range((src.as_str(), "")..=(src.as_str(), MAX_STR))?,
            None => table.iter()?,
        };
        for row in rows {
            let (key, value) = row?;
            let (src, dst) = key.value();
            if filter.matches(src, dst) {
                out.push(codec::decode(value.value())?);
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.datetime));
        Ok(out)
    }

    /// Store a decision: upsert the link's current value and append the decision to the
    /// evolution, in one durable transaction.
    pub fn set_optimizer(
        &self,
        decision: &Decision,
    ) -> Result<(EvolutionEntry, OptimizerCurrent), StoreError> {
        let current = decision.current();
        let evolution = decision.evolution();
        self.write(|tx| {
            let (src, dst) = (decision.source_se.as_str(), decision.dest_se.as_str());
            tx.open_table(schema::OPTIMIZER)?
                .insert((src, dst), codec::encode(&current).as_slice())?;
            let mut meta = tx.open_table(schema::META)?;
            let seq = meta
                .get(schema::META_NEXT_EVOLUTION_SEQ)?
                .map(|v| v.value())
                .unwrap_or(1);
            meta.insert(schema::META_NEXT_EVOLUTION_SEQ, seq + 1)?;
            let key = (src, dst, decision.datetime, seq);
            tx.open_table(schema::OPTIMIZER_EVOLUTION)?
                .insert(key, codec::encode(&evolution).as_slice())?;
            index::apply_evolution(tx, None, Some(key))?;
            Ok(())
        })?;
        Ok((evolution, current))
    }

    /// Decisions of the links matching `filter` made in `[from, to]` (unix µs, either end
    /// open), newest first, at most `limit`. With both ends of the link given this is one range
    /// scan; otherwise the time index is walked backwards (at most [`MAX_SCAN`] entries).
    pub fn evolution(
        &self,
        filter: &LinkFilter,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Result<Vec<EvolutionEntry>, StoreError> {
        let tx = self.db.begin_read()?;
        let rows = tx.open_table(schema::OPTIMIZER_EVOLUTION)?;
        let (from, to) = (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX));
        let mut out = Vec::new();
        if from > to || limit == 0 {
            return Ok(out);
        }
        if let (Some(src), Some(dst)) = (&filter.source_se, &filter.dest_se) {
            let (s, d) = (src.as_str(), dst.as_str());
            for row in rows.range((s, d, from, 0u64)..=(s, d, to, u64::MAX))?.rev() {
                out.push(codec::decode(row?.1.value())?);
                if out.len() >= limit {
                    break;
                }
            }
            return Ok(out);
        }
        let by_time = tx.open_table(schema::OPTIMIZER_EVOLUTION_BY_TIME)?;
        for (scanned, row) in by_time
            .range((from, 0u64, "", "")..=(to, u64::MAX, MAX_STR, MAX_STR))?
            .rev()
            .enumerate()
        {
            if scanned >= MAX_SCAN {
                break;
            }
            let (key, _) = row?;
            let (t, seq, src, dst) = key.value();
            if !filter.matches(src, dst) {
                continue;
            }
            if let Some(v) = rows.get((src, dst, t, seq))? {
                out.push(codec::decode(v.value())?);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Retention: delete the decisions made before `before` (unix µs). Returns how many.
    pub fn delete_evolution_before(&self, before: i64) -> Result<usize, StoreError> {
        self.write(|tx| {
            let mut keys: Vec<(String, String, i64, u64)> = Vec::new();
            {
                let by_time = tx.open_table(schema::OPTIMIZER_EVOLUTION_BY_TIME)?;
                for row in by_time.range(..(before, 0u64, "", ""))? {
                    let (key, _) = row?;
                    let (t, seq, src, dst) = key.value();
                    keys.push((src.to_string(), dst.to_string(), t, seq));
                }
            }
            let mut rows = tx.open_table(schema::OPTIMIZER_EVOLUTION)?;
            for (src, dst, t, seq) in &keys {
                let key = (src.as_str(), dst.as_str(), *t, *seq);
                rows.remove(key)?;
                index::apply_evolution(tx, Some(key), None)?;
            }
            Ok(keys.len())
        })
    }

    /// Terminal-transfer statistics of a link since `since` (unix seconds, rounded down to its
    /// minute), for one VO or all (`vo` `None`), from the per-minute counters.
    pub fn link_stats(
        &self,
        source_se: &str,
        dest_se: &str,
        vo: Option<&str>,
        since: i64,
    ) -> Result<LinkStats, StoreError> {
        let tx = self.db.begin_read()?;
        let buckets = minute_buckets(&tx, source_se, dest_se, vo, since)?;
        let mut stats = sum_buckets(&buckets, since);
        stats.errors = errors_since(&tx, source_se, dest_se, vo, since)?;
        Ok(stats)
    }

    /// The links the optimizer looks at: every link with SUBMITTED or ACTIVE files, sorted
    /// (FTS-1094), with those counts. Walks the pair counter and, per link, the state index.
    pub fn optimizer_links(&self) -> Result<Vec<LinkLoad>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut links: Vec<(String, String)> = Vec::new();
        for row in tx.open_table(schema::FILE_COUNT_BY_PAIR)?.iter()? {
            let (key, _) = row?;
            let (src, dst, _) = key.value();
            if links.last().is_none_or(|(s, d)| s != src || d != dst) {
                links.push((src.to_string(), dst.to_string()));
            }
        }
        let index = tx.open_table(schema::FILES_BY_STATE)?;
        let count = |state: FileState, src: &str, dst: &str| -> Result<u64, StoreError> {
            let s = state.as_str();
            let mut n = 0;
            for row in index.range((s, src, dst, "", 0u64)..=(s, src, dst, MAX_STR, u64::MAX))? {
                row?;
                n += 1;
            }
            Ok(n)
        };
        let mut out = Vec::new();
        for (src, dst) in links {
            let active = count(FileState::Active, &src, &dst)?;
            let queued = count(FileState::Submitted, &src, &dst)?;
            if active + queued > 0 {
                out.push(LinkLoad {
                    source_se: src,
                    dest_se: dst,
                    active,
                    queued,
                });
            }
        }
        Ok(out)
    }

    /// The optimizer's counters of a link (all VOs) from the minute of `since` (unix seconds)
    /// on.
    pub fn optimizer_samples(
        &self,
        source_se: &str,
        dest_se: &str,
        since: i64,
    ) -> Result<OptimizerSamples, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::LINK_MINUTE_OPTIMIZER)?;
        let first = minute_of(since);
        let mut out = OptimizerSamples::default();
        let (src, dst) = (source_se, dest_se);
        for row in table.range((src, dst, "", i64::MIN)..=(src, dst, MAX_STR, i64::MAX))? {
            let (key, value) = row?;
            if key.value().3 < first {
                continue;
            }
            let c = value.value();
            out.ok += c.0;
            out.failed += c.1;
            out.retries += c.2;
            out.sized += c.3;
            out.bytes = out.bytes.saturating_add(c.4);
            out.bytes_sq = out.bytes_sq.saturating_add(c.5);
        }
        Ok(out)
    }

    /// The status of every (VO, source, destination) with files matching `filter`, over the
    /// hour before `now` (unix seconds), ordered by VO, source, destination.
    pub fn pair_status(
        &self,
        filter: &PairFilter,
        now: i64,
    ) -> Result<Vec<PairStatus>, StoreError> {
        let tx = self.db.begin_read()?;
        let pairs_table = tx.open_table(schema::FILE_COUNT_BY_PAIR)?;
        let mut pairs: Vec<(String, String, String)> = Vec::new();
        let rows = match (&filter.source_se, &filter.dest_se) {
            (Some(s), Some(d)) => pairs_table
                .range((s.as_str(), d.as_str(), "")..=(s.as_str(), d.as_str(), MAX_STR))?,
            (Some(s), None) => {
                pairs_table.range((s.as_str(), "", "")..=(s.as_str(), MAX_STR, MAX_STR))?
            }
            _ => pairs_table.iter()?,
        };
        for row in rows {
            let (key, _) = row?;
            let (src, dst, vo) = key.value();
            if filter.dest_se.as_deref().is_none_or(|d| d == dst)
                && filter.vo_name.as_deref().is_none_or(|v| v == vo)
            {
                pairs.push((vo.to_string(), src.to_string(), dst.to_string()));
            }
        }
        pairs.sort();

        let since = now - 3600;
        let mut out = Vec::with_capacity(pairs.len());
        for (vo, src, dst) in pairs {
            let buckets = minute_buckets(&tx, &src, &dst, Some(&vo), since)?;
            let mut last_hour = sum_buckets(&buckets, since);
            last_hour.errors = errors_since(&tx, &src, &dst, Some(&vo), since)?;
            let avg_throughput = THROUGHPUT_WINDOWS.map(|minutes| {
                let window = sum_buckets(&buckets, now - i64::from(minutes) * 60);
                (minutes, window.avg_throughput())
            });
            out.push(PairStatus {
                active: count_state(&tx, FileState::Active, &src, &dst, &vo)?,
                submitted: count_state(&tx, FileState::Submitted, &src, &dst, &vo)?,
                max_active: read_current(&tx, &src, &dst)?.map(|c| c.active),
                avg_queued: avg_queued(&tx, &src, &dst, &vo)?,
                last_hour,
                avg_throughput,
                vo_name: vo,
                source_se: src,
                dest_se: dst,
            });
        }
        Ok(out)
    }

    /// Running work per host: ACTIVE transfers by transfer host, STARTED bring-online requests
    /// by staging host.
    pub fn host_activity(&self) -> Result<BTreeMap<String, HostActivity>, StoreError> {
        let tx = self.db.begin_read()?;
        let mut out: BTreeMap<String, HostActivity> = BTreeMap::new();
        for row in tx.open_table(schema::HOST_ACTIVITY)?.iter()? {
            let (key, value) = row?;
            let (host, kind) = key.value();
            let entry = out.entry(host.to_string()).or_default();
            match kind {
                "active" => entry.active = value.value(),
                _ => entry.staging = value.value(),
            }
        }
        Ok(out)
    }
}

fn read_current(
    tx: &ReadTransaction,
    source_se: &str,
    dest_se: &str,
) -> Result<Option<OptimizerCurrent>, StoreError> {
    let table = tx.open_table(schema::OPTIMIZER)?;
    match table.get((source_se, dest_se))? {
        Some(v) => Ok(Some(codec::decode(v.value())?)),
        None => Ok(None),
    }
}

use schema::MinuteCounters as Counters;

/// The per-minute counters of a link (one VO or all) from the minute of `since` on.
fn minute_buckets(
    tx: &ReadTransaction,
    src: &str,
    dst: &str,
    vo: Option<&str>,
    since: i64,
) -> Result<Vec<(i64, Counters)>, StoreError> {
    let table = tx.open_table(schema::LINK_MINUTE_STATS)?;
    let first = minute_of(since);
    let mut out = Vec::new();
    let rows = match vo {
        Some(vo) => table.range((src, dst, vo, first)..=(src, dst, vo, i64::MAX))?,
        None => table.range((src, dst, "", i64::MIN)..=(src, dst, MAX_STR, i64::MAX))?,
    };
    for row in rows {
        let (key, value) = row?;
        let minute = key.value().3;
        if minute >= first {
            out.push((minute, value.value()));
        }
    }
    Ok(out)
}

/// Add up the buckets from the minute of `since` on.
fn sum_buckets(buckets: &[(i64, Counters)], since: i64) -> LinkStats {
    let first = minute_of(since);
    let mut c: Counters = Default::default();
    for (_, b) in buckets.iter().filter(|(m, _)| *m >= first) {
        c = (
            c.0 + b.0,
            c.1 + b.1,
            c.2 + b.2,
            c.3 + b.3,
            c.4 + b.4,
            c.5 + b.5,
        );
    }
    LinkStats {
        finished: c.0,
        failed: c.1,
        throughput_sum: c.2 as f64 / THROUGHPUT_SCALE,
        throughput_count: c.3,
        duration_sum: c.4 as f64 / DURATION_SCALE,
        duration_count: c.5,
        errors: Vec::new(),
    }
}

/// Failure reasons of a link since the minute of `since`, most frequent first.
fn errors_since(
    tx: &ReadTransaction,
    src: &str,
    dst: &str,
    vo: Option<&str>,
    since: i64,
) -> Result<Vec<(String, u64)>, StoreError> {
    let table = tx.open_table(schema::LINK_MINUTE_ERRORS)?;
    let first = minute_of(since);
    let mut counts: HashMap<String, u64> = HashMap::new();
    // The upper bound ends at minute i64::MAX, which no file has, so any reason fits below it.
    let rows = match vo {
        Some(vo) => table.range((src, dst, vo, first, "")..(src, dst, vo, i64::MAX, ""))?,
        None => {
            table.range((src, dst, "", i64::MIN, "")..=(src, dst, MAX_STR, i64::MAX, MAX_STR))?
        }
    };
    for row in rows {
        let (key, value) = row?;
        let (_, _, _, minute, reason) = key.value();
        if minute >= first {
            *counts.entry(reason.to_string()).or_default() += value.value();
        }
    }
    let mut out: Vec<(String, u64)> = counts.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

/// Files of a pair in one state, counted on the file state index.
fn count_state(
    tx: &ReadTransaction,
    state: FileState,
    src: &str,
    dst: &str,
    vo: &str,
) -> Result<u64, StoreError> {
    let table = tx.open_table(schema::FILES_BY_STATE)?;
    let s = state.as_str();
    let mut n = 0;
    for row in table.range((s, src, dst, vo, 0u64)..=(s, src, dst, vo, u64::MAX))? {
        row?;
        n += 1;
    }
    Ok(n)
}

/// Average seconds between submission and start of the pair's running transfers (the
/// reference's `avg_queued`), over the ACTIVE files found through the state index.
fn avg_queued(
    tx: &ReadTransaction,
    src: &str,
    dst: &str,
    vo: &str,
) -> Result<Option<f64>, StoreError> {
    let index = tx.open_table(schema::FILES_BY_STATE)?;
    let files = tx.open_table(schema::FILES)?;
    let jobs = tx.open_table(schema::JOBS)?;
    let s = FileState::Active.as_str();
    let mut submit_times: HashMap<String, Option<i64>> = HashMap::new();
    let (mut sum, mut n) = (0i64, 0u32);
    for row in index
        .range((s, src, dst, vo, 0u64)..=(s, src, dst, vo, u64::MAX))?
        .take(MAX_QUEUED_SAMPLE)
    {
        let file_id = row?.0.value().4;
        let Some(v) = files.get(file_id)? else {
            continue;
        };
        let f: File = codec::decode(v.value())?;
        let Some(start) = f.start_time else { continue };
        let submitted = match submit_times.get(&f.job_id) {
            Some(t) => *t,
            None => {
                let t = match jobs.get(f.job_id.as_str())? {
                    Some(v) => Some(codec::decode::<Job>(v.value())?.submit_time),
                    None => None,
                };
                submit_times.insert(f.job_id.clone(), t);
                t
            }
        };
        if let Some(submitted) = submitted {
            sum = sum.saturating_add(start - submitted);
            n += 1;
        }
    }
    Ok((n > 0).then(|| sum as f64 / f64::from(n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::JobType;

    fn file(index: u32, src: &str, dst: &str, state: FileState) -> File {
        crate::model::job::fixtures::file_on(index, src, dst, state)
    }

    fn job(id: &str) -> Job {
        Job {
            job_id: id.into(),
            ..crate::model::job::fixtures::job(JobType::Normal)
        }
    }

    fn decision(src: &str, dst: &str, t: i64, active: i64) -> Decision {
        Decision {
            source_se: src.into(),
            dest_se: dst.into(),
            datetime: t,
            active,
            nostreams: 1,
            ema: 1.5,
            throughput: 2.0,
            success: 99.0,
            rationale: Some(format!("r{active}")),
            diff: 1,
            actual_active: 1,
            queue_size: 4,
            filesize_avg: 0.0,
            filesize_stddev: 0.0,
            retry_count: 0,
        }
    }

    #[test]
    fn link_stats_and_host_activity_follow_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Redb::open(dir.path()).unwrap();
        let now = 1_700_000_000 - 1_700_000_000 % 60 + 30;
        let mut batch = Vec::new();
        for j in 0..2 {
            let mut files = Vec::new();
            for i in 0..5u32 {
                let mut f = file(i, "mock://s", "mock://d", FileState::Submitted);
                f.dest_surl = format!("mock://d/{j}/{i}");
                files.push(f);
            }
            let mut job = job(&format!("job{j}"));
            job.submit_time = now - 100;
            batch.push((job, files));
        }
        let mut other = file(0, "mock://s", "mock://e", FileState::Submitted);
        other.vo_name = "other".into();
        batch.push((job("job2"), vec![other]));
        store.insert_jobs(&mut batch).unwrap();

        let ids: Vec<String> = (0..2).map(|j| format!("job{j}")).collect();
        store
            .update_jobs(&ids, |job, files| {
                let j = job.job_id.ends_with('1');
                for f in files.iter_mut() {
                    match (j, f.file_index) {
                        // Finished: two this minute, one 20 minutes ago, one 2 hours ago.
                        (false, 0 | 1) => {
                            f.file_state = FileState::Finished;
                            f.finish_time = Some(now);
                            f.throughput = Some(2.0 + f64::from(f.file_index));
                            f.tx_duration = Some(10.0);
                        }
                        (false, 2) => {
                            f.file_state = FileState::Finished;
                            f.finish_time = Some(now - 1200);
                            f.throughput = Some(9.0);
                        }
                        (false, 3) => {
                            f.file_state = FileState::Finished;
                            f.finish_time = Some(now - 7200);
                            f.throughput = Some(100.0);
                        }
                        (false, 4) => {
                            f.file_state = FileState::Active;
                            f.transfer_host = Some("fts1".into());
                            f.start_time = Some(now - 40);
                        }
                        (true, 0 | 1) => {
                            f.file_state = FileState::Failed;
                            f.finish_time = Some(now - 60);
                            f.reason = Some("boom".into());
                        }
                        (true, 2) => {
                            f.file_state = FileState::Failed;
                            f.finish_time = Some(now);
                            f.reason = Some("bang".into());
                        }
                        (true, 3) => {
                            f.file_state = FileState::Started;
                            f.staging_host = Some("fts2".into());
                        }
                        _ => {}
                    }
                }
            })
            .unwrap();
        assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());

        let hour = store
            .link_stats("mock://s", "mock://d", Some("vo"), now - 3600)
            .unwrap();
        assert_eq!((hour.finished, hour.failed), (3, 3));
        assert_eq!(hour.avg_throughput(), Some((2.0 + 3.0 + 9.0) / 3.0));
        assert_eq!(hour.avg_duration(), Some(10.0));
        assert_eq!(hour.success_ratio(), Some(0.5));
        assert_eq!(hour.frequent_error(), Some(("boom", 2)));
        let recent = store
            .link_stats("mock://s", "mock://d", None, now - 5)
            .unwrap();
        assert_eq!((recent.finished, recent.failed), (2, 1));
        assert_eq!(recent.frequent_error(), Some(("bang", 1)));
        let none = store
            .link_stats("mock://s", "mock://d", Some("other"), now - 3600)
            .unwrap();
        assert_eq!(none, LinkStats::default());

        let hosts = store.host_activity().unwrap();
        assert_eq!(
            hosts["fts1"],
            HostActivity {
                active: 1,
                staging: 0
            }
        );
        assert_eq!(
            hosts["fts2"],
            HostActivity {
                active: 0,
                staging: 1
            }
        );

        store
            .set_optimizer(&decision("mock://s", "mock://d", 1, 7))
            .unwrap();
        let pairs = store.pair_status(&PairFilter::default(), now).unwrap();
        assert_eq!(pairs.len(), 2);
        let p = &pairs[1];
        assert_eq!((p.vo_name.as_str(), p.dest_se.as_str()), ("vo", "mock://d"));
        assert_eq!((p.active, p.submitted, p.max_active), (1, 1, Some(7)));
        assert_eq!(p.avg_queued, Some(60.0));
        assert_eq!(p.avg_throughput[0], (60, Some(14.0 / 3.0)));
        assert_eq!(p.avg_throughput[3], (5, Some(2.5)));
        assert_eq!(pairs[0].vo_name, "other");
        assert_eq!((pairs[0].submitted, pairs[0].max_active), (1, None));

        // Leaving a terminal or running state takes the file out of the counters again.
        store
            .update_jobs(&ids, |_, files| {
                for f in files.iter_mut() {
                    f.file_state = FileState::Canceled;
                }
            })
            .unwrap();
        assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
        assert!(store.host_activity().unwrap().is_empty());
        let hour = store
            .link_stats("mock://s", "mock://d", Some("vo"), now - 3600)
            .unwrap();
        assert_eq!(hour, LinkStats::default());
    }

    #[test]
    fn optimizer_counters_and_links_follow_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Redb::open(dir.path()).unwrap();
        let now = 1_700_000_000 - 1_700_000_000 % 60;
        let files: Vec<File> = (0..6)
            .map(|i| {
                let mut f = file(i, "mock://s", "mock://d", FileState::Submitted);
                f.dest_surl = format!("mock://d/{i}");
                f
            })
            .collect();
        store.insert_jobs(&mut [(job("j"), files)]).unwrap();
        let links = store.optimizer_links().unwrap();
        assert_eq!((links.len(), links[0].queued, links[0].active), (1, 6, 0));
        store
            .update_jobs(&["j".to_string()], |_, files| {
                for f in files.iter_mut() {
                    match f.file_index {
                        0 | 1 => {
                            f.file_state = FileState::Finished;
                            f.finish_time = Some(now);
                            f.filesize = Some(if f.file_index == 0 { 100 } else { 300 });
                        }
                        2 => {
                            f.file_state = FileState::Failed;
                            f.finish_time = Some(now);
                            f.current_failures = 1;
                        }
                        3 => {
                            // Not recoverable: not counted.
                            f.file_state = FileState::Failed;
                            f.finish_time = Some(now);
                        }
                        4 => {
                            f.retry = 2;
                            f.retry_timestamp = Some(now + 10);
                        }
                        _ => f.file_state = FileState::Active,
                    }
                }
            })
            .unwrap();
        assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
        let s = store
            .optimizer_samples("mock://s", "mock://d", now)
            .unwrap();
        assert_eq!((s.ok, s.failed, s.retries, s.sized), (2, 2, 2, 2));
        assert_eq!((s.bytes, s.bytes_sq), (400, 100_000));
        assert_eq!(s.filesize_stats(), (200.0, 100.0));
        assert_eq!(
            store
                .optimizer_samples("mock://s", "mock://d", now + 60)
                .unwrap(),
            OptimizerSamples::default()
        );
        let links = store.optimizer_links().unwrap();
        assert_eq!((links[0].queued, links[0].active), (1, 1));
    }

    #[test]
    fn a_version_2_database_gets_the_optimizer_counters_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Redb::open(dir.path()).unwrap();
            let mut f = file(0, "mock://s", "mock://d", FileState::Finished);
            f.finish_time = Some(120);
            f.filesize = Some(10);
            store.insert_jobs(&mut [(job("j"), vec![f])]).unwrap();
            store
                .write(|tx| {
                    tx.delete_table(schema::LINK_MINUTE_OPTIMIZER)?;
                    tx.open_table(schema::META)?
                        .insert(schema::META_SCHEMA_VERSION, 2)?;
                    Ok(())
                })
                .unwrap();
        }
        let store = Redb::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::SCHEMA_VERSION);
        assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
        let s = store.optimizer_samples("mock://s", "mock://d", 0).unwrap();
        assert_eq!((s.ok, s.bytes), (1, 10));
    }

    #[test]
    fn a_version_1_database_gets_its_counters_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Redb::open(dir.path()).unwrap();
            let mut f = file(0, "mock://s", "mock://d", FileState::Failed);
            f.finish_time = Some(120);
            f.reason = Some("x".into());
            store.insert_jobs(&mut [(job("j"), vec![f])]).unwrap();
            // What a version 1 database looks like: no counters.
            store
                .write(|tx| {
                    tx.delete_table(schema::FILE_COUNT_BY_PAIR)?;
                    tx.delete_table(schema::LINK_MINUTE_STATS)?;
                    tx.delete_table(schema::LINK_MINUTE_ERRORS)?;
                    tx.open_table(schema::META)?
                        .insert(schema::META_SCHEMA_VERSION, 1)?;
                    Ok(())
                })
                .unwrap();
        }
        let store = Redb::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::SCHEMA_VERSION);
        assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
        let stats = store.link_stats("mock://s", "mock://d", None, 0).unwrap();
        assert_eq!(stats.frequent_error(), Some(("x", 1)));
    }
}
