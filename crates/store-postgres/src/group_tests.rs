//! Step 3 of a group, without a database: who wins a key, what a refused
//! append leaves.

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use youops_core::audit::conformance::build::{keyed, received, request, to};
use youops_core::audit::{expected_hash, AppendOptions, StoreError, GENESIS_HASH};
use youops_core::model::{NewEvent, RequestId, State};

use super::{plan, AppendReq};

fn req(events: Vec<NewEvent>, key: Option<&str>) -> AppendReq {
    let bodies = events
        .iter()
        .map(|e| serde_json::to_vec(&e.body).unwrap())
        .collect();
    let opts = key.map_or_else(AppendOptions::durable, keyed);
    AppendReq {
        events,
        bodies,
        opts,
    }
}

#[test]
fn a_refused_claimant_leaves_its_key_to_the_next_in_the_group() {
    let (a, b, c) = (request("ops.t"), request("ops.t"), request("ops.t"));
    let ghost = RequestId::new();
    let group = [
        // Refused (an event of an unknown request): claims nothing.
        req(vec![received(&a), to(ghost, State::Running)], Some("k")),
        req(vec![received(&b)], Some("k")),
        req(vec![received(&c)], Some("k")),
        req(vec![received(&b)], None),
    ];
    let refs: Vec<&AppendReq> = group.iter().collect();
    let p = plan(
        &refs,
        (0, GENESIS_HASH.to_string()),
        Utc::now(),
        &HashMap::new(),
        HashMap::new(),
        &BTreeSet::new(),
    );
    assert!(
        matches!(&p.answers[0], Err(StoreError::Io(_))),
        "{:?}",
        p.answers[0]
    );
    let won = p.answers[1].as_ref().unwrap();
    assert_eq!((won[0].seq, won[0].prev_hash.as_str()), (1, GENESIS_HASH));
    assert_eq!(won[0].hash, expected_hash(&won[0]));
    assert!(matches!(p.answers[2], Err(StoreError::Duplicate(w)) if w == b.id));
    // `b` was received by the group's second append.
    assert!(matches!(&p.answers[3], Err(StoreError::Io(m)) if m.contains("already received")));
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.claims, [("k".to_string(), b.id.to_string(), false)]);
    assert_eq!(p.tip, (1, won[0].hash.clone()));
    assert_eq!(p.records.len(), 1);
}

#[test]
fn a_key_claimed_in_the_database_refuses() {
    let (a, owner) = (request("ops.t"), RequestId::new());
    let group = [req(vec![received(&a)], Some("k"))];
    let refs: Vec<&AppendReq> = group.iter().collect();
    let owners = HashMap::from([("k".to_string(), owner)]);
    let p = plan(
        &refs,
        (7, "ff".repeat(32)),
        Utc::now(),
        &owners,
        HashMap::new(),
        &BTreeSet::new(),
    );
    assert!(matches!(p.answers[0], Err(StoreError::Duplicate(w)) if w == owner));
    assert!(p.events.is_empty() && p.claims.is_empty());
    assert_eq!(p.tip.0, 7);
}
