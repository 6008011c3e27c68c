//! The `relay` transport: every recipient goes through one smarthost
//! (`[delivery.relay]`), over STARTTLS or implicit TLS, with AUTH when a
//! username is configured. Unlike `mx`, the smarthost's certificate is
//! verified (against `ca_file`, or the system's roots): the connection
//! carries credentials, and there is no plaintext fallback.
//!
//! Anything that stops the session before MAIL (connection, TLS, AUTH) is
//! transient for every recipient: a misconfigured or unreachable relay keeps
//! mail queued, never bounces it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use mail_send::{Credentials, SmtpClient};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::mx::{reply_text, transaction};
use super::{Outcome, Outgoing, Transport};
use crate::config::{RelayConfig, RelayTls};

pub struct Relay {
    host: String,
    port: u16,
    tls_mode: RelayTls,
    credentials: Option<Credentials<String>>,
    helo: String,
    timeout: Duration,
    tls: TlsConnector,
}

impl Relay {
    pub fn new(config: &RelayConfig, helo: &str, timeout: Duration) -> anyhow::Result<Relay> {
        let credentials = match (&config.username, config.resolve_password()?) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password)),
            _ => None,
        };
        let tls = match &config.ca_file {
            Some(path) => connector_trusting(path)?,
            None => mail_send::smtp::tls::build_tls_connector(false)
                .map_err(|e| anyhow::anyhow!("delivery.relay: TLS client: {e}"))?,
        };
        Ok(Relay {
            host: config.host.clone(),
            port: config.port,
            tls_mode: config.tls,
            credentials,
            helo: helo.to_string(),
            timeout,
            tls,
        })
    }

    /// A TLS'd, authenticated session on the first address that gives one.
    async fn open(&self) -> Result<SmtpClient<TlsStream<TcpStream>>, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        let mut errors = Vec::new();
        for addr in addrs {
            match self.open_at(addr).await {
                Ok(client) => return Ok(client),
                Err(e) => errors.push(format!("[{addr}]: {e}")),
            }
        }
        if errors.is_empty() {
            errors.push(format!("{} has no address", self.host));
        }
        Err(errors.join("; "))
    }

    async fn open_at(&self, addr: SocketAddr) -> Result<SmtpClient<TlsStream<TcpStream>>, String> {
        let client = SmtpClient::connect(addr, self.timeout)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut client = match self.tls_mode {
            RelayTls::Implicit => {
                let mut client = client
                    .into_tls(&self.tls, &self.host)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                greeting(&mut client).await?;
                client
            }
            RelayTls::Starttls => {
                let mut client = client;
                greeting(&mut client).await?;
                let ehlo = client
                    .ehlo(&self.helo)
                    .await
                    .map_err(|e| format!("EHLO: {e}"))?;
                if !ehlo.has_capability(smtp_proto::EXT_START_TLS) {
                    return Err("the relay does not offer STARTTLS (required)".into());
                }
                client
                    .start_tls(&self.tls, &self.host)
                    .await
                    .map_err(|e| format!("STARTTLS: {e}"))?
            }
        };
        let ehlo = client
            .ehlo(&self.helo)
            .await
            .map_err(|e| format!("EHLO after TLS: {e}"))?;
        if let Some(credentials) = &self.credentials {
            client
                .authenticate(credentials, &ehlo)
                .await
                .map_err(|e| format!("AUTH: {e}"))?;
        }
        Ok(client)
    }
}

async fn greeting<T>(client: &mut SmtpClient<T>) -> Result<(), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let reply = client.read().await.map_err(|e| format!("greeting: {e}"))?;
    if reply.code / 100 != 2 {
        return Err(format!("greeting: {}", reply_text(&reply)));
    }
    Ok(())
}

/// A TLS client that trusts exactly the certificates in `path`.
fn connector_trusting(path: &Path) -> anyhow::Result<TlsConnector> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read delivery.relay.ca_file {}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert =
            cert.with_context(|| format!("delivery.relay.ca_file {} is not PEM", path.display()))?;
        roots.add(cert).with_context(|| {
            format!(
                "delivery.relay.ca_file {}: unusable certificate",
                path.display()
            )
        })?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "delivery.relay.ca_file {} holds no certificate",
        path.display()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[async_trait]
impl Transport for Relay {
    fn name(&self) -> &'static str {
        "relay"
    }

    async fn deliver(&self, message: &Outgoing, recipients: &[String]) -> Vec<Outcome> {
        let host = format!("{}:{}", self.host, self.port);
        let outcome = match self.open().await {
            Ok(mut client) => {
                let result = transaction(&mut client, &host, message, recipients).await;
                let _ = client.cmd("QUIT\r\n").await;
                result.map(|(outcomes, _)| outcomes)
            }
            Err(e) => Err(super::mx::HostFailure(e)),
        };
        match outcome {
            Ok(outcomes) => outcomes,
            Err(super::mx::HostFailure(reason)) => {
                tracing::warn!(message_id = %message.message_id, relay = %host, reason = %reason, "relay session failed");
                recipients
                    .iter()
                    .map(|_| Outcome::transient(format!("451 4.4.1 relay {host}: {reason}")))
                    .collect()
            }
        }
    }
}
