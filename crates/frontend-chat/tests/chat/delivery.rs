//! Outbound delivery: long output, pacing, `Retry-After`, and Slack
//! answering 500, 429, hanging or dropping connections.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use youops_core::{EventBody, RequestId, State};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_honoured_and_the_retry_recorded() {
    let h = harness("").await;
    h.fake
        .state
        .rate_limit_next_post
        .store(true, Ordering::SeqCst);
    let (_, v) = h.slash("U_ALICE", "echo text=after-429", "trig-429").await;
    let id = id_in(v["text"].as_str().unwrap());
    let result = eventually("the result despite the 429", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("after-429") && c.body.get("thread_ts").is_some())
    })
    .await;
    assert!(result.text().contains("succeeded"));
    let calls = h.fake.calls();
    let limited = calls
        .iter()
        .position(|c| c.method == "chat.postMessage (429)")
        .expect("a 429 was served");
    assert!(
        calls[limited + 1..]
            .iter()
            .any(|c| c.method == "chat.postMessage"),
        "retried after"
    );
    let ev = h.exec.events(id).await.unwrap();
    let retry = ev
        .iter()
        .find_map(|e| match &e.body {
            EventBody::Notice { kind, message, .. } if kind == "feedback_retry" => {
                Some(message.clone())
            }
            _ => None,
        })
        .expect("the retry is in the audit log");
    assert!(
        retry.contains("rate limited") && retry.contains("1000 ms"),
        "{retry}"
    );
    assert!(
        !format!("{ev:?}").contains(BOT_TOKEN),
        "no token in the audit log"
    );
}

/// Slash commands `echo text=<tag>-<i>` in C1, `n` in quick succession; returns
/// their requests once every result is in its thread.
async fn echoes_in_c1(h: &Harness, tag: &str, n: usize) -> Vec<RequestId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (_, v) = h
            .slash(
                "U_ALICE",
                &format!("echo text={tag}-{i}"),
                &format!("trig-{tag}-{i}"),
            )
            .await;
        ids.push(id_in(v["text"].as_str().unwrap()));
    }
    for id in &ids {
        h.exec.wait(*id).await.unwrap();
    }
    let prefix = format!("{tag}-");
    eventually("every result", || async {
        let posted = h
            .fake
            .calls_of("chat.postMessage")
            .into_iter()
            .filter(|c| c.text().contains(&prefix) && c.body.get("thread_ts").is_some())
            .count();
        (posted == n).then_some(())
    })
    .await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_channel_pace_is_about_one_message_per_second() {
    // Two messages per second per channel: consecutive writes to one channel are
    // at least ~0.5 s apart, while another channel is not held up by it.
    let h = harness("max_messages_per_second_per_channel = 2").await;
    echoes_in_c1(&h, "paced", 2).await;
    let writes: Vec<Call> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.channel() == "C1" && c.method.starts_with("chat."))
        .collect();
    assert!(writes.len() >= 4, "{} writes", writes.len());
    // Slots are 500 ms apart when reserved; what the fake sees also varies by
    // each send's own delay (the first opens a connection), so a pair may land
    // a little closer, but never near back to back, and the whole span holds.
    for pair in writes.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(250),
            "two writes to C1 only {gap:?} apart"
        );
    }
    let span = writes[writes.len() - 1].at.duration_since(writes[0].at);
    let least = Duration::from_millis(500 * (writes.len() as u64 - 1) - 150);
    assert!(
        span >= least,
        "{} writes to C1 within {span:?} (at least {least:?} when paced)",
        writes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_channel_is_not_taken_for_a_timeout() {
    // Eight writes (a status and a result each) to one channel at two a
    // second: the last ones wait seconds for their slot, far past the 1 s
    // request timeout, which bounds only the call itself. None of them is
    // retried or given up.
    let h = harness("max_messages_per_second_per_channel = 2\nrequest_timeout = \"1s\"").await;
    let ids = echoes_in_c1(&h, "queued", 4).await;
    for id in ids {
        let ev = format!("{:?}", h.exec.events(id).await.unwrap());
        assert!(
            !ev.contains("feedback_retry") && !ev.contains("feedback_failed"),
            "{ev}"
        );
    }
}

// ---------------------------------------------------------------------------
// Faults of the outside world: Slack answering 500, 429, hanging, dropping
// ---------------------------------------------------------------------------

/// The channel Slack misbehaves about.
const FAULTY: &str = "CF";

/// Short delivery timings (production defaults: 8 attempts, 500 ms, 10 s), so a
/// fault plays out in about a second. The timeout is long enough that a healthy
/// call on a loaded machine is never taken for a fault.
const FAST: &str = "max_delivery_attempts = 2\nretry_backoff = \"50ms\"\nrequest_timeout = \"3s\"";

/// [`FAST`] with a shorter timeout, for a Slack that hangs.
const FAST_HANG: &str =
    "max_delivery_attempts = 2\nretry_backoff = \"50ms\"\nrequest_timeout = \"1s\"";

/// The notices of `kind` on a request's audit trail.
async fn notices_on(h: &Harness, id: RequestId, kind: &str) -> Vec<String> {
    h.exec
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Notice {
                kind: k, message, ..
            } if k == kind => Some(message),
            _ => None,
        })
        .collect()
}

/// Slack misbehaves (`fault`) on every call about channel [`FAULTY`] — or,
/// unless `lasting`, only on the first. A slash command there and one in C1
/// both run and are stored as succeeded whatever Slack does; C1's result
/// reaches Slack meanwhile, and the frontend stays ready. Returns the harness
/// and the faulty channel's request.
async fn slack_fault(fault: Fault, lasting: bool) -> (Harness, RequestId) {
    let h = harness(if fault == Fault::Hang {
        FAST_HANG
    } else {
        FAST
    })
    .await;
    h.fake.set_fault(fault, FAULTY, (!lasting).then_some(1));
    let t0 = Instant::now();
    let (status, v) = h
        .slash_in(FAULTY, "U_ALICE", "echo text=faulty-result", "CF-1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the ack (in the HTTP answer) took {:?}",
        t0.elapsed()
    );
    let id = id_in(v["text"].as_str().unwrap());
    // The result is in the audit log whatever Slack does.
    let rec = h.exec.wait(id).await.unwrap();
    assert_eq!(rec.state, State::Succeeded);
    assert_eq!(rec.outcome.as_ref().unwrap().output, "faulty-result");
    // The frontend did try to tell Slack, and Slack misbehaved.
    eventually("a call Slack misbehaved on", || async {
        (!h.fake.faulted().is_empty()).then_some(())
    })
    .await;
    // Meanwhile another channel works end to end.
    let (_, v) = h.slash("U_ALICE", "echo text=healthy-result", "C1-1").await;
    let other = id_in(v["text"].as_str().unwrap());
    let posted = eventually("the other channel's result", || async {
        h.fake.calls_of("chat.postMessage").into_iter().find(|c| {
            c.channel() == "C1"
                && c.text().contains("healthy-result")
                && c.body.get("thread_ts").is_some()
        })
    })
    .await;
    assert!(posted.text().contains("succeeded"), "{}", posted.text());
    for kind in ["feedback_retry", "feedback_failed", "chat_undelivered"] {
        assert!(
            notices_on(&h, other, kind).await.is_empty(),
            "{kind} on the healthy channel's request"
        );
    }
    assert!(h.host.readiness().iter().all(|(_, r)| *r), "still ready");
    (h, id)
}

/// The result of `id` reached Slack in the faulty channel's thread, once, and
/// exactly one retry is on the record (saying `why`); nothing failed.
async fn assert_recovered(h: &Harness, id: RequestId, why: &str) {
    let result = eventually("the result despite the fault", || async {
        h.fake.calls_of("chat.postMessage").into_iter().find(|c| {
            c.channel() == FAULTY
                && c.text().contains("faulty-result")
                && c.body.get("thread_ts").is_some()
        })
    })
    .await;
    assert!(result.text().contains("succeeded"), "{}", result.text());
    let retries = notices_on(h, id, "feedback_retry").await;
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(retries[0].contains(why), "{retries:?}");
    assert!(notices_on(h, id, "feedback_failed").await.is_empty());
    assert!(notices_on(h, id, "chat_undelivered").await.is_empty());
    let statuses = h
        .fake
        .calls_of("chat.postMessage")
        .into_iter()
        .filter(|c| c.text().contains(&id.to_string()) && c.body.get("thread_ts").is_none())
        .count();
    assert_eq!(statuses, 1, "one status message, not one per attempt");
    assert!(h.exec.store().verify().await.unwrap().ok());
}

/// Slack kept failing: every route was tried, each retry and give-up is on the
/// record (saying `why`), the undelivered result is named, and no secret (bot
/// token, response_url) reached the audit log.
async fn assert_given_up(h: &Harness, id: RequestId, why: &str) {
    let undelivered = eventually("the chat_undelivered notice", || async {
        notices_on(h, id, "chat_undelivered").await.pop()
    })
    .await;
    assert!(
        undelivered.contains("succeeded") && undelivered.contains(FAULTY),
        "{undelivered}"
    );
    let retries = notices_on(h, id, "feedback_retry").await;
    assert!(retries.len() >= 2, "{retries:?}");
    assert!(retries.iter().all(|r| r.contains(why)), "{retries:?}");
    let failed = notices_on(h, id, "feedback_failed").await;
    for route in [
        "chat.postMessage (status)",
        "response_url (result)",
        "chat.postMessage (result, no status message)",
    ] {
        assert!(
            failed
                .iter()
                .any(|f| f.contains(route) && f.contains("failed 2 times")),
            "{route} gave up: {failed:?}"
        );
    }
    // Nothing about it got through (every call about CF was a fault).
    assert!(
        h.fake
            .calls()
            .iter()
            .filter(|c| c.text().contains("faulty-result"))
            .all(|c| c.method.ends_with("(fault)")),
        "{:?}",
        h.fake.calls()
    );
    let all = format!("{:?}", h.exec.events(id).await.unwrap());
    assert!(!all.contains(BOT_TOKEN), "no token in the audit log");
    assert!(
        !all.contains("/respond/"),
        "no response_url in the audit log"
    );
    assert!(h.exec.store().verify().await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_answering_500_keeps_the_result_and_the_frontend_healthy() {
    // A passing 500: the retry posts the status, and the result follows.
    let (h, id) = slack_fault(Fault::Status(500), false).await;
    assert_recovered(&h, id, "HTTP 500").await;
    drop(h);
    // A lasting 500: bounded retries on every route, then the audit says so.
    let (h, id) = slack_fault(Fault::Status(500), true).await;
    assert_given_up(&h, id, "HTTP 500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_answering_429_is_waited_out_per_retry_after() {
    let (h, id) = slack_fault(Fault::RateLimited(1), false).await;
    assert_recovered(&h, id, "rate limited (429)); retrying in 1000 ms").await;
    // The retry came no sooner than Retry-After said.
    let calls: Vec<Call> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.channel() == FAULTY)
        .collect();
    let limited = calls
        .iter()
        .position(|c| c.method.ends_with("(fault)"))
        .unwrap();
    let gap = calls[limited + 1].at.duration_since(calls[limited].at);
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    drop(h);
    let (h, id) = slack_fault(Fault::RateLimited(1), true).await;
    assert_given_up(&h, id, "rate limited (429)); retrying in 1000 ms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_hanging_is_cut_by_the_client_timeout_and_retried() {
    let (h, id) = slack_fault(Fault::Hang, false).await;
    assert_recovered(&h, id, "no answer within 1000 ms").await;
    drop(h);
    let (h, id) = slack_fault(Fault::Hang, true).await;
    let t0 = Instant::now();
    assert_given_up(&h, id, "no answer within 1000 ms").await;
    // Six attempts of at most 1 s each, and short backoffs; not the 10 s
    // production timeout.
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_dropping_connections_is_retried() {
    let (h, id) = slack_fault(Fault::Drop, false).await;
    assert_recovered(&h, id, "connection failed").await;
    drop(h);
    let (h, id) = slack_fault(Fault::Drop, true).await;
    assert_given_up(&h, id, "connection failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_whose_status_message_was_lost_reaches_the_thread_once_slack_recovers() {
    let h = harness(FAST).await;
    h.fake.set_fault(Fault::Status(500), FAULTY, None);
    // A mention (no response_url) of an op that runs until the gate opens.
    let res = h
        .post(signed(
            "/slack/events",
            "application/json",
            mention_body("U_ALICE", FAULTY, "gated", "Ev0FAULT1", "1700000100.000100"),
            now(),
            SECRET,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let id = eventually("the request", || async {
        h.requests()
            .await
            .into_iter()
            .find(|r| r.request.op == "gated")
    })
    .await
    .request
    .id;
    // While it runs, Slack fails: the reply and the status message are given up.
    let failed = eventually("the status post given up", || async {
        let f = notices_on(&h, id, "feedback_failed").await;
        f.iter()
            .any(|m| m.contains("chat.postMessage (status)"))
            .then_some(f)
    })
    .await;
    assert!(
        failed
            .iter()
            .any(|m| m.contains("chat.postMessage (reply)")),
        "{failed:?}"
    );
    assert_eq!(h.exec.get(id).await.unwrap().state, State::Running);
    // Slack recovers; the op ends: the result is posted in the mention's thread.
    h.fake.clear_fault();
    h.gate.store(true, Ordering::SeqCst);
    let result = eventually("the result in the thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.channel() == FAULTY && c.text().contains("through the gate"))
    })
    .await;
    assert_eq!(result.body["thread_ts"], "1700000100.000100");
    assert!(result.text().contains("succeeded"), "{}", result.text());
    assert!(notices_on(&h, id, "chat_undelivered").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_slack_does_not_hold_up_shutdown_and_the_cut_delivery_is_audited() {
    // A client timeout long enough that the delivery is still hanging at shutdown.
    let h =
        harness("max_delivery_attempts = 2\nretry_backoff = \"50ms\"\nrequest_timeout = \"1s\"")
            .await;
    h.fake.set_fault(Fault::Hang, FAULTY, None);
    let (_, v) = h
        .slash_in(FAULTY, "U_ALICE", "echo text=cut-short", "CF-cut")
        .await;
    let id = id_in(v["text"].as_str().unwrap());
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);
    eventually("a hanging call", || async {
        (!h.fake.faulted().is_empty()).then_some(())
    })
    .await;
    let t0 = Instant::now();
    h.shutdown.cancel();
    let tasks: Vec<_> = std::mem::take(&mut *h.tasks.lock().unwrap());
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("the frontend stops");
        assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    }
    // One request timeout of grace (1 s), then the deliveries are cut and the
    // cut is audited: well short of every attempt on every route (6 s).
    assert!(
        t0.elapsed() < Duration::from_millis(4000),
        "stop took {:?} (a hanging Slack must not hold up shutdown)",
        t0.elapsed()
    );
    let failed = notices_on(&h, id, "feedback_failed").await;
    assert!(
        failed.iter().any(|m| m.contains("abandoned at shutdown")),
        "{failed:?}"
    );
    let undelivered = notices_on(&h, id, "chat_undelivered").await;
    assert_eq!(undelivered.len(), 1, "{undelivered:?} {failed:?}");
    assert!(h.exec.store().verify().await.unwrap().ok());
}
