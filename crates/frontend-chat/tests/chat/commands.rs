//! Slash commands and mentions: acks, results in threads, help, errors,
//! unmapped users and redeliveries.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use youops_core::{Actor, EventBody, State};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_command_is_acked_then_result_posted_in_a_thread() {
    // `status_delay = "0s"`: the status message goes out as soon as the op runs,
    // and is then updated in place to the end state.
    let h = harness("status_delay = \"0s\"").await;
    let (status, v) = h
        .slash("U_ALICE", "echo text=\"hello world\"", "trig-1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["response_type"], "ephemeral");
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("Accepted"), "{text}");
    assert!(
        text.contains("https://youops.example/requests/"),
        "dashboard link: {text}"
    );
    let id = id_in(text);
    let done = h.exec.wait(id).await.unwrap();
    assert_eq!(done.state, State::Succeeded);
    assert_eq!(done.request.actor.principal.as_deref(), Some("alice"));
    assert_eq!(done.request.origin.location, "C1");
    // Status message at the channel's top level, result in its thread.
    let result = eventually("the result in the thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("hello world") && c.body.get("thread_ts").is_some())
    })
    .await;
    let status_msg = h
        .fake
        .calls_of("chat.postMessage")
        .into_iter()
        .find(|c| c.text().contains(&id.to_string()) && c.body.get("thread_ts").is_none())
        .expect("a status message");
    assert_eq!(status_msg.channel(), "C1");
    assert!(
        result.text().contains("state: `succeeded`"),
        "{}",
        result.text()
    );
    assert!(result.text().contains("duration"), "{}", result.text());
    assert_eq!(
        h.fake.posts_mentioning(&id.to_string()),
        2,
        "one status message and one result, no spam"
    );

    // A run the renderer sees running: its status message is updated in place
    // to the end state, not re-posted. (An echo may end before the renderer
    // looks, and is then posted in its end state at once.)
    let (status, v) = h.slash("U_ALICE", "gated", "trig-gated").await;
    assert_eq!(status, StatusCode::OK);
    let id = id_in(v["text"].as_str().unwrap());
    eventually("the status message showing running", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains(&id.to_string()) && c.text().contains("state: `running`"))
    })
    .await;
    h.gate.store(true, Ordering::SeqCst);
    eventually("the status message updated to succeeded", || async {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .find(|c| c.text().contains(&id.to_string()) && c.text().contains("state: `succeeded`"))
    })
    .await;
    eventually("the gated result in the thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("through the gate") && c.body.get("thread_ts").is_some())
    })
    .await;
    assert_eq!(
        h.fake.posts_mentioning(&id.to_string()),
        2,
        "one status message and one result, no spam"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_shorter_than_the_status_delay_gets_one_status_message_in_its_end_state() {
    // A delay (10 s) an echo ends long before, even on a loaded machine.
    let h = harness("status_delay = \"10s\"").await;
    let (status, v) = h.slash("U_ALICE", "echo text=quick", "trig-quick").await;
    assert_eq!(status, StatusCode::OK);
    let id = id_in(v["text"].as_str().unwrap());
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);
    let result = eventually("the result in the thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("quick") && c.body.get("thread_ts").is_some())
    })
    .await;
    assert!(
        result.text().contains("state: `succeeded`"),
        "{}",
        result.text()
    );
    let about_id = h.fake.mentioning(&id.to_string());
    let status_msgs: Vec<_> = about_id
        .iter()
        .filter(|c| c.method == "chat.postMessage" && c.body.get("thread_ts").is_none())
        .collect();
    assert_eq!(status_msgs.len(), 1, "{about_id:?}");
    assert!(
        status_msgs[0].text().contains("state: `succeeded`"),
        "posted in its end state, never as running: {}",
        status_msgs[0].text()
    );
    assert!(
        about_id.iter().all(|c| c.method != "chat.update"),
        "nothing to update: {about_id:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_second_op_is_still_acknowledged_within_three_seconds() {
    let h = harness("progress_every = \"1s\"").await;
    let start = Instant::now();
    let (status, v) = h.slash("U_ALICE", "slow", "trig-slow").await;
    let took = start.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert!(took < Duration::from_secs(3), "ack took {took:?}");
    let id = id_in(v["text"].as_str().unwrap());
    let rec = h
        .exec
        .wait_for(id, |r| r.state == State::Running)
        .await
        .unwrap();
    assert_eq!(rec.state, State::Running, "still running after the ack");
    // Progress: the status message is refreshed in place with the elapsed time.
    let upd = eventually("a progress update", || async {
        h.fake
            .calls_of("chat.update")
            .into_iter()
            .find(|c| c.text().contains(&id.to_string()) && c.text().contains("running for 0m0"))
    })
    .await;
    assert!(upd.text().contains("state: `running`"), "{}", upd.text());
    let posts = h.fake.mentioning(&id.to_string());
    assert_eq!(
        posts
            .iter()
            .filter(|c| c.method == "chat.postMessage")
            .count(),
        1,
        "progress is not spammed as new messages"
    );
    h.exec
        .cancel(id, &Actor::new("slack", "U_ALICE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_reach_a_channel_the_bot_is_not_in_through_response_url() {
    let h = harness("").await;
    let body = slash_body(
        &h.fake,
        "U_ALICE",
        "CPRIVATE",
        "echo text=private-result",
        "trig-priv",
    );
    let res = h
        .post(signed(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            body,
            now(),
            SECRET,
        ))
        .await;
    let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    let id = id_in(v["text"].as_str().unwrap());
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);
    let got = eventually("the result through response_url", || async {
        h.fake
            .calls_of("response_url/trig-priv")
            .into_iter()
            .find(|c| c.text().contains("private-result"))
    })
    .await;
    assert_eq!(got.body["response_type"], "in_channel");
    assert!(got.text().contains("state: `succeeded`"));
    let failed = h
        .exec
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(&e.body, EventBody::Notice { kind, message, .. } if kind == "feedback_failed" && message.contains("not_in_channel")))
        .count();
    assert_eq!(failed, 1, "the failed post is on the record, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_errors_are_precise_and_filtered_by_permission() {
    let h = harness("").await;
    let (_, v) = h.slash("U_ALICE", "help", "trig-h1").await;
    let alice = v["text"].as_str().unwrap().to_string();
    for op in ["echo", "slow", "big", "db.drop"] {
        assert!(alice.contains(op), "{op} in {alice}");
    }
    let (_, v) = h.slash("U_CAROL", "", "trig-h2").await;
    let carol = v["text"].as_str().unwrap().to_string();
    assert!(carol.contains("echo"), "{carol}");
    for op in ["slow", "big", "db.drop"] {
        assert!(!carol.contains(op), "carol must not see {op}: {carol}");
    }
    // A parse error says where and why.
    let (status, v) = h.slash("U_ALICE", "echo text=\"unclosed", "trig-h3").await;
    assert_eq!(status, StatusCode::OK);
    let t = v["text"].as_str().unwrap();
    assert!(
        t.contains("could not read") && t.to_lowercase().contains("quote"),
        "{t}"
    );
    // An unknown op suggests the right one.
    let (_, v) = h.slash("U_ALICE", "ecko text=x", "trig-h4").await;
    let t = v["text"].as_str().unwrap();
    assert!(t.contains("invalid") && t.contains("echo"), "{t}");
    // Permission denied explains itself.
    let (_, v) = h.slash("U_CAROL", "slow", "trig-h5").await;
    let t = v["text"].as_str().unwrap();
    assert!(t.contains("denied"), "{t}");
    assert_eq!(h.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_user_gets_a_clear_reply_and_nothing_runs() {
    let h = harness("").await;
    let (status, v) = h.slash("U_STRANGER", "echo text=hi", "trig-u1").await;
    assert_eq!(status, StatusCode::OK);
    let t = v["text"].as_str().unwrap();
    assert!(
        t.contains("not mapped to a YouOps principal") && t.contains("U_STRANGER"),
        "{t}"
    );
    let (_, v) = h.slash("U_STRANGER", "help", "trig-u2").await;
    assert!(v["text"].as_str().unwrap().contains("not mapped"));
    let reqs = h.requests().await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].state,
        State::Denied,
        "recorded as denied by the executor"
    );
    assert_eq!(h.runs.load(Ordering::SeqCst), 0);
    // Nothing public was posted about it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.fake.calls_of("chat.postMessage").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_mention_runs_once_and_is_answered_in_its_thread() {
    let h = harness("").await;
    let body = mention_body(
        "U_ALICE",
        "C1",
        "echo text=from-mention",
        "Ev0LAN670R",
        "1515449522.000016",
    );
    let res = h
        .post(signed(
            "/slack/events",
            "application/json",
            body.clone(),
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let reply = eventually("the reply in the mention's thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("Accepted"))
    })
    .await;
    assert_eq!(reply.body["thread_ts"], "1515449522.000016");
    let id = id_in(reply.text());
    h.exec.wait(id).await.unwrap();
    // Slack retries the same event (it thought we were too slow).
    for n in 1..=2 {
        let mut req = signed(
            "/slack/events",
            "application/json",
            body.clone(),
            now(),
            SECRET,
        );
        req.headers_mut()
            .insert("x-slack-retry-num", n.to_string().parse().unwrap());
        req.headers_mut()
            .insert("x-slack-retry-reason", "http_timeout".parse().unwrap());
        assert_eq!(h.post(req).await.status(), StatusCode::OK);
    }
    let notices = eventually("the retries to be recorded", || async {
        let n: Vec<_> = h
            .exec
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .filter(
                |e| matches!(&e.body, EventBody::Notice { kind, .. } if kind == "delivery_retry"),
            )
            .collect();
        (n.len() == 2).then_some(n)
    })
    .await;
    assert!(format!("{:?}", notices[0].body).contains("http_timeout"));
    assert_eq!(h.requests().await.len(), 1);
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
    // All answers went to the mention's thread, and the retries were not answered again.
    let result = eventually("the result in the thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("state: `succeeded`") && c.text().contains("from-mention"))
    })
    .await;
    assert_eq!(result.body["thread_ts"], "1515449522.000016");
    assert_eq!(
        h.fake
            .calls_of("chat.postMessage")
            .iter()
            .filter(|c| c.text().contains("Accepted"))
            .count(),
        1
    );
}
