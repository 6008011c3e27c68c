//! A receipt rule from the JSON an operator typed: every problem is reported
//! with the path of the field that is wrong (`actions[1].statusCode: ...`),
//! which serde's derive cannot do for type errors.

use serde_json::{Map, Value};

use super::{BOUNCE_TEMPLATES, ReceiptRule, RuleAction, TlsPolicy};
use crate::types::{EmailAddress, normalize_domain};

const RULE_FIELDS: [&str; 6] = [
    "name",
    "enabled",
    "recipients",
    "tlsPolicy",
    "scanEnabled",
    "actions",
];

/// Parses and validates a rule; recipient conditions come out lower-cased.
pub fn parse_rule(json: &str) -> Result<ReceiptRule, String> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| format!("the rule is not valid JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("the rule must be a JSON object".into());
    };
    unknown_fields(&fields, &RULE_FIELDS, "")?;
    let name = required_str(&fields, "name", "")?;
    check_name(name)?;
    let recipients = match fields.get("recipients") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let raw = v
                    .as_str()
                    .ok_or_else(|| format!("recipients[{i}]: must be a string"))?;
                recipient_condition(raw).map_err(|why| format!("recipients[{i}]: {why}"))
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("recipients: must be an array of addresses or domains".into()),
    };
    let tls_policy = match fields.get("tlsPolicy") {
        None => TlsPolicy::Optional,
        Some(Value::String(s)) if s == "Require" => TlsPolicy::Require,
        Some(Value::String(s)) if s == "Optional" => TlsPolicy::Optional,
        Some(other) => {
            return Err(format!(
                "tlsPolicy: must be \"Require\" or \"Optional\", not {other}"
            ));
        }
    };
    let actions = match fields.get("actions") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, v)| parse_action(v, &format!("actions[{i}].")))
            .collect::<Result<Vec<_>, String>>()?,
        Some(Value::Array(_)) => return Err("actions: a rule needs at least one action".into()),
        Some(_) => return Err("actions: must be an array of actions".into()),
        None => return Err("actions: missing (e.g. [{\"type\": \"store\"}])".into()),
    };
    Ok(ReceiptRule {
        name: name.to_string(),
        enabled: optional_bool(&fields, "enabled", "", true)?,
        recipients,
        tls_policy,
        scan_enabled: optional_bool(&fields, "scanEnabled", "", true)?,
        actions,
    })
}

fn parse_action(value: &Value, at: &str) -> Result<RuleAction, String> {
    let Value::Object(fields) = value else {
        return Err(format!("{}: must be an object", at.trim_end_matches('.')));
    };
    let kind = required_str(fields, "type", at)?;
    let action = match kind {
        "store" => {
            unknown_fields(fields, &["type"], at)?;
            RuleAction::Store
        }
        "stop" => {
            unknown_fields(fields, &["type"], at)?;
            RuleAction::Stop
        }
        "bounce" => parse_bounce(fields, at)?,
        "addHeader" | "add-header" => {
            unknown_fields(fields, &["type", "headerName", "headerValue"], at)?;
            let header_name = required_str(fields, "headerName", at)?;
            let name_ok = !header_name.is_empty()
                && header_name.len() <= 50
                && header_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !name_ok {
                return Err(format!(
                    "{at}headerName: must be 1-50 letters, digits or '-', not {header_name:?}"
                ));
            }
            let header_value = required_str(fields, "headerValue", at)?;
            if header_value.len() > 2048 || header_value.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "{at}headerValue: must be at most 2048 characters without line breaks or control characters"
                ));
            }
            RuleAction::AddHeader {
                header_name: header_name.to_string(),
                header_value: header_value.to_string(),
            }
        }
        "webhook" => {
            unknown_fields(fields, &["type", "url", "includeContent"], at)?;
            let url = required_str(fields, "url", at)?;
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("{at}url: {e}"))?;
            if !["http", "https"].contains(&parsed.scheme()) || parsed.host_str().is_none() {
                return Err(format!("{at}url: must be an http:// or https:// URL"));
            }
            RuleAction::Webhook {
                url: url.to_string(),
                include_content: optional_bool(fields, "includeContent", at, false)?,
            }
        }
        other => {
            return Err(format!(
                "{at}type: unknown action {other:?} (store, bounce, addHeader, webhook or stop)"
            ));
        }
    };
    Ok(action)
}

/// Either a `template` (SES's console choices) or all three of reply code,
/// status code and message; given fields override the template's.
fn parse_bounce(fields: &Map<String, Value>, at: &str) -> Result<RuleAction, String> {
    unknown_fields(
        fields,
        &["type", "template", "smtpReplyCode", "statusCode", "message"],
        at,
    )?;
    let template = match fields.get("template") {
        None => None,
        Some(Value::String(t)) => Some(
            BOUNCE_TEMPLATES
                .iter()
                .find(|(name, ..)| name == t)
                .ok_or_else(|| {
                    let names: Vec<&str> = BOUNCE_TEMPLATES.iter().map(|t| t.0).collect();
                    format!(
                        "{at}template: unknown template {t:?} (one of {})",
                        names.join(", ")
                    )
                })?,
        ),
        Some(_) => return Err(format!("{at}template: must be a string")),
    };
    let field = |key: &str, from_template: Option<&str>| -> Result<String, String> {
        match (fields.get(key), from_template) {
            (Some(Value::String(s)), _) => Ok(s.clone()),
            (Some(_), _) => Err(format!("{at}{key}: must be a string")),
            (None, Some(t)) => Ok(t.to_string()),
            (None, None) => Err(format!("{at}{key}: missing (or give a \"template\")")),
        }
    };
    let smtp_reply_code = field("smtpReplyCode", template.map(|t| t.1))?;
    let status_code = field("statusCode", template.map(|t| t.2))?;
    let message = field("message", template.map(|t| t.3))?;
    let class = match smtp_reply_code.as_bytes() {
        [c @ (b'4' | b'5'), b'0'..=b'9', b'0'..=b'9'] => *c,
        _ => {
            return Err(format!(
                "{at}smtpReplyCode: must be a 4xx or 5xx reply code, not {smtp_reply_code:?}"
            ));
        }
    };
    if !is_status_code(&status_code, class) {
        return Err(format!(
            "{at}statusCode: must be an enhanced status code of class {}.x.x matching the reply code, not {status_code:?}",
            class as char
        ));
    }
    if message.trim().is_empty() || message.len() > 512 || message.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{at}message: must be 1-512 characters without line breaks"
        ));
    }
    Ok(RuleAction::Bounce {
        smtp_reply_code,
        status_code,
        message,
    })
}

/// `class.subject.detail` (RFC 3463): 1-3 digits each after the class.
fn is_status_code(code: &str, class: u8) -> bool {
    let parts: Vec<&str> = code.split('.').collect();
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    parts.len() == 3 && parts[0].as_bytes() == [class] && digits(parts[1], 3) && digits(parts[2], 3)
}

/// `user@d`, `d`, or `.d`; lower-cased.
fn recipient_condition(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.contains('@') {
        let addr = EmailAddress::parse(raw)
            .filter(|_| raw.matches('@').count() == 1)
            .ok_or_else(|| format!("{raw:?} is not an address"))?;
        return Ok(format!(
            "{}@{}",
            addr.local().to_ascii_lowercase(),
            addr.domain()
        ));
    }
    let (dot, domain) = match raw.strip_prefix('.') {
        Some(rest) => (".", rest),
        None => ("", raw),
    };
    let domain = normalize_domain(domain)
        .filter(|d| !d.starts_with('['))
        .ok_or_else(|| format!("{raw:?} is not an address, a domain or a .domain"))?;
    Ok(format!("{dot}{domain}"))
}

/// Rule and IP filter names, as SES allows them: letters, digits, '.', '_'
/// and '-', starting with a letter or digit, at most 64 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name: must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit, not {name:?}"
        ))
    }
}

fn unknown_fields(fields: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), String> {
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{at}{k}: unknown field (expected one of {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

fn required_str<'a>(
    fields: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, String> {
    match fields.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("{at}{key}: must be a string, not {other}")),
        None => Err(format!("{at}{key}: missing")),
    }
}

fn optional_bool(
    fields: &Map<String, Value>,
    key: &str,
    at: &str,
    default: bool,
) -> Result<bool, String> {
    match fields.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!("{at}{key}: must be true or false, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_rule_parses_with_defaults_filled_in() {
        let rule = parse_rule(
            r#"{"name": "support", "recipients": ["Help@Acme.test", "acme.test", ".Acme.test"],
                "tlsPolicy": "Require",
                "actions": [{"type": "addHeader", "headerName": "X-Team", "headerValue": "support"},
                            {"type": "store"}, {"type": "webhook", "url": "http://127.0.0.1:9/x"},
                            {"type": "bounce", "template": "MailboxDoesNotExist", "message": "Gone"},
                            {"type": "stop"}]}"#,
        )
        .unwrap();
        assert!(rule.enabled && rule.scan_enabled);
        assert_eq!(rule.tls_policy, TlsPolicy::Require);
        assert_eq!(
            rule.recipients,
            ["help@acme.test", "acme.test", ".acme.test"]
        );
        assert_eq!(
            rule.actions[2],
            RuleAction::Webhook {
                url: "http://127.0.0.1:9/x".into(),
                include_content: false
            }
        );
        assert_eq!(
            rule.actions[3],
            RuleAction::Bounce {
                smtp_reply_code: "550".into(),
                status_code: "5.1.1".into(),
                message: "Gone".into()
            }
        );
    }

    #[test]
    fn errors_name_the_wrong_field() {
        let err = |json: &str| parse_rule(json).unwrap_err();
        let store = r#"[{"type":"store"}]"#;
        assert!(err("[]").contains("JSON object"));
        assert!(err(&format!(r#"{{"actions":{store}}}"#)).starts_with("name: missing"));
        assert!(err(&format!(r#"{{"name":"a b","actions":{store}}}"#)).starts_with("name:"));
        assert!(
            err(&format!(r#"{{"name":"a","colour":1,"actions":{store}}}"#))
                .starts_with("colour: unknown field")
        );
        assert!(
            err(&format!(
                r#"{{"name":"a","tlsPolicy":"Always","actions":{store}}}"#
            ))
            .starts_with("tlsPolicy:")
        );
        assert!(
            err(&format!(
                r#"{{"name":"a","scanEnabled":"yes","actions":{store}}}"#
            ))
            .starts_with("scanEnabled:")
        );
        assert!(
            err(&format!(
                r#"{{"name":"a","recipients":["ok.test","a@@b"],"actions":{store}}}"#
            ))
            .starts_with("recipients[1]:")
        );
        assert!(err(r#"{"name":"a","actions":[]}"#).starts_with("actions:"));
        assert!(
            err(r#"{"name":"a","actions":[{"type":"store"},{"type":"explode"}]}"#)
                .starts_with("actions[1].type:")
        );
        assert!(
            err(r#"{"name":"a","actions":[{"type":"bounce","smtpReplyCode":"550","statusCode":"4.1.1","message":"x"}]}"#)
                .starts_with("actions[0].statusCode:")
        );
        assert!(
            err(r#"{"name":"a","actions":[{"type":"bounce","smtpReplyCode":"250","statusCode":"2.0.0","message":"x"}]}"#)
                .starts_with("actions[0].smtpReplyCode:")
        );
        assert!(
            err(r#"{"name":"a","actions":[{"type":"bounce","smtpReplyCode":"550","statusCode":"5.1.1"}]}"#)
                .starts_with("actions[0].message: missing")
        );
        assert!(
            err(r#"{"name":"a","actions":[{"type":"addHeader","headerName":"X Bad","headerValue":"v"}]}"#)
                .starts_with("actions[0].headerName:")
        );
        assert!(
            err(r#"{"name":"a","actions":[{"type":"addHeader","headerName":"X-Ok","headerValue":"a\r\nb"}]}"#)
                .starts_with("actions[0].headerValue:")
        );
        assert!(
            err(r#"{"name":"a","actions":[{"type":"webhook","url":"ftp://x/"}]}"#)
                .starts_with("actions[0].url:")
        );
        assert!(
            err(r#"{"name":"a","actions":[{"type":"store","bucket":"b"}]}"#)
                .starts_with("actions[0].bucket: unknown field")
        );
    }
}
