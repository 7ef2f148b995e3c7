//! The webhook wire format: `X-Hub-Signature-256` verification and payload
//! decoding.
//!
//! GitHub signs the raw body with HMAC-SHA256 under the webhook secret and sends
//! `X-Hub-Signature-256: sha256=<hex>`. The check is core's constant-time one;
//! the legacy SHA-1 `X-Hub-Signature` alone is refused.

use serde::Deserialize;
use youops_core::frontend::webhook;

use crate::github::{Comment, Issue, Label, User};
use crate::GithubError;

pub use crate::error::SignatureError;

/// `sha256=<hex>` of `body` under `secret`: what GitHub sends.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    webhook::sign_sha256(secret, body)
}

/// Verify a delivery's signature headers against the raw body, in constant time.
pub fn verify(secret: &[u8], headers: &http::HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
    let Some(sig) = headers.get("x-hub-signature-256") else {
        return Err(SignatureError::Missing {
            sha1_only: headers.contains_key("x-hub-signature"),
        });
    };
    let sig = sig.to_str().map_err(|_| SignatureError::Malformed)?;
    webhook::verify_sha256(secret, body, Some(sig)).map_err(|e| match e {
        // Core says `Missing` only when given no header: handled above.
        webhook::SignatureError::Missing => SignatureError::Missing { sha1_only: false },
        webhook::SignatureError::Malformed => SignatureError::Malformed,
        webhook::SignatureError::Mismatch => SignatureError::Mismatch,
    })
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

/// The `issues` actions YouOps acts on; every other action is acknowledged and
/// ignored without its payload being read.
pub const HANDLED_ISSUES_ACTIONS: &[&str] = &["opened", "edited", "reopened", "labeled", "deleted"];

/// The `issue_comment` actions YouOps acts on; every other action is
/// acknowledged and ignored without its payload being read.
pub const HANDLED_ISSUE_COMMENT_ACTIONS: &[&str] = &["created", "edited", "deleted"];

/// A delivery YouOps acknowledges and does nothing with: an event type it does
/// not handle (`push`, `installation`, `label`, a type GitHub adds later …), or an
/// action of a handled type that it does not act on (`issues` `pinned` …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The `X-GitHub-Event` type.
    pub event: String,
    /// The payload's `action`, when it has a string one.
    pub action: Option<String>,
}

impl std::fmt::Display for Ignored {
    /// `ignored: <event>/<action>`, or `ignored: <event>` for events without an
    /// action (`push`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.action {
            Some(a) => write!(f, "ignored: {}/{a}", self.event),
            None => write!(f, "ignored: {}", self.event),
        }
    }
}

/// A decoded delivery.
#[derive(Debug, Clone)]
pub enum Event {
    /// `ping`.
    Ping(PingEvent),
    /// `issues`, with one of [`HANDLED_ISSUES_ACTIONS`].
    Issues(Box<IssuesEvent>),
    /// `issue_comment`, with one of [`HANDLED_ISSUE_COMMENT_ACTIONS`].
    IssueComment(Box<IssueCommentEvent>),
    /// Acknowledged with a 2xx and otherwise ignored.
    Ignored(Ignored),
}

/// The JSON of a delivery: the raw body, or the `payload` field of a
/// form-encoded one (webhooks configured with content type
/// `application/x-www-form-urlencoded`). `Err` is [`GithubError::Payload`], the
/// reason for a 400.
pub fn payload_json(content_type: Option<&str>, body: &[u8]) -> Result<Vec<u8>, GithubError> {
    let form = content_type.is_some_and(|c| {
        c.trim_start()
            .starts_with("application/x-www-form-urlencoded")
    });
    if !form {
        return Ok(body.to_vec());
    }
    let bad = |why: &str| GithubError::Payload(why.to_string());
    let text = std::str::from_utf8(body).map_err(|_| bad("the form body is not UTF-8"))?;
    for pair in text.split('&') {
        if let Some(v) = pair.strip_prefix("payload=") {
            let v = v.replace('+', " ");
            return urlencoding::decode(&v)
                .map(|c| c.into_owned().into_bytes())
                .map_err(|_| bad("the `payload` form field is not valid percent-encoding"));
        }
    }
    Err(bad("a form-encoded delivery without a `payload` field"))
}

/// The `action` of a delivery, read leniently: any JSON value is accepted (only
/// a top-level object can have an action), and every other field is skipped
/// without being looked at, so an event or action YouOps does not handle is
/// never refused for the shape of the rest of its payload.
#[derive(Debug, Default)]
struct Envelope {
    /// `None`: no `action` field; `Some(None)`: one that is not a string.
    action: Option<Option<String>>,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> serde::de::Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut env = Envelope::default();
        while let Some(key) = map.next_key::<String>()? {
            if key == "action" && env.action.is_none() {
                let value: serde_json::Value = map.next_value()?;
                env.action = Some(value.as_str().map(str::to_string));
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(env)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Envelope, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Envelope::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Envelope, E> {
        Ok(Envelope::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Envelope, E> {
        Ok(Envelope::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Envelope, E> {
        Ok(Envelope::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Envelope, E> {
        Ok(Envelope::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<Envelope, E> {
        Ok(Envelope::default())
    }

    fn visit_unit<E>(self) -> Result<Envelope, E> {
        Ok(Envelope::default())
    }
}

/// Decode a delivery of event type `event` (the `X-GitHub-Event` header).
///
/// The event type and the payload's `action` are looked at first, from a
/// lenient read that skips every other field; only the events and actions
/// YouOps acts on ([`HANDLED_ISSUES_ACTIONS`], [`HANDLED_ISSUE_COMMENT_ACTIONS`],
/// `ping`) are then decoded in full. Everything else, including event types and
/// actions GitHub adds later, is [`Event::Ignored`], whatever the rest of its
/// payload looks like (GitHub sends reduced objects for some actions).
///
/// `Err` ([`GithubError::Payload`]) is the reason for a 400: the body is not JSON, or it is not the event
/// it claims to be (an `issues` or `issue_comment` delivery without a string
/// `action`, a handled action whose payload lacks what YouOps needs).
pub fn decode(event: &str, json: &[u8]) -> Result<Event, GithubError> {
    let handled = matches!(event, "ping" | "issues" | "issue_comment");
    let bad = |why: &dyn std::fmt::Display| {
        GithubError::Payload(if handled {
            format!("the body is not a valid `{event}` event: {why}")
        } else {
            format!("the body is not JSON: {why}")
        })
    };
    // JSON is UTF-8; checked once here, so that a stray byte in a field that is
    // only skipped is refused too.
    let text = std::str::from_utf8(json).map_err(|e| bad(&format_args!("not UTF-8 ({e})")))?;
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| bad(&e))?;
    // GitHub sends an `action` with every `issues` and `issue_comment` delivery.
    let needs_action = matches!(event, "issues" | "issue_comment");
    let action = match envelope.action {
        Some(Some(a)) => Some(a),
        None if needs_action => return Err(bad(&"missing field `action`")),
        Some(None) if needs_action => return Err(bad(&"`action` is not a string")),
        _ => None,
    };
    let a = action.as_deref();
    Ok(match (event, a) {
        ("ping", _) => Event::Ping(strict(event, None, text)?),
        ("issues", Some(x)) if HANDLED_ISSUES_ACTIONS.contains(&x) => {
            Event::Issues(Box::new(strict(event, a, text)?))
        }
        ("issue_comment", Some(x)) if HANDLED_ISSUE_COMMENT_ACTIONS.contains(&x) => {
            Event::IssueComment(Box::new(strict(event, a, text)?))
        }
        _ => Event::Ignored(Ignored {
            event: event.to_string(),
            action,
        }),
    })
}

/// The full decode of a delivery YouOps acts on.
fn strict<T: serde::de::DeserializeOwned>(
    event: &str,
    action: Option<&str>,
    text: &str,
) -> Result<T, GithubError> {
    serde_json::from_str(text).map_err(|e| {
        GithubError::Payload(match action {
            Some(a) => format!("the body is not a valid `{event}` event (action `{a}`): {e}"),
            None => format!("the body is not a valid `{event}` event: {e}"),
        })
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
            let err = decode("issue_comment", &body).expect_err(what).to_string();
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
            .to_string()
            .contains("not a valid `issues` event"));
        assert!(decode("push", b"not json").is_err());
        assert!(matches!(
            decode("push", br#"{"ref":"x"}"#),
            Ok(Event::Ignored(Ignored { event, action: None })) if event == "push"
        ));
    }

    /// The smallest `issues` payload of an action YouOps acts on.
    fn issues_payload(action: &str, issue: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "action": action, "issue": issue,
            "repository": { "full_name": "acme/ops" }, "sender": { "login": "alice" },
        }))
        .unwrap()
    }

    #[test]
    fn the_action_is_looked_at_before_the_payload() {
        // A reduced `issue` (no `state`, `labels`, `locked`, `assignee`) or none at
        // all: not read for actions YouOps ignores.
        for action in [
            "pinned",
            "unpinned",
            "transferred",
            "assigned",
            "some_future_action",
        ] {
            for issue in [serde_json::json!({ "number": 1 }), serde_json::json!(null)] {
                match decode("issues", &issues_payload(action, issue)) {
                    Ok(Event::Ignored(i)) => {
                        assert_eq!(i.to_string(), format!("ignored: issues/{action}"));
                    }
                    other => panic!("{action}: {other:?}"),
                }
            }
        }
        assert!(matches!(
            decode("issue_comment", br#"{"action":"pinned"}"#),
            Ok(Event::Ignored(i)) if i.to_string() == "ignored: issue_comment/pinned"
        ));
        // Any JSON is fine for an event type YouOps does not handle.
        for body in [&b"[1,{}]"[..], b"\"x\"", b"3", b"null", br#"{"action":7}"#] {
            assert!(
                matches!(
                    decode("installation", body),
                    Ok(Event::Ignored(Ignored { action: None, .. }))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(matches!(
            decode("label", br#"{"action":"created","label":{}}"#),
            Ok(Event::Ignored(i)) if i.action.as_deref() == Some("created")
        ));
    }

    #[test]
    fn a_handled_action_is_decoded_in_full_from_a_reduced_issue() {
        // `state`, `labels`, `locked`, `assignee` left out, as GitHub may.
        let issue = serde_json::json!({
            "number": 3, "title": "t", "body": null, "user": { "login": "alice" },
            "html_url": "https://github.com/acme/ops/issues/3",
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
        });
        match decode("issues", &issues_payload("opened", issue.clone())) {
            Ok(Event::Issues(e)) => {
                assert_eq!(e.issue.number, 3);
                assert_eq!(e.issue.is_open(), None);
                assert!(e.issue.labels.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // What a handled action needs is still required, with the reason.
        let mut no_number = issue;
        no_number.as_object_mut().unwrap().remove("number");
        let err = decode("issues", &issues_payload("deleted", no_number))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a valid `issues` event (action `deleted`): missing field `number`"),
            "{err}"
        );
    }

    #[test]
    fn issues_and_comments_without_a_string_action_are_errors() {
        for event in ["issues", "issue_comment"] {
            let err = decode(event, br#"{"issue":{}}"#).unwrap_err().to_string();
            assert!(err.contains("missing field `action`"), "{err}");
            let err = decode(event, br#"{"action":["opened"]}"#)
                .unwrap_err()
                .to_string();
            assert!(err.contains("`action` is not a string"), "{err}");
            let err = decode(event, b"[]").unwrap_err().to_string();
            assert!(
                err.contains(&format!("not a valid `{event}` event")),
                "{err}"
            );
        }
        // Not JSON at all, or not UTF-8 even where only skipped: whatever the event.
        for event in ["push", "installation", "issues"] {
            assert!(decode(event, b"{").is_err());
            assert!(decode(event, b"{\"a\":\"\xff\"}").is_err());
            assert!(decode(event, b"{} x").is_err());
        }
    }

    /// Every event type and action the tests feed the decoder.
    const EVENTS: &[&str] = &[
        "issues",
        "issue_comment",
        "ping",
        "push",
        "installation",
        "label",
        "unknown",
    ];
    const ACTIONS: &[&str] = &[
        "opened",
        "edited",
        "deleted",
        "pinned",
        "unpinned",
        "closed",
        "reopened",
        "assigned",
        "labeled",
        "transferred",
        "typed",
        "created",
        "suspend",
        "",
    ];
    const KEYS: &[&str] = &[
        "action",
        "issue",
        "comment",
        "repository",
        "sender",
        "changes",
        "label",
        "number",
        "title",
        "body",
        "user",
        "login",
        "state",
        "labels",
        "name",
        "html_url",
        "created_at",
        "updated_at",
        "full_name",
        "id",
        "from",
        "zen",
        "hook_id",
        "pull_request",
    ];

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            prop::sample::select(ACTIONS).prop_map(Value::from),
            Just(Value::from("2024-01-01T00:00:00Z")),
        ];
        leaf.prop_recursive(4, 48, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![prop::sample::select(KEYS).prop_map(String::from), ".{0,6}"],
                        inner
                    ),
                    0..8,
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Never a panic on any JSON, and never a 400 for an action or event
        /// type YouOps does not act on, whatever else the payload holds.
        #[test]
        fn decode_never_panics_and_ignores_what_it_does_not_handle(
            body in any_json(),
            action in proptest::sample::select(ACTIONS),
            with_action in proptest::bool::ANY,
        ) {
            let mut body = body;
            if with_action {
                if let Some(o) = body.as_object_mut() {
                    o.insert("action".into(), action.into());
                }
            }
            let bytes = serde_json::to_vec(&body).unwrap();
            for event in EVENTS {
                let got = decode(event, &bytes);
                let acted_on = match (*event, body.get("action").and_then(|a| a.as_str())) {
                    ("ping", _) => true,
                    ("issues", a) => a.is_none_or(|a| HANDLED_ISSUES_ACTIONS.contains(&a)),
                    ("issue_comment", a) => a.is_none_or(|a| HANDLED_ISSUE_COMMENT_ACTIONS.contains(&a)),
                    _ => false,
                };
                if !acted_on {
                    proptest::prop_assert!(
                        matches!(&got, Ok(Event::Ignored(i)) if i.event == *event),
                        "{event}: {got:?}"
                    );
                }
            }
        }

        /// Never a panic on arbitrary bytes either.
        #[test]
        fn decode_never_panics_on_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            for event in EVENTS {
                let _ = decode(event, &bytes);
            }
        }
    }
}
