//! Feeds raw bytes to the SMTP session state machine, split into reads at
//! arbitrary points, answering every question the machine asks. The machine
//! must never panic, never loop, and never accept a message whose body
//! carries a bare CR or LF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesame::auth::AuthOutcome;
use sesame::config::{Limits, ListenerKind};
use sesame::proto::texts;
use sesame::session::{Action, Machine, Policy};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let kind = match mode % 3 {
        0 => ListenerKind::Mx,
        1 => ListenerKind::Submission,
        _ => ListenerKind::Submissions,
    };
    let limits = Limits {
        max_message_size: 4096,
        max_recipients: 5,
        max_errors: 20,
        ..Limits::default()
    };
    let mut machine = Machine::new(Policy::new(kind, "fuzz.test", &limits), mode & 4 != 0);
    let chunk = 1 + (mode as usize >> 3);
    for piece in rest.chunks(chunk) {
        machine.push_input(piece);
        // Every action consumes input or ends the session, so this loop
        // terminates; the bound makes a regression show up as a failure.
        for _ in 0..100_000 {
            let Some(action) = machine.next_action() else { break };
            match action {
                Action::Authenticate { username, password } => {
                    let outcome = if password == "pw" {
                        AuthOutcome::Success { tenant: "t".into() }
                    } else {
                        AuthOutcome::Invalid { delay: Default::default() }
                    };
                    machine.auth_result(outcome, username);
                }
                Action::Recipient(_) => machine.recipient_result(Ok(())),
                Action::Message(tx) => {
                    assert!(
                        !has_bare_newline(&tx.body),
                        "accepted a body with a bare CR or LF"
                    );
                    assert!(tx.body.len() <= limits.max_message_size);
                    machine.message_result(texts::accepted("fuzz"));
                }
                Action::StartTls => machine.tls_started(),
                Action::Send(_) | Action::Refused(_) | Action::Close => {}
            }
        }
        if machine.is_closed() {
            return;
        }
    }
});

fn has_bare_newline(body: &[u8]) -> bool {
    body.iter().enumerate().any(|(i, &b)| match b {
        b'\n' => i == 0 || body[i - 1] != b'\r',
        b'\r' => body.get(i + 1) != Some(&b'\n'),
        _ => false,
    })
}
