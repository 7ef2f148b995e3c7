//! What every webhook receiver checks before it believes a delivery: an
//! HMAC-SHA256 signature in the `sha256=<hex>` form (GitHub's
//! `X-Hub-Signature-256`, and the form custom senders are told to use), or a
//! bearer token; and a bounded set of ids already seen, to drop a replayed
//! or redelivered request before it costs anything.
//!
//! Comparisons are constant-time. A seen-set only suppresses replays and
//! retries of a delivery; whether an action runs twice is decided by the
//! store's dedup claims, never by this set (it forgets, and it is per process).
//!
//! ```
//! use youops_core::frontend::webhook::{sign_sha256, verify_sha256, SignatureError};
//!
//! let sig = sign_sha256(b"secret", b"{}");
//! assert!(sig.starts_with("sha256="));
//! assert_eq!(verify_sha256(b"secret", b"{}", Some(&sig)), Ok(()));
//! assert_eq!(verify_sha256(b"other", b"{}", Some(&sig)), Err(SignatureError::Mismatch));
//! assert_eq!(verify_sha256(b"secret", b"{}", None), Err(SignatureError::Missing));
//! ```

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature was sent.
    #[error("no signature was sent")]
    Missing,
    /// Not `sha256=<64 hex digits>`.
    #[error("the signature is not of the form sha256=<hex>")]
    Malformed,
    /// The HMAC does not match the body.
    #[error("the signature does not match the body")]
    Mismatch,
}

/// `sha256=<hex>` of `body` under `secret`: what a sender puts in the header.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, body)))
}

/// Check a `sha256=<hex>` signature header value against the raw body, in
/// constant time. Surrounding whitespace is ignored.
pub fn verify_sha256(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let given = header
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|g| g.len() == 32)
        .ok_or(SignatureError::Malformed)?;
    if bool::from(mac(secret, body).as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn mac(secret: &[u8], body: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key size");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Whether an `Authorization` header value is `Bearer <token>` (the scheme
/// in any case) for exactly `token`. The digests of both are compared in
/// constant time, so neither the token nor its length leaks through timing.
pub fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    let Some(value) = authorization.map(str::trim) else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let a = Sha256::digest(given.trim().as_bytes());
    let b = Sha256::digest(token.as_bytes());
    a.ct_eq(&b).into()
}

/// A set that forgets its oldest entries past a capacity: delivery ids,
/// Slack event ids, signatures already answered.
#[derive(Debug, Clone)]
pub struct SeenSet<T: Hash + Eq + Clone> {
    set: HashSet<T>,
    order: VecDeque<T>,
    cap: usize,
}

impl<T: Hash + Eq + Clone> SeenSet<T> {
    /// An empty set that keeps at most `cap` entries (at least one).
    pub fn new(cap: usize) -> Self {
        SeenSet {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Insert; `false` if it was already there.
    pub fn insert(&mut self, v: T) -> bool {
        if !self.set.insert(v.clone()) {
            return false;
        }
        self.order.push_back(v);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Whether it is there.
    pub fn contains(&self, v: &T) -> bool {
        self.set.contains(v)
    }

    /// Forget one entry (a delivery that failed and may be retried).
    pub fn remove(&mut self, v: &T) {
        if self.set.remove(v) {
            self.order.retain(|x| x != v);
        }
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_documented_signature_verifies() {
        // The example from GitHub's "Validating webhook deliveries".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            sign_sha256(b"It's a Secret to Everybody", b"Hello, World!"),
            sig
        );
        assert_eq!(
            verify_sha256(b"It's a Secret to Everybody", b"Hello, World!", Some(sig)),
            Ok(())
        );
        assert_eq!(
            verify_sha256(b"It's a Secret to Everybody", b"Hello, World?", Some(sig)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_signatures_are_told_apart_from_wrong_ones() {
        for bad in ["sha256=zz", "md5=00", "sha256=00", "", "sha256="] {
            assert_eq!(
                verify_sha256(b"k", b"body", Some(bad)),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        let good = sign_sha256(b"k", b"body");
        assert_eq!(
            verify_sha256(b"k", b"body", Some(&format!(" {good}\n"))),
            Ok(())
        );
        let mut flipped = good.into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            verify_sha256(b"k", b"body", Some(&flipped)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn bearer_tokens_match_exactly() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(Some("bearer s3cret "), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cret2"), "s3cret"));
        assert!(!bearer_matches(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }

    #[test]
    fn seen_sets_forget_the_oldest_past_their_capacity() {
        let mut s = SeenSet::new(3);
        for i in 0..3 {
            assert!(s.insert(i));
        }
        assert!(!s.insert(1));
        assert!(s.insert(3));
        assert!(!s.contains(&0), "the oldest went");
        assert!(s.contains(&1) && s.contains(&3));
        assert_eq!(s.len(), 3);
        s.remove(&1);
        assert!(!s.contains(&1));
        assert!(s.insert(1), "a removed id may come again");
        assert_eq!(s.len(), 3);
    }
}
