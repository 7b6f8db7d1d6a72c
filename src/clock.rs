//! Time as tether reads it: the coarse millisecond clock of liveness stamps (cheap to read on
//! every frame, monotonic), and wall-clock seconds for token expiry. The one `Clock`; the engine
//! reads wall-clock milliseconds through its `engine::TimeSource`, which tests can stop.

use std::time::Instant;

/// Milliseconds since the server started.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Origin of the clock.
    epoch: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the clock started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Seconds since the Unix epoch, as token `exp` claims count them.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Wall-clock milliseconds since the Unix epoch: connection times, rotation, dashboard samples.
pub fn wall_ms() -> u64 {
    // A clock set before 1970 only makes times look old; it is no reason to fail.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
