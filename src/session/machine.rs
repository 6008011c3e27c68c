//! The SMTP server session as a sans-IO state machine.
//!
//! It is fed bytes and yields `Action`s: replies to write, and the questions
//! only the outside world can answer (credentials, recipients, the final
//! verdict on a message, the TLS handshake). The driver answers each
//! question through the matching `*_result` method. No sockets, no clocks:
//! it is tested in memory and fuzzed with raw bytes.

use std::collections::VecDeque;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, Request};

use crate::auth::AuthOutcome;
use crate::config::{Limits, ListenerKind};
use crate::proto::data::{BodyProblem, DataReader};
use crate::proto::{Reply, texts};
use crate::types::EmailAddress;

/// Recipients kept per transaction before answering 452; SES's limit of 50
/// is reported at DATA with SES's text, this only bounds memory.
const RECIPIENT_HARD_CAP: usize = 1000;

/// Commands an HTTP client would send; seeing one means someone pointed a
/// browser or proxy at an SMTP port (cross-protocol attacks).
const HTTP_VERBS: [&str; 8] = [
    "GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS ", "CONNECT ", "PATCH ",
];

#[derive(Debug, Clone)]
pub struct Policy {
    pub kind: ListenerKind,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_line_length: usize,
    pub max_command_line: usize,
    pub max_errors: u32,
}

impl Policy {
    pub fn new(kind: ListenerKind, hostname: &str, limits: &Limits) -> Self {
        Policy {
            kind,
            hostname: hostname.to_string(),
            max_message_size: limits.max_message_size,
            max_recipients: limits.max_recipients,
            max_line_length: limits.max_line_length,
            max_command_line: limits.max_command_line,
            max_errors: limits.max_errors,
        }
    }
}

/// A complete message, ready for the checks and the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Empty for the null reverse-path (bounces on MX).
    pub mail_from: String,
    pub recipients: Vec<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Send(Reply),
    /// Verify these credentials, then call `auth_result`.
    Authenticate {
        username: String,
        password: String,
    },
    /// May this recipient be accepted? Call `recipient_result`.
    Recipient(String),
    /// The message is complete; call `message_result` with the final reply.
    Message(Transaction),
    /// The 220 has been queued; flush it, handshake, call `tls_started`.
    StartTls,
    /// A message was refused by the machine itself (size, framing, limits);
    /// the reply follows as a `Send`. For the log.
    Refused(Reply),
    Close,
}

enum Phase {
    Command,
    /// Discarding the rest of an over-long command line.
    SkipLine,
    Data(DataReader),
    AuthPlain,
    AuthLoginUser,
    AuthLoginPassword(String),
    /// Waiting for the driver to answer an action.
    Waiting,
    Closed,
}

pub struct Machine {
    policy: Policy,
    phase: Phase,
    input: Vec<u8>,
    outbox: VecDeque<Action>,
    tls: bool,
    helo: Option<String>,
    tenant: Option<String>,
    username: Option<String>,
    mail_from: Option<String>,
    recipients: Vec<String>,
    pending_recipient: Option<String>,
    errors: u32,
    seen_command: bool,
}

impl Machine {
    pub fn new(policy: Policy, tls: bool) -> Self {
        Machine {
            policy,
            phase: Phase::Command,
            input: Vec::new(),
            outbox: VecDeque::new(),
            tls,
            helo: None,
            tenant: None,
            username: None,
            mail_from: None,
            recipients: Vec::new(),
            pending_recipient: None,
            errors: 0,
            seen_command: false,
        }
    }

    pub fn greeting(&self) -> Reply {
        texts::greeting(&self.policy.hostname)
    }

    pub fn push_input(&mut self, bytes: &[u8]) {
        if !matches!(self.phase, Phase::Closed) {
            self.input.extend_from_slice(bytes);
        }
    }

    /// The next thing to do, or `None` when more input is needed (or the
    /// machine is waiting for a `*_result` call, or closed).
    pub fn next_action(&mut self) -> Option<Action> {
        loop {
            if let Some(action) = self.outbox.pop_front() {
                return Some(action);
            }
            if matches!(self.phase, Phase::Waiting | Phase::Closed) || !self.process_input() {
                return None;
            }
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data(_))
    }

    /// True while a mail transaction is open (so shutdown should let it end).
    pub fn in_transaction(&self) -> bool {
        self.mail_from.is_some() || matches!(self.phase, Phase::Data(_) | Phase::Waiting)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    pub fn auth_result(&mut self, outcome: AuthOutcome, username: String) {
        self.phase = Phase::Command;
        match outcome {
            AuthOutcome::Success { tenant } => {
                self.tenant = Some(tenant);
                self.username = Some(username);
                self.send(texts::auth_ok());
            }
            AuthOutcome::Invalid { .. } => self.fail(texts::auth_invalid()),
            AuthOutcome::Throttled => self.close_with(texts::auth_throttled()),
        }
    }

    pub fn recipient_result(&mut self, verdict: Result<(), Reply>) {
        self.phase = Phase::Command;
        let rcpt = self.pending_recipient.take().unwrap_or_default();
        match verdict {
            Ok(()) => {
                if !self.recipients.contains(&rcpt) {
                    self.recipients.push(rcpt);
                }
                self.send(texts::recipient_ok());
            }
            Err(reply) => self.fail(reply),
        }
    }

    pub fn message_result(&mut self, reply: Reply) {
        self.phase = Phase::Command;
        self.reset_transaction();
        self.send(reply);
    }

    pub fn tls_started(&mut self) {
        // RFC 3207 4.2: forget everything learnt before TLS, including any
        // plaintext pipelined behind STARTTLS.
        self.tls = true;
        self.helo = None;
        self.input.clear();
        self.reset_transaction();
        self.phase = Phase::Command;
    }

    /// Ends the session with a final reply (timeouts, shutdown).
    pub fn close_with(&mut self, reply: Reply) {
        self.send(reply);
        self.outbox.push_back(Action::Close);
        self.phase = Phase::Closed;
        self.input.clear();
    }

    fn send(&mut self, reply: Reply) {
        self.outbox.push_back(Action::Send(reply));
    }

    /// Sends an error reply and counts it; too many errors end the session.
    fn fail(&mut self, reply: Reply) {
        self.send(reply);
        self.errors += 1;
        if self.errors >= self.policy.max_errors {
            self.close_with(texts::too_many_errors());
        }
    }

    /// Refuses the current message; counts as an error like any 5xx.
    fn refuse(&mut self, reply: Reply) {
        self.outbox.push_back(Action::Refused(reply.clone()));
        self.fail(reply);
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.recipients.clear();
        self.pending_recipient = None;
    }

    /// Consumes buffered input; false when nothing more can be done without
    /// new bytes.
    fn process_input(&mut self) -> bool {
        if let Phase::Data(reader) = &mut self.phase {
            let (used, done) = reader.feed(&self.input);
            self.input.drain(..used);
            if done {
                let Phase::Data(reader) = std::mem::replace(&mut self.phase, Phase::Command) else {
                    unreachable!("phase checked above");
                };
                self.end_of_data(reader);
            }
            return done;
        }
        let Some(lf) = self.input.iter().position(|&b| b == b'\n') else {
            if self.input.len() > self.policy.max_command_line {
                self.input.clear();
                if !matches!(self.phase, Phase::SkipLine) {
                    self.phase = Phase::SkipLine;
                    self.fail(texts::command_line_too_long());
                }
                return true;
            }
            return false;
        };
        let line: Vec<u8> = self.input.drain(..=lf).collect();
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::SkipLine => {}
            Phase::AuthPlain => self.auth_plain(trim_line(&line)),
            Phase::AuthLoginUser => self.auth_login_user(trim_line(&line)),
            Phase::AuthLoginPassword(user) => self.auth_login_password(user, trim_line(&line)),
            _ if line.len() > self.policy.max_command_line => {
                self.fail(texts::command_line_too_long())
            }
            _ => self.command(&line),
        }
        true
    }

    fn command(&mut self, line: &[u8]) {
        let first = !self.seen_command;
        self.seen_command = true;
        if first && HTTP_VERBS.iter().any(|v| line.starts_with(v.as_bytes())) {
            return self.close_with(texts::http_refused());
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(error) => return self.parse_error(error, line),
        };
        let before_tls = self.policy.kind.is_submission() && !self.tls;
        match request {
            Request::Ehlo { host } => {
                self.reset_transaction();
                self.helo = Some(host.into_owned());
                let reply = self.ehlo_reply();
                self.send(reply);
            }
            Request::Helo { host } => {
                self.reset_transaction();
                self.helo = Some(host.into_owned());
                self.send(texts::helo(&self.policy.hostname));
            }
            Request::StartTls if self.tls => self.fail(texts::tls_already()),
            Request::StartTls => {
                self.send(texts::ready_for_tls());
                self.input.clear();
                self.outbox.push_back(Action::StartTls);
                self.phase = Phase::Waiting;
            }
            Request::Noop { .. } => self.send(texts::ok()),
            Request::Rset => {
                self.reset_transaction();
                self.send(texts::ok());
            }
            Request::Quit => self.close_with(texts::bye()),
            _ if before_tls => self.fail(texts::starttls_first()),
            Request::Vrfy { .. } => self.send(texts::vrfy()),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth_start(mechanism, &initial_response),
            Request::Mail { from } => self.mail(from.address.into_owned(), from.size),
            Request::Rcpt { to } => self.rcpt(to.address.into_owned()),
            Request::Data => self.data(),
            _ => self.fail(texts::not_implemented()),
        }
    }

    fn parse_error(&mut self, error: ParseError, line: &[u8]) {
        let reply = match error {
            ParseError::UnknownCommand => texts::unknown_command(),
            ParseError::InvalidSenderAddress => texts::bad_sender(&bracketed(line)),
            ParseError::InvalidRecipientAddress => texts::bad_recipient(&bracketed(line)),
            ParseError::SyntaxError { syntax } => texts::syntax(syntax),
            ParseError::InvalidParameter { param } => {
                Reply::new(501, "5.5.4", format!("Invalid parameter {param}"))
            }
            ParseError::UnsupportedParameter { param } => {
                Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
            }
            _ => texts::syntax("command"),
        };
        self.fail(reply);
    }

    fn ehlo_reply(&self) -> Reply {
        let mut lines = vec![
            self.policy.hostname.clone(),
            "8BITMIME".into(),
            "PIPELINING".into(),
            format!("SIZE {}", self.policy.max_message_size),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
        ];
        if !self.tls {
            lines.push("STARTTLS".into());
        } else if self.policy.kind.is_submission() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        Reply::multiline(250, lines)
    }

    fn auth_start(&mut self, mechanism: u64, initial: &str) {
        if !self.policy.kind.is_submission() {
            return self.fail(texts::auth_not_here());
        }
        if self.tenant.is_some() {
            return self.fail(texts::auth_already());
        }
        if self.mail_from.is_some() {
            return self.fail(texts::bad_sequence(
                "AUTH not permitted during a mail transaction",
            ));
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.send(texts::auth_challenge(""));
                self.phase = Phase::AuthPlain;
            }
            AUTH_PLAIN => self.auth_plain(initial.as_bytes()),
            AUTH_LOGIN if initial.is_empty() => {
                self.send(texts::auth_challenge("VXNlcm5hbWU6"));
                self.phase = Phase::AuthLoginUser;
            }
            AUTH_LOGIN => self.auth_login_user(initial.as_bytes()),
            _ => self.fail(texts::auth_mechanism()),
        }
    }

    fn auth_plain(&mut self, response: &[u8]) {
        let Some(decoded) = self.sasl_decode(response) else {
            return;
        };
        let mut parts = decoded.split(|&b| b == 0);
        let (authzid, user, pass) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(z), Some(u), Some(p), None) => (z, u, p),
            _ => return self.fail(texts::auth_invalid()),
        };
        // Acting on behalf of another user is not something SES offers.
        if !authzid.is_empty() && authzid != user {
            return self.fail(texts::auth_invalid());
        }
        self.ask_authenticate(user, pass);
    }

    fn auth_login_user(&mut self, response: &[u8]) {
        if let Some(user) = self.sasl_decode(response) {
            self.send(texts::auth_challenge("UGFzc3dvcmQ6"));
            self.phase = Phase::AuthLoginPassword(String::from_utf8_lossy(&user).into_owned());
        }
    }

    fn auth_login_password(&mut self, user: String, response: &[u8]) {
        if let Some(pass) = self.sasl_decode(response) {
            self.ask_authenticate(user.as_bytes(), &pass);
        }
    }

    /// Decodes a SASL response; replies and returns None on `*` or bad data.
    fn sasl_decode(&mut self, response: &[u8]) -> Option<Vec<u8>> {
        match response {
            b"*" => {
                self.fail(texts::auth_cancelled());
                None
            }
            b"=" => Some(Vec::new()),
            _ => match BASE64.decode(response) {
                Ok(bytes) => Some(bytes),
                Err(_) => {
                    self.fail(texts::auth_bad_base64());
                    None
                }
            },
        }
    }

    fn ask_authenticate(&mut self, user: &[u8], pass: &[u8]) {
        self.outbox.push_back(Action::Authenticate {
            username: String::from_utf8_lossy(user).into_owned(),
            password: String::from_utf8_lossy(pass).into_owned(),
        });
        self.phase = Phase::Waiting;
    }

    fn mail(&mut self, address: String, declared_size: usize) {
        if self.policy.kind.is_submission() && self.tenant.is_none() {
            return self.fail(texts::auth_required());
        }
        if self.helo.is_none() {
            return self.fail(texts::bad_sequence("Send HELO or EHLO first"));
        }
        if self.mail_from.is_some() {
            return self.fail(texts::bad_sequence("Sender already specified"));
        }
        // Bounces (null sender) are for the MX side; apps always send as
        // one of their identities.
        let null_ok = address.is_empty() && !self.policy.kind.is_submission();
        if !null_ok && EmailAddress::parse(&address).is_none() {
            return self.fail(texts::bad_sender(&address));
        }
        if declared_size > self.policy.max_message_size && declared_size != usize::MAX {
            return self.fail(texts::too_long());
        }
        self.mail_from = Some(address);
        self.send(texts::sender_ok());
    }

    fn rcpt(&mut self, address: String) {
        if self.mail_from.is_none() {
            return self.fail(texts::bad_sequence("Need MAIL before RCPT"));
        }
        if EmailAddress::parse(&address).is_none() {
            return self.fail(texts::bad_recipient(&address));
        }
        if self.recipients.len() >= RECIPIENT_HARD_CAP {
            return self.send(Reply::new(452, "4.5.3", "Too many recipients"));
        }
        self.outbox.push_back(Action::Recipient(address.clone()));
        self.pending_recipient = Some(address);
        self.phase = Phase::Waiting;
    }

    fn data(&mut self) {
        if self.mail_from.is_none() {
            return self.fail(texts::bad_sequence("Need MAIL command"));
        }
        if self.recipients.is_empty() {
            return self.fail(texts::bad_sequence("Need RCPT before DATA"));
        }
        if self.recipients.len() > self.policy.max_recipients {
            self.reset_transaction();
            return self.refuse(texts::too_many_recipients(self.policy.max_recipients));
        }
        self.send(texts::start_data());
        self.phase = Phase::Data(DataReader::new(
            self.policy.max_message_size,
            self.policy.max_line_length,
        ));
    }

    fn end_of_data(&mut self, reader: DataReader) {
        let finished = reader.finish();
        let refusal = match finished.problem {
            None => None,
            Some(BodyProblem::TooLarge) => Some(texts::too_long()),
            Some(BodyProblem::BareNewline) => Some(texts::bare_newline()),
            Some(BodyProblem::LineTooLong) => {
                Some(texts::data_line_too_long(self.policy.max_line_length))
            }
        };
        if let Some(reply) = refusal {
            self.reset_transaction();
            return self.refuse(reply);
        }
        let transaction = Transaction {
            mail_from: self.mail_from.clone().unwrap_or_default(),
            recipients: self.recipients.clone(),
            body: finished.body,
        };
        self.outbox.push_back(Action::Message(transaction));
        self.phase = Phase::Waiting;
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.trim_ascii()
}

/// The text between the first `<` and `>` of a command line, for replies
/// that quote the refused address.
fn bracketed(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let inner = text
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(inside, _)| inside.to_string());
    inner.unwrap_or_default().chars().take(256).collect()
}
