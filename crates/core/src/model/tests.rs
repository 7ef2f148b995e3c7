use super::*;

#[test]
fn dedup_expiry_is_recorded_only_when_the_claim_expires() {
    let sub = Submission::new("op", Actor::new("api", "a"), Origin::new("api"));
    assert!(!sub.clone().dedup("issue:1").dedup_expires);
    assert!(
        sub.clone()
            .dedup_with(DedupKey::delivery("ev-1"))
            .dedup_expires
    );
    assert_eq!(DedupKey::from("c".to_string()), DedupKey::lifetime("c"));
    // A lifetime key leaves the stored bytes as before the field existed.
    let json = r#"{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","op":"op","args":{},"actor":{"frontend":"api","external_id":"a"},"origin":{"frontend":"api"},"dedup_key":"k","dry_run":false,"created_at":"2026-12-07T05:00:00Z","digest":"d"}"#;
    let mut r: Request = serde_json::from_str(json).unwrap();
    assert!(!r.dedup_expires);
    assert!(!serde_json::to_string(&r).unwrap().contains("dedup_expires"));
    r.dedup_expires = true;
    assert!(serde_json::to_string(&r)
        .unwrap()
        .contains(r#""dedup_expires":true"#));
}

#[test]
fn request_ids_grow_within_a_millisecond() {
    let ids: Vec<RequestId> = (0..10_000).map(|_| RequestId::new()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn state_names_round_trip() {
    for s in State::ALL {
        assert_eq!(s.as_str().parse::<State>(), Ok(s));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
}

#[test]
fn terminal_states_have_no_exit() {
    for s in State::ALL.into_iter().filter(|s| s.is_terminal()) {
        for to in State::ALL {
            assert!(!s.can_become(to), "{s} -> {to}");
        }
    }
}

#[test]
fn request_id_parses_lower_case() {
    let id = RequestId::new();
    let lower = id.to_string().to_ascii_lowercase();
    assert_eq!(lower.parse::<RequestId>().unwrap(), id);
}
