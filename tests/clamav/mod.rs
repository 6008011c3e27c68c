//! Peers for the scanning tests: a real clamd (Debian's clamav-daemon, run
//! in the foreground on a free loopback port with the signature database in
//! `tests/clamav/db`), and fakes only for faults clamd cannot produce on
//! demand: a clamd that never answers, a counting TCP proxy, and an HTTP
//! server that records webhook POSTs.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The EICAR test file: 68 bytes, md5 44d88612fea8a8f36de82e1278abb02f
/// (`test.hdb`).
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
pub const EICAR_SIGNATURE: &str = "Eicar-Test-Signature.UNOFFICIAL";
/// Matched anywhere in a file by our own body signature (`sesame.ndb`).
pub const BODY_MARKER: &str = "SESAME-TEST-MALWARE-BODY-7f3a9c";
pub const BODY_SIGNATURE: &str = "Sesame-Test-Body-Signature.UNOFFICIAL";

const PATIENCE: Duration = Duration::from_secs(60);

fn clamd_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join("clamd");
        if candidate.is_file() {
            return candidate;
        }
    }
    let sbin = PathBuf::from("/usr/sbin/clamd");
    assert!(
        sbin.is_file(),
        "clamd is not installed: run `apt-get install -y --no-install-recommends clamav-daemon` \
         (or scripts/install-deps.sh); these tests never skip"
    );
    sbin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Where a clamd listens.
#[derive(Debug, Clone)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Sends one clamd command on a fresh connection; the reply without NUL.
pub fn clamd_command(listen: &Listen, command: &str) -> std::io::Result<String> {
    fn exchange(mut conn: impl Read + Write, command: &str) -> std::io::Result<String> {
        conn.write_all(format!("z{command}\0").as_bytes())?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        Ok(reply.trim_end_matches('\0').to_string())
    }
    let timeout = Some(Duration::from_secs(5));
    match listen {
        Listen::Tcp(addr) => {
            let conn = TcpStream::connect_timeout(addr, Duration::from_secs(2))?;
            conn.set_read_timeout(timeout)?;
            exchange(conn, command)
        }
        Listen::Unix(path) => {
            let conn = std::os::unix::net::UnixStream::connect(path)?;
            conn.set_read_timeout(timeout)?;
            exchange(conn, command)
        }
    }
}

/// A clamd process of our own.
pub struct Clamd {
    child: Option<Child>,
    pub listen: Listen,
    dir: tempfile::TempDir,
}

impl Clamd {
    /// On a free loopback TCP port.
    pub fn start() -> Clamd {
        Self::start_with(|_| Listen::Tcp(format!("127.0.0.1:{}", free_port()).parse().unwrap()))
    }

    /// On a unix socket in its temp dir.
    pub fn start_unix() -> Clamd {
        Self::start_with(|dir| Listen::Unix(dir.join("clamd.ctl")))
    }

    fn start_with(listen: impl FnOnce(&Path) -> Listen) -> Clamd {
        let dir = tempfile::Builder::new()
            .prefix("sesame-clamd")
            .tempdir()
            .expect("tempdir");
        let mut clamd = Clamd {
            child: None,
            listen: listen(dir.path()),
            dir,
        };
        clamd.spawn();
        clamd
    }

    /// The TCP address (TCP clamds only).
    pub fn addr(&self) -> SocketAddr {
        match &self.listen {
            Listen::Tcp(addr) => *addr,
            Listen::Unix(path) => panic!("clamd listens on {}", path.display()),
        }
    }

    /// `tcp://127.0.0.1:PORT` or `unix:///path` for `scan.clamd`.
    pub fn url(&self) -> String {
        match &self.listen {
            Listen::Tcp(addr) => format!("tcp://{addr}"),
            Listen::Unix(path) => format!("unix://{}", path.display()),
        }
    }

    fn spawn(&mut self) {
        let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clamav/db");
        let conf = self.dir.path().join("clamd.conf");
        let socket = match &self.listen {
            Listen::Tcp(addr) => format!("TCPSocket {}\nTCPAddr 127.0.0.1\n", addr.port()),
            Listen::Unix(path) => format!("LocalSocket {}\n", path.display()),
        };
        let text = format!(
            "Foreground yes\n{socket}DatabaseDirectory {}\n\
             TemporaryDirectory {}\nLogFile {}\nStreamMaxLength 40M\nMaxThreads 8\n",
            db.display(),
            self.dir.path().display(),
            self.dir.path().join("clamd.log").display(),
        );
        std::fs::write(&conf, text).expect("write clamd.conf");
        let mut child = Command::new(clamd_binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn clamd");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if clamd_command(&self.listen, "PING").is_ok_and(|r| r == "PONG") {
                break;
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!(
                    "clamd exited ({status}) before answering PING:\n{err}\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "clamd never answered PING\n{}",
                self.log()
            );
            // Polling readiness: clamd has no readiness signal for foreground runs.
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default()
    }

    /// SIGTERM and wait: the port is closed afterwards.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Start again on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "clamd still running");
        self.spawn();
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A "clamd" that accepts connections, reads whatever comes, and never
/// answers: the stalled scanner.
pub fn stalled_clamd() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            std::thread::spawn(move || {
                let mut sink = [0u8; 65536];
                while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// A TCP proxy in front of `target` that counts the connections made
/// through it (to see clamd connections being reused).
pub fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            seen.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                })
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    (addr, count)
}

/// One request the webhook server received.
#[derive(Debug, Clone)]
pub struct Post {
    pub path: String,
    pub content_type: String,
    pub body: serde_json::Value,
}

/// An HTTP server answering each POST with the next status of `statuses`
/// (the last one repeats) and handing the requests to the test.
pub fn webhook_server(statuses: &[u16]) -> (String, mpsc::Receiver<Post>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hooks/virus?token=secret",
        listener.local_addr().unwrap()
    );
    let statuses = Arc::new(Mutex::new(statuses.to_vec()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let Some(post) = read_request(&conn) else {
                continue;
            };
            let status = {
                let mut s = statuses.lock().unwrap();
                if s.len() > 1 { s.remove(0) } else { s[0] }
            };
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tx.send(post);
        }
    });
    (url, rx)
}

fn read_request(conn: &TcpStream) -> Option<Post> {
    conn.set_read_timeout(Some(PATIENCE)).ok()?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let (mut length, mut content_type) = (0usize, String::new());
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "content-type" => content_type = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(Post {
        path,
        content_type,
        body: serde_json::from_slice(&body).ok()?,
    })
}
