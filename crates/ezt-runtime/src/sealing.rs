//! Sealing webhook secrets at rest.
//!
//! The server needs tenants' webhook secrets in clear to sign deliveries, so they cannot be
//! stored as digests like API keys. They are sealed with ChaCha20-Poly1305 under a server key
//! instead: a copied database file alone reveals nothing. The tenant id is authenticated data,
//! so a sealed secret moved to another tenant's row fails to open.
//!
//! The key comes from the configuration (`secret_key`, env `EZTHROTTLE_SECRET_KEY`, base64 of 32
//! bytes) or from `<data_dir>/secret.key`, created with mode 0600 on first start.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ezt_core::TenantId;

const NONCE_LEN: usize = 12;
const KEY_FILE: &str = "secret.key";

/// Why sealing could not be set up or a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The configured or stored key is not base64 of 32 bytes.
    #[error("the server secret key must be base64 of 32 bytes ({0})")]
    BadKey(String),
    /// The key file could not be read or created.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// File.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The value was sealed under another key (or for another tenant), or is damaged.
    #[error("a sealed secret does not open with this server's key")]
    Open,
}

/// Seals and opens secrets with the server key.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], SealError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| SealError::BadKey(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| SealError::BadKey(format!("{} bytes", b.len())))
}

impl Sealer {
    /// A sealer over a raw key.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// The configured key, else the data dir's key file (created with mode 0600 if absent).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<Self, SealError> {
        if let Some(k) = configured {
            return Ok(Self::new(decode_key(k)?));
        }
        let path = data_dir.join(KEY_FILE);
        let err = |source| SealError::KeyFile {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(Self::new(decode_key(&text)?)),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
            Err(_) => {}
        }
        std::fs::create_dir_all(data_dir).map_err(err)?;
        let key: [u8; 32] = rand::random();
        let text = base64::engine::general_purpose::STANDARD.encode(key);
        write_new_private(&path, &text).map_err(err)?;
        tracing::info!(path = %path.display(), "created the key that seals webhook secrets; back it up with the database");
        Ok(Self::new(key))
    }

    /// Seals `plain` for `tenant`: a random nonce followed by the ciphertext and tag.
    pub fn seal(&self, tenant: TenantId, plain: &str) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = tenant.0.to_be_bytes();
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message under 256 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what `seal` produced for the same tenant.
    pub fn open(&self, tenant: TenantId, sealed: &[u8]) -> Result<String, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let aad = tenant.0.to_be_bytes();
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain).map_err(|_| SealError::Open)
    }
}

/// Creates `path` exclusively with owner-only permissions and writes `text` to it, synced.
fn write_new_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_bound_to_key_and_tenant() {
        let s = Sealer::new([7; 32]);
        let sealed = s.seal(TenantId(1), "whsec_abc");
        assert!(
            !sealed.windows(9).any(|w| w == b"whsec_abc"),
            "not in clear"
        );
        assert_eq!(s.open(TenantId(1), &sealed).unwrap(), "whsec_abc");
        assert!(
            matches!(s.open(TenantId(2), &sealed), Err(SealError::Open)),
            "other tenant"
        );
        assert!(matches!(
            Sealer::new([8; 32]).open(TenantId(1), &sealed),
            Err(SealError::Open)
        ));
        assert_ne!(
            s.seal(TenantId(1), "x"),
            s.seal(TenantId(1), "x"),
            "fresh nonce"
        );
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Sealer::load(None, dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = a.seal(TenantId(1), "s");
        let b = Sealer::load(None, dir.path()).unwrap();
        assert_eq!(
            b.open(TenantId(1), &sealed).unwrap(),
            "s",
            "same key on restart"
        );
        assert!(matches!(
            Sealer::load(Some("short"), dir.path()),
            Err(SealError::BadKey(_))
        ));
    }
}
