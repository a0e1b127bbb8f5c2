//! Signed download URLs for reconstructed audio in the local object store.
//!
//! A URL is `<base>/v0/evi/audio/<object key>?expires=<epoch ms>&signature=<hex>` where the
//! signature is HMAC-SHA256 over `GET\n<path>\n<expires>` with a server secret. (With S3,
//! the store's own presigned URLs are used instead.)

use crate::config::StorageSettings;
use anyhow::Context;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::path::Path;

/// How long a minted URL stays valid.
pub const URL_LIFETIME_MS: i64 = 3_600_000;
/// Route prefix of local downloads.
pub const DOWNLOAD_PREFIX: &str = "/v0/evi/audio/";

/// Why a signed URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Past its expiry.
    #[error("this download link has expired; request the audio again for a fresh link")]
    Expired,
    /// Missing, malformed, or not made by this server for this path.
    #[error("this download link is not valid; request the audio again for a fresh link")]
    Invalid,
}

/// Signs and verifies download URLs with the server secret.
#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

impl UrlSigner {
    /// A signer with an explicit secret.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
        }
    }

    /// Uses `storage.signing_secret`, else `<data_dir>/signing.key` (created on first start).
    pub fn load_or_create(settings: &StorageSettings, data_dir: &Path) -> anyhow::Result<Self> {
        if let Some(secret) = &settings.signing_secret {
            return Ok(Self::new(secret.as_bytes()));
        }
        let path = data_dir.join("signing.key");
        match std::fs::read_to_string(&path) {
            Ok(hex_key) => {
                let key = hex::decode(hex_key.trim())
                    .with_context(|| format!("{} is not a hex key", path.display()))?;
                Ok(Self { key })
            }
            Err(_) => {
                let mut key = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                std::fs::write(&path, hex::encode(&key))
                    .with_context(|| format!("could not write {}", path.display()))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
                }
                Ok(Self { key })
            }
        }
    }

    fn mac(&self, path: &str, expires_ms: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(format!("GET\n{path}\n{expires_ms}").as_bytes());
        mac
    }

    /// The hex signature of `path` valid until `expires_ms`.
    pub fn sign(&self, path: &str, expires_ms: i64) -> String {
        hex::encode(self.mac(path, expires_ms).finalize().into_bytes())
    }

    /// A full URL for the object key under `base`.
    pub fn url(&self, base: &str, key: &str, expires_ms: i64) -> String {
        let path = format!("{DOWNLOAD_PREFIX}{key}");
        let sig = self.sign(&path, expires_ms);
        format!("{base}{path}?expires={expires_ms}&signature={sig}")
    }

    /// Checks a request's path, `expires` and `signature` at time `now_ms`.
    pub fn verify(
        &self,
        path: &str,
        expires: Option<&str>,
        signature: Option<&str>,
        now_ms: i64,
    ) -> Result<(), SignatureError> {
        let expires_ms: i64 = expires
            .and_then(|e| e.parse().ok())
            .ok_or(SignatureError::Invalid)?;
        let sig = signature
            .and_then(|s| hex::decode(s).ok())
            .ok_or(SignatureError::Invalid)?;
        self.mac(path, expires_ms)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::Invalid)?;
        if expires_ms <= now_ms {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_path_and_expiry() {
        let s = UrlSigner::new(b"secret");
        let p = "/v0/evi/audio/u/c/reconstructed_audio.mp4";
        let sig = s.sign(p, 2_000);
        assert_eq!(s.verify(p, Some("2000"), Some(&sig), 1_000), Ok(()));
        assert_eq!(
            s.verify(p, Some("2000"), Some(&sig), 2_000),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            s.verify(p, Some("2001"), Some(&sig), 1_000),
            Err(SignatureError::Invalid),
            "a stretched expiry breaks the signature"
        );
        assert_eq!(
            s.verify(
                "/v0/evi/audio/u/other/reconstructed_audio.mp4",
                Some("2000"),
                Some(&sig),
                1_000
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            UrlSigner::new(b"other").verify(p, Some("2000"), Some(&sig), 1_000),
            Err(SignatureError::Invalid),
            "another server's secret"
        );
        assert_eq!(
            s.verify(p, None, Some(&sig), 1_000),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            s.verify(p, Some("2000"), Some("zz"), 1_000),
            Err(SignatureError::Invalid)
        );
    }
}
