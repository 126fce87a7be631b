//! The scheduler: which queued files start now.
//!
//! One cycle (on every wake-up, at least every `scheduling_interval`):
//! 1. queues = every (link, VO) with SUBMITTED files (`Store::submitted_queues`); what runs is
//!    counted in this process's memory, or across every node when the store is shared
//!    (`Store::shared_load`);
//! 2. per link, the free slots (the optimizer's decision, or the default, minus what runs) are
//!    dealt to its VOs by smooth weighted round-robin over the VO shares of `/config/shares`
//!    (weight 1 each when the link has none), so shares hold over successive cycles;
//! 3. per (link, VO) the highest-priority files, oldest first (`Store::queue_candidates`);
//! 4. dispatch round-robin over VOs, and over the links of each VO, one file at a time, within
//!    the per-SE inbound/outbound caps and the global cap;
//! 5. the chosen files are claimed in one transaction (SUBMITTED → READY), with the caps they
//!    were chosen under (a shared store holds them across nodes), and started.
//!
//! Staging requests (STAGING → STARTED) are started the same way under their own cap.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use super::{Engine, EngineError, agent, checksum::ChecksumMode};
use crate::{
    model::{
        job::{File, FileState, Job, JobType},
        time,
        transfer::{Caps, Claim, Link, QueueKey},
    },
    store::{Store, StoreError},
};

/// `DefaultBringOnlineTimeout`: seconds a bring-online request may take when the job gives no
/// `bring_online`.
pub const DEFAULT_BRING_ONLINE_TIMEOUT: u64 = 604_800;

/// A short pause after a wake-up so a burst of finishing transfers costs one cycle, not one each.
const WAKE_DEBOUNCE: Duration = Duration::from_millis(10);

/// What the scheduler remembers between cycles: the smooth weighted round-robin credits of the
/// VOs of each link.
#[derive(Default)]
struct Memory {
    credits: HashMap<Link, HashMap<String, i64>>,
    /// The same for the activities of each (link, VO) with activity shares.
    activity_credits: HashMap<(Link, String), HashMap<String, i64>>,
    /// Rotates the order links are served in, so no link always goes first.
    cycle: usize,
}

/// The scheduler loop; returns when the engine stops.
pub(super) async fn run(engine: Arc<Engine>) {
    let mut stopping = engine.stopping.clone();
    let mut memory = Memory::default();
    loop {
        if engine.is_stopping() {
            return;
        }
        let started = std::time::Instant::now();
        if let Err(e) = cycle(&engine, &mut memory).await {
            tracing::error!(error = %e, "scheduling cycle failed");
        }
        engine
            .settings
            .metrics
            .scheduler_cycle(started.elapsed().as_secs_f64());
        tokio::select! {
            _ = engine.wake.notified() => tokio::time::sleep(WAKE_DEBOUNCE).await,
            _ = tokio::time::sleep(engine.settings.scheduling_interval) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// One unit of work to start: a file, or all the queued files of a session-reuse job.
enum Pick {
    One(Box<File>),
    Reuse(Vec<File>),
}

impl Pick {
    fn file(&self) -> &File {
        match self {
            Pick::One(f) => f,
            Pick::Reuse(files) => &files[0],
        }
    }

    fn ids(&self) -> Vec<u64> {
        match self {
            Pick::One(f) => vec![f.file_id],
            Pick::Reuse(files) => files.iter().map(|f| f.file_id).collect(),
        }
    }
}

/// Counts of what runs now.
#[derive(Default)]
struct Load {
    total: usize,
    staging: usize,
    per_link: HashMap<Link, usize>,
    outbound: HashMap<String, usize>,
    inbound: HashMap<String, usize>,
}

fn load(engine: &Engine) -> Load {
    let mut l = Load::default();
    for r in engine.running().values() {
        if !r.counts {
            // Staging, archive monitoring, and the queued files of a reuse job.
            l.staging += 1;
            continue;
        }
        l.total += 1;
        *l.per_link
            .entry((r.source_se.clone(), r.dest_se.clone()))
            .or_default() += 1;
        *l.outbound.entry(r.source_se.clone()).or_default() += 1;
        *l.inbound.entry(r.dest_se.clone()).or_default() += 1;
    }
    l
}

async fn cycle(engine: &Arc<Engine>, memory: &mut Memory) -> Result<(), EngineError> {
    let store = engine.store.as_ref();
    let host = engine.settings.host.clone();
    if store.host_draining(&host).await? {
        return Ok(());
    }
    let mut load = load(engine);
    start_staging(engine, &load).await?;
    // `max_active` is this node's own limit: counted here. Link and storage caps hold across
    // every node sharing the store.
    let free_global = engine.settings.max_active.saturating_sub(load.total);
    if free_global == 0 {
        return Ok(());
    }
    let queues = store.submitted_queues().await?;
    if queues.is_empty() {
        return Ok(());
    }
    let mut links: BTreeMap<Link, Vec<String>> = BTreeMap::new();
    for q in queues {
        links
            .entry((q.source_se, q.dest_se))
            .or_default()
            .push(q.vo_name);
    }
    if let Some(shared) = store.shared_load().await? {
        load.per_link = shared.per_link;
        load.outbound = shared.outbound;
        load.inbound = shared.inbound;
    }
    let policy = {
        let keys: Vec<Link> = links.keys().cloned().collect();
        let defaults = (
            engine.settings.default_link_active,
            engine.settings.default_se_active,
        );
        Policy::load(store, &keys, defaults).await?
    };

    // 2-3: per link, deal the free slots to VOs and fetch their files.
    let mut link_order: Vec<Link> = links.keys().cloned().collect();
    let n = link_order.len();
    link_order.rotate_left(memory.cycle % n);
    memory.cycle = memory.cycle.wrapping_add(1);
    let now = time::now();
    // VO → link → picks, in FIFO order.
    let mut by_vo: BTreeMap<String, Vec<VecDeque<Pick>>> = BTreeMap::new();
    for link in link_order {
        let vos = &links[&link];
        let cap = policy.link_cap(&link);
        let running = load.per_link.get(&link).copied().unwrap_or(0);
        let free = cap.saturating_sub(running).min(free_global);
        if free == 0 {
            continue;
        }
        let weights = policy.vo_weights(&link, vos);
        let credits = memory.credits.entry(link.clone()).or_default();
        let dealt = deal(free, &weights, credits);
        for (vo, slots) in dealt {
            if slots == 0 {
                continue;
            }
            let key = QueueKey {
                source_se: link.0.clone(),
                dest_se: link.1.clone(),
                vo_name: vo.clone(),
            };
            let credit_key = (link.clone(), vo.clone());
            let credits = memory.activity_credits.entry(credit_key).or_default();
            let picks = fetch(store, &key, slots, now, credits).await?;
            if !picks.is_empty() {
                by_vo.entry(vo).or_default().push(picks.into());
            }
        }
    }

    // 4: round-robin over VOs, and over each VO's links, one pick at a time.
    let mut chosen: Vec<Pick> = Vec::new();
    let mut budget = free_global;
    let mut link_left: HashMap<Link, usize> = HashMap::new();
    loop {
        let mut progressed = false;
        for lists in by_vo.values_mut() {
            // The first list with something left; rotate so the next round takes the next link.
            while let Some(mut list) = lists.first_mut().map(std::mem::take) {
                lists.remove(0);
                let Some(pick) = list.pop_front() else {
                    continue;
                };
                if !list.is_empty() {
                    lists.push(list);
                }
                let f = pick.file();
                let link = (f.source_se.clone(), f.dest_se.clone());
                let left = link_left.entry(link.clone()).or_insert_with(|| {
                    policy
                        .link_cap(&link)
                        .saturating_sub(load.per_link.get(&link).copied().unwrap_or(0))
                });
                let out = load.outbound.get(&link.0).copied().unwrap_or(0);
                let inb = load.inbound.get(&link.1).copied().unwrap_or(0);
                if budget == 0
                    || *left == 0
                    || out >= policy.se_outbound(&link.0)
                    || inb >= policy.se_inbound(&link.1)
                {
                    continue;
                }
                *left -= 1;
                budget -= 1;
                *load.outbound.entry(link.0.clone()).or_default() += 1;
                *load.inbound.entry(link.1.clone()).or_default() += 1;
                *load.per_link.entry(link).or_default() += 1;
                chosen.push(pick);
                progressed = true;
                break;
            }
        }
        if !progressed || budget == 0 {
            break;
        }
    }
    if chosen.is_empty() {
        return Ok(());
    }

    // 5: claim and start.
    let ids: Vec<u64> = chosen.iter().flat_map(Pick::ids).collect();
    let claim = Claim {
        file_ids: ids,
        host,
        now: time::now(),
        caps: policy.caps_of(chosen.iter().map(|p| {
            let f = p.file();
            (f.source_se.clone(), f.dest_se.clone())
        })),
    };
    let won = store.claim(&claim).await?;
    let mut reuse: BTreeMap<String, (Job, Vec<File>)> = BTreeMap::new();
    for (job, file) in won {
        if job.job_type == JobType::SessionReuse {
            reuse
                .entry(job.job_id.clone())
                .or_insert_with(|| (job, Vec::new()))
                .1
                .push(file);
        } else {
            engine.spawn_transfer(job, file);
        }
    }
    for (_, (job, mut files)) in reuse {
        files.sort_by_key(|f| f.file_id);
        engine.spawn_reuse(job, files);
    }
    Ok(())
}

/// Up to `slots` picks of a queue: plain files first-come first-served (dealt among
/// activities by the VO's activity shares when it has some in force), with session-reuse jobs
/// taking one slot each for all their queued files.
async fn fetch(
    store: &dyn Store,
    key: &QueueKey,
    slots: usize,
    now: i64,
    activity_credits: &mut HashMap<String, i64>,
) -> Result<Vec<Pick>, StoreError> {
    let shares = store
        .activity_shares(&key.vo_name)
        .await?
        .filter(|(weights, active)| *active && !weights.is_empty());
    let plain = match shares {
        None => store.queue_candidates(key, slots, now, false).await?,
        Some((weights, _)) => {
            let pool = store
                .queue_candidates(
                    key,
                    slots.saturating_mul(ACTIVITY_LOOKAHEAD).max(slots + 100),
                    now,
                    false,
                )
                .await?;
            by_activity(pool, &weights, slots, activity_credits)
        }
    };
    let mut picks: Vec<Pick> = plain
        .into_iter()
        .map(|(_, f)| Pick::One(Box::new(f)))
        .collect();
    if picks.len() < slots {
        let mut jobs: BTreeMap<String, Vec<File>> = BTreeMap::new();
        for (job, file) in store
            .queue_candidates(key, MAX_REUSE_FILES, now, true)
            .await?
        {
            jobs.entry(job.job_id).or_default().push(file);
        }
        let mut reuse: Vec<Pick> = jobs.into_values().map(Pick::Reuse).collect();
        reuse.sort_by_key(|p| p.file().file_id);
        picks.extend(reuse.into_iter().take(slots - picks.len()));
        picks.sort_by_key(|p| p.file().file_id);
    }
    Ok(picks)
}

/// Candidates read per slot when a VO has activity shares, so that every activity with queued
/// files is seen (activities are not indexed separately).
const ACTIVITY_LOOKAHEAD: usize = 8;

/// Deal `slots` among the activities present in `pool` by their configured weights (engine
/// spec §2.3 step 4): names compare lower-cased, activities without a weight fold into
/// `default`, each activity keeps its files' FIFO order, and an activity leaves the draw when
/// it has nothing left. Weights without any present activity give plain FIFO.
fn by_activity(
    pool: Vec<(Job, File)>,
    weights: &[(String, f64)],
    slots: usize,
    credits: &mut HashMap<String, i64>,
) -> Vec<(Job, File)> {
    let weight = |name: &str| {
        weights
            .iter()
            .find(|(a, _)| a.to_lowercase() == name)
            .map(|(_, w)| (w * 1000.0).round().max(0.0) as i64)
    };
    let mut groups: BTreeMap<String, VecDeque<(Job, File)>> = BTreeMap::new();
    for (job, file) in pool {
        let mut name = file.activity.to_lowercase();
        if name.is_empty() || weight(&name).is_none() {
            name = "default".to_string();
        }
        groups.entry(name).or_default().push_back((job, file));
    }
    let mut out = Vec::with_capacity(slots);
    while out.len() < slots {
        let present: Vec<(String, i64)> = groups
            .iter()
            .filter(|(_, files)| !files.is_empty())
            .map(|(name, _)| (name.clone(), weight(name).unwrap_or(0)))
            .collect();
        if present.is_empty() {
            break;
        }
        let chosen = if present.iter().all(|(_, w)| *w == 0) {
            // Nothing weighted is queued: oldest first.
            groups
                .iter()
                .filter_map(|(n, f)| f.front().map(|x| (x.1.file_id, n.clone())))
                .min()
                .map(|(_, n)| n)
        } else {
            deal(1, &present, credits)
                .into_iter()
                .find(|(_, n)| *n > 0)
                .map(|(name, _)| name)
        };
        let Some(name) = chosen else { break };
        if let Some(next) = groups.get_mut(&name).and_then(VecDeque::pop_front) {
            out.push(next);
        }
    }
    out.sort_by_key(|(_, f)| f.file_id);
    out
}

/// Files of session-reuse jobs read per queue and cycle (the reference's bound on a reuse job).
const MAX_REUSE_FILES: usize = 1000;

/// Smooth weighted round-robin: deal `slots` among `weights` (VO, weight > 0), carrying each
/// VO's credit over to the next cycle so the shares hold over time.
fn deal(
    slots: usize,
    weights: &[(String, i64)],
    credits: &mut HashMap<String, i64>,
) -> Vec<(String, usize)> {
    let total: i64 = weights.iter().map(|(_, w)| *w).sum();
    let mut dealt: Vec<(String, usize)> = weights.iter().map(|(v, _)| (v.clone(), 0)).collect();
    if total <= 0 {
        return dealt;
    }
    credits.retain(|vo, _| weights.iter().any(|(v, _)| v == vo));
    for _ in 0..slots {
        for (vo, w) in weights {
            *credits.entry(vo.clone()).or_default() += w;
        }
        let Some((best, _)) = weights
            .iter()
            .enumerate()
            .max_by_key(|(i, (vo, _))| (credits[vo], std::cmp::Reverse(*i)))
        else {
            break;
        };
        *credits.entry(weights[best].0.clone()).or_default() -= total;
        dealt[best].1 += 1;
    }
    dealt
}

/// Limits read once per cycle.
struct Policy {
    link_caps: HashMap<Link, usize>,
    shares: HashMap<Link, Vec<(String, i64)>>,
    se_caps: HashMap<String, (usize, usize)>,
}

impl Policy {
    async fn load(
        store: &dyn Store,
        links: &[Link],
        defaults: (usize, usize),
    ) -> Result<Policy, StoreError> {
        let mut link_caps = HashMap::new();
        let mut shares = HashMap::new();
        let mut se_caps = HashMap::new();
        for link in links {
            // The optimizer's decision for the link, or the default until it has one.
            let cap = store
                .optimizer_current(&link.0, &link.1)
                .await?
                .map(|c| c.active)
                .filter(|a| *a > 0)
                .map_or(defaults.0, |a| a as usize);
            link_caps.insert(link.clone(), cap);
            shares.insert(link.clone(), store.shares_for_link(&link.0, &link.1).await?);
            for se in [&link.0, &link.1] {
                if se_caps.contains_key(se) {
                    continue;
                }
                let c = store.se_config(se).await?;
                let cap = |v: Option<i64>| v.filter(|v| *v > 0).map_or(defaults.1, |v| v as usize);
                se_caps.insert(
                    se.clone(),
                    (cap(c.inbound_max_active), cap(c.outbound_max_active)),
                );
            }
        }
        Ok(Policy {
            link_caps,
            shares,
            se_caps,
        })
    }

    /// The caps of `links` (with their storages), for the claim.
    fn caps_of(&self, links: impl Iterator<Item = Link>) -> Caps {
        let mut caps = Caps::default();
        for link in links {
            caps.outbound
                .insert(link.0.clone(), self.se_outbound(&link.0));
            caps.inbound
                .insert(link.1.clone(), self.se_inbound(&link.1));
            caps.per_link.insert(link.clone(), self.link_cap(&link));
        }
        caps
    }

    fn link_cap(&self, link: &Link) -> usize {
        self.link_caps.get(link).copied().unwrap_or(0)
    }

    /// VO weights on a link (§2.2): every VO 1 when the link has no shares; otherwise the
    /// configured weight, and VOs without one split the `public` weight (0 without it).
    fn vo_weights(&self, link: &Link, vos: &[String]) -> Vec<(String, i64)> {
        let configured = self.shares.get(link).map(Vec::as_slice).unwrap_or(&[]);
        if configured.is_empty() {
            return vos.iter().map(|v| (v.clone(), 1)).collect();
        }
        let weight_of = |vo: &str| configured.iter().find(|(v, _)| v == vo).map(|(_, w)| *w);
        let public = weight_of("public").unwrap_or(0);
        let unlisted = vos.iter().filter(|v| weight_of(v).is_none()).count().max(1) as i64;
        // Weights are integers; scale so that the public share splits without rounding to 0.
        vos.iter()
            .map(|v| match weight_of(v) {
                Some(w) => (v.clone(), w.max(0) * unlisted),
                None => (v.clone(), public.max(0)),
            })
            .collect()
    }

    fn se_outbound(&self, se: &str) -> usize {
        self.se_caps.get(se).map_or(usize::MAX, |c| c.1)
    }

    fn se_inbound(&self, se: &str) -> usize {
        self.se_caps.get(se).map_or(usize::MAX, |c| c.0)
    }
}

/// What the agent needs to know about one transfer.
pub(super) fn transfer_spec(
    job: &Job,
    file: &File,
    vo: &crate::model::config::EffectiveServerConfig,
) -> agent::TransferSpec {
    let params = job.internal_job_params.as_deref().unwrap_or("");
    let param = |name: &str| {
        params
            .split(',')
            .filter_map(|p| p.split_once(':'))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    };
    let strict = params.split(',').any(|p| p == "strict");
    // The last hop ends at the job's destination storage; earlier ones are intermediate.
    let last_hop = job.dest_se.as_deref() == Some(file.dest_se.as_str());
    let overwrite = match job.overwrite_flag.as_deref() {
        Some("Y") => true,
        Some("R") => file.retry > 0,
        Some("M") | Some("Q") => job.job_type == JobType::Multihop && !last_hop,
        _ => false,
    };
    agent::TransferSpec {
        job_id: job.job_id.clone(),
        file_id: file.file_id,
        source: file.source_surl.clone(),
        destination: file.dest_surl.clone(),
        user_filesize: if file.user_filesize > 0.0 {
            file.user_filesize as u64
        } else {
            0
        },
        checksum: file.checksum.clone(),
        checksum_mode: ChecksumMode::from_method(job.checksum_method.as_deref().unwrap_or("")),
        overwrite,
        strict_copy: strict,
        // A job's own timeout wins; else the VO's global_timeout; else derived from the size.
        timeout: param("timeout").unwrap_or(vo.global_timeout.max(0) as u64),
        sec_per_mb: vo.sec_per_mb.max(0) as u64,
        nostreams: param("nostreams").unwrap_or(0) as u32,
        bringonline_token: file.bringonline_token.clone(),
        skip_evict: false,
        // The engine adds the credential or tokens and the copy mode (store reads) before
        // running it.
        credential: None,
        tokens: None,
        copy_mode: Default::default(),
        disable_fallback: false,
        no_streaming: vo.no_streaming,
        dst_file_report: job.dst_file_report,
    }
}

/// Start bring-online requests for STAGING files, within `max_staging`: grouped per storage
/// and credential in bulks of `staging_bulk_size`; a group smaller than a bulk waits
/// `staging_wait` for more files (the reference's `StagingWaitingFactor`) before it goes.
async fn start_staging(engine: &Arc<Engine>, load: &Load) -> Result<(), EngineError> {
    let free = engine.settings.max_staging.saturating_sub(load.staging);
    if free == 0 {
        return Ok(());
    }
    let store = engine.store.as_ref();
    let waiting = store.files_in_state(FileState::Staging, free).await?;
    let settings = &engine.settings.tape;
    let now = std::time::Instant::now();
    let mut ready = Vec::new();
    {
        let mut waits = engine
            .staging_wait
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let groups = super::tape::group(waiting, |f| &f.source_surl, settings.staging_bulk_size);
        let present: Vec<super::tape::GroupKey> = groups.iter().map(|(k, _)| k.clone()).collect();
        waits.retain(|k, _| present.contains(k));
        for (key, rows) in groups {
            if rows.len() < settings.staging_bulk_size && !settings.staging_wait.is_zero() {
                let until = *waits
                    .entry(key.clone())
                    .or_insert(now + settings.staging_wait);
                if now < until {
                    continue;
                }
            }
            waits.remove(&key);
            ready.push(rows);
        }
    }
    for rows in ready {
        let claim = Claim {
            file_ids: rows.iter().map(|(_, f)| f.file_id).collect(),
            host: engine.settings.host.clone(),
            now: time::now(),
            // Bring-online requests are bounded by `max_staging`, not by link caps.
            caps: Caps::default(),
        };
        let won = store.claim(&claim).await?;
        if !won.is_empty() {
            engine.spawn_stage_request(won, None);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_shares_over_cycles() {
        let weights = vec![("atlas".to_string(), 3), ("cms".to_string(), 1)];
        let mut credits = HashMap::new();
        let mut totals = HashMap::<String, usize>::new();
        for _ in 0..40 {
            for (vo, n) in deal(1, &weights, &mut credits) {
                *totals.entry(vo).or_default() += n;
            }
        }
        assert_eq!(totals["atlas"], 30);
        assert_eq!(totals["cms"], 10);
        let dealt = deal(8, &weights, &mut HashMap::new());
        assert_eq!(dealt, vec![("atlas".into(), 6), ("cms".into(), 2)]);
    }

    #[test]
    fn activities_share_the_slots_by_weight_and_unknown_ones_fold_into_default() {
        use crate::model::{
            job::FileState,
            job::fixtures::{file, job},
        };
        let j = job(JobType::Normal);
        let pool: Vec<(Job, File)> = (0..40u64)
            .map(|i| {
                let mut f = file(i, i as u32, FileState::Submitted);
                f.activity = match i % 3 {
                    0 => "Production".into(),
                    1 => "whatever".into(),
                    _ => "".into(),
                };
                (j.clone(), f)
            })
            .collect();
        let weights = vec![
            ("production".to_string(), 0.75),
            ("default".to_string(), 0.25),
        ];
        let mut credits = HashMap::new();
        let got = by_activity(pool.clone(), &weights, 8, &mut credits);
        let production = got
            .iter()
            .filter(|(_, f)| f.activity == "Production")
            .count();
        assert_eq!((got.len(), production), (8, 6));
        // FIFO inside each activity.
        assert_eq!(got[0].1.file_id, 0);
        // An activity with nothing queued leaves its slots to the others.
        let only_default: Vec<(Job, File)> = pool
            .into_iter()
            .filter(|(_, f)| f.activity != "Production")
            .collect();
        assert_eq!(
            by_activity(only_default, &weights, 5, &mut credits).len(),
            5
        );
    }

    #[test]
    fn a_zero_share_gets_nothing() {
        let weights = vec![("atlas".to_string(), 1), ("cms".to_string(), 0)];
        let dealt = deal(5, &weights, &mut HashMap::new());
        assert_eq!(dealt, vec![("atlas".into(), 5), ("cms".into(), 0)]);
    }
}
