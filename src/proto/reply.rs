//! SMTP replies with enhanced status codes.

use std::fmt;

/// One SMTP reply: code, optional enhanced status code, and text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<&'static str>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code (greeting, EHLO, SASL challenges).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    pub fn multiline(code: u16, lines: Vec<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The first line's text, without the codes (for logs).
    pub fn text(&self) -> &str {
        self.lines.first().map(String::as_str).unwrap_or_default()
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let line = match self.enhanced {
                Some(status) => format!("{}{sep}{status} {line}\r\n", self.code),
                None => format!("{}{sep}{line}\r\n", self.code),
            };
            out.extend_from_slice(line.as_bytes());
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(status) => write!(f, "{} {} {}", self.code, status, self.text()),
            None => write!(f, "{} {}", self.code, self.text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_replies_use_dashes_until_the_last_line() {
        let mut out = Vec::new();
        Reply::multiline(250, vec!["host".into(), "SIZE 10".into()]).write_to(&mut out);
        assert_eq!(out, b"250-host\r\n250 SIZE 10\r\n");
    }

    #[test]
    fn enhanced_code_follows_the_reply_code() {
        let mut out = Vec::new();
        Reply::new(250, "2.1.0", "Ok").write_to(&mut out);
        assert_eq!(out, b"250 2.1.0 Ok\r\n");
    }
}
