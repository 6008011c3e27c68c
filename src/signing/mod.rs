//! DKIM signing: the only module that opens DKIM private keys.

pub mod keys;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use mail_auth::common::crypto::{
    DkimKey as SigningKeyPair, Ed25519Key, RsaKey, Sha256, SigningKey,
};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::control::seal::Sealer;
use crate::control::{Control, Domain, KeyType};
use crate::proto::headers::HeaderBlock;

/// Signed when present (SES's list plus the threading headers).
const SIGNED_HEADERS: [&str; 13] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Reply-To",
    "In-Reply-To",
    "References",
    "Sender",
];

/// A parsed private key shared between messages (parsing RSA keys is not
/// free, and keys never change once created).
#[derive(Clone)]
struct SharedKey(Arc<SigningKeyPair>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

pub struct Signer {
    control: Arc<Control>,
    sealer: Sealer,
    keys: Mutex<HashMap<(String, String), SharedKey>>,
}

impl Signer {
    pub fn new(control: Arc<Control>) -> anyhow::Result<Signer> {
        let sealer = Sealer::load(control.data_dir())?;
        Ok(Signer {
            control,
            sealer,
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// `DKIM-Signature` fields (RSA first, then Ed25519) for `message`,
    /// signed with every active key of `domain`, ready to prepend.
    pub fn sign(&self, domain: &Domain, message: &[u8]) -> anyhow::Result<String> {
        let headers = HeaderBlock::parse(message);
        // Present fields only, and From once more: an added From breaks the
        // signature (over-signing, RFC 6376 8.15).
        let mut names: Vec<&str> = SIGNED_HEADERS
            .into_iter()
            .filter(|name| headers.count(name) > 0)
            .collect();
        names.push("From");
        let mut active: Vec<_> = domain.active_keys().collect();
        active.sort_by_key(|k| k.key_type == KeyType::Ed25519);
        let mut out = String::new();
        for key in active {
            let signer = DkimSigner::from_key(self.key(&domain.domain, &key.selector)?)
                .domain(domain.domain.clone())
                .selector(key.selector.clone())
                .headers(names.iter().copied())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed);
            let signature = signer
                .sign(message)
                .map_err(|e| anyhow::anyhow!("DKIM signing with {}: {e}", key.selector))?;
            out.push_str(&signature.to_header());
        }
        Ok(out)
    }

    fn key(&self, domain: &str, selector: &str) -> anyhow::Result<SharedKey> {
        let id = (domain.to_string(), selector.to_string());
        if let Some(key) = self.keys.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(key.clone());
        }
        let sealed = self.control.sealed_dkim_key(domain, selector)?;
        let der = self.sealer.open(&sealed).context("opening a DKIM key")?;
        let pair = if let Ok(ed) = Ed25519Key::from_pkcs8_der(&der) {
            SigningKeyPair::Ed25519(ed)
        } else {
            let rsa =
                RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)))
                    .map_err(|e| anyhow::anyhow!("DKIM key {selector}: {e}"))?;
            SigningKeyPair::Rsa(rsa)
        };
        let key = SharedKey(Arc::new(pair));
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, key.clone());
        Ok(key)
    }
}
