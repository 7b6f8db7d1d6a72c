//! The descriptor budget: every accepted socket (plain HTTP, TLS handshakes, sessions) holds a
//! permit for its whole life, taken before `accept`, so tether never runs itself out of file
//! descriptors. A few spare permits keep `/health` and the API answering when the budget is spent;
//! connections on a spare permit are served, but not upgraded.

use std::fs::File;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits kept aside for plain HTTP when every ordinary one is taken.
pub const SPARE_PERMITS: usize = 16;

/// The budget of sockets.
pub struct Sockets {
    /// Ordinary permits: any connection, upgrades included.
    main: Arc<Semaphore>,
    /// Spare permits: HTTP only (health checks, the API) while the main ones are spent.
    spare: Arc<Semaphore>,
    /// One descriptor held back so that, if the process still hits its limit, one pending
    /// connection can be accepted and closed at once instead of the accept loop spinning on it.
    reserve: Mutex<Option<File>>,
}

/// One accepted socket's permit.
pub enum Permit {
    /// An ordinary permit.
    Main(OwnedSemaphorePermit),
    /// A spare one: this connection may not upgrade.
    Spare {
        /// Held for its drop, which gives the permit back.
        _held: OwnedSemaphorePermit,
    },
}

/// Where a connection's permit sits until an upgrade takes it over (shared with the request).
pub type PermitCell = Arc<Mutex<Option<Permit>>>;

impl Sockets {
    /// A budget of `budget` ordinary sockets plus [`SPARE_PERMITS`].
    pub fn new(budget: usize) -> Sockets {
        Sockets {
            main: Arc::new(Semaphore::new(budget.max(1))),
            spare: Arc::new(Semaphore::new(SPARE_PERMITS)),
            reserve: Mutex::new(File::open("/dev/null").ok()),
        }
    }

    /// Waits for a permit: an ordinary one if any is free, else a spare one.
    pub async fn acquire(&self) -> Permit {
        if let Ok(p) = Arc::clone(&self.main).try_acquire_owned() {
            return Permit::Main(p);
        }
        tokio::select! {
            p = Arc::clone(&self.main).acquire_owned() => match p {
                Ok(p) => Permit::Main(p),
                // The semaphores are never closed; wait on the other one instead.
                Err(_) => self.spare_permit().await,
            },
            p = self.spare_permit() => p,
        }
    }

    async fn spare_permit(&self) -> Permit {
        match Arc::clone(&self.spare).acquire_owned().await {
            Ok(p) => Permit::Spare { _held: p },
            Err(_) => std::future::pending().await,
        }
    }

    /// A session took over an ordinary permit with [`Permit::into_session`]; it gives it back.
    pub fn release_session(&self) {
        self.main.add_permits(1);
    }

    /// Ordinary permits free now.
    pub fn available(&self) -> usize {
        self.main.available_permits()
    }

    /// Frees the reserved descriptor (to accept and shed one connection after EMFILE).
    pub fn take_reserve(&self) -> Option<File> {
        self.reserve.lock().take()
    }

    /// Holds a descriptor back again.
    pub fn restore_reserve(&self) {
        let mut r = self.reserve.lock();
        if r.is_none() {
            *r = File::open("/dev/null").ok();
        }
    }
}

impl Permit {
    /// Hands an ordinary permit over to a session, which releases it through
    /// [`Sockets::release_session`] when it ends (its guard does): a session carries no permit
    /// object of its own. `None` for a spare permit: that connection may not upgrade.
    pub fn into_session(self) -> Option<()> {
        match self {
            Permit::Main(p) => {
                p.forget();
                Some(())
            }
            Permit::Spare { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spare_permits_when_the_budget_is_spent_and_sessions_give_theirs_back() {
        let s = Sockets::new(2);
        let a = s.acquire().await;
        let b = s.acquire().await;
        assert!(matches!(a, Permit::Main(_)) && matches!(b, Permit::Main(_)));
        let c = s.acquire().await;
        assert!(
            matches!(c, Permit::Spare { .. }),
            "past the budget: a spare permit"
        );
        assert!(c.into_session().is_none(), "a spare permit cannot upgrade");
        assert!(a.into_session().is_some());
        drop(b);
        assert_eq!(s.available(), 1, "the session still holds its permit");
        s.release_session();
        assert_eq!(s.available(), 2);
    }
}
