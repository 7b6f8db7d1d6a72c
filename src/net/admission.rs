//! Admission: connection slots under the global and per-address limits. A slot is taken before
//! the upgrade answers 101 and released by drop, however the connection ends. Per-address limits
//! charge [`limit_key`]: IPv6 by /64, IPv4-mapped IPv6 as the IPv4 address (docs/protocol.md §13).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The address a per-address limit charges. An IPv6 client is usually given a whole /64 and can
/// rotate through it at will, so the /64 is one address; an IPv4-mapped IPv6 address (a
/// dual-stack listener) is the IPv4 address it maps.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        v4 => v4,
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitError {
    /// `max_connections` reached.
    Full,
    /// `max_connections_per_ip` reached for this address.
    PerIp,
    /// `connect_rate_per_ip` exceeded for this address.
    Rate,
}

/// Addresses whose connect-rate state is kept; past it the least recently seen is forgotten. A
/// bound on the memory a scan from many addresses can take (about 6 MiB when full).
const RATE_TABLE_MAX: usize = 65_536;

/// One address's connect-rate token bucket.
#[derive(Clone, Copy)]
struct ConnectBucket {
    /// Upgrades it may still start now, in thousandths.
    milli_tokens: u64,
    /// When it was last refilled.
    at: Instant,
}

/// Counts admitted connections against the limits.
pub struct Admissions {
    /// Admitted connections, including ones still completing their upgrade.
    admitted: AtomicUsize,
    /// Admitted connections per client address, only tracked when a per-address limit is set.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Signalled when the last admitted connection leaves (shutdown waits on it).
    emptied: Notify,
    /// Global connection cap.
    max_connections: usize,
    /// Per-address cap; 0 = none.
    max_per_ip: usize,
    /// Upgrades per second per address (burst twice that); 0 = no limit.
    connect_rate: u32,
    /// Connect-rate buckets by address key, only kept when a rate is set. Least recently seen
    /// first out: an address that keeps trying stays limited however many others are seen.
    rates: Mutex<LruCache<IpAddr, ConnectBucket>>,
}

/// A reserved connection slot; released on drop unless a session takes it over.
pub struct Slot {
    /// Where the slot belongs; `None` once a session owns it.
    owner: Option<Arc<Admissions>>,
    /// Address charged for the per-address limit.
    ip: IpAddr,
}

impl Slot {
    /// Hands the slot to a session, which must call [`Admissions::release`] with the same
    /// address when it ends (its guard does). Saves every session a pointer it has elsewhere.
    pub fn transfer(mut self) {
        self.owner = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(owner) = &self.owner {
            owner.release(self.ip);
        }
    }
}

impl Admissions {
    /// No connection admitted yet.
    pub fn new(max_connections: usize, max_per_ip: usize, connect_rate: u32) -> Admissions {
        Admissions {
            connect_rate,
            // Unbounded in the type, bounded by `rate_allows`: `LruCache::new` would allocate the
            // whole table up front.
            rates: Mutex::new(LruCache::unbounded()),
            admitted: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            emptied: Notify::new(),
            max_connections,
            max_per_ip,
        }
    }

    /// Reserves a connection slot for `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, AdmitError> {
        let key = limit_key(ip);
        if !self.rate_allows(key, Instant::now()) {
            return Err(AdmitError::Rate);
        }
        let prev = self.admitted.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_connections {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(AdmitError::Full);
        }
        if self.max_per_ip > 0 {
            let mut per = self.per_ip.lock();
            let n = per.entry(key).or_insert(0);
            if *n >= self.max_per_ip {
                drop(per);
                self.admitted.fetch_sub(1, Ordering::AcqRel);
                return Err(AdmitError::PerIp);
            }
            *n += 1;
        }
        Ok(Slot {
            owner: Some(Arc::clone(self)),
            ip,
        })
    }

    /// Takes one upgrade from the connect-rate bucket of address key `key` at `now`.
    fn rate_allows(&self, key: IpAddr, now: Instant) -> bool {
        if self.connect_rate == 0 {
            return true;
        }
        let rate = u64::from(self.connect_rate);
        let burst = rate * 2 * 1000;
        let mut rates = self.rates.lock();
        if rates.len() >= RATE_TABLE_MAX && !rates.contains(&key) {
            // The least recently seen address has refilled the longest: forgetting it loses the
            // least (nothing at all once it has been away for two seconds).
            rates.pop_lru();
        }
        let b = rates.get_or_insert_mut(key, || ConnectBucket {
            milli_tokens: burst,
            at: now,
        });
        let ms = now.saturating_duration_since(b.at).as_millis() as u64;
        b.milli_tokens = (b.milli_tokens + ms.saturating_mul(rate)).min(burst);
        b.at = now;
        if b.milli_tokens >= 1000 {
            b.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Frees a slot taken by [`Admissions::admit`] for `ip`.
    pub fn release(&self, ip: IpAddr) {
        if self.max_per_ip > 0 {
            let key = limit_key(ip);
            let mut per = self.per_ip.lock();
            if let Some(n) = per.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&key);
                }
            }
        }
        if self.admitted.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.emptied.notify_waiters();
        }
    }

    /// Admitted connections (live sessions plus upgrades in progress).
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// The global cap.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Waits until no connection is admitted.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.emptied.notified();
            if self.admitted() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn admission_limits_and_release() {
        let r = Arc::new(Admissions::new(2, 1, 0));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let a = r.admit(ip).unwrap();
        assert_eq!(r.admit(ip).err(), Some(AdmitError::PerIp));
        let _b = r.admit(other).unwrap();
        assert_eq!(
            r.admit("127.0.0.3".parse().unwrap()).err(),
            Some(AdmitError::Full)
        );
        drop(a);
        assert!(r.admit(ip).is_ok());
    }

    #[test]
    fn connect_rate_allows_a_burst_then_refills() {
        let r = Admissions::new(100, 0, 5);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t = Instant::now();
        let allowed = (0..20).filter(|_| r.rate_allows(ip, t)).count();
        assert_eq!(allowed, 10, "a burst of twice the rate");
        assert!(
            r.rate_allows("127.0.0.2".parse().unwrap(), t),
            "per address"
        );
        assert!(!r.rate_allows(ip, t + Duration::from_millis(100)));
        assert!(
            r.rate_allows(ip, t + Duration::from_millis(200)),
            "5/s refills one per 200 ms"
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(limit_key(ip("2001:db8::1")), limit_key(ip("2001:db8::2")));
        assert_eq!(
            limit_key(ip("2001:db8::1")),
            limit_key(ip("2001:db8::ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            limit_key(ip("2001:db8::1")),
            limit_key(ip("2001:db8:0:1::1"))
        );
        assert_ne!(limit_key(ip("::1")), limit_key(ip("2001:db8::1")));
        assert_eq!(limit_key(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(limit_key(ip("1.2.3.4")), ip("1.2.3.4"));
        assert_ne!(limit_key(ip("1.2.3.4")), limit_key(ip("1.2.3.5")));
    }

    #[test]
    fn per_address_limits_charge_the_64() {
        let r = Arc::new(Admissions::new(10, 1, 0));
        let a = r.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(r.admit(ip("2001:db8::2")).err(), Some(AdmitError::PerIp));
        let _other = r.admit(ip("2001:db8:0:1::1")).unwrap();
        drop(a);
        assert!(r.admit(ip("2001:db8::3")).is_ok(), "released under its key");
        let _v4 = r.admit(ip("1.2.3.4")).unwrap();
        assert_eq!(r.admit(ip("::ffff:1.2.3.4")).err(), Some(AdmitError::PerIp));
    }

    #[test]
    fn a_limited_address_stays_limited_while_a_scan_fills_the_rate_table() {
        let r = Admissions::new(100, 0, 1);
        let flooder = ip("192.0.2.1");
        let t = Instant::now();
        let burst = (0..10).filter(|_| r.rate_allows(flooder, t)).count();
        assert_eq!(burst, 2);
        // 65,536 other addresses arrive while the flooder keeps trying: it is seen recently,
        // so it is never the one forgotten.
        for i in 0..RATE_TABLE_MAX as u32 + 10 {
            let other = IpAddr::V4((0x0A00_0000 + i).into());
            assert!(r.rate_allows(other, t), "a new address has its burst");
            if i % 1000 == 0 {
                assert!(!r.rate_allows(flooder, t), "forgotten after {i} others");
            }
        }
        assert!(!r.rate_allows(flooder, t), "forgotten at the end");
        assert!(r.rates.lock().len() <= RATE_TABLE_MAX, "bounded");
        // The earliest of the scan were the least recently seen: they went first.
        assert!(!r.rates.lock().contains(&IpAddr::V4(0x0A00_0000.into())));
    }
}
