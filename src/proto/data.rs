//! Strict DATA framing (RFC 5321 4.1.1.4 and 4.5.2).
//!
//! Only `CRLF . CRLF` ends a message. A bare LF or bare CR never ends or
//! splits a message: it marks the message as refused (SMTP smuggling,
//! CVE-2023-51764 class), and we keep reading until the real end so that
//! whatever was smuggled behind it is swallowed with the refused message.
//! Limits are enforced while reading: once a message is refused, its bytes
//! are counted but no longer kept.

/// Why a message body was refused; the first problem seen wins, except
/// that size always wins because it is what the client can fix by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    TooLarge,
    BareNewline,
    LineTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After CRLF (or at the very start of DATA).
    LineStart,
    /// A `.` at the start of a line: either stuffing or the end marker.
    LineStartDot,
    /// `.` CR at the start of a line: LF next ends the message.
    LineStartDotCr,
    Mid,
    /// A CR inside a line: LF next makes it a line ending.
    Cr,
}

/// Accumulates one message body from DATA, removing dot-stuffing.
pub struct DataReader {
    state: State,
    body: Vec<u8>,
    /// Bytes of the un-stuffed message seen so far, kept or not.
    size: usize,
    line_len: usize,
    max_size: usize,
    max_line: usize,
    problem: Option<BodyProblem>,
}

/// The outcome of a finished DATA phase.
pub struct Finished {
    pub body: Vec<u8>,
    pub problem: Option<BodyProblem>,
}

impl DataReader {
    /// `max_line` counts octets including the CRLF, as RFC 5321 does.
    pub fn new(max_size: usize, max_line: usize) -> Self {
        DataReader {
            state: State::LineStart,
            body: Vec::new(),
            size: 0,
            line_len: 0,
            max_size,
            max_line,
            problem: None,
        }
    }

    /// Feeds bytes; returns how many were consumed and whether the end marker
    /// was reached. Bytes after the end marker are left for the command parser.
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        for (i, &b) in input.iter().enumerate() {
            if self.step(b) {
                return (i + 1, true);
            }
        }
        (input.len(), false)
    }

    pub fn finish(self) -> Finished {
        Finished {
            body: self.body,
            problem: self.problem,
        }
    }

    fn step(&mut self, b: u8) -> bool {
        match (self.state, b) {
            (State::LineStart, b'.') => self.state = State::LineStartDot,
            (State::LineStartDot, b'\r') => self.state = State::LineStartDotCr,
            (State::LineStartDotCr, b'\n') => return true,
            (State::LineStartDotCr, _) => {
                // ".\r" followed by anything but LF: a bare CR.
                self.flag(BodyProblem::BareNewline);
                self.emit(b'\r');
                self.state = State::Mid;
                return self.step(b);
            }
            (State::LineStartDot, _) => {
                // The dot was stuffing; drop it and read `b` as line content.
                self.state = State::Mid;
                return self.step(b);
            }
            (State::Cr, b'\n') => {
                self.emit(b'\r');
                self.emit(b'\n');
                self.state = State::LineStart;
                self.line_len = 0;
            }
            (State::Cr, _) => {
                self.flag(BodyProblem::BareNewline);
                self.emit(b'\r');
                self.state = State::Mid;
                return self.step(b);
            }
            (_, b'\r') => self.state = State::Cr,
            (_, b'\n') => {
                // A bare LF ends nothing: the next byte is still mid-line,
                // so "\n.\r\n" can never be taken for the end marker.
                self.flag(BodyProblem::BareNewline);
                self.emit(b'\n');
                self.state = State::Mid;
            }
            (_, _) => {
                self.emit(b);
                self.state = State::Mid;
            }
        }
        false
    }

    fn emit(&mut self, b: u8) {
        self.size += 1;
        self.line_len += 1;
        if self.size > self.max_size {
            self.problem = Some(BodyProblem::TooLarge);
        } else if self.line_len > self.max_line {
            self.flag(BodyProblem::LineTooLong);
        }
        if self.problem.is_none() {
            self.body.push(b);
        } else if !self.body.is_empty() {
            // A refused body is never stored or forwarded: free it now.
            self.body = Vec::new();
        }
    }

    fn flag(&mut self, problem: BodyProblem) {
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> (usize, bool, Finished) {
        let mut reader = DataReader::new(1_000_000, 1000);
        let (used, done) = reader.feed(input);
        (used, done, reader.finish())
    }

    #[test]
    fn crlf_dot_crlf_ends_and_unstuffs() {
        let (used, done, f) = read_all(b"a\r\n..b\r\n.\r\nNEXT");
        assert!(done);
        assert_eq!(used, 11);
        assert_eq!(f.body, b"a\r\n.b\r\n");
        assert_eq!(f.problem, None);
    }

    #[test]
    fn empty_message_ends_at_once() {
        let (_, done, f) = read_all(b".\r\n");
        assert!(done);
        assert!(f.body.is_empty());
    }

    #[test]
    fn bare_lf_dot_variants_never_end_the_message() {
        for smuggle in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
        ] {
            let mut reader = DataReader::new(1000, 1000);
            let (_, done) = reader.feed(smuggle);
            assert!(!done, "{smuggle:?} ended the message");
            let (_, done) = reader.feed(b".\r\n");
            assert!(done);
            assert_eq!(reader.finish().problem, Some(BodyProblem::BareNewline));
        }
    }

    #[test]
    fn end_marker_split_across_reads_is_found() {
        let mut reader = DataReader::new(1000, 1000);
        let chunks = [&b"hello\r"[..], b"\n", b".", b"\r", b"\n"];
        let done: Vec<bool> = chunks.iter().map(|c| reader.feed(c).1).collect();
        assert_eq!(done, [false, false, false, false, true]);
        assert_eq!(reader.finish().body, b"hello\r\n");
    }

    #[test]
    fn oversize_is_detected_without_keeping_the_body() {
        let mut reader = DataReader::new(10, 1000);
        reader.feed(&[b'x'; 5000]);
        let (_, done) = reader.feed(b"\r\n.\r\n");
        assert!(done);
        let f = reader.finish();
        assert_eq!(f.problem, Some(BodyProblem::TooLarge));
        assert!(f.body.is_empty());
    }

    #[test]
    fn long_lines_are_refused() {
        let mut reader = DataReader::new(100_000, 1000);
        reader.feed(&[b'x'; 999]);
        let (_, done) = reader.feed(b"\r\n.\r\n");
        assert!(done);
        assert_eq!(reader.finish().problem, Some(BodyProblem::LineTooLong));
    }

    #[test]
    fn a_998_octet_line_is_fine() {
        let mut reader = DataReader::new(100_000, 1000);
        reader.feed(&[b'x'; 998]);
        let (_, done) = reader.feed(b"\r\n.\r\n");
        assert!(done);
        assert_eq!(reader.finish().problem, None);
    }
}
