//! The coarse millisecond clock of liveness stamps: cheap to read on every frame, and monotonic.

use std::time::Instant;

/// Milliseconds since the server started.
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
