//! `mock://`: the gfal2 mock plugin's behaviour, driven by URL query parameters (spec §6).
//!
//! Nothing is stored: sizes, checksums, errors and durations come from the query string of the
//! URL being operated on. Lookups reproduce the plugin exactly, quirks included: the query is
//! split on `&` and the **first** argument whose text *starts with* the key and has an `=`
//! wins, so `size` also matches a preceding `size_pre=…` and `access` matches
//! `access_errno=…`. Numbers are read like C `atoll` (leading digits; garbage is 0).
//!
//! Each [`Session`] keeps the plugin's stat state machine, as fts_url_copy sees it (the plugin
//! only runs it when the user agent is `fts_url_copy`, which is always the case here):
//! SOURCE → DESTINATION_BEFORE (`size_pre`, ≤ 0 is ENOENT) → DESTINATION_AFTER (`size_post`) →
//! SOURCE. A successful or failed (not canceled) copy jumps to DESTINATION_AFTER; `delete`
//! is a stat, so it consumes a step. An `errno` answer does not move the machine.
//!
//! Durations use `tokio::time`, so tests drive them with a paused clock.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;

use super::{
    Backend, CopyParams, OpError, OpResult, Progress, Session, StageReply, TapeStatus,
    link_model::{LinkModel, Rng},
};

/// The plugin's copy advances in whole seconds and checks `transfer_errno` after each one.
const COPY_STEP: Duration = Duration::from_secs(1);

/// The mock backend. `default_time` is the copy duration (seconds) when the destination has no
/// `time` parameter (the plugin draws one from `[MIN_TRANSFER_TIME, MAX_TRANSFER_TIME)`; a fixed
/// value keeps runs reproducible).
///
/// With simulated links ([`MockBackend::with_links`]), a copy without `time=` between two hosts
/// of a link shares the link's bandwidth with the other copies on it (see [`LinkModel`]).
#[derive(Debug, Clone)]
pub struct MockBackend {
    default_time: u64,
    links: Arc<Links>,
    tape: Arc<Mutex<MockTape>>,
}

/// The plugin's tape clocks, shared by the sessions (a request is polled by later sessions):
/// when each file of each bring-online request was asked for, and when each URL was first
/// polled for archiving (the plugin's clock starts at the first poll).
#[derive(Debug, Default)]
struct MockTape {
    requests: u64,
    staged_at: HashMap<(String, String), tokio::time::Instant>,
    archive_first_poll: HashMap<String, tokio::time::Instant>,
}

impl MockTape {
    /// When `url` of request `token` was asked for; a request this process never saw (it was
    /// made before a restart) starts now.
    fn asked(&mut self, token: &str, url: &str) -> tokio::time::Instant {
        *self
            .staged_at
            .entry((token.to_string(), url.to_string()))
            .or_insert_with(tokio::time::Instant::now)
    }
}

/// A file of a bring-online request `since` ago: staged once `staging_time` has passed, then
/// failing with `staging_errno` if it says so.
fn staging_status(url: &str, since: Duration) -> TapeStatus {
    let staging_time = int(url, "staging_time").max(0) as u64;
    if since < Duration::from_secs(staging_time) {
        return TapeStatus::Pending;
    }
    match check_errno(url, "staging_errno") {
        Ok(()) => TapeStatus::Done,
        Err(e) => TapeStatus::Failed(e),
    }
}

/// Simulated links by (source host, destination host), with the copies running on each.
#[derive(Debug, Default)]
struct Links {
    models: HashMap<(String, String), (LinkModel, AtomicUsize)>,
    rng: Mutex<Option<Rng>>,
}

/// Seed of the failure draws: runs of a test lab are reproducible.
const LINK_SEED: u64 = 0x5EED;

impl MockBackend {
    pub fn new(default_time: u64) -> MockBackend {
        MockBackend::with_links(default_time, Vec::new())
    }

    /// `links`: (source host, destination host, model).
    pub fn with_links(default_time: u64, links: Vec<(String, String, LinkModel)>) -> MockBackend {
        let models = links
            .into_iter()
            .map(|(s, d, m)| ((s, d), (m, AtomicUsize::new(0))))
            .collect();
        MockBackend {
            default_time,
            links: Arc::new(Links {
                models,
                rng: Mutex::new(Some(Rng::new(LINK_SEED))),
            }),
            tape: Arc::default(),
        }
    }
}

/// The host of a mock URL.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or("")
}

/// Holds one place on a simulated link for the life of a copy.
struct OnLink<'a>(&'a AtomicUsize);

impl Drop for OnLink<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Links {
    /// A copy over a simulated link: latency, then each second the link's rate for the copies
    /// now on it; at the end a failure drawn for that number of copies.
    async fn copy(
        &self,
        model: &LinkModel,
        running: &AtomicUsize,
        params: &CopyParams,
        progress: &Progress,
    ) -> OpResult<()> {
        running.fetch_add(1, Ordering::Relaxed);
        let _place = OnLink(running);
        tokio::time::sleep(Duration::from_secs_f64(model.latency.max(0.0))).await;
        let size = params.filesize as f64;
        let mut done = 0.0;
        while done < size {
            let n = running.load(Ordering::Relaxed);
            let step = model.rate(n).min(size - done);
            tokio::time::sleep(Duration::from_secs_f64((step / model.rate(n)).max(0.001))).await;
            done += step;
            progress.transferred.store(done as u64, Ordering::Relaxed);
        }
        let n = running.load(Ordering::Relaxed);
        let draw = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            rng.get_or_insert_with(|| Rng::new(LINK_SEED)).next_f64()
        };
        if draw < model.failure_probability(n) {
            return Err(OpError::from_errno(libc::ECONNRESET));
        }
        Ok(())
    }
}

impl Backend for MockBackend {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn schemes(&self) -> &[&'static str] {
        &["mock"]
    }

    fn session(&self, _context: &super::SessionContext) -> Box<dyn Session> {
        Box::new(MockSession {
            default_time: self.default_time,
            stage: StatStage::Source,
            links: self.links.clone(),
            tape: self.tape.clone(),
        })
    }

    /// The gfal2 mock plugin stages and archives (`staging_time`, `archive_time`, ...).
    fn tape(&self) -> super::TapeSupport {
        super::TapeSupport {
            staging: true,
            archive_monitoring: true,
        }
    }
}

/// The plugin's stat stages, in the order fts_url_copy stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatStage {
    Source,
    DestinationBefore,
    DestinationAfter,
}

/// One transfer's view of the mock storage.
#[derive(Debug)]
pub struct MockSession {
    default_time: u64,
    stage: StatStage,
    links: Arc<Links>,
    tape: Arc<Mutex<MockTape>>,
}

impl MockSession {
    /// The current stat stage (for tests and logs).
    pub fn stat_stage(&self) -> StatStage {
        self.stage
    }

    fn tape(&self) -> std::sync::MutexGuard<'_, MockTape> {
        // Map updates of a few lines cannot leave the clocks half-written.
        self.tape.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn do_stat(&mut self, url: &str) -> OpResult<u64> {
        let wait = int(url, "wait");
        if wait > 0 {
            tokio::time::sleep(Duration::from_secs(wait as u64)).await;
        }
        check_errno(url, "errno")?;
        let mut size = int(url, "size");
        match self.stage {
            StatStage::Source => self.stage = StatStage::DestinationBefore,
            StatStage::DestinationBefore => {
                self.stage = StatStage::DestinationAfter;
                size = int(url, "size_pre");
                if size <= 0 {
                    return Err(OpError::from_errno(libc::ENOENT));
                }
            }
            StatStage::DestinationAfter => {
                self.stage = StatStage::Source;
                size = int(url, "size_post");
            }
        }
        Ok(size.max(0) as u64)
    }

    async fn do_copy(
        &mut self,
        source: &str,
        destination: &str,
        params: &CopyParams,
        progress: &Progress,
    ) -> OpResult<()> {
        let seconds = match value(destination, "time") {
            Some(v) if !v.is_empty() => atoll(v).max(0) as u64,
            _ => {
                let key = (host(source).to_string(), host(destination).to_string());
                if let Some((model, running)) = self.links.models.get(&key) {
                    let links = self.links.clone();
                    let result = links.copy(model, running, params, progress).await;
                    self.stage = StatStage::DestinationAfter;
                    return result;
                }
                self.default_time
            }
        };
        let transfer_errno = int(destination, "transfer_errno");
        let mut result = Ok(());
        for elapsed in 1..=seconds {
            tokio::time::sleep(COPY_STEP).await;
            let done = params.filesize.saturating_mul(elapsed) / seconds;
            progress
                .transferred
                .store(done, std::sync::atomic::Ordering::Relaxed);
            if transfer_errno > 0 {
                result = Err(OpError::from_errno(transfer_errno as i32));
                break;
            }
        }
        if seconds == 0 {
            progress
                .transferred
                .store(params.filesize, std::sync::atomic::Ordering::Relaxed);
        }
        // Canceled copies never get here (the future is dropped), as in the plugin, whose
        // cancel path returns before the jump.
        self.stage = StatStage::DestinationAfter;
        result
    }
}

impl Session for MockSession {
    fn stat(&mut self, url: &str) -> BoxFuture<'_, OpResult<u64>> {
        let url = url.to_string();
        Box::pin(async move { self.do_stat(&url).await })
    }

    fn checksum(&mut self, url: &str, _algorithm: &str) -> BoxFuture<'_, OpResult<String>> {
        let url = url.to_string();
        Box::pin(async move {
            check_errno(&url, "errno")?;
            Ok(value(&url, "checksum").unwrap_or_default().to_string())
        })
    }

    fn exists(&mut self, url: &str) -> BoxFuture<'_, OpResult<bool>> {
        let url = url.to_string();
        Box::pin(async move {
            if ["access", "exists"]
                .iter()
                .any(|key| value(&url, key).is_some_and(|v| atoll(v) > 0))
            {
                return Ok(true);
            }
            let code = int(&url, "access_errno");
            if code > 0 && code as i32 != libc::ENOENT {
                Err(OpError::from_errno(code as i32))
            } else {
                Ok(false)
            }
        })
    }

    fn delete(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
        let url = url.to_string();
        Box::pin(async move { self.do_stat(&url).await.map(|_| ()) })
    }

    fn make_parent(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
        let url = url.to_string();
        Box::pin(async move {
            let path = url.split_once('?').map_or(url.as_str(), |(p, _)| p);
            let parent = path.rsplit_once('/').map_or(path, |(p, _)| p);
            let read_only = values(&url, "rd_path")
                .any(|rd| !rd.is_empty() && format!("{parent}/").starts_with(rd));
            if read_only {
                Err(OpError::from_errno(libc::EPERM))
            } else {
                Ok(())
            }
        })
    }

    fn copy<'a>(
        &'a mut self,
        source: &'a str,
        destination: &'a str,
        params: &'a CopyParams,
        progress: &'a Progress,
    ) -> BoxFuture<'a, OpResult<()>> {
        Box::pin(self.do_copy(source, destination, params, progress))
    }

    fn stage<'a>(
        &'a mut self,
        urls: &'a [String],
        _pin_lifetime: i64,
        _timeout: u64,
    ) -> BoxFuture<'a, OpResult<StageReply>> {
        Box::pin(async move {
            let token = {
                let mut tape = self.tape();
                tape.requests += 1;
                format!("mock-token-{}", tape.requests)
            };
            let mut files = Vec::with_capacity(urls.len());
            for url in urls {
                // The plugin stats first: `errno` fails the file at once (a plain stat: the
                // stat state machine is fts_url_copy's, not the QoS daemon's).
                if let Err(e) = check_errno(url, "errno") {
                    files.push(TapeStatus::Failed(e));
                    continue;
                }
                self.tape().asked(&token, url);
                files.push(staging_status(url, Duration::ZERO));
            }
            Ok(StageReply { token, files })
        })
    }

    fn stage_poll<'a>(
        &'a mut self,
        token: &'a str,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<Vec<TapeStatus>>> {
        Box::pin(async move {
            let mut tape = self.tape();
            Ok(urls
                .iter()
                .map(|url| staging_status(url, tape.asked(token, url).elapsed()))
                .collect())
        })
    }

    fn stage_abort<'a>(
        &'a mut self,
        token: &'a str,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<()>> {
        Box::pin(async move {
            let mut tape = self.tape();
            for url in urls {
                tape.staged_at.remove(&(token.to_string(), url.clone()));
            }
            Ok(())
        })
    }

    fn release(&mut self, url: &str, _token: &str) -> BoxFuture<'_, OpResult<()>> {
        let url = url.to_string();
        Box::pin(async move { check_errno(&url, "release_errno") })
    }

    fn archive_poll<'a>(
        &'a mut self,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<Vec<TapeStatus>>> {
        Box::pin(async move {
            let mut tape = self.tape();
            Ok(urls
                .iter()
                .map(|url| {
                    // The clock starts at the first poll.
                    let first = *tape
                        .archive_first_poll
                        .entry(url.clone())
                        .or_insert_with(tokio::time::Instant::now);
                    let archiving_time = int(url, "archiving_time").max(0) as u64;
                    if first.elapsed() < Duration::from_secs(archiving_time) {
                        TapeStatus::Pending
                    } else {
                        match check_errno(url, "archiving_errno") {
                            Ok(()) => TapeStatus::Done,
                            Err(e) => TapeStatus::Failed(e),
                        }
                    }
                })
                .collect())
        })
    }

    fn locality(&mut self, url: &str) -> BoxFuture<'_, OpResult<String>> {
        let url = url.to_string();
        Box::pin(async move {
            // The plugin's getxattr: `errno` first, then the parameter named like the
            // attribute (empty when absent).
            check_errno(&url, "errno")?;
            Ok(value(&url, "user.status").unwrap_or_default().to_string())
        })
    }
}

/// Fail with the errno in parameter `key`, if it is > 0.
fn check_errno(url: &str, key: &str) -> OpResult<()> {
    let code = int(url, key);
    if code > 0 {
        Err(OpError::from_errno(code.min(i32::MAX as i64) as i32))
    } else {
        Ok(())
    }
}

/// Every value of an argument starting with `key` (the query split on `&`, arguments without
/// `=` skipped), in order.
fn values<'a>(url: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    url.split_once('?')
        .map(|(_, q)| q)
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(move |arg| arg.starts_with(key))
        .filter_map(|arg| arg.split_once('=').map(|(_, v)| v))
}

/// The plugin's lookup: the value of the first argument *starting with* `key`.
pub fn value<'a>(url: &'a str, key: &'a str) -> Option<&'a str> {
    values(url, key).next()
}

/// The plugin's integer lookup: absent or garbage is 0.
fn int(url: &str, key: &str) -> i64 {
    value(url, key).map_or(0, atoll)
}

/// C `atoll`: optional leading whitespace and sign, then decimal digits; stops at the first
/// other character; saturates instead of overflowing.
fn atoll(s: &str) -> i64 {
    let s = s.trim_start();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if negative { -n } else { n }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> MockSession {
        MockSession {
            default_time: 0,
            stage: StatStage::Source,
            links: Arc::default(),
            tape: Arc::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn staging_and_archiving_follow_the_plugin_clocks() {
        let mut s = session();
        let urls: Vec<String> = [
            "mock://t/a?size=1&staging_time=10",
            "mock://t/b?size=1&staging_time=10&staging_errno=2",
            "mock://t/c?errno=13",
            "mock://t/d?size=1",
        ]
        .map(String::from)
        .to_vec();
        let reply = s.stage(&urls, 3600, 60).await.unwrap();
        assert_eq!(
            reply.files,
            [
                TapeStatus::Pending,
                TapeStatus::Pending,
                TapeStatus::Failed(OpError::from_errno(13)),
                TapeStatus::Done,
            ]
        );
        let pending = &urls[..2];
        tokio::time::advance(Duration::from_secs(9)).await;
        // Another session polls the same request (the engine's poller, after a restart).
        let mut other = session();
        other.tape = s.tape.clone();
        assert_eq!(
            other.stage_poll(&reply.token, pending).await.unwrap(),
            [TapeStatus::Pending, TapeStatus::Pending]
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            other.stage_poll(&reply.token, pending).await.unwrap(),
            [TapeStatus::Done, TapeStatus::Failed(OpError::from_errno(2))]
        );

        let dest = vec!["mock://t/x?archiving_time=5".to_string()];
        tokio::time::advance(Duration::from_secs(100)).await;
        // The archiving clock starts at the first poll, not at the stage request.
        assert_eq!(s.archive_poll(&dest).await.unwrap(), [TapeStatus::Pending]);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(s.archive_poll(&dest).await.unwrap(), [TapeStatus::Done]);
        let failing = vec!["mock://t/y?archiving_errno=5".to_string()];
        assert_eq!(
            s.archive_poll(&failing).await.unwrap(),
            [TapeStatus::Failed(OpError::from_errno(5))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn copies_on_a_simulated_link_share_its_bandwidth() {
        let model = LinkModel {
            bandwidth: 100.0,
            per_transfer: 100.0,
            latency: 1.0,
            failure_rate: 0.0,
            concurrency_limit: 10,
            failure_step: 0.02,
        };
        let backend = MockBackend::with_links(5, vec![("a".into(), "b".into(), model)]);
        let params = CopyParams {
            filesize: 1000,
            nostreams: 1,
            ..Default::default()
        };
        let start = tokio::time::Instant::now();
        let copy = |dst: &'static str| {
            let mut s = backend.session(&super::super::SessionContext::anonymous());
            let params = params.clone();
            async move {
                let progress = Progress::default();
                s.copy("mock://a/x", dst, &params, &progress).await
            }
        };
        // Alone: 1 s latency + 1000 B at 100 B/s.
        copy("mock://b/x").await.unwrap();
        assert_eq!(start.elapsed().as_secs(), 11);
        // Two at once share the link: about twice as long each.
        let start = tokio::time::Instant::now();
        let (a, b) = tokio::join!(copy("mock://b/y"), copy("mock://b/z"));
        a.unwrap();
        b.unwrap();
        assert!(
            (20..=22).contains(&start.elapsed().as_secs()),
            "{:?}",
            start.elapsed()
        );
        // An explicit time= keeps the plugin's behaviour.
        let start = tokio::time::Instant::now();
        copy("mock://b/x?time=2").await.unwrap();
        assert_eq!(start.elapsed().as_secs(), 2);
    }

    #[test]
    fn prefix_matched_lookup() {
        // `size` matches a preceding `size_pre`: the plugin's quirk.
        assert_eq!(value("mock://h/p?size_pre=5&size=10", "size"), Some("5"));
        assert_eq!(value("mock://h/p?size=10&size_pre=5", "size"), Some("10"));
        assert_eq!(value("mock://h/p?access_errno=13", "access"), Some("13"));
        // Arguments without `=` are skipped; `errno` does not match `transfer_errno`.
        assert_eq!(value("mock://h/p?size&size=3", "size"), Some("3"));
        assert_eq!(value("mock://h/p?transfer_errno=5", "errno"), None);
        assert_eq!(value("mock://h/p", "size"), None);
        assert_eq!(atoll("12abc"), 12);
        assert_eq!(atoll("abc"), 0);
        assert_eq!(atoll(" -7"), -7);
    }

    #[tokio::test]
    async fn stat_state_machine_cycles() {
        let mut s = session();
        let url = "mock://h/p?size=10&size_pre=3&size_post=7";
        assert_eq!(s.stat(url).await, Ok(10));
        assert_eq!(s.stat(url).await, Ok(3));
        assert_eq!(s.stat(url).await, Ok(7));
        assert_eq!(s.stat(url).await, Ok(10));
        // DESTINATION_BEFORE without size_pre is ENOENT, and still moves on.
        assert_eq!(s.stat("mock://h/p").await.unwrap_err().errno, libc::ENOENT);
        assert_eq!(s.stat_stage(), StatStage::DestinationAfter);
        // errno does not move the machine.
        assert_eq!(s.stat("mock://h/p?errno=2").await.unwrap_err().errno, 2);
        assert_eq!(s.stat_stage(), StatStage::DestinationAfter);
    }

    #[tokio::test]
    async fn size_quirk_shadows_size() {
        let mut s = session();
        // Source stat reads `size`, which matches the earlier `size_pre`.
        assert_eq!(s.stat("mock://h/p?size_pre=5&size=10").await, Ok(5));
    }

    #[tokio::test]
    async fn access_semantics() {
        let mut s = session();
        assert_eq!(s.exists("mock://h/p?exists=1").await, Ok(true));
        assert_eq!(s.exists("mock://h/p?exists=0").await, Ok(false));
        assert_eq!(s.exists("mock://h/p").await, Ok(false));
        // The quirk: `access` matches `access_errno=13`, and 13 > 0 counts as access...
        assert_eq!(s.exists("mock://h/p?access_errno=13").await, Ok(true));
        // ...unless an exact `access=0` comes first.
        assert_eq!(
            s.exists("mock://h/p?access=0&access_errno=13")
                .await
                .unwrap_err()
                .errno,
            libc::EACCES
        );
    }

    #[tokio::test(start_paused = true)]
    async fn copy_steps_and_transfer_errno() {
        let mut s = session();
        let progress = Progress::default();
        let params = CopyParams {
            filesize: 100,
            nostreams: 1,
            ..Default::default()
        };
        let start = tokio::time::Instant::now();
        s.copy("mock://a/x", "mock://b/x?time=4", &params, &progress)
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        assert_eq!(progress.transferred.load(Ordering::Relaxed), 100);
        assert_eq!(s.stat_stage(), StatStage::DestinationAfter);

        let start = tokio::time::Instant::now();
        let err = s
            .copy(
                "mock://a/x",
                "mock://b/x?time=3&transfer_errno=110",
                &params,
                &progress,
            )
            .await
            .unwrap_err();
        assert_eq!(err.errno, libc::ETIMEDOUT);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // time=0 never checks transfer_errno.
        s.copy(
            "mock://a/x",
            "mock://b/x?time=0&transfer_errno=110",
            &params,
            &progress,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn make_parent_read_only_path() {
        let mut s = session();
        let err = s
            .make_parent("mock://host/super/path/file?exists=0&rd_path=mock://host/super/path/")
            .await
            .unwrap_err();
        assert_eq!(err.errno, libc::EPERM);
        assert_eq!(s.make_parent("mock://host/a/file").await, Ok(()));
    }
}
