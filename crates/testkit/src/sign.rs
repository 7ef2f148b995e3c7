//! Signatures as Slack and GitHub compute them, through core's HMAC-SHA256
//! (`youops_core::frontend::webhook::sign_sha256`), so a test does not sign
//! with the code it checks.

use youops_core::frontend::webhook::sign_sha256;

/// `X-Hub-Signature-256` of `body`: `sha256=<hex>`.
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    sign_sha256(secret, body)
}

/// `X-Slack-Signature` of `body` sent at `timestamp`: `v0=<hex>` of the
/// HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn slack_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut base = format!("v0:{timestamp}:").into_bytes();
    base.extend_from_slice(body);
    let sig = sign_sha256(secret.as_bytes(), &base);
    format!("v0={}", sig.trim_start_matches("sha256="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_signature_matches_slacks_documented_example() {
        // Slack's "Verifying requests from Slack" example.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            slack_signature("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn github_signature_is_sha256_hex() {
        // GitHub's documented example.
        assert_eq!(
            github_signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
