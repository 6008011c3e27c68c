//! Is clamd there? A timed VERSION probe on a fresh connection, the log
//! lines at start (loud when mail would go unscanned) and on every change,
//! and the report behind `sesame status`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::clamd::Clamd;
use crate::config::{InfectedAction, ScanConfig, ScanFailurePolicy};

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often `serve` re-probes; changes are logged as they are seen.
const WATCH_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct ClamdHealth {
    pub address: String,
    pub reachable: bool,
    /// clamd's VERSION answer (engine and, when loaded, database version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn probe(clamd: &Clamd) -> ClamdHealth {
    let started = Instant::now();
    let answer = tokio::time::timeout(PROBE_TIMEOUT, clamd.version()).await;
    let latency = started.elapsed().as_secs_f64() * 1000.0;
    let (version, error) = match answer {
        Ok(Ok(version)) => (Some(version), None),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(_) => (None, Some(format!("no answer within {PROBE_TIMEOUT:?}"))),
    };
    ClamdHealth {
        address: clamd.describe(),
        reachable: version.is_some(),
        latency_ms: version.as_ref().map(|_| (latency * 100.0).round() / 100.0),
        version,
        error,
    }
}

/// Logs clamd's health now, then watches it and logs every change.
pub async fn announce_and_watch(clamd: Arc<Clamd>, policy: ScanFailurePolicy) {
    let first = probe(&clamd).await;
    log(&first, policy);
    tokio::spawn(async move {
        let mut reachable = first.reachable;
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let now = probe(&clamd).await;
            if now.reachable != reachable {
                log(&now, policy);
                reachable = now.reachable;
            }
        }
    });
}

fn log(h: &ClamdHealth, policy: ScanFailurePolicy) {
    let error = h.error.as_deref().unwrap_or_default();
    if h.reachable {
        tracing::info!(
            clamd = %h.address,
            version = h.version.as_deref().unwrap_or_default(),
            latency_ms = h.latency_ms.unwrap_or_default(),
            "clamd is reachable: attachments are scanned"
        );
        return;
    }
    match policy {
        ScanFailurePolicy::AcceptAndTag => tracing::warn!(
            clamd = %h.address,
            error,
            "!!! CLAMD IS UNREACHABLE: ATTACHMENTS ARE NOT BEING SCANNED !!! Messages with \
             attachments are accepted and tagged 'X-Sesame-Virus-Verdict: PROCESSING_FAILED' \
             because scan.on_scanner_error = \"accept-and-tag\". Start clamd \
             (apt-get install clamav-daemon), or use \"tempfail\" in production."
        ),
        ScanFailurePolicy::Tempfail => tracing::warn!(
            clamd = %h.address,
            error,
            "clamd is unreachable: messages with attachments are answered \
             '451 4.7.0 Temporary service failure' until it is back"
        ),
        ScanFailurePolicy::Reject => tracing::error!(
            clamd = %h.address,
            error,
            "clamd is unreachable: messages with attachments are REJECTED until it is back"
        ),
    }
}

/// What `sesame status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub scan: ScanSettings,
    pub clamd: ClamdHealth,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanSettings {
    pub enabled: bool,
    pub on_scanner_error: ScanFailurePolicy,
    pub oversize: ScanFailurePolicy,
    pub on_infected: InfectedAction,
    pub max_part_bytes: usize,
    pub timeout_secs: u64,
}

/// Probes the configured clamd (whether or not scanning is on, so that it
/// can be checked before it is switched on).
pub async fn status(config: &ScanConfig) -> anyhow::Result<Status> {
    let clamd = Clamd::new(config.address()?, 1);
    Ok(Status {
        scan: ScanSettings {
            enabled: config.enabled,
            on_scanner_error: config.on_scanner_error,
            oversize: config.oversize,
            on_infected: config.on_infected,
            max_part_bytes: config.max_part_bytes,
            timeout_secs: config.timeout_secs,
        },
        clamd: probe(&clamd).await,
    })
}

impl Status {
    /// Scanning is on but cannot work: monitoring should hear about it.
    pub fn is_degraded(&self) -> bool {
        self.scan.enabled && !self.clamd.reachable
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.scan;
        if s.enabled {
            writeln!(
                f,
                "scan\tenabled (on_infected {}, on_scanner_error {}, oversize {} over {} bytes)",
                s.on_infected.as_str(),
                config_word(&s.on_scanner_error),
                config_word(&s.oversize),
                s.max_part_bytes
            )?;
        } else {
            writeln!(f, "scan\tdisabled")?;
        }
        let c = &self.clamd;
        match (&c.version, &c.error) {
            (Some(version), _) => write!(
                f,
                "clamd\t{} reachable, {version}, {} ms",
                c.address,
                c.latency_ms.unwrap_or_default()
            ),
            (None, error) => write!(
                f,
                "clamd\t{} UNREACHABLE: {}",
                c.address,
                error.as_deref().unwrap_or_default()
            ),
        }
    }
}

/// A policy as the config file spells it (`accept-and-tag`).
fn config_word(policy: &ScanFailurePolicy) -> String {
    serde_json::to_value(policy)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
