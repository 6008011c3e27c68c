//! The header block of a message: finding fields, spotting duplicated
//! singletons and rewriting (remove, then prepend) without touching the body.

/// Fields that RFC 5322 3.6 allows at most once. A second copy is how
/// spoofed or ambiguous mail looks, so SES refuses it and so do we.
pub const SINGLETONS: [&str; 11] = [
    "Date",
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
];

/// One header field: its name and the byte range of the whole field,
/// continuation lines and final CRLF included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub start: usize,
    pub end: usize,
}

/// The parsed header block of a message.
pub struct HeaderBlock<'a> {
    message: &'a [u8],
    pub fields: Vec<Field>,
    /// Where the header block ends (the blank line is part of the body side).
    pub end: usize,
}

impl<'a> HeaderBlock<'a> {
    pub fn parse(message: &'a [u8]) -> Self {
        let mut fields: Vec<Field> = Vec::new();
        let mut pos = 0;
        while pos < message.len() {
            let line_end = message[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(message.len(), |i| pos + i + 1);
            let line = &message[pos..line_end];
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            match (line[0], fields.last_mut()) {
                (b' ' | b'\t', Some(last)) => last.end = line_end,
                _ => match line.iter().position(|&b| b == b':') {
                    Some(colon) => fields.push(Field {
                        name: String::from_utf8_lossy(&line[..colon]).trim().to_string(),
                        start: pos,
                        end: line_end,
                    }),
                    // Not a header line: the header block is over.
                    None => break,
                },
            }
            pos = line_end;
        }
        HeaderBlock {
            message,
            fields,
            end: pos,
        }
    }

    pub fn count(&self, name: &str) -> usize {
        self.fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .count()
    }

    /// The first singleton field that appears more than once.
    pub fn duplicated_singleton(&self) -> Option<&'static str> {
        SINGLETONS.into_iter().find(|name| self.count(name) > 1)
    }

    /// The raw header block bytes (what header parsers want).
    pub fn raw(&self) -> &'a [u8] {
        &self.message[..self.end]
    }

    /// A copy of the message with the named fields removed and `prepend`
    /// (complete lines, each ending in CRLF) placed on top.
    pub fn rewrite(&self, remove: &[&str], prepend: &[String]) -> Vec<u8> {
        self.rewrite_where(
            |field, _| remove.iter().any(|r| field.name.eq_ignore_ascii_case(r)),
            prepend,
        )
    }

    /// Like `rewrite`, removing the fields for which `remove(field, raw
    /// field bytes)` holds.
    pub fn rewrite_where(
        &self,
        remove: impl Fn(&Field, &[u8]) -> bool,
        prepend: &[String],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.message.len() + 512);
        for line in prepend {
            out.extend_from_slice(line.as_bytes());
        }
        let mut copied = 0;
        for field in &self.fields {
            if remove(field, &self.message[field.start..field.end]) {
                out.extend_from_slice(&self.message[copied..field.start]);
                copied = field.end;
            }
        }
        out.extend_from_slice(&self.message[copied..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"From: a@b.test\r\nSubject: hi\r\n there\r\nsubject: again\r\n\r\nbody\r\nFrom: x\r\n";

    #[test]
    fn folded_fields_stay_one_field() {
        let block = HeaderBlock::parse(MSG);
        assert_eq!(block.fields.len(), 3);
        assert_eq!(
            &MSG[block.fields[1].start..block.fields[1].end],
            b"Subject: hi\r\n there\r\n"
        );
    }

    #[test]
    fn duplicates_are_case_insensitive_and_body_is_ignored() {
        let block = HeaderBlock::parse(MSG);
        assert_eq!(block.duplicated_singleton(), Some("Subject"));
        assert_eq!(block.count("from"), 1);
    }

    #[test]
    fn rewrite_removes_and_prepends() {
        let block = HeaderBlock::parse(MSG);
        let out = block.rewrite(&["subject"], &["X-Top: 1\r\n".to_string()]);
        assert_eq!(
            out,
            b"X-Top: 1\r\nFrom: a@b.test\r\n\r\nbody\r\nFrom: x\r\n"
        );
    }
}
