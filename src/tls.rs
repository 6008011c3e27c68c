//! TLS for the listeners: certificate loading, first-start generation of a
//! self-signed dev certificate, and reloading on SIGHUP without dropping
//! sessions (a TLS session keeps the certificate it shook hands with; any
//! handshake after the reload, STARTTLS included, gets the new one).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::TlsConfig;

#[derive(Clone)]
pub struct TlsAcceptorHandle {
    config: TlsConfig,
    current: Arc<RwLock<TlsAcceptor>>,
}

impl TlsAcceptorHandle {
    pub fn load(config: &TlsConfig, hostname: &str) -> anyhow::Result<Self> {
        if config.generate_self_signed && !(config.cert.exists() && config.key.exists()) {
            generate_self_signed(config, hostname)?;
        }
        let acceptor = build_acceptor(config)?;
        Ok(TlsAcceptorHandle {
            config: config.clone(),
            current: Arc::new(RwLock::new(acceptor)),
        })
    }

    pub fn current(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the certificate files; on error the old certificate stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let acceptor = build_acceptor(&self.config)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(())
    }
}

fn build_acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs = read_certs(&config.cert)?;
    let key = read_key(&config.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // rustls speaks only TLS 1.2 and 1.3: the 1.2 minimum holds by design.
    let server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read tls.cert {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls.cert {} is not PEM", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "tls.cert {} holds no certificate",
        path.display()
    );
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<rustls::pki_types::PrivateKeyDer<'static>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read tls.key {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("tls.key {} is not PEM", path.display()))?
        .with_context(|| format!("tls.key {} holds no private key", path.display()))
}

fn generate_self_signed(config: &TlsConfig, hostname: &str) -> anyhow::Result<()> {
    let names = vec![
        hostname.to_string(),
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)?;
    for path in [&config.cert, &config.key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&config.cert, generated.cert.pem())
        .with_context(|| format!("cannot write {}", config.cert.display()))?;
    let mut key = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&config.key)
            .with_context(|| format!("cannot write {}", config.key.display()))?
    };
    key.write_all(generated.key_pair.serialize_pem().as_bytes())?;
    tracing::warn!(
        cert = %config.cert.display(),
        "generated a self-signed TLS certificate (fine for development, not for production)"
    );
    Ok(())
}
