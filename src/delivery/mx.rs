//! The `mx` transport: MX lookup through the configured resolver (implicit
//! MX on the domain's A/AAAA when it has none), hosts in preference order,
//! each address of a host in turn, the next one on connection-level
//! failure. One SMTP transaction per (message, domain) carries every
//! recipient, so each gets its own RCPT reply. STARTTLS is used whenever the
//! peer offers it (opportunistic: certificates are not checked, as between
//! MTAs without DANE/MTA-STS), and plaintext otherwise, unless the
//! message's configuration set requires TLS: then a host without STARTTLS
//! is skipped like an unreachable one, and the reason is recorded.
//! After a clean transaction the session stays open for a few seconds
//! (`pool`), and the next message to the same address reuses it after an
//! RSET.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mail_send::SmtpClient;
use smtp_proto::Response;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::pool::{Pool, Session};
use super::{Outcome, Outgoing, Transport, enhanced_status, recipient_domain};
use crate::dns::{Answer, DnsResolver};

pub struct Mx {
    resolver: Arc<DnsResolver>,
    port: u16,
    helo: String,
    timeout: Duration,
    tls: TlsConnector,
    pool: Pool,
}

/// Why a host was given up on before any recipient had an answer.
pub(super) struct HostFailure(pub(super) String);

impl Mx {
    pub fn new(
        resolver: Arc<DnsResolver>,
        port: u16,
        helo: &str,
        timeout: Duration,
    ) -> anyhow::Result<Mx> {
        let tls = mail_send::smtp::tls::build_tls_connector(true)
            .map_err(|e| anyhow::anyhow!("TLS client: {e}"))?;
        Ok(Mx {
            resolver,
            port,
            helo: helo.to_string(),
            timeout,
            tls,
            pool: Pool::default(),
        })
    }

    /// The hosts to try, best preference first; or the outcome for every
    /// recipient when there is nowhere to go.
    async fn hosts(&self, domain: &str) -> Result<Vec<String>, Outcome> {
        match self.resolver.mx(domain).await {
            Answer::Found(mut records) if !records.is_empty() => {
                records.sort_by_key(|(pref, _)| *pref);
                // RFC 7505 null MX: the domain accepts no mail.
                if records.len() == 1 && (records[0].1.is_empty() || records[0].1 == ".") {
                    return Err(Outcome::permanent(
                        "5.1.10",
                        format!("550 5.1.10 {domain} does not accept mail (null MX)"),
                    ));
                }
                Ok(records.into_iter().map(|(_, host)| host).collect())
            }
            // No MX: the domain itself is the implicit MX (RFC 5321 5.1).
            Answer::Found(_) | Answer::Missing => Ok(vec![domain.to_string()]),
            Answer::Error(e) => Err(Outcome::transient(format!(
                "451 4.4.3 MX lookup for {domain} failed: {e}"
            ))),
        }
    }

    async fn addresses(&self, host: &str) -> Answer<Vec<IpAddr>> {
        if let Ok(ip) = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
        {
            return Answer::Found(vec![ip]);
        }
        self.resolver.ips(host).await
    }

    async fn attempt(
        &self,
        addr: SocketAddr,
        host: &str,
        message: &Outgoing,
        recipients: &[String],
    ) -> Result<Vec<Outcome>, HostFailure> {
        if let Some(mut session) = self.pool.take(addr, message.require_tls).await {
            // A failure before MAIL was answered falls back to a new
            // connection below.
            if let Ok((outcomes, clean)) = session.run(host, message, recipients).await {
                tracing::info!(message_id = %message.message_id, %host, %addr, "reused an idle connection");
                self.release(addr, session, clean).await;
                return Ok(outcomes);
            }
        }
        let mut session = self.connect(addr, host, message).await?;
        let (outcomes, clean) = session.run(host, message, recipients).await?;
        self.release(addr, session, clean).await;
        Ok(outcomes)
    }

    async fn release(&self, addr: SocketAddr, session: Session, clean: bool) {
        if clean {
            self.pool.put(addr, session);
        } else {
            session.quit().await;
        }
    }

    /// A new session, greeted, EHLO'd, and TLS'd when the peer offers it.
    async fn connect(
        &self,
        addr: SocketAddr,
        host: &str,
        message: &Outgoing,
    ) -> Result<Session, HostFailure> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            HostFailure(format!("{host} [{addr}]: {what}: {e}"))
        };
        let mut client = SmtpClient::connect(addr, self.timeout)
            .await
            .map_err(|e| fail("connect", &e))?;
        let greeting = client.read().await.map_err(|e| fail("greeting", &e))?;
        if greeting.code / 100 != 2 {
            return Err(fail("greeting", &reply_text(&greeting)));
        }
        let ehlo = client
            .ehlo(&self.helo)
            .await
            .map_err(|e| fail("EHLO", &e))?;
        if ehlo.has_capability(smtp_proto::EXT_START_TLS) {
            let mut client = client
                .start_tls(&self.tls, host)
                .await
                .map_err(|e| fail("STARTTLS", &e))?;
            client
                .ehlo(&self.helo)
                .await
                .map_err(|e| fail("EHLO after STARTTLS", &e))?;
            Ok(Session::Tls(Box::new(client)))
        } else if message.require_tls {
            let _ = client.cmd("QUIT\r\n").await;
            Err(HostFailure(format!(
                "{host} [{addr}]: STARTTLS not offered, and the configuration set requires TLS (TlsPolicy REQUIRE)"
            )))
        } else {
            Ok(Session::Plain(client))
        }
    }
}

pub(super) fn reply_text(r: &Response<String>) -> String {
    let esc = if r.esc[0] != 0 {
        format!(" {}.{}.{}", r.esc[0], r.esc[1], r.esc[2])
    } else {
        String::new()
    };
    let text = r.message.replace(['\r', '\n'], " ");
    format!("{}{esc} {}", r.code, text.trim())
}

/// The outcome a reply gives to the recipients it concerns.
fn classify(r: &Response<String>, host: &str) -> Outcome {
    let text = format!("{} (from {host})", reply_text(r));
    match r.code / 100 {
        2 => Outcome::delivered(text),
        5 => {
            let status = enhanced_status(&text);
            Outcome::Permanent {
                response: text,
                status,
            }
        }
        _ => Outcome::transient(text),
    }
}

/// MAIL, RCPT for each recipient, DATA. Once MAIL has an answer the host is
/// committed to: later trouble (a dropped connection mid-DATA) is a
/// transient outcome for the recipients it concerns, not a reason to try
/// another host within this attempt. Also answers whether the session is
/// clean enough for another transaction (the caller QUITs or keeps it).
pub(super) async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    host: &str,
    message: &Outgoing,
    recipients: &[String],
) -> Result<(Vec<Outcome>, bool), HostFailure> {
    let mail = client
        .cmd(format!("MAIL FROM:<{}>\r\n", message.mail_from))
        .await
        .map_err(|e| HostFailure(format!("{host}: MAIL FROM: {e}")))?;
    if mail.code / 100 != 2 {
        let outcome = classify(&mail, host);
        return Ok((
            recipients.iter().map(|_| outcome.clone()).collect(),
            mail.code != 421,
        ));
    }
    let mut clean = true;
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(recipients.len());
    for r in recipients {
        match client.cmd(format!("RCPT TO:<{r}>\r\n")).await {
            Ok(reply) if reply.code / 100 == 2 => outcomes.push(None),
            Ok(reply) => {
                clean &= reply.code != 421;
                outcomes.push(Some(classify(&reply, host)))
            }
            Err(e) => {
                clean = false;
                outcomes.push(Some(Outcome::transient(format!(
                    "421 4.4.2 {host}: connection lost at RCPT: {e}"
                ))))
            }
        }
    }
    if outcomes.iter().all(Option::is_some) {
        return Ok((outcomes.into_iter().flatten().collect(), clean));
    }
    let data_outcome = match client.cmd("DATA\r\n").await {
        Ok(reply) if reply.code == 354 => {
            // mail-send ends the data with CRLF.CRLF itself.
            let body = message.body.as_slice();
            let body = body.strip_suffix(b"\r\n").unwrap_or(body);
            match client.write_message(body).await {
                Ok(()) => match client.read().await {
                    Ok(reply) => {
                        clean &= reply.code != 421;
                        classify(&reply, host)
                    }
                    Err(e) => {
                        clean = false;
                        Outcome::transient(format!(
                            "421 4.4.2 {host}: connection lost after the message was sent: {e}"
                        ))
                    }
                },
                Err(e) => {
                    clean = false;
                    Outcome::transient(format!(
                        "421 4.4.2 {host}: connection lost during DATA: {e}"
                    ))
                }
            }
        }
        Ok(reply) => {
            clean &= reply.code != 421;
            classify(&reply, host)
        }
        Err(e) => {
            clean = false;
            Outcome::transient(format!("421 4.4.2 {host}: connection lost at DATA: {e}"))
        }
    };
    Ok((
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| data_outcome.clone()))
            .collect(),
        clean,
    ))
}

#[async_trait]
impl Transport for Mx {
    fn name(&self) -> &'static str {
        "mx"
    }

    async fn deliver(&self, message: &Outgoing, recipients: &[String]) -> Vec<Outcome> {
        let domain = recipients
            .first()
            .map(|r| recipient_domain(r))
            .unwrap_or_default();
        let all = |o: Outcome| recipients.iter().map(|_| o.clone()).collect();
        let hosts = match self.hosts(&domain).await {
            Ok(hosts) => hosts,
            Err(outcome) => return all(outcome),
        };
        let mut errors = Vec::new();
        let mut resolved_any = false;
        for host in &hosts {
            let ips = match self.addresses(host).await {
                Answer::Found(ips) if !ips.is_empty() => ips,
                Answer::Found(_) | Answer::Missing => {
                    errors.push(format!("{host}: no address records"));
                    continue;
                }
                Answer::Error(e) => {
                    resolved_any = true;
                    errors.push(format!("{host}: address lookup failed: {e}"));
                    continue;
                }
            };
            resolved_any = true;
            for ip in ips {
                match self
                    .attempt(SocketAddr::new(ip, self.port), host, message, recipients)
                    .await
                {
                    Ok(outcomes) => return outcomes,
                    Err(HostFailure(reason)) => {
                        tracing::info!(message_id = %message.message_id, %domain, reason = %reason, "MX host failed; trying the next");
                        errors.push(reason);
                    }
                }
            }
        }
        if !resolved_any {
            // Neither an MX host nor the domain itself has an address.
            return all(Outcome::permanent(
                "5.1.2",
                format!(
                    "550 5.1.2 {domain}: no mail host found ({})",
                    errors.join("; ")
                ),
            ));
        }
        all(Outcome::transient(format!(
            "451 4.4.1 no MX host of {domain} took the message ({})",
            errors.join("; ")
        )))
    }
}
