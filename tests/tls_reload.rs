//! TLS certificate reload on SIGHUP: sessions survive, new handshakes get
//! the new certificate, a broken certificate keeps the old one.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const RELOADED: &str = "TLS certificate reloaded";
const RELOAD_FAILED: &str = "TLS reload failed";

fn start_with_acme() -> (Sesame, Account) {
    let s = Sesame::start(Options::new());
    let acct = s.account("acme", "acme.test", true);
    (s, acct)
}

/// A fresh self-signed certificate and key from the `openssl` CLI, written
/// next to the live files (same directory, so a rename is atomic).
fn openssl_cert(s: &Sesame, tag: &str) -> (PathBuf, PathBuf) {
    let present = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|st| st.success())
        .unwrap_or(false);
    assert!(
        present,
        "the openssl CLI is missing: apt-get install openssl (these tests never skip)"
    );
    let dir = s.cert_path().parent().unwrap().to_path_buf();
    let cert = dir.join(format!("{tag}.crt.tmp"));
    let key = dir.join(format!("{tag}.key.tmp"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", "/CN=localhost", "-days", "2"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Rename `cert`/`key` over the configured tls.cert/tls.key.
fn install(s: &Sesame, cert: &Path, key: &Path) {
    std::fs::rename(key, s.key_path()).expect("rename key");
    std::fs::rename(cert, s.cert_path()).expect("rename cert");
}

/// DER of the first certificate in a PEM file (parsed by rustls-pemfile).
fn pem_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).expect("read PEM");
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .expect("PEM parses");
    certs
        .first()
        .unwrap_or_else(|| panic!("no certificate in {}", path.display()))
        .as_ref()
        .to_vec()
}

/// SIGHUP, then wait until `needle` has been logged `n` times in total.
#[track_caller]
fn hup_and_wait(s: &mut Sesame, needle: &str, n: usize) {
    send_signal(s.pid(), "HUP");
    let seen = s.log.wait_for(|l| l.matches(needle).count() >= n);
    assert!(
        seen,
        "no {needle:?} (#{n}) after SIGHUP; running: {}\nstderr:\n{}",
        s.is_running(),
        s.logs()
    );
}

/// DER presented by a new session on each TLS path: implicit TLS on
/// submissions, STARTTLS on mx and on submission.
fn fresh_certs(s: &Sesame) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut c = Smtp::open_tls(s.submissions());
    c.ehlo();
    out.push(("submissions", c.peer_cert_der().expect("peer cert")));
    for (name, addr) in [("mx", s.mx()), ("submission", s.submission())] {
        let mut c = Smtp::open(addr);
        c.ehlo();
        c.starttls();
        c.ehlo();
        out.push((name, c.peer_cert_der().expect("peer cert")));
    }
    out
}

fn mx_mail(c: &mut Smtp, subject: &str) -> String {
    let r = c.send_mail(
        "someone@external.example",
        &["info@acme.test"],
        &simple_data("someone@external.example", "info@acme.test", subject),
    );
    accepted_id(&r)
}

/// Rule: SIGHUP serves the new cert to new handshakes and keeps existing sessions working.
#[test]
fn sighup_reloads_certificate_without_dropping_sessions() {
    let (mut s, acct) = start_with_acme();
    let old_file = pem_der(&s.cert_path());

    let mut sub = Smtp::open_tls(s.submissions());
    sub.ehlo();
    let old_sub = sub.peer_cert_der().expect("submissions peer cert");
    let mut mx = Smtp::open(s.mx());
    mx.ehlo();
    mx.starttls();
    mx.ehlo();
    let old_mx = mx.peer_cert_der().expect("mx peer cert");
    assert_eq!(old_sub, old_file, "submissions presents tls.cert");
    assert_eq!(old_mx, old_file, "mx STARTTLS presents tls.cert");
    // A plaintext session opened before the reload that starts TLS after it.
    let mut late = Smtp::open(s.submission());
    late.ehlo();

    let (cert, key) = openssl_cert(&s, "new");
    let new_file = pem_der(&cert);
    assert_ne!(new_file, old_file, "openssl made a different certificate");
    install(&s, &cert, &key);
    hup_and_wait(&mut s, RELOADED, 1);
    assert!(!s.logs().contains(RELOAD_FAILED), "{}", s.logs());

    // Old sessions: still alive and fully usable.
    sub.expect("NOOP", "250 2.0.0 Ok");
    mx.expect("NOOP", "250 2.0.0 Ok");
    let r = sub.auth_plain(&acct.user, &acct.pass);
    assert_eq!(r.last(), "235 2.7.0 Authentication successful.");
    let from = format!("app@{}", acct.domain);
    let to = "success@simulator.amazonses.com";
    let r = sub.send_mail(&from, &[to], &simple_data(&from, to, "after reload"));
    let id = accepted_id(&r);
    let e = s
        .queue_entry(&id)
        .expect("submission after reload is queued");
    assert_eq!(e["tenant"], "acme", "{e}");
    let id = mx_mail(&mut mx, "mx after reload");
    assert!(
        s.queue_entry(&id).is_some(),
        "mx message after reload queued"
    );
    assert_eq!(sub.peer_cert_der().unwrap(), old_file, "old session kept");

    // Every handshake after the reload presents the new certificate.
    late.starttls();
    assert_eq!(
        late.peer_cert_der().unwrap(),
        new_file,
        "STARTTLS after the reload on a session opened before it"
    );
    for (name, der) in fresh_certs(&s) {
        assert_ne!(der, old_file, "{name}: still the old certificate");
        assert_eq!(der, new_file, "{name}: not the new certificate");
    }
    // And the new key really signs: a new session submits a message.
    let mut c = Smtp::open_tls(s.submissions());
    c.ehlo();
    let r = c.auth_plain(&acct.user, &acct.pass);
    assert_eq!(r.last(), "235 2.7.0 Authentication successful.");
    let r = c.send_mail(&from, &[to], &simple_data(&from, to, "new cert"));
    accepted_id(&r);

    assert!(s.stop().success(), "exit status after SIGTERM");
}

/// Rule: a bad cert/key on SIGHUP is refused and logged; the cert in use stays.
#[test]
fn failed_reload_keeps_previous_certificate() {
    let (mut s, _acct) = start_with_acme();
    let original = pem_der(&s.cert_path());
    let mut idle = Smtp::open_tls(s.submissions());
    idle.ehlo();

    // Garbage in tls.cert.
    let tmp = s.cert_path().with_extension("garbage.tmp");
    std::fs::write(&tmp, "this is not a certificate\n").unwrap();
    std::fs::rename(&tmp, s.cert_path()).unwrap();
    hup_and_wait(&mut s, RELOAD_FAILED, 1);
    assert_eq!(s.log.count(RELOADED), 0, "{}", s.logs());
    for (name, der) in fresh_certs(&s) {
        assert_eq!(der, original, "{name}: after a failed reload");
    }
    idle.expect("NOOP", "250 2.0.0 Ok");

    // A valid certificate whose key is not the configured key (the operator
    // replaced only one of the two files).
    let (cert, key) = openssl_cert(&s, "mismatch");
    std::fs::rename(&cert, s.cert_path()).unwrap();
    std::fs::remove_file(&key).unwrap();
    hup_and_wait(&mut s, RELOAD_FAILED, 2);
    assert_eq!(s.log.count(RELOADED), 0, "{}", s.logs());
    for (name, der) in fresh_certs(&s) {
        assert_eq!(der, original, "{name}: after a mismatched cert/key");
    }

    // Fixing the files and SIGHUP again installs the new pair.
    let (cert, key) = openssl_cert(&s, "fixed");
    let fixed = pem_der(&cert);
    install(&s, &cert, &key);
    hup_and_wait(&mut s, RELOADED, 1);
    for (name, der) in fresh_certs(&s) {
        assert_eq!(der, fixed, "{name}: after fixing the files");
    }

    // A failure after a successful reload keeps the reloaded one, not the
    // one sesame started with.
    std::fs::write(s.key_path(), "garbage key\n").unwrap();
    hup_and_wait(&mut s, RELOAD_FAILED, 3);
    for (name, der) in fresh_certs(&s) {
        assert_eq!(der, fixed, "{name}: after a garbage key");
    }
    idle.expect("NOOP", "250 2.0.0 Ok");
    assert_eq!(idle.peer_cert_der().unwrap(), original);
    assert!(s.stop().success(), "exit status after SIGTERM");
}

/// Rule: SIGHUP right after the `ready` line reloads; it never kills sesame.
#[test]
fn sighup_right_after_ready_reloads() {
    // The window is short: several fresh starts make a lost race visible.
    for round in 0..8 {
        let mut s = Sesame::start(Options::new());
        send_signal(s.pid(), "HUP");
        let reloaded = s.log.wait_for(|l| l.contains(RELOADED));
        let running = s.is_running();
        let status = if running {
            "still running".to_string()
        } else {
            format!("exited: {}", s.wait_exit())
        };
        assert!(
            reloaded && running,
            "round {round}: SIGHUP right after ready: reloaded={reloaded}, \
             process {status}\nstderr:\n{}",
            s.logs()
        );
        let mut c = Smtp::open_tls(s.submissions());
        c.expect("NOOP", "250 2.0.0 Ok");
        drop(c);
        assert!(s.stop().success(), "round {round}: exit status");
    }
}
