//! What the fake Slack (the kit's, on the fakes' runtime) saw: a count of every
//! feedback call, and the requests it mentioned.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use youops_testkit::slack::{Call, FakeSlack, SlackOptions};

use super::wire::ulids;
use crate::lock;

#[derive(Debug, Default)]
pub(crate) struct SlackFake {
    /// Calls by method (`chat.postMessage`, `chat.postMessage (thread)`, …).
    pub(crate) calls: Mutex<BTreeMap<String, u64>>,
    /// Requests whose `succeeded` result was posted in a thread.
    pub(crate) results: Mutex<HashSet<String>>,
    /// Requests mentioned in any call.
    pub(crate) mentioned: Mutex<HashSet<String>>,
}

impl SlackFake {
    /// Count one call.
    fn saw(&self, call: &Call) {
        let text = call.body.to_string();
        if call.method.starts_with("response_url/") {
            *lock(&self.calls).entry("response_url".into()).or_default() += 1;
            lock(&self.mentioned).extend(ulids(&text));
            return;
        }
        let in_thread = call.body.get("thread_ts").is_some();
        let key = if in_thread {
            format!("{} (thread)", call.method)
        } else {
            call.method.clone()
        };
        *lock(&self.calls).entry(key).or_default() += 1;
        let ids = ulids(&text);
        if !ids.is_empty() {
            lock(&self.mentioned).extend(ids.iter().cloned());
            if call.method == "chat.postMessage" && in_thread && text.contains("`succeeded`") {
                lock(&self.results).extend(ids);
            }
        }
    }

    /// Serve the kit's fake Slack on `listener` (any token, no call kept),
    /// counting into a new tally; call inside the fakes' runtime.
    pub(crate) fn serve(listener: tokio::net::TcpListener) -> Arc<SlackFake> {
        let tally = Arc::new(SlackFake::default());
        let t = tally.clone();
        FakeSlack::serve(
            listener,
            SlackOptions {
                bot_token: None,
                app_token: None,
                record: false,
                observe: Some(Arc::new(move |c: &Call| t.saw(c))),
            },
        );
        tally
    }
}
