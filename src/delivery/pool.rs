//! Idle SMTP connections of the `mx` transport, kept for a short while so
//! the next message to the same host reuses the (possibly TLS'd) session
//! instead of paying a connect, EHLO and handshake again. A session is only
//! put back after a clean transaction, and is reset (RSET) before reuse.
//! How many deliveries run at once per destination is the engine's
//! per-domain limit; this only bounds how many sit idle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mail_send::SmtpClient;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::mx::{HostFailure, transaction};
use super::{Outcome, Outgoing};

/// Receivers commonly drop idle clients after 30-300 s; stay well below.
const KEEP_IDLE: Duration = Duration::from_secs(10);
const MAX_IDLE_PER_HOST: usize = 4;

pub(super) enum Session {
    Plain(SmtpClient<TcpStream>),
    /// Boxed: a TLS client is far larger than a plain one.
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>),
}

impl Session {
    fn is_tls(&self) -> bool {
        matches!(self, Session::Tls(_))
    }

    /// MAIL .. DATA; also says whether the session is fit for another.
    pub(super) async fn run(
        &mut self,
        host: &str,
        message: &Outgoing,
        recipients: &[String],
    ) -> Result<(Vec<Outcome>, bool), HostFailure> {
        match self {
            Session::Plain(c) => transaction(c, host, message, recipients).await,
            Session::Tls(c) => transaction(c, host, message, recipients).await,
        }
    }

    /// True when the peer confirms the session is still usable.
    async fn reset(&mut self) -> bool {
        let reply = match self {
            Session::Plain(c) => c.cmd("RSET\r\n").await,
            Session::Tls(c) => c.cmd("RSET\r\n").await,
        };
        matches!(reply, Ok(r) if r.code == 250)
    }

    pub(super) async fn quit(mut self) {
        let _ = match &mut self {
            Session::Plain(c) => c.cmd("QUIT\r\n").await,
            Session::Tls(c) => c.cmd("QUIT\r\n").await,
        };
    }
}

#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(Session, Instant)>>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<(Session, Instant)>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Expired sessions are simply closed (dropped).
        idle.retain(|_, list| {
            list.retain(|(_, since)| since.elapsed() < KEEP_IDLE);
            !list.is_empty()
        });
        idle
    }

    /// A reset, idle session to `addr` (a TLS one when `need_tls`).
    pub(super) async fn take(&self, addr: SocketAddr, need_tls: bool) -> Option<Session> {
        loop {
            let mut session = {
                let mut idle = self.lock();
                let list = idle.get_mut(&addr)?;
                let i = list.iter().rposition(|(s, _)| s.is_tls() || !need_tls)?;
                list.remove(i).0
            };
            if session.reset().await {
                return Some(session);
            }
        }
    }

    pub(super) fn put(&self, addr: SocketAddr, session: Session) {
        let mut idle = self.lock();
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push((session, Instant::now()));
        }
    }
}
