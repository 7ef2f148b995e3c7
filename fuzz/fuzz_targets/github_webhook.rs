#![no_main]
//! GitHub webhook bodies: content-type handling and event decoding never panic.
use libfuzzer_sys::fuzz_target;
use youops_frontend_issue::webhook;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    const EVENTS: [&str; 7] = ["issues", "issue_comment", "ping", "push", "installation", "label", "unknown"];
    let event = EVENTS[usize::from(selector) % EVENTS.len()];
    let content_type = if selector & 0x80 == 0 { Some("application/json") } else { Some("application/x-www-form-urlencoded") };
    if let Ok(json) = webhook::payload_json(content_type, body) {
        let _ = webhook::decode(event, &json);
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(&body[..body.len().min(80)]) {
        headers.insert("x-hub-signature-256", v);
    }
    let _ = webhook::verify(b"fuzz-secret", &headers, body);
});
