//! Login throttling that slows guessing down without locking anyone else out.
//!
//! Failures are counted per account (the email) and per (account, client
//! address). Past a number of free failures each further attempt must wait a
//! delay that doubles with every failure: for one (account, address) up to
//! `window`, for the account as a whole (an attack spread over many addresses)
//! up to [`MAX_ACCOUNT_DELAY`], so its owner is never kept out for long. No
//! counter is per address alone: a flood for one email from one address (or
//! from a reverse proxy every user shares) never slows down another account.
//! A correct password clears the account's counters; a counter is forgotten
//! `window` after its last failure.
//!
//! The client address is the TCP peer, or — only when the peer is one of the
//! configured `trusted_proxies` — the last address in `X-Forwarded-For` that
//! is not a trusted proxy itself ([`client_addr`]).
//!
//! In memory and per process: a restart forgets, and with several API
//! processes an attacker gets the free failures once per process. With bcrypt
//! and doubling delays that keeps online guessing hopeless without a shared store.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// Entries are swept for expiry once the map grows past this many keys.
const SWEEP_AT: usize = 4096;
/// The longest wait the account-wide counter imposes.
pub const MAX_ACCOUNT_DELAY: Duration = Duration::from_secs(60);
/// The first delay once the free failures are used up; each further failure doubles it.
const FIRST_DELAY: Duration = Duration::from_secs(1);

/// Keys are keyed hashes: a fixed size however long the email a client sends, and the key
/// is random per process so nobody can aim collisions at another account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Account(u64),
    AccountAddr(u64),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Debug)]
pub struct LoginThrottle {
    hasher: RandomState,
    /// Free failures per account.
    account_free: u32,
    /// Free failures per (account, address).
    addr_free: u32,
    window: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    failures: HashMap<Key, Failures>,
    next_sweep: usize,
}

/// The wait after `count` failures with `free` of them free, doubling from [`FIRST_DELAY`] up to `cap`.
fn delay(count: u32, free: u32, cap: Duration) -> Duration {
    if count < free {
        return Duration::ZERO;
    }
    let doublings = (count - free).min(30);
    FIRST_DELAY.saturating_mul(1 << doublings).min(cap)
}

impl LoginThrottle {
    /// `max_failures` free failures per account (half as many per account and address),
    /// counters kept `window` after the last failure, which also caps the per-address delay.
    pub fn new(max_failures: u32, window: Duration) -> LoginThrottle {
        let account_free = max_failures.max(1);
        LoginThrottle {
            hasher: RandomState::new(),
            account_free,
            addr_free: (account_free / 2).max(1),
            window,
            inner: Mutex::new(Inner { failures: HashMap::new(), next_sweep: SWEEP_AT }),
        }
    }

    fn keys(&self, email: &str, ip: IpAddr) -> [(Key, u32, Duration); 2] {
        [
            (Key::Account(self.hasher.hash_one(email)), self.account_free, MAX_ACCOUNT_DELAY.min(self.window)),
            (Key::AccountAddr(self.hasher.hash_one((email, ip))), self.addr_free, self.window),
        ]
    }

    /// `Err(wait)` if a login for `email` from `ip` must wait before it is tried.
    pub fn check(&self, email: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let inner = self.lock();
        let wait = self
            .keys(email, ip)
            .iter()
            .filter_map(|(key, free, cap)| inner.failures.get(key).map(|f| (f, *free, *cap)))
            .filter(|(f, _, _)| now.saturating_duration_since(f.last) < self.window)
            .map(|(f, free, cap)| (f.last + delay(f.count, free, cap)).saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    pub fn record_failure(&self, email: &str, ip: IpAddr, now: Instant) {
        let keys = self.keys(email, ip);
        let window = self.window;
        let mut inner = self.lock();
        for (key, _, _) in keys {
            let f = inner.failures.entry(key).or_insert(Failures { count: 0, last: now });
            if now.saturating_duration_since(f.last) >= window {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
        if inner.failures.len() >= inner.next_sweep {
            inner.failures.retain(|_, f| now.saturating_duration_since(f.last) < window);
            // Doubling keeps sweeps rare while many keys are still live.
            inner.next_sweep = (inner.failures.len() * 2).max(SWEEP_AT);
        }
    }

    /// A correct password clears the account's counters.
    pub fn record_success(&self, email: &str, ip: IpAddr) {
        let keys = self.keys(email, ip);
        let mut inner = self.lock();
        for (key, _, _) in keys {
            inner.failures.remove(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The client's address: the TCP `peer`, unless the peer is a trusted proxy; then the last
/// address of `X-Forwarded-For` (all its values, in order) that is not a trusted proxy.
/// Addresses before it could have been written by anyone and are ignored.
pub fn client_addr<'a>(peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = forwarded_for
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .map(|s| s.parse::<IpAddr>().or_else(|_| s.parse::<std::net::SocketAddr>().map(|a| a.ip())))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    hops.into_iter().rev().find(|ip| !is_trusted(ip)).map_or(peer, canonical)
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP_A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const IP_B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn delays_grow_per_account_and_address_after_the_free_failures() {
        let t = LoginThrottle::new(6, Duration::from_secs(900));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.check("a@x.io", IP_A, t0).is_ok());
            t.record_failure("a@x.io", IP_A, t0);
        }
        assert_eq!(t.check("a@x.io", IP_A, t0), Err(Duration::from_secs(1)));
        t.record_failure("a@x.io", IP_A, t0);
        assert_eq!(t.check("a@x.io", IP_A, t0), Err(Duration::from_secs(2)));
        assert!(t.check("a@x.io", IP_A, t0 + Duration::from_secs(2)).is_ok());
        // The same account from another address, and another account from the same address, go on.
        assert!(t.check("a@x.io", IP_B, t0).is_ok());
        assert!(t.check("b@x.io", IP_A, t0).is_ok());
    }

    #[test]
    fn a_flood_for_one_account_never_locks_out_another_from_the_same_address() {
        let t = LoginThrottle::new(10, Duration::from_secs(900));
        let t0 = Instant::now();
        for i in 0..1000 {
            t.record_failure("victim@x.io", IP_A, t0 + Duration::from_millis(i));
        }
        assert!(t.check("victim@x.io", IP_A, t0 + Duration::from_secs(1)).is_err());
        assert!(t.check("someone@x.io", IP_A, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn the_account_wide_delay_is_capped() {
        let t = LoginThrottle::new(2, Duration::from_secs(900));
        let t0 = Instant::now();
        // Failures from many addresses: only the account counter grows for a new address.
        for i in 0..40u8 {
            t.record_failure("a@x.io", IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, i)), t0);
        }
        let wait = t.check("a@x.io", IP_B, t0).unwrap_err();
        assert_eq!(wait, MAX_ACCOUNT_DELAY);
        assert!(t.check("a@x.io", IP_B, t0 + MIN).is_ok());
    }

    #[test]
    fn success_clears_and_the_window_forgets() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        t.record_failure("a@x.io", IP_A, t0);
        t.record_failure("a@x.io", IP_A, t0);
        assert!(t.check("a@x.io", IP_A, t0).is_err());
        t.record_success("a@x.io", IP_A);
        assert!(t.check("a@x.io", IP_A, t0).is_ok());
        t.record_failure("a@x.io", IP_A, t0);
        t.record_failure("a@x.io", IP_A, t0);
        // A failure after the window starts counting from one again: the first delay, not the fourth.
        t.record_failure("a@x.io", IP_A, t0 + MIN);
        assert_eq!(t.check("a@x.io", IP_A, t0 + MIN), Err(Duration::from_secs(1)));
    }

    #[test]
    fn expired_entries_are_swept() {
        let t = LoginThrottle::new(1, Duration::from_secs(1));
        let now = Instant::now();
        // Two keys per failure: one short of a sweep...
        for i in 0..SWEEP_AT / 2 - 1 {
            t.record_failure(&format!("{i}@x.io"), IP_A, now);
        }
        assert_eq!(t.lock().failures.len(), SWEEP_AT - 2);
        // ...then a late failure triggers it and only its own keys survive.
        t.record_failure("late@x.io", IP_B, now + Duration::from_secs(5));
        assert_eq!(t.lock().failures.len(), 2);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.9.0.0/16".parse().unwrap()];
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let proxy: IpAddr = "10.9.0.1".parse().unwrap();
        // An untrusted peer's header is ignored.
        assert_eq!(client_addr(IP_A, ["203.0.113.7"].into_iter(), &trusted), IP_A);
        // Through a trusted proxy: the last untrusted hop; a forged first entry is skipped.
        assert_eq!(client_addr(proxy, ["1.2.3.4, 203.0.113.7"].into_iter(), &trusted), client);
        assert_eq!(client_addr(proxy, ["1.2.3.4", "203.0.113.7, 10.9.0.5"].into_iter(), &trusted), client);
        // No usable header: the proxy itself.
        assert_eq!(client_addr(proxy, std::iter::empty(), &trusted), proxy);
        assert_eq!(client_addr(proxy, ["garbage"].into_iter(), &trusted), proxy);
        // A v4-mapped peer counts as its IPv4 address.
        let mapped: IpAddr = "::ffff:10.9.0.1".parse().unwrap();
        assert_eq!(client_addr(mapped, ["203.0.113.7"].into_iter(), &trusted), client);
        assert_eq!(client_addr(proxy, ["203.0.113.7"].into_iter(), &[]), proxy);
    }
}
