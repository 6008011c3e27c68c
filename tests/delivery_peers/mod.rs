//! Helpers shared by the delivery tests: waiting on queue.db state through
//! the CLI, reading events, and Postfix's smtp-sink as the receiving MTA
//! (nsd, for DNS, comes from tests/nsd).

#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{PATIENCE, Sesame};

/// The delivery state of `rcpt` of message `id` (`queue list --json`).
pub fn recipient_state(s: &Sesame, id: &str, rcpt: &str) -> Option<Value> {
    let entry = s.queue_entry(id)?;
    entry["delivery"]
        .as_array()?
        .iter()
        .find(|d| d["recipient"] == rcpt)
        .cloned()
}

/// Waits (polling the CLI) until `rcpt` of `id` has `status`.
#[track_caller]
pub fn wait_status(s: &Sesame, id: &str, rcpt: &str, status: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = recipient_state(s, id, rcpt);
        if let Some(st) = &state
            && st["status"] == status
        {
            return st.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{rcpt} of {id} never became {status}; last: {state:?}\nlogs:\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The SES-shaped events of a message.
pub fn events(s: &Sesame, tenant: &str, id: &str) -> Vec<Value> {
    match s.cli_json(&["events", "list", tenant, "--message", id, "--json"]) {
        Value::Array(a) => a.into_iter().map(|e| e["event"].clone()).collect(),
        other => panic!("events list is not an array: {other}"),
    }
}

pub fn events_of_type(s: &Sesame, tenant: &str, id: &str, kind: &str) -> Vec<Value> {
    events(s, tenant, id)
        .into_iter()
        .filter(|e| e["eventType"] == kind)
        .collect()
}

/// Queue entries of the gateway's own mail (DSNs, auto-replies).
pub fn system_entries(s: &Sesame) -> Vec<Value> {
    s.queue()
        .into_iter()
        .filter(|e| e["tenant"] == "@system")
        .collect()
}

fn sbin_tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"] {
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed: run scripts/install-deps.sh (these tests never skip)");
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Postfix's smtp-sink on 127.0.0.1:port, dumping each message it accepts
/// into its own file under `dir`. `faults` are smtp-sink options such as
/// `["-r", "rcpt"]` (4xx to RCPT) or `["-f", "rcpt"]` (5xx to RCPT).
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl SmtpSink {
    pub fn start(port: u16, dir: &Path, faults: &[&str]) -> SmtpSink {
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new(sbin_tool("smtp-sink"))
            .args(faults)
            .arg("-d")
            .arg(format!("{}/%M.", dir.display()))
            .args(["-u", "root"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("10")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn smtp-sink");
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "smtp-sink never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        SmtpSink {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// Every message received so far (smtp-sink writes the envelope as
    /// X-Client-Addr/X-Helo/X-Mail-From/X-Rcpt-To lines, then the message).
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                out.push(String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned());
            }
        }
        out
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
