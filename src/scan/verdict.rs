//! Verdicts per part and per message, in SES's vocabulary (`virusVerdict`:
//! PASS, FAIL, PROCESSING_FAILED).

use serde::Serialize;

use super::clamd::Answer;
use super::parts::{Part, Site};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Pass,
    Fail,
    ProcessingFailed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::ProcessingFailed => "PROCESSING_FAILED",
        }
    }
}

/// Why a part has no verdict from clamd; each has its own policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Oversize,
    ScannerError,
}

/// How one part was judged, as events and logs record it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartVerdict {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    pub content_type: String,
    pub size: usize,
    pub sha256: String,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Why it could not be scanned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip)]
    pub problem: Option<Problem>,
    #[serde(skip)]
    pub site: Option<Site>,
}

/// What became of one part's scan.
#[derive(Debug, Clone)]
pub enum Outcome {
    Answer(Answer),
    Oversize { limit: usize },
    Failed(String),
}

impl PartVerdict {
    pub fn new(part: &Part, outcome: Outcome) -> PartVerdict {
        let size = part.size;
        let (verdict, signature, reason, problem) = match outcome {
            Outcome::Answer(Answer::Clean) => (Verdict::Pass, None, None, None),
            Outcome::Answer(Answer::Infected(sig)) => (Verdict::Fail, Some(sig), None, None),
            Outcome::Answer(Answer::TooLarge) => (
                Verdict::ProcessingFailed,
                None,
                Some(format!("{size} bytes, over clamd's StreamMaxLength")),
                Some(Problem::Oversize),
            ),
            Outcome::Oversize { limit } => (
                Verdict::ProcessingFailed,
                None,
                Some(format!("{size} bytes, over the {limit}-byte scan limit")),
                Some(Problem::Oversize),
            ),
            Outcome::Failed(why) => (
                Verdict::ProcessingFailed,
                None,
                Some(why),
                Some(Problem::ScannerError),
            ),
        };
        PartVerdict {
            filename: part.filename.clone(),
            content_type: part.content_type.clone(),
            size,
            sha256: part.sha256.clone(),
            verdict,
            signature,
            reason,
            problem,
            site: part.site,
        }
    }

    /// How notices, replies and mails name the part.
    pub fn display_name(&self) -> String {
        match &self.filename {
            Some(name) => printable(name, 120),
            None => format!("(unnamed {} part)", printable(&self.content_type, 60)),
        }
    }
}

/// The message verdict: FAIL if anything was found (even if it was then
/// stripped), PROCESSING_FAILED if some part went unscanned, else PASS.
pub fn message_verdict(parts: &[PartVerdict]) -> Verdict {
    if parts.iter().any(|p| p.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if parts.iter().any(|p| p.verdict == Verdict::ProcessingFailed) {
        Verdict::ProcessingFailed
    } else {
        Verdict::Pass
    }
}

/// The `X-Sesame-Virus-Verdict` value: the SES token, and for
/// PROCESSING_FAILED the reason as an RFC 5322 comment, so readers that take
/// the first word still see the token.
pub fn header_value(parts: &[PartVerdict]) -> String {
    let verdict = message_verdict(parts);
    match parts
        .iter()
        .find(|p| p.verdict == Verdict::ProcessingFailed)
    {
        Some(p) if verdict == Verdict::ProcessingFailed => {
            let reason = p.reason.as_deref().unwrap_or("not scanned");
            let comment = ascii_comment(&format!("{}: {reason}", p.display_name()));
            format!("{} ({comment})", verdict.as_str())
        }
        _ => verdict.as_str().to_string(),
    }
}

/// Control characters out (names end up in headers, replies and log
/// lines), length capped.
pub fn printable(s: &str, max_chars: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(max_chars)
        .collect()
}

/// Printable ASCII that is safe inside a header comment.
fn ascii_comment(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '(' | ')' | '\\' => '_',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(outcome: Outcome, name: Option<&str>) -> PartVerdict {
        let part = Part {
            filename: name.map(str::to_string),
            content_type: "application/zip".into(),
            data: Vec::new(),
            size: 30_000_000,
            sha256: "00".into(),
            site: None,
        };
        PartVerdict::new(&part, outcome)
    }

    #[test]
    fn fail_wins_over_processing_failed_and_pass() {
        let pass = verdict(Outcome::Answer(Answer::Clean), Some("a"));
        let fail = verdict(Outcome::Answer(Answer::Infected("Sig".into())), Some("b"));
        let slow = verdict(Outcome::Failed("timed out".into()), Some("c"));
        assert_eq!(message_verdict(&[]), Verdict::Pass);
        assert_eq!(message_verdict(std::slice::from_ref(&pass)), Verdict::Pass);
        assert_eq!(
            message_verdict(&[pass.clone(), slow.clone()]),
            Verdict::ProcessingFailed
        );
        assert_eq!(message_verdict(&[slow, fail.clone(), pass]), Verdict::Fail);
        assert_eq!(header_value(&[fail]), "FAIL");
    }

    #[test]
    fn processing_failed_says_why_in_a_safe_comment() {
        let big = verdict(
            Outcome::Oversize { limit: 1000 },
            Some("big (1).zip\r\nX: y"),
        );
        assert_eq!(big.problem, Some(Problem::Oversize));
        assert_eq!(
            header_value(&[big]),
            "PROCESSING_FAILED (big _1_.zip??X: y: 30000000 bytes, over the 1000-byte scan limit)"
        );
        let unnamed = verdict(Outcome::Failed("connection refused".into()), None);
        assert_eq!(
            header_value(&[unnamed]),
            "PROCESSING_FAILED (_unnamed application/zip part_: connection refused)"
        );
    }

    #[test]
    fn part_verdicts_serialize_like_the_events_show_them() {
        let fail = verdict(
            Outcome::Answer(Answer::Infected("Sig".into())),
            Some("x.zip"),
        );
        assert_eq!(
            serde_json::to_value(&fail).unwrap(),
            serde_json::json!({
                "filename": "x.zip", "contentType": "application/zip", "size": 30000000,
                "sha256": "00", "verdict": "FAIL", "signature": "Sig"
            })
        );
    }
}
