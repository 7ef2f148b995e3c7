//! Tests of the chain: canonical bytes, hashes and verification.

use super::*;
use crate::model::{EventBody, NewEvent};
use chrono::Timelike;

fn chain(n: u64) -> Vec<AuditEvent> {
    let mut prev = GENESIS_HASH.to_string();
    (1..=n)
        .map(|seq| {
            let ev = NewEvent::global(EventBody::Notice {
                source: "test".into(),
                kind: "k".into(),
                message: format!("m{seq}"),
                data: serde_json::Value::Null,
            });
            let time = Utc::now();
            let hash = chain_hash(
                &prev,
                &canonical_bytes(seq, &time, &ev.request_id, &ev.body),
            );
            let e = AuditEvent {
                seq,
                time,
                request_id: None,
                body: ev.body,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            };
            prev = hash;
            e
        })
        .collect()
}

#[test]
fn spliced_encodings_match_serde() {
    let id = RequestId::new();
    let actor = crate::model::Actor::new("cli", "al\"ice");
    let request = crate::model::Request {
        id,
        op: "user.create".into(),
        args: [(
            "name".to_string(),
            crate::model::Value::Str("é \\ \n".into()),
        )]
        .into(),
        raw_args: Vec::new(),
        secret_args: vec!["token".into()],
        actor: actor.clone(),
        origin: crate::model::Origin::new("slack").with_location("#ops"),
        dedup_key: Some("k1".into()),
        dedup_expires: false,
        dry_run: false,
        provenance: Default::default(),
        created_at: Utc::now(),
        digest: "ab".repeat(32),
        retry_of: None,
        node: None,
    };
    let bodies = [
        (
            Some(id),
            EventBody::Received {
                request: std::sync::Arc::new(request),
            },
        ),
        (
            Some(id),
            EventBody::Transition(
                crate::model::Transition::to(crate::model::State::Failed)
                    .by(actor)
                    .reason("exit 1"),
            ),
        ),
        (
            None,
            EventBody::Notice {
                source: "system".into(),
                kind: "k".into(),
                message: "\u{1F600} \"quoted\"".into(),
                data: serde_json::json!({"z": 1, "a": [true, null]}),
            },
        ),
    ];
    // Every precision chrono prints (none, ms, µs, ns), and a large seq.
    let now = Utc::now();
    let times = [
        now,
        now.with_nanosecond(0).unwrap(),
        now.with_nanosecond(123_000_000).unwrap(),
        now.with_nanosecond(123_456_000).unwrap(),
        now.with_nanosecond(1).unwrap(),
    ];
    let cases = bodies
        .iter()
        .cloned()
        .flat_map(|b| times.iter().map(move |t| (b.clone(), *t)));
    for (seq, ((request_id, body), time)) in cases.enumerate() {
        let seq = seq as u64 * 1_000_000_007 + 7;
        let body_json = serde_json::to_vec(&body).unwrap();
        let canonical = canonical_bytes_encoded(seq, &time, &request_id, &body_json);
        assert_eq!(canonical, canonical_bytes(seq, &time, &request_id, &body));
        let prev = "0f".repeat(32);
        let hash = chain_hash(&prev, &canonical);
        let ev = AuditEvent {
            seq,
            time,
            request_id,
            body,
            prev_hash: prev.clone(),
            hash: hash.clone(),
        };
        assert_eq!(
            event_json(canonical, &prev, &hash),
            serde_json::to_vec(&ev).unwrap()
        );
        assert_eq!(expected_hash(&ev), hash);
    }
}

#[test]
fn intact_chain_verifies() {
    let r = verify_events(chain(5));
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.checked, 5);
    assert_eq!(r.head_seq, 5);
}

#[test]
fn json_lines_skip_blank_lines_and_name_a_line_that_is_not_an_event() {
    let lines: Vec<String> = chain(3)
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let mut v = ChainVerifier::new();
    let text = format!("{}\n\n{}\r\n", lines[0], lines[1]);
    assert_eq!(v.check_json_lines(&text), Ok(()));
    let b = v
        .check_json_lines(&format!("{{\"seq\": 3\n{}\n", lines[2]))
        .unwrap_err();
    assert_eq!(b.seq, 3, "{b}");
    assert!(b.reason.starts_with("line 1 is not an audit event"), "{b}");
    assert_eq!(v.report(None).checked, 2);
}

#[test]
fn names_the_first_broken_record() {
    let mut c = chain(5);
    if let EventBody::Notice { message, .. } = &mut c[2].body {
        *message = "tampered".into();
    }
    let r = verify_events(c.clone());
    assert_eq!(r.broken.as_ref().unwrap().seq, 3, "{r:?}");
    assert_eq!(r.checked, 2);

    let mut gap = chain(5);
    gap.remove(1);
    assert_eq!(verify_events(gap).broken.unwrap().seq, 3);
}
