//! Done-means end to end: a message submitted with swaks to an `mx` tenant
//! of one sesame (A) is found a route through MX on a loopback DNS (nsd)
//! and arrives DKIM-signed at a second sesame (B), which verifies the
//! signature against A's published key (A's embedded DNS) and records
//! `dkim=pass`.

mod common;
mod delivery_peers;
mod nsd;

use common::*;
use delivery_peers::*;
use nsd::Nsd;

#[test]
fn mail_reaches_a_second_sesame_through_mx_with_dkim_pass() {
    let nsd = Nsd::start(&[(
        "beta.test",
        "$ORIGIN beta.test.\n$TTL 60\n@ IN SOA ns.beta.test. admin.beta.test. 1 60 60 600 60\n\
         @ IN NS ns.beta.test.\nns IN A 127.0.0.1\n@ IN MX 10 mx\nmx IN A 127.0.0.1\n",
    )]);
    // A's DNS port is fixed first: B looks DKIM keys up there, and A needs
    // B's MX port before it starts.
    let a_dns = free_port();
    let b = Sesame::start(
        Options::new().extra(&format!("[dns]\nnameservers = [\"127.0.0.1:{a_dns}\"]\n")),
    );
    b.account("beta", "beta.test", true);
    let a = Sesame::start(Options::new().extra(&format!(
        "[dns]\nnameservers = [\"{}\"]\n\n[dns_server]\nenabled = true\nbind = \"127.0.0.1:{a_dns}\"\n\n\
         [delivery]\npoll_ms = 50\nretry_base_secs = 1\nretry_max_delay_secs = 2\nmx_port = {}\n\
         smtp_timeout_secs = 10\n",
        nsd.addr,
        b.mx().port()
    )));
    let reloads = a.log.count("DNS zones reloaded");
    let acct = a.account("acme", "acme.test", true);
    a.cli_ok(&["tenant", "set", "acme", "--delivery", "mx"]);
    assert!(
        a.log
            .wait_for(|t| t.matches("DNS zones reloaded").count() > reloads),
        "A's DNS never served acme.test:\n{}",
        a.logs()
    );

    let id =
        swaks_owned(&submit_args(&a, &acct, "app@acme.test", "carol@beta.test")).expect_accepted();
    let st = wait_status(&a, &id, "carol@beta.test", "delivered");
    let response = st["last_response"].as_str().unwrap();
    assert!(response.starts_with("250 2.0.0 Ok "), "{response}");
    let b_id = response.split_whitespace().nth(3).unwrap();
    let entry = b
        .queue_entry(b_id)
        .unwrap_or_else(|| panic!("B has no {b_id}: {:?}", b.queue()));
    assert_eq!(entry["tenant"], "beta");
    assert_eq!(entry["direction"], "inbound");
    let stored = b.queued_body(b_id);
    let results = &stored[stored.find("Authentication-Results:").expect("A-R header")..];
    let results = &results[..results.find("\r\n\r\n").unwrap_or(results.len())];
    assert!(results.contains("dkim=pass"), "{stored}");
    assert!(results.contains("header.d=acme.test"), "{stored}");
    assert!(
        stored.contains(&format!("<{id}@{HOSTNAME}>")),
        "A's Message-ID: {stored}"
    );
    // The envelope sender B saw is A's VERP address for the message.
    assert_eq!(
        entry["from"].as_str().unwrap(),
        a.queue_entry(&id).unwrap()["envelope_from"]
    );
}
