//! Verification: compares what DNS serves with what sesame publishes,
//! updates the SES statuses and moves DKIM rotations along.

use serde::Serialize;

use super::status::{Observation, next};
use crate::config::Config;
use crate::control::{Control, Domain, KeyState, StatusUpdate, Tracked};
use crate::dns::records::{self, Purpose, Record};
use crate::dns::{Answer, DnsResolver};
use crate::types::unix_now;

#[derive(Debug, Serialize)]
pub struct RecordCheck {
    #[serde(flatten)]
    pub record: Record,
    pub found: Vec<String>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RecordCheck {
    fn observation(&self) -> Observation {
        match (&self.error, self.ok) {
            (_, true) => Observation::Match,
            (Some(_), false) => Observation::DnsError,
            (None, false) => Observation::Missing,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub domain: String,
    pub verification: Tracked,
    pub dkim: Tracked,
    pub mail_from: Tracked,
    pub records: Vec<RecordCheck>,
    /// Rotation steps taken during this run.
    pub rotation: Vec<String>,
}

/// Checks one domain against DNS and stores the new statuses.
pub async fn verify(
    control: &Control,
    config: &Config,
    resolver: &DnsResolver,
    domain: &Domain,
) -> anyhow::Result<Report> {
    let now = unix_now();
    // In parallel: an unreachable nameserver costs one timeout, not one per
    // record.
    let checks: Vec<RecordCheck> = futures::future::join_all(
        records::for_domain(domain, config)
            .into_iter()
            .map(|record| check(resolver, record)),
    )
    .await;
    let selector_ok = |state: KeyState| -> Vec<Observation> {
        let selectors: Vec<&str> = domain
            .keys
            .iter()
            .filter(|k| k.state == state)
            .map(|k| k.selector.as_str())
            .collect();
        checks
            .iter()
            .filter(|c| {
                c.record
                    .selector
                    .as_deref()
                    .is_some_and(|s| selectors.contains(&s))
            })
            .map(RecordCheck::observation)
            .collect()
    };
    let purpose = |purposes: &[Purpose]| -> Vec<Observation> {
        checks
            .iter()
            .filter(|c| purposes.contains(&c.record.purpose))
            .map(RecordCheck::observation)
            .collect()
    };
    let dkim_seen = combine(&selector_ok(KeyState::Active));
    let mail_from_seen = combine(&purpose(&[Purpose::MailFromMx, Purpose::MailFromSpf]));

    let mut rotation = Vec::new();
    // Retire before promoting: a key replaced in this run stays published
    // (retiring) until at least the next run, whatever the grace period.
    if control.retire_due_keys(&domain.domain, now)? {
        rotation.push("retired DKIM keys removed from DNS".to_string());
    }
    let pending = selector_ok(KeyState::Pending);
    if !pending.is_empty() && (domain.attested || combine(&pending) == Observation::Match) {
        control.promote_pending_keys(&domain.domain, now + config.dns.rotation_grace_secs)?;
        rotation
            .push("new DKIM keys verified: now signing with them; old keys retiring".to_string());
    }

    let window = config.dns.pending_window_secs;
    // Transitions start from the statuses as they are now, not as they were
    // before the DNS queries (another verification may have run meanwhile).
    let domain = &control.require_domain(&domain.domain)?;
    let update = if domain.attested {
        // Operator-attested (or dev) domains keep their statuses.
        StatusUpdate {
            verification: domain.verification,
            dkim: domain.dkim,
            mail_from: domain.mail_from,
        }
    } else {
        StatusUpdate {
            // As on SES, a domain is verified through its DKIM records.
            verification: next(domain.verification, dkim_seen, now, window),
            dkim: next(domain.dkim, dkim_seen, now, window),
            mail_from: next(domain.mail_from, mail_from_seen, now, window),
        }
    };
    control.update_domain_statuses(&domain.domain, &update)?;
    Ok(Report {
        domain: domain.domain.clone(),
        verification: update.verification,
        dkim: update.dkim,
        mail_from: update.mail_from,
        records: checks,
        rotation,
    })
}

/// All match → Match; otherwise a DNS error wins over a missing record,
/// since it says nothing about what is published.
fn combine(observations: &[Observation]) -> Observation {
    if observations.is_empty() {
        Observation::Missing
    } else if observations.iter().all(|o| *o == Observation::Match) {
        Observation::Match
    } else if observations.contains(&Observation::DnsError) {
        Observation::DnsError
    } else {
        Observation::Missing
    }
}

async fn check(resolver: &DnsResolver, record: Record) -> RecordCheck {
    let answer: Answer<Vec<String>> = match record.rtype {
        "MX" => match resolver.mx(&record.name).await {
            Answer::Found(mx) => {
                Answer::Found(mx.into_iter().map(|(p, h)| format!("{p} {h}")).collect())
            }
            Answer::Missing => Answer::Missing,
            Answer::Error(e) => Answer::Error(e),
        },
        _ => resolver.txt(&record.name).await,
    };
    let (found, error) = match answer {
        Answer::Found(found) => (found, None),
        Answer::Missing => (Vec::new(), None),
        Answer::Error(e) => (Vec::new(), Some(e)),
    };
    let ok = found.iter().any(|f| matches(&record, f));
    RecordCheck {
        record,
        found,
        ok,
        error,
    }
}

/// MX: the same exchange (preference is the operator's business). DKIM:
/// the same key type and key (tag order and spacing are free). Other TXT:
/// the same text, whitespace-insensitively.
fn matches(record: &Record, found: &str) -> bool {
    match record.purpose {
        Purpose::Mx | Purpose::MailFromMx => {
            let host = |v: &str| {
                v.split_whitespace()
                    .last()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            };
            host(found) == host(&record.value)
        }
        Purpose::Dkim => dkim_tags(found) == dkim_tags(&record.value),
        _ => normalize(found) == normalize(&record.value),
    }
}

fn dkim_tags(value: &str) -> (String, String) {
    let mut k = "rsa".to_string();
    let mut p = String::new();
    for tag in value.split(';') {
        if let Some((name, v)) = tag.split_once('=') {
            let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            match name.trim() {
                "k" => k = v,
                "p" => p = v,
                _ => {}
            }
        }
    }
    (k, p)
}

fn normalize(value: &str) -> String {
    value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(purpose: Purpose, value: &str) -> Record {
        Record {
            name: "x".into(),
            rtype: "TXT",
            value: value.into(),
            purpose,
            selector: None,
        }
    }

    #[test]
    fn dkim_records_match_on_key_not_formatting() {
        let r = record(Purpose::Dkim, "v=DKIM1; k=rsa; p=ABC");
        assert!(matches(&r, "v=DKIM1;k=rsa;  p=A BC"));
        assert!(matches(&r, "p=ABC; v=DKIM1"));
        assert!(!matches(&r, "v=DKIM1; k=rsa; p=ABD"));
        assert!(!matches(&r, "v=DKIM1; k=ed25519; p=ABC"));
    }

    #[test]
    fn mx_records_match_on_exchange() {
        let r = Record {
            rtype: "MX",
            ..record(Purpose::Mx, "10 mx.example.com")
        };
        assert!(matches(&r, "20 MX.example.com."));
        assert!(!matches(&r, "10 other.example.com"));
    }

    #[test]
    fn dns_errors_outweigh_missing_records() {
        use Observation::*;
        assert_eq!(combine(&[Match, Match]), Match);
        assert_eq!(combine(&[Match, Missing]), Missing);
        assert_eq!(combine(&[Missing, DnsError]), DnsError);
        assert_eq!(combine(&[]), Missing);
    }
}
