//! Socket Mode: slash commands over the websocket.

use std::sync::atomic::Ordering;
use std::time::Duration;

use youops_core::State;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_takes_slash_commands_over_the_websocket() {
    let h = harness(&format!(
        "transport = \"socket\"\napp_token = {APP_TOKEN:?}"
    ))
    .await;
    assert!(h.host.routes().is_empty(), "no HTTP routes in Socket Mode");
    eventually("the websocket to connect", || async {
        (h.fake.state.ws_connected.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let payload = serde_json::json!({
        "token": "gIkuvaNzQIHg97ATvDxqgjtO", "team_id": "T1", "team_domain": "acme",
        "channel_id": "C1", "channel_name": "ops", "user_id": "U_ALICE", "user_name": "alice",
        "command": "/ops", "text": "echo text=over-socket", "api_app_id": "A1",
        "is_enterprise_install": "false",
        "response_url": format!("{}/respond/sock", h.fake.base),
        "trigger_id": "sock-trigger-1"
    });
    let envelope = serde_json::json!({"envelope_id": "env-1", "type": "slash_commands",
        "accepts_response_payload": true, "payload": payload});
    h.fake.ws_tx.send(envelope.to_string()).unwrap();
    let ack = eventually("the envelope ack", || async {
        h.fake
            .state
            .ws_in
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["envelope_id"] == "env-1")
            .cloned()
    })
    .await;
    let text = ack["payload"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("Accepted"), "{ack}");
    let id = id_in(&text);
    assert_eq!(h.exec.wait(id).await.unwrap().state, State::Succeeded);
    eventually("the result posted through the Web API", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.text().contains("over-socket") && c.body.get("thread_ts").is_some())
    })
    .await;
    // A mention over the socket, delivered twice (Slack redelivers unacked envelopes): one run.
    for env in ["env-2", "env-3"] {
        let ev: serde_json::Value = serde_json::from_str(&mention_body(
            "U_ALICE",
            "C1",
            "echo text=sock-mention",
            "EvSOCK1",
            "1700000100.000001",
        ))
        .unwrap();
        let envelope = serde_json::json!({"envelope_id": env, "type": "events_api",
            "accepts_response_payload": false, "retry_attempt": 0, "retry_reason": "", "payload": ev});
        h.fake.ws_tx.send(envelope.to_string()).unwrap();
    }
    eventually("both envelopes acked", || async {
        let acks = h.fake.state.ws_in.lock().unwrap().clone();
        (acks.iter().any(|v| v["envelope_id"] == "env-2")
            && acks.iter().any(|v| v["envelope_id"] == "env-3"))
        .then_some(())
    })
    .await;
    let reply = eventually("the mention answered in its thread", || async {
        h.fake
            .calls_of("chat.postMessage")
            .into_iter()
            .find(|c| c.body["thread_ts"] == "1700000100.000001" && c.text().contains("Accepted"))
    })
    .await;
    let mid = id_in(reply.text());
    h.exec.wait(mid).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ops: Vec<_> = h
        .requests()
        .await
        .into_iter()
        .filter(|r| r.request.dedup_key.as_deref() == Some("slack:event:EvSOCK1"))
        .collect();
    assert_eq!(ops.len(), 1);
}
