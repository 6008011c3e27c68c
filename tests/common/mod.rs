//! Test harness: starts the real `sesame` binary in a temp dir and drives it
//! with swaks, the sesame CLI and a small blocking raw SMTP client.
//!
//! Everything talks to 127.0.0.1 only. Readiness is the `ready {...}` line on
//! stdout; stderr is drained into a buffer so tests can assert on logs.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

/// Hostname written to every test config (greeting, Message-ID, Received).
pub const HOSTNAME: &str = "mx.sesame.test";

/// Upper bound for anything we wait on. Not a timing assertion: only keeps a
/// broken server from hanging the test suite forever.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn sesame_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sesame")
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Listener {
    pub name: String,
    pub kind: String,
    pub bind: String,
}

/// What goes into the config file the harness writes.
#[derive(Clone, Debug)]
pub struct Options {
    pub hostname: String,
    pub listeners: Vec<Listener>,
    /// `[limits]` entries as (key, TOML value).
    pub limits: Vec<(String, String)>,
    /// `[auth]` entries as (key, TOML value).
    pub auth: Vec<(String, String)>,
    /// Write the `[dev]` section.
    pub dev: bool,
    /// Raw TOML appended at the end.
    pub extra: String,
    /// Environment variables of the server process (AWS credentials).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        let l = |name: &str| Listener {
            name: name.into(),
            kind: name.into(),
            bind: "127.0.0.1:0".into(),
        };
        Options {
            hostname: HOSTNAME.into(),
            listeners: vec![l("mx"), l("submission"), l("submissions")],
            limits: vec![],
            auth: vec![
                ("failure_delay_ms".into(), "10".into()),
                ("max_failures".into(), "1000".into()),
            ],
            dev: false,
            extra: String::new(),
            env: vec![],
        }
    }
}

fn set(list: &mut Vec<(String, String)>, key: &str, value: String) {
    list.retain(|(k, _)| k != key);
    list.push((key.to_string(), value));
}

impl Options {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn limit(mut self, key: &str, value: impl ToString) -> Self {
        set(&mut self.limits, key, value.to_string());
        self
    }
    pub fn auth(mut self, key: &str, value: impl ToString) -> Self {
        set(&mut self.auth, key, value.to_string());
        self
    }
    pub fn dev(mut self) -> Self {
        self.dev = true;
        self
    }
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        set(&mut self.env, key, value.to_string());
        self
    }

    /// Render the TOML config for a temp dir `root`.
    pub fn render(&self, root: &Path) -> String {
        let mut s = String::new();
        s += &format!("hostname = {:?}\n", self.hostname);
        s += "region = \"us-east-1\"\n";
        s += &format!(
            "data_dir = {:?}\n\n",
            root.join("data").display().to_string()
        );
        s += "[tls]\n";
        s += &format!(
            "cert = {:?}\n",
            root.join("certs/dev.crt").display().to_string()
        );
        s += &format!(
            "key = {:?}\n",
            root.join("certs/dev.key").display().to_string()
        );
        s += "generate_self_signed = true\n\n";
        for l in &self.listeners {
            s += &format!(
                "[[listener]]\nname = {:?}\nkind = {:?}\nbind = {:?}\n\n",
                l.name, l.kind, l.bind
            );
        }
        if !self.limits.is_empty() {
            s += "[limits]\n";
            for (k, v) in &self.limits {
                s += &format!("{k} = {v}\n");
            }
            s += "\n";
        }
        if !self.auth.is_empty() {
            s += "[auth]\n";
            for (k, v) in &self.auth {
                s += &format!("{k} = {v}\n");
            }
            s += "\n";
        }
        if self.dev {
            s += "[dev]\nenabled = true\ntenant = \"dev\"\ndomain = \"dev.sesame.test\"\n\
                  username = \"dev\"\npassword = \"dev\"\n\n";
        }
        s += &self.extra;
        s
    }
}

// ---------------------------------------------------------------------------
// Log buffer (stderr of the server)
// ---------------------------------------------------------------------------

#[derive(Default)]
pub struct LogBuf {
    text: Mutex<String>,
    cond: Condvar,
    /// stderr readers still running (0: no server process can log more).
    readers: AtomicUsize,
}

impl LogBuf {
    fn push(&self, line: &str) {
        let mut t = self.text.lock().unwrap();
        t.push_str(line);
        t.push('\n');
        self.cond.notify_all();
    }
    fn reader_started(&self) {
        self.readers.fetch_add(1, Ordering::SeqCst);
    }
    /// Called when a server's stderr reaches EOF (the process is gone).
    fn reader_ended(&self) {
        self.readers.fetch_sub(1, Ordering::SeqCst);
        let _t = self.text.lock().unwrap();
        self.cond.notify_all();
    }
    /// How many times `needle` occurs in the log so far.
    pub fn count(&self, needle: &str) -> usize {
        self.text.lock().unwrap().matches(needle).count()
    }
    pub fn snapshot(&self) -> String {
        self.text.lock().unwrap().clone()
    }
    /// Wait until `pred(log)` holds (signal: each new stderr line). Gives up
    /// early, returning false, once no server process is left to log.
    pub fn wait_for(&self, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        let mut t = self.text.lock().unwrap();
        loop {
            if pred(&t) {
                return true;
            }
            if self.readers.load(Ordering::SeqCst) == 0 {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            t = self.cond.wait_timeout(t, deadline - now).unwrap().0;
        }
    }
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

pub struct Sesame {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub options: Options,
    child: Option<Child>,
    addrs: HashMap<String, SocketAddr>,
    /// stderr of the current (and previous) runs.
    pub log: Arc<LogBuf>,
    /// stdout lines other than the ready line.
    pub extra_stdout: Arc<Mutex<Vec<String>>>,
}

pub fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Wait for `child` to exit, at most `PATIENCE`. Returns None on timeout.
fn wait_with_deadline(child: &mut Child, patience: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Polling process exit: there is no portable blocking wait with timeout.
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Sesame {
    /// New temp dir + config, spawn `serve`, wait for the ready line.
    pub fn start(options: Options) -> Sesame {
        let mut s = Self::offline(options);
        s.spawn();
        s
    }

    /// New temp dir + config without starting the server (CLI-only tests;
    /// `restart()` starts it later).
    pub fn offline(options: Options) -> Sesame {
        let dir = tempfile::Builder::new()
            .prefix("sesame-test")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("sesame.toml");
        std::fs::write(&config, options.render(dir.path())).expect("write config");
        let data_dir = dir.path().join("data");
        Sesame {
            dir,
            config,
            data_dir,
            options,
            child: None,
            addrs: HashMap::new(),
            log: Arc::new(LogBuf::default()),
            extra_stdout: Arc::new(Mutex::new(vec![])),
        }
    }

    /// Spawn `serve` on the existing config/data dir and wait for readiness.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut child = Command::new(sesame_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "1")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .expect("spawn sesame serve");

        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        log.reader_started();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(l) => log.push(&l),
                    Err(_) => break,
                }
            }
            log.reader_ended();
        });

        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let extra = self.extra_stdout.clone();
        std::thread::spawn(move || {
            let mut seen_ready = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(l) = line else { break };
                if !seen_ready && l.starts_with("ready ") {
                    seen_ready = true;
                    let _ = tx.send(l);
                } else {
                    extra.lock().unwrap().push(l);
                }
            }
        });

        let line = match rx.recv_timeout(PATIENCE) {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                let st = child.wait();
                panic!(
                    "sesame serve never printed its ready line ({e:?}); exit: {st:?}\n\
                     config:\n{}\nstderr:\n{}",
                    std::fs::read_to_string(&self.config).unwrap_or_default(),
                    self.log.snapshot()
                );
            }
        };
        let json = line.strip_prefix("ready ").unwrap();
        let map: serde_json::Map<String, Value> = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("ready line is not `ready <json object>`: {line:?}: {e}"));
        self.addrs.clear();
        for (k, v) in map {
            let a: SocketAddr = v
                .as_str()
                .unwrap_or_else(|| panic!("ready value for {k} not a string: {line}"))
                .parse()
                .unwrap_or_else(|e| panic!("ready value for {k} not an address: {line}: {e}"));
            self.addrs.insert(k, a);
        }
        for l in &self.options.listeners {
            assert!(
                self.addrs.contains_key(&l.name),
                "ready line lacks listener {:?}: {line}",
                l.name
            );
        }
        self.child = Some(child);
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self
            .addrs
            .get(listener)
            .unwrap_or_else(|| panic!("no listener {listener} in {:?}", self.addrs))
    }
    pub fn mx(&self) -> SocketAddr {
        self.addr("mx")
    }
    pub fn submission(&self) -> SocketAddr {
        self.addr("submission")
    }
    pub fn submissions(&self) -> SocketAddr {
        self.addr("submissions")
    }
    /// The embedded authoritative DNS server (`"dns"` in the ready line,
    /// present when `[dns_server] enabled = true`), UDP and TCP.
    pub fn dns(&self) -> SocketAddr {
        self.addr("dns")
    }
    /// `127.0.0.1:PORT` for swaks `--server`.
    pub fn server_arg(&self, listener: &str) -> String {
        self.addr(listener).to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    pub fn logs(&self) -> String {
        self.log.snapshot()
    }

    /// SIGTERM and wait for exit (SIGKILL if it does not exit in time).
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Send `sig` (e.g. "TERM", "INT") and wait for exit.
    pub fn stop_with(&mut self, sig: &str) -> ExitStatus {
        let mut child = self.child.take().expect("not running");
        send_signal(child.id(), sig);
        match wait_with_deadline(&mut child, PATIENCE) {
            Some(st) => st,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sesame did not exit after SIG{sig}\nstderr:\n{}",
                    self.logs()
                );
            }
        }
    }

    /// Wait for the server to exit on its own (after a signal the test sent
    /// with `send_signal`); panics if it is still running after `PATIENCE`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("not running");
        match wait_with_deadline(&mut child, PATIENCE) {
            Some(st) => st,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sesame did not exit\nstderr:\n{}", self.logs());
            }
        }
    }

    /// True while the server process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// `tls.cert` in the config the harness wrote.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("certs/dev.crt")
    }

    /// `tls.key` in the config the harness wrote.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("certs/dev.key")
    }

    /// SIGKILL (Child::kill) and reap.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("not running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
    }

    /// Start again on the same config/data dir (new ports).
    pub fn restart(&mut self) {
        self.spawn();
    }

    // -- CLI ---------------------------------------------------------------

    /// Run `sesame --config <cfg> ARGS...`.
    pub fn cli(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = Command::new(sesame_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run sesame cli");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Run a CLI command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let (st, out, err) = self.cli(args);
        assert!(
            st.success(),
            "sesame {args:?} failed ({st}):\nstdout:\n{out}\nstderr:\n{err}"
        );
        out
    }

    /// Run a CLI command that must succeed and print JSON.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli_ok(args);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("sesame {args:?} did not print JSON ({e}):\n{out}"))
    }

    pub fn create_tenant(&self, name: &str) -> Value {
        self.cli_json(&["tenant", "create", name])
    }

    pub fn add_identity(&self, tenant: &str, identity: &str, verified: bool) {
        let mut args = vec!["identity", "add", tenant, identity];
        if verified {
            args.push("--verified");
        }
        self.cli_ok(&args);
    }

    pub fn set_production(&self, tenant: &str) {
        self.cli_ok(&["tenant", "set", tenant, "--production"]);
    }

    pub fn create_credential(&self, tenant: &str) -> Credential {
        let v = self.cli_json(&["credential", "create", tenant]);
        let f = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("credential JSON lacks string {k}: {v}"))
                .to_string()
        };
        Credential {
            access_key_id: f("access_key_id"),
            secret_access_key: f("secret_access_key"),
            smtp_username: f("smtp_username"),
            smtp_password: f("smtp_password"),
        }
    }

    /// Tenant + verified domain + credential (+ optionally out of the sandbox).
    pub fn account(&self, tenant: &str, domain: &str, production: bool) -> Account {
        self.create_tenant(tenant);
        self.add_identity(tenant, domain, true);
        if production {
            self.set_production(tenant);
        }
        let cred = self.create_credential(tenant);
        Account {
            tenant: tenant.into(),
            domain: domain.into(),
            user: cred.smtp_username.clone(),
            pass: cred.smtp_password.clone(),
            cred,
        }
    }

    pub fn queue(&self) -> Vec<Value> {
        match self.cli_json(&["queue", "list", "--json"]) {
            Value::Array(a) => a,
            other => panic!("queue list --json is not an array: {other}"),
        }
    }

    pub fn queue_entry(&self, id: &str) -> Option<Value> {
        self.queue()
            .into_iter()
            .find(|e| e.get("message_id").and_then(Value::as_str) == Some(id))
    }

    /// Raw queued body, read from `<data_dir>/queue.db` with the sqlite3 CLI.
    pub fn queued_body(&self, id: &str) -> String {
        assert!(is_ses_id(id), "refusing to put {id:?} into SQL");
        let out = sqlite3(
            &self.data_dir.join("queue.db"),
            &format!("SELECT CAST(body AS TEXT) FROM queue_entries WHERE message_id = '{id}';"),
        );
        assert!(!out.is_empty(), "no body in queue.db for {id}");
        out
    }
}

impl Drop for Sesame {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "TERM");
            if wait_with_deadline(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| panic!("sqlite3 CLI not runnable ({e}); apt-get install sqlite3"));
    assert!(
        out.status.success(),
        "sqlite3 {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `sesame serve` with a config that must be refused: returns exit status
/// and stderr. Panics if the server becomes ready instead.
pub fn serve_expect_failure(options: &Options) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sesame.toml");
    std::fs::write(&config, options.render(dir.path())).unwrap();
    let mut child = Command::new(sesame_bin())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sesame");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let st = match wait_with_deadline(&mut child, PATIENCE) {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sesame serve kept running with a bad config");
        }
    };
    let out = out_t.join().unwrap();
    let err = err_t.join().unwrap();
    assert!(
        !out.contains("ready "),
        "sesame became ready with a bad config:\nconfig:\n{}\nstdout:{out}",
        options.render(dir.path())
    );
    (st, err)
}

#[derive(Clone, Debug)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub smtp_username: String,
    pub smtp_password: String,
}

#[derive(Clone, Debug)]
pub struct Account {
    pub tenant: String,
    pub domain: String,
    pub user: String,
    pub pass: String,
    pub cred: Credential,
}

/// SES message id: 16 hex, a UUID, `-` and 6 hex digits, e.g.
/// `0107019abc12de34-5e6f7a8b-1234-4abc-9def-0123456789ab-000000`.
pub fn is_ses_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let lens = [16, 8, 4, 4, 4, 12, 6];
    parts.len() == lens.len()
        && parts.iter().zip(lens).all(|(p, n)| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Strings of a JSON array field (e.g. `recipients`).
pub fn str_list(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{key} is not an array in {v}"))
        .iter()
        .map(|x| x.as_str().expect("string").to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// swaks
// ---------------------------------------------------------------------------

pub struct Swaks {
    pub status: ExitStatus,
    /// stdout + stderr
    pub out: String,
}

impl Swaks {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
    /// Every server reply line swaks printed (`<-`, `<~`, `<**`, `<~*`).
    pub fn replies(&self) -> Vec<String> {
        self.out
            .lines()
            .filter_map(|l| {
                let t = l.trim_start();
                if t.starts_with("<-") || t.starts_with("<~") || t.starts_with("<*") {
                    Some(t.get(3..).unwrap_or("").trim_start().to_string())
                } else {
                    None
                }
            })
            .collect()
    }
    /// Whether some reply line is exactly `line`.
    pub fn has_reply(&self, line: &str) -> bool {
        self.replies().iter().any(|r| r == line)
    }
    #[track_caller]
    pub fn assert_reply(&self, line: &str) {
        assert!(
            self.has_reply(line),
            "expected reply {line:?}; swaks exit {} output:\n{}",
            self.code(),
            self.out
        );
    }
    /// Message id from a `250 2.0.0 Ok <id>` reply.
    pub fn accepted_id(&self) -> Option<String> {
        self.replies().iter().find_map(|r| {
            r.strip_prefix("250 2.0.0 Ok ")
                .map(|s| s.trim().to_string())
        })
    }
    /// The message must have been accepted; returns its id (SES-shaped).
    #[track_caller]
    pub fn expect_accepted(&self) -> String {
        let id = self.accepted_id().unwrap_or_else(|| {
            panic!(
                "message not accepted; swaks exit {} output:\n{}",
                self.code(),
                self.out
            )
        });
        assert!(is_ses_id(&id), "id {id:?} is not SES-shaped:\n{}", self.out);
        assert_eq!(self.code(), 0, "swaks exit code; output:\n{}", self.out);
        id
    }
}

fn swaks_present() -> bool {
    Command::new("swaks")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Run real swaks. Panics (never skips) when swaks is missing.
pub fn swaks(args: &[&str]) -> Swaks {
    assert!(
        swaks_present(),
        "swaks is not installed: run `apt-get install -y swaks` (these tests never skip)"
    );
    let out: Output = Command::new("swaks")
        .args(args)
        .args(["--timeout", "60"])
        .stdin(Stdio::null())
        .output()
        .expect("run swaks");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Swaks {
        status: out.status,
        out: text,
    }
}

/// swaks arguments for an authenticated STARTTLS submission.
pub fn submit_args(s: &Sesame, acct: &Account, from: &str, to: &str) -> Vec<String> {
    vec![
        "--server".into(),
        s.server_arg("submission"),
        "--tls".into(),
        "--auth".into(),
        "PLAIN".into(),
        "--auth-user".into(),
        acct.user.clone(),
        "--auth-password".into(),
        acct.pass.clone(),
        "--from".into(),
        from.into(),
        "--to".into(),
        to.into(),
    ]
}

pub fn swaks_owned(args: &[String]) -> Swaks {
    let v: Vec<&str> = args.iter().map(String::as_str).collect();
    swaks(&v)
}

/// A minimal message without Message-ID (the server must add one).
pub fn simple_data(from: &str, to: &str, subject: &str) -> String {
    format!("From: <{from}>\nTo: <{to}>\nSubject: {subject}\n\nHello from the sesame tests.\n")
}

// ---------------------------------------------------------------------------
// Raw SMTP client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    /// Full lines, e.g. `250-mx.sesame.test`, `250 SIZE 40000000`.
    pub lines: Vec<String>,
}

impl Reply {
    /// Last line, e.g. `250 2.1.0 Ok`.
    pub fn last(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }
    /// Capabilities / texts after the `NNN-` / `NNN ` prefix.
    pub fn texts(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|l| l.get(4..).unwrap_or("").to_string())
            .collect()
    }
    pub fn has_text(&self, t: &str) -> bool {
        self.texts().iter().any(|x| x == t)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Gone,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Gone => Err(io::Error::other("stream gone")),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Gone => Err(io::Error::other("stream gone")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Gone => Ok(()),
        }
    }
}

/// Accept-anything certificate verifier (the test cert is self-signed).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// Small blocking SMTP client over std::net, for what swaks cannot do.
pub struct Smtp {
    stream: Stream,
    buf: Vec<u8>,
}

impl Smtp {
    /// TCP connect; does not read the greeting.
    pub fn connect(addr: SocketAddr) -> Smtp {
        Self::try_connect(addr).expect("connect")
    }

    /// TCP connect that may fail (e.g. refused); does not read the greeting.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Smtp> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(PATIENCE))?;
        tcp.set_write_timeout(Some(PATIENCE))?;
        tcp.set_nodelay(true)?;
        Ok(Smtp {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
        })
    }

    /// DER of the end-entity certificate the server presented in the TLS
    /// handshake (None before TLS).
    pub fn peer_cert_der(&self) -> Option<Vec<u8>> {
        match &self.stream {
            Stream::Tls(t) => t
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec()),
            _ => None,
        }
    }

    /// Connect and require `220 <hostname> ESMTP sesame`.
    #[track_caller]
    pub fn open(addr: SocketAddr) -> Smtp {
        let mut c = Self::connect(addr);
        let g = c.reply();
        assert_eq!(g.last(), format!("220 {HOSTNAME} ESMTP sesame"), "greeting");
        c
    }

    /// Connect with implicit TLS (submissions), greeting checked.
    #[track_caller]
    pub fn open_tls(addr: SocketAddr) -> Smtp {
        let mut c = Self::connect(addr);
        c.upgrade().expect("implicit TLS handshake");
        let g = c.reply();
        assert_eq!(g.last(), format!("220 {HOSTNAME} ESMTP sesame"), "greeting");
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.stream.flush().expect("flush");
    }

    /// Like `send` but tolerates the server having closed the connection.
    pub fn send_lossy(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Bytes already received but not yet consumed as a reply.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16384];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let s = String::from_utf8_lossy(&line);
                return Ok(s.trim_end_matches(['\r', '\n']).to_string());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed (partial: {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    /// Read one (possibly multi-line) reply.
    pub fn try_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| io::Error::other(format!("not an SMTP reply line: {line:?}")))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }

    #[track_caller]
    pub fn reply(&mut self) -> Reply {
        match self.try_reply() {
            Ok(r) => r,
            Err(e) => panic!("no SMTP reply: {e}"),
        }
    }

    /// Send one command line (CRLF added) and read its reply.
    #[track_caller]
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Send a command and require the exact last reply line.
    #[track_caller]
    pub fn expect(&mut self, line: &str, want: &str) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.last(), want, "reply to {line:?}: {:?}", r.lines);
        r
    }

    #[track_caller]
    pub fn ehlo(&mut self) -> Reply {
        let r = self.cmd("EHLO client.test");
        assert_eq!(r.code, 250, "EHLO: {:?}", r.lines);
        r
    }

    /// True when the server has closed the connection (EOF or reset) and sent
    /// nothing more. Panics if more data arrives.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        if !self.buf.is_empty() {
            panic!(
                "expected close, but got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
        match self.fill() {
            Ok(0) => {}
            Ok(_) => panic!(
                "expected close, but got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                ) => {}
            Err(e) => panic!("expected close, got error {e}"),
        }
    }

    /// TLS handshake on the current TCP stream.
    pub fn upgrade(&mut self) -> Result<(), String> {
        let tcp = match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(t) => t,
            _ => return Err("not a plain stream".into()),
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(tls_config(), name).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// STARTTLS + handshake. Requires that nothing follows the 220.
    #[track_caller]
    pub fn starttls(&mut self) {
        self.expect("STARTTLS", "220 2.0.0 Ready to start TLS");
        assert!(
            self.buf.is_empty(),
            "bytes after STARTTLS reply: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.upgrade().expect("STARTTLS handshake");
    }

    #[track_caller]
    pub fn auth_plain(&mut self, user: &str, pass: &str) -> Reply {
        let token = B64.encode(format!("\0{user}\0{pass}"));
        self.cmd(&format!("AUTH PLAIN {token}"))
    }

    /// Open submission, EHLO, STARTTLS, EHLO, AUTH PLAIN (must succeed).
    #[track_caller]
    pub fn submission_session(addr: SocketAddr, user: &str, pass: &str) -> Smtp {
        let mut c = Smtp::open(addr);
        c.ehlo();
        c.starttls();
        c.ehlo();
        let r = c.auth_plain(user, pass);
        assert_eq!(r.last(), "235 2.7.0 Authentication successful.");
        c
    }

    /// MAIL/RCPT/DATA with the usual OK replies, then `body` (dot-terminated
    /// by this function), returns the final reply.
    #[track_caller]
    pub fn send_mail(&mut self, from: &str, rcpts: &[&str], body: &str) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), "250 2.1.0 Ok");
        for r in rcpts {
            self.expect(&format!("RCPT TO:<{r}>"), "250 2.1.5 Ok");
        }
        self.expect("DATA", "354 End data with <CR><LF>.<CR><LF>");
        let mut data = body.replace("\r\n", "\n").replace('\n', "\r\n");
        if !data.ends_with("\r\n") {
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        self.send(data.as_bytes());
        self.reply()
    }
}

/// Message id from an accepting reply `250 2.0.0 Ok <id>`.
#[track_caller]
pub fn accepted_id(r: &Reply) -> String {
    let id = r
        .last()
        .strip_prefix("250 2.0.0 Ok ")
        .unwrap_or_else(|| panic!("not accepted: {:?}", r.lines))
        .to_string();
    assert!(is_ses_id(&id), "id not SES-shaped: {id:?}");
    id
}

/// SES SMTP password derivation for a secret, computed by python3's
/// hmac/hashlib (independent of the Rust code under test).
pub fn python_ses_password(secret: &str, region: &str) -> String {
    let script = r#"
import base64, hashlib, hmac, sys
secret, region = sys.argv[1], sys.argv[2]
def sign(k, m): return hmac.new(k, m.encode(), hashlib.sha256).digest()
k = sign(("AWS4" + secret).encode(), "11111111")
k = sign(k, region)
k = sign(k, "ses")
k = sign(k, "aws4_request")
k = sign(k, "SendRawEmail")
print(base64.b64encode(b"\x04" + k).decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script, secret, region])
        .output()
        .expect("python3 must be installed");
    assert!(out.status.success(), "python3 failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Identities listed after `...in region US-EAST-1: ` in a 554 reply.
/// The identities SES's 554 "not verified" reply in `out` names, sorted;
/// panics when there is no such reply.
pub fn rejected_identities(out: &Swaks) -> Vec<String> {
    let reply = out
        .replies()
        .into_iter()
        .find(|r| r.starts_with("554 "))
        .unwrap_or_else(|| panic!("no 554:\n{}", out.out));
    failed_identities(&reply).unwrap_or_else(|| panic!("not the 554 not-verified reply: {reply}"))
}

pub fn failed_identities(reply: &str) -> Option<Vec<String>> {
    let prefix = "554 5.7.1 Message rejected: Email address is not verified. \
                  The following identities failed the check in region US-EAST-1: ";
    let rest = reply.strip_prefix(prefix)?;
    let mut v: Vec<String> = rest.split(", ").map(|s| s.trim().to_string()).collect();
    v.sort();
    Some(v)
}
