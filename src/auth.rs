//! SMTP credential checks: argon2 verification, a cache of successful
//! verifications, and throttling of failures per IP and per username.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::control::Control;

/// Verifies `password` against a PHC-format argon2 hash.
pub fn verify_hash(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated as this tenant.
    Success { tenant: String },
    /// Wrong credentials; answer after `delay`.
    Invalid { delay: Duration },
    /// Too many recent failures from this IP or for this username.
    Throttled,
}

struct CachedSuccess {
    digest: [u8; 32],
    tenant: String,
    expires: Instant,
}

pub struct Authenticator {
    control: Arc<Control>,
    config: AuthConfig,
    /// Static credentials are honoured only when the config allows them.
    allow_static: bool,
    cache: Mutex<HashMap<String, CachedSuccess>>,
    failures: Mutex<HashMap<FailureKey, Vec<Instant>>>,
}

#[derive(Hash, PartialEq, Eq, Clone)]
enum FailureKey {
    Ip(IpAddr),
    User(String),
}

impl Authenticator {
    pub fn new(control: Arc<Control>, config: AuthConfig, allow_static: bool) -> Self {
        Authenticator {
            control,
            config,
            allow_static,
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub async fn authenticate(&self, ip: IpAddr, username: &str, password: &str) -> AuthOutcome {
        let keys = [FailureKey::Ip(ip), FailureKey::User(username.to_string())];
        if keys
            .iter()
            .any(|k| self.recent_failures(k) >= self.config.max_failures)
        {
            return AuthOutcome::Throttled;
        }
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        if let Some(tenant) = self.cached(username, &digest) {
            return AuthOutcome::Success { tenant };
        }
        match self.verify(username, password).await {
            Some(tenant) => {
                self.remember(username, digest, &tenant);
                AuthOutcome::Success { tenant }
            }
            None => {
                let count = keys
                    .iter()
                    .map(|k| self.record_failure(k))
                    .max()
                    .unwrap_or(1);
                if count >= self.config.max_failures {
                    return AuthOutcome::Throttled;
                }
                let factor = count.min(5) as u64;
                AuthOutcome::Invalid {
                    delay: Duration::from_millis(self.config.failure_delay_ms * factor),
                }
            }
        }
    }

    async fn verify(&self, username: &str, password: &str) -> Option<String> {
        let stored = self.control.credential(username).ok().flatten();
        let allow_static = self.allow_static;
        let password = password.to_string();
        // argon2 is deliberately slow: keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            let stored = stored?;
            if stored.is_static && !allow_static {
                return None;
            }
            verify_hash(&stored.password_hash, &password).then_some(stored.tenant)
        })
        .await
        .ok()
        .flatten()
    }

    fn cached(&self, username: &str, digest: &[u8; 32]) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(username)
            .filter(|c| c.expires > Instant::now() && &c.digest == digest)
            .map(|c| c.tenant.clone())
    }

    fn remember(&self, username: &str, digest: [u8; 32], tenant: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        cache.retain(|_, c| c.expires > now);
        cache.insert(
            username.to_string(),
            CachedSuccess {
                digest,
                tenant: tenant.to_string(),
                expires: now + Duration::from_secs(self.config.cache_ttl_secs),
            },
        );
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.config.failure_window_secs)
    }

    fn recent_failures(&self, key: &FailureKey) -> u32 {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let cutoff = Instant::now().checked_sub(self.window());
        failures.get(key).map_or(0, |times| {
            times
                .iter()
                .filter(|t| cutoff.is_none_or(|c| **t > c))
                .count() as u32
        })
    }

    fn record_failure(&self, key: &FailureKey) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let cutoff = now.checked_sub(self.window());
        // Bound memory under a spray of usernames: forget quiet keys.
        if failures.len() > 100_000 {
            failures.retain(|_, times| times.iter().any(|t| cutoff.is_none_or(|c| *t > c)));
        }
        let times = failures.entry(key.clone()).or_default();
        times.retain(|t| cutoff.is_none_or(|c| *t > c));
        times.push(now);
        times.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(max_failures: u32) -> (tempfile::TempDir, Authenticator, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let control = Arc::new(Control::open(dir.path()).unwrap());
        control.create_tenant("t").unwrap();
        let cred = control.create_credential("t", "us-east-1").unwrap();
        let config = AuthConfig {
            failure_delay_ms: 1,
            max_failures,
            ..AuthConfig::default()
        };
        let auth = Authenticator::new(control, config, false);
        (dir, auth, cred.smtp_username, cred.smtp_password)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn good_password_authenticates_and_is_cached() {
        let (_dir, auth, user, pass) = setup(3);
        let ok = AuthOutcome::Success { tenant: "t".into() };
        assert_eq!(auth.authenticate(IP, &user, &pass).await, ok);
        assert!(
            auth.cached(&user, &Sha256::digest(pass.as_bytes()).into())
                .is_some()
        );
        assert_eq!(auth.authenticate(IP, &user, &pass).await, ok);
        assert!(matches!(
            auth.authenticate(IP, &user, "wrong").await,
            AuthOutcome::Invalid { .. }
        ));
    }

    #[tokio::test]
    async fn repeated_failures_are_throttled_even_with_the_right_password() {
        let (_dir, auth, user, pass) = setup(3);
        assert!(matches!(
            auth.authenticate(IP, &user, "x").await,
            AuthOutcome::Invalid { .. }
        ));
        assert!(matches!(
            auth.authenticate(IP, &user, "y").await,
            AuthOutcome::Invalid { .. }
        ));
        assert_eq!(
            auth.authenticate(IP, &user, "z").await,
            AuthOutcome::Throttled
        );
        assert_eq!(
            auth.authenticate(IP, &user, &pass).await,
            AuthOutcome::Throttled
        );
    }

    #[tokio::test]
    async fn static_credentials_need_permission() {
        let (_dir, auth, _, _) = setup(10);
        auth.control
            .ensure_static_credential("t", "dev", "dev")
            .unwrap();
        assert!(matches!(
            auth.authenticate(IP, "dev", "dev").await,
            AuthOutcome::Invalid { .. }
        ));
    }
}
