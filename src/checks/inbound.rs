//! SPF, DKIM and DMARC for mail received on MX (mail-auth, resolving on the
//! configured nameservers). Run on the message exactly as it arrived,
//! before scanning strips anything, so that a stripped attachment can never
//! turn a valid signature into a failure.
//!
//! The results become two header fields (`Authentication-Results`,
//! `Received-SPF`) and SES verdicts. DNS trouble is a temporary error
//! (PROCESSING_FAILED), never a failure: DMARC is only enforced on answers.

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    MessageAuthenticator, ReceivedSpf, SpfOutput, SpfResult,
};
use serde::Serialize;

use crate::dns::resolver;
use crate::proto::headers::HeaderBlock;

/// All the lookups of one message together; a resolver that answers
/// nothing gives up per query well before this (see `resolver_settings`).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// An SES verdict status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SesStatus {
    Pass,
    Fail,
    /// Nothing to judge by (no record, no signature).
    Gray,
    /// DNS trouble or a broken record: nothing could be concluded.
    ProcessingFailed,
    /// Not checked on purpose (scanning off for this mail).
    Disabled,
}

impl SesStatus {
    /// `{"status": "PASS"}`, the shape of every SES verdict.
    pub fn verdict(self) -> serde_json::Value {
        serde_json::json!({ "status": self })
    }
}

/// What the checks concluded about one message.
#[derive(Debug, Clone)]
pub struct AuthReport {
    /// `Authentication-Results` and `Received-SPF`, complete lines.
    pub headers: Vec<String>,
    pub spf: SesStatus,
    pub dkim: SesStatus,
    pub dmarc: SesStatus,
    /// The author domain's policy (`none`, `quarantine`, `reject`), only
    /// when DMARC failed: as SES reports `dmarcPolicy`.
    pub dmarc_policy: Option<&'static str>,
    /// The RFC 5322 From domain DMARC was evaluated for.
    pub dmarc_domain: String,
}

impl AuthReport {
    pub fn dmarc_rejects(&self) -> bool {
        self.dmarc_policy == Some("reject")
    }

    pub fn dmarc_quarantines(&self) -> bool {
        self.dmarc_policy == Some("quarantine")
    }
}

/// Who sent the message, as the SMTP session saw it.
pub struct Envelope<'a> {
    pub ip: IpAddr,
    /// The HELO/EHLO name ("unknown" when the client gave none).
    pub helo: &'a str,
    /// MAIL FROM; empty for the null sender.
    pub mail_from: &'a str,
}

pub struct InboundAuth {
    authenticator: MessageAuthenticator,
    hostname: String,
}

impl InboundAuth {
    /// Looks records up on `nameservers` (`ip:port`; empty: the system's).
    pub fn new(nameservers: &[String], hostname: &str) -> anyhow::Result<InboundAuth> {
        let (config, mut options) = resolver::resolver_settings(nameservers)?;
        // Mail checks honour the records' TTLs, as any MTA's resolver does
        // (domain verification keeps its own, uncached resolver: it must see
        // what is published now).
        options.cache_size = 4096;
        let authenticator = MessageAuthenticator::new(config, options)
            .map_err(|e| anyhow::anyhow!("SPF/DKIM/DMARC resolver: {e}"))?;
        Ok(InboundAuth {
            authenticator,
            hostname: hostname.to_string(),
        })
    }

    pub async fn check(&self, envelope: &Envelope<'_>, raw: &[u8]) -> AuthReport {
        match tokio::time::timeout(CHECK_TIMEOUT, self.run(envelope, raw)).await {
            Ok(report) => report,
            Err(_) => {
                tracing::warn!(ip = %envelope.ip, "SPF/DKIM/DMARC checks timed out");
                self.timed_out(envelope)
            }
        }
    }

    async fn run(&self, envelope: &Envelope<'_>, raw: &[u8]) -> AuthReport {
        let host = self.hostname.as_str();
        let Envelope {
            ip,
            helo,
            mail_from,
        } = *envelope;
        // SPF of MAIL FROM; of the HELO name for the null sender (RFC 7208
        // 2.4). Looked up while DKIM keys are: on a DNS outage the waits
        // overlap instead of adding up.
        let spf = async {
            let params = if mail_from.is_empty() {
                SpfParameters::verify_ehlo(ip, helo, host)
            } else {
                SpfParameters::verify_mail_from(ip, helo, host, mail_from)
            };
            self.authenticator.verify_spf(params).await
        };
        let message = AuthenticatedMessage::parse(raw);
        let dkim = async {
            match &message {
                Some(message) => self.authenticator.verify_dkim(message).await,
                None => Vec::new(),
            }
        };
        let (spf, dkim) = tokio::join!(spf, dkim);
        // Each method part is rendered alone and joined below, in the
        // order spf, dkim, dmarc (the builder cannot say `dkim=none`).
        // Rendering writes the hostname first: it is cut off again.
        let spf_part = if mail_from.is_empty() {
            AuthenticationResults::new(host).with_spf_ehlo_result(&spf, ip, helo)
        } else {
            AuthenticationResults::new(host).with_spf_mailfrom_result(&spf, ip, mail_from, helo)
        }
        .to_string()
        .split_off(host.len());
        let received_spf = ReceivedSpf::new(&spf, ip, helo, mail_from, host).to_header();
        let spf_status = spf_status(&spf);

        let Some(message) = &message else {
            return AuthReport {
                headers: vec![
                    format!(
                        "Authentication-Results: {host}{spf_part};\r\n\tdkim=permerror (unparsable message);\r\n\tdmarc=permerror\r\n"
                    ),
                    received_spf,
                ],
                spf: spf_status,
                dkim: SesStatus::ProcessingFailed,
                dmarc: SesStatus::ProcessingFailed,
                dmarc_policy: None,
                dmarc_domain: String::new(),
            };
        };
        let from_domain = super::first_from(&HeaderBlock::parse(raw))
            .map(|a| a.domain().to_string())
            .unwrap_or_default();
        let dkim_part = if dkim.is_empty() {
            ";\r\n\tdkim=none".to_string()
        } else {
            AuthenticationResults::new("")
                .with_dkim_results(&dkim, &from_domain)
                .to_string()
        };
        let mail_from_domain = match mail_from.rsplit_once('@') {
            Some((_, domain)) => domain,
            None => helo,
        };
        let dmarc = self
            .authenticator
            .verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(
                message,
                &dkim,
                mail_from_domain,
                &spf,
            ))
            .await;
        let dmarc_status = dmarc_status(&dmarc, &spf, &dkim);
        // Written here, not by mail-auth's builder: that one says
        // `dmarc=none` when a record exists but neither SPF nor DKIM passed.
        let dmarc_part = format!(
            ";\r\n\tdmarc={} header.from={} policy.dmarc={}",
            dmarc_method_result(dmarc_status),
            pvalue(dmarc.domain()),
            dmarc.policy()
        );
        AuthReport {
            headers: vec![
                format!("Authentication-Results: {host}{spf_part}{dkim_part}{dmarc_part}\r\n"),
                received_spf,
            ],
            spf: spf_status,
            dkim: dkim_status(&dkim),
            dmarc: dmarc_status,
            dmarc_policy: (dmarc_status == SesStatus::Fail).then(|| policy_name(dmarc.policy())),
            dmarc_domain: dmarc.domain().to_string(),
        }
    }

    /// The report when DNS never answered in time: temporary errors only.
    fn timed_out(&self, envelope: &Envelope<'_>) -> AuthReport {
        let host = &self.hostname;
        let spf = SpfOutput::new(String::new()).with_result(SpfResult::TempError);
        AuthReport {
            headers: vec![
                format!(
                    "Authentication-Results: {host};\r\n\tspf=temperror (DNS timeout);\r\n\tdkim=temperror (DNS timeout);\r\n\tdmarc=temperror (DNS timeout)\r\n"
                ),
                ReceivedSpf::new(&spf, envelope.ip, envelope.helo, envelope.mail_from, host)
                    .to_header(),
            ],
            spf: SesStatus::ProcessingFailed,
            dkim: SesStatus::ProcessingFailed,
            dmarc: SesStatus::ProcessingFailed,
            dmarc_policy: None,
            dmarc_domain: String::new(),
        }
    }
}

/// SES: FAIL covers softfail; GRAY is "no policy" (none, neutral).
fn spf_status(spf: &SpfOutput) -> SesStatus {
    match spf.result() {
        SpfResult::Pass => SesStatus::Pass,
        SpfResult::Fail | SpfResult::SoftFail => SesStatus::Fail,
        SpfResult::Neutral | SpfResult::None => SesStatus::Gray,
        SpfResult::TempError | SpfResult::PermError => SesStatus::ProcessingFailed,
    }
}

/// PASS when any signature verifies; GRAY when there is none.
fn dkim_status(dkim: &[DkimOutput<'_>]) -> SesStatus {
    let any = |f: fn(&DkimResult) -> bool| dkim.iter().any(|o| f(o.result()));
    if dkim.is_empty() {
        SesStatus::Gray
    } else if any(|r| *r == DkimResult::Pass) {
        SesStatus::Pass
    } else if any(|r| matches!(r, DkimResult::TempError(_))) {
        SesStatus::ProcessingFailed
    } else {
        SesStatus::Fail
    }
}

/// A DMARC failure only counts when every input was an answer: a DNS error
/// on SPF or on a DKIM key could be what made the aligned check fail, and
/// refusing (p=reject) on a DNS hiccup would lose good mail.
fn dmarc_status(dmarc: &DmarcOutput, spf: &SpfOutput, dkim: &[DkimOutput<'_>]) -> SesStatus {
    let temp = |r: &DmarcResult| matches!(r, DmarcResult::TempError(_));
    if *dmarc.spf_result() == DmarcResult::Pass || *dmarc.dkim_result() == DmarcResult::Pass {
        return SesStatus::Pass;
    }
    if temp(dmarc.spf_result()) || temp(dmarc.dkim_result()) {
        return SesStatus::ProcessingFailed;
    }
    if dmarc.dmarc_record().is_none() {
        return match (dmarc.spf_result(), dmarc.dkim_result()) {
            (DmarcResult::PermError(_), _) | (_, DmarcResult::PermError(_)) => {
                SesStatus::ProcessingFailed
            }
            _ => SesStatus::Gray,
        };
    }
    let inputs_failed_on_dns = spf.result() == SpfResult::TempError
        || dkim
            .iter()
            .any(|o| matches!(o.result(), DkimResult::TempError(_)));
    if inputs_failed_on_dns {
        SesStatus::ProcessingFailed
    } else {
        SesStatus::Fail
    }
}

/// RFC 8601 result names for the SES statuses.
fn dmarc_method_result(status: SesStatus) -> &'static str {
    match status {
        SesStatus::Pass => "pass",
        SesStatus::Fail => "fail",
        SesStatus::Gray | SesStatus::Disabled => "none",
        SesStatus::ProcessingFailed => "temperror",
    }
}

/// A domain as a header property value: only what a domain may hold (the
/// From header is the sender's to write).
fn pvalue(domain: &str) -> String {
    let clean: String = domain
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if clean.is_empty() {
        "unknown".into()
    } else {
        clean
    }
}

fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::Error;
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::dmarc::Dmarc;

    fn spf(result: SpfResult) -> SpfOutput {
        SpfOutput::new("sender.test".into()).with_result(result)
    }

    fn dmarc_with_record(record: &str) -> DmarcOutput {
        DmarcOutput::new("sender.test".into()).with_record(std::sync::Arc::new(
            Dmarc::parse(record.as_bytes()).unwrap(),
        ))
    }

    #[test]
    fn spf_results_map_to_ses_verdicts() {
        assert_eq!(spf_status(&spf(SpfResult::Pass)), SesStatus::Pass);
        assert_eq!(spf_status(&spf(SpfResult::Fail)), SesStatus::Fail);
        assert_eq!(spf_status(&spf(SpfResult::SoftFail)), SesStatus::Fail);
        assert_eq!(spf_status(&spf(SpfResult::Neutral)), SesStatus::Gray);
        assert_eq!(spf_status(&spf(SpfResult::None)), SesStatus::Gray);
        assert_eq!(
            spf_status(&spf(SpfResult::TempError)),
            SesStatus::ProcessingFailed
        );
    }

    #[test]
    fn one_valid_signature_is_a_dkim_pass() {
        assert_eq!(dkim_status(&[]), SesStatus::Gray);
        let fail = DkimOutput::fail(Error::ParseError);
        let temp = DkimOutput::temp_err(Error::Io("DNS timeout".into()));
        assert_eq!(dkim_status(std::slice::from_ref(&fail)), SesStatus::Fail);
        assert_eq!(
            dkim_status(&[fail.clone(), temp.clone()]),
            SesStatus::ProcessingFailed
        );
        assert_eq!(
            dkim_status(&[fail, temp, DkimOutput::pass()]),
            SesStatus::Pass
        );
    }

    /// DMARC fails only on answers: with a record published, a DNS error
    /// on SPF or on a DKIM key is PROCESSING_FAILED (never enforced).
    #[test]
    fn dmarc_never_fails_on_a_dns_error() {
        let record = dmarc_with_record("v=DMARC1; p=reject");
        assert_eq!(
            dmarc_status(&record, &spf(SpfResult::Fail), &[]),
            SesStatus::Fail
        );
        assert_eq!(
            dmarc_status(&record, &spf(SpfResult::TempError), &[]),
            SesStatus::ProcessingFailed
        );
        let temp = DkimOutput::temp_err(Error::Io("DNS timeout".into()));
        assert_eq!(
            dmarc_status(&record, &spf(SpfResult::Fail), &[temp]),
            SesStatus::ProcessingFailed
        );
        let passed = record.clone().with_spf_result(DmarcResult::Pass);
        assert_eq!(
            dmarc_status(&passed, &spf(SpfResult::Pass), &[]),
            SesStatus::Pass
        );
        let walk_failed = DmarcOutput::new("sender.test".into())
            .with_spf_result(DmarcResult::TempError(Error::Io("DNS timeout".into())));
        assert_eq!(
            dmarc_status(&walk_failed, &spf(SpfResult::Pass), &[]),
            SesStatus::ProcessingFailed
        );
        let no_record = DmarcOutput::new("sender.test".into());
        assert_eq!(
            dmarc_status(&no_record, &spf(SpfResult::Fail), &[]),
            SesStatus::Gray
        );
    }
}
