//! The descriptor budget: every accepted socket (plain HTTP, TLS handshakes, sessions) holds a
//! permit for its whole life, taken before `accept`, so tether never runs itself out of file
//! descriptors. The pool is the session budget plus a few spare permits; sessions themselves are
//! capped at the budget by admission (`max_connections` never exceeds it), so when every session
//! slot is taken the spare permits still let `/health` and the API answer. Which connection will
//! upgrade is only known once its request is read, so permits are not told apart before `accept`:
//! a session that ends frees an admission slot at once, and the next upgrade gets in whichever
//! permit it was accepted on.
//!
//! One address may hold at most `max_http_connections_per_ip` permits for plain HTTP (docs/protocol.md
//! §13), so no single peer spends the spare permits: the count rides on the permit and goes back
//! when the connection ends or its permit passes to a session (an upgraded connection is governed
//! by admission's `max_connections_per_ip` instead). Addresses are keyed as admission keys them.
//!
//! The budget is the process's open-file limit less a reserve ([`socket_budget`]), which the
//! binary first raises to the hard limit ([`raise_fd_limit`]).

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::net::admission::limit_key;

/// File descriptors kept back from `max_connections = 0` for the listener, logs, HTTP API calls.
const FD_RESERVE: u64 = 100;

/// Permits beyond the session budget, for plain HTTP while every session slot is taken.
pub const SPARE_PERMITS: usize = 16;

/// The budget of sockets.
pub struct Sockets {
    permits: Arc<Semaphore>,
    /// One descriptor held back so that, if the process still hits its limit, one pending
    /// connection can be accepted and closed at once instead of the accept loop spinning on it.
    reserve: Mutex<Option<File>>,
    /// Plain HTTP connections per address key.
    http: Arc<HttpConns>,
}

/// One accepted socket's permit.
pub struct Permit {
    /// The socket's share of the descriptor budget.
    socket: OwnedSemaphorePermit,
    /// Its count against its address while it is plain HTTP; `None` when not counted.
    http: Option<HttpSlot>,
}

/// Open plain HTTP connections per address key, for `max_http_connections_per_ip`.
struct HttpConns {
    /// The cap; 0 = no limit (nothing is counted).
    max_per_ip: usize,
    /// Only addresses with at least one open connection: bounded by the descriptor budget.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One plain HTTP connection's count against its address; given back on drop.
struct HttpSlot {
    /// The counter it belongs to.
    owner: Arc<HttpConns>,
    /// The address key charged.
    key: IpAddr,
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The address already holds `max_http_connections_per_ip` plain HTTP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyHttp;

/// Where a connection's permit sits until an upgrade takes it over (shared with the request).
pub type PermitCell = Arc<Mutex<Option<Permit>>>;

impl Sockets {
    /// A budget of `budget` session sockets plus [`SPARE_PERMITS`], and at most
    /// `max_http_per_ip` plain HTTP connections per address (0 = no limit).
    pub fn new(budget: usize, max_http_per_ip: usize) -> Sockets {
        Sockets {
            permits: Arc::new(Semaphore::new(budget.max(1) + SPARE_PERMITS)),
            reserve: Mutex::new(File::open("/dev/null").ok()),
            http: Arc::new(HttpConns {
                max_per_ip: max_http_per_ip,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Waits for a permit.
    pub async fn acquire(&self) -> Permit {
        match Arc::clone(&self.permits).acquire_owned().await {
            Ok(socket) => Permit { socket, http: None },
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// A session took over a permit with [`Permit::into_session`]; it gives it back.
    pub fn release_session(&self) {
        self.permits.add_permits(1);
    }

    /// Counts `permit`'s connection as plain HTTP from `ip`, or refuses it (and frees the permit)
    /// when that address is at `max_http_connections_per_ip`.
    pub fn count_http(&self, mut permit: Permit, ip: IpAddr) -> Result<Permit, TooManyHttp> {
        let max = self.http.max_per_ip;
        if max == 0 {
            return Ok(permit);
        }
        let key = limit_key(ip);
        {
            let mut open = self.http.open.lock();
            let n = open.entry(key).or_insert(0);
            if *n >= max {
                return Err(TooManyHttp);
            }
            *n += 1;
        }
        permit.http = Some(HttpSlot {
            owner: Arc::clone(&self.http),
            key,
        });
        Ok(permit)
    }

    /// Plain HTTP connections counted against `ip`'s address key now.
    #[cfg(test)]
    pub fn http_open(&self, ip: IpAddr) -> usize {
        self.http
            .open
            .lock()
            .get(&limit_key(ip))
            .copied()
            .unwrap_or(0)
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
    /// object of its own. The connection stops counting as plain HTTP here.
    pub fn into_session(self) {
        self.socket.forget();
    }
}

/// Sockets the process may hold: its descriptor limit minus a reserve for the listener, files
/// and logs. Every accepted socket counts against it, sessions and plain HTTP alike.
pub fn socket_budget() -> usize {
    let (soft, _) = fd_limits().unwrap_or((1024, 1024));
    soft.saturating_sub(FD_RESERVE).max(1) as usize
}

/// The soft and hard RLIMIT_NOFILE of this process.
fn fd_limits() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft open-file limit to the hard one (a server wants every descriptor it may
/// have; the shell's default soft limit is often 1024); returns the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let (soft, hard) = fd_limits().ok_or_else(std::io::Error::last_os_error)?;
    if soft >= hard {
        return Ok(soft);
    }
    let lim = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_spare_permits_come_on_top_and_sessions_give_theirs_back() {
        let s = Sockets::new(2, 0);
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

    #[tokio::test]
    async fn plain_http_is_capped_per_address_until_closed_or_upgraded() {
        let s = Sockets::new(10, 2);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let a = s.count_http(s.acquire().await, ip).unwrap();
        let b = s.count_http(s.acquire().await, "2001:db8::2".parse().unwrap());
        let b = b.unwrap();
        let free = s.available();
        assert_eq!(s.count_http(s.acquire().await, ip).err(), Some(TooManyHttp));
        assert_eq!(
            s.available(),
            free,
            "a refused connection gives its permit back"
        );
        let other = s.count_http(s.acquire().await, "2001:db8:1::1".parse().unwrap());
        assert!(other.is_ok(), "another /64 has its own count");
        drop(a);
        let c = s.count_http(s.acquire().await, ip).unwrap();
        assert_eq!(s.http_open(ip), 2);
        c.into_session();
        assert_eq!(
            s.http_open(ip),
            1,
            "an upgraded connection is no longer plain HTTP"
        );
        drop(b);
        assert_eq!(s.http_open(ip), 0);
        let unlimited = Sockets::new(10, 0);
        for _ in 0..5 {
            let p = unlimited.count_http(unlimited.acquire().await, ip).unwrap();
            p.into_session();
        }
        assert_eq!(
            unlimited.http_open(ip),
            0,
            "nothing is counted without a cap"
        );
    }
}
