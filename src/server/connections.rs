//! The connection table: who holds a connection slot, since when it is idle, and which one
//! makes room when the slots are taken.
//!
//! Fair share, checked when a connection is accepted (before its TLS handshake, when nothing is
//! known of the client but its address):
//! - at most `max_connections_per_address` connections per client address;
//! - at most `max_anonymous_connections` connections without a client certificate, handshakes
//!   in progress included, so that certificate holders always find a free slot;
//! - at most `max_connections` in all.
//!
//! A limit that is reached makes room by closing an idle connection of that group (one with no
//! request in a handler): one of the address that holds the most connections, and of those the
//! one idle the longest; if every one is busy the new connection is refused. Idle connections
//! of a flood therefore give way to new clients, the flooding addresses' first (so that a
//! flood that keeps reconnecting pushes out its own connections, not a newcomer's handshake),
//! and a client with a certificate, once its handshake is done, no longer counts against the
//! anonymous share.
//!
//! Each connection also has a deadline, kept here with its state and watched by its own task
//! (`server::serve_connection`): until its first request head, `request_head_timeout` from the
//! handshake; between requests, `idle_timeout` from the last answer; none while a handler
//! runs (the body reader enforces the body's own deadline).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The limits the table enforces (from `[limits]` and `max_connections`).
#[derive(Debug, Clone)]
pub struct Quotas {
    pub max_connections: usize,
    pub max_per_address: usize,
    pub max_anonymous: usize,
    pub request_head_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Why a new connection was refused (every connection of the full group is busy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    AddressFull,
    AnonymousFull,
    Full,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::AddressFull => "the address's connections are all busy",
            Refused::AnonymousFull => "the connections without a certificate are all busy",
            Refused::Full => "all connections are busy",
        }
    }
}

/// The shared state of one connection: its task and the request handlers update it, the table
/// reads it to choose whom to close.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    address: IpAddr,
    /// Handlers running now.
    in_flight: AtomicUsize,
    /// Requests taken on so far.
    requests: AtomicU64,
    /// Milliseconds (since the table's epoch) when it last became idle.
    idle_since: AtomicU64,
    /// Wakes the connection's task when the state changed (its deadline moved).
    changed: Notify,
    /// Set when the table closes the connection to make room.
    evicted: CancellationToken,
}

impl ConnState {
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// Resolves when a request started or ended.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

/// A slot held by one connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    state: Arc<ConnState>,
    table: Arc<Table>,
}

impl Slot {
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    /// The TLS handshake is done: the request head deadline starts now, and a connection
    /// with a certificate leaves the anonymous share.
    pub fn handshake_done(&self, authenticated: bool) {
        self.state
            .idle_since
            .store(self.table.now_ms(), Ordering::SeqCst);
        if !authenticated {
            return;
        }
        let mut inner = self.table.lock();
        if let Some(entry) = inner.conns.get_mut(&self.state.id) {
            if !entry.authenticated {
                entry.authenticated = true;
                inner.anonymous -= 1;
            }
        }
    }

    /// When the connection's task must close it (`None`: a handler is running).
    pub fn deadline(&self) -> Option<Instant> {
        let s = &self.state;
        if s.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self.table.instant(s.idle_since.load(Ordering::SeqCst));
        let timeout = if s.requests.load(Ordering::SeqCst) == 0 {
            self.table.quotas.request_head_timeout
        } else {
            self.table.quotas.idle_timeout
        };
        Some(since + timeout)
    }

    /// A request handler starts; the guard marks its end.
    pub fn request(&self) -> RequestGuard {
        let s = &self.state;
        s.in_flight.fetch_add(1, Ordering::SeqCst);
        s.requests.fetch_add(1, Ordering::SeqCst);
        s.changed.notify_one();
        RequestGuard {
            state: self.state.clone(),
            table: self.table.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.remove(self.state.id);
    }
}

/// Held while a request's handler runs.
pub struct RequestGuard {
    state: Arc<ConnState>,
    table: Arc<Table>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let s = &self.state;
        s.idle_since.store(self.table.now_ms(), Ordering::SeqCst);
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        s.changed.notify_one();
    }
}

#[derive(Debug)]
struct Entry {
    state: Arc<ConnState>,
    authenticated: bool,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
    /// Connections without a certificate (handshakes in progress included).
    anonymous: usize,
}

/// The connection table of one server.
#[derive(Debug)]
pub struct Table {
    quotas: Quotas,
    epoch: Instant,
    inner: Mutex<Inner>,
}

impl Table {
    pub fn new(quotas: Quotas) -> Arc<Table> {
        Arc::new(Table {
            quotas,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind, still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Connections held now: (all, anonymous).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.conns.len(), inner.anonymous)
    }

    /// Take a slot for a new connection from `address`, closing the longest-idle connection of
    /// each group that is full.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Slot, Refused> {
        let mut inner = self.lock();
        let q = &self.quotas;
        if inner.per_address.get(&address).copied().unwrap_or(0) >= q.max_per_address
            && !self.evict(&mut inner, |e| e.state.address == address)
        {
            return Err(Refused::AddressFull);
        }
        if inner.anonymous >= q.max_anonymous && !self.evict(&mut inner, |e| !e.authenticated) {
            return Err(Refused::AnonymousFull);
        }
        if inner.conns.len() >= q.max_connections
            && !self.evict(&mut inner, |e| !e.authenticated)
            && !self.evict(&mut inner, |_| true)
        {
            return Err(Refused::Full);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let state = Arc::new(ConnState {
            id,
            address,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            changed: Notify::new(),
            evicted: CancellationToken::new(),
        });
        inner.conns.insert(
            id,
            Entry {
                state: state.clone(),
                authenticated: false,
            },
        );
        *inner.per_address.entry(address).or_default() += 1;
        inner.anonymous += 1;
        Ok(Slot {
            state,
            table: self.clone(),
        })
    }

    /// Close an idle connection matching `which`: of the address with the most connections,
    /// the one idle the longest (the older one on a tie); false if none is idle.
    fn evict(&self, inner: &mut Inner, which: impl Fn(&Entry) -> bool) -> bool {
        // A linear scan: at most `max_connections` entries, a few microseconds per accept,
        // far below the cost of the TLS handshake that follows.
        let held = |e: &Entry| {
            inner
                .per_address
                .get(&e.state.address)
                .copied()
                .unwrap_or(0)
        };
        let victim = inner
            .conns
            .values()
            .filter(|e| which(e) && e.state.in_flight.load(Ordering::SeqCst) == 0)
            .min_by_key(|e| {
                (
                    std::cmp::Reverse(held(e)),
                    e.state.idle_since.load(Ordering::SeqCst),
                    e.state.id,
                )
            })
            .map(|e| e.state.id);
        match victim {
            Some(id) => {
                if let Some(entry) = Self::forget(inner, id) {
                    tracing::debug!(address = %entry.state.address, "closing the longest-idle connection to make room");
                    entry.state.evicted.cancel();
                }
                true
            }
            None => false,
        }
    }

    fn forget(inner: &mut Inner, id: u64) -> Option<Entry> {
        let entry = inner.conns.remove(&id)?;
        if let Some(n) = inner.per_address.get_mut(&entry.state.address) {
            *n -= 1;
            if *n == 0 {
                inner.per_address.remove(&entry.state.address);
            }
        }
        if !entry.authenticated {
            inner.anonymous -= 1;
        }
        Some(entry)
    }

    fn remove(&self, id: u64) {
        let mut inner = self.lock();
        Self::forget(&mut inner, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize, per_address: usize, anonymous: usize) -> Arc<Table> {
        Table::new(Quotas {
            max_connections: max,
            max_per_address: per_address,
            max_anonymous: anonymous,
            request_head_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_full_address_closes_its_longest_idle_connection() {
        let t = table(100, 2, 100);
        let first = t.admit(ip(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let second = t.admit(ip(1)).unwrap();
        let other = t.admit(ip(2)).unwrap();
        let third = t.admit(ip(1)).unwrap();
        assert!(
            first.state().evicted().is_cancelled(),
            "the oldest idle one"
        );
        assert!(!second.state().evicted().is_cancelled());
        assert!(!other.state().evicted().is_cancelled());
        assert_eq!(t.counts().0, 3);
        // Both remaining connections of the address are busy: the next one is refused.
        let _busy = (second.request(), third.request());
        assert_eq!(t.admit(ip(1)).unwrap_err(), Refused::AddressFull);
        assert!(t.admit(ip(3)).is_ok());
    }

    #[test]
    fn certificate_holders_leave_the_anonymous_share() {
        let t = table(4, 10, 2);
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(2)).unwrap();
        a.handshake_done(true);
        assert_eq!(t.counts(), (2, 1));
        // The anonymous share is not full (1 of 2): no one is closed.
        let c = t.admit(ip(3)).unwrap();
        assert!(!b.state().evicted().is_cancelled());
        // Now it is: the longest-idle anonymous connection (b) gives way, never the
        // authenticated one.
        let _d = t.admit(ip(4)).unwrap();
        assert!(b.state().evicted().is_cancelled());
        assert!(!a.state().evicted().is_cancelled());
        assert!(!c.state().evicted().is_cancelled());
        drop(b);
        assert_eq!(t.counts(), (3, 2));
    }

    #[test]
    fn the_busiest_address_gives_way_first() {
        let t = table(100, 100, 4);
        let newcomer_old = t.admit(ip(9)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let flood: Vec<Slot> = (0..3).map(|_| t.admit(ip(1)).unwrap()).collect();
        // The anonymous share is full: the flooding address loses a connection, although the
        // newcomer's is idle longer.
        let _next = t.admit(ip(2)).unwrap();
        assert!(!newcomer_old.state().evicted().is_cancelled());
        assert_eq!(
            flood
                .iter()
                .filter(|s| s.state().evicted().is_cancelled())
                .count(),
            1
        );
    }

    #[test]
    fn busy_connections_are_never_closed() {
        let t = table(2, 10, 2);
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(2)).unwrap();
        let _ga = a.request();
        let gb = b.request();
        assert_eq!(t.admit(ip(3)).unwrap_err(), Refused::AnonymousFull);
        drop(gb);
        assert!(t.admit(ip(3)).is_ok());
        assert!(b.state().evicted().is_cancelled());
        assert!(!a.state().evicted().is_cancelled());
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let t = table(10, 10, 10);
        let slot = t.admit(ip(1)).unwrap();
        let start = Instant::now();
        let head = slot.deadline().unwrap();
        assert!(head <= start + Duration::from_secs(1) && head > start);
        let guard = slot.request();
        assert_eq!(slot.deadline(), None, "no deadline while a handler runs");
        drop(guard);
        let idle = slot.deadline().unwrap();
        assert!(
            idle > start + Duration::from_millis(1500),
            "the idle timeout applies"
        );
    }
}
