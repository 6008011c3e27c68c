//! SES receipt rules and IP filters: what a rule is (parsed from the JSON
//! operators give), and the pure evaluation of a tenant's rule set. Storage
//! lives in `control`; the gateway applies the outcome.

mod cidr;
mod eval;
mod parse;

pub use cidr::Cidr;
pub use eval::{AppliedRule, Plan, RecipientOutcome, ip_allowed, plan_for, recipient_matches};
pub use parse::{check_name, parse_rule};

use serde::{Deserialize, Serialize};

/// One receipt rule, with field names close to SES's `ReceiptRule`
/// (camelCase, as the JSON given to `sesame rule add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptRule {
    pub name: String,
    pub enabled: bool,
    /// Empty: every domain of the tenant.
    pub recipients: Vec<String>,
    pub tls_policy: TlsPolicy,
    /// False: clamd is skipped for mail that only this kind of rule matches.
    pub scan_enabled: bool,
    pub actions: Vec<RuleAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsPolicy {
    Require,
    Optional,
}

/// The actions of a rule, run in order. `type` names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum RuleAction {
    /// Keep the message in the tenant store (SES: S3Action).
    Store,
    /// Refuse the recipient on the wire with this reply (SES: BounceAction).
    #[serde(rename_all = "camelCase")]
    Bounce {
        smtp_reply_code: String,
        status_code: String,
        message: String,
    },
    /// SES: AddHeaderAction.
    #[serde(rename_all = "camelCase")]
    AddHeader {
        header_name: String,
        header_value: String,
    },
    /// POST the SES `Received` notification (SES: SNSAction).
    #[serde(rename_all = "camelCase")]
    Webhook { url: String, include_content: bool },
    /// Stop evaluating the rule set (SES: StopAction).
    Stop,
}

impl ReceiptRule {
    /// The rule every tenant starts with: store everything for its domains.
    pub fn default_store() -> ReceiptRule {
        ReceiptRule {
            name: "default".into(),
            enabled: true,
            recipients: Vec::new(),
            tls_policy: TlsPolicy::Optional,
            scan_enabled: true,
            actions: vec![RuleAction::Store],
        }
    }
}

/// One IP address filter (SES: `ReceiptFilter`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpFilter {
    pub name: String,
    pub policy: FilterPolicy,
    pub cidr: Cidr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterPolicy {
    Block,
    Allow,
}

impl FilterPolicy {
    pub fn parse(raw: &str) -> Option<FilterPolicy> {
        match raw.to_ascii_lowercase().as_str() {
            "block" => Some(FilterPolicy::Block),
            "allow" => Some(FilterPolicy::Allow),
            _ => None,
        }
    }
}

/// SES's bounce templates (the console's choices), for `"template"` in a
/// bounce action: (template, reply code, status code, message).
pub const BOUNCE_TEMPLATES: [(&str, &str, &str, &str); 6] = [
    (
        "MailboxDoesNotExist",
        "550",
        "5.1.1",
        "Mailbox does not exist",
    ),
    ("MessageTooLarge", "552", "5.3.4", "Message too large"),
    ("ExceededQuota", "552", "5.2.2", "Mailbox full"),
    (
        "MessageContentRejected",
        "500",
        "5.6.1",
        "Message content rejected",
    ),
    ("Unknown", "554", "5.0.0", "Unknown failure"),
    ("TemporaryFailure", "450", "4.0.0", "Temporary failure"),
];
