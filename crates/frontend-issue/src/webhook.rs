//! The webhook wire format: `X-Hub-Signature-256` verification and payload
//! decoding.
//!
//! GitHub signs the raw body with HMAC-SHA256 under the webhook secret and sends
//! `X-Hub-Signature-256: sha256=<hex>`. The check is constant-time (`subtle`);
//! the legacy SHA-1 `X-Hub-Signature` alone is refused.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::github::{Comment, Issue, Label, User};

/// Why a delivery's signature was refused (the 401 text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` (and maybe only the SHA-1 one).
    Missing {
        /// A SHA-1 `X-Hub-Signature` was present.
        sha1_only: bool,
    },
    /// Not `sha256=<64 hex digits>`.
    Malformed,
    /// The HMAC does not match.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Missing { sha1_only: true } => f.write_str(
                "only a SHA-1 X-Hub-Signature was sent; YouOps requires X-Hub-Signature-256 (set a webhook secret)",
            ),
            SignatureError::Missing { sha1_only: false } => {
                f.write_str("missing X-Hub-Signature-256 (set a secret on the webhook)")
            }
            SignatureError::Malformed => {
                f.write_str("X-Hub-Signature-256 is not of the form sha256=<hex>")
            }
            SignatureError::Mismatch => {
                f.write_str("X-Hub-Signature-256 does not match the body (wrong webhook secret?)")
            }
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`: what GitHub sends.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verify a delivery's signature headers against the raw body, in constant time.
pub fn verify(secret: &[u8], headers: &http::HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
    let Some(sig) = headers.get("x-hub-signature-256") else {
        return Err(SignatureError::Missing {
            sha1_only: headers.contains_key("x-hub-signature"),
        });
    };
    let sig = sig.to_str().map_err(|_| SignatureError::Malformed)?.trim();
    let hexpart = sig
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let given = hex::decode(hexpart).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key size");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The repository of a payload.
#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    /// `owner/name`.
    pub full_name: String,
}

/// `changes` of an `edited` action.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Changes {
    /// The body before the edit.
    #[serde(default)]
    pub body: Option<Changed>,
    /// The title before the edit.
    #[serde(default)]
    pub title: Option<Changed>,
}

/// One changed field.
#[derive(Debug, Clone, Deserialize)]
pub struct Changed {
    /// The old value.
    pub from: String,
}

/// An `issues` event.
#[derive(Debug, Clone, Deserialize)]
pub struct IssuesEvent {
    /// `opened`, `edited`, `labeled`, `deleted`, ...
    pub action: String,
    /// The issue after the action.
    pub issue: Issue,
    /// The repository.
    pub repository: Repository,
    /// Who did it.
    pub sender: User,
    /// What an edit changed.
    #[serde(default)]
    pub changes: Option<Changes>,
    /// The label of `labeled`/`unlabeled`.
    #[serde(default)]
    pub label: Option<Label>,
}

/// An `issue_comment` event.
#[derive(Debug, Clone, Deserialize)]
pub struct IssueCommentEvent {
    /// `created`, `edited` or `deleted`.
    pub action: String,
    /// The issue the comment is on.
    pub issue: Issue,
    /// The comment.
    pub comment: Comment,
    /// The repository.
    pub repository: Repository,
    /// Who did it.
    pub sender: User,
    /// What an edit changed.
    #[serde(default)]
    pub changes: Option<Changes>,
}

/// A `ping` event (sent when a webhook is created).
#[derive(Debug, Clone, Deserialize)]
pub struct PingEvent {
    /// GitHub zen.
    pub zen: String,
    /// The webhook's id.
    pub hook_id: u64,
}

/// A decoded delivery.
#[derive(Debug, Clone)]
pub enum Event {
    /// `ping`.
    Ping(PingEvent),
    /// `issues`.
    Issues(Box<IssuesEvent>),
    /// `issue_comment`.
    IssueComment(Box<IssueCommentEvent>),
    /// An event type the frontend does not handle.
    Other(String),
}

/// The JSON of a delivery: the raw body, or the `payload` field of a
/// form-encoded one (webhooks configured with content type
/// `application/x-www-form-urlencoded`).
pub fn payload_json(content_type: Option<&str>, body: &[u8]) -> Result<Vec<u8>, String> {
    let form = content_type.is_some_and(|c| {
        c.trim_start()
            .starts_with("application/x-www-form-urlencoded")
    });
    if !form {
        return Ok(body.to_vec());
    }
    let text = std::str::from_utf8(body).map_err(|_| "the form body is not UTF-8".to_string())?;
    for pair in text.split('&') {
        if let Some(v) = pair.strip_prefix("payload=") {
            let v = v.replace('+', " ");
            return urlencoding::decode(&v)
                .map(|c| c.into_owned().into_bytes())
                .map_err(|_| "the `payload` form field is not valid percent-encoding".into());
        }
    }
    Err("a form-encoded delivery without a `payload` field".into())
}

/// Decode a delivery of event type `event`. `Err` is the reason for a 400: the
/// body is not the event it claims to be.
pub fn decode(event: &str, json: &[u8]) -> Result<Event, String> {
    fn de<T: serde::de::DeserializeOwned>(event: &str, json: &[u8]) -> Result<T, String> {
        serde_json::from_slice(json)
            .map_err(|e| format!("the body is not a valid `{event}` event: {e}"))
    }
    Ok(match event {
        "ping" => Event::Ping(de(event, json)?),
        "issues" => Event::Issues(Box::new(de(event, json)?)),
        "issue_comment" => Event::IssueComment(Box::new(de(event, json)?)),
        other => {
            // Still insist on JSON: a garbled body is a 400 whatever the event.
            serde_json::from_slice::<serde::de::IgnoredAny>(json)
                .map_err(|e| format!("the body is not JSON: {e}"))?;
            Event::Other(other.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn signature_matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" docs.
        let sig = sign(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert_eq!(
            verify(
                b"It's a Secret to Everybody",
                &headers(&[("x-hub-signature-256", &sig)]),
                b"Hello, World!"
            ),
            Ok(())
        );
    }

    #[test]
    fn bad_signatures_are_refused() {
        let body = b"{}";
        let good = sign(b"k", body);
        assert_eq!(
            verify(b"k", &headers(&[]), body),
            Err(SignatureError::Missing { sha1_only: false })
        );
        assert_eq!(
            verify(b"k", &headers(&[("x-hub-signature", "sha1=00")]), body),
            Err(SignatureError::Missing { sha1_only: true })
        );
        assert_eq!(
            verify(b"other", &headers(&[("x-hub-signature-256", &good)]), body),
            Err(SignatureError::Mismatch)
        );
        for bad in ["sha256=zz", "md5=00", "sha256=00"] {
            assert_eq!(
                verify(b"k", &headers(&[("x-hub-signature-256", bad)]), body),
                Err(SignatureError::Malformed)
            );
        }
    }

    #[test]
    fn form_encoded_payloads_are_unwrapped() {
        let json = payload_json(
            Some("application/x-www-form-urlencoded"),
            b"payload=%7B%22zen%22%3A%22a+b%22%2C%22hook_id%22%3A1%7D",
        )
        .unwrap();
        match decode("ping", &json).unwrap() {
            Event::Ping(p) => assert_eq!(p.zen, "a b"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics() {
        // Not UTF-8, nested past serde_json's recursion limit, truncated.
        let not_utf8 = b"{\"action\":\"created\",\"comment\":{\"body\":\"\xff\xfe\"}}";
        let deep = format!(r#"{{"action":"created","issue":{}"#, "[".repeat(100_000));
        for (what, body) in [
            ("not UTF-8", not_utf8.to_vec()),
            ("deep", deep.into_bytes()),
            ("truncated", br#"{"action":"crea"#.to_vec()),
        ] {
            let err = decode("issue_comment", &body).expect_err(what);
            assert!(
                err.contains("not a valid `issue_comment` event"),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_the_claimed_event_is_an_error() {
        assert!(decode("issues", br#"{"zen":"x","hook_id":1}"#)
            .unwrap_err()
            .contains("not a valid `issues` event"));
        assert!(decode("push", b"not json").is_err());
        assert!(matches!(
            decode("push", br#"{"ref":"x"}"#),
            Ok(Event::Other(e)) if e == "push"
        ));
    }
}
