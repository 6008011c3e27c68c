//! SMTP credentials in SES's shape: an access key id as the username and a
//! password derived from the secret access key (SES-PARITY.md), so an app
//! configured for SES works against sesame unchanged.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::Rng;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::Sha256;

use super::Control;
use super::seal::Sealer;
use crate::types::unix_now;

/// What `credential create` prints, once. Only hashes and sealed values are
/// kept.
#[derive(Debug, Serialize)]
pub struct NewCredential {
    pub tenant: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub smtp_username: String,
    pub smtp_password: String,
}

/// A credential as stored, enough to verify a password.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    pub tenant: String,
    pub password_hash: String,
    pub is_static: bool,
}

/// SES's SMTP password derivation (SigV4-style HMAC chain, version byte 4).
pub fn ses_smtp_password(secret_access_key: &str, region: &str) -> String {
    fn sign(key: &[u8], msg: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(msg.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
    let mut key = sign(format!("AWS4{secret_access_key}").as_bytes(), "11111111");
    for msg in [region, "ses", "aws4_request", "SendRawEmail"] {
        key = sign(&key, msg);
    }
    BASE64.encode([&[4u8][..], &key].concat())
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters cannot fail")
        .to_string()
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

impl Control {
    pub fn create_credential(&self, tenant: &str, region: &str) -> anyhow::Result<NewCredential> {
        self.require_tenant(tenant)?;
        let access_key_id = format!(
            "AKIA{}",
            random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
        );
        let secret_access_key = random_string(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            40,
        );
        let smtp_password = ses_smtp_password(&secret_access_key, region);
        let sealed = Sealer::load(self.data_dir())?.seal(secret_access_key.as_bytes());
        self.db().execute(
            "INSERT INTO credentials(username, tenant, password_hash, sealed_secret, is_static, created_at)
             VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            params![access_key_id, tenant, hash_password(&smtp_password), sealed, unix_now()],
        )?;
        Ok(NewCredential {
            tenant: tenant.to_string(),
            smtp_username: access_key_id.clone(),
            access_key_id,
            secret_access_key,
            smtp_password,
        })
    }

    /// Installs or refreshes a static (dev) credential.
    pub fn ensure_static_credential(
        &self,
        tenant: &str,
        username: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        if let Some(existing) = self.credential(username)?
            && existing.tenant == tenant
            && existing.is_static
            && crate::auth::verify_hash(&existing.password_hash, password)
        {
            return Ok(());
        }
        self.db().execute(
            "INSERT INTO credentials(username, tenant, password_hash, sealed_secret, is_static, created_at)
             VALUES (?1, ?2, ?3, NULL, 1, ?4)
             ON CONFLICT(username) DO UPDATE SET tenant = excluded.tenant,
                password_hash = excluded.password_hash, is_static = 1",
            params![username, tenant, hash_password(password), unix_now()],
        )?;
        Ok(())
    }

    pub fn credential(&self, username: &str) -> anyhow::Result<Option<StoredCredential>> {
        Ok(self
            .db()
            .query_row(
                "SELECT tenant, password_hash, is_static FROM credentials WHERE username = ?1",
                [username],
                |r| {
                    Ok(StoredCredential {
                        tenant: r.get(0)?,
                        password_hash: r.get(1)?,
                        is_static: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vector computed with Python's hmac module from the algorithm in
    /// SES-PARITY.md, independently of this code.
    #[test]
    fn smtp_password_matches_the_ses_derivation() {
        assert_eq!(
            ses_smtp_password("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1"),
            "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9"
        );
    }

    #[test]
    fn created_credentials_store_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::open(dir.path()).unwrap();
        control.create_tenant("t").unwrap();
        let cred = control.create_credential("t", "eu-west-1").unwrap();
        assert!(cred.access_key_id.starts_with("AKIA"));
        assert_eq!(cred.smtp_username, cred.access_key_id);
        let stored = control.credential(&cred.access_key_id).unwrap().unwrap();
        assert!(stored.password_hash.starts_with("$argon2"));
        assert!(crate::auth::verify_hash(
            &stored.password_hash,
            &cred.smtp_password
        ));
        let raw = std::fs::read(dir.path().join("control.db")).unwrap();
        let wal = std::fs::read(dir.path().join("control.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            let needle = cred.secret_access_key.as_bytes();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
    }
}
