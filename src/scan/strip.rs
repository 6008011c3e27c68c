//! MIME surgery on the raw message. Infected parts are cut out by the byte
//! offsets mail-parser reported and replaced by a short text/plain notice;
//! every other byte stays as the sender wrote it (no re-serialization, so
//! nothing else changes meaning or breaks a signature). Also the verdict
//! header, which only sesame may write.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::parts::Site;
use crate::proto::headers::HeaderBlock;

pub const VERDICT_HEADER: &str = "X-Sesame-Virus-Verdict";

/// An infected part to remove.
#[derive(Debug, Clone)]
pub struct Removal<'a> {
    pub site: Site,
    /// How the notice names the file (see `verdict::display_name`).
    pub name: &'a str,
    pub signature: &'a str,
}

/// `raw` with every removal's site replaced by a notice. Parts that share a
/// site (files inside one encoded message/rfc822) get one notice naming
/// them all. Fails, and changes nothing, if sites overlap or fall outside
/// the message: the caller must then not deliver the infected bytes.
pub fn strip(raw: &[u8], removals: &[Removal<'_>]) -> Result<Vec<u8>, String> {
    let mut sorted: Vec<&Removal<'_>> = removals.iter().collect();
    sorted.sort_by_key(|r| r.site);
    let mut out = Vec::with_capacity(raw.len());
    let mut copied = 0;
    let mut i = 0;
    while i < sorted.len() {
        let site = sorted[i].site;
        let same = sorted[i..].iter().take_while(|r| r.site == site).count();
        if site.start < copied
            || site.body < site.start
            || site.end < site.body
            || site.end > raw.len()
        {
            return Err(format!(
                "part at bytes {}..{} cannot be cut out of a {}-byte message",
                site.start,
                site.end,
                raw.len()
            ));
        }
        out.extend_from_slice(&raw[copied..site.start]);
        notice_part(&raw[site.start..site.body], &sorted[i..i + same], &mut out);
        copied = site.end;
        i += same;
    }
    out.extend_from_slice(&raw[copied..]);
    Ok(out)
}

/// The notice: the part's own non-Content-* header fields (for a whole
/// message, its From, Subject and so on), text/plain headers, and the text.
fn notice_part(headers: &[u8], found: &[&Removal<'_>], out: &mut Vec<u8>) {
    let mut text =
        String::from("This attachment was removed by sesame because it contains malware.\r\n");
    for r in found {
        text.push_str(&format!(
            "\r\nFile: {}\r\nSignature: {}\r\n",
            r.name, r.signature
        ));
    }
    let (encoding, body) = text_body(&text);
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    out.extend_from_slice(b"Content-Disposition: inline\r\n");
    out.extend_from_slice(format!("Content-Transfer-Encoding: {encoding}\r\n").as_bytes());
    let block = HeaderBlock::parse(headers);
    for field in &block.fields {
        if field.name.len() >= 8 && field.name[..8].eq_ignore_ascii_case("content-") {
            continue;
        }
        let bytes = &headers[field.start..field.end];
        out.extend_from_slice(bytes);
        if !bytes.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
}

/// A text body (CRLF lines) and the transfer encoding it needs: as it is
/// when ASCII, base64 otherwise (file names may be UTF-8, and nothing
/// sesame writes should depend on 8BITMIME).
pub fn text_body(text: &str) -> (&'static str, Vec<u8>) {
    if text.is_ascii() {
        return ("7bit", text.as_bytes().to_vec());
    }
    let mut out = Vec::new();
    for line in B64.encode(text.as_bytes()).as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    ("base64", out)
}

/// Puts `value` in the verdict header, first removing every copy the sender
/// wrote: a forged `PASS` must never reach a recipient. With `None` only
/// the forgeries go.
pub fn set_verdict(mut message: Vec<u8>, value: Option<&str>) -> Vec<u8> {
    let ours = value.map(|v| format!("{VERDICT_HEADER}: {v}\r\n"));
    let block = HeaderBlock::parse(&message);
    if block.count(VERDICT_HEADER) > 0 {
        return block.rewrite(&[VERDICT_HEADER], ours.as_slice());
    }
    if let Some(ours) = ours {
        // The usual case: shift in place rather than copy a big message.
        message.splice(0..0, ours.into_bytes());
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::parts::{collect, tests::MIXED};

    fn removal<'a>(raw: &[u8], index: usize, name: &'a str) -> Removal<'a> {
        Removal {
            site: collect(raw)[index].site.unwrap(),
            name,
            signature: "Eicar-Test-Signature",
        }
    }

    #[test]
    fn an_infected_attachment_becomes_a_notice_and_nothing_else_changes() {
        let raw = MIXED.as_bytes();
        let out = strip(raw, &[removal(raw, 0, "a.bin")]).unwrap();
        let out = String::from_utf8(out).unwrap();
        let notice = "Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: inline\r\n\
            Content-Transfer-Encoding: 7bit\r\n\r\n\
            This attachment was removed by sesame because it contains malware.\r\n\r\n\
            File: a.bin\r\nSignature: Eicar-Test-Signature\r\n";
        let before_start = MIXED
            .find("Content-Type: application/octet-stream")
            .unwrap();
        let after_end = MIXED.find("aGVsbG8gd29ybGQ=").unwrap() + "aGVsbG8gd29ybGQ=".len();
        let expected = format!("{}{notice}{}", &MIXED[..before_start], &MIXED[after_end..]);
        assert_eq!(out, expected);
        assert!(!out.contains("aGVsbG8gd29ybGQ="));
        // Still well-formed: the other parts are found as before, and the
        // notice reads as body text rather than as a file.
        let again = collect(out.as_bytes());
        assert_eq!(again.len(), 4);
        assert_eq!(again[0].filename.as_deref(), Some("notes.txt"));
        let parsed = mail_parser::MessageParser::new().parse(&out).unwrap();
        assert!(parsed.body_text(1).unwrap().contains("File: a.bin"));
    }

    #[test]
    fn nested_and_encoded_parts_are_removed_in_one_pass() {
        let raw = MIXED.as_bytes();
        let out = strip(
            raw,
            &[removal(raw, 4, "(unnamed part)"), removal(raw, 3, "z.zip")],
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("ZIPDATA"));
        assert!(!out.contains("RnJvbTog"));
        // The forwarded message keeps its own headers around the notice.
        assert!(out.contains("Subject: inner\r\n"));
        assert!(out.contains("inner text"));
        assert_eq!(out.matches("File: ").count(), 2);
        assert!(out.ends_with("--XX--\r\nepilogue\r\n"));
    }

    #[test]
    fn parts_sharing_a_site_share_one_notice() {
        let raw = MIXED.as_bytes();
        let site = collect(raw)[4].site.unwrap();
        let both = [
            Removal {
                site,
                name: "x.exe",
                signature: "One",
            },
            Removal {
                site,
                name: "y.exe",
                signature: "Two",
            },
        ];
        let out = String::from_utf8(strip(raw, &both).unwrap()).unwrap();
        assert_eq!(out.matches("This attachment was removed").count(), 1);
        assert!(
            out.contains("File: x.exe\r\nSignature: One\r\n\r\nFile: y.exe\r\nSignature: Two\r\n")
        );
    }

    #[test]
    fn a_whole_single_part_message_keeps_its_headers() {
        let raw = b"From: a@b.test\r\nSubject: invoice\r\nContent-Type: application/pdf\r\n\
            Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n";
        let out = strip(raw, &[removal(raw, 0, "invoice.pdf")]).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("Content-Type: text/plain; charset=utf-8\r\n"));
        assert!(out.contains("From: a@b.test\r\nSubject: invoice\r\n\r\nThis attachment"));
        assert!(!out.contains("application/pdf") && !out.contains("JVBERi0="));
    }

    #[test]
    fn non_ascii_names_are_base64_encoded() {
        let raw = MIXED.as_bytes();
        let out = strip(raw, &[removal(raw, 0, "Rechnung März.exe")]).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("Content-Transfer-Encoding: base64\r\n"));
        let parsed = mail_parser::MessageParser::new().parse(&out).unwrap();
        assert!(
            parsed
                .body_text(1)
                .unwrap()
                .contains("File: Rechnung März.exe")
        );
    }

    #[test]
    fn sites_outside_the_message_are_refused() {
        let bad = Removal {
            site: Site {
                start: 5,
                body: 10,
                end: 999,
            },
            name: "x",
            signature: "y",
        };
        assert!(strip(b"short", &[bad]).is_err());
    }

    #[test]
    fn forged_verdicts_are_replaced() {
        let raw = b"X-Sesame-Virus-Verdict: PASS\r\nSubject: x\r\nx-sesame-virus-verdict: PASS\r\n\r\nbody\r\n";
        let out = set_verdict(raw.to_vec(), Some("FAIL"));
        assert_eq!(
            out,
            b"X-Sesame-Virus-Verdict: FAIL\r\nSubject: x\r\n\r\nbody\r\n"
        );
        let out = set_verdict(raw.to_vec(), None);
        assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n");
        let clean = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        assert_eq!(set_verdict(clean.clone(), None), clean);
    }
}
