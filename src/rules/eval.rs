//! Evaluation of a tenant's rule set, SES order: IP filters, then for each
//! recipient the enabled rules that match it, in order, each rule's actions
//! in order until a `stop`. Everything here is decidable at RCPT time (the
//! rules do not depend on the verdicts), so a recipient is refused on the
//! wire rather than bounced after the fact.

use std::net::IpAddr;

use serde::Serialize;

use super::{FilterPolicy, IpFilter, ReceiptRule, RuleAction, TlsPolicy};
use crate::types::{EmailAddress, domain_within};

/// SES: an address in an Allow filter is accepted even when a Block filter
/// also covers it; otherwise any Block filter refuses it.
pub fn ip_allowed(filters: &[IpFilter], ip: IpAddr) -> bool {
    let covered = |policy| {
        filters
            .iter()
            .any(|f| f.policy == policy && f.cidr.contains(ip))
    };
    covered(FilterPolicy::Allow) || !covered(FilterPolicy::Block)
}

/// `user@d` (also `user+label@d`), `d`, or `.d` (subdomains of d, not d).
/// Conditions are stored lower-cased; addresses compare case-insensitively.
pub fn recipient_matches(condition: &str, recipient: &EmailAddress) -> bool {
    let domain = recipient.domain();
    if let Some((local, cond_domain)) = condition.rsplit_once('@') {
        return domain == cond_domain
            && (recipient.local().eq_ignore_ascii_case(local)
                || recipient.base_local().eq_ignore_ascii_case(local));
    }
    match condition.strip_prefix('.') {
        Some(parent) => domain != parent && domain_within(domain, parent),
        None => domain == condition,
    }
}

/// One rule applied to some recipients, with the actions that ran (those
/// after a `stop` did not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedRule {
    pub name: String,
    pub actions: Vec<RuleAction>,
    pub recipients: Vec<String>,
    /// Place in the rule set, so merged plans keep the rule set's order.
    #[serde(skip)]
    position: usize,
}

/// What the accepted recipients of one tenant get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub rules: Vec<AppliedRule>,
    /// False only when every matched rule has `scanEnabled: false`.
    pub scan: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    Accept(Plan),
    /// No enabled rule covers the recipient.
    NoMatch,
    /// A matching rule has `tlsPolicy: Require` and the session is plain.
    TlsRequired {
        rule: String,
    },
    /// A matching rule bounces the recipient with this reply.
    Bounce {
        rule: String,
        smtp_reply_code: String,
        status_code: String,
        message: String,
    },
}

/// The fate of one recipient under `rules` (in order).
pub fn plan_for(rules: &[ReceiptRule], recipient: &EmailAddress, tls: bool) -> RecipientOutcome {
    let mut plan = Plan::default();
    let matching = rules.iter().enumerate().filter(|(_, rule)| {
        rule.enabled
            && (rule.recipients.is_empty()
                || rule
                    .recipients
                    .iter()
                    .any(|c| recipient_matches(c, recipient)))
    });
    'rules: for (position, rule) in matching {
        if rule.tls_policy == TlsPolicy::Require && !tls {
            return RecipientOutcome::TlsRequired {
                rule: rule.name.clone(),
            };
        }
        plan.scan |= rule.scan_enabled;
        let mut applied = AppliedRule {
            name: rule.name.clone(),
            actions: Vec::new(),
            recipients: vec![recipient.to_string()],
            position,
        };
        for action in &rule.actions {
            match action {
                RuleAction::Bounce {
                    smtp_reply_code,
                    status_code,
                    message,
                } => {
                    return RecipientOutcome::Bounce {
                        rule: rule.name.clone(),
                        smtp_reply_code: smtp_reply_code.clone(),
                        status_code: status_code.clone(),
                        message: message.clone(),
                    };
                }
                RuleAction::Stop => {
                    applied.actions.push(RuleAction::Stop);
                    plan.rules.push(applied);
                    break 'rules;
                }
                other => applied.actions.push(other.clone()),
            }
        }
        plan.rules.push(applied);
    }
    if plan.rules.is_empty() {
        RecipientOutcome::NoMatch
    } else {
        RecipientOutcome::Accept(plan)
    }
}

impl Plan {
    /// Adds another recipient's plan: a rule both matched lists both
    /// recipients; rules stay in rule-set order.
    pub fn merge(&mut self, other: Plan) {
        self.scan |= other.scan;
        for rule in other.rules {
            match self.rules.iter_mut().find(|r| r.position == rule.position) {
                // Recipients may have stopped at different points of the
                // same rule: keep the longer list of actions.
                Some(known) => {
                    known.recipients.extend(rule.recipients);
                    if rule.actions.len() > known.actions.len() {
                        known.actions = rule.actions;
                    }
                }
                None => self.rules.push(rule),
            }
        }
        self.rules.sort_by_key(|r| r.position);
    }

    fn actions(&self) -> impl Iterator<Item = &RuleAction> {
        self.rules.iter().flat_map(|r| r.actions.iter())
    }

    /// True when a matched rule has a `store` action.
    pub fn stores(&self) -> bool {
        self.actions().any(|a| *a == RuleAction::Store)
    }

    /// The `addHeader` actions as header lines, each once, in order.
    pub fn header_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for action in self.actions() {
            if let RuleAction::AddHeader {
                header_name,
                header_value,
            } = action
            {
                let line = format!("{header_name}: {header_value}\r\n");
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Cidr, parse_rule};

    fn addr(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    fn rules(json: &[&str]) -> Vec<ReceiptRule> {
        json.iter().map(|j| parse_rule(j).unwrap()).collect()
    }

    #[test]
    fn recipient_conditions_follow_ses() {
        let m = |c: &str, a: &str| recipient_matches(c, &addr(a));
        assert!(m("user@acme.test", "user@acme.test"));
        assert!(m("user@acme.test", "User+news@ACME.test"));
        assert!(!m("user@acme.test", "user2@acme.test"));
        assert!(!m("user@acme.test", "user@sub.acme.test"));
        assert!(m("acme.test", "anyone@acme.test"));
        assert!(!m("acme.test", "anyone@sub.acme.test"));
        assert!(m(".acme.test", "anyone@sub.acme.test"));
        assert!(m(".acme.test", "x@a.b.acme.test"));
        assert!(!m(".acme.test", "anyone@acme.test"));
        assert!(!m(".acme.test", "anyone@notacme.test"));
    }

    #[test]
    fn allow_filters_win_over_block_filters() {
        let f = |name: &str, policy, cidr: &str| IpFilter {
            name: name.into(),
            policy,
            cidr: Cidr::parse(cidr).unwrap(),
        };
        let filters = [
            f("block-ten", FilterPolicy::Block, "10.0.0.0/8"),
            f("allow-one", FilterPolicy::Allow, "10.1.0.0/16"),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!ip_allowed(&filters, ip("10.2.3.4")));
        assert!(ip_allowed(&filters, ip("10.1.3.4")));
        assert!(ip_allowed(&filters, ip("192.0.2.1")));
        assert!(ip_allowed(&[], ip("10.2.3.4")));
    }

    #[test]
    fn no_enabled_matching_rule_is_no_match() {
        let set = rules(&[
            r#"{"name":"sales","recipients":["sales@acme.test"],"actions":[{"type":"store"}]}"#,
            r#"{"name":"off","enabled":false,"actions":[{"type":"store"}]}"#,
        ]);
        assert_eq!(
            plan_for(&set, &addr("info@acme.test"), true),
            RecipientOutcome::NoMatch
        );
        assert!(matches!(
            plan_for(&set, &addr("sales+x@acme.test"), true),
            RecipientOutcome::Accept(_)
        ));
    }

    #[test]
    fn rules_run_in_order_until_stop() {
        let set = rules(&[
            r#"{"name":"tag","actions":[{"type":"addHeader","headerName":"X-A","headerValue":"1"}]}"#,
            r#"{"name":"vip","recipients":["vip@acme.test"],"scanEnabled":false,
                "actions":[{"type":"store"},{"type":"stop"},{"type":"addHeader","headerName":"X-B","headerValue":"2"}]}"#,
            r#"{"name":"later","actions":[{"type":"addHeader","headerName":"X-C","headerValue":"3"}]}"#,
        ]);
        let RecipientOutcome::Accept(vip) = plan_for(&set, &addr("vip@acme.test"), false) else {
            panic!()
        };
        let names: Vec<&str> = vip.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["tag", "vip"]);
        assert_eq!(vip.rules[1].actions, [RuleAction::Store, RuleAction::Stop]);
        assert_eq!(vip.header_lines(), ["X-A: 1\r\n"]);
        assert!(vip.stores());
        // "tag" scans; a plan only skips scanning when no matched rule scans.
        assert!(vip.scan);

        let RecipientOutcome::Accept(mut other) = plan_for(&set, &addr("bob@acme.test"), false)
        else {
            panic!()
        };
        assert!(!other.stores());
        assert_eq!(other.header_lines(), ["X-A: 1\r\n", "X-C: 3\r\n"]);
        other.merge(vip);
        let names: Vec<&str> = other.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["tag", "vip", "later"]);
        assert_eq!(
            other.rules[0].recipients,
            ["bob@acme.test", "vip@acme.test"]
        );
        assert!(other.stores());
    }

    #[test]
    fn scanning_is_skipped_only_when_every_matched_rule_says_so() {
        let set = rules(&[r#"{"name":"a","scanEnabled":false,"actions":[{"type":"store"}]}"#]);
        let RecipientOutcome::Accept(plan) = plan_for(&set, &addr("x@acme.test"), true) else {
            panic!()
        };
        assert!(!plan.scan);
    }

    #[test]
    fn tls_require_and_bounce_refuse_the_recipient() {
        let set = rules(&[
            r#"{"name":"secure","recipients":["secure@acme.test"],"tlsPolicy":"Require","actions":[{"type":"store"}]}"#,
            r#"{"name":"gone","recipients":["gone@acme.test"],
                "actions":[{"type":"bounce","template":"MailboxDoesNotExist","message":"Moved away"}]}"#,
            r#"{"name":"default","actions":[{"type":"store"}]}"#,
        ]);
        assert_eq!(
            plan_for(&set, &addr("secure@acme.test"), false),
            RecipientOutcome::TlsRequired {
                rule: "secure".into()
            }
        );
        assert!(matches!(
            plan_for(&set, &addr("secure@acme.test"), true),
            RecipientOutcome::Accept(_)
        ));
        assert_eq!(
            plan_for(&set, &addr("gone@acme.test"), true),
            RecipientOutcome::Bounce {
                rule: "gone".into(),
                smtp_reply_code: "550".into(),
                status_code: "5.1.1".into(),
                message: "Moved away".into()
            }
        );
    }
}
