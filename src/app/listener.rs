//! Accept loops and connection limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::gateway::Gateway;
use crate::config::ListenerKind;
use crate::proto::texts;
use crate::session::{self, ListenerContext};

/// Connection counts, in total and per client IP.
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Holds one connection slot; frees it on drop.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            counts: Mutex::new((0, HashMap::new())),
        })
    }

    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *counts;
        let mine = per_ip.entry(ip).or_insert(0);
        if *total >= self.max_total || *mine >= self.max_per_ip {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *counts;
        *total -= 1;
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Accepts until shutdown, then waits up to `grace` for sessions to finish
/// their transactions before aborting what is left.
pub async fn accept_loop(
    listener: TcpListener,
    context: Arc<ListenerContext>,
    gateway: Arc<Gateway>,
    limits: Arc<ConnectionLimits>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut sessions = JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        tokio::select! {
            // Shutdown first: a connection that raced with it is not greeted.
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    // Accepted in the same instant shutdown began: drop it.
                    Ok(_) if *shutdown.borrow() => break,
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly
                        // instead of spinning.
                        tracing::warn!(listener = %context.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match limits.acquire(peer.ip()) {
                    Some(slot) => {
                        let (ctx, gw, stop) = (context.clone(), gateway.clone(), shutdown.clone());
                        sessions.spawn(async move {
                            session::run(tcp, peer, ctx, gw, stop).await;
                            drop(slot);
                        });
                    }
                    None => {
                        tracing::warn!(listener = %context.name, peer = %peer, "connection refused: too many connections");
                        sessions.spawn(refuse(tcp, context.clone()));
                    }
                }
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(listener = %context.name, left = sessions.len(), "shutdown grace period over; closing sessions");
        sessions.shutdown().await;
    }
}

/// Tells an over-limit client why it is turned away (inside TLS on an
/// implicit-TLS port, where plaintext would be garbage to the client).
async fn refuse(tcp: TcpStream, context: Arc<ListenerContext>) {
    let mut line = Vec::new();
    texts::too_many_connections().write_to(&mut line);
    let timeout = Duration::from_secs(10);
    let _ = tokio::time::timeout(timeout, async {
        if context.kind == ListenerKind::Submissions {
            if let Ok(mut tls) = context.tls.current().accept(tcp).await {
                let _ = tls.write_all(&line).await;
                let _ = tls.shutdown().await;
            }
        } else {
            let mut tcp = tcp;
            let _ = tcp.write_all(&line).await;
            let _ = tcp.shutdown().await;
        }
    })
    .await;
}
