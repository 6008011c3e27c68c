//! Durability: an acknowledged message (`250 2.0.0 Ok <id>`) survives SIGKILL;
//! a corrupted queued body is quarantined at restart without losing the rest.

mod common;

use common::*;
use std::collections::HashSet;
use std::sync::mpsc;

const CLIENTS: usize = 6;
const ACKS_BEFORE_KILL: usize = 200;

fn start_with_acme() -> Sesame {
    let s = Sesame::start(Options::new());
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    s
}

enum Event {
    Acked,
    /// A reply that is wrong while the server is alive.
    Bad(String),
}

/// One MX client sending messages in a loop until the connection dies.
/// Returns every id it got a `250 2.0.0 Ok <id>` for.
fn sender(addr: std::net::SocketAddr, n: usize, tx: mpsc::Sender<Event>) -> Vec<String> {
    let mut acked = Vec::new();
    let mut c = Smtp::connect(addr);
    let step = |c: &mut Smtp, line: Option<&str>, raw: Option<&[u8]>, want: u16| {
        if let Some(l) = line {
            c.send_lossy(format!("{l}\r\n").as_bytes())?;
        }
        if let Some(r) = raw {
            c.send_lossy(r)?;
        }
        let r = c.try_reply()?;
        if r.code != want {
            return Err(std::io::Error::other(format!("{:?}", r.lines)));
        }
        Ok::<_, std::io::Error>(r)
    };
    if step(&mut c, None, None, 220).is_err() || step(&mut c, Some("EHLO c"), None, 250).is_err() {
        return acked;
    }
    let mut i = 0u64;
    loop {
        i += 1;
        let body = format!(
            "From: load@external.example\r\nTo: info@acme.test\r\n\
             Subject: load {n}/{i}\r\n\r\nmessage {n}/{i}\r\n.\r\n"
        );
        let r = step(&mut c, Some("MAIL FROM:<load@external.example>"), None, 250)
            .and_then(|_| step(&mut c, Some("RCPT TO:<info@acme.test>"), None, 250))
            .and_then(|_| step(&mut c, Some("DATA"), None, 354))
            .and_then(|_| step(&mut c, None, Some(body.as_bytes()), 250));
        match r {
            Ok(r) => {
                let id = match r.last().strip_prefix("250 2.0.0 Ok ") {
                    Some(id) if is_ses_id(id) => id.to_string(),
                    _ => {
                        let _ = tx.send(Event::Bad(format!("{:?}", r.lines)));
                        return acked;
                    }
                };
                acked.push(id);
                // Main thread may be gone; keep going until the server dies.
                let _ = tx.send(Event::Acked);
            }
            Err(e) => {
                // After SIGKILL the connection breaks: that ends the client.
                if e.kind() == std::io::ErrorKind::Other {
                    let _ = tx.send(Event::Bad(e.to_string()));
                }
                return acked;
            }
        }
    }
}

/// SIGKILL after 200 acks from 6 concurrent clients; after restart every
/// acknowledged id is in `queue list --json`.
#[test]
fn acked_messages_survive_sigkill() {
    let mut s = start_with_acme();
    let (tx, rx) = mpsc::channel();
    let addr = s.mx();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let tx = tx.clone();
            std::thread::spawn(move || sender(addr, n, tx))
        })
        .collect();
    drop(tx);

    let mut acks = 0;
    while acks < ACKS_BEFORE_KILL {
        match rx.recv_timeout(PATIENCE) {
            Ok(Event::Acked) => acks += 1,
            Ok(Event::Bad(r)) => panic!("unexpected reply under load: {r}\n{}", s.logs()),
            Err(e) => panic!("only {acks} acks, then {e:?}\n{}", s.logs()),
        }
    }
    s.kill9();

    let mut acked = HashSet::new();
    for t in threads {
        acked.extend(t.join().expect("client thread"));
    }
    assert!(acked.len() >= ACKS_BEFORE_KILL);
    eprintln!("{} acknowledged ids before SIGKILL", acked.len());

    s.restart();
    let listed: HashSet<String> = s
        .queue()
        .iter()
        .map(|e| e["message_id"].as_str().expect("message_id").to_string())
        .collect();
    let lost: Vec<_> = acked.difference(&listed).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost after SIGKILL: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// A queued body corrupted on disk is quarantined (logged with its id);
/// sesame still starts and the other entries are still listed.
#[test]
fn corrupt_body_quarantined_at_restart() {
    let mut s = start_with_acme();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let out = swaks(&[
                "--server",
                &s.server_arg("mx"),
                "--from",
                "someone@external.example",
                "--to",
                "info@acme.test",
                "--h-Subject",
                &format!("msg {i}"),
            ]);
            out.expect_accepted()
        })
        .collect();
    assert!(s.stop().success(), "SIGTERM exit status");

    let victim = &ids[1];
    let changed = sqlite3(
        &s.data_dir.join("queue.db"),
        &format!(
            "UPDATE queue_entries SET body = X'00' WHERE message_id = '{victim}'; \
             SELECT changes();"
        ),
    );
    assert_eq!(changed.trim(), "1", "corrupting {victim} in queue.db");

    s.restart();
    let found = s.log.wait_for(|log| {
        log.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("quarantin") && l.contains(victim.as_str())
        })
    });
    assert!(
        found,
        "no log line mentions quarantine of {victim}; stderr:\n{}",
        s.logs()
    );
    let listed: Vec<String> = s
        .queue()
        .iter()
        .map(|e| e["message_id"].as_str().unwrap().to_string())
        .collect();
    for id in [&ids[0], &ids[2]] {
        assert!(
            listed.contains(id),
            "{id} missing after restart: {listed:?}"
        );
    }
}
