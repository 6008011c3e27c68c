//! An independent authoritative DNS server for the domain tests: NLnet Labs'
//! nsd (Debian's `nsd`), run in the foreground on a free loopback port (UDP
//! and TCP) with a throwaway config, loading zone files exactly as sesame
//! printed them. Stopped (SIGTERM, then SIGKILL) on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);

/// `nsd`, `nsd-checkzone`: in /usr/sbin, which a non-login PATH may lack.
pub fn sbin_tool(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"]);
    for dir in dirs {
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} is not installed: run `apt-get install -y nsd` (or scripts/install-deps.sh); \
         these tests never skip"
    );
}

/// `nsd-checkzone ORIGIN FILE` must accept the zone.
#[track_caller]
pub fn checkzone(origin: &str, file: &Path) {
    let out = Command::new(sbin_tool("nsd-checkzone"))
        .arg(origin)
        .arg(file)
        .output()
        .expect("run nsd-checkzone");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(&format!("zone {origin} is ok")),
        "nsd-checkzone refused the zone of {origin} ({}):\n{text}\nzone:\n{}",
        out.status,
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// A port free for both UDP and TCP on 127.0.0.1 right now. nsd cannot be
/// told to bind port 0 and report it, so the port is probed; if another
/// process takes it before nsd binds, nsd exits and `Nsd::start` retries.
pub fn free_udp_tcp_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Nsd {
    child: Option<Child>,
    /// `127.0.0.1:PORT`, UDP and TCP.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    /// nsd's stderr (it logs there when run with -d and no logfile).
    log: Arc<Mutex<String>>,
}

impl Nsd {
    /// Loads `zones` (origin without trailing dot, zone text) unchanged, after
    /// `nsd-checkzone` has accepted each. Ready once nsd logs `nsd started`
    /// (its sockets are bound before it reads the zones) with every zone
    /// `read with success`; a SOA query per zone then confirms it answers.
    pub fn start(zones: &[(&str, &str)]) -> Nsd {
        let dir = tempfile::Builder::new()
            .prefix("sesame-nsd")
            .tempdir()
            .expect("tempdir");
        for (origin, text) in zones {
            let file = dir.path().join(format!("{origin}.zone"));
            std::fs::write(&file, text).expect("write zone");
            checkzone(origin, &file);
        }
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let port = free_udp_tcp_port();
            match Self::spawn(&dir, port, zones) {
                Ok((child, log)) => {
                    let nsd = Nsd {
                        child: Some(child),
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                        dir,
                        log,
                    };
                    for (origin, _) in zones {
                        nsd.assert_answers_soa(origin);
                    }
                    return nsd;
                }
                // Port taken between the probe and nsd's bind: try another.
                Err(log)
                    if log.contains("can't bind") || log.contains("Address already in use") =>
                {
                    last_failure = log;
                }
                Err(log) => panic!("nsd did not start:\n{log}"),
            }
        }
        panic!("nsd could not bind a free port in 5 attempts:\n{last_failure}");
    }

    fn spawn(
        dir: &tempfile::TempDir,
        port: u16,
        zones: &[(&str, &str)],
    ) -> Result<(Child, Arc<Mutex<String>>), String> {
        let d = dir.path().display();
        let mut conf = format!(
            "server:\n\
             \x20   ip-address: 127.0.0.1@{port}\n\
             \x20   port: {port}\n\
             \x20   do-ip4: yes\n\
             \x20   do-ip6: no\n\
             \x20   server-count: 1\n\
             \x20   username: \"\"\n\
             \x20   chroot: \"\"\n\
             \x20   database: \"\"\n\
             \x20   zonesdir: \"{d}\"\n\
             \x20   pidfile: \"{d}/nsd.pid\"\n\
             \x20   xfrdfile: \"{d}/xfrd.state\"\n\
             \x20   zonelistfile: \"{d}/zone.list\"\n\
             \x20   verbosity: 2\n\
             remote-control:\n\
             \x20   control-enable: no\n"
        );
        for (origin, _) in zones {
            conf += &format!("zone:\n    name: \"{origin}\"\n    zonefile: \"{origin}.zone\"\n");
        }
        let conf_path = dir.path().join("nsd.conf");
        std::fs::write(&conf_path, conf).expect("write nsd.conf");
        let mut child = Command::new(sbin_tool("nsd"))
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsd");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let failed = |child: &mut Child, why: &str| {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{why}\nconfig:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&conf_path).unwrap_or_default(),
                log.lock().unwrap()
            ))
        };
        loop {
            let now = Instant::now();
            if now >= deadline {
                return failed(&mut child, "nsd never logged `nsd started`");
            }
            match rx.recv_timeout(deadline - now) {
                Ok(line) if line.contains("nsd started") => break,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return failed(&mut child, "nsd never logged `nsd started`");
                }
                // stderr closed: nsd exited.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return failed(&mut child, "nsd exited before `nsd started`");
                }
            }
        }
        let text = log.lock().unwrap().clone();
        for (origin, _) in zones {
            if !text.contains(&format!("zone {origin} read with success")) {
                return failed(&mut child, &format!("nsd did not load zone {origin}"));
            }
        }
        Ok((child, log))
    }

    /// One SOA query (dig retries lost UDP itself): NOERROR, authoritative.
    #[track_caller]
    fn assert_answers_soa(&self, origin: &str) {
        let out = Command::new("dig")
            .arg(format!("@{}", self.addr.ip()))
            .args(["-p", &self.addr.port().to_string(), "+norec", "SOA", origin])
            .output()
            .unwrap_or_else(|e| panic!("dig not runnable ({e}): apt-get install -y dnsutils"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("status: NOERROR") && text.contains(" aa"),
            "nsd does not answer SOA {origin} authoritatively:\n{text}\nnsd log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `"127.0.0.1:PORT"` for `[dns] nameservers`.
    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        // Polling process exit: no blocking wait with a timeout in std.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}
