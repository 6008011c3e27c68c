//! Runs a `Machine` over a socket: reads with timeouts, writes replies in
//! batches (so PIPELINING costs one write per batch), performs STARTTLS and
//! answers the machine's questions through the `Backend`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::machine::{Action, Machine, Policy};
use super::{Backend, SessionInfo};
use crate::auth::AuthOutcome;
use crate::config::ListenerKind;
use crate::proto::texts;
use crate::tls::TlsAcceptorHandle;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Everything a session needs from its listener.
pub struct ListenerContext {
    pub name: String,
    pub kind: ListenerKind,
    pub policy: Policy,
    pub tls: TlsAcceptorHandle,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
}

/// Serves one connection to the end; never panics on client input.
pub async fn run<B: Backend>(
    tcp: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerContext>,
    backend: Arc<B>,
    shutdown: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let session_id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let mut session = Session {
        id: session_id,
        peer,
        listener: listener.clone(),
        backend,
        shutdown,
        machine: Machine::new(listener.policy.clone(), false),
        messages: 0,
    };
    let result = session.serve(tcp).await;
    let m = &session.machine;
    tracing::info!(
        session = session_id,
        peer = %peer,
        listener = %listener.name,
        tls = m.is_tls(),
        helo = m.helo().unwrap_or("-"),
        user = m.username().unwrap_or("-"),
        messages = session.messages,
        duration_ms = started.elapsed().as_millis() as u64,
        end = match &result { Ok(()) => "closed".to_string(), Err(e) => e.to_string() },
        "session ended"
    );
}

struct Session<B> {
    id: u64,
    peer: SocketAddr,
    listener: Arc<ListenerContext>,
    backend: Arc<B>,
    shutdown: watch::Receiver<bool>,
    machine: Machine,
    messages: u64,
}

enum Next<S> {
    Closed,
    StartTls(S),
}

impl<B: Backend> Session<B> {
    async fn serve(&mut self, tcp: TcpStream) -> std::io::Result<()> {
        let _ = tcp.set_nodelay(true);
        if self.listener.kind == ListenerKind::Submissions {
            let mut tls = self.handshake(tcp).await?;
            self.machine.tls_started();
            return self.greet_and_drive(&mut tls).await.map(|_| ());
        }
        let mut plain = tcp;
        if let Next::StartTls(()) = self.greet_and_drive(&mut plain).await? {
            let mut tls = self.handshake(plain).await?;
            self.machine.tls_started();
            self.drive(&mut tls, Vec::new()).await?;
        }
        Ok(())
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = self.listener.tls.current();
        tokio::time::timeout(self.listener.command_timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timeout")
            })?
    }

    async fn greet_and_drive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> std::io::Result<Next<()>> {
        let mut out = Vec::new();
        self.machine.greeting().write_to(&mut out);
        Ok(match self.drive(stream, out).await? {
            Next::Closed => Next::Closed,
            Next::StartTls(()) => Next::StartTls(()),
        })
    }

    /// Runs the machine until it closes or asks for STARTTLS. `out` holds
    /// replies not yet written.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        mut out: Vec<u8>,
    ) -> std::io::Result<Next<()>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.machine.next_action() {
                Some(Action::Send(reply)) => reply.write_to(&mut out),
                Some(Action::Authenticate { username, password }) => {
                    let info = self.info();
                    let outcome = self.backend.authenticate(&info, &username, &password).await;
                    if let AuthOutcome::Invalid { delay } = &outcome {
                        tokio::time::sleep(*delay).await;
                    }
                    self.machine.auth_result(outcome, username);
                }
                Some(Action::Recipient(rcpt)) => {
                    let info = self.info();
                    let verdict = self.backend.recipient(&info, &rcpt).await;
                    self.machine.recipient_result(verdict);
                }
                Some(Action::Message(transaction)) => {
                    let info = self.info();
                    let reply = self.backend.message(&info, transaction).await;
                    if reply.is_positive() {
                        self.messages += 1;
                    }
                    self.machine.message_result(reply);
                }
                Some(Action::Refused(reply)) => tracing::info!(
                    session = self.id,
                    code = reply.code,
                    reason = reply.text(),
                    "message refused"
                ),
                Some(Action::StartTls) => {
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                    return Ok(Next::StartTls(()));
                }
                Some(Action::Close) => {
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                    let _ = stream.shutdown().await;
                    return Ok(Next::Closed);
                }
                None => {
                    if !out.is_empty() {
                        stream.write_all(&out).await?;
                        stream.flush().await?;
                        out.clear();
                    }
                    if !self.read_more(stream, &mut buf).await? {
                        return Ok(Next::Closed);
                    }
                }
            }
        }
    }

    /// Reads the next bytes into the machine. False on EOF.
    async fn read_more<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        buf: &mut [u8],
    ) -> std::io::Result<bool> {
        let timeout = if self.machine.in_data() {
            self.listener.data_timeout
        } else {
            self.listener.command_timeout
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let stopping = *self.shutdown.borrow();
            if stopping && !self.machine.in_transaction() {
                self.machine.close_with(texts::shutting_down());
                return Ok(true);
            }
            tokio::select! {
                read = stream.read(buf) => {
                    let n = read?;
                    if n == 0 {
                        return Ok(false);
                    }
                    self.machine.push_input(&buf[..n]);
                    return Ok(true);
                }
                _ = &mut deadline => {
                    self.machine.close_with(texts::timeout());
                    return Ok(true);
                }
                changed = self.shutdown.changed(), if !stopping => {
                    if changed.is_err() {
                        // The sender is gone: treat as a shutdown request.
                        self.machine.close_with(texts::shutting_down());
                        return Ok(true);
                    }
                }
            }
        }
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            session_id: self.id,
            peer: self.peer,
            listener: self.listener.kind,
            tls: self.machine.is_tls(),
            helo: self.machine.helo().map(str::to_string),
            tenant: self.machine.tenant().map(str::to_string),
            username: self.machine.username().map(str::to_string),
        }
    }
}
