//! The parsed form of a stored message (mail-parser): addresses, subject,
//! dates, threading headers, bodies, every header, and the attachments
//! with their decoded bytes. A message mail-parser cannot read is still
//! stored (raw only), with empty fields.

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};
use serde_json::{Value, json};

/// An address as the API shows it.
fn addresses(a: Option<&Address<'_>>) -> Vec<Value> {
    a.map(|a| {
        a.iter()
            .filter_map(|addr| {
                let address = addr.address.as_deref()?;
                Some(json!({"name": addr.name.as_deref(), "address": address}))
            })
            .collect()
    })
    .unwrap_or_default()
}

fn text_list(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

pub struct Attachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub content_id: Option<String>,
    /// `attachment` or `inline` as the sender wrote it; None when absent.
    pub disposition: Option<String>,
    /// Decoded bytes (what a recipient would save).
    pub data: Vec<u8>,
}

pub struct Parsed {
    pub from: Vec<Value>,
    pub to: Vec<Value>,
    pub cc: Vec<Value>,
    pub reply_to: Vec<Value>,
    pub subject: Option<String>,
    /// The Date header as Unix seconds.
    pub date: Option<i64>,
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Every header of the top-level part, in order: `{name, value}` with
    /// the value unfolded as written.
    pub headers: Vec<Value>,
    pub attachments: Vec<Attachment>,
}

impl Parsed {
    /// Every address in From, for filtering (lower-cased).
    pub fn from_search(&self) -> String {
        search_text(&self.from)
    }

    /// Every address in To and Cc, for filtering (lower-cased).
    pub fn to_search(&self) -> String {
        search_text(&[self.to.as_slice(), self.cc.as_slice()].concat())
    }
}

fn search_text(list: &[Value]) -> String {
    list.iter()
        .filter_map(|a| a["address"].as_str())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn parse(raw: &[u8]) -> Parsed {
    let Some(message) = MessageParser::new().parse(raw) else {
        return Parsed {
            from: Vec::new(),
            to: Vec::new(),
            cc: Vec::new(),
            reply_to: Vec::new(),
            subject: None,
            date: None,
            message_id: None,
            in_reply_to: Vec::new(),
            references: Vec::new(),
            text: None,
            html: None,
            headers: Vec::new(),
            attachments: Vec::new(),
        };
    };
    let headers = message
        .headers_raw()
        .map(|(name, value)| {
            let value = value.replace("\r\n", "").replace('\n', "");
            json!({"name": name, "value": value.trim()})
        })
        .collect();
    let attachments = message
        .attachments()
        .map(|part| Attachment {
            filename: part.attachment_name().map(str::to_string),
            content_type: part.content_type().map_or_else(
                || "application/octet-stream".to_string(),
                |ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_string(),
                },
            ),
            content_id: part.content_id().map(str::to_string),
            disposition: part.content_disposition().map(|d| d.ctype().to_string()),
            data: part.contents().to_vec(),
        })
        .collect();
    Parsed {
        from: addresses(message.from()),
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        reply_to: addresses(message.reply_to()),
        subject: message.subject().map(str::to_string),
        date: message.date().map(|d| d.to_timestamp()),
        message_id: message.message_id().map(str::to_string),
        in_reply_to: text_list(message.in_reply_to()),
        references: text_list(message.references()),
        text: (message.text_body_count() > 0)
            .then(|| message.body_text(0).map(|t| t.into_owned()))
            .flatten(),
        html: (message.html_body_count() > 0)
            .then(|| message.body_html(0).map(|t| t.into_owned()))
            .flatten(),
        headers,
        attachments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &[u8] = b"From: Ann <ann@a.test>\r\nTo: b@b.test, Cee <c@c.test>\r\n\
        Cc: d@d.test\r\nReply-To: r@a.test\r\nSubject: Re: plans\r\n\
        Date: Wed, 27 Jan 2016 14:58:45 +0000\r\nMessage-ID: <m2@a.test>\r\n\
        In-Reply-To: <m1@b.test>\r\nReferences: <m0@b.test> <m1@b.test>\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n\
        --xx\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
        --xx\r\nContent-Type: application/pdf; name=\"p.pdf\"\r\n\
        Content-Disposition: attachment; filename=\"p.pdf\"\r\nContent-ID: <cid1>\r\n\
        Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--xx--\r\n";

    #[test]
    fn a_message_is_parsed_into_its_fields_and_attachments() {
        let p = parse(RAW);
        assert_eq!(
            p.from,
            vec![json!({"name": "Ann", "address": "ann@a.test"})]
        );
        assert_eq!(p.to.len(), 2);
        assert_eq!(p.to_search(), "b@b.test c@c.test d@d.test");
        assert_eq!(p.reply_to[0]["address"], "r@a.test");
        assert_eq!(p.subject.as_deref(), Some("Re: plans"));
        assert_eq!(p.date, Some(1_453_906_725));
        assert_eq!(p.message_id.as_deref(), Some("m2@a.test"));
        assert_eq!(p.in_reply_to, vec!["m1@b.test"]);
        assert_eq!(p.references, vec!["m0@b.test", "m1@b.test"]);
        assert_eq!(p.text.as_deref().map(str::trim), Some("see attached"));
        assert_eq!(
            p.headers[4],
            json!({"name": "Subject", "value": "Re: plans"})
        );
        assert_eq!(p.attachments.len(), 1);
        let a = &p.attachments[0];
        assert_eq!(a.filename.as_deref(), Some("p.pdf"));
        assert_eq!(a.content_type, "application/pdf");
        assert_eq!(a.content_id.as_deref(), Some("cid1"));
        assert_eq!(a.disposition.as_deref(), Some("attachment"));
        assert_eq!(a.data, b"hello");
    }
}
