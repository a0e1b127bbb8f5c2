//! Signing as Hume signs webhooks: `X-Hume-AI-Webhook-Signature` is the lowercase hex
//! HMAC-SHA256, keyed with the UTF-8 signing key, of the raw body, `"."`, and the
//! `X-Hume-AI-Webhook-Timestamp` value (Unix seconds, decimal).

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Header carrying the Unix time of the attempt, in seconds.
pub const TIMESTAMP_HEADER: &str = "X-Hume-AI-Webhook-Timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Hume-AI-Webhook-Signature";
/// Colloquy's own header: the delivery id, the same at every attempt.
pub const DELIVERY_HEADER: &str = "X-Colloquy-Delivery";

/// The signature of `body` sent at `timestamp` (Unix seconds).
pub fn sign(key: &str, body: &[u8], timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A new signing key: 32 random bytes, hex (64 characters).
pub fn new_signing_key() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_lowercase_hex_hmac_of_body_dot_timestamp() {
        // Computed independently: printf '{"a":1}.1700000000' | openssl dgst -sha256 -hmac key
        let sig = sign("key", br#"{"a":1}"#, "1700000000");
        assert_eq!(
            sig,
            "a43a8e0676bbaffdd57ad86bed40868c4af65d4b586840f15a7c4cfccefc4f11"
        );
        assert_eq!(sig, sig.to_lowercase());
        assert_ne!(sig, sign("key", br#"{"a":1}"#, "1700000001"));
        assert_ne!(sig, sign("other", br#"{"a":1}"#, "1700000000"));
        assert_eq!(new_signing_key().len(), 64);
    }
}
