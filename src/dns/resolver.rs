//! A resolver that asks the configured nameservers (or the system's), and
//! tells "no such record" apart from "DNS trouble": verification treats the
//! first as missing records and the second as a temporary failure.

use std::net::SocketAddr;

use anyhow::Context;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Found(T),
    /// NXDOMAIN or no record of the type.
    Missing,
    /// Timeout, SERVFAIL, refused...: nothing can be concluded.
    Error(String),
}

pub struct DnsResolver {
    inner: TokioResolver,
}

impl DnsResolver {
    /// `nameservers` as `ip:port`; empty uses /etc/resolv.conf.
    pub fn new(nameservers: &[String]) -> anyhow::Result<DnsResolver> {
        let (config, options) = resolver_settings(nameservers)?;
        let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = options;
        Ok(DnsResolver {
            inner: builder.build().context("building the DNS resolver")?,
        })
    }

    /// TXT records, each with its character-strings joined.
    pub async fn txt(&self, name: &str) -> Answer<Vec<String>> {
        match self.inner.txt_lookup(fqdn(name)).await {
            Ok(lookup) => Answer::Found(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s).into_owned())
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => classify(e),
        }
    }

    /// A and AAAA addresses of a host.
    pub async fn ips(&self, name: &str) -> Answer<Vec<std::net::IpAddr>> {
        match self.inner.lookup_ip(fqdn(name)).await {
            Ok(lookup) => Answer::Found(lookup.iter().collect()),
            Err(e) => classify(e),
        }
    }

    /// MX records as (preference, exchange without trailing dot).
    pub async fn mx(&self, name: &str) -> Answer<Vec<(u16, String)>> {
        match self.inner.mx_lookup(fqdn(name)).await {
            Ok(lookup) => Answer::Found(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((
                            mx.preference,
                            mx.exchange
                                .to_ascii()
                                .trim_end_matches('.')
                                .to_ascii_lowercase(),
                        )),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => classify(e),
        }
    }
}

/// Resolver settings for `nameservers` (`ip:port`), or the system's when
/// empty; shared with mail-auth, which builds its own resolver.
pub fn resolver_settings(nameservers: &[String]) -> anyhow::Result<(ResolverConfig, ResolverOpts)> {
    let (config, mut options) = if nameservers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()
            .context("reading the system DNS configuration")?
    } else {
        let servers = nameservers
            .iter()
            .map(|ns| {
                let addr: SocketAddr = ns.parse().with_context(|| format!("nameserver '{ns}'"))?;
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .collect();
                Ok(NameServerConfig::new(addr.ip(), true, connections))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        (
            ResolverConfig::from_name_servers(servers),
            ResolverOpts::default(),
        )
    };
    // Checks must see what is published now, not a cached past.
    options.cache_size = 0;
    options.timeout = std::time::Duration::from_secs(3);
    options.attempts = 2;
    Ok((config, options))
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn classify<T>(error: hickory_resolver::net::NetError) -> Answer<T> {
    if error.is_no_records_found() || error.is_nx_domain() {
        Answer::Missing
    } else {
        Answer::Error(error.to_string())
    }
}
