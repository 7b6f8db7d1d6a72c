//! Admission: connection slots under the global and per-address limits. A slot is taken before
//! the upgrade answers 101 and released by drop, however the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitError {
    /// `max_connections` reached.
    Full,
    /// `max_connections_per_ip` reached for this address.
    PerIp,
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
    pub fn new(max_connections: usize, max_per_ip: usize) -> Admissions {
        Admissions {
            admitted: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            emptied: Notify::new(),
            max_connections,
            max_per_ip,
        }
    }

    /// Reserves a connection slot for `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, AdmitError> {
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

    #[test]
    fn admission_limits_and_release() {
        let r = Arc::new(Admissions::new(2, 1));
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
}
