//! Sealing secrets at rest with a master key (ChaCha20-Poly1305).
//!
//! The key comes from `SESAME_MASTER_KEY` (64 hex digits) or from
//! `<data_dir>/master.key`, created with mode 0600 on first use. Keeping it
//! outside the database means a copied control.db alone reveals no secret.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

pub const ENV_VAR: &str = "SESAME_MASTER_KEY";
const NONCE_LEN: usize = 12;

pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl Sealer {
    pub fn load(data_dir: &Path) -> anyhow::Result<Sealer> {
        let key = match std::env::var(ENV_VAR) {
            Ok(hex_key) => hex::decode(hex_key.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .with_context(|| format!("{ENV_VAR} must be 64 hex digits"))?,
            Err(_) => load_or_create_key_file(&data_dir.join("master.key"))?,
        };
        Ok(Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory input");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn open(&self, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            bail!("sealed value is truncated");
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| anyhow::anyhow!("sealed value does not open with this master key"))
    }
}

fn load_or_create_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Ok(bytes) = std::fs::read(path) {
        if bytes.len() != 32 {
            bail!("{} must hold exactly 32 bytes", path.display());
        }
        return Ok(bytes);
    }
    let mut key = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_0600()
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(&key)?;
    file.sync_all()?;
    Ok(key)
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_and_tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load(dir.path()).unwrap();
        let sealed = sealer.seal(b"secret");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(sealer.open(&sealed).unwrap(), b"secret");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(sealer.open(&bad).is_err());
        // The key file persists: a second load opens old values.
        let again = Sealer::load(dir.path()).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"secret");
    }
}
