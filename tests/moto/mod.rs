//! moto in server mode, the AWS peer (SES, SQS, S3) of the AWS adapter's
//! tests: started on a free loopback port per test, set up with boto3
//! (`aws.py`), and read back through `/moto-api/data.json`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Options, PATIENCE};

fn venv_bin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} missing: run scripts/install-deps.sh (creates .venv with moto[server] and boto3)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts `moto_server` and waits for it to say it is serving.
    pub fn start() -> Moto {
        let port = free_port();
        let mut child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn moto_server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && line.contains("Running on") {
                    sent = true;
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(PATIENCE).is_err() {
            let _ = child.kill();
            panic!("moto_server on 127.0.0.1:{port} never said it was running");
        }
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs a boto3 command from `aws.py`; returns its stdout.
    pub fn aws(&self, args: &[&str], stdin: &[u8]) -> String {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/moto/aws.py");
        let mut child = Command::new(venv_bin("python3"))
            .arg(script)
            .arg(self.endpoint())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run aws.py");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "aws.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn create_queue(&self, name: &str) -> String {
        self.aws(&["create-queue", name], b"")
    }

    pub fn send_message(&self, queue_url: &str, body: &str) {
        self.aws(&["send-message", queue_url], body.as_bytes());
    }

    /// Messages in the queue, visible or not.
    pub fn queue_depth(&self, queue_url: &str) -> u64 {
        self.aws(&["queue-depth", queue_url], b"").parse().unwrap()
    }

    /// moto's whole state.
    pub fn data(&self) -> Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            stream,
            "GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        serde_json::from_str(body).expect("data.json is JSON")
    }

    /// The raw messages SES (moto) accepted.
    pub fn sent_raw_messages(&self) -> Vec<Value> {
        self.data()["ses"]["RawMessage"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dummy credentials, a region and no instance metadata: the AWS chain of
/// the server under test resolves locally and never reaches real AWS.
pub fn aws_env(options: Options) -> Options {
    options
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
}

/// Polls `probe` until it holds (moto has no change signal to wait on).
pub fn wait_until(what: &str, probe: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !probe() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
