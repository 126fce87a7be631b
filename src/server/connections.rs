//! The connection table: who holds a connection slot, since when it is idle, and which one
//! makes room when the slots are taken.
//!
//! Fair share, checked when a connection is accepted (before its TLS handshake, when nothing is
//! known of the client but its address):
//! - at most `max_connections_per_address` connections per client address: an address at its
//!   cap is refused until one of its own connections closes;
//! - at most `max_anonymous_connections` connections without a client certificate, handshakes
//!   in progress included, so that certificate holders always find a free slot;
//! - at most `max_connections` in all.
//!
//! When the anonymous share or the table is full, the new connection makes room by closing an
//! idle connection of that group (no request in a handler) that belongs to an address holding
//! at least two more connections than the newcomer's (the share gets fairer), the busiest
//! address first and its longest-idle connection first; a client from an address with no
//! connection may also close one idle for [`Quotas::displace_after`]. Otherwise it is refused.
//! So a newcomer gets in past a flood, the flood's own reconnections are refused at once
//! (before any TLS work, they cannot churn each other's slots), and a client with a
//! certificate, once its handshake is done, no longer counts against the anonymous share.
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
    /// How long a connection must have been idle before a client from an address holding no
    /// connection may close it to make room (when no address holds more than its share).
    pub displace_after: Duration,
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

    /// Take a slot for a new connection from `address`, making room as the module says.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Slot, Refused> {
        let mut inner = self.lock();
        let q = &self.quotas;
        let held = inner.per_address.get(&address).copied().unwrap_or(0);
        if held >= q.max_per_address {
            return Err(Refused::AddressFull);
        }
        if inner.anonymous >= q.max_anonymous && !self.evict(&mut inner, held, |e| !e.authenticated)
        {
            return Err(Refused::AnonymousFull);
        }
        if inner.conns.len() >= q.max_connections
            && !self.evict(&mut inner, held, |e| !e.authenticated)
            && !self.evict(&mut inner, held, |_| true)
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

    /// Close an idle connection matching `which` for a newcomer whose address holds
    /// `newcomer_held` connections: one of an address holding at least two more (the busiest
    /// first, then the longest idle, then the oldest), or, for a newcomer from an address with
    /// none, one idle for `displace_after`. False if there is none.
    fn evict(
        &self,
        inner: &mut Inner,
        newcomer_held: usize,
        which: impl Fn(&Entry) -> bool,
    ) -> bool {
        // A linear scan: at most `max_connections` entries, a few microseconds per accept,
        // far below the cost of the TLS handshake that follows.
        let now = self.now_ms();
        let stale = u64::try_from(self.quotas.displace_after.as_millis()).unwrap_or(u64::MAX);
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
            .filter(|e| {
                let idle_since = e.state.idle_since.load(Ordering::SeqCst);
                held(e) >= newcomer_held + 2
                    || (newcomer_held == 0 && now.saturating_sub(idle_since) >= stale)
            })
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
                    tracing::debug!(address = %entry.state.address, "closing an idle connection to make room");
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
            displace_after: Duration::from_millis(50),
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn evicted(slot: &Slot) -> bool {
        slot.state().evicted().is_cancelled()
    }

    #[test]
    fn an_address_at_its_cap_is_refused() {
        let t = table(100, 2, 100);
        let _a = (t.admit(ip(1)).unwrap(), t.admit(ip(1)).unwrap());
        assert_eq!(t.admit(ip(1)).unwrap_err(), Refused::AddressFull);
        assert!(t.admit(ip(2)).is_ok());
    }

    #[test]
    fn a_newcomer_pushes_out_the_busiest_address_not_a_fair_one() {
        let t = table(100, 100, 4);
        let lone = t.admit(ip(9)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let flood: Vec<Slot> = (0..3).map(|_| t.admit(ip(1)).unwrap()).collect();
        // The anonymous share is full: the flooding address loses its longest-idle connection,
        // although the lone client's is idle longer.
        let _next = t.admit(ip(2)).unwrap();
        assert!(!evicted(&lone));
        assert!(evicted(&flood[0]) && !evicted(&flood[1]) && !evicted(&flood[2]));
        // The flood cannot push out anyone to reconnect: it holds no less than the others + 2.
        assert_eq!(t.admit(ip(1)).unwrap_err(), Refused::AnonymousFull);
        assert_eq!(t.counts(), (4, 4));
    }

    #[test]
    fn a_new_address_may_displace_a_long_idle_connection() {
        let t = table(100, 100, 2);
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(2)).unwrap();
        // One connection per address: no address holds more than its share.
        assert_eq!(t.admit(ip(3)).unwrap_err(), Refused::AnonymousFull);
        std::thread::sleep(Duration::from_millis(60));
        let _c = t.admit(ip(3)).unwrap();
        assert!(evicted(&a) && !evicted(&b));
        // An address that holds a connection may not.
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.admit(ip(3)).unwrap_err(), Refused::AnonymousFull);
    }

    #[test]
    fn certificate_holders_leave_the_anonymous_share() {
        let t = table(10, 10, 2);
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(2)).unwrap();
        a.handshake_done(true);
        assert_eq!(t.counts(), (2, 1));
        // The anonymous share is not full (1 of 2): no one is closed.
        let c = t.admit(ip(2)).unwrap();
        assert!(!evicted(&b));
        // Now it is: address 2 holds two, a newcomer pushes its longest-idle one out, never
        // the authenticated connection.
        let _d = t.admit(ip(4)).unwrap();
        assert!(evicted(&b) && !evicted(&c) && !evicted(&a));
        drop(b);
        assert_eq!(t.counts(), (3, 2));
    }

    #[test]
    fn busy_connections_are_never_closed() {
        let t = table(2, 10, 2);
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(1)).unwrap();
        let _ga = a.request();
        let gb = b.request();
        assert_eq!(t.admit(ip(3)).unwrap_err(), Refused::AnonymousFull);
        drop(gb);
        assert!(t.admit(ip(3)).is_ok());
        assert!(evicted(&b) && !evicted(&a));
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
