//! From part verdicts and the configured policies to what happens to the
//! message. Pure, so every combination is tested without clamd.

use serde::Serialize;

use super::verdict::{PartVerdict, Problem, Verdict};
use crate::config::{InfectedAction, ScanConfig, ScanFailurePolicy};
use crate::proto::{Reply, texts};

/// What became of a message with malware in it, as notifications say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Infected parts replaced by notices, the rest queued.
    Stripped,
    /// Refused with a 5xx.
    Rejected,
    /// Refused with a 4xx (some other part could not be scanned); the
    /// client will try again.
    Deferred,
}

impl Action {
    /// What a message with malware in it came to, given its refusal (if any).
    pub fn of(refusal: Option<&Reply>) -> Action {
        match refusal {
            None => Action::Stripped,
            Some(reply) if reply.is_transient() => Action::Deferred,
            Some(_) => Action::Rejected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stripped => "stripped",
            Action::Rejected => "rejected",
            Action::Deferred => "deferred",
        }
    }
}

/// Each signature found, once, in the order found.
pub fn signatures(parts: &[PartVerdict]) -> Vec<&str> {
    let mut found: Vec<&str> = Vec::new();
    for sig in parts
        .iter()
        .filter(|p| p.verdict == Verdict::Fail)
        .filter_map(|p| p.signature.as_deref())
    {
        if !found.contains(&sig) {
            found.push(sig);
        }
    }
    found
}

/// The reply that refuses the message, or `None` to queue it (with any
/// infected parts stripped).
pub fn decide(
    parts: &[PartVerdict],
    on_infected: InfectedAction,
    config: &ScanConfig,
) -> Option<Reply> {
    let signatures = signatures(parts);
    if !signatures.is_empty() && on_infected == InfectedAction::Reject {
        return Some(texts::virus_detected(&signatures.join(", ")));
    }
    // Parts without a verdict: a permanent refusal beats a temporary one
    // (the cause will still be there on retry), which beats tagging.
    let mut deferred = None;
    for part in parts {
        let (policy, permanent) = match part.problem {
            None => continue,
            Some(Problem::Oversize) => (
                config.oversize,
                texts::too_large_to_scan(&part.display_name(), part.size),
            ),
            Some(Problem::ScannerError) => (config.on_scanner_error, texts::could_not_scan()),
        };
        match policy {
            ScanFailurePolicy::Reject => return Some(permanent),
            ScanFailurePolicy::Tempfail => deferred = Some(texts::scan_temporary_failure()),
            ScanFailurePolicy::AcceptAndTag => {}
        }
    }
    deferred
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::clamd::Answer;
    use crate::scan::parts::Part;
    use crate::scan::verdict::Outcome;

    fn part(name: &str, outcome: Outcome) -> PartVerdict {
        let part = Part {
            filename: Some(name.into()),
            content_type: "application/octet-stream".into(),
            data: Vec::new(),
            size: 68,
            sha256: String::new(),
            site: None,
        };
        PartVerdict::new(&part, outcome)
    }

    fn infected(sig: &str) -> PartVerdict {
        part("eicar.com", Outcome::Answer(Answer::Infected(sig.into())))
    }

    fn refusal(d: Option<Reply>) -> String {
        d.map_or_else(|| "accept".into(), |r| r.to_string())
    }

    #[test]
    fn infected_with_reject_names_each_signature_once() {
        let parts = [infected("Eicar"), infected("Eicar"), infected("Other")];
        let d = decide(&parts, InfectedAction::Reject, &ScanConfig::default());
        assert_eq!(Action::of(d.as_ref()), Action::Rejected);
        assert_eq!(
            refusal(d),
            "554 5.7.1 Message rejected: virus detected (Eicar, Other)"
        );
    }

    #[test]
    fn infected_with_strip_is_accepted() {
        let clean = part("a.pdf", Outcome::Answer(Answer::Clean));
        let d = decide(
            &[clean, infected("Eicar")],
            InfectedAction::Strip,
            &ScanConfig::default(),
        );
        assert_eq!(Action::of(d.as_ref()), Action::Stripped);
        assert_eq!(refusal(d), "accept");
    }

    #[test]
    fn scanner_errors_follow_on_scanner_error() {
        let down = || [part("a.pdf", Outcome::Failed("connection refused".into()))];
        let mut config = ScanConfig::default();
        assert_eq!(
            refusal(decide(&down(), InfectedAction::Strip, &config)),
            "451 4.7.0 Temporary service failure"
        );
        config.on_scanner_error = ScanFailurePolicy::AcceptAndTag;
        assert_eq!(
            refusal(decide(&down(), InfectedAction::Strip, &config)),
            "accept"
        );
        config.on_scanner_error = ScanFailurePolicy::Reject;
        assert_eq!(
            refusal(decide(&down(), InfectedAction::Strip, &config)),
            "554 5.7.1 Message rejected: attachments could not be scanned for viruses"
        );
    }

    #[test]
    fn oversize_follows_its_own_policy_and_permanent_wins() {
        let parts = [
            part("big.iso", Outcome::Oversize { limit: 10 }),
            part("a.pdf", Outcome::Failed("timed out".into())),
        ];
        let mut config = ScanConfig::default();
        assert_eq!(
            refusal(decide(&parts, InfectedAction::Strip, &config)),
            "552 5.3.4 Message rejected: attachment \"big.iso\" is too large to scan for viruses (68 bytes)"
        );
        config.oversize = ScanFailurePolicy::AcceptAndTag;
        assert_eq!(
            refusal(decide(&parts, InfectedAction::Strip, &config)),
            "451 4.7.0 Temporary service failure"
        );
        config.on_scanner_error = ScanFailurePolicy::AcceptAndTag;
        assert_eq!(
            refusal(decide(&parts, InfectedAction::Strip, &config)),
            "accept"
        );
    }

    #[test]
    fn a_detection_deferred_by_another_part_says_so() {
        let parts = [
            infected("Eicar"),
            part("b", Outcome::Failed("timed out".into())),
        ];
        let d = decide(&parts, InfectedAction::Strip, &ScanConfig::default());
        assert_eq!(Action::of(d.as_ref()), Action::Deferred);
    }
}
