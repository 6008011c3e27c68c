//! The retry schedule: exponential backoff with jitter, capped, until the
//! message is older than the maximum age. Times are Unix seconds, and the
//! next attempt time is stored on the recipient row in queue.db, so the
//! schedule survives restarts.

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Delay after the first failure.
    pub base_secs: i64,
    /// Upper bound on one delay.
    pub max_delay_secs: i64,
    /// Give up (bounce) once the message is this old.
    pub max_age_secs: i64,
}

/// What to do after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryAt(i64),
    GiveUp,
}

impl Schedule {
    /// The delay before attempt `attempts + 1`, without jitter:
    /// base, 2·base, 4·base, ... capped at `max_delay_secs`.
    pub fn delay(&self, attempts: u32) -> i64 {
        let exp = attempts.saturating_sub(1).min(30);
        self.base_secs
            .saturating_mul(1i64 << exp)
            .min(self.max_delay_secs)
            .max(1)
    }

    /// After `attempts` failed attempts (at least 1) of a message received
    /// at `received_at`, at time `now`. Jitter takes up to a fifth off the
    /// delay so that a burst of failures does not retry in lockstep. The
    /// last retry is placed exactly at the expiry, so a message gets one
    /// attempt at its maximum age before it bounces.
    pub fn next(&self, attempts: u32, received_at: i64, now: i64) -> Next {
        let expires = received_at + self.max_age_secs;
        if now >= expires {
            return Next::GiveUp;
        }
        let delay = self.delay(attempts);
        let jitter = rand::thread_rng().gen_range(0..=delay / 5);
        Next::RetryAt((now + delay - jitter).min(expires))
    }

    pub fn expires_at(&self, received_at: i64) -> i64 {
        received_at + self.max_age_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Schedule = Schedule {
        base_secs: 60,
        max_delay_secs: 3600,
        max_age_secs: 86400,
    };

    #[test]
    fn delays_double_up_to_the_cap() {
        let delays: Vec<i64> = (1..=8).map(|a| S.delay(a)).collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(S.delay(1000), 3600);
    }

    #[test]
    fn jitter_stays_within_a_fifth_and_never_passes_expiry() {
        for attempts in 1..10 {
            for _ in 0..50 {
                let Next::RetryAt(at) = S.next(attempts, 0, 1000) else {
                    panic!("gave up early");
                };
                let delay = S.delay(attempts);
                assert!(at <= 1000 + delay && at >= 1000 + delay - delay / 5);
            }
        }
        assert_eq!(S.next(3, 0, 86300), Next::RetryAt(86400));
    }

    #[test]
    fn gives_up_at_max_age() {
        assert_eq!(S.next(1, 0, 86400), Next::GiveUp);
        let Next::RetryAt(at) = S.next(1, 100, 86400) else {
            panic!("gave up before max age");
        };
        assert!((86448..=86460).contains(&at), "{at}");
    }
}
