//! API keys: generation, hashing, creation, listing and revocation.
//!
//! Keys are random alphanumeric strings (48 characters; secret keys 64), shown once and
//! stored only as SHA-256 hashes. They carry 286 bits of entropy, so a fast hash is enough.

use crate::clock::now_ms;
use colloquy_storage::{ApiKeyRecord, NewAccount, NewApiKey, Store, StoreError};
use rand::distributions::{Alphanumeric, DistString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Length of an API key.
pub const API_KEY_LEN: usize = 48;
/// Length of a secret key.
pub const SECRET_KEY_LEN: usize = 64;
/// Characters of a key kept in clear as its prefix.
pub const PREFIX_LEN: usize = 8;

/// SHA-256 of a credential, hex-encoded.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random alphanumeric string.
pub fn random_token(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

/// What `colloquy keys create` prints: the credentials, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    /// The new account's id.
    pub user_id: Uuid,
    /// The API key.
    pub api_key: String,
    /// The secret key (for the client-credentials token grant).
    pub secret_key: String,
    /// The account's webhook signing key (new accounts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_signing_key: Option<String>,
}

/// Creates an account with one fresh key.
pub async fn create_account_key(
    store: &dyn Store,
    name: Option<String>,
    data_retention: bool,
) -> Result<CreatedKey, StoreError> {
    let user_id = Uuid::new_v4();
    let now = now_ms();
    let (key, created) = new_key(user_id, name.clone(), now);
    store
        .create_account(
            &NewAccount {
                id: user_id,
                name,
                data_retention,
                created_at: now,
            },
            &key,
        )
        .await?;
    let signing = crate::webhooks::signing::new_signing_key();
    store.set_webhook_signing_key(user_id, &signing).await?;
    Ok(CreatedKey {
        webhook_signing_key: Some(signing),
        ..created
    })
}

/// Adds a fresh key to an existing account.
pub async fn add_key(
    store: &dyn Store,
    user_id: Uuid,
    name: Option<String>,
) -> Result<CreatedKey, StoreError> {
    let (key, created) = new_key(user_id, name, now_ms());
    store.add_api_key(&key).await?;
    Ok(created)
}

fn new_key(user_id: Uuid, name: Option<String>, now: i64) -> (NewApiKey, CreatedKey) {
    let api_key = random_token(API_KEY_LEN);
    let secret_key = random_token(SECRET_KEY_LEN);
    let key = NewApiKey {
        id: Uuid::new_v4(),
        user_id,
        name,
        prefix: api_key[..PREFIX_LEN].to_string(),
        key_hash: hash_secret(&api_key),
        secret_hash: hash_secret(&secret_key),
        created_at: now,
    };
    (
        key,
        CreatedKey {
            user_id,
            api_key,
            secret_key,
            webhook_signing_key: None,
        },
    )
}

/// Why a key could not be revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// Nothing matched.
    #[error("no API key matches `{0}`; `colloquy keys list` shows the prefixes")]
    NoMatch(String),
    /// The prefix is too short to be safe.
    #[error("`{0}` is too short: give the whole key or at least 4 characters of its prefix")]
    TooShort(String),
    /// Several keys share the prefix.
    #[error("`{given}` matches {count} keys ({prefixes}); give more characters or the whole key")]
    Ambiguous {
        /// What was given.
        given: String,
        /// How many matched.
        count: usize,
        /// Their prefixes.
        prefixes: String,
    },
    /// The key was already revoked.
    #[error("the key `{0}…` is already revoked")]
    AlreadyRevoked(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Revokes the key given in full or by a unique prefix; returns the revoked key.
pub async fn revoke(store: &dyn Store, given: &str) -> Result<ApiKeyRecord, RevokeError> {
    let one = find_key(store, given).await?;
    if one.revoked_at.is_some() {
        return Err(RevokeError::AlreadyRevoked(one.prefix.clone()));
    }
    let now = now_ms();
    store.revoke_api_key(one.id, now).await?;
    Ok(ApiKeyRecord {
        revoked_at: Some(now),
        ..one
    })
}

/// The webhook signing key of the account of the key given in full or by a unique prefix
/// (created if the account has none), or a new one with `rotate`. Returns the key's record
/// and the signing key.
pub async fn signing_key(
    store: &dyn Store,
    given: &str,
    rotate: bool,
) -> Result<(ApiKeyRecord, String), RevokeError> {
    let k = find_key(store, given).await?;
    let fresh = crate::webhooks::signing::new_signing_key();
    let key = if rotate {
        store.set_webhook_signing_key(k.user_id, &fresh).await?;
        fresh
    } else {
        store
            .webhook_signing_key(k.user_id, &fresh)
            .await?
            .ok_or_else(|| RevokeError::NoMatch(given.to_string()))?
    };
    Ok((k, key))
}

/// The key given in full or by a unique prefix.
pub async fn find_key(store: &dyn Store, given: &str) -> Result<ApiKeyRecord, RevokeError> {
    let keys = store.list_api_keys().await?;
    let matches: Vec<&ApiKeyRecord> = match store.principal_by_key_hash(&hash_secret(given)).await?
    {
        // The whole live key was given.
        Some(p) => keys.iter().filter(|k| k.id == p.api_key_id).collect(),
        None => {
            if given.len() < 4 {
                return Err(RevokeError::TooShort(given.to_string()));
            }
            let prefix: String = given.chars().take(PREFIX_LEN).collect();
            keys.iter()
                .filter(|k| k.prefix.starts_with(&prefix))
                .collect()
        }
    };
    match matches.as_slice() {
        [] => Err(RevokeError::NoMatch(given.to_string())),
        [one] => Ok((*one).clone()),
        many => Err(RevokeError::Ambiguous {
            given: given.to_string(),
            count: many.len(),
            prefixes: many
                .iter()
                .map(|k| k.prefix.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        let k = random_token(API_KEY_LEN);
        assert_eq!(k.len(), 48);
        assert!(k.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(k, random_token(API_KEY_LEN));
        assert_eq!(hash_secret("abc").len(), 64);
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
