//! CLI: tenants, identities, SES-shaped credentials, config validation and
//! signal handling.

mod common;

use common::*;
use serde_json::{Value, json};

fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {list}"))
        .iter()
        .find(|e| e.get(key).and_then(Value::as_str) == Some(value))
}

/// `tenant create` prints the new tenant (sandboxed, capture delivery);
/// `tenant list --json` shows it; `tenant set` toggles the sandbox.
#[test]
fn tenant_create_list_set() {
    let s = Sesame::offline(Options::new());
    let created = s.create_tenant("acme");
    assert_eq!(
        created,
        json!({"name": "acme", "sandbox": true, "delivery": "capture", "dmarc_enforce": true,
               "send_quota": {"MaxSendRate": 1, "Max24HourSend": 200}})
    );
    s.create_tenant("beta");

    let list = s.cli_json(&["tenant", "list", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let acme = find(&list, "name", "acme").expect("acme listed");
    assert_eq!(acme["sandbox"], true, "{acme}");

    s.cli_ok(&["tenant", "set", "acme", "--production"]);
    let list = s.cli_json(&["tenant", "list", "--json"]);
    assert_eq!(find(&list, "name", "acme").unwrap()["sandbox"], false);
    assert_eq!(find(&list, "name", "beta").unwrap()["sandbox"], true);

    s.cli_ok(&["tenant", "set", "acme", "--sandbox"]);
    let list = s.cli_json(&["tenant", "list", "--json"]);
    assert_eq!(find(&list, "name", "acme").unwrap()["sandbox"], true);

    let (st, _, _) = s.cli(&["tenant", "set", "nosuch", "--production"]);
    assert!(!st.success(), "tenant set on a missing tenant succeeded");
}

/// `identity add`: domain vs email type, PENDING vs SUCCESS (--verified).
#[test]
fn identity_add_list() {
    let s = Sesame::offline(Options::new());
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", false);
    s.add_identity("acme", "ops@example.net", true);

    let list = s.cli_json(&["identity", "list", "acme", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(
        find(&list, "identity", "acme.test").expect("domain listed"),
        &json!({"identity": "acme.test", "type": "domain", "status": "PENDING"})
    );
    assert_eq!(
        find(&list, "identity", "ops@example.net").expect("email listed"),
        &json!({"identity": "ops@example.net", "type": "email", "status": "SUCCESS"})
    );

    let (st, _, _) = s.cli(&["identity", "add", "nosuch", "x.test"]);
    assert!(!st.success(), "identity add to a missing tenant succeeded");
}

/// `credential create`: smtp_password is the SES SigV4 derivation of the
/// secret for us-east-1 (checked with python3 hmac/hashlib), the username is
/// the access key id, and the pair authenticates over swaks.
#[test]
fn credential_is_ses_shaped_and_authenticates() {
    let mut s = Sesame::offline(Options::new());
    s.create_tenant("acme");
    s.add_identity("acme", "acme.test", true);
    s.set_production("acme");
    let c = s.create_credential("acme");
    let c2 = s.create_credential("acme");

    assert_eq!(
        c.smtp_password,
        python_ses_password(&c.secret_access_key, "us-east-1"),
        "smtp_password is not the SES derivation of secret_access_key"
    );
    assert_eq!(c.smtp_username, c.access_key_id);
    assert_eq!(c.access_key_id.len(), 20, "{c:?}");
    assert!(
        c.access_key_id.starts_with("AKIA")
            && c.access_key_id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
        "access key id not AWS-shaped: {c:?}"
    );
    assert_ne!(c.access_key_id, c2.access_key_id);
    assert_ne!(c.secret_access_key, c2.secret_access_key);

    s.restart();
    let out = swaks(&[
        "--server",
        &s.server_arg("submission"),
        "--tls",
        "--auth",
        "LOGIN",
        "--auth-user",
        &c.smtp_username,
        "--auth-password",
        &c.smtp_password,
        "--from",
        "app@acme.test",
        "--to",
        "bob@example.net",
    ]);
    out.assert_reply("235 2.7.0 Authentication successful.");
    out.expect_accepted();

    // The raw secret is not the SMTP password.
    let out = swaks(&[
        "--server",
        &s.server_arg("submission"),
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        &c.smtp_username,
        "--auth-password",
        &c.secret_access_key,
        "--from",
        "app@acme.test",
        "--to",
        "bob@example.net",
    ]);
    out.assert_reply("535 5.7.8 Authentication Credentials Invalid");
}

/// `[limits] max_recipients = 0` is refused, naming the key.
#[test]
fn bad_config_zero_limit() {
    let (st, err) = serve_expect_failure(&Options::new().limit("max_recipients", 0));
    assert!(!st.success());
    assert!(err.contains("max_recipients"), "stderr: {err}");
}

/// Unknown keys are an error, naming the key.
#[test]
fn bad_config_unknown_key() {
    let (st, err) = serve_expect_failure(&Options::new().limit("max_frobs", 3));
    assert!(!st.success());
    assert!(err.contains("max_frobs"), "stderr: {err}");
}

/// Static dev credentials with a listener on 0.0.0.0 are refused.
#[test]
fn bad_config_dev_on_public_bind() {
    let mut o = Options::new().dev();
    o.listeners[0].bind = "0.0.0.0:0".into();
    let (st, err) = serve_expect_failure(&o);
    assert!(!st.success());
    assert!(
        err.contains("dev") && (err.contains("0.0.0.0") || err.contains("bind")),
        "stderr should name [dev] and the public bind: {err}"
    );
}

/// SIGTERM and SIGINT: graceful shutdown, exit 0; stdout is only the ready line.
#[test]
fn signals_exit_zero() {
    let mut s = Sesame::start(Options::new().limit("shutdown_grace_secs", 1));
    let st = s.stop();
    assert_eq!(st.code(), Some(0), "SIGTERM exit: {st}\n{}", s.logs());
    s.restart();
    // With an idle client connected.
    let _c = Smtp::open(s.mx());
    let st = s.stop_with("INT");
    assert_eq!(st.code(), Some(0), "SIGINT exit: {st}\n{}", s.logs());
    let extra = s.extra_stdout.lock().unwrap().clone();
    assert!(extra.is_empty(), "stdout beyond the ready line: {extra:?}");
}

/// `--data-dir` overrides data_dir for every subcommand.
#[test]
fn data_dir_override() {
    let s = Sesame::offline(Options::new());
    let other = s.dir.path().join("other-data");
    let other = other.to_str().unwrap();
    s.cli_ok(&["--data-dir", other, "tenant", "create", "elsewhere"]);
    let there = s.cli_json(&["--data-dir", other, "tenant", "list", "--json"]);
    assert!(find(&there, "name", "elsewhere").is_some(), "{there}");
    let here = s.cli_json(&["tenant", "list", "--json"]);
    assert!(find(&here, "name", "elsewhere").is_none(), "{here}");
    assert!(std::path::Path::new(other).join("control.db").exists());
}
