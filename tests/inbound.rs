//! SPF, DKIM and DMARC on the MX listener, against real peers: a real nsd on
//! loopback serves the sending domains' SPF, DKIM and DMARC records; mail
//! comes forged by swaks, signed by dkimpy (`tests/py/dkim_sign.py`), and
//! signed by a second sesame that publishes its own records. Each case
//! checks the headers added to the queued message and the SES verdicts in
//! the queue entry's meta.
//!
//! Peers: nsd and dig (`apt-get install nsd dnsutils`), swaks, openssl,
//! sqlite3, and the venv's dkimpy (`scripts/install-deps.sh`).

mod common;
mod nsd;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use nsd::Nsd;
use serde_json::Value;

const ZONE: &str = "inbound.test";
const CLIENT_HELO: &str = "client.inbound.test";

/// An RSA key made by openssl: (PEM file, the DNS `p=` value).
fn rsa_key(dir: &Path) -> (PathBuf, String) {
    let pem = dir.join("dkim.pem");
    let out = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&pem)
        .arg("2048")
        .output()
        .unwrap_or_else(|e| panic!("openssl not runnable ({e}): apt-get install -y openssl"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem)
        .output()
        .expect("openssl rsa");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use base64::Engine;
    let p = base64::engine::general_purpose::STANDARD.encode(&out.stdout);
    (pem, p)
}

/// TXT rdata as 255-octet character-strings.
fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The parent zone, so that DMARC's tree walk up to `_dmarc.test` gets
/// authoritative answers (NXDOMAIN), as it would from the real root.
/// The sending domains under inbound.test, one per outcome:
/// - `pass`: SPF allows 127.0.0.1, DKIM key `sel`, DMARC p=reject;
/// - `fail`: SPF `-all` without us, DMARC p=reject;
/// - `soft`: SPF `~all` without us, DMARC p=quarantine;
/// - `none`: no SPF, no DMARC;
/// - `client`: the HELO name, SPF allows 127.0.0.1.
///
/// The DMARC records say `psd=n` (organizational domain), which ends the
/// walk there.
fn test_zone(dkim_p: &str) -> String {
    format!(
        "$ORIGIN test.\n$TTL 60\n\
         @ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n\
         @ IN NS ns.test.\n\
         ns IN A 127.0.0.1\n\
         $ORIGIN {ZONE}.\n\
         pass IN TXT \"v=spf1 ip4:127.0.0.1 -all\"\n\
         _dmarc.pass IN TXT \"v=DMARC1; p=reject; psd=n\"\n\
         sel._domainkey.pass IN TXT {}\n\
         client IN TXT \"v=spf1 ip4:127.0.0.1 -all\"\n\
         fail IN TXT \"v=spf1 ip4:192.0.2.1 -all\"\n\
         _dmarc.fail IN TXT \"v=DMARC1; p=reject; psd=n\"\n\
         soft IN TXT \"v=spf1 ip4:192.0.2.1 ~all\"\n\
         _dmarc.soft IN TXT \"v=DMARC1; p=quarantine; psd=n\"\n\
         none IN A 127.0.0.1\n",
        txt(&format!("v=DKIM1; k=rsa; p={dkim_p}"))
    )
}

struct World {
    nsd: Nsd,
    s: Sesame,
    key: PathBuf,
    files: tempfile::TempDir,
}

/// nsd with the sending domains, and a sesame whose tenant `acme` receives
/// for acme.test and resolves on that nsd.
fn world() -> World {
    let files = tempfile::tempdir().unwrap();
    let (key, p) = rsa_key(files.path());
    let nsd = Nsd::start(&[("test", &test_zone(&p))]);
    let s = Sesame::start(Options::new().extra(&format!(
        "[dns]\nnameservers = [\"{}\"]\n",
        nsd.nameserver()
    )));
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    World { nsd, s, key, files }
}

impl World {
    /// Delivers `message` (CRLF text) to MX from 127.0.0.1.
    fn deliver(&self, mail_from: &str, message: &str) -> Swaks {
        let path = self.files.path().join(format!("{}.eml", uuid()));
        std::fs::write(&path, message).unwrap();
        swaks(&[
            "--server",
            &self.s.server_arg("mx"),
            "--helo",
            CLIENT_HELO,
            "--from",
            mail_from,
            "--to",
            "info@acme.test",
            "--data",
            &format!("@{}", path.display()),
        ])
    }

    /// dkimpy's signature for `message` as pass.inbound.test, selector sel.
    fn dkimpy_sign(&self, message: &str) -> String {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
        assert!(
            python.is_file(),
            "{} missing: run scripts/install-deps.sh (creates .venv with dkimpy)",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/dkim_sign.py");
        let mut child = Command::new(&python)
            .arg(script)
            .args([
                "--domain",
                &format!("pass.{ZONE}"),
                "--selector",
                "sel",
                "--key",
            ])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dkim_sign.py");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(message.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "dkim_sign.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn uuid() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("m{}", N.fetch_add(1, Ordering::SeqCst))
}

fn message(from: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <info@acme.test>\r\nSubject: {subject}\r\n\
         Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject}@{ZONE}>\r\n\r\n\
         Hello from the inbound tests.\r\n"
    )
}

/// The queue entry's meta for tenant `tenant`.
fn meta(s: &Sesame, id: &str, tenant: &str) -> Value {
    assert!(is_ses_id(id));
    let out = sqlite3(
        &s.data_dir.join("queue.db"),
        &format!(
            "SELECT meta FROM queue_entries WHERE message_id = '{id}' AND tenant = '{tenant}';"
        ),
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("meta of {id}: {e}: {out:?}"))
}

fn status(meta: &Value, verdict: &str) -> String {
    meta["receipt"][verdict]["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no {verdict} in {meta:#}"))
        .to_string()
}

/// (spf, dkim, dmarc) statuses.
fn verdicts(meta: &Value) -> (String, String, String) {
    (
        status(meta, "spfVerdict"),
        status(meta, "dkimVerdict"),
        status(meta, "dmarcVerdict"),
    )
}

/// The header block of the stored message: its first field must be our
/// Received, then Authentication-Results and Received-SPF (unfolded).
fn added_headers(body: &str) -> (String, String) {
    let head = &body[..body.find("\r\n\r\n").expect("header block")];
    let unfolded = head.replace("\r\n\t", " ").replace("\r\n ", " ");
    let lines: Vec<&str> = unfolded.split("\r\n").collect();
    assert!(lines[0].starts_with("Received: from "), "{head}");
    assert!(
        lines[1].starts_with(&format!("Authentication-Results: {HOSTNAME};")),
        "{head}"
    );
    assert!(lines[2].starts_with("Received-SPF: "), "{head}");
    assert_eq!(
        unfolded.matches("Authentication-Results:").count(),
        1,
        "{head}"
    );
    (lines[1].to_string(), lines[2].to_string())
}

fn v(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

/// Forged (unsigned) mail from swaks: SPF pass aligned is a DMARC pass;
/// softfail under p=quarantine is stored flagged; a domain without
/// records is GRAY everywhere; the null sender is checked on HELO.
#[test]
fn swaks_mail_gets_spf_and_dmarc_verdicts() {
    let w = world();
    let s = &w.s;

    let from = format!("a@pass.{ZONE}");
    let id = w.deliver(&from, &message(&from, "pass")).expect_accepted();
    let (ar, spf) = added_headers(&s.queued_body(&id));
    assert!(ar.contains(&format!("spf=pass ({HOSTNAME}: domain of {from} designates 127.0.0.1 as permitted sender) smtp.mailfrom={from}")), "{ar}");
    assert!(ar.contains("dkim=none"), "{ar}");
    assert!(
        ar.contains(&format!(
            "dmarc=pass header.from=pass.{ZONE} policy.dmarc=reject"
        )),
        "{ar}"
    );
    assert!(spf.starts_with("Received-SPF: pass ("), "{spf}");
    assert!(spf.contains("client-ip=127.0.0.1;"), "{spf}");
    assert!(spf.contains(&format!("helo={CLIENT_HELO};")), "{spf}");
    let m = meta(s, &id, "acme");
    assert_eq!(verdicts(&m), v("PASS", "GRAY", "PASS"), "{m:#}");
    assert_eq!(m["flagged"], false);
    assert_eq!(m["receipt"]["dmarcPolicy"], Value::Null);
    assert_eq!(status(&m, "spamVerdict"), "GRAY");
    assert_eq!(status(&m, "virusVerdict"), "DISABLED");
    assert_eq!(
        m["receipt"]["recipients"],
        serde_json::json!(["info@acme.test"])
    );
    assert_eq!(m["store"], true);
    assert_eq!(m["rules"][0]["name"], "default", "{m:#}");

    let from = format!("a@soft.{ZONE}");
    let id = w.deliver(&from, &message(&from, "soft")).expect_accepted();
    let (ar, spf) = added_headers(&s.queued_body(&id));
    assert!(ar.contains("spf=softfail"), "{ar}");
    assert!(
        ar.contains(&format!(
            "dmarc=fail header.from=soft.{ZONE} policy.dmarc=quarantine"
        )),
        "{ar}"
    );
    assert!(spf.starts_with("Received-SPF: softfail"), "{spf}");
    let m = meta(s, &id, "acme");
    assert_eq!(verdicts(&m), v("FAIL", "GRAY", "FAIL"), "{m:#}");
    assert_eq!(m["receipt"]["dmarcPolicy"], "quarantine");
    assert_eq!(m["flagged"], true);

    let from = format!("a@none.{ZONE}");
    let id = w.deliver(&from, &message(&from, "none")).expect_accepted();
    let (ar, spf) = added_headers(&s.queued_body(&id));
    assert!(ar.contains("spf=none"), "{ar}");
    assert!(ar.contains("dmarc=none"), "{ar}");
    assert!(spf.starts_with("Received-SPF: none"), "{spf}");
    let m = meta(s, &id, "acme");
    assert_eq!(verdicts(&m), v("GRAY", "GRAY", "GRAY"), "{m:#}");
    assert_eq!(m["flagged"], false);

    // MAIL FROM:<> is checked on the HELO name (client.inbound.test: pass).
    let id = w
        .deliver("<>", &message(&format!("a@none.{ZONE}"), "bounce"))
        .expect_accepted();
    let (ar, _) = added_headers(&s.queued_body(&id));
    assert!(
        ar.contains(&format!(
            "spf=pass ({HOSTNAME}: domain of postmaster@{CLIENT_HELO}"
        )),
        "{ar}"
    );
    assert!(ar.contains(&format!("smtp.helo={CLIENT_HELO}")), "{ar}");
    assert_eq!(status(&meta(s, &id, "acme"), "spfVerdict"), "PASS");
    drop(w.nsd);
}

/// SPF `-all` with p=reject: refused while the tenant enforces DMARC (the
/// default), stored flagged once it does not. A forged From of a p=reject
/// domain over another domain's envelope is refused too.
#[test]
fn dmarc_reject_is_refused_when_enforced_and_flagged_when_not() {
    let w = world();
    let s = &w.s;
    let from = format!("a@fail.{ZONE}");
    let out = w.deliver(&from, &message(&from, "reject"));
    out.assert_reply(&format!(
        "550 5.7.1 Message rejected: email from fail.{ZONE} failed DMARC and the domain's policy is reject"
    ));
    assert!(out.accepted_id().is_none());
    let out = w.deliver(
        &format!("a@none.{ZONE}"),
        &message(&format!("ceo@pass.{ZONE}"), "spoof"),
    );
    out.assert_reply(&format!(
        "550 5.7.1 Message rejected: email from pass.{ZONE} failed DMARC and the domain's policy is reject"
    ));

    let tenant = s.cli_json(&["tenant", "set", "acme", "--dmarc-enforce", "off"]);
    assert_eq!(tenant["dmarc_enforce"], false, "{tenant}");
    let id = w.deliver(&from, &message(&from, "kept")).expect_accepted();
    let (ar, _) = added_headers(&s.queued_body(&id));
    assert!(ar.contains("spf=fail"), "{ar}");
    assert!(ar.contains("dmarc=fail"), "{ar}");
    let m = meta(s, &id, "acme");
    assert_eq!(verdicts(&m), v("FAIL", "GRAY", "FAIL"), "{m:#}");
    assert_eq!(m["receipt"]["dmarcPolicy"], "reject");
    assert_eq!(m["flagged"], true);
}

/// dkimpy's signature verifies (DMARC passes on DKIM alignment alone, SPF
/// being GRAY); the same message tampered fails DKIM but passes DMARC on
/// aligned SPF.
#[test]
fn dkimpy_signatures_are_verified() {
    let w = world();
    let s = &w.s;
    let author = format!("news@pass.{ZONE}");
    let signed = w.dkimpy_sign(&message(&author, "signed"));
    assert!(signed.starts_with("DKIM-Signature:"), "{signed}");

    let id = w
        .deliver(&format!("bounce@none.{ZONE}"), &signed)
        .expect_accepted();
    let (ar, _) = added_headers(&s.queued_body(&id));
    assert!(
        ar.contains("dkim=pass header.i=@pass.inbound.test header.s=sel"),
        "{ar}"
    );
    assert!(ar.contains("spf=none"), "{ar}");
    assert!(ar.contains("dmarc=pass"), "{ar}");
    assert_eq!(verdicts(&meta(s, &id, "acme")), v("GRAY", "PASS", "PASS"));

    let tampered = signed.replace("Hello from the inbound tests.", "Hello from a forger.");
    assert_ne!(tampered, signed);
    let id = w.deliver(&author, &tampered).expect_accepted();
    let (ar, _) = added_headers(&s.queued_body(&id));
    // mail-auth names a body hash mismatch `neutral`; SES says FAIL.
    assert!(
        ar.contains("dkim=neutral (body hash did not verify) header.i=@pass.inbound.test"),
        "{ar}"
    );
    assert!(ar.contains("spf=pass"), "{ar}");
    assert!(ar.contains("dmarc=pass"), "{ar}");
    assert_eq!(verdicts(&meta(s, &id, "acme")), v("PASS", "FAIL", "PASS"));
}

/// A nameserver that never answers: temporary errors everywhere, mail
/// accepted (never refused on a DNS error, even from a p=reject domain's
/// name), no crash.
#[test]
fn dns_errors_are_processing_failed_not_refusals() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = udp.local_addr().unwrap().to_string();
    drop(udp);
    let s = Sesame::start(Options::new().extra(&format!("[dns]\nnameservers = [\"{closed}\"]\n")));
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    let from = format!("a@fail.{ZONE}");
    let out = swaks(&[
        "--server",
        &s.server_arg("mx"),
        "--from",
        &from,
        "--to",
        "info@acme.test",
    ]);
    let id = out.expect_accepted();
    let (ar, spf) = added_headers(&s.queued_body(&id));
    assert!(ar.contains("spf=temperror"), "{ar}");
    assert!(spf.starts_with("Received-SPF: temperror"), "{spf}");
    let m = meta(&s, &id, "acme");
    assert_eq!(status(&m, "spfVerdict"), "PROCESSING_FAILED", "{m:#}");
    assert_eq!(status(&m, "dmarcVerdict"), "PROCESSING_FAILED", "{m:#}");
    assert_eq!(m["flagged"], false);
    // Still serving.
    swaks(&[
        "--server",
        &s.server_arg("mx"),
        "--from",
        &from,
        "--to",
        "x@acme.test",
    ])
    .expect_accepted();
}

/// Two sesames: the sender signs, and its published records (SPF with its
/// sending IP 127.0.0.2, DKIM, DMARC p=reject), printed as a zone, are
/// served by nsd, where the receiver resolves. Mail from the sender's IP passes everything;
/// the same From forged from 127.0.0.1 without a signature is refused.
#[test]
fn mail_signed_by_another_sesame_passes() {
    let sender = Sesame::start(
        Options::new().extra("[dns]\nsending_ips = [\"127.0.0.2\"]\ndmarc_policy = \"reject\"\n"),
    );
    let acct = sender.account("sender", "sender.test", true);
    // The records exactly as the sender prints them for publication.
    let sender_zone = sender.cli_ok(&["domain", "records", "sender.test", "--format", "zone"]);
    let nsd = Nsd::start(&[("test", &test_zone("")), ("sender.test", &sender_zone)]);
    let id = swaks_owned(&submit_args(
        &sender,
        &acct,
        "app@sender.test",
        "info@acme.test",
    ))
    .expect_accepted();
    let signed = sender.cli_ok(&["queue", "show", &id]);
    assert!(signed.contains("DKIM-Signature"), "{signed}");
    let envelope = sender.queue_entry(&id).expect("queued")["envelope_from"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(envelope.ends_with("@mail.sender.test"), "{envelope}");

    let receiver = Sesame::start(Options::new().extra(&format!(
        "[dns]\nnameservers = [\"{}\"]\n",
        nsd.nameserver()
    )));
    receiver.create_tenant("acme");
    receiver.add_identity("acme", "acme.test", true);
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("signed.eml");
    std::fs::write(&path, &signed).unwrap();
    let deliver = |local_ip: &str, from: &str, data: &str| {
        swaks(&[
            "--server",
            &receiver.server_arg("mx"),
            "--local-interface",
            local_ip,
            "--helo",
            "mx.sender.test",
            "--from",
            from,
            "--to",
            "info@acme.test",
            "--data",
            data,
        ])
    };
    let id = deliver("127.0.0.2", &envelope, &format!("@{}", path.display())).expect_accepted();
    let (ar, spf) = added_headers(&receiver.queued_body(&id));
    assert!(ar.contains("spf=pass"), "{ar}");
    assert!(ar.contains("dkim=pass header.d=sender.test"), "{ar}");
    assert!(
        ar.contains("dmarc=pass header.from=sender.test policy.dmarc=reject"),
        "{ar}"
    );
    assert!(spf.contains("client-ip=127.0.0.2;"), "{spf}");
    assert_eq!(
        verdicts(&meta(&receiver, &id, "acme")),
        v("PASS", "PASS", "PASS")
    );

    let forged = deliver(
        "127.0.0.1",
        &envelope,
        "From: <ceo@sender.test>\nTo: <info@acme.test>\nSubject: wire money\n\nNow.\n",
    );
    forged.assert_reply(
        "550 5.7.1 Message rejected: email from sender.test failed DMARC and the domain's policy is reject",
    );
}
