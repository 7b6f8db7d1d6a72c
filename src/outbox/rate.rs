//! The inbound message rate limit (`client_message_rate`, docs/protocol.md §2): a token bucket per
//! session with a burst of twice the rate, and the patience before a flood is closed with 1008.

/// The inbound rate limiter's state (a token bucket), touched only by the session task.
#[derive(Default)]
pub struct Bucket {
    /// Messages that may still be sent now, in thousandths.
    milli_tokens: u32,
    /// When the bucket was last refilled (clock milliseconds, wrapping).
    refilled_ms: u32,
    /// Since when the client has been over the limit without a break; 0 when it is not.
    over_since_ms: u32,
}

/// The rate limiter's verdict on one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Within the limit.
    Ok,
    /// Over it: refuse this message.
    Limited,
    /// Over it for longer than the patience allows: close with 1008.
    Persistent,
}

/// How long a client may keep exceeding its message rate before it is closed with 1008.
pub const RATE_PATIENCE_MS: u32 = 5000;

impl Bucket {
    /// Takes one message at `now_ms` against `rate` per second with a burst of twice that.
    pub fn take(&mut self, rate: u32, now_ms: u64) -> Rate {
        // Wrapping u32 milliseconds: a session lives for less than 49 days between messages.
        let now = now_ms as u32;
        let burst = rate.saturating_mul(2).saturating_mul(1000);
        if self.refilled_ms == 0 && self.milli_tokens == 0 && self.over_since_ms == 0 {
            self.milli_tokens = burst;
        } else {
            let elapsed = now.wrapping_sub(self.refilled_ms);
            let refill = u64::from(elapsed) * u64::from(rate);
            self.milli_tokens =
                (u64::from(self.milli_tokens) + refill).min(u64::from(burst)) as u32;
        }
        self.refilled_ms = now;
        // A client counts as back within its rate once it has regained half its burst; a flood
        // that lets one message through now and then is still a flood.
        if self.milli_tokens >= burst / 2 {
            self.over_since_ms = 0;
        }
        let persistent =
            self.over_since_ms != 0 && now.wrapping_sub(self.over_since_ms) >= RATE_PATIENCE_MS;
        if persistent {
            return Rate::Persistent;
        }
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            return Rate::Ok;
        }
        if self.over_since_ms == 0 {
            self.over_since_ms = now.max(1);
        }
        Rate::Limited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_bucket_allows_a_burst_then_limits_then_closes_a_persistent_flood() {
        let mut b = Bucket::default();
        let start = 1000;
        for _ in 0..20 {
            assert_eq!(
                b.take(10, start),
                Rate::Ok,
                "a burst of twice the rate passes"
            );
        }
        assert_eq!(b.take(10, start), Rate::Limited);
        // A flood at 5x the rate: some messages pass, the rest are refused, and it is closed
        // once it has lasted the patience, not before.
        let mut first_persistent = None;
        for i in 1..=140 {
            let now = start + i * 50;
            let verdicts: Vec<Rate> = (0..5).map(|_| b.take(10, now)).collect();
            if verdicts.contains(&Rate::Persistent) && first_persistent.is_none() {
                first_persistent = Some(now - start);
            }
        }
        let after = first_persistent.expect("a persistent flood is closed");
        assert!((5000..5100).contains(&after), "closed after {after} ms");
        // A client that calms down is forgiven.
        let mut calm = Bucket::default();
        for _ in 0..21 {
            calm.take(10, start);
        }
        assert_eq!(calm.take(10, start + 1100), Rate::Ok);
        assert_eq!(calm.take(10, start + 7000), Rate::Ok);
    }
}
