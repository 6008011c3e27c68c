//! Domains as SES has them: creation with DKIM keys, verification through
//! DNS, key rotation, and the custom MAIL FROM domain.

pub mod status;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::control::seal::Sealer;
use crate::control::{Control, Domain, IdentityKind, KeyType, MailFromBehavior};
use crate::dns::DnsResolver;
use crate::proto::{Reply, texts};
use crate::signing::keys::{self, KeySpec};
use crate::types::{EmailAddress, MessageId, unix_now};

/// Creates a domain identity with fresh DKIM keys (`spec` as in
/// `--dkim rsa2048+ed25519`). `attested`: verified without DNS.
pub fn add(
    control: &Control,
    tenant: &str,
    domain: &str,
    spec: &str,
    attested: bool,
) -> anyhow::Result<Domain> {
    let specs = keys::parse_spec(spec)?;
    let sealer = Sealer::load(control.data_dir())?;
    let new_keys = keys::generate(&specs, &[], &sealer, unix_now())?;
    control.add_domain(tenant, domain, new_keys, attested)
}

/// Adds the domain unless it exists (dev provisioning is idempotent).
pub fn ensure(
    control: &Control,
    tenant: &str,
    domain: &str,
    attested: bool,
) -> anyhow::Result<Domain> {
    match control.domain(domain)? {
        Some(existing) => Ok(existing),
        None => add(control, tenant, domain, "rsa2048", attested),
    }
}

/// Publishes new keys of the same kinds as the active ones; signing
/// switches once their records verify.
pub fn rotate(control: &Control, domain: &str) -> anyhow::Result<Domain> {
    let current = control.require_domain(domain)?;
    let types: Vec<(KeyType, usize)> = current
        .active_keys()
        .map(|k| {
            (
                k.key_type,
                if k.key_type == KeyType::Rsa {
                    keys::rsa_bits(&k.public_key)
                } else {
                    0
                },
            )
        })
        .collect();
    let specs: Vec<KeySpec> = if types.is_empty() {
        vec![KeySpec::Rsa(2048)]
    } else {
        keys::spec_of(&types)
    };
    let sealer = Sealer::load(control.data_dir())?;
    let new_keys = keys::generate(
        &specs,
        &control.selectors(&current.domain)?,
        &sealer,
        unix_now(),
    )?;
    control.add_pending_keys(&current.domain, new_keys)?;
    control.require_domain(domain)
}

/// The tenant's verified domain that covers `addr` (the most specific one):
/// the domain that signs for it and gives its MAIL FROM.
pub fn domain_for(control: &Control, tenant: &str, addr: &EmailAddress) -> Option<Domain> {
    let identities = control.verified_identities(tenant).ok()?;
    let best = identities
        .into_iter()
        .filter(|i| i.kind == IdentityKind::Domain && i.covers(addr))
        .max_by_key(|i| i.identity.len())?;
    control.domain(&best.identity).ok().flatten()
}

/// The envelope sender for an outbound message: a VERP address on the
/// domain's MAIL FROM domain that carries the message id (bounces tie back
/// to the message), or the behaviour on MX failure when that domain is not
/// verified.
pub fn envelope_sender(
    default_domain: &str,
    domain: Option<&Domain>,
    id: &MessageId,
) -> Result<String, Reply> {
    match domain {
        Some(d) if d.mail_from.status.is_verified() => Ok(format!("{id}@{}", d.mail_from_domain)),
        Some(d) if d.mail_from_behavior == MailFromBehavior::RejectMessage => {
            Err(texts::mail_from_not_verified())
        }
        _ => Ok(format!("{id}@{default_domain}")),
    }
}

/// Re-checks every domain on a schedule inside `serve`.
pub async fn recheck_loop(
    control: Arc<Control>,
    config: Arc<Config>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let resolver = match DnsResolver::new(&config.dns.nameservers) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "DNS resolver unavailable: domains will not be re-checked");
            return;
        }
    };
    let interval = Duration::from_secs(config.dns.recheck_interval_secs);
    loop {
        for name in control.domain_names().unwrap_or_default() {
            let Ok(Some(domain)) = control.domain(&name) else {
                continue;
            };
            let verified = tokio::select! {
                report = verify::verify(&control, &config, &resolver, &domain) => report,
                // Shutdown never waits for DNS timeouts.
                _ = shutdown.changed() => return,
            };
            match verified {
                Ok(report) => {
                    if report.verification != domain.verification
                        || report.dkim != domain.dkim
                        || report.mail_from != domain.mail_from
                    {
                        tracing::info!(
                            domain = %name,
                            verification = ?report.verification.status,
                            dkim = ?report.dkim.status,
                            mail_from = ?report.mail_from.status,
                            "domain status changed"
                        );
                    }
                    for step in report.rotation {
                        tracing::info!(domain = %name, step, "DKIM rotation");
                    }
                }
                Err(e) => {
                    tracing::warn!(domain = %name, error = %format!("{e:#}"), "domain re-check failed")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}
