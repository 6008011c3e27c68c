//! clamd over TCP or a unix socket, through clamav-client.
//!
//! clamav-client opens a connection per command and reads the reply until
//! clamd hangs up, so on its own it cannot reuse connections. Its
//! `TransportProtocol` trait is the way in: `Session` hands it pooled
//! connections in clamd's IDSESSION mode, and `Lease` ends the stream at the
//! NUL that ends each session reply, then returns the connection to the pool
//! if the exchange finished cleanly.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use clamav_client::tokio::{Socket, Tcp, TransportProtocol, get_version, scan_buffer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Semaphore;

use crate::config::ClamdAddress;

/// clamd drops idle sessions after its IdleTimeout (30 s by default); older
/// connections are closed rather than risked.
const MAX_IDLE: Duration = Duration::from_secs(10);
/// Largest INSTREAM chunk: few syscalls for big parts, and no big buffer
/// for small ones (clamav-client allocates one chunk per scan).
const MAX_CHUNK: usize = 1 << 20;
/// Replies are one short line; a longer one is not clamd talking.
const MAX_REPLY: usize = 4096;

/// What clamd said about one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Clean,
    Infected(String),
    /// Over clamd's StreamMaxLength (`scan.max_part_bytes` is set too high).
    TooLarge,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

struct Idle {
    conn: Box<dyn Io>,
    since: Instant,
}

/// A clamd endpoint with a bounded pool of session connections.
pub struct Clamd {
    address: ClamdAddress,
    idle: Mutex<Vec<Idle>>,
    permits: Semaphore,
    capacity: usize,
}

impl Clamd {
    pub fn new(address: ClamdAddress, connections: usize) -> Clamd {
        Clamd {
            address,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(connections),
            capacity: connections,
        }
    }

    /// As configured: `tcp://host:port` or `unix:///path`.
    pub fn describe(&self) -> String {
        match &self.address {
            ClamdAddress::Tcp(hostport) => format!("tcp://{hostport}"),
            ClamdAddress::Unix(path) => format!("unix://{}", path.display()),
        }
    }

    /// Streams `data` to clamd with INSTREAM. Errors are described for
    /// logs and the verdict header.
    pub async fn scan(&self, data: &[u8]) -> Result<Answer, String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "scanner is shutting down".to_string())?;
        let chunk = Some(data.len().clamp(1, MAX_CHUNK));
        let first = Session::new(self, true);
        let reply = match scan_buffer(data, &first, chunk).await {
            Ok(reply) if !reply.is_empty() => Ok(reply),
            // A pooled connection may have been closed by clamd while it
            // sat idle; that says nothing about clamd, so try a new one.
            _ if first.reused() => scan_buffer(data, &Session::new(self, false), chunk).await,
            other => other,
        };
        let reply = reply.map_err(|e| format!("clamd at {}: {e}", self.describe()))?;
        parse(&reply).map_err(|e| format!("clamd at {}: {e}", self.describe()))
    }

    /// clamd's VERSION answer, on a connection of its own (a health probe
    /// must not depend on the pool).
    pub async fn version(&self) -> io::Result<String> {
        let reply = match &self.address {
            ClamdAddress::Tcp(hostport) => {
                get_version(Tcp {
                    host_address: hostport.as_str(),
                })
                .await?
            }
            ClamdAddress::Unix(path) => get_version(Socket { socket_path: path }).await?,
        };
        let text = String::from_utf8_lossy(&reply);
        let text = text.trim_end_matches('\0').trim();
        if text.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "clamd closed the connection without answering",
            ));
        }
        Ok(text.to_string())
    }

    async fn open(&self) -> io::Result<Box<dyn Io>> {
        let mut conn: Box<dyn Io> = match &self.address {
            ClamdAddress::Tcp(hostport) => {
                let tcp = TcpStream::connect(hostport.as_str()).await?;
                // clamav-client writes each chunk's 4-byte length separately;
                // Nagle would hold those back behind delayed ACKs.
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
            ClamdAddress::Unix(path) => Box::new(UnixStream::connect(path).await?),
        };
        conn.write_all(b"zIDSESSION\0").await?;
        Ok(conn)
    }

    fn take_idle(&self) -> Option<Box<dyn Io>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < MAX_IDLE {
                return Some(entry.conn);
            }
        }
        None
    }

    fn give_back(&self, conn: Box<dyn Io>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.capacity {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// Reads one session reply: `<id>: stream: OK`, `<id>: stream: <sig> FOUND`
/// or `<id>: <text> ERROR`, NUL-terminated.
fn parse(reply: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(reply);
    let text = text.split('\0').next().unwrap_or_default().trim();
    let text = match text.split_once(": ") {
        Some((id, rest)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => text,
    };
    if text == "stream: OK" {
        Ok(Answer::Clean)
    } else if let Some(signature) = text
        .strip_prefix("stream: ")
        .and_then(|t| t.strip_suffix(" FOUND"))
    {
        Ok(Answer::Infected(signature.to_string()))
    } else if text.starts_with("INSTREAM size limit exceeded") {
        Ok(Answer::TooLarge)
    } else if text.is_empty() {
        Err("closed the connection without answering".into())
    } else {
        Err(format!("answered {text:?}"))
    }
}

/// The `TransportProtocol` handed to clamav-client for one command.
struct Session<'a> {
    clamd: &'a Clamd,
    reuse: bool,
    reused: AtomicBool,
}

impl<'a> Session<'a> {
    fn new(clamd: &'a Clamd, reuse: bool) -> Self {
        Session {
            clamd,
            reuse,
            reused: AtomicBool::new(false),
        }
    }

    fn reused(&self) -> bool {
        self.reused.load(Ordering::Relaxed)
    }
}

impl<'a> TransportProtocol for Session<'a> {
    type Stream = Lease<'a>;

    fn connect(&self) -> impl Future<Output = io::Result<Lease<'a>>> {
        let clamd = self.clamd;
        let pooled = if self.reuse { clamd.take_idle() } else { None };
        self.reused.store(pooled.is_some(), Ordering::Relaxed);
        async move {
            let conn = match pooled {
                Some(conn) => conn,
                None => clamd.open().await?,
            };
            Ok(Lease {
                clamd,
                conn: Some(conn),
                reply: Vec::new(),
                ended: false,
                reusable: false,
            })
        }
    }
}

/// A session connection on loan for one command. Reads end at the reply's
/// NUL; dropped after a complete OK/FOUND reply, it goes back to the pool.
struct Lease<'a> {
    clamd: &'a Clamd,
    conn: Option<Box<dyn Io>>,
    reply: Vec<u8>,
    ended: bool,
    /// The reply ended exactly at its NUL: nothing stray is left unread.
    reusable: bool,
}

impl Lease<'_> {
    fn conn(&mut self) -> Pin<&mut (dyn Io + 'static)> {
        Pin::new(
            self.conn
                .as_deref_mut()
                .expect("a lease holds its connection until dropped"),
        )
    }
}

impl AsyncRead for Lease<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(this.conn().poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if fresh.is_empty() {
            // clamd hung up: the reply (if any) is complete, the session is over.
            this.ended = true;
        } else if let Some(nul) = fresh.iter().position(|&b| b == 0) {
            this.ended = true;
            this.reusable = nul + 1 == fresh.len();
        }
        this.reply.extend_from_slice(fresh);
        if this.reply.len() > MAX_REPLY {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply too long",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Lease<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().conn().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().conn().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().conn().poll_shutdown(cx)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // An error reply makes clamd end the session; only verdicts keep it.
        let verdict = self.reply.ends_with(b"OK\0") || self.reply.ends_with(b"FOUND\0");
        if self.reusable
            && verdict
            && let Some(conn) = self.conn.take()
        {
            self.clamd.give_back(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_replies_are_parsed() {
        assert_eq!(parse(b"1: stream: OK\0"), Ok(Answer::Clean));
        assert_eq!(
            parse(b"12: stream: Eicar-Test-Signature FOUND\0"),
            Ok(Answer::Infected("Eicar-Test-Signature".into()))
        );
        assert_eq!(
            parse(b"3: INSTREAM size limit exceeded. ERROR\0"),
            Ok(Answer::TooLarge)
        );
        assert_eq!(parse(b"stream: OK\0"), Ok(Answer::Clean));
        assert!(parse(b"").is_err());
        assert!(parse(b"4: UNKNOWN COMMAND\0").is_err());
    }
}
