//! Unit tests of the chat rendering.

use super::*;

#[test]
fn button_values_round_trip() {
    assert_eq!(
        parse_button_value("01ABC:deadbeef"),
        Some(("01ABC", "deadbeef"))
    );
    assert_eq!(parse_button_value("01ABC"), None);
    assert_eq!(parse_button_value(":x"), None);
    assert_eq!(parse_button_value("x:"), None);
}

#[test]
fn quoting_keeps_values_readable() {
    assert_eq!(quote("prod"), "prod");
    assert_eq!(quote("two words"), "\"two words\"");
    assert_eq!(quote(""), "\"\"");
}

/// Renders like Slack: `<@U>` mentions, `<url|label>` links.
#[derive(Debug)]
struct Plain;

#[async_trait::async_trait]
impl ChatAdapter for Plain {
    async fn post(
        &self,
        _: &str,
        _: Option<&str>,
        _: &ChatMessage,
    ) -> Result<crate::chat::adapter::MessageRef, crate::chat::adapter::ChatError> {
        Err(crate::chat::adapter::ChatError::permanent(
            "not in unit tests",
        ))
    }
    async fn update(
        &self,
        _: &crate::chat::adapter::MessageRef,
        _: &ChatMessage,
    ) -> Result<(), crate::chat::adapter::ChatError> {
        Err(crate::chat::adapter::ChatError::permanent(
            "not in unit tests",
        ))
    }
    async fn post_ephemeral(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: &ChatMessage,
    ) -> Result<(), crate::chat::adapter::ChatError> {
        Err(crate::chat::adapter::ChatError::permanent(
            "not in unit tests",
        ))
    }
    async fn respond(
        &self,
        _: &str,
        _: &ChatMessage,
        _: bool,
    ) -> Result<(), crate::chat::adapter::ChatError> {
        Err(crate::chat::adapter::ChatError::permanent(
            "not in unit tests",
        ))
    }
    fn mention(&self, user: &str) -> String {
        format!("<@{user}>")
    }
    fn link(&self, url: &str, label: &str) -> String {
        format!("<{url}|{label}>")
    }
    fn max_text_len(&self) -> usize {
        3900
    }
}

const ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
const HEAD: &str = ":raised_hand: *Approval* for `db.drop text=users` requested by <@U_ALICE> (via slack) — request `01ARZ3NDEKTSV4RRFFQ69G5FAV`";

fn actor(user: &str, principal: &str) -> serde_json::Value {
    serde_json::json!({"frontend": "slack", "external_id": user, "principal": principal})
}

/// A `db.drop` record by alice in `state`, with `needed` approvals still
/// needed, the given decisions (`(slack user, principal, approve, reason)`)
/// and reason.
fn rec(
    state: &str,
    needed: u32,
    decisions: &[(&str, &str, bool, Option<&str>)],
    reason: Option<&str>,
) -> RequestRecord {
    let approvals: Vec<serde_json::Value> = decisions
        .iter()
        .map(|(u, p, approve, why)| {
            serde_json::json!({"by": actor(u, p), "approve": approve, "digest": "d1",
                "at": "2024-05-01T10:00:00Z", "reason": why})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "request": {
            "id": ID, "op": "db.drop", "args": {"text": "users"},
            "actor": actor("U_ALICE", "alice"),
            "origin": {"frontend": "slack", "location": "C1"},
            "created_at": "2024-05-01T09:00:00Z", "digest": "d1"
        },
        "state": state,
        "updated_at": "2024-05-01T10:00:00Z",
        "approvals_needed": needed,
        "expires_at": "2024-05-01T10:00:00Z",
        "approvals": approvals,
        "reason": reason,
        "last_hash": "h",
        "last_seq": 7
    }))
    .expect("a valid record")
}

const PENDING: Option<&str> = Some("needs 2 approval(s) from role ops (not the requester)");
const EXPIRES: &str =
    "; expires <!date^1714557600^{date_short_pretty} {time}|2024-05-01T10:00:00+00:00>";

fn prompt(r: &RequestRecord) -> ChatMessage {
    approval(&Plain, "slack", r, None)
}

#[test]
fn a_pending_prompt_counts_approvals_with_a_proper_plural() {
    let two = prompt(&rec("pending_approval", 2, &[], PENDING));
    assert_eq!(two.text, format!("{HEAD}\nNeeds 2 approvals{EXPIRES}"));
    assert_eq!(two.buttons.len(), 2);
    let one = prompt(&rec("pending_approval", 1, &[], PENDING));
    assert_eq!(one.text, format!("{HEAD}\nNeeds 1 approval{EXPIRES}"));
    assert_eq!(one.buttons.len(), 2);
    let half = prompt(&rec(
        "pending_approval",
        1,
        &[("U_BOB", "bob", true, None)],
        PENDING,
    ));
    assert_eq!(
        half.text,
        format!("{HEAD}\nApproved by <@U_BOB>; needs 1 more approval{EXPIRES}")
    );
    assert_eq!(half.buttons.len(), 2);
}

#[test]
fn once_nothing_is_outstanding_the_prompt_says_what_happened_without_buttons() {
    let bob = ("U_BOB", "bob", true, None);
    let cases = [
        // Folded right after the approval that decided it (the `approved`
        // transition follows in the same commit): not "Needs 0".
        (
            rec("pending_approval", 0, &[bob], PENDING),
            "\n:white_check_mark: Approved by <@U_BOB>",
        ),
        (
            rec("approved", 0, &[bob], Some("approved by bob")),
            "\n:white_check_mark: Approved by <@U_BOB>",
        ),
        (
            rec(
                "running",
                0,
                &[bob, ("U_ERIN", "erin", true, None)],
                Some("approved by bob, erin"),
            ),
            "\n:white_check_mark: Approved by <@U_BOB>, <@U_ERIN>",
        ),
        (
            rec(
                "rejected",
                2,
                &[("U_BOB", "bob", false, Some("too risky"))],
                Some("denied by bob: too risky"),
            ),
            "\n:no_entry_sign: Denied by <@U_BOB>: too risky",
        ),
        // Folded right after the denial (`rejected` follows).
        (
            rec(
                "pending_approval",
                2,
                &[("U_BOB", "bob", false, None)],
                PENDING,
            ),
            "\n:no_entry_sign: Denied by <@U_BOB>",
        ),
        (
            rec(
                "expired",
                0,
                &[],
                Some("approvals did not arrive before ..."),
            ),
            "\n:hourglass: Expired: approvals did not arrive in time",
        ),
        (
            rec("cancelled", 0, &[], Some("cancelled by alice")),
            "\n:no_entry_sign: Cancelled by alice",
        ),
        (
            rec("cancelled", 0, &[], Some("voided: the message was edited")),
            "\n:no_entry_sign: Cancelled: voided: the message was edited",
        ),
    ];
    for (r, tail) in cases {
        let m = prompt(&r);
        assert_eq!(m.text, format!("{HEAD}{tail}"), "{}", r.state);
        assert!(m.buttons.is_empty(), "no buttons once {}", r.state);
        assert!(!awaits_approval(&r), "{}", r.state);
    }
}

fn reply(did: Decision, by: &str, r: &RequestRecord) -> String {
    decision_reply(
        &Plain,
        "slack",
        did,
        &Actor::new("slack", by),
        r,
        Some("https://ops.example/requests/x"),
    )
    .text
}

#[test]
fn replies_to_decisions_say_what_happened_once() {
    let link = "\n<https://ops.example/requests/x|follow it on the dashboard>";
    let bob = ("U_BOB", "bob", true, None);
    let req = format!("request `{ID}` (`db.drop`)");
    // The approval that made it run (the executor returns it `approved`).
    let t = reply(
        Decision::Approve,
        "U_BOB",
        &rec("approved", 0, &[bob], Some("approved by bob")),
    );
    assert_eq!(
        t,
        format!(":white_check_mark: Approved by <@U_BOB>; {req} is starting.{link}")
    );
    assert!(
        !t.contains("it is now approved") && !t.contains("`approved`"),
        "{t}"
    );
    // One of two.
    let t = reply(
        Decision::Approve,
        "U_BOB",
        &rec("pending_approval", 1, &[bob], PENDING),
    );
    assert_eq!(
        t,
        format!(":white_check_mark: Approved by <@U_BOB> (1 of 2 approvals); {req} needs 1 more approval from role ops (not the requester).{link}")
    );
    // Approved, but it could not run.
    let t = reply(
        Decision::Approve,
        "U_BOB",
        &rec(
            "interrupted",
            0,
            &[bob],
            Some("its arguments were not kept"),
        ),
    );
    assert_eq!(
        t,
        format!(":white_check_mark: Approved by <@U_BOB>, but {req} ended `interrupted` (its arguments were not kept).{link}")
    );
    let t = reply(
        Decision::Deny,
        "U_BOB",
        &rec(
            "rejected",
            1,
            &[("U_BOB", "bob", false, Some("too risky"))],
            Some("denied by bob: too risky"),
        ),
    );
    assert_eq!(
        t,
        format!(":no_entry_sign: Denied by <@U_BOB> (too risky); {req} will not run.{link}")
    );
    let t = reply(
        Decision::Cancel,
        "U_ALICE",
        &rec("cancelled", 0, &[], Some("cancelled by alice")),
    );
    assert_eq!(
        t,
        format!(":no_entry_sign: Cancelled by <@U_ALICE>; {req} will not run.{link}")
    );
    let t = reply(Decision::Cancel, "U_ALICE", &rec("succeeded", 0, &[], None));
    assert_eq!(
        t,
        format!(":information_source: Too late to cancel: {req} ended `succeeded` first.{link}")
    );
}

#[test]
fn the_status_line_does_not_repeat_its_state() {
    let bob = ("U_BOB", "bob", true, None);
    let line = |r: &RequestRecord| status(&Plain, "slack", r, None).text;
    let head = format!("`db.drop text=users` by <@U_ALICE> — request `{ID}` — state:");
    assert_eq!(
        line(&rec("approved", 0, &[bob], Some("approved by bob"))),
        format!(":hourglass_flowing_sand: {head} `approved` by bob")
    );
    assert_eq!(
        line(&rec("cancelled", 0, &[], Some("cancelled by alice"))),
        format!(":no_entry_sign: {head} `cancelled` by alice")
    );
    assert_eq!(
        line(&rec("pending_approval", 2, &[], PENDING)),
        format!(":raised_hand: {head} `pending_approval`\n_needs 2 approvals from role ops (not the requester)_")
    );
    assert_eq!(
        line(&rec("pending_approval", 1, &[bob], PENDING)),
        format!(":raised_hand: {head} `pending_approval`\n_needs 1 more approval from role ops (not the requester)_")
    );
}

#[test]
fn durations_read_well() {
    assert_eq!(duration(12), "12 ms");
    assert_eq!(duration(1500), "1.5 s");
    assert_eq!(duration(185_000), "3m05s");
}
