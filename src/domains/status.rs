//! SES status transitions, as a pure function of what DNS showed.

use crate::control::{IdentityStatus, Tracked};

/// What a check of the published records found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    Match,
    /// Absent or different from what sesame publishes.
    Missing,
    /// The DNS could not answer (timeout, SERVFAIL...).
    DnsError,
}

/// PENDING waits `window` seconds for the records, then FAILED (0: at once). A verified
/// status never fails on a DNS error: it becomes TEMPORARY_FAILURE. If the
/// records disappear from a verified domain, it is TEMPORARY_FAILURE for up
/// to `window`, then FAILED. Records that reappear verify again.
pub fn next(current: Tracked, observed: Observation, now: i64, window: i64) -> Tracked {
    use IdentityStatus::*;
    let changed = |status| Tracked { status, since: now };
    let expired = now - current.since >= window;
    match (observed, current.status) {
        (Observation::Match, Success) => current,
        (Observation::Match, _) => changed(Success),
        (Observation::DnsError, Success) => changed(TemporaryFailure),
        (Observation::Missing, Success) => changed(TemporaryFailure),
        (_, TemporaryFailure) if observed == Observation::Missing && expired => changed(Failed),
        (_, Pending | NotStarted) if expired => changed(Failed),
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdentityStatus::*;

    const WINDOW: i64 = 100;

    fn at(status: IdentityStatus, since: i64) -> Tracked {
        Tracked { status, since }
    }

    #[test]
    fn pending_verifies_when_records_appear() {
        assert_eq!(
            next(at(Pending, 0), Observation::Match, 50, WINDOW),
            at(Success, 50)
        );
    }

    #[test]
    fn pending_waits_then_fails() {
        assert_eq!(
            next(at(Pending, 0), Observation::Missing, 50, WINDOW),
            at(Pending, 0)
        );
        assert_eq!(
            next(at(Pending, 0), Observation::DnsError, 50, WINDOW),
            at(Pending, 0)
        );
        assert_eq!(
            next(at(Pending, 0), Observation::Missing, 100, WINDOW),
            at(Failed, 100)
        );
    }

    #[test]
    fn dns_errors_never_fail_a_verified_domain() {
        let temp = next(at(Success, 0), Observation::DnsError, 10, WINDOW);
        assert_eq!(temp, at(TemporaryFailure, 10));
        assert_eq!(next(temp, Observation::DnsError, 10_000, WINDOW), temp);
        assert_eq!(
            next(temp, Observation::Match, 10_001, WINDOW),
            at(Success, 10_001)
        );
    }

    #[test]
    fn vanished_records_fail_after_the_window() {
        let temp = next(at(Success, 0), Observation::Missing, 10, WINDOW);
        assert_eq!(temp, at(TemporaryFailure, 10));
        assert_eq!(next(temp, Observation::Missing, 50, WINDOW), temp);
        assert_eq!(
            next(temp, Observation::Missing, 110, WINDOW),
            at(Failed, 110)
        );
    }

    #[test]
    fn failed_domains_recover_when_records_are_fixed() {
        assert_eq!(
            next(at(Failed, 0), Observation::Missing, 500, WINDOW),
            at(Failed, 0)
        );
        assert_eq!(
            next(at(Failed, 0), Observation::Match, 500, WINDOW),
            at(Success, 500)
        );
    }
}
