use std::time::Duration;

use super::*;

/// One of every variant (and every code-bearing kind of a chat error).
fn all() -> Vec<ChatFrontendError> {
    vec![
        ChatError {
            kind: ChatErrorKind::RateLimited(Some(Duration::from_secs(3))),
            message: "rate limited (429)".into(),
        }
        .into(),
        ChatError::transient("HTTP 500").into(),
        ChatError::permanent("channel_not_found").into(),
        SignatureError::Mismatch.into(),
        ChatFrontendError::Config(vec!["a".into(), "b".into()]),
        ChatFrontendError::Client("no TLS root certificates for the Slack client: x".into()),
        ChatFrontendError::MissingField("channel_id"),
        ChatFrontendError::SocketMode(ChatError::permanent("invalid_auth")),
    ]
}

#[test]
fn every_variant_has_a_distinct_stable_code() {
    let codes: Vec<&str> = all().iter().map(ChatFrontendError::code).collect();
    assert_eq!(
        codes,
        [
            "chat_rate_limited",
            "chat_unavailable",
            "chat_failed",
            "signature_invalid",
            "config_invalid",
            "client_error",
            "bad_payload",
            "socket_mode_failed",
        ]
    );
    youops_core::frontend::conformance::assert_stable_codes(&codes);
}

#[test]
fn wrapped_errors_keep_their_texts() {
    let sigs = [
        SignatureError::MissingHeader("X-Slack-Signature"),
        SignatureError::BadTimestamp,
        SignatureError::Stale(301),
        SignatureError::Malformed,
        SignatureError::Mismatch,
    ];
    for s in sigs {
        let text = s.to_string();
        assert_eq!(ChatFrontendError::from(s).to_string(), text);
    }
    let e = ChatError::permanent("channel_not_found");
    assert_eq!(ChatFrontendError::from(e).to_string(), "channel_not_found");
    assert_eq!(
        ChatFrontendError::MissingField("channel_id").to_string(),
        "slash command payload lacks `channel_id`"
    );
    assert_eq!(
        ChatFrontendError::SocketMode(ChatError::permanent("invalid_auth")).to_string(),
        "Socket Mode: apps.connections.open failed: invalid_auth"
    );
    assert_eq!(
        ChatFrontendError::Config(vec!["a".into(), "b".into()]).to_string(),
        "a; b"
    );
}

#[test]
fn a_bad_section_is_one_config_error_naming_each_key() {
    let section: toml::Table = "bot_token = 1\nsigning_secret = 2".parse().unwrap();
    let cfg = youops_core::config::Config::default();
    let slack = youops_core::frontend::factory::FrontendSection::new("slack", &section, &cfg);
    let err = ChatFrontendError::from(crate::SlackConfig::from_section(&slack).unwrap_err());
    assert_eq!(err.code(), "config_invalid");
    let text = err.to_string();
    assert!(text.contains("frontends.slack.bot_token"), "{text}");
}
