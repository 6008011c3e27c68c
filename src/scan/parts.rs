//! Finding what to scan: every attachment and every non-text part of a
//! message, nested message/rfc822 parts included, decoded, with the byte
//! range that stripping it would replace.

use mail_parser::{Encoding, Message, MessageParser, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

/// Byte offsets of a MIME part in the raw message: its header block starts
/// at `start`, its body at `body`, and it ends at `end` (before the CRLF
/// that precedes the next boundary, which belongs to the boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    pub start: usize,
    pub body: usize,
    pub end: usize,
}

/// One part to scan.
#[derive(Debug)]
pub struct Part {
    pub filename: Option<String>,
    pub content_type: String,
    /// Decoded content: what the recipient would save to disk. Moved out
    /// when it is sent to clamd.
    pub data: Vec<u8>,
    /// Decoded size.
    pub size: usize,
    pub sha256: String,
    /// What stripping replaces. Usually the part itself; for a part inside
    /// an encoded message/rfc822, that whole enclosing part (the inner
    /// offsets point into decoded bytes, not into the message).
    pub site: Option<Site>,
}

/// The parts of `raw` to send to clamd. A message mail-parser cannot make
/// sense of is scanned whole (clamd parses mail itself).
pub fn collect(raw: &[u8]) -> Vec<Part> {
    let mut parts = Vec::new();
    match MessageParser::new().parse(raw) {
        Some(message) => walk(message, raw.len(), Within::Message, &mut parts),
        None => parts.push(part(None, "message/rfc822".into(), raw.to_vec(), None)),
    }
    parts
}

/// Where the parts being walked sit.
#[derive(Clone, Copy)]
enum Within {
    /// In the raw message: their own offsets locate them.
    Message,
    /// Inside an encoded message/rfc822 part: only that part (if its own
    /// offsets made sense) can be removed.
    Encoded(Option<Site>),
}

/// Consumes the parsed message, so that decoded parts move into `out`
/// instead of being copied.
fn walk(message: Message<'_>, raw_len: usize, within: Within, out: &mut Vec<Part>) {
    for (index, mime) in message.parts.into_iter().enumerate() {
        let own = Site {
            start: mime.offset_header as usize,
            body: mime.offset_body as usize,
            end: mime.offset_end as usize,
        };
        let own =
            (own.start <= own.body && own.body <= own.end && own.end <= raw_len).then_some(own);
        let site = match within {
            Within::Message => own,
            Within::Encoded(enclosing) => enclosing,
        };
        let is_attachment = message.attachments.contains(&(index as u32));
        let content_type = mime.content_type().map_or_else(
            || "text/plain".to_string(),
            |ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("octet-stream")),
        );
        let filename = mime.attachment_name().map(str::to_string);
        let data = match mime.body {
            // Containers: their children are listed in `parts` too.
            PartType::Multipart(_) => continue,
            PartType::Message(nested) => {
                // Unencoded, the nested parts' offsets are offsets into the
                // outer message; encoded, they are offsets into the decoded
                // bytes, so only the whole enclosing part can be removed.
                let inner = match (within, mime.encoding) {
                    (Within::Message, Encoding::None) => Within::Message,
                    (Within::Message, _) => Within::Encoded(own),
                    (encoded, _) => encoded,
                };
                walk(nested, raw_len, inner, out);
                continue;
            }
            // Body text is read, not opened; text sent as an attachment is
            // a file like any other.
            PartType::Text(_) | PartType::Html(_) if !is_attachment => continue,
            PartType::Text(text) | PartType::Html(text) => text.into_owned().into_bytes(),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => bytes.into_owned(),
        };
        out.push(part(filename, content_type, data, site));
    }
}

fn part(filename: Option<String>, content_type: String, data: Vec<u8>, site: Option<Site>) -> Part {
    Part {
        filename,
        content_type: content_type.to_ascii_lowercase(),
        sha256: hex::encode(Sha256::digest(&data)),
        size: data.len(),
        data,
        site,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A message with every kind of part: body text, a base64 attachment, a
    /// 7bit text attachment, an inline image, a nested message/rfc822 with
    /// its own attachment, and a base64-encoded message/rfc822.
    pub const MIXED: &str = "From: a@b.test\r\nSubject: t\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n\
--XX\r\nContent-Type: text/plain\r\n\r\nhello body\r\n\
--XX\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n\
Content-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
aGVsbG8gd29ybGQ=\r\n\
--XX\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"notes.txt\"\r\n\r\n\
plain notes\r\n\
--XX\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\n\r\nPNGDATA\r\n\
--XX\r\nContent-Type: message/rfc822\r\n\r\n\
From: x@y.test\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=\"YY\"\r\n\r\n\
--YY\r\nContent-Type: text/plain\r\n\r\ninner text\r\n\
--YY\r\nContent-Type: application/zip; name=\"z.zip\"\r\n\
Content-Disposition: attachment; filename=\"z.zip\"\r\n\r\nZIPDATA\r\n--YY--\r\n\r\n\
--XX\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
RnJvbTogcUByLnRlc3QNCkNvbnRlbnQtVHlwZTogYXBwbGljYXRpb24vb2N0ZXQtc3RyZWFtDQoNCkJJTkFSWQ==\r\n\
--XX--\r\nepilogue\r\n";

    fn slice(raw: &str, site: Site) -> &str {
        &raw[site.start..site.end]
    }

    #[test]
    fn every_attachment_and_non_text_part_is_collected() {
        let parts = collect(MIXED.as_bytes());
        let seen: Vec<(Option<&str>, &str, &[u8])> = parts
            .iter()
            .map(|p| (p.filename.as_deref(), p.content_type.as_str(), &p.data[..]))
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    Some("a.bin"),
                    "application/octet-stream",
                    &b"hello world"[..]
                ),
                (Some("notes.txt"), "text/plain", b"plain notes"),
                (None, "image/png", b"PNGDATA"),
                (Some("z.zip"), "application/zip", b"ZIPDATA"),
                (None, "application/octet-stream", b"BINARY"),
            ]
        );
        assert_eq!(
            parts[0].sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn sites_cover_exactly_the_part() {
        let parts = collect(MIXED.as_bytes());
        let a = parts[0].site.unwrap();
        assert!(slice(MIXED, a).starts_with("Content-Type: application/octet-stream"));
        assert!(slice(MIXED, a).ends_with("aGVsbG8gd29ybGQ="));
        assert!(MIXED[a.body..].starts_with("aGVsbG8gd29ybGQ="));
        // Unencoded nested message: the inner attachment itself.
        let z = parts[3].site.unwrap();
        assert!(slice(MIXED, z).starts_with("Content-Type: application/zip"));
        assert!(slice(MIXED, z).ends_with("ZIPDATA"));
        // Encoded nested message: the whole enclosing part.
        let enc = parts[4].site.unwrap();
        assert!(slice(MIXED, enc).starts_with("Content-Type: message/rfc822"));
        assert!(slice(MIXED, enc).ends_with("DQoNCkJJTkFSWQ=="));
    }

    #[test]
    fn single_part_messages_are_covered() {
        let text = "From: a@b.test\r\nSubject: hi\r\n\r\njust text\r\n";
        assert!(collect(text.as_bytes()).is_empty());
        let binary = "From: a@b.test\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n";
        let parts = collect(binary.as_bytes());
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].content_type, "application/pdf");
        assert_eq!(parts[0].site.unwrap().start, 0);
        assert_eq!(parts[0].site.unwrap().end, binary.len());
    }
}
