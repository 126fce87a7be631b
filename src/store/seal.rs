//! Sealing of private keys at rest: AES-256-GCM (aws-lc-rs) under a 256-bit key kept in a file
//! of its own (`seal.key`, 0600) beside the database. A copy of the database alone reveals no
//! private key; the key file is what an operator protects (and leaves out of database backups
//! that travel).
//!
//! Every sealed value is bound to its row by the associated data (table and key), so a sealed
//! key cannot be moved to another user's row. Layout: 12-byte random nonce ‖ ciphertext ‖ tag.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use zeroize::Zeroizing;

use super::StoreError;

/// File name of the sealing key in the data directory.
pub const KEY_FILE: &str = "seal.key";
const KEY_LEN: usize = 32;

/// Seals and opens secrets with the data directory's key.
pub struct Sealer {
    key: RandomizedNonceKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sealing_error(path: &Path, reason: &str) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string()),
    }
}

impl Sealer {
    /// Load `<dir>/seal.key`, creating it (0600, random) on first start. A key file readable by
    /// others is tightened to 0600 with a warning rather than refused, so a careless copy does
    /// not take the service down, but it is said.
    pub fn load_or_create(dir: &Path) -> Result<Sealer, StoreError> {
        let path = dir.join(KEY_FILE);
        let bytes: Zeroizing<Vec<u8>> = match fs::read(&path) {
            Ok(bytes) => {
                let mode = fs::metadata(&path)
                    .map_err(io_err(&path))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "sealing key was readable by others; setting 0600");
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                        .map_err(io_err(&path))?;
                }
                Zeroizing::new(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new(vec![0u8; KEY_LEN]);
                aws_lc_rs::rand::fill(&mut key[..])
                    .map_err(|_| sealing_error(&path, "no randomness for the sealing key"))?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err(&path))?;
                file.write_all(&key).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
                // Make the new directory entry durable too, or a crash could lose the key
                // while the database (synced) still holds values sealed with it.
                fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err(dir))?;
                tracing::info!(path = %path.display(), "created the sealing key for private keys at rest");
                key
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if bytes.len() != KEY_LEN {
            return Err(sealing_error(
                &path,
                "sealing key file has the wrong length",
            ));
        }
        let key = RandomizedNonceKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| sealing_error(&path, "unusable sealing key"))?;
        Ok(Sealer { key })
    }

    /// Seal `secret`, bound to `context` (what row it belongs to).
    pub fn seal(&self, context: &[u8], secret: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut buf = Zeroizing::new(secret.to_vec());
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(context), &mut *buf)
            .map_err(|_| SealError)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Open a sealed value; fails if it was sealed under another key or another context.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut buf[..])
            .map_err(|_| SealError)?;
        let len = plain.len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// A sealed value could not be opened (wrong key file, or tampered with).
#[derive(Debug, thiserror::Error)]
#[error(
    "a sealed private key cannot be opened: wrong seal.key for this database, or tampered data"
)]
pub struct SealError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_is_bound_to_context_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = sealer.seal(b"row-a", b"secret key").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(&sealer.open(b"row-a", &sealed).unwrap()[..], b"secret key");
        assert!(sealer.open(b"row-b", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[15] ^= 1;
        assert!(sealer.open(b"row-a", &tampered).is_err());
        // Reloading uses the same key; another directory's key cannot open it.
        let again = Sealer::load_or_create(dir.path()).unwrap();
        assert_eq!(&again.open(b"row-a", &sealed).unwrap()[..], b"secret key");
        let other = tempfile::tempdir().unwrap();
        let other = Sealer::load_or_create(other.path()).unwrap();
        assert!(other.open(b"row-a", &sealed).is_err());
    }
}
