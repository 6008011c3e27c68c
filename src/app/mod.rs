//! Wiring: the only place that picks concrete implementations and starts
//! the listeners.

mod dev;
mod gateway;
mod listener;
mod received;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::control::Control;
use crate::queue::Queue;
use crate::session::{ListenerContext, Policy};
use crate::signing::Signer;
use crate::tls::TlsAcceptorHandle;
use crate::{dns, domains};

pub use dev::provision as provision_dev;

/// Runs the gateway until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let control = Arc::new(Control::open(&config.data_dir)?);
    if let Some(dev) = config.dev() {
        dev::provision(&control, dev)?;
        tracing::warn!(
            tenant = %dev.tenant,
            domain = %dev.domain,
            user = %dev.username,
            "DEV MODE: static SMTP credential and auto-verified domain (loopback listeners only)"
        );
    }
    let tls = TlsAcceptorHandle::load(&config.tls, &config.hostname)?;
    let (queue, writer, report) = Queue::open(&config.data_dir)?;
    tracing::info!(
        queued = report.queued,
        quarantined = report.quarantined.len(),
        "queue recovered"
    );
    let scanner = crate::scan::Scanner::start(&config, control.clone(), queue.clone()).await?;
    let gateway = Arc::new(gateway::Gateway {
        auth: Authenticator::new(control.clone(), config.auth.clone(), config.dev().is_some()),
        control: control.clone(),
        queue,
        scanner,
        signer: Signer::new(control.clone())?,
        inbound_auth: crate::checks::inbound::InboundAuth::new(
            &config.dns.nameservers,
            &config.hostname,
        )?,
        feedback: crate::delivery::feedback::Feedback::new(control.clone(), &config.data_dir)?,
        quotas: crate::checks::quota::Quotas::open(&config.data_dir)?,
        default_mail_from_domain: config.default_mail_from_domain().to_string(),
        hostname: config.hostname.clone(),
        region: config.region.clone(),
    });

    let mut bound = Vec::new();
    for l in &config.listeners {
        let addr = l.addr()?;
        let socket = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listener '{}': cannot bind {addr}", l.name))?;
        let context = Arc::new(ListenerContext {
            name: l.name.clone(),
            kind: l.kind,
            policy: Policy::new(l.kind, &config.hostname, &config.limits),
            tls: tls.clone(),
            command_timeout: Duration::from_secs(config.limits.command_timeout_secs),
            data_timeout: Duration::from_secs(config.limits.data_timeout_secs),
        });
        tracing::info!(listener = %l.name, kind = l.kind.as_str(), addr = %socket.local_addr()?, "listening");
        bound.push((socket, context));
    }
    // Installed before anyone is told we are ready, so that a SIGTERM sent
    // right after the ready line is a graceful stop, not the default kill.
    let signals = Signals::install()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut extra = Vec::new();
    let mut background = tokio::task::JoinSet::new();
    let stores = Arc::new(crate::store::Stores::new(&config.data_dir));
    if let Some(api) = &config.api {
        let state = crate::api::ApiState {
            control: control.clone(),
            stores: stores.clone(),
            allow_static: config.dev().is_some(),
        };
        let (addr, task) = crate::api::start(api, state, stop_rx.clone()).await?;
        tracing::info!(%addr, "HTTP API listening");
        if let Some(dev) = config.dev() {
            tracing::warn!(
                tenant = %dev.tenant,
                "DEV MODE: fixed API key (loopback only): curl -H 'Authorization: Bearer {}' http://{addr}/v1/messages",
                crate::api::DEV_API_KEY
            );
        }
        extra.push(("api".to_string(), addr.to_string()));
        background.spawn(async move {
            let _ = task.await;
        });
    }
    if config.dns_server.enabled {
        let (addr, task) =
            dns::server::start(config.clone(), control.clone(), stop_rx.clone()).await?;
        tracing::info!(%addr, "authoritative DNS listening (UDP and TCP)");
        extra.push(("dns".to_string(), addr.to_string()));
        background.spawn(async move {
            let _ = task.await;
        });
    }
    let aws = match &config.aws {
        Some(aws) => Some(crate::aws::clients::sdk_config(aws).await),
        None => None,
    };
    if config.delivery.enabled {
        let resolver = Arc::new(dns::DnsResolver::new(&config.dns.nameservers)?);
        let timeout = Duration::from_secs(config.delivery.smtp_timeout_secs);
        // What a tenant sends is kept in its store before it leaves.
        let keep_sent = |inner: Arc<dyn crate::delivery::Transport>| {
            Arc::new(crate::delivery::local::KeepSent {
                inner,
                stores: stores.clone(),
            })
        };
        let transports = crate::delivery::engine::Transports {
            capture: keep_sent(Arc::new(crate::delivery::capture::Capture)),
            mx: keep_sent(Arc::new(crate::delivery::mx::Mx::new(
                resolver,
                config.delivery.mx_port,
                &config.hostname,
                timeout,
            )?)),
            simulator: keep_sent(Arc::new(crate::delivery::simulator::Simulator)),
            local: Arc::new(crate::delivery::local::Local {
                stores: stores.clone(),
            }),
            ses: aws.as_ref().map(|sdk| {
                keep_sent(Arc::new(crate::delivery::ses::Ses::new(
                    sdk,
                    control.clone(),
                    timeout,
                ))) as Arc<dyn crate::delivery::Transport>
            }),
            relay: match &config.delivery.relay {
                Some(relay) => Some(keep_sent(Arc::new(crate::delivery::relay::Relay::new(
                    relay,
                    &config.hostname,
                    timeout,
                )?)) as Arc<dyn crate::delivery::Transport>),
                None => None,
            },
        };
        let engine = Arc::new(crate::delivery::Engine::new(
            &config,
            control.clone(),
            transports,
        )?);
        background.spawn(engine.run(stop_rx.clone()));
        let backoff = crate::delivery::webhooks::Backoff {
            base_secs: config.delivery.retry_base_secs,
            max_delay_secs: config.delivery.retry_max_delay_secs,
            max_age_secs: config.delivery.max_age_secs,
        };
        background.spawn(crate::delivery::webhooks::run(
            control.clone(),
            backoff,
            Duration::from_millis(config.delivery.poll_ms),
            stop_rx.clone(),
        ));
    } else {
        tracing::warn!("delivery.enabled = false: queued mail is not delivered");
    }
    if let (Some(aws_config), Some(sdk)) = (&config.aws, &aws) {
        crate::aws::spawn_workers(
            aws_config,
            sdk,
            control.clone(),
            gateway.clone(),
            &stop_rx,
            &mut background,
        );
    }
    background.spawn(domains::recheck_loop(
        control.clone(),
        config.clone(),
        stop_rx.clone(),
    ));
    announce_ready(&bound, extra)?;

    let limits = listener::ConnectionLimits::new(
        config.limits.max_connections,
        config.limits.max_connections_per_ip,
    );
    let grace = Duration::from_secs(config.limits.shutdown_grace_secs);
    let mut loops = tokio::task::JoinSet::new();
    for (socket, context) in bound {
        loops.spawn(listener::accept_loop(
            socket,
            context,
            gateway.clone(),
            limits.clone(),
            stop_rx.clone(),
            grace,
        ));
    }
    drop(gateway);

    signals.wait_for_shutdown(&tls).await;
    tracing::info!("shutting down: finishing transactions in flight");
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    while background.join_next().await.is_some() {}
    // Every Queue handle is gone with the sessions: the writer finishes its
    // last commit and stops.
    tokio::task::spawn_blocking(move || writer.join()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// One line on stdout with every bound address, for scripts and tests
/// (listeners may bind port 0).
fn announce_ready(
    bound: &[(TcpListener, Arc<ListenerContext>)],
    extra: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let mut addrs: BTreeMap<String, String> = bound
        .iter()
        .map(|(s, c)| Ok((c.name.clone(), s.local_addr()?.to_string())))
        .collect::<std::io::Result<_>>()?;
    addrs.extend(extra);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready {}", serde_json::to_string(&addrs)?)?;
    stdout.flush()?;
    Ok(())
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; SIGHUP reloads the TLS certificate.
    async fn wait_for_shutdown(mut self, tls: &TlsAcceptorHandle) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "TLS reload failed; keeping the old certificate"),
                },
            }
        }
    }
}
