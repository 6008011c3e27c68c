//! DKIM key generation: RSA (published as SubjectPublicKeyInfo, what every
//! verifier accepts) and Ed25519 (RFC 8463: the raw 32-byte key).

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::Ed25519Key;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};

use crate::control::seal::Sealer;
use crate::control::{KeyType, NewKey};

/// One key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    Rsa(usize),
    Ed25519,
}

/// Parses `rsa2048|rsa1024|ed25519|rsa2048+ed25519`.
pub fn parse_spec(spec: &str) -> anyhow::Result<Vec<KeySpec>> {
    let keys = spec
        .split('+')
        .map(|part| match part.trim() {
            "rsa2048" => Ok(KeySpec::Rsa(2048)),
            "rsa1024" => Ok(KeySpec::Rsa(1024)),
            "ed25519" => Ok(KeySpec::Ed25519),
            other => bail!(
                "unknown DKIM key type '{other}' (use rsa2048, rsa1024, ed25519 or rsa2048+ed25519)"
            ),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rsa = keys.iter().filter(|k| matches!(k, KeySpec::Rsa(_))).count();
    let ed = keys.len() - rsa;
    if rsa > 1 || ed > 1 {
        bail!("'{spec}': at most one RSA and one Ed25519 key per domain");
    }
    Ok(keys)
}

/// The key types a domain signs with now, to rotate like for like.
pub fn spec_of(types: &[(KeyType, usize)]) -> Vec<KeySpec> {
    types
        .iter()
        .map(|(t, bits)| match t {
            KeyType::Rsa => KeySpec::Rsa(*bits),
            KeyType::Ed25519 => KeySpec::Ed25519,
        })
        .collect()
}

/// Generates keys with fresh, dated selectors (`s20261126-rsa`, then
/// `s20261126-rsa-2` on a second rotation the same day).
pub fn generate(
    specs: &[KeySpec],
    taken: &[String],
    sealer: &Sealer,
    now: i64,
) -> anyhow::Result<Vec<NewKey>> {
    let date = mail_parser::DateTime::from_timestamp(now);
    let day = format!("{:04}{:02}{:02}", date.year, date.month, date.day);
    specs
        .iter()
        .map(|spec| {
            let (key_type, private, public) = match *spec {
                KeySpec::Rsa(bits) => {
                    let (private, public) = rsa_pair(bits)?;
                    (KeyType::Rsa, private, public)
                }
                KeySpec::Ed25519 => {
                    let (private, public) = ed25519_pair()?;
                    (KeyType::Ed25519, private, public)
                }
            };
            let base = format!(
                "s{day}-{}",
                if key_type == KeyType::Rsa {
                    "rsa"
                } else {
                    "ed"
                }
            );
            let selector = (1..)
                .map(|n| {
                    if n == 1 {
                        base.clone()
                    } else {
                        format!("{base}-{n}")
                    }
                })
                .find(|s| !taken.contains(s))
                .expect("an unused selector exists");
            Ok(NewKey {
                selector,
                key_type,
                public_key: BASE64.encode(public),
                sealed_private: sealer.seal(&private),
            })
        })
        .collect()
}

/// PKCS#8 private key, SubjectPublicKeyInfo public key (DER).
fn rsa_pair(bits: usize) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let private =
        rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).context("RSA key generation")?;
    let public = private.to_public_key();
    Ok((
        private
            .to_pkcs8_der()
            .context("RSA key encoding")?
            .as_bytes()
            .to_vec(),
        public
            .to_public_key_der()
            .context("RSA key encoding")?
            .as_bytes()
            .to_vec(),
    ))
}

/// PKCS#8 private key, raw 32-byte public key.
fn ed25519_pair() -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let pkcs8 =
        Ed25519Key::generate_pkcs8().map_err(|e| anyhow::anyhow!("Ed25519 key generation: {e}"))?;
    let key =
        Ed25519Key::from_pkcs8_der(&pkcs8).map_err(|e| anyhow::anyhow!("Ed25519 key: {e}"))?;
    Ok((pkcs8, key.public_key()))
}

/// RSA modulus size of a published key, for rotating like for like.
pub fn rsa_bits(public_key_b64: &str) -> usize {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    BASE64
        .decode(public_key_b64)
        .ok()
        .and_then(|der| rsa::RsaPublicKey::from_public_key_der(&der).ok())
        .map_or(2048, |k| k.size() * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse_nonsense() {
        assert_eq!(parse_spec("rsa2048").unwrap(), [KeySpec::Rsa(2048)]);
        assert_eq!(
            parse_spec("rsa2048+ed25519").unwrap(),
            [KeySpec::Rsa(2048), KeySpec::Ed25519]
        );
        assert!(parse_spec("rsa4096").is_err());
        assert!(parse_spec("ed25519+ed25519").is_err());
    }

    #[test]
    fn selectors_are_dated_and_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load(dir.path()).unwrap();
        let now = 1_795_000_000; // 2026-11-18
        let first = generate(&[KeySpec::Ed25519], &[], &sealer, now).unwrap();
        assert_eq!(first[0].selector, "s20261118-ed");
        let taken = vec![first[0].selector.clone()];
        let second = generate(&[KeySpec::Ed25519], &taken, &sealer, now).unwrap();
        assert_eq!(second[0].selector, "s20261118-ed-2");
        assert_eq!(BASE64.decode(&second[0].public_key).unwrap().len(), 32);
    }

    #[test]
    fn rsa_keys_report_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load(dir.path()).unwrap();
        let keys = generate(&[KeySpec::Rsa(1024)], &[], &sealer, 0).unwrap();
        assert_eq!(rsa_bits(&keys[0].public_key), 1024);
    }
}
