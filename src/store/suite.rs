//! The store test suite, written against the [`Store`] interface so that every backend runs the
//! same tests: each test is an `async fn(&dyn Store)` on an empty store, and `store_suite!`
//! turns the list into `#[tokio::test]`s for one backend given the expression that opens a
//! fresh store (a guard that keeps it alive, and the store). The embedded backend runs it at
//! the end of this file; a second backend adds one `store_suite!` line.
//!
//! Tests of one backend's internals (redb's indexes and counters, migrations, file modes) stay
//! beside that backend's code.

use std::sync::Arc;

use super::{RedbStore, Store};
use crate::model::{
    audit::AuditEntry,
    ban::{ANY_VO, BanStatus, DnBan, SeBan},
    change::JobEdit,
    config::{
        ANY, ActivityShare, EffectiveServerConfig, FieldValue, LinkConfig, OperationLimit,
        SeConfig, SeUpdate, ShareConfig,
    },
    credential::{NewCredential, PendingRequest, StoreOutcome},
    job::{
        File, FileState, InsertConflict, Job, JobChange, JobState, JobType,
        fixtures::{file, job},
    },
    lifecycle::{self, Failure, Success},
    monitor::{ErrorClass, JobListQuery, RowFilter, RowKey, TransferOrder, TransferQuery},
    optimizer::{Decision, EvolutionEntry, LinkFilter},
    token::{NewToken, Secret, TokenChange},
    transfer::{Caps, Claim, Event, Outcome},
};

/// Generate one `#[tokio::test]` per suite test, each on a fresh store from `$open`.
macro_rules! store_suite {
    ($open:expr) => {
        store_suite!(@each $open;
            bans_and_audit_round_trip,
            hosts_beat_and_drain,
            server_config_resolves_vo_then_global,
            links_resolve_from_exact_to_default,
            shares_need_their_link,
            storages_merge_with_the_global_row_and_limits_are_per_vo,
            activity_shares_round_trip,
            the_global_queue_timeout_cancels_only_jobs_of_vos_past_their_limit,
            a_claim_is_won_once_and_a_failed_attempt_is_retried_then_failed,
            a_crash_requeues_running_transfers_without_an_attempt_until_the_poison_limit,
            evolution_reads_by_link_and_time_range_and_expires,
            grants_and_bans_make_the_access_of_a_dn,
            submissions_refuse_a_duplicate_job_and_a_queued_destination,
            cancel_and_priority_leave_terminal_jobs_alone,
            file_cancels_and_force_start_answer_per_file,
            a_credential_is_stored_against_its_pending_request,
            tokens_are_stored_once_and_keep_their_exchange,
            monitoring_counts_follow_every_change_of_a_file,
            monitoring_windows_leave_out_what_ended_before_them,
            monitoring_listings_page_through_jobs_and_transfers,
        );
    };
    (@each $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $open;
                super::$name(store.as_ref()).await;
            }
        )*
    };
}

fn audit(action: &str) -> AuditEntry {
    AuditEntry {
        datetime: 1,
        dn: "/CN=admin".into(),
        config: "c".into(),
        action: action.into(),
    }
}

fn link(source: &str, destination: &str, name: &str, max: i64) -> LinkConfig {
    LinkConfig {
        source: source.into(),
        destination: destination.into(),
        symbolicname: name.into(),
        min_active: 1,
        max_active: max,
        optimizer_mode: None,
        tcp_buffer_size: None,
        nostreams: None,
        no_delegation: None,
    }
}

/// A one-file job of `vo` submitted at `submit_time`.
fn named(id: &str, submit_time: i64, vo: &str) -> (Job, Vec<File>) {
    let mut j = job(JobType::Normal);
    j.job_id = id.into();
    j.submit_time = submit_time;
    j.vo_name = vo.into();
    let mut f = file(0, 0, FileState::Submitted);
    f.job_id = id.into();
    f.vo_name = vo.into();
    f.dest_surl = format!("mock://dst/{id}");
    (j, vec![f])
}

fn claim(id: u64, now: i64) -> Claim {
    Claim {
        file_ids: vec![id],
        host: "h".into(),
        now,
        caps: Caps::default(),
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

fn actives(rows: &[EvolutionEntry]) -> Vec<i64> {
    rows.iter().map(|e| e.active).collect()
}

pub(crate) async fn bans_and_audit_round_trip(store: &dyn Store) {
    let ban = SeBan {
        se: "mock://a".into(),
        vo: "vo".into(),
        message: String::new(),
        addition_time: 1,
        admin_dn: "/CN=admin".into(),
        status: BanStatus::Wait,
    };
    assert!(
        store
            .ban_se(&ban, &audit("ban-se"))
            .await
            .unwrap()
            .is_empty()
    );
    let all = SeBan {
        vo: ANY_VO.into(),
        se: "mock://b".into(),
        status: BanStatus::WaitAllowSubmit,
        ..ban.clone()
    };
    store.ban_se(&all, &audit("ban-se")).await.unwrap();
    assert_eq!(
        store.se_ban_status("mock://a", "vo").await.unwrap(),
        Some(BanStatus::Wait)
    );
    assert_eq!(
        store.se_ban_status("mock://a", "other").await.unwrap(),
        None
    );
    assert_eq!(
        store.se_ban_status("mock://b", "other").await.unwrap(),
        Some(BanStatus::WaitAllowSubmit)
    );
    assert_eq!(store.se_bans_for_vo("vo").await.unwrap().len(), 2);
    assert!(
        store
            .unban_se("mock://a", "vo", &audit("unban-se"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .unban_se("mock://a", "vo", &audit("unban-se"))
            .await
            .unwrap()
    );
    let dn = DnBan {
        dn: "/CN=bad".into(),
        message: "m".into(),
        addition_time: 2,
        admin_dn: "/CN=admin".into(),
    };
    assert!(
        store
            .ban_dn(&dn, &audit("ban-dn"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.access("/CN=bad").await.unwrap().banned);
    assert_eq!(store.dn_bans().await.unwrap(), vec![dn]);
    assert!(store.unban_dn("/CN=bad", &audit("unban-dn")).await.unwrap());
    assert!(!store.access("/CN=bad").await.unwrap().banned);
    let actions: Vec<String> = store
        .audit_entries(3)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, vec!["unban-dn", "ban-dn", "unban-se"]);
    assert_eq!(store.audit_entries(100).await.unwrap().len(), 6);
    assert!(store.check().await.unwrap().is_empty());
}

pub(crate) async fn hosts_beat_and_drain(store: &dyn Store) {
    store.beat_host("a", "fts_server", 1).await.unwrap();
    store.beat_host("a", "fts_bringonline", 1).await.unwrap();
    store.beat_host("b", "fts_server", 1).await.unwrap();
    assert!(!store.set_drain("zz", true, &audit("drain")).await.unwrap());
    assert!(store.audit_entries(10).await.unwrap().is_empty());
    assert!(store.set_drain("a", true, &audit("drain")).await.unwrap());
    assert!(store.host_draining("a").await.unwrap());
    assert!(!store.host_draining("b").await.unwrap());
    // A heartbeat keeps the drain flag.
    store.beat_host("a", "fts_server", 9).await.unwrap();
    let hosts = store.hosts().await.unwrap();
    assert_eq!(hosts.len(), 3);
    assert!(hosts.iter().filter(|h| h.hostname == "a").all(|h| h.drain));
    assert_eq!(hosts[1].beat, 9);
    assert_eq!(store.audit_entries(10).await.unwrap().len(), 1);
}

pub(crate) async fn server_config_resolves_vo_then_global(store: &dyn Store) {
    assert_eq!(
        store.server_config("dteam").await.unwrap(),
        EffectiveServerConfig::default()
    );
    let stored = store
        .set_server_config(
            ANY,
            &vec![
                ("retry".into(), FieldValue::Int(3)),
                ("sec_per_mb".into(), FieldValue::Int(2)),
            ],
            &audit("set-globals"),
        )
        .await
        .unwrap();
    assert_eq!((stored.retry, stored.sec_per_mb), (Some(3), Some(2)));
    store
        .set_server_config(
            "dteam",
            &vec![("retry".into(), FieldValue::Int(42))],
            &audit("set-globals"),
        )
        .await
        .unwrap();
    // The audit records the stored row.
    let entries = store.audit_entries(1).await.unwrap();
    assert!(entries[0].config.contains("\"retry\":42"), "{entries:?}");
    let c = store.server_config("dteam").await.unwrap();
    assert_eq!((c.retry, c.sec_per_mb), (42, 2));
    assert_eq!(store.server_config("atlas").await.unwrap().retry, 3);
    assert!(
        store
            .delete_server_config("dteam", &audit("delete-globals"))
            .await
            .unwrap()
    );
    assert_eq!(store.server_config("dteam").await.unwrap().retry, 3);
}

pub(crate) async fn links_resolve_from_exact_to_default(store: &dyn Store) {
    assert_eq!(
        store.link_config("s", "d").await.unwrap(),
        LinkConfig::default_link()
    );
    let a = audit("link");
    store
        .set_link("any", &link(ANY, ANY, "any", 10), &vec![], &a)
        .await
        .unwrap();
    store
        .set_link("to-d", &link(ANY, "d", "to-d", 20), &vec![], &a)
        .await
        .unwrap();
    store
        .set_link("from-s", &link("s", ANY, "from-s", 30), &vec![], &a)
        .await
        .unwrap();
    store
        .set_link("s-d", &link("s", "d", "s-d", 40), &vec![], &a)
        .await
        .unwrap();
    assert_eq!(store.link_config("s", "d").await.unwrap().max_active, 40);
    assert_eq!(store.link_config("s", "x").await.unwrap().max_active, 30);
    assert_eq!(store.link_config("x", "d").await.unwrap().max_active, 20);
    assert_eq!(store.link_config("x", "y").await.unwrap().max_active, 10);
    // Renaming the ends of a named link moves it.
    store
        .set_link(
            "s-d",
            &link("not", "used", "s-d", 1),
            &vec![("destination".into(), FieldValue::Str("e".into()))],
            &a,
        )
        .await
        .unwrap();
    assert_eq!(store.link_config("s", "d").await.unwrap().max_active, 30);
    assert_eq!(
        store
            .link_by_name("s-d")
            .await
            .unwrap()
            .unwrap()
            .destination,
        "e"
    );
    assert!(store.delete_link("s-d", &a).await.unwrap());
    assert!(!store.delete_link("s-d", &a).await.unwrap());
    assert_eq!(store.link_configs().await.unwrap().len(), 3);
}

pub(crate) async fn shares_need_their_link(store: &dyn Store) {
    let share = ShareConfig {
        source: "gsiftp://s".into(),
        destination: "gsiftp://d".into(),
        vo: "dteam".into(),
        share: 80,
    };
    assert!(!store.set_share(&share, &audit("share-set")).await.unwrap());
    assert!(store.audit_entries(10).await.unwrap().is_empty());
    store
        .set_link(
            "l",
            &link("gsiftp://s", "gsiftp://d", "l", 5),
            &vec![],
            &audit("link"),
        )
        .await
        .unwrap();
    assert!(store.set_share(&share, &audit("share-set")).await.unwrap());
    let atlas = ShareConfig {
        vo: "atlas".into(),
        share: 20,
        ..share.clone()
    };
    assert!(store.set_share(&atlas, &audit("share-set")).await.unwrap());
    assert_eq!(
        store
            .shares_for_link("gsiftp://s", "gsiftp://d")
            .await
            .unwrap(),
        vec![("atlas".to_string(), 20), ("dteam".to_string(), 80)]
    );
    assert!(
        store
            .shares_for_link("gsiftp://s", "x")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .delete_share("gsiftp://s", "gsiftp://d", "atlas", &audit("share-delete"))
            .await
            .unwrap()
    );
    assert_eq!(store.shares().await.unwrap(), vec![share]);
}

pub(crate) async fn storages_merge_with_the_global_row_and_limits_are_per_vo(store: &dyn Store) {
    assert_eq!(
        store.se_config("s").await.unwrap().inbound_max_active,
        Some(200)
    );
    let limit = |vo: &str, op: &str, n| OperationLimit {
        vo_name: vo.into(),
        host: "s".into(),
        operation: op.into(),
        concurrent_ops: n,
    };
    let update = SeUpdate {
        storage: "s".into(),
        se_info: Some(SeConfig {
            ipv6: Some(1),
            ..Default::default()
        }),
        limits: vec![limit("atlas", "staging", 32), limit("dteam", "delete", 10)],
    };
    let global = SeUpdate {
        storage: ANY.into(),
        se_info: Some(SeConfig {
            outbound_max_active: Some(7),
            ..Default::default()
        }),
        limits: vec![],
    };
    store
        .set_se_configs(&[update, global], &[audit("set-se-config")])
        .await
        .unwrap();
    let s = store.se_config("s").await.unwrap();
    assert_eq!(
        (s.ipv6, s.outbound_max_active, s.inbound_max_active),
        (Some(1), Some(7), Some(200))
    );
    let (_, limits) = store.se_configs(Some("s")).await.unwrap();
    let mut limits: Vec<(String, String, i64)> = limits
        .into_iter()
        .map(|l| (l.vo_name, l.operation, l.concurrent_ops))
        .collect();
    limits.sort();
    assert_eq!(
        limits,
        vec![
            ("atlas".into(), "staging".into(), 32),
            ("dteam".into(), "delete".into(), 10)
        ]
    );
    // A limit of 0 removes it; an update without se_info keeps the settings.
    let update = SeUpdate {
        storage: "s".into(),
        se_info: None,
        limits: vec![limit("atlas", "staging", 0)],
    };
    store.set_se_configs(&[update], &[]).await.unwrap();
    let (_, limits) = store.se_configs(Some("s")).await.unwrap();
    assert_eq!(limits.len(), 1, "{limits:?}");
    assert_eq!(store.se_config("s").await.unwrap().ipv6, Some(1));
    store
        .delete_se_config("s", &audit("delete-se-config"))
        .await
        .unwrap();
    let (ses, limits) = store.se_configs(Some("s")).await.unwrap();
    assert!(ses.is_empty() && limits.is_empty());
    assert_eq!(store.se_configs(None).await.unwrap().0.len(), 1);
}

pub(crate) async fn activity_shares_round_trip(store: &dyn Store) {
    assert_eq!(store.activity_shares("dteam").await.unwrap(), None);
    let row = ActivityShare {
        vo: "dteam".into(),
        activity_share: r#"[{"A": 1}, {"B": 0.5}]"#.into(),
        active: false,
    };
    store
        .set_activity_share(&row, &audit("activity-share"))
        .await
        .unwrap();
    assert_eq!(
        store.activity_shares("dteam").await.unwrap(),
        Some((vec![("A".into(), 1.0), ("B".into(), 0.5)], false))
    );
    assert!(
        store
            .delete_activity_share("dteam", &audit("activity-share"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_activity_share("dteam", &audit("activity-share"))
            .await
            .unwrap()
    );
    assert_eq!(store.audit_entries(10).await.unwrap().len(), 2);
}

pub(crate) async fn the_global_queue_timeout_cancels_only_jobs_of_vos_past_their_limit(
    store: &dyn Store,
) {
    let now = 100_000;
    for j in [
        named("old-a", now - 7200, "a"),
        named("old-b", now - 7200, "b"),
        named("new-a", now - 60, "a"),
    ] {
        store.submit(j).await.unwrap().unwrap();
    }
    // VO a: one hour; VO b: no limit.
    store
        .set_server_config(
            "a",
            &vec![("max_time_queue".into(), FieldValue::Int(1))],
            &audit("set-globals"),
        )
        .await
        .unwrap();
    let canceled = store.expire_global(now).await.unwrap();
    assert_eq!(canceled, vec!["old-a".to_string()]);
    let (j, f) = store.job_with_files("old-a").await.unwrap().unwrap();
    assert_eq!(j.job_state, JobState::Canceled);
    assert_eq!(
        f[0].reason.as_deref(),
        Some(lifecycle::GLOBAL_QUEUE_TIMEOUT_REASON)
    );
    assert_eq!(
        store.job("old-b").await.unwrap().unwrap().job_state,
        JobState::Submitted
    );
    assert_eq!(
        store.job("new-a").await.unwrap().unwrap().job_state,
        JobState::Submitted
    );
    assert_eq!(store.check().await.unwrap(), Vec::<String>::new());
}

pub(crate) async fn a_claim_is_won_once_and_a_failed_attempt_is_retried_then_failed(
    store: &dyn Store,
) {
    let (j, mut files) = named("j", 1, "vo");
    let mut j = j;
    j.retry = 1;
    files[0].file_id = 0;
    store.submit((j, files)).await.unwrap().unwrap();
    let queue = store.submitted_queues().await.unwrap();
    assert_eq!(queue.len(), 1);
    let id = store
        .queue_candidates(&queue[0], 10, 5, false)
        .await
        .unwrap()[0]
        .1
        .file_id;
    assert_eq!(store.claim(&claim(id, 5)).await.unwrap().len(), 1);
    assert!(
        store.claim(&claim(id, 5)).await.unwrap().is_empty(),
        "claimed twice"
    );
    assert!(store.submitted_queues().await.unwrap().is_empty());
    let failure = Failure {
        reason: "TRANSFER [110] slow".into(),
        scope: "TRANSFER".into(),
        phase: "TRANSFER".into(),
        class: "CONNECTION_TIMED_OUT".into(),
        recoverable: true,
        dst_file: None,
    };
    let events = [Event::Failed {
        file_id: id,
        failure: failure.clone(),
    }];
    let retry = |t| store.apply_events(&events, "h", t);
    assert_eq!(retry(6).await.unwrap()[0].outcome, Outcome::Retried(1));
    // Not before its delay.
    assert!(
        store
            .queue_candidates(&queue[0], 10, 7, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .queue_candidates(&queue[0], 10, 6 + 120, false)
            .await
            .unwrap()
            .len(),
        1
    );
    store.claim(&claim(id, 200)).await.unwrap();
    assert_eq!(
        retry(201).await.unwrap()[0].outcome,
        Outcome::Moved(FileState::Failed)
    );
    assert_eq!(
        store.job("j").await.unwrap().unwrap().job_state,
        JobState::Failed
    );
    assert_eq!(store.file_retries(id).await.unwrap().len(), 1);
    // A late report changes nothing.
    assert_eq!(
        retry(202).await.unwrap()[0].outcome,
        Outcome::Ignored(FileState::Failed)
    );
    assert_eq!(store.check().await.unwrap(), Vec::<String>::new());
}

/// Issue 14: transfers running when the service died go back to the queue without costing an
/// attempt (a job without retries still gets its transfer), unless they keep being interrupted:
/// the `MAX_INTERRUPTIONS`-th crash fails them. A graceful hand-back (SIGTERM) is not counted.
pub(crate) async fn a_crash_requeues_running_transfers_without_an_attempt_until_the_poison_limit(
    store: &dyn Store,
) {
    let (mut j, files) = named("j", 1, "vo");
    j.retry = -1;
    store.submit((j, files)).await.unwrap().unwrap();
    let queue = store.submitted_queues().await.unwrap();
    let id = store
        .queue_candidates(&queue[0], 10, 5, false)
        .await
        .unwrap()[0]
        .1
        .file_id;
    // A clean stop hands the transfer back: not an interruption the store counts.
    assert_eq!(store.claim(&claim(id, 5)).await.unwrap().len(), 1);
    let back = store
        .apply_events(&[Event::Interrupted { file_id: id }], "h", 6)
        .await
        .unwrap();
    assert_eq!(back[0].outcome, Outcome::Moved(FileState::Submitted));
    for n in 1..lifecycle::MAX_INTERRUPTIONS {
        let t = 10 * i64::from(n);
        assert_eq!(store.claim(&claim(id, t)).await.unwrap().len(), 1);
        let applied = store.recover_interrupted("h", t + 1).await.unwrap();
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].outcome, Outcome::Interrupted(n));
        let f = store.file(id).await.unwrap().unwrap();
        assert_eq!((f.file_state, f.retry), (FileState::Submitted, 0));
        assert!(
            store.file_retries(id).await.unwrap().is_empty(),
            "no attempt recorded"
        );
        // Runnable again at once (no retry delay).
        let again = store
            .queue_candidates(&queue[0], 10, t + 1, false)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        // A start with nothing running changes nothing.
        assert!(
            store
                .recover_interrupted("h", t + 2)
                .await
                .unwrap()
                .is_empty()
        );
    }
    store.claim(&claim(id, 100)).await.unwrap();
    let applied = store.recover_interrupted("h", 101).await.unwrap();
    assert_eq!(applied[0].outcome, Outcome::Moved(FileState::Failed));
    assert_eq!(applied[0].job_state, JobState::Failed);
    let f = store.file(id).await.unwrap().unwrap();
    assert!(
        f.reason
            .as_deref()
            .unwrap_or_default()
            .ends_with(lifecycle::POISON_REASON),
        "{:?}",
        f.reason
    );
    assert_eq!(store.check().await.unwrap(), Vec::<String>::new());
}

pub(crate) async fn evolution_reads_by_link_and_time_range_and_expires(store: &dyn Store) {
    for (i, t) in [10, 20, 30, 40].into_iter().enumerate() {
        store
            .set_optimizer(&decision("a", "b", t, i as i64 + 1))
            .await
            .unwrap();
        store
            .set_optimizer(&decision("a", "c", t + 5, i as i64 + 11))
            .await
            .unwrap();
    }
    // Same microsecond twice: both kept, in order.
    store
        .set_optimizer(&decision("x", "y", 40, 100))
        .await
        .unwrap();
    store
        .set_optimizer(&decision("x", "y", 40, 101))
        .await
        .unwrap();

    let ab = LinkFilter {
        source_se: Some("a".into()),
        dest_se: Some("b".into()),
    };
    assert_eq!(
        actives(&store.evolution(&ab, None, None, 50).await.unwrap()),
        vec![4, 3, 2, 1]
    );
    assert_eq!(
        actives(&store.evolution(&ab, Some(20), Some(30), 50).await.unwrap()),
        vec![3, 2]
    );
    assert_eq!(
        actives(&store.evolution(&ab, None, None, 2).await.unwrap()),
        vec![4, 3]
    );
    let a = LinkFilter {
        source_se: Some("a".into()),
        dest_se: None,
    };
    assert_eq!(
        actives(&store.evolution(&a, Some(25), None, 50).await.unwrap()),
        vec![14, 4, 13, 3, 12]
    );
    let all = LinkFilter::default();
    assert_eq!(
        actives(&store.evolution(&all, None, None, 3).await.unwrap()),
        vec![14, 101, 100]
    );
    let c = LinkFilter {
        source_se: None,
        dest_se: Some("c".into()),
    };
    assert_eq!(
        actives(&store.evolution(&c, None, Some(20), 50).await.unwrap()),
        vec![11]
    );

    let current = store.optimizer_current("a", "b").await.unwrap().unwrap();
    assert_eq!(
        (current.active, current.datetime, current.queue_size),
        (4, 40, 4)
    );
    assert_eq!(store.optimizer_current("b", "a").await.unwrap(), None);
    let values = store.optimizer_values(&a).await.unwrap();
    assert_eq!(
        values
            .iter()
            .map(|v| v.dest_se.as_str())
            .collect::<Vec<_>>(),
        vec!["c", "b"]
    );

    assert_eq!(store.delete_evolution_before(30).await.unwrap(), 4);
    assert_eq!(
        actives(&store.evolution(&ab, None, None, 50).await.unwrap()),
        vec![4, 3]
    );
    assert_eq!(store.check().await.unwrap(), Vec::<String>::new());
}

pub(crate) async fn grants_and_bans_make_the_access_of_a_dn(store: &dyn Store) {
    let access = store.access("/CN=a").await.unwrap();
    assert!(!access.banned && access.grants.is_empty());
    assert!(
        store
            .grant_dn("/CN=a", "config", 1, &audit("authorize"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .grant_dn("/CN=a", "config", 2, &audit("authorize"))
            .await
            .unwrap()
    );
    assert!(
        store
            .grant_dn("/CN=a", "admin", 3, &audit("authorize"))
            .await
            .unwrap()
    );
    assert!(
        store
            .grant_dn("/CN=b", "config", 4, &audit("authorize"))
            .await
            .unwrap()
    );
    // A DN's grants are its own, not those of a longer DN.
    assert!(
        store
            .grant_dn("/CN=a/CN=x", "deleg", 5, &audit("authorize"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.access("/CN=a").await.unwrap().grants,
        vec!["admin", "config"]
    );
    let by_op: Vec<String> = store
        .list_grants(None, Some("config"))
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.dn)
        .collect();
    assert_eq!(by_op, vec!["/CN=a", "/CN=b"]);
    // `admin` is kept when everything else is revoked.
    assert_eq!(
        store
            .revoke_dn("/CN=a", None, &["admin"], &audit("revoke"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.access("/CN=a").await.unwrap().grants, vec!["admin"]);
    let ban = DnBan {
        dn: "/CN=a".into(),
        message: String::new(),
        addition_time: 1,
        admin_dn: "/CN=admin".into(),
    };
    store.ban_dn(&ban, &audit("ban-dn")).await.unwrap();
    assert!(store.access("/CN=a").await.unwrap().banned);
    assert!(!store.access("/CN=b").await.unwrap().banned);
    assert_eq!(store.audit_entries(100).await.unwrap().len(), 6);
    assert_eq!(store.check().await.unwrap(), Vec::<String>::new());
}

pub(crate) async fn submissions_refuse_a_duplicate_job_and_a_queued_destination(store: &dyn Store) {
    let (j, mut files) = named("j1", 1, "vo");
    files[0].dest_surl_uuid = Some("uuid-of-dest".into());
    store
        .submit((j.clone(), files.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.submit((j, files.clone())).await.unwrap(),
        Err(InsertConflict::DuplicateJob)
    );
    let (j2, _) = named("j2", 1, "vo");
    assert_eq!(
        store.submit((j2, files.clone())).await.unwrap(),
        Err(InsertConflict::DuplicateDestination(
            files[0].dest_surl.clone()
        ))
    );
    // File ids are assigned by the store, and the queue counts see the file.
    let (job, stored) = store.job_with_files("j1").await.unwrap().unwrap();
    assert_eq!(job.job_id, "j1");
    assert!(stored[0].file_id > 0);
    assert_eq!(
        store.file(stored[0].file_id).await.unwrap().unwrap().job_id,
        "j1"
    );
    let counts = store
        .queued_counts(
            &[stored[0].source_se.clone(), "elsewhere".into()],
            &stored[0].dest_se,
            "vo",
        )
        .await
        .unwrap();
    assert_eq!(counts, vec![1, 0]);
    assert!(store.job("j2").await.unwrap().is_none());
}

pub(crate) async fn cancel_and_priority_leave_terminal_jobs_alone(store: &dyn Store) {
    for id in ["a", "b"] {
        store.submit(named(id, 1, "vo")).await.unwrap().unwrap();
    }
    let ids = vec!["a".to_string(), "missing".to_string()];
    let changed = store
        .edit_jobs(&ids, &JobEdit::Priority(Some(5)), 10)
        .await
        .unwrap();
    assert!(matches!(&changed[0], Some((JobChange::Changed(j), 0)) if j.priority == 5));
    assert!(changed[1].is_none());
    assert_eq!(
        store.job_with_files("a").await.unwrap().unwrap().1[0].priority,
        5
    );
    let changed = store
        .edit_jobs(&ids[..1], &JobEdit::Cancel, 11)
        .await
        .unwrap();
    assert!(
        matches!(&changed[0], Some((JobChange::Changed(j), _)) if j.job_state == JobState::Canceled)
    );
    // Terminal now: neither a second cancel nor a priority touches it.
    let again = store
        .edit_jobs(&ids[..1], &JobEdit::Priority(Some(9)), 12)
        .await
        .unwrap();
    assert!(matches!(&again[0], Some((JobChange::Terminal(j), _)) if j.priority == 5));
    let active: Vec<JobState> = JobState::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .collect();
    let left = store.job_ids_in_states(&active, Some("vo")).await.unwrap();
    assert_eq!(left, vec!["b".to_string()]);
    let all = store
        .edit_jobs(&left, &JobEdit::CancelAll, 13)
        .await
        .unwrap();
    assert!(matches!(&all[0], Some((JobChange::Changed(_), 1))));
    assert_eq!(
        store.job("b").await.unwrap().unwrap().job_state,
        JobState::Canceled
    );
    assert_eq!(store.check().await.unwrap(), Vec::<String>::new());
}

pub(crate) async fn file_cancels_and_force_start_answer_per_file(store: &dyn Store) {
    let (j, mut files) = named("j", 1, "vo");
    let mut second = files[0].clone();
    second.file_index = 1;
    second.dest_surl = "mock://dst/j/2".into();
    files.push(second);
    store.submit((j, files)).await.unwrap().unwrap();
    let ids: Vec<u64> = store
        .job_with_files("j")
        .await
        .unwrap()
        .unwrap()
        .1
        .iter()
        .map(|f| f.file_id)
        .collect();
    assert_eq!(store.force_start(ids[1]).await.unwrap(), Some(true));
    assert_eq!(store.force_start(ids[1]).await.unwrap(), Some(false));
    assert_eq!(store.force_start(999_999).await.unwrap(), None);
    let entries = store
        .cancel_files("j", &[Some(ids[0]), None, Some(999_999)], 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        entries,
        vec![
            "CANCELED",
            "File does not belong to the job",
            "File does not belong to the job"
        ]
    );
    // One file left active: the job goes on; cancel it and the job ends.
    assert!(
        !store
            .job("j")
            .await
            .unwrap()
            .unwrap()
            .job_state
            .is_terminal()
    );
    store
        .cancel_files("j", &[Some(ids[1])], 6)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.job("j").await.unwrap().unwrap().job_state,
        JobState::Canceled
    );
    assert_eq!(store.cancel_files("nope", &[], 7).await.unwrap(), None);
    assert_eq!(store.check().await.unwrap(), Vec::<String>::new());
}

pub(crate) async fn a_credential_is_stored_against_its_pending_request(store: &dyn Store) {
    let request = PendingRequest {
        csr_pem: "csr".into(),
        key_bits: 2048,
        spki_der: vec![1, 2, 3],
    };
    let new = NewCredential {
        proxy_pem: "proxy".into(),
        chain_pem: "chain".into(),
        voms_attrs: vec!["/dteam".into()],
        termination_time: 100,
        spki_der: vec![1, 2, 3],
    };
    assert_eq!(
        store.store_credential("d", "/CN=u", &new, 1).await.unwrap(),
        StoreOutcome::NoPending
    );
    store
        .save_pending_request("d", "/CN=u", &request, b"key", 1)
        .await
        .unwrap();
    assert_eq!(
        store.pending_request("d", "/CN=u").await.unwrap(),
        Some(request)
    );
    let other_key = NewCredential {
        spki_der: vec![9],
        ..new.clone()
    };
    assert_eq!(
        store
            .store_credential("d", "/CN=u", &other_key, 2)
            .await
            .unwrap(),
        StoreOutcome::KeyChanged
    );
    assert_eq!(
        store.store_credential("d", "/CN=u", &new, 2).await.unwrap(),
        StoreOutcome::Stored
    );
    let info = store.credential("d", "/CN=u").await.unwrap().unwrap();
    assert_eq!((info.termination_time, info.delegated_at), (100, 2));
    let material = store
        .credential_material("d", "/CN=u")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(material.key_pem.as_slice(), b"key");
    assert!(store.credential("d", "/CN=other").await.unwrap().is_none());
    assert!(store.delete_credential("d", "/CN=u").await.unwrap());
    assert!(!store.delete_credential("d", "/CN=u").await.unwrap());
}

fn new_token(raw: &str, unmanaged: bool) -> NewToken {
    NewToken {
        token_id: crate::model::token::token_id(raw),
        access_token: Secret::new(raw),
        issuer: "https://iam.example/".into(),
        scope: "storage.read:/ offline_access".into(),
        audience: Some("https://a https://b".into()),
        not_before: 100,
        expiry: 700,
        unmanaged,
    }
}

async fn tokens_are_stored_once_and_keep_their_exchange(store: &dyn Store) {
    let (managed, unmanaged) = (new_token("AT-1", false), new_token("AT-2", true));
    assert_eq!(
        store
            .put_tokens(&[managed.clone(), unmanaged.clone()], 10)
            .await
            .unwrap(),
        vec![false, true],
        "a managed token waits for its exchange; an unmanaged one is ready"
    );
    let t = store.token(&managed.token_id).await.unwrap().unwrap();
    assert_eq!(t.access_token.expose(), "AT-1");
    assert_eq!(
        (t.issuer.as_str(), t.audience.as_deref(), t.expiry),
        ("https://iam.example/", Some("https://a https://b"), 700)
    );
    assert!(t.refresh_token.is_none() && !t.ready());
    assert!(store.token("nope").await.unwrap().is_none());
    // The exchange gives a refresh token and a new access token.
    let exchanged = TokenChange::Exchanged {
        access_token: Some(Secret::new("AT-1b")),
        refresh_token: Secret::new("RT-1"),
        expiry: 900,
    };
    assert!(
        store
            .update_token(&managed.token_id, &exchanged, 11)
            .await
            .unwrap()
    );
    assert!(!store.update_token("nope", &exchanged, 11).await.unwrap());
    let t = store.token(&managed.token_id).await.unwrap().unwrap();
    assert_eq!(t.access_token.expose(), "AT-1b");
    assert_eq!(t.refresh_token.as_ref().map(Secret::expose), Some("RT-1"));
    assert_eq!(t.expiry, 900);
    // Submitted again: the row keeps its exchange (ready at once).
    assert_eq!(
        store
            .put_tokens(std::slice::from_ref(&managed), 12)
            .await
            .unwrap(),
        vec![true]
    );
    // A refresh without rotation keeps the refresh token; a failure is remembered.
    let refreshed = TokenChange::Refreshed {
        access_token: Secret::new("AT-1c"),
        refresh_token: None,
        expiry: 1500,
    };
    store
        .update_token(&managed.token_id, &refreshed, 13)
        .await
        .unwrap();
    let failed = TokenChange::RefreshFailed {
        message: "[invalid_grant]: expired".into(),
    };
    store
        .update_token(&managed.token_id, &failed, 14)
        .await
        .unwrap();
    let t = store.token(&managed.token_id).await.unwrap().unwrap();
    assert_eq!(t.access_token.expose(), "AT-1c");
    assert_eq!(t.refresh_token.as_ref().map(Secret::expose), Some("RT-1"));
    assert_eq!(
        t.refresh_message.as_deref(),
        Some("[invalid_grant]: expired")
    );
    // The same token submitted as unmanaged by another job stays managed.
    assert_eq!(
        store
            .put_tokens(&[new_token("AT-1", true)], 15)
            .await
            .unwrap(),
        vec![true]
    );
    assert!(
        !store
            .token(&managed.token_id)
            .await
            .unwrap()
            .unwrap()
            .unmanaged
    );
}

/// The one file of job `id`, as stored (with the id the store gave it).
async fn only_file(store: &dyn Store, id: &str) -> File {
    let (_, files) = store.job_with_files(id).await.unwrap().unwrap();
    files.into_iter().next().unwrap()
}

fn row_key(vo: &str) -> RowKey {
    RowKey {
        source_se: "mock://a".into(),
        dest_se: "mock://b".into(),
        vo_name: vo.into(),
        activity: "default".into(),
    }
}

fn failure(reason: &str) -> Failure {
    Failure {
        reason: reason.into(),
        scope: "DESTINATION".into(),
        phase: "TRANSFER_PREPARATION".into(),
        class: "FILE_EXISTS".into(),
        recoverable: false,
        dst_file: None,
    }
}

pub(crate) async fn monitoring_counts_follow_every_change_of_a_file(store: &dyn Store) {
    // The windows reach back a day from the wall clock: the events happen now.
    let now = crate::model::time::now();
    let hour_ago = now - 3600;
    for (id, vo) in [("a", "atlas"), ("b", "cms"), ("c", "atlas")] {
        store
            .submit(named(id, now - 100, vo))
            .await
            .unwrap()
            .unwrap();
    }
    let count = |rows: &[crate::model::monitor::RowStats], vo: &str, state: FileState| {
        rows.iter()
            .find(|r| r.key == row_key(vo))
            .map_or(0, |r| r.now.get(state))
    };
    let rows = store
        .monitor_rows(&RowFilter::default(), hour_ago)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(count(&rows, "atlas", FileState::Submitted), 2);
    assert_eq!(count(&rows, "cms", FileState::Submitted), 1);
    assert_eq!(
        store.monitor_jobs().await.unwrap(),
        vec![
            ("atlas".to_string(), JobState::Submitted, 2),
            ("cms".to_string(), JobState::Submitted, 1),
        ]
    );

    // One transfer finishes on host h1, one fails there.
    let (a, b) = (only_file(store, "a").await, only_file(store, "b").await);
    let mut claimed = claim(a.file_id, now);
    claimed.file_ids.push(b.file_id);
    claimed.host = "h1".into();
    assert_eq!(store.claim(&claimed).await.unwrap().len(), 2);
    let rows = store
        .monitor_rows(&RowFilter::default(), hour_ago)
        .await
        .unwrap();
    assert_eq!(count(&rows, "atlas", FileState::Ready), 1);
    assert_eq!(count(&rows, "atlas", FileState::Submitted), 1);
    let hosts = store.monitor_hosts(hour_ago).await.unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(
        (hosts[0].host.as_str(), hosts[0].now.get(FileState::Ready)),
        ("h1", 2)
    );
    let reason = "DESTINATION [17] the file exists";
    let events = [
        Event::Finished {
            file_id: a.file_id,
            success: Success {
                filesize: 1000,
                duration: 2.0,
                throughput: 0.5,
            },
        },
        Event::Failed {
            file_id: b.file_id,
            failure: failure(reason),
        },
    ];
    store.apply_events(&events, "h1", now).await.unwrap();

    let atlas = RowFilter {
        vo_name: Some("atlas".into()),
        ..RowFilter::default()
    };
    let rows = store.monitor_rows(&atlas, hour_ago).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].now.get(FileState::Submitted), 1);
    assert_eq!(rows[0].now.get(FileState::Ready), 0);
    assert_eq!(
        (rows[0].window.finished, rows[0].window.failed),
        (1, 0),
        "{rows:?}"
    );
    assert_eq!(rows[0].window.bytes, 1000);
    let minutes = store.monitor_minutes(&atlas, hour_ago).await.unwrap();
    assert_eq!(minutes.len(), 1, "{minutes:?}");
    assert_eq!(minutes[0].minute, now - now.rem_euclid(60));
    assert_eq!(minutes[0].window.finished, 1);

    let errors = store
        .monitor_errors(&RowFilter::default(), hour_ago)
        .await
        .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].vo_name, "cms");
    assert_eq!(
        errors[0].class,
        ErrorClass {
            scope: "DESTINATION".into(),
            phase: "TRANSFER_PREPARATION".into(),
            category: "FILE_EXISTS".into(),
            recoverable: false,
        }
    );
    assert_eq!(
        store
            .monitor_error_reasons("mock://a", "mock://b", None, hour_ago)
            .await
            .unwrap(),
        vec![("cms".to_string(), reason.to_string(), 1)]
    );
    assert!(
        store
            .monitor_error_reasons("mock://a", "mock://b", Some("atlas"), hour_ago)
            .await
            .unwrap()
            .is_empty()
    );
    let hosts = store.monitor_hosts(hour_ago).await.unwrap();
    assert_eq!(
        (hosts[0].now.get(FileState::Ready), hosts[0].terminal),
        (0, 2)
    );

    let totals = store.monitor_totals().await.unwrap();
    let mut jobs: Vec<(&str, &str, u64)> = totals
        .jobs
        .iter()
        .map(|(vo, st, n)| (vo.as_str(), st.as_str(), *n))
        .collect();
    jobs.sort();
    assert_eq!(
        jobs,
        vec![
            ("atlas", "FINISHED", 1),
            ("atlas", "SUBMITTED", 1),
            ("cms", "FAILED", 1)
        ]
    );
    assert_eq!(totals.failures.len(), 1);
    let sizes: Vec<(&str, u64)> = totals
        .sizes
        .iter()
        .map(|(vo, h)| (vo.as_str(), h.count))
        .collect();
    assert_eq!(sizes, vec![("atlas", 1)]);
    let durations = totals
        .durations
        .iter()
        .find(|(vo, st, _)| vo == "atlas" && *st == FileState::Finished)
        .map(|(_, _, h)| (h.count, h.sum));
    assert_eq!(durations, Some((1, 2.0)));
    assert_eq!(store.check().await.unwrap(), Vec::<String>::new());
}

pub(crate) async fn monitoring_windows_leave_out_what_ended_before_them(store: &dyn Store) {
    let now = crate::model::time::now();
    store
        .submit(named("a", now - 100, "vo"))
        .await
        .unwrap()
        .unwrap();
    let a = only_file(store, "a").await;
    store.claim(&claim(a.file_id, now - 7200)).await.unwrap();
    // Finished two hours ago.
    let events = [Event::Failed {
        file_id: a.file_id,
        failure: failure("DESTINATION [17] exists"),
    }];
    store.apply_events(&events, "h", now - 7200).await.unwrap();
    let in_window = |since| async move {
        let rows = store
            .monitor_rows(&RowFilter::default(), since)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "the row stays while it has files: {rows:?}");
        assert_eq!(rows[0].now.get(FileState::Failed), 1);
        rows[0].window.failed
    };
    assert_eq!(in_window(now - 3 * 3600).await, 1);
    assert_eq!(in_window(now - 3600).await, 0);
    assert!(
        store
            .monitor_errors(&RowFilter::default(), now - 3600)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .monitor_minutes(&RowFilter::default(), now - 3600)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .monitor_error_reasons("mock://a", "mock://b", None, now - 3600)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .monitor_error_reasons("mock://a", "mock://b", None, now - 3 * 3600)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub(crate) async fn monitoring_listings_page_through_jobs_and_transfers(store: &dyn Store) {
    for i in 0..5 {
        let vo = if i % 2 == 0 { "even" } else { "odd" };
        store
            .submit(named(&format!("job{i}"), 100 + i, vo))
            .await
            .unwrap()
            .unwrap();
    }
    let ids = |page: &crate::model::monitor::Page<crate::model::monitor::JobSummary>| {
        page.items
            .iter()
            .map(|s| s.job.job_id.clone())
            .collect::<Vec<_>>()
    };
    let page = store
        .monitor_job_page(&JobListQuery {
            states: Some(vec![JobState::Submitted]),
            ascending: true,
            limit: 2,
            ..JobListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((page.count, page.complete), (5, true));
    assert_eq!(ids(&page), vec!["job0", "job1"]);
    assert_eq!(page.items[0].files.get("SUBMITTED"), Some(&1));
    assert_eq!(page.items[0].count, 1);
    let page = store
        .monitor_job_page(&JobListQuery {
            vo_name: Some("even".into()),
            offset: 1,
            limit: 10,
            ..JobListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.count, 3);
    assert_eq!(ids(&page), vec!["job2", "job0"]);
    let page = store
        .monitor_job_page(&JobListQuery {
            with_file: Some(vec![FileState::Submitted]),
            cred_id: Some("nobody".into()),
            limit: 10,
            ..JobListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.count, 0, "another delegation's jobs are not listed");

    let transfers = store
        .monitor_transfer_page(&TransferQuery {
            states: vec![FileState::Submitted],
            vo_name: Some("even".into()),
            order: TransferOrder::Id,
            descending: true,
            limit: 2,
            ..TransferQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(transfers.count, 3);
    let jobs: Vec<&str> = transfers.items.iter().map(|f| f.job_id.as_str()).collect();
    assert_eq!(jobs, vec!["job4", "job2"]);

    let oldest = store
        .monitor_oldest_jobs(
            JobState::Submitted,
            &["even".into(), "odd".into(), "none".into()],
        )
        .await
        .unwrap();
    assert_eq!(
        oldest.into_iter().collect::<Vec<_>>(),
        vec![("even".to_string(), 100), ("odd".to_string(), 101)]
    );
    let submissions = store.monitor_submissions(103).await.unwrap();
    assert_eq!(
        submissions.into_iter().collect::<Vec<_>>(),
        vec![("h".to_string(), 2)]
    );
}

/// The embedded backend.
mod redb {
    use super::*;

    fn open() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        (dir, Arc::new(store))
    }

    store_suite!(open());
}
