//! Admission: connection slots under the global and per-address limits. A slot is taken before
//! the upgrade answers 101 and released by drop, however the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

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

/// Addresses whose connect-rate state is kept before idle ones are forgotten: a bound on the
/// memory a scan from many addresses can take.
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
    /// Connect-rate buckets by address, only kept when a rate is set.
    rates: Mutex<HashMap<IpAddr, ConnectBucket>>,
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
            rates: Mutex::new(HashMap::new()),
            admitted: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            emptied: Notify::new(),
            max_connections,
            max_per_ip,
        }
    }

    /// Reserves a connection slot for `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, AdmitError> {
        if !self.rate_allows(ip, Instant::now()) {
            return Err(AdmitError::Rate);
        }
        let prev = self.admitted.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_connections {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(AdmitError::Full);
        }
        if self.max_per_ip > 0 {
            let mut per = self.per_ip.lock();
            let n = per.entry(ip).or_insert(0);
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

    /// Takes one upgrade from `ip`'s connect-rate bucket at `now`.
    fn rate_allows(&self, ip: IpAddr, now: Instant) -> bool {
        if self.connect_rate == 0 {
            return true;
        }
        let rate = u64::from(self.connect_rate);
        let burst = rate * 2 * 1000;
        let mut rates = self.rates.lock();
        if rates.len() >= RATE_TABLE_MAX {
            // A full bucket holds no information: forget those first.
            rates.retain(|_, b| {
                let ms = now.saturating_duration_since(b.at).as_millis() as u64;
                b.milli_tokens + ms.saturating_mul(rate) < burst
            });
            if rates.len() >= RATE_TABLE_MAX {
                rates.clear();
            }
        }
        let b = rates.entry(ip).or_insert(ConnectBucket {
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
            let mut per = self.per_ip.lock();
            if let Some(n) = per.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&ip);
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
}
