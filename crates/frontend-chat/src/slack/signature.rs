//! Slack request signatures (v0) and form bodies.
//!
//! Slack signs every request it sends: `X-Slack-Signature: v0=<hex HMAC-SHA256 of
//! "v0:{X-Slack-Request-Timestamp}:{raw body}" keyed with the signing secret>`.
//! A request is accepted only if the signature matches (compared in constant time)
//! and the timestamp is within five minutes of now, so a captured request cannot be
//! replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a request timestamp may be from now, in seconds.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A header is missing.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// The timestamp is not an integer.
    #[error("malformed X-Slack-Request-Timestamp")]
    BadTimestamp,
    /// The timestamp is outside the 5-minute window.
    #[error("stale request: timestamp is {0}s away from now")]
    Stale(i64),
    /// The signature does not have the `v0=<64 hex>` form.
    #[error("malformed X-Slack-Signature")]
    Malformed,
    /// The signature does not match.
    #[error("signature mismatch")]
    Mismatch,
}

/// Compute the `v0=...` signature of a body (what Slack sends; used by tests and fakes).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verify a request given its two headers (if present), its raw body and the
/// current unix time.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), SignatureError> {
    let ts = timestamp.ok_or(SignatureError::MissingHeader("X-Slack-Request-Timestamp"))?;
    let sig = signature.ok_or(SignatureError::MissingHeader("X-Slack-Signature"))?;
    let t: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let skew = now_unix.saturating_sub(t);
    if skew.saturating_abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Stale(skew));
    }
    let hex_part = sig.strip_prefix("v0=").ok_or(SignatureError::Malformed)?;
    let given = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Parse an `application/x-www-form-urlencoded` body into (name, value) pairs.
/// Malformed escapes are kept literally; never panics.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

fn decode_component(s: &str) -> String {
    let plus = s.replace('+', " ");
    match urlencoding::decode_binary(plus.as_bytes()) {
        std::borrow::Cow::Borrowed(b) => String::from_utf8_lossy(b).into_owned(),
        std::borrow::Cow::Owned(b) => String::from_utf8_lossy(&b).into_owned(),
    }
}

/// Encode pairs as a form body (as Slack does: spaces as `+`).
pub fn encode_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                urlencoding::encode(k).replace("%20", "+"),
                urlencoding::encode(v).replace("%20", "+")
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The first value of field `name`.
pub fn form_field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The worked example of Slack's "Verifying requests from Slack" guide.
    #[test]
    fn slack_documentation_example_verifies() {
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let ts = "1531420618";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(sign(secret, ts, body), sig);
        assert_eq!(
            verify(secret, Some(ts), Some(sig), body, 1531420618 + 10),
            Ok(())
        );
        assert_eq!(
            verify(secret, Some(ts), Some(sig), body, 1531420618 + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify("other", Some(ts), Some(sig), body, 1531420618),
            Err(SignatureError::Mismatch)
        );
        let form = parse_form(body);
        assert_eq!(form_field(&form, "command"), Some("/webhook-collect"));
        assert_eq!(form_field(&form, "text"), Some(""));
        assert!(form_field(&form, "response_url")
            .unwrap()
            .starts_with("https://hooks.slack.com/commands/"));
    }

    #[test]
    fn header_problems_are_named() {
        assert_eq!(
            verify("s", None, Some("v0=00"), b"", 0),
            Err(SignatureError::MissingHeader("X-Slack-Request-Timestamp"))
        );
        assert_eq!(
            verify("s", Some("x"), Some("v0=00"), b"", 0),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify("s", Some("0"), Some("v1=00"), b"", 0),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("s", Some("0"), Some("v0=zz"), b"", 0),
            Err(SignatureError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn verify_never_panics(secret in ".*", ts in ".*", sig in ".*", body in proptest::collection::vec(any::<u8>(), 0..300), now in any::<i64>()) {
            let _ = verify(&secret, Some(&ts), Some(&sig), &body, now);
        }

        #[test]
        fn a_correct_signature_verifies_and_any_bit_flip_fails(secret in "[ -~]{1,40}", body in proptest::collection::vec(any::<u8>(), 0..300), t in 0i64..4_000_000_000, flip in 0usize..64) {
            let ts = t.to_string();
            let sig = sign(&secret, &ts, &body);
            prop_assert_eq!(verify(&secret, Some(&ts), Some(&sig), &body, t), Ok(()));
            let mut bad: Vec<char> = sig.chars().collect();
            let i = 3 + flip;
            bad[i] = if bad[i] == '0' { '1' } else { '0' };
            let bad: String = bad.into_iter().collect();
            prop_assert_eq!(verify(&secret, Some(&ts), Some(&bad), &body, t), Err(SignatureError::Mismatch));
        }

        #[test]
        fn form_parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_form(&body);
        }

        #[test]
        fn form_round_trips(pairs in proptest::collection::vec(("[a-z_]{1,10}", "\\PC{0,30}"), 0..6)) {
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let parsed = parse_form(encode_form(&refs).as_bytes());
            prop_assert_eq!(parsed, pairs);
        }
    }
}
