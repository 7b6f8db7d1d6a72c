//! The descriptor budget: every accepted socket (plain HTTP, TLS handshakes, sessions) holds a
//! permit for its whole life, taken before `accept`, so tether never runs itself out of file
//! descriptors. The pool is the session budget plus a few spare permits; sessions themselves are
//! capped at the budget by admission (`max_connections` never exceeds it), so when every session
//! slot is taken the spare permits still let `/health` and the API answer. Which connection will
//! upgrade is only known once its request is read, so permits are not told apart before `accept`:
//! a session that ends frees an admission slot at once, and the next upgrade gets in whichever
//! permit it was accepted on.

use std::fs::File;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits beyond the session budget, for plain HTTP while every session slot is taken.
pub const SPARE_PERMITS: usize = 16;

/// The budget of sockets.
pub struct Sockets {
    permits: Arc<Semaphore>,
    /// One descriptor held back so that, if the process still hits its limit, one pending
    /// connection can be accepted and closed at once instead of the accept loop spinning on it.
    reserve: Mutex<Option<File>>,
}

/// One accepted socket's permit.
pub struct Permit(OwnedSemaphorePermit);

/// Where a connection's permit sits until an upgrade takes it over (shared with the request).
pub type PermitCell = Arc<Mutex<Option<Permit>>>;

impl Sockets {
    /// A budget of `budget` session sockets plus [`SPARE_PERMITS`].
    pub fn new(budget: usize) -> Sockets {
        Sockets {
            permits: Arc::new(Semaphore::new(budget.max(1) + SPARE_PERMITS)),
            reserve: Mutex::new(File::open("/dev/null").ok()),
        }
    }

    /// Waits for a permit.
    pub async fn acquire(&self) -> Permit {
        match Arc::clone(&self.permits).acquire_owned().await {
            Ok(p) => Permit(p),
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// A session took over a permit with [`Permit::into_session`]; it gives it back.
    pub fn release_session(&self) {
        self.permits.add_permits(1);
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
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
    /// Hands the permit over to a session, which releases it through
    /// [`Sockets::release_session`] when it ends (its guard does): a session carries no permit
    /// object of its own.
    pub fn into_session(self) {
        self.0.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_spare_permits_come_on_top_and_sessions_give_theirs_back() {
        let s = Sockets::new(2);
        let mut held = Vec::new();
        for _ in 0..2 + SPARE_PERMITS {
            held.push(s.acquire().await);
        }
        assert_eq!(s.available(), 0);
        if let Some(p) = held.pop() {
            p.into_session();
        }
        assert_eq!(s.available(), 0, "the session still holds its permit");
        drop(held.pop());
        assert_eq!(
            s.available(),
            1,
            "a plain connection gives its permit back on drop"
        );
        s.release_session();
        assert_eq!(s.available(), 2);
    }
}
