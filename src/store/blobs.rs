//! Content-addressed blobs: `blobs/<first two hex digits>/<sha256>`.
//!
//! A blob is written to a temporary file, fsynced, renamed into place and
//! its directory fsynced, so a crash leaves either the whole blob or none
//! (a stray temporary file at worst). Writing the same content twice is a
//! no-op, which makes storing a redelivered message idempotent.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

pub struct Blobs {
    dir: PathBuf,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Blobs {
    pub fn open(dir: PathBuf) -> anyhow::Result<Blobs> {
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Blobs { dir })
    }

    fn path(&self, sha: &str) -> PathBuf {
        self.dir.join(&sha[..2]).join(sha)
    }

    /// Stores `bytes` durably and returns their sha256 (hex).
    pub fn put(&self, bytes: &[u8]) -> anyhow::Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.path(&sha);
        if path.exists() {
            return Ok(sha);
        }
        let shard = path.parent().context("blob path without a parent")?;
        fs::create_dir_all(shard)?;
        let tmp = shard.join(format!(".tmp-{sha}-{}", uuid::Uuid::new_v4()));
        let written = (|| -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(shard)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing blob {}", path.display()));
        }
        Ok(sha)
    }

    /// The blob's bytes, or None when no such blob exists.
    pub fn get(&self, sha: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if !is_sha256_hex(sha) {
            return Ok(None);
        }
        match fs::read(self.path(sha)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading blob {sha}")),
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_content_addressed_and_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path().join("blobs")).unwrap();
        let sha = blobs.put(b"hello").unwrap();
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(blobs.put(b"hello").unwrap(), sha);
        assert_eq!(blobs.get(&sha).unwrap().unwrap(), b"hello");
        assert!(blobs.get(&"0".repeat(64)).unwrap().is_none());
        assert!(blobs.get("../../etc/passwd").unwrap().is_none());
        let shard = dir.path().join("blobs").join(&sha[..2]);
        let names: Vec<_> = fs::read_dir(shard).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary files are left behind");
    }
}
