//! Domains end to end (issue 3): `domain add` / `records` / `verify` against
//! two real authoritative DNS servers (an independent nsd loading the zone
//! output unchanged, and sesame's embedded hickory server), `dig` for every
//! record type, the SES status transitions, DKIM signing checked by two
//! independent verifiers (dkimpy and mail-auth), custom MAIL FROM, key
//! rotation and the dev domain.
//!
//! Peers: nsd + nsd-checkzone (`apt-get install nsd`), dig (`apt-get install
//! dnsutils`), swaks, and the venv's dkimpy (`scripts/install-deps.sh`).
//! Missing peers panic with the install command; nothing is skipped.
//! Everything stays on 127.0.0.0/8: every config names its nameservers
//! (an empty list would mean the system resolver).
//!
//! The embedded server's port. `[dns_server] bind = "127.0.0.1:0"` lets the
//! kernel pick the port (no probing race), and the ready line names it
//! (`"dns":"127.0.0.1:PORT"`). `start_embedded` then rewrites the config
//! file so that `[dns] nameservers` and `[dns_server] bind` both name that
//! port. The running `serve` read its config at start and is not affected;
//! every later CLI command (`domain verify` ...) asks the embedded server,
//! and a restart binds the same port again (so serve's own re-check asks it
//! too). Before the pin, serve's nameserver is a loopback placeholder, so its
//! start-up re-check never leaves 127.0.0.0/8; the next re-check is an hour
//! later (`recheck_interval_secs` default). Domains are added after the
//! ready line, so that start-up pass has nothing to check or race with,
//! except in the dev test, where the dev domain exists at start (see there).

mod common;
mod nsd;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use nsd::Nsd;
use serde_json::Value;

const PUBLIC_HOST: &str = "gw.sesame.test";
const SPF: &str = "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all";
const DMARC: &str = "v=DMARC1; p=quarantine";
const RCPT: &str = "success@simulator.amazonses.com";
const ZONES_RELOADED: &str = "DNS zones reloaded";
/// What swaks writes as the body of its default message.
const SWAKS_BODY: &str = "This is a test mailing";

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// `[dns]` and `[dns_server]` of a test config.
#[derive(Clone, Debug)]
struct DnsSettings {
    nameservers: Vec<String>,
    pending_window_secs: i64,
    rotation_grace_secs: Option<i64>,
    default_mail_from_domain: Option<String>,
    /// `[dns_server] bind`; None: no embedded server.
    server_bind: Option<String>,
    recheck_interval_secs: Option<u64>,
}

impl DnsSettings {
    /// Verification asks `nameserver`; no embedded server.
    fn resolver(nameserver: impl ToString) -> DnsSettings {
        DnsSettings {
            nameservers: vec![nameserver.to_string()],
            pending_window_secs: 72 * 3600,
            rotation_grace_secs: None,
            default_mail_from_domain: None,
            server_bind: None,
            recheck_interval_secs: None,
        }
    }

    /// The embedded server on a kernel-chosen port (see the module comment).
    fn embedded() -> DnsSettings {
        DnsSettings {
            server_bind: Some("127.0.0.1:0".into()),
            ..DnsSettings::resolver(closed_port())
        }
    }

    fn toml(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!(
            "[dns]\nnameservers = [{}]\npublic_hostname = {PUBLIC_HOST:?}\n\
             sending_ips = [\"192.0.2.10\", \"2001:db8::10\"]\ndmarc_policy = \"quarantine\"\n\
             pending_window_secs = {}\n",
            list(&self.nameservers),
            self.pending_window_secs
        );
        if let Some(g) = self.rotation_grace_secs {
            s += &format!("rotation_grace_secs = {g}\n");
        }
        if let Some(i) = self.recheck_interval_secs {
            s += &format!("recheck_interval_secs = {i}\n");
        }
        if let Some(d) = &self.default_mail_from_domain {
            s += &format!("default_mail_from_domain = {d:?}\n");
        }
        if let Some(bind) = &self.server_bind {
            s += &format!("\n[dns_server]\nenabled = true\nbind = {bind:?}\nrefresh_ms = 50\n");
        }
        s
    }
}

fn options(dns: &DnsSettings, dev: bool) -> Options {
    let o = Options::new().extra(&dns.toml());
    if dev { o.dev() } else { o }
}

/// Rewrites the config file of `s` with new DNS settings (the running serve,
/// if any, keeps what it read at start).
fn configure(s: &mut Sesame, dns: &DnsSettings) {
    s.options.extra = format!("{}\n", dns.toml());
    std::fs::write(&s.config, s.options.render(s.dir.path())).expect("rewrite config");
}

/// A loopback port where nothing listens (UDP or TCP): a nameserver that
/// never answers.
fn closed_port() -> String {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    let addr = udp.local_addr().unwrap();
    drop(udp);
    addr.to_string()
}

/// `serve` with the embedded DNS server, pinned (module comment).
fn start_embedded(mut dns: DnsSettings, dev: bool) -> (Sesame, DnsSettings) {
    let mut s = Sesame::start(options(&dns, dev));
    let addr = s.dns();
    assert!(addr.ip().is_loopback(), "dns bound to {addr}");
    dns.server_bind = Some(addr.to_string());
    dns.nameservers = vec![addr.to_string()];
    configure(&mut s, &dns);
    (s, dns)
}

// ---------------------------------------------------------------------------
// Domains through the CLI
// ---------------------------------------------------------------------------

fn add_domain(s: &Sesame, tenant: &str, domain: &str, dkim: &str) -> Value {
    s.cli_json(&["domain", "add", tenant, domain, "--dkim", dkim])
}

fn status(s: &Sesame, domain: &str) -> Value {
    s.cli_json(&["domain", "status", domain, "--json"])
}

/// (verification, dkim, mail_from) of a domain JSON.
fn statuses(domain: &Value) -> (String, String, String) {
    let f = |k: &str| {
        domain[k]["status"]
            .as_str()
            .unwrap_or_else(|| panic!("no {k}.status in {domain}"))
            .to_string()
    };
    (f("verification"), f("dkim"), f("mail_from"))
}

#[track_caller]
fn assert_statuses(s: &Sesame, domain: &str, want: (&str, &str, &str)) {
    let d = status(s, domain);
    let (v, k, m) = statuses(&d);
    assert_eq!(
        (v.as_str(), k.as_str(), m.as_str()),
        want,
        "(verification, dkim, mail_from) of {domain}:\n{d:#}"
    );
}

/// Keys of `domain status --json` as (selector, key_type, state).
fn keys(domain: &Value) -> Vec<(String, String, String)> {
    domain["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {domain}"))
        .iter()
        .map(|k| {
            let f = |n: &str| k[n].as_str().unwrap_or_default().to_string();
            (f("selector"), f("key_type"), f("state"))
        })
        .collect()
}

fn selectors_in(domain: &Value, state: &str) -> Vec<String> {
    keys(domain)
        .into_iter()
        .filter(|(_, _, st)| st == state)
        .map(|(sel, _, _)| sel)
        .collect()
}

fn records_json(s: &Sesame, domain: &str) -> Vec<Value> {
    match s.cli_json(&["domain", "records", domain, "--format", "json"]) {
        Value::Array(a) => a,
        other => panic!("domain records --format json is not an array: {other}"),
    }
}

fn field(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no string {k} in {v}"))
        .to_string()
}

fn zone(s: &Sesame, domain: &str) -> String {
    s.cli_ok(&["domain", "records", domain, "--format", "zone"])
}

/// A selector as generated: `s` + YYYYMMDD + `-rsa`/`-ed` (+ `-N`).
fn is_dated_selector(sel: &str, kind: &str) -> bool {
    let Some(rest) = sel.strip_prefix('s') else {
        return false;
    };
    let (date, tail) = rest.split_at(rest.len().min(8));
    date.len() == 8
        && date.bytes().all(|b| b.is_ascii_digit())
        && (tail == format!("-{kind}")
            || tail
                .strip_prefix(&format!("-{kind}-"))
                .is_some_and(|n| n.parse::<u32>().is_ok()))
}

/// Waits for the embedded server to log a zone reload beyond the `before`
/// count (the signal that a change in control.db is being answered).
#[track_caller]
fn wait_reload(s: &Sesame, before: usize) {
    assert!(
        s.log
            .wait_for(|t| t.matches(ZONES_RELOADED).count() > before),
        "no `{ZONES_RELOADED}` after the change; log:\n{}",
        s.logs()
    );
}

/// Runs `change` (a CLI step on an existing `domain`); if it changed the
/// zone text that `domain records` prints, waits until the embedded server
/// has reloaded its zones.
fn zone_change<T>(s: &Sesame, domain: &str, change: impl FnOnce() -> T) -> T {
    let zone_before = zone(s, domain);
    let before = s.log.count(ZONES_RELOADED);
    let out = change();
    if zone(s, domain) != zone_before {
        wait_reload(s, before);
    }
    out
}

/// One record as `domain verify` prints it.
#[derive(Debug)]
struct Check {
    ok: bool,
    name: String,
    rtype: String,
    expected: String,
    found: Vec<String>,
    dns_error: Option<String>,
}

/// The per-record blocks and the summary `(verification, dkim, mail_from)`
/// (as SES tokens) of `domain verify` text output.
fn parse_verify_text(text: &str) -> (Vec<Check>, Option<(String, String, String)>) {
    let mut checks: Vec<Check> = Vec::new();
    let mut summary = None;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("ok ")
            .or_else(|| line.strip_prefix("MISSING "))
        {
            let mut parts = rest.split_whitespace();
            checks.push(Check {
                ok: line.starts_with("ok "),
                name: parts.next().unwrap_or_default().to_string(),
                rtype: parts.next().unwrap_or_default().to_string(),
                expected: String::new(),
                found: vec![],
                dns_error: None,
            });
        } else if let Some(v) = line.trim_start().strip_prefix("expected:") {
            checks
                .last_mut()
                .expect("expected: outside a block")
                .expected = v.trim().to_string();
        } else if let Some(v) = line.trim_start().strip_prefix("found:") {
            let v = v.trim();
            if v != "nothing" {
                checks
                    .last_mut()
                    .expect("found: outside a block")
                    .found
                    .push(v.to_string());
            }
        } else if let Some(v) = line.trim_start().strip_prefix("DNS error:") {
            checks
                .last_mut()
                .expect("DNS error outside a block")
                .dns_error = Some(v.trim().into());
        } else if line.starts_with("verification=") {
            let m: BTreeMap<&str, String> = line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, ses_token(v)))
                .collect();
            summary = Some((
                m.get("verification").cloned().unwrap_or_default(),
                m.get("dkim").cloned().unwrap_or_default(),
                m.get("mail_from").cloned().unwrap_or_default(),
            ));
        }
    }
    (checks, summary)
}

/// `TemporaryFailure` or `TEMPORARY_FAILURE` → `TEMPORARY_FAILURE`.
fn ses_token(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        return s.to_string();
    }
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn find_check<'a>(checks: &'a [Check], name: &str, rtype: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name && c.rtype == rtype)
        .unwrap_or_else(|| panic!("no {name} {rtype} in verify output: {checks:#?}"))
}

/// `domain verify` (text): every published record is printed with what was
/// expected and what DNS returned, and all matched.
#[track_caller]
fn verify_all_ok(s: &Sesame, domain: &str) -> String {
    let text = s.cli_ok(&["domain", "verify", domain]);
    let (checks, summary) = parse_verify_text(&text);
    let records = records_json(s, domain);
    assert_eq!(checks.len(), records.len(), "one block per record:\n{text}");
    for r in &records {
        let c = find_check(&checks, &field(r, "name"), &field(r, "type"));
        assert!(c.ok, "{c:?} not ok:\n{text}");
        assert_eq!(c.expected, field(r, "value"), "expected value of {c:?}");
        assert_eq!(
            c.found,
            vec![field(r, "value")],
            "found value of {c:?}:\n{text}"
        );
        assert_eq!(c.dns_error, None);
    }
    assert_eq!(
        summary,
        Some(("SUCCESS".into(), "SUCCESS".into(), "SUCCESS".into())),
        "summary line:\n{text}"
    );
    assert_statuses(s, domain, ("SUCCESS", "SUCCESS", "SUCCESS"));
    text
}

/// The records every domain gets, derived from the test config.
#[track_caller]
fn assert_expected_records(records: &[Value], domain: &str, dkim: &[(&str, &str)]) {
    let mut want: Vec<(String, String, String)> = vec![
        (domain.into(), "MX".into(), format!("10 {PUBLIC_HOST}")),
        (domain.into(), "TXT".into(), SPF.into()),
        (format!("_dmarc.{domain}"), "TXT".into(), DMARC.into()),
        (
            format!("mail.{domain}"),
            "MX".into(),
            format!("10 {PUBLIC_HOST}"),
        ),
        (format!("mail.{domain}"), "TXT".into(), SPF.into()),
    ];
    for (selector, value) in dkim {
        want.push((
            format!("{selector}._domainkey.{domain}"),
            "TXT".into(),
            value.to_string(),
        ));
    }
    let mut got: Vec<(String, String, String)> = records
        .iter()
        .map(|r| (field(r, "name"), field(r, "type"), field(r, "value")))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "records of {domain}");
}

/// (selector, `v=DKIM1; k=...; p=...`) for every key in a domain JSON.
fn dkim_values(domain: &Value, states: &[&str]) -> Vec<(String, String)> {
    domain["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| states.contains(&k["state"].as_str().unwrap_or_default()))
        .map(|k| {
            (
                field(k, "selector"),
                format!(
                    "v=DKIM1; k={}; p={}",
                    field(k, "key_type"),
                    field(k, "public_key")
                ),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Mail
// ---------------------------------------------------------------------------

/// A credential for `tenant`, out of the sandbox.
fn account(s: &Sesame, tenant: &str, domain: &str) -> Account {
    let cred = s.create_credential(tenant);
    s.set_production(tenant);
    Account {
        tenant: tenant.into(),
        domain: domain.into(),
        user: cred.smtp_username.clone(),
        pass: cred.smtp_password.clone(),
        cred,
    }
}

/// swaks: STARTTLS + AUTH PLAIN on submission, From = envelope = `from`.
fn send(s: &Sesame, acct: &Account, from: &str, extra: &[&str]) -> Swaks {
    let mut args = submit_args(s, acct, from, RCPT);
    args.extend(extra.iter().map(|a| a.to_string()));
    swaks_owned(&args)
}

/// `sesame queue show ID`: the message exactly as stored.
fn queue_show(s: &Sesame, id: &str) -> Vec<u8> {
    let out = Command::new(sesame_bin())
        .arg("--config")
        .arg(&s.config)
        .args(["queue", "show", id])
        .output()
        .expect("run sesame queue show");
    assert!(
        out.status.success(),
        "queue show {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Unfolded header fields (name, value) of a message.
fn header_fields(message: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.to_string(), value.to_string()));
        }
    }
    fields
}

/// Tags of every DKIM-Signature field, in order (whitespace removed).
fn dkim_signatures(message: &[u8]) -> Vec<BTreeMap<String, String>> {
    header_fields(message)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("DKIM-Signature"))
        .map(|(_, v)| {
            let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            compact
                .split(';')
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// h= as lower-case names, in order.
fn signed_headers(sig: &BTreeMap<String, String>) -> Vec<String> {
    sig.get("h")
        .map(|h| h.split(':').map(|n| n.to_ascii_lowercase()).collect())
        .unwrap_or_default()
}

/// dkimpy (`tests/py/dkim_verify.py`), keys looked up at `ns`: (all valid,
/// one JSON object per signature).
fn dkimpy(message: &[u8], ns: SocketAddr) -> (bool, Vec<Value>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python3");
    assert!(
        python.is_file(),
        "{} missing: run scripts/install-deps.sh (creates .venv with dkimpy, dnspython, pynacl)",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg(root.join("tests/py/dkim_verify.py"))
        .arg("--ns")
        .arg(ns.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dkim_verify.py");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Traceback"),
        "dkim_verify.py crashed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("dkimpy line {l:?}: {e}")))
        .collect();
    (out.status.success(), lines)
}

/// mail-auth's verifier, keys looked up at `ns` only: (selector, algorithm,
/// result) per signature.
fn mail_auth_verify(
    message: &[u8],
    ns: SocketAddr,
) -> Vec<(String, String, mail_auth::DkimResult)> {
    use mail_auth::hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
    };
    use mail_auth::{AuthenticatedMessage, MessageAuthenticator};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
            .into_iter()
            .map(|mut c| {
                c.port = ns.port();
                c
            })
            .collect();
        let server = NameServerConfig::new(ns.ip(), true, connections);
        let authenticator = MessageAuthenticator::new(
            ResolverConfig::from_name_servers(vec![server]),
            ResolverOpts::default(),
        )
        .expect("mail-auth resolver");
        let parsed = AuthenticatedMessage::parse(message).expect("mail-auth parses the message");
        authenticator
            .verify_dkim(&parsed)
            .await
            .iter()
            .map(|o| {
                let sig = o.signature();
                (
                    sig.map(|s| s.s.clone()).unwrap_or_default(),
                    sig.map(|s| format!("{:?}", s.a)).unwrap_or_default(),
                    o.result().clone(),
                )
            })
            .collect()
    })
}

/// Both verifiers pass every signature; returns dkimpy's lines.
#[track_caller]
fn assert_verifies(message: &[u8], ns: SocketAddr, signatures: usize) -> Vec<Value> {
    let (ok, lines) = dkimpy(message, ns);
    assert!(
        ok && lines.len() == signatures && lines.iter().all(|l| l["valid"] == true),
        "dkimpy: {lines:#?}\nmessage:\n{}",
        String::from_utf8_lossy(message)
    );
    let results = mail_auth_verify(message, ns);
    assert_eq!(results.len(), signatures, "mail-auth results: {results:?}");
    for (sel, alg, r) in &results {
        assert_eq!(*r, mail_auth::DkimResult::Pass, "mail-auth {sel} {alg}");
    }
    lines
}

/// The queued message has exactly one signature per key in `want`
/// (selector, a=), d=`domain`, relaxed/relaxed, From over-signed.
#[track_caller]
fn assert_signed(
    message: &[u8],
    domain: &str,
    want: &[(&str, &str)],
) -> Vec<BTreeMap<String, String>> {
    let sigs = dkim_signatures(message);
    let text = String::from_utf8_lossy(message);
    assert_eq!(sigs.len(), want.len(), "DKIM-Signature count in:\n{text}");
    for (sig, (selector, alg)) in sigs.iter().zip(want) {
        let tag = |k: &str| sig.get(k).map(String::as_str).unwrap_or_default();
        assert_eq!(tag("v"), "1");
        assert_eq!(tag("d"), domain, "d= in {sig:?}");
        assert_eq!(tag("s"), *selector, "s= in {sig:?}");
        assert_eq!(tag("a"), *alg, "a= in {sig:?}");
        assert_eq!(tag("c"), "relaxed/relaxed", "c= in {sig:?}");
        let h = signed_headers(sig);
        for name in ["from", "to", "subject", "date", "message-id"] {
            assert!(h.contains(&name.to_string()), "h= lacks {name}: {h:?}");
        }
        assert_eq!(
            h.iter().filter(|n| *n == "from").count(),
            2,
            "From over-signed: {h:?}"
        );
    }
    sigs
}

/// A copy of the message with one body word changed.
fn tampered(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(message.to_vec()).unwrap();
    assert!(text.contains(SWAKS_BODY), "body not found:\n{text}");
    text.replacen(SWAKS_BODY, "This is a tampered mailing", 1)
        .into_bytes()
}

/// The envelope sender sesame will deliver with (`queue list --json`
/// `envelope_from`); `from` keeps the sender the client gave (SES's Source).
#[track_caller]
fn envelope_from(s: &Sesame, id: &str, client_sender: &str) -> String {
    let e = s
        .queue_entry(id)
        .unwrap_or_else(|| panic!("{id} not in queue: {:?}", s.queue()));
    assert_eq!(field(&e, "from"), client_sender, "queue entry {e}");
    field(&e, "envelope_from")
}

// ---------------------------------------------------------------------------
// dig
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    /// (name, type, rdata) of the answer section; TXT rdata joined.
    answers: Vec<(String, String, String)>,
    raw: String,
}

fn dig(server: SocketAddr, tcp: bool, rtype: &str, name: &str) -> Dig {
    let mut cmd = Command::new("dig");
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd
        .args(["+noall", "+comments", "+answer", rtype, name])
        .output()
        .unwrap_or_else(|e| panic!("dig not runnable ({e}): apt-get install -y dnsutils"));
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {rtype} {name} failed ({}):\n{raw}",
        out.status
    );
    let status = raw
        .split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{raw}"))
        .to_string();
    let flags = raw
        .lines()
        .find_map(|l| l.strip_prefix(";; flags:"))
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no flags in dig output:\n{raw}"))
        .split_whitespace()
        .map(String::from)
        .collect();
    let answers = raw
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let rdata = t[4..].join(" ");
            let rdata = if t[3] == "TXT" {
                join_txt(&rdata)
            } else {
                rdata
            };
            (
                t[0].trim_end_matches('.').to_string(),
                t[3].to_string(),
                rdata,
            )
        })
        .collect();
    Dig {
        status,
        flags,
        answers,
        raw,
    }
}

/// `"a" "b"` → `ab` (RFC 6376 3.6.2.2).
fn join_txt(rdata: &str) -> String {
    let mut out = String::new();
    let mut in_quotes = false;
    let mut chars = rdata.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_quotes = !in_quotes,
            '\\' if in_quotes => out.extend(chars.next()),
            c if in_quotes => out.push(c),
            _ => {}
        }
    }
    out
}

/// An authoritative answer that offers no recursion.
#[track_caller]
fn assert_authoritative(d: &Dig, status: &str) {
    assert_eq!(d.status, status, "{}", d.raw);
    assert!(
        d.flags.contains(&"aa".to_string()),
        "no aa flag:\n{}",
        d.raw
    );
    assert!(
        !d.flags.contains(&"ra".to_string()),
        "ra flag set:\n{}",
        d.raw
    );
}

/// The rdata values of `rtype` answers at `name`.
fn answer_values(d: &Dig, name: &str, rtype: &str) -> Vec<String> {
    d.answers
        .iter()
        .filter(|(n, t, _)| n == name && t == rtype)
        .map(|(_, _, v)| v.clone())
        .collect()
}

/// The SOA rdata of a zone text.
fn soa_rdata(zone: &str) -> String {
    let line = zone
        .lines()
        .find(|l| l.contains(" IN SOA "))
        .unwrap_or_else(|| panic!("no SOA in zone:\n{zone}"));
    line.split(" IN SOA ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// 1, 2: add → records → verify against real DNS servers
// ---------------------------------------------------------------------------

/// Rule: `domain records --format zone` loads unchanged into nsd (and passes
/// nsd-checkzone), and `domain verify` against that nsd turns verification,
/// DKIM and MAIL FROM to SUCCESS, printing expected and found per record.
#[test]
fn verify_against_nsd_loaded_with_the_zone_output() {
    let mut dns = DnsSettings::resolver(closed_port());
    let mut s = Sesame::offline(options(&dns, false));
    s.create_tenant("acme");
    let added = add_domain(&s, "acme", "acme.test", "rsa2048");
    assert_eq!(
        statuses(&added),
        ("PENDING".into(), "PENDING".into(), "PENDING".into()),
        "{added:#}"
    );
    let key_list = keys(&added);
    assert_eq!(key_list.len(), 1, "default is one key: {key_list:?}");
    let (selector, key_type, state) = &key_list[0];
    assert!(is_dated_selector(selector, "rsa"), "selector {selector}");
    assert_eq!((key_type.as_str(), state.as_str()), ("rsa", "active"));
    let dkim = dkim_values(&added, &["active"]);
    let dkim: Vec<(&str, &str)> = dkim.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_expected_records(&records_json(&s, "acme.test"), "acme.test", &dkim);

    // The zone output exactly as printed (Nsd::start runs nsd-checkzone).
    let zone_text = zone(&s, "acme.test");
    let nsd = Nsd::start(&[("acme.test", &zone_text)]);
    dns.nameservers = vec![nsd.nameserver()];
    configure(&mut s, &dns);

    let text = verify_all_ok(&s, "acme.test");
    // Spot-check the text layout for one record.
    let dkim_name = format!("{selector}._domainkey.acme.test");
    assert!(text.contains(&format!("ok      {dkim_name} TXT")), "{text}");
    assert!(
        text.contains(&format!("expected: {SPF}")) && text.contains(&format!("found:    {SPF}")),
        "{text}"
    );
    let listed = s.cli_json(&["domain", "list", "--json"]);
    assert_eq!(
        statuses(&listed[0]),
        ("SUCCESS".into(), "SUCCESS".into(), "SUCCESS".into())
    );
    let ids = s.cli_json(&["identity", "list", "acme", "--json"]);
    assert!(
        ids.to_string().contains("\"SUCCESS\""),
        "the domain identity is verified too: {ids}"
    );
}

/// Rule: the embedded server answers what `domain records` prints, so
/// `domain verify` against it gives SUCCESS for all three statuses.
#[test]
fn verify_against_the_embedded_dns_server() {
    let (s, _dns) = start_embedded(DnsSettings::embedded(), false);
    s.create_tenant("acme");
    let before = s.log.count(ZONES_RELOADED);
    let added = add_domain(&s, "acme", "acme.test", "rsa2048+ed25519");
    wait_reload(&s, before);
    let dkim = dkim_values(&added, &["active"]);
    assert_eq!(dkim.len(), 2, "{added:#}");
    let text = verify_all_ok(&s, "acme.test");
    for (selector, value) in &dkim {
        assert!(
            text.contains(&format!("ok      {selector}._domainkey.acme.test TXT"))
                && text.contains(&format!("found:    {value}")),
            "{text}"
        );
    }
    let report = s.cli_json(&["domain", "verify", "acme.test", "--json"]);
    for r in report["records"].as_array().unwrap() {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["found"], Value::Array(vec![r["value"].clone()]), "{r}");
    }
}

// ---------------------------------------------------------------------------
// 3: dig against the embedded server
// ---------------------------------------------------------------------------

/// Rule: over UDP and TCP the embedded server answers SOA, NS, MX (domain
/// and MAIL FROM), SPF, DKIM, DMARC and MAIL FROM SPF exactly as `domain
/// records` prints them, authoritatively (aa) and without recursion (no ra);
/// names outside its zones get REFUSED; a domain added while it runs is
/// answered without a restart.
#[test]
fn dig_gets_every_record_from_the_embedded_server() {
    let (s, _dns) = start_embedded(DnsSettings::embedded(), false);
    s.create_tenant("acme");
    let before = s.log.count(ZONES_RELOADED);
    add_domain(&s, "acme", "acme.test", "rsa2048+ed25519");
    wait_reload(&s, before);
    let ns = s.dns();
    let zone_text = zone(&s, "acme.test");
    let records = records_json(&s, "acme.test");
    let purposes: Vec<String> = records.iter().map(|r| field(r, "purpose")).collect();
    for p in [
        "mx",
        "spf",
        "dkim",
        "dmarc",
        "mail_from_mx",
        "mail_from_spf",
    ] {
        assert!(
            purposes.contains(&p.to_string()),
            "no {p} record: {purposes:?}"
        );
    }

    for tcp in [false, true] {
        let proto = if tcp { "TCP" } else { "UDP" };
        let d = dig(ns, tcp, "SOA", "acme.test");
        assert_authoritative(&d, "NOERROR");
        assert_eq!(
            answer_values(&d, "acme.test", "SOA"),
            vec![soa_rdata(&zone_text)],
            "{proto}"
        );
        let d = dig(ns, tcp, "NS", "acme.test");
        assert_authoritative(&d, "NOERROR");
        assert_eq!(
            answer_values(&d, "acme.test", "NS"),
            vec![format!("{PUBLIC_HOST}.")],
            "{proto}"
        );
        for r in &records {
            let (name, rtype, value) = (field(r, "name"), field(r, "type"), field(r, "value"));
            let d = dig(ns, tcp, &rtype, &name);
            assert_authoritative(&d, "NOERROR");
            let want = if rtype == "MX" {
                format!("{value}.")
            } else {
                value
            };
            assert_eq!(
                answer_values(&d, &name, &rtype),
                vec![want],
                "{proto} {rtype} {name}:\n{}",
                d.raw
            );
        }
        // Inside the zone but absent: authoritative NXDOMAIN.
        let d = dig(ns, tcp, "TXT", "nothing-here.acme.test");
        assert_authoritative(&d, "NXDOMAIN");
        // Outside every zone: REFUSED, and no recursion offered.
        for name in ["example.com", "acme.test.example", "test"] {
            let d = dig(ns, tcp, "TXT", name);
            assert_eq!(d.status, "REFUSED", "{proto} {name}:\n{}", d.raw);
            assert!(d.answers.is_empty(), "{}", d.raw);
            assert!(!d.flags.contains(&"ra".to_string()), "ra flag:\n{}", d.raw);
        }
    }

    // A domain added while serve runs: REFUSED before, answered after the
    // reload, without a restart.
    assert_eq!(dig(ns, false, "SOA", "beta.test").status, "REFUSED");
    s.create_tenant("beta");
    let before = s.log.count(ZONES_RELOADED);
    let beta = add_domain(&s, "beta", "beta.test", "ed25519");
    wait_reload(&s, before);
    for tcp in [false, true] {
        let d = dig(ns, tcp, "SOA", "beta.test");
        assert_authoritative(&d, "NOERROR");
        assert_eq!(
            answer_values(&d, "beta.test", "SOA"),
            vec![soa_rdata(&zone(&s, "beta.test"))]
        );
        let (selector, value) = dkim_values(&beta, &["active"]).remove(0);
        let name = format!("{selector}._domainkey.beta.test");
        let d = dig(ns, tcp, "TXT", &name);
        assert_authoritative(&d, "NOERROR");
        assert_eq!(answer_values(&d, &name, "TXT"), vec![value]);
    }
    // acme.test is still served next to it.
    assert_authoritative(&dig(ns, false, "SOA", "acme.test"), "NOERROR");
}

// ---------------------------------------------------------------------------
// 4: status transitions against nsd
// ---------------------------------------------------------------------------

/// The zone of `domain` without the lines for which `drop` is true.
fn zone_without(zone_text: &str, drop: impl Fn(&str) -> bool) -> String {
    let out: String = zone_text
        .lines()
        .filter(|l| !drop(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        out.lines().count(),
        zone_text.lines().count(),
        "nothing removed"
    );
    out
}

/// An offline sesame with tenant `acme` and the unverified `acme.test`;
/// returns it with its settings and the zone text.
fn offline_with_domain(window: i64) -> (Sesame, DnsSettings, String) {
    let mut dns = DnsSettings::resolver(closed_port());
    dns.pending_window_secs = window;
    let s = Sesame::offline(options(&dns, false));
    s.create_tenant("acme");
    add_domain(&s, "acme", "acme.test", "rsa2048");
    let z = zone(&s, "acme.test");
    (s, dns, z)
}

/// Rule: while its DKIM record is missing, a domain stays PENDING within the
/// window (verify prints the record as MISSING, found nothing); MAIL FROM,
/// whose records are there, verifies on its own.
#[test]
fn missing_dkim_record_keeps_pending_within_the_window() {
    let (mut s, mut dns, z) = offline_with_domain(86_400);
    let nsd = Nsd::start(&[(
        "acme.test",
        &zone_without(&z, |l| l.contains("._domainkey.")),
    )]);
    dns.nameservers = vec![nsd.nameserver()];
    configure(&mut s, &dns);
    for _ in 0..2 {
        let text = s.cli_ok(&["domain", "verify", "acme.test"]);
        let (checks, summary) = parse_verify_text(&text);
        let dkim = checks
            .iter()
            .find(|c| c.name.ends_with("._domainkey.acme.test"))
            .unwrap_or_else(|| panic!("no DKIM block:\n{text}"));
        assert!(
            !dkim.ok && dkim.found.is_empty() && dkim.dns_error.is_none(),
            "{dkim:?}\n{text}"
        );
        assert!(
            text.contains("MISSING ") && text.contains("found:    nothing"),
            "{text}"
        );
        assert!(find_check(&checks, "mail.acme.test", "MX").ok, "{text}");
        assert_eq!(
            summary,
            Some(("PENDING".into(), "PENDING".into(), "SUCCESS".into())),
            "{text}"
        );
        assert_statuses(&s, "acme.test", ("PENDING", "PENDING", "SUCCESS"));
    }
}

/// Rule: with `pending_window_secs = 0` a missing record turns PENDING into
/// FAILED; once the record is published, FAILED turns into SUCCESS.
#[test]
fn pending_fails_after_the_window_and_failed_recovers_when_fixed() {
    let (mut s, mut dns, z) = offline_with_domain(0);
    let broken = Nsd::start(&[(
        "acme.test",
        &zone_without(&z, |l| l.contains("._domainkey.")),
    )]);
    dns.nameservers = vec![broken.nameserver()];
    configure(&mut s, &dns);
    s.cli_ok(&["domain", "verify", "acme.test"]);
    assert_statuses(&s, "acme.test", ("FAILED", "FAILED", "SUCCESS"));
    let ids = s.cli_json(&["identity", "list", "acme", "--json"]);
    assert!(
        ids.to_string().contains("\"FAILED\""),
        "identity status: {ids}"
    );
    drop(broken);

    let fixed = Nsd::start(&[("acme.test", &z)]);
    dns.nameservers = vec![fixed.nameserver()];
    configure(&mut s, &dns);
    verify_all_ok(&s, "acme.test");
}

/// The verify output and statuses when DNS gives no answer at all.
#[track_caller]
fn assert_temporary_failure(s: &Sesame) {
    let text = s.cli_ok(&["domain", "verify", "acme.test"]);
    let (checks, summary) = parse_verify_text(&text);
    assert!(
        !checks.is_empty() && checks.iter().all(|c| !c.ok && c.dns_error.is_some()),
        "every record should show a DNS error:\n{text}"
    );
    let temp = "TEMPORARY_FAILURE";
    assert_eq!(
        summary,
        Some((temp.into(), temp.into(), temp.into())),
        "{text}"
    );
    assert_statuses(s, "acme.test", (temp, temp, temp));
}

/// A zone that is not acme.test: an nsd holding only it answers REFUSED
/// for acme.test.
const OTHER_ZONE: &str = "$ORIGIN other.test.\n$TTL 300\n\
    other.test. 300 IN SOA ns.other.test. hostmaster.other.test. 1 3600 600 604800 300\n\
    other.test. 300 IN NS ns.other.test.\n\
    ns.other.test. 300 IN A 127.0.0.1\n";

/// Rule: a DNS error on a verified domain gives TEMPORARY_FAILURE, never
/// FAILED (even with a zero window): an unreachable nameserver (closed UDP
/// port), then one that answers REFUSED; SUCCESS again once DNS answers.
#[test]
fn unreachable_nameserver_gives_temporary_failure_then_success() {
    let (mut s, mut dns, z) = offline_with_domain(0);
    let nsd = Nsd::start(&[("acme.test", &z)]);
    dns.nameservers = vec![nsd.nameserver()];
    configure(&mut s, &dns);
    verify_all_ok(&s, "acme.test");

    // Nothing listens: every lookup times out (slow: hickory's timeouts).
    dns.nameservers = vec![closed_port()];
    configure(&mut s, &dns);
    assert_temporary_failure(&s);

    // A nameserver that refuses: still a DNS error, still not FAILED although
    // the window is 0.
    let refusing = Nsd::start(&[("other.test", OTHER_ZONE)]);
    dns.nameservers = vec![refusing.nameserver()];
    configure(&mut s, &dns);
    assert_temporary_failure(&s);

    dns.nameservers = vec![nsd.nameserver()];
    configure(&mut s, &dns);
    verify_all_ok(&s, "acme.test");
}

// ---------------------------------------------------------------------------
// 5: DKIM signing
// ---------------------------------------------------------------------------

/// `serve` with the embedded DNS, tenant `tenant` with `domain` (keys
/// `dkim`) verified through it, and a production credential.
fn embedded_with_verified_domain(
    dns: DnsSettings,
    tenant: &str,
    domain: &str,
    dkim: &str,
) -> (Sesame, DnsSettings, Account) {
    let (s, dns) = start_embedded(dns, false);
    s.create_tenant(tenant);
    let before = s.log.count(ZONES_RELOADED);
    add_domain(&s, tenant, domain, dkim);
    wait_reload(&s, before);
    verify_all_ok(&s, domain);
    let acct = account(&s, tenant, domain);
    (s, dns, acct)
}

/// Rule: submitted mail is queued with exactly one DKIM-Signature (d= the
/// From domain, rsa-sha256, relaxed/relaxed, the SES header list with From
/// over-signed) that dkimpy and mail-auth verify against the published key;
/// a tampered body fails both; it still verifies after a restart.
#[test]
fn submitted_mail_is_signed_once_and_verifies() {
    let (mut s, _dns, acct) =
        embedded_with_verified_domain(DnsSettings::embedded(), "acme", "acme.test", "rsa2048");
    let selector = selectors_in(&status(&s, "acme.test"), "active").remove(0);
    let r = send(
        &s,
        &acct,
        "app@acme.test",
        &[
            "--add-header",
            "Reply-To: <replies@acme.test>",
            "--add-header",
            "Cc: <copy@acme.test>",
        ],
    );
    let id = r.expect_accepted();
    let message = queue_show(&s, &id);
    let sigs = assert_signed(&message, "acme.test", &[(&selector, "rsa-sha256")]);
    let h = signed_headers(&sigs[0]);
    for name in ["reply-to", "cc"] {
        assert!(
            h.contains(&name.to_string()),
            "h= lacks present {name}: {h:?}"
        );
    }
    assert!(
        !h.contains(&"received".to_string()),
        "Received must not be signed: {h:?}"
    );
    let lines = assert_verifies(&message, s.dns(), 1);
    assert_eq!(lines[0]["domain"], "acme.test");
    assert_eq!(lines[0]["algorithm"], "rsa-sha256");

    // Tampered body: both verifiers refuse it.
    let bad = tampered(&message);
    let (ok, lines) = dkimpy(&bad, s.dns());
    assert!(
        !ok && lines.len() == 1 && lines[0]["valid"] == false,
        "dkimpy accepted a tampered body: {lines:?}"
    );
    let results = mail_auth_verify(&bad, s.dns());
    // mail-auth 0.12 reports a body hash mismatch as Neutral(FailedBodyHashMatch).
    assert!(
        matches!(results.as_slice(), [(_, _, r)] if *r != mail_auth::DkimResult::Pass
            && format!("{r:?}").contains("FailedBodyHashMatch")),
        "mail-auth on a tampered body: {results:?}"
    );

    // After a restart the stored message is unchanged and still verifies.
    s.stop();
    s.restart();
    let after = queue_show(&s, &id);
    assert_eq!(after, message, "queued bytes changed across a restart");
    assert_eq!(dkim_signatures(&after).len(), 1);
    assert_verifies(&after, s.dns(), 1);
}

/// Rule: a domain with rsa2048+ed25519 keys signs every message twice,
/// rsa-sha256 then ed25519-sha256, and both signatures verify.
#[test]
fn rsa_and_ed25519_domain_gets_two_verifying_signatures() {
    let (s, _dns, acct) = embedded_with_verified_domain(
        DnsSettings::embedded(),
        "acme",
        "acme.test",
        "rsa2048+ed25519",
    );
    let d = status(&s, "acme.test");
    let by_type = |t: &str| {
        keys(&d)
            .into_iter()
            .find(|(_, kt, st)| kt == t && st == "active")
            .unwrap_or_else(|| panic!("no active {t} key: {d:#}"))
            .0
    };
    let (rsa, ed) = (by_type("rsa"), by_type("ed25519"));
    assert!(
        is_dated_selector(&rsa, "rsa") && is_dated_selector(&ed, "ed"),
        "{rsa} {ed}"
    );
    let id = send(&s, &acct, "app@acme.test", &[]).expect_accepted();
    let message = queue_show(&s, &id);
    assert_signed(
        &message,
        "acme.test",
        &[(&rsa, "rsa-sha256"), (&ed, "ed25519-sha256")],
    );
    let lines = assert_verifies(&message, s.dns(), 2);
    let algs: Vec<&str> = lines
        .iter()
        .map(|l| l["algorithm"].as_str().unwrap())
        .collect();
    assert_eq!(algs, ["rsa-sha256", "ed25519-sha256"]);
}

// ---------------------------------------------------------------------------
// 6: alignment and MAIL FROM
// ---------------------------------------------------------------------------

/// Rule: the envelope sender is `<message-id>@mail.<domain>`, and a From at
/// a subdomain of the verified domain is signed with d=<the domain>.
#[test]
fn envelope_sender_is_verp_on_mail_from_domain_and_subdomains_align() {
    let (s, _dns, acct) =
        embedded_with_verified_domain(DnsSettings::embedded(), "acme", "acme.test", "rsa2048");
    let selector = selectors_in(&status(&s, "acme.test"), "active").remove(0);

    let id = send(&s, &acct, "app@acme.test", &[]).expect_accepted();
    assert_eq!(
        envelope_from(&s, &id, "app@acme.test"),
        format!("{id}@mail.acme.test")
    );

    let id = send(&s, &acct, "news@eu.acme.test", &[]).expect_accepted();
    assert_eq!(
        envelope_from(&s, &id, "news@eu.acme.test"),
        format!("{id}@mail.acme.test")
    );
    let message = queue_show(&s, &id);
    assert!(
        header_fields(&message)
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("From") && v.contains("news@eu.acme.test")),
        "From kept"
    );
    assert_signed(&message, "acme.test", &[(&selector, "rsa-sha256")]);
    assert_verifies(&message, s.dns(), 1);
}

/// Rule: when mail.<domain> does not verify, USE_DEFAULT_VALUE sends with
/// `<id>@<hostname>` (or `[dns] default_mail_from_domain`), still signed;
/// REJECT_MESSAGE refuses with SES's 554 text and queues nothing.
#[test]
fn unverified_mail_from_domain_falls_back_or_rejects() {
    let (mut s, mut dns, z) = offline_with_domain(86_400);
    let nsd = Nsd::start(&[(
        "acme.test",
        &zone_without(&z, |l| l.starts_with("mail.acme.test.")),
    )]);
    dns.nameservers = vec![nsd.nameserver()];
    configure(&mut s, &dns);
    let text = s.cli_ok(&["domain", "verify", "acme.test"]);
    assert!(text.contains("MISSING mail.acme.test MX"), "{text}");
    assert_statuses(&s, "acme.test", ("SUCCESS", "SUCCESS", "PENDING"));
    s.restart();
    let acct = account(&s, "acme", "acme.test");

    let id = send(&s, &acct, "app@acme.test", &[]).expect_accepted();
    assert_eq!(
        envelope_from(&s, &id, "app@acme.test"),
        format!("{id}@{HOSTNAME}")
    );
    assert_eq!(
        dkim_signatures(&queue_show(&s, &id)).len(),
        1,
        "still signed"
    );

    let d = s.cli_json(&[
        "domain",
        "set-mail-from",
        "acme.test",
        "--behavior",
        "REJECT_MESSAGE",
    ]);
    assert_eq!(d["mail_from_behavior"], "REJECT_MESSAGE");
    let queued = s.queue().len();
    let r = send(&s, &acct, "app@acme.test", &[]);
    r.assert_reply(
        "554 5.7.1 MAIL FROM domain not verified: DNS setup for MAIL FROM domain is invalid.",
    );
    assert_eq!(r.accepted_id(), None);
    assert_eq!(s.queue().len(), queued, "nothing queued after the 554");

    let d = s.cli_json(&[
        "domain",
        "set-mail-from",
        "acme.test",
        "--behavior",
        "USE_DEFAULT_VALUE",
    ]);
    assert_eq!(d["mail_from_behavior"], "USE_DEFAULT_VALUE");
    s.stop();
    dns.default_mail_from_domain = Some("bounces.sesame.test".into());
    configure(&mut s, &dns);
    s.restart();
    let id = send(&s, &acct, "app@acme.test", &[]).expect_accepted();
    assert_eq!(
        envelope_from(&s, &id, "app@acme.test"),
        format!("{id}@bounces.sesame.test")
    );
}

/// Rule: mail from a domain whose verification is still PENDING gets SES's
/// `554 5.7.1 Message rejected: Email address is not verified...` reply.
#[test]
fn sending_from_a_pending_domain_is_refused_with_ses_text() {
    let s = Sesame::start(options(&DnsSettings::resolver(closed_port()), false));
    s.create_tenant("acme");
    add_domain(&s, "acme", "pending.test", "rsa2048");
    assert_statuses(&s, "pending.test", ("PENDING", "PENDING", "PENDING"));
    let acct = account(&s, "acme", "pending.test");
    let r = send(&s, &acct, "app@pending.test", &[]);
    let line = r
        .replies()
        .into_iter()
        .find(|l| l.starts_with("554 "))
        .unwrap_or_else(|| panic!("no 554:\n{}", r.out));
    assert_eq!(
        failed_identities(&line),
        Some(vec!["app@pending.test".to_string()]),
        "{line}"
    );
    assert!(s.queue().is_empty(), "nothing queued");
}

// ---------------------------------------------------------------------------
// 7: rotation
// ---------------------------------------------------------------------------

/// Rule: `rotate-dkim` publishes a pending key next to the active one; the
/// next `verify` switches signing to it (old key retiring); with a zero grace
/// period the verify after that retires the old key, which then disappears
/// from `domain records` and DNS (NXDOMAIN).
#[test]
fn dkim_rotation_end_to_end() {
    let mut dns = DnsSettings::embedded();
    dns.rotation_grace_secs = Some(0);
    let (s, _dns, acct) = embedded_with_verified_domain(dns, "acme", "acme.test", "rsa2048");
    let ns = s.dns();
    let old = selectors_in(&status(&s, "acme.test"), "active").remove(0);
    let id = send(&s, &acct, "app@acme.test", &[]).expect_accepted();
    let old_message = queue_show(&s, &id);
    assert_signed(&old_message, "acme.test", &[(&old, "rsa-sha256")]);
    assert_verifies(&old_message, ns, 1);

    // rotate: a pending key, both published.
    let rotated = zone_change(&s, "acme.test", || {
        s.cli_json(&["domain", "rotate-dkim", "acme.test"])
    });
    let pending = selectors_in(&rotated, "pending");
    assert_eq!(pending.len(), 1, "{rotated:#}");
    let new = pending[0].clone();
    assert_ne!(new, old);
    assert!(is_dated_selector(&new, "rsa"), "{new}");
    assert_eq!(selectors_in(&rotated, "active"), vec![old.clone()]);
    let d = status(&s, "acme.test");
    assert_eq!(selectors_in(&d, "pending"), vec![new.clone()], "{d:#}");
    let listed: Vec<String> = records_json(&s, "acme.test")
        .iter()
        .filter_map(|r| r["selector"].as_str().map(String::from))
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&old) && listed.contains(&new), "{listed:?}");
    let published = dkim_values(&d, &["active", "pending"]);
    for (sel, value) in &published {
        let name = format!("{sel}._domainkey.acme.test");
        let got = dig(ns, false, "TXT", &name);
        assert_authoritative(&got, "NOERROR");
        assert_eq!(answer_values(&got, &name, "TXT"), vec![value.clone()]);
    }
    // Still signing with the old key until the new record verifies.
    let id = send(&s, &acct, "app@acme.test", &[]).expect_accepted();
    assert_signed(&queue_show(&s, &id), "acme.test", &[(&old, "rsa-sha256")]);

    // verify: promotes.
    let text = zone_change(&s, "acme.test", || {
        s.cli_ok(&["domain", "verify", "acme.test"])
    });
    assert!(text.contains("rotation: new DKIM keys verified"), "{text}");
    let d = status(&s, "acme.test");
    assert_eq!(selectors_in(&d, "active"), vec![new.clone()], "{d:#}");
    let old_state_after_promotion = keys(&d)
        .into_iter()
        .find(|(sel, _, _)| *sel == old)
        .map(|(_, _, st)| st)
        .unwrap_or_default();

    // Mail is now signed with the new key.
    let id = send(&s, &acct, "app@acme.test", &[]).expect_accepted();
    let message = queue_show(&s, &id);
    assert_signed(&message, "acme.test", &[(&new, "rsa-sha256")]);
    assert_verifies(&message, ns, 1);

    // The next verify retires the old key (grace 0).
    if old_state_after_promotion == "retiring" {
        let text = zone_change(&s, "acme.test", || {
            s.cli_ok(&["domain", "verify", "acme.test"])
        });
        assert!(
            text.contains("rotation: retired DKIM keys removed from DNS"),
            "{text}"
        );
    }
    let d = status(&s, "acme.test");
    let old_state = keys(&d)
        .into_iter()
        .find(|(sel, _, _)| *sel == old)
        .map(|k| k.2);
    assert_eq!(old_state.as_deref(), Some("retired"), "{d:#}");
    assert_statuses(&s, "acme.test", ("SUCCESS", "SUCCESS", "SUCCESS"));
    let listed: Vec<String> = records_json(&s, "acme.test")
        .iter()
        .filter_map(|r| r["selector"].as_str().map(String::from))
        .collect();
    assert_eq!(listed, vec![new.clone()]);
    assert!(
        !zone(&s, "acme.test").contains(&old_selector_name(&old)),
        "old selector still in the zone"
    );
    for tcp in [false, true] {
        let got = dig(ns, tcp, "TXT", &old_selector_name(&old));
        assert_authoritative(&got, "NXDOMAIN");
    }
    assert_authoritative(&dig(ns, false, "TXT", &old_selector_name(&new)), "NOERROR");
    // Mail signed with the retired key no longer verifies (its key is gone).
    let (ok, lines) = dkimpy(&old_message, ns);
    assert!(!ok && lines[0]["valid"] == false, "{lines:?}");

    // The step the statuses should show between promotion and retirement.
    assert_eq!(
        old_state_after_promotion, "retiring",
        "after the promoting `domain verify` the old key should be `retiring` (still published) \
         and be retired by the next verify; it was already {old_state_after_promotion:?}"
    );
}

fn old_selector_name(selector: &str) -> String {
    format!("{selector}._domainkey.acme.test")
}

// ---------------------------------------------------------------------------
// 8: the dev config
// ---------------------------------------------------------------------------

/// Rule: with `[dev]`, the dev domain gets DKIM keys like any domain
/// (provisioned once, kept across restarts), so captured dev mail is signed
/// and verifies against the embedded DNS.
#[test]
fn dev_config_signs_captured_dev_mail() {
    // The dev domain exists at the first start, so serve's start-up re-check
    // asks the pre-pin nameserver about it. A closed port would keep that
    // re-check, and with it SIGTERM, busy for ~45 s of lookup timeouts; an
    // nsd that holds another zone answers REFUSED at once.
    let refusing = Nsd::start(&[("other.test", OTHER_ZONE)]);
    let mut dns = DnsSettings::embedded();
    dns.nameservers = vec![refusing.nameserver()];
    let (mut s, _dns) = start_embedded(dns, true);
    let d = status(&s, "dev.sesame.test");
    assert_eq!(d["attested"], true, "{d:#}");
    assert_eq!(
        statuses(&d),
        ("SUCCESS".into(), "SUCCESS".into(), "SUCCESS".into())
    );
    let selector = selectors_in(&d, "active");
    assert_eq!(selector.len(), 1, "{d:#}");
    let selector = selector[0].clone();
    assert!(is_dated_selector(&selector, "rsa"), "{selector}");

    let dev = Account {
        tenant: "dev".into(),
        domain: "dev.sesame.test".into(),
        user: "dev".into(),
        pass: "dev".into(),
        cred: Credential {
            access_key_id: String::new(),
            secret_access_key: String::new(),
            smtp_username: "dev".into(),
            smtp_password: "dev".into(),
        },
    };
    let id = send(&s, &dev, "app@dev.sesame.test", &[]).expect_accepted();
    let message = queue_show(&s, &id);
    assert_signed(&message, "dev.sesame.test", &[(&selector, "rsa-sha256")]);
    assert_verifies(&message, s.dns(), 1);
    assert_eq!(
        envelope_from(&s, &id, "app@dev.sesame.test"),
        format!("{id}@mail.dev.sesame.test")
    );

    // Provisioning again at restart keeps the same key.
    s.stop();
    s.restart();
    let again = status(&s, "dev.sesame.test");
    assert_eq!(
        dkim_values(&again, &["active"]),
        dkim_values(&d, &["active"])
    );
    let id = send(&s, &dev, "app@dev.sesame.test", &[]).expect_accepted();
    let message = queue_show(&s, &id);
    assert_signed(&message, "dev.sesame.test", &[(&selector, "rsa-sha256")]);
    assert_verifies(&message, s.dns(), 1);
}

/// `serve` re-checks domains on its own schedule: a PENDING domain whose
/// records are published (here by the embedded server, on a port fixed in
/// advance so the config can name it) verifies without `domain verify`.
#[test]
fn serve_rechecks_domains_periodically() {
    let addr = format!("127.0.0.1:{}", nsd::free_udp_tcp_port());
    let dns = DnsSettings {
        server_bind: Some(addr.clone()),
        recheck_interval_secs: Some(1),
        ..DnsSettings::resolver(&addr)
    };
    let s = Sesame::start(options(&dns, false));
    s.create_tenant("acme");
    let before = s.log.count("domain status changed");
    let added = s.cli_json(&["domain", "add", "acme", "acme.test"]);
    assert_eq!(added["verification"]["status"], "PENDING", "{added:#}");
    assert!(
        s.log
            .wait_for(|t| t.matches("domain status changed").count() > before),
        "serve never re-checked acme.test:\n{}",
        s.logs()
    );
    assert_statuses(&s, "acme.test", ("SUCCESS", "SUCCESS", "SUCCESS"));
}
