//! Approvals: buttons, typed decisions, counts, and the approvals channel.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use youops_core::{Actor, Origin, RequestId, State, Submission};

use crate::support::*;

async fn approval_message(h: &Harness, id: RequestId, channel: &str) -> (String, String) {
    eventually("the approval prompt", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find_map(|c| {
                let blocks = c.body.get("blocks")?.as_array()?.clone();
                if c.channel() != channel || !c.text().contains(&id.to_string()) {
                    return None;
                }
                let actions = blocks.iter().find(|b| b["type"] == "actions")?;
                let value = actions["elements"][0]["value"].as_str()?.to_string();
                // Where it was posted: the fake assigned the ts in its response; find it by order.
                Some((
                    value,
                    c.body["thread_ts"].as_str().unwrap_or("").to_string(),
                ))
            })
    })
    .await
}

fn posted_ts(h: &Harness, channel: &str, needle: &str) -> String {
    // The fake numbers ts sequentially in the order of successful posts and ephemerals.
    let mut n = 100;
    for c in h.fake.calls() {
        match c.method.as_str() {
            "chat.postMessage" => {
                if c.channel() == channel
                    && c.body.get("blocks").is_some()
                    && c.text().contains(needle)
                {
                    return format!("1700000000.{n:06}");
                }
                n += 1;
            }
            "chat.postEphemeral" => n += 1,
            _ => {}
        }
    }
    panic!("no post with {needle}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_button_by_requester_is_refused_and_by_another_approver_succeeds() {
    let h = harness("approvals_channel = \"CAPPROVE\"").await;
    let (_, v) = h.slash("U_ALICE", "db.drop text=users", "trig-a1").await;
    let t = v["text"].as_str().unwrap();
    let id = id_in(t);
    assert!(
        t.starts_with(&format!(
            ":raised_hand: Request `{id}` (`db.drop`) needs 1 approval from role ops (not the requester). Approvers can click Approve"
        )),
        "{t}"
    );
    let (value, _) = approval_message(&h, id, "C1").await;
    let prompt = h.fake.calls_of("chat.postMessage");
    let prompt = prompt
        .iter()
        .find(|c| c.channel() == "C1" && c.body.get("blocks").is_some())
        .expect("the prompt");
    assert!(
        prompt.text().contains("\nNeeds 1 approval; expires "),
        "{}",
        prompt.text()
    );
    assert!(
        value.starts_with(&format!("{id}:")),
        "the button carries id and digest: {value}"
    );
    let rec = h.exec.get(id).await.unwrap();
    assert_eq!(value, format!("{id}:{}", rec.request.digest));
    // Also posted to the approvals channel.
    approval_message(&h, id, "CAPPROVE").await;
    let ts = posted_ts(&h, "C1", &id.to_string());

    // The requester clicks Approve: refused, told privately, still pending.
    let res = h
        .post(signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            block_actions_body(&h.fake, "U_ALICE", "C1", &ts, "youops_approve", &value),
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let eph = eventually("the refusal", || async {
        h.fake.calls_of("chat.postEphemeral").into_iter().next()
    })
    .await;
    assert_eq!(eph.body["user"], "U_ALICE");
    assert!(
        eph.text().contains("approver ≠ requester"),
        "{}",
        eph.text()
    );
    assert_eq!(h.exec.get(id).await.unwrap().state, State::PendingApproval);

    // A forged digest (content changed since the prompt) is refused too.
    let res = h
        .post(signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            block_actions_body(
                &h.fake,
                "U_BOB",
                "C1",
                &ts,
                "youops_approve",
                &format!("{id}:{}", "0".repeat(64)),
            ),
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    eventually("the digest refusal", || async {
        h.fake
            .calls_of("chat.postEphemeral")
            .into_iter()
            .find(|c| c.text().contains("digest mismatch"))
    })
    .await;
    assert_eq!(h.exec.get(id).await.unwrap().state, State::PendingApproval);

    // Bob clicks Approve: it runs, and the clicked message is updated in place.
    let res = h
        .post(signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            block_actions_body(&h.fake, "U_BOB", "C1", &ts, "youops_approve", &value),
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let done = h.exec.wait(id).await.unwrap();
    assert_eq!(done.state, State::Succeeded);
    assert_eq!(done.approvals[0].by.principal.as_deref(), Some("bob"));
    let decided = format!(
        ":raised_hand: *Approval* for `db.drop text=users` requested by <@U_ALICE> (via slack) — request `{id}`\n:white_check_mark: Approved by <@U_BOB>\n<https://youops.example/requests/{id}|details on the dashboard>"
    );
    eventually("chat.update of the clicked message", || async {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .find(|c| c.body["ts"] == ts.as_str() && c.text().contains("Approved by <@U_BOB>"))
    })
    .await;
    // The approvals-channel copy is updated too.
    eventually("the approvals channel copy updated", || async {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .find(|c| c.channel() == "CAPPROVE" && c.text().contains("Approved by"))
    })
    .await;
    // Both prompts end saying who approved, and without buttons: Slack keeps
    // a message's previous blocks (its old text and buttons) when `chat.update`
    // leaves `blocks` out, so the update clears them.
    for channel in ["C1", "CAPPROVE"] {
        let last = settled_prompt(&h, id, channel).await;
        assert_eq!(last.text(), decided, "{channel}");
        assert_eq!(last.body["blocks"], serde_json::json!([]), "{channel}");
    }
    assert_no_stale_approval_text(&h, id);
}

/// The last `chat.update` of request `id`'s approval prompt in `channel`, once
/// the updates have settled.
async fn settled_prompt(h: &Harness, id: RequestId, channel: &str) -> Call {
    let last = || {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .rfind(|c| {
                c.channel() == channel
                    && c.text().starts_with(":raised_hand: *Approval*")
                    && c.text().contains(&id.to_string())
            })
            .map(|c| c.body)
    };
    let mut seen = eventually("an update of the prompt", || async { last() }).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = last();
        if now.as_ref() == Some(&seen) {
            break;
        }
        seen = now.expect("still there");
    }
    Call {
        method: "chat.update".into(),
        body: seen,
        at: Instant::now(),
    }
}

/// Nothing posted or updated about request `id` ever showed a count of 0
/// approvals, an `approval(s)` count, or said the same thing twice.
fn assert_no_stale_approval_text(h: &Harness, id: RequestId) {
    for c in h.fake.calls() {
        let body = c.body.to_string();
        if !body.contains(&id.to_string()) {
            continue;
        }
        for bad in [
            "0 approval",
            "approval(s)",
            "it is now approved",
            "needs approval: needs",
        ] {
            assert!(!body.contains(bad), "{bad:?} in {} {body}", c.method);
        }
    }
}

/// The first line of a reply (the rest is the dashboard link).
fn first_line(v: &serde_json::Value) -> String {
    let t = v["text"].as_str().unwrap_or("");
    t.lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_are_counted_and_each_reply_says_what_happened_once() {
    let h = harness("approvals_channel = \"CAPPROVE\"").await;
    let (_, v) = h.slash("U_ALICE", "db.wipe text=users", "trig-w1").await;
    let t = v["text"].as_str().unwrap();
    let id = id_in(t);
    assert_eq!(
        first_line(&v),
        format!(":raised_hand: Request `{id}` (`db.wipe`) needs 2 approvals from role ops (not the requester). Approvers can click Approve, or type `approve {id}`.")
    );
    let (value, _) = approval_message(&h, id, "C1").await;
    approval_message(&h, id, "CAPPROVE").await;
    let head = format!(
        ":raised_hand: *Approval* for `db.wipe text=users` requested by <@U_ALICE> (via slack) — request `{id}`"
    );
    let link = format!("<https://youops.example/requests/{id}|details on the dashboard>");
    let expires = |text: &str| {
        let i = text.find("; expires <!date^").expect("the expiry");
        let j = text[i..].find('>').expect("its end") + i + 1;
        text[i..j].to_string()
    };
    let posted = h.fake.mentioning(&id.to_string());
    let prompt = posted
        .iter()
        .find(|c| c.channel() == "CAPPROVE")
        .expect("the prompt");
    let exp = expires(prompt.text());
    assert_eq!(
        prompt.text(),
        format!("{head}\nNeeds 2 approvals{exp}\n{link}")
    );

    // Bob types `approve ID`: one of two; the reply says so, once.
    let (_, v) = h.slash("U_BOB", &format!("approve {id}"), "trig-w2").await;
    assert_eq!(
        first_line(&v),
        format!(":white_check_mark: Approved by <@U_BOB> (1 of 2 approvals); request `{id}` (`db.wipe`) needs 1 more approval from role ops (not the requester).")
    );
    assert_eq!(h.exec.get(id).await.unwrap().state, State::PendingApproval);
    // The prompts still have their buttons, and say who approved so far.
    for channel in ["C1", "CAPPROVE"] {
        let upd = eventually("the prompt counting one approval", || async {
            h.fake.calls_of("chat.update").into_iter().find(|c| {
                c.channel() == channel
                    && c.text().starts_with(":raised_hand: *Approval*")
                    && c.text().contains("needs 1 more approval")
            })
        })
        .await;
        assert_eq!(
            upd.text(),
            format!("{head}\nApproved by <@U_BOB>; needs 1 more approval{exp}\n{link}")
        );
        assert!(
            upd.body.to_string().contains("youops_approve"),
            "still has buttons: {}",
            upd.body
        );
    }

    // Erin clicks Approve on the approvals-channel copy: it runs.
    let ts = posted_ts(&h, "CAPPROVE", &id.to_string());
    h.post(signed(
        "/slack/interactions",
        "application/x-www-form-urlencoded",
        block_actions_body(&h.fake, "U_ERIN", "CAPPROVE", &ts, "youops_approve", &value),
        now(),
        SECRET,
    ))
    .await;
    let done = h.exec.wait(id).await.unwrap();
    assert_eq!(done.state, State::Succeeded);
    for channel in ["C1", "CAPPROVE"] {
        let last = settled_prompt(&h, id, channel).await;
        assert_eq!(
            last.text(),
            format!("{head}\n:white_check_mark: Approved by <@U_BOB>, <@U_ERIN>\n{link}"),
            "{channel}"
        );
        assert_eq!(last.body["blocks"], serde_json::json!([]), "{channel}");
    }
    // The status message never said "approved" twice either.
    for c in h.fake.mentioning(&id.to_string()) {
        assert!(
            !c.text().contains("`approved`\n_approved by"),
            "{}",
            c.text()
        );
    }
    assert_no_stale_approval_text(&h, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_approve_deny_cancel_and_retry_replies_say_what_happened_once() {
    let h = harness("").await;
    // approve: it runs. (Once its prompt is up: a request approved before
    // its renderer got to it has no prompt to update.)
    let (_, v) = h.slash("U_ALICE", "db.drop text=a", "trig-t1").await;
    let id = id_in(v["text"].as_str().unwrap());
    approval_message(&h, id, "C1").await;
    let (_, v) = h.slash("U_BOB", &format!("approve {id}"), "trig-t2").await;
    assert_eq!(
        first_line(&v),
        format!(":white_check_mark: Approved by <@U_BOB>; request `{id}` (`db.drop`) is starting.")
    );
    assert_eq!(
        v["text"].as_str().unwrap().lines().nth(1),
        Some(format!("<https://youops.example/requests/{id}|follow it on the dashboard>").as_str())
    );
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);
    let last = settled_prompt(&h, id, "C1").await;
    assert!(
        last.text()
            .contains("\n:white_check_mark: Approved by <@U_BOB>\n"),
        "{}",
        last.text()
    );
    assert_eq!(last.body["blocks"], serde_json::json!([]));
    assert_no_stale_approval_text(&h, id);

    // deny, with a reason.
    let (_, v) = h.slash("U_ALICE", "db.drop text=b", "trig-t3").await;
    let id = id_in(v["text"].as_str().unwrap());
    approval_message(&h, id, "C1").await;
    let (_, v) = h
        .slash("U_BOB", &format!("deny {id} too risky"), "trig-t4")
        .await;
    assert_eq!(
        first_line(&v),
        format!(":no_entry_sign: Denied by <@U_BOB> (too risky); request `{id}` (`db.drop`) will not run.")
    );
    let last = settled_prompt(&h, id, "C1").await;
    assert!(
        last.text()
            .contains("\n:no_entry_sign: Denied by <@U_BOB>: too risky\n"),
        "{}",
        last.text()
    );
    assert_eq!(last.body["blocks"], serde_json::json!([]));

    // cancel, by the requester.
    let (_, v) = h.slash("U_ALICE", "db.drop text=c", "trig-t5").await;
    let id = id_in(v["text"].as_str().unwrap());
    approval_message(&h, id, "C1").await;
    let (_, v) = h.slash("U_ALICE", &format!("cancel {id}"), "trig-t6").await;
    assert_eq!(
        first_line(&v),
        format!(
            ":no_entry_sign: Cancelled by <@U_ALICE>; request `{id}` (`db.drop`) will not run."
        )
    );
    let last = settled_prompt(&h, id, "C1").await;
    assert!(
        last.text()
            .contains("\n:no_entry_sign: Cancelled by alice\n"),
        "{}",
        last.text()
    );
    assert_eq!(last.body["blocks"], serde_json::json!([]));
    assert_no_stale_approval_text(&h, id);

    // retry of a finished request: a new request, said once.
    let (_, v) = h.slash("U_ALICE", "echo text=again", "trig-t7").await;
    let old = id_in(v["text"].as_str().unwrap());
    h.exec.wait(old).await.unwrap();
    let (_, v) = h.slash("U_ALICE", &format!("retry {old}"), "trig-t8").await;
    let new = id_in(v["text"].as_str().unwrap());
    assert_ne!(new, old);
    assert_eq!(
        first_line(&v),
        format!(":ok: Accepted: request `{new}` (`echo`), a retry of `{old}`. Progress and the result will be posted in this channel.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_other_frontends_can_be_approved_from_the_approvals_channel() {
    let h = harness("approvals_channel = \"CAPPROVE\"").await;
    let t = h
        .exec
        .submit(
            Submission::new("db.drop", Actor::new("cli", "dave"), Origin::new("cli"))
                .arg("text", "orders"),
        )
        .await
        .unwrap();
    let id = t.record.request.id;
    let (value, _) = approval_message(&h, id, "CAPPROVE").await;
    let ts = posted_ts(&h, "CAPPROVE", &id.to_string());
    let prompt = h.fake.mentioning(&id.to_string());
    assert!(prompt[0].text().contains("via cli"), "{}", prompt[0].text());
    // Deny it from Slack.
    h.post(signed(
        "/slack/interactions",
        "application/x-www-form-urlencoded",
        block_actions_body(&h.fake, "U_BOB", "CAPPROVE", &ts, "youops_deny", &value),
        now(),
        SECRET,
    ))
    .await;
    let done = h.exec.wait(id).await.unwrap();
    assert_eq!(done.state, State::Rejected);
    eventually("the prompt updated with who denied", || async {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .find(|c| c.channel() == "CAPPROVE" && c.text().contains("Denied by <@U_BOB>"))
    })
    .await;
    // Typed `approve ID` works too (here: it is no longer pending, and says so).
    let (_, v) = h.slash("U_BOB", &format!("approve {id}"), "trig-o1").await;
    assert!(v["text"].as_str().unwrap().contains("not pending"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_output_shows_head_tail_and_a_link() {
    let h = harness("").await;
    let (_, v) = h.slash("U_ALICE", "big", "trig-big").await;
    let id = id_in(v["text"].as_str().unwrap());
    let done = h.exec.wait(id).await.unwrap();
    assert!(done.outcome.as_ref().unwrap().output.len() > 50_000);
    let result = eventually("the result", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("state: `succeeded`") && c.body.get("thread_ts").is_some())
    })
    .await;
    let t = result.text();
    assert!(
        t.contains("HEAD-MARKER") && t.contains("TAIL-MARKER"),
        "head and tail shown"
    );
    assert!(t.contains("characters omitted"), "the cut is said");
    assert!(
        t.contains(&format!("https://youops.example/requests/{id}")),
        "link to the full output"
    );
    assert!(
        t.chars().count() <= 4000,
        "within Slack's message text limit: {}",
        t.chars().count()
    );
}

/// Where request `id`'s status message is, as its renderer recorded it (the
/// `chat_status_message` notice): the message's ts.
async fn recorded_status(h: &Harness, id: RequestId) -> String {
    let events = h.exec.events(id).await.unwrap();
    let recorded: Vec<&serde_json::Value> = events
        .iter()
        .filter_map(|e| match &e.body {
            youops_core::EventBody::Notice { kind, data, .. } if kind == "chat_status_message" => {
                Some(data)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded.len(),
        1,
        "one status message recorded: {events:#?}"
    );
    assert_eq!(recorded[0]["channel"], "C1", "{:#}", recorded[0]);
    recorded[0]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_after_a_restart_the_status_message_is_edited_not_posted_again() {
    let h = harness("").await;
    let (_, v) = h.slash("U_ALICE", "db.drop text=r", "trig-r1").await;
    let id = id_in(v["text"].as_str().unwrap());
    // The prompt is up, in the thread of the status message.
    approval_message(&h, id, "C1").await;
    let ts = recorded_status(&h, id).await;

    // The daemon stops and starts again; then the request is approved.
    let h = h.restart().await;
    let restarted = Instant::now();
    let (_, v) = h.slash("U_BOB", &format!("approve {id}"), "trig-r2").await;
    assert!(
        first_line(&v).starts_with(":white_check_mark: Approved by <@U_BOB>"),
        "{v}"
    );
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);

    // The status message posted before the restart says so, and the result
    // is in its thread; nothing else about the request is posted at the
    // channel's top level.
    let edited = eventually("the status message to say succeeded", || async {
        h.fake.calls_of("chat.update").into_iter().find(|c| {
            c.body["ts"] == ts.as_str()
                && c.text().contains(&id.to_string())
                && c.text().contains("state: `succeeded`")
        })
    })
    .await;
    assert_eq!(edited.channel(), "C1");
    eventually("the result in the status message's thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.body["thread_ts"] == ts.as_str() && c.text().contains("state: `succeeded`"))
    })
    .await;
    let top_level: Vec<Call> = h
        .fake
        .calls_of("chat.postMessage")
        .into_iter()
        .filter(|c| {
            c.at > restarted
                && c.body.get("thread_ts").is_none()
                && c.text().contains(&id.to_string())
        })
        .collect();
    assert!(top_level.is_empty(), "posted again: {top_level:#?}");
}
