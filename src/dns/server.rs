//! The embedded authoritative DNS server (hickory-server), over UDP and TCP.
//!
//! It serves, for every domain sesame holds, exactly the zone text that
//! `domain records --format zone` prints: the same text is parsed into the
//! zone. Zones are rebuilt when domains or keys change, so a new domain or a
//! rotated key is answered without a restart. Names outside those zones get
//! REFUSED, and recursion is never offered.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use super::zone;
use crate::config::Config;
use crate::control::Control;

/// The current catalog, swapped whole when zones change.
struct Zones {
    catalog: RwLock<Arc<Catalog>>,
}

#[async_trait::async_trait]
impl RequestHandler for Zones {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let catalog = self
            .catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// Every zone's text, in a stable order (also the change detector).
pub fn zone_texts(control: &Control, config: &Config) -> anyhow::Result<Vec<(String, String)>> {
    control
        .domain_names()?
        .into_iter()
        .filter_map(|name| control.domain(&name).transpose())
        .map(|domain| {
            let domain = domain?;
            let text = zone::render(&domain, config);
            Ok((domain.domain, text))
        })
        .collect()
}

fn build_catalog(zones: &[(String, String)]) -> anyhow::Result<Catalog> {
    let mut catalog = Catalog::new();
    for (domain, text) in zones {
        let origin = Name::from_ascii(format!("{domain}."))?;
        let (origin, records) = Parser::new(text.as_str(), None, Some(origin))
            .parse()
            .with_context(|| format!("zone {domain}"))?;
        let handler =
            InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::new(
                origin.clone(),
                records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )
            .map_err(|e| anyhow::anyhow!("zone {domain}: {e}"))?;
        catalog.upsert(LowerName::from(origin), vec![Arc::new(handler)]);
    }
    Ok(catalog)
}

fn fingerprint(zones: &[(String, String)]) -> u64 {
    let mut hasher = DefaultHasher::new();
    zones.hash(&mut hasher);
    hasher.finish()
}

/// Binds UDP and TCP on the same address and serves until `shutdown`.
/// Returns the bound address and the task that runs the server.
pub async fn start(
    config: Arc<Config>,
    control: Arc<Control>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let bind: SocketAddr = config.dns_server.bind.parse()?;
    let (udp, tcp) = bind_pair(bind).await?;
    let addr = udp.local_addr()?;
    let zones = zone_texts(&control, &config)?;
    let handler = Arc::new(Zones {
        catalog: RwLock::new(Arc::new(build_catalog(&zones)?)),
    });
    let mut server = Server::new(SharedZones(handler.clone()));
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 65_535);
    let refresh = Duration::from_millis(config.dns_server.refresh_ms);
    let task = tokio::spawn(async move {
        let mut current = fingerprint(&zones);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(refresh) => {}
                _ = shutdown.changed() => break,
            }
            match zone_texts(&control, &config) {
                Ok(zones) if fingerprint(&zones) != current => match build_catalog(&zones) {
                    Ok(catalog) => {
                        current = fingerprint(&zones);
                        *handler.catalog.write().unwrap_or_else(|e| e.into_inner()) =
                            Arc::new(catalog);
                        tracing::info!(zones = zones.len(), "DNS zones reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "DNS zone rebuild failed; serving the previous zones")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reading domains for DNS failed")
                }
            }
        }
        let _ = server.shutdown_gracefully().await;
    });
    Ok((addr, task))
}

/// hickory's server wants to own its handler; the refresh task keeps a
/// second handle to swap catalogs.
struct SharedZones(Arc<Zones>);

#[async_trait::async_trait]
impl RequestHandler for SharedZones {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// UDP and TCP on one port (port 0: the port UDP got, retried if TCP
/// finds it taken).
async fn bind_pair(bind: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    for _ in 0..10 {
        let udp = UdpSocket::bind(bind)
            .await
            .with_context(|| format!("dns_server.bind: cannot bind UDP {bind}"))?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if bind.port() != 0 => {
                return Err(e).with_context(|| format!("dns_server.bind: cannot bind TCP {bind}"));
            }
            Err(_) => continue,
        }
    }
    anyhow::bail!("dns_server.bind: no port free for both UDP and TCP")
}
