//! What the fake GitHub (the kit's, lenient, on the fakes' runtime) saw: a
//! count of every feedback call by kind, and the command comments that got a
//! 🚀.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use youops_testkit::github::{Call, FakeGithub, GithubOptions};

use crate::lock;

/// The GitHub repository the config manages.
pub(crate) const GH_REPO: &str = "acme/soak";

/// Now, as GitHub writes times.
pub(crate) use youops_testkit::github::now as gh_now;

#[derive(Debug, Default)]
pub(crate) struct GithubFake {
    /// Calls by `METHOD kind` (`POST comment`, `POST reaction rocket`, …).
    pub(crate) calls: Mutex<BTreeMap<String, u64>>,
    /// Comment ids (the driver's command comments) that got a 🚀.
    pub(crate) rockets: Mutex<HashSet<u64>>,
}

impl GithubFake {
    /// The kind of a call, as counted.
    fn kind(&self, call: &Call) -> String {
        let segs: Vec<&str> = call.path.trim_start_matches('/').split('/').collect();
        let m = call.method.as_str();
        let prefix = format!("repos/{GH_REPO}/issues");
        if segs.len() < 4 || segs[..4].join("/") != prefix {
            return format!("{m} other");
        }
        let content = call.body["content"].as_str().unwrap_or("");
        match (m, &segs[4..]) {
            ("POST", ["comments", id, "reactions"]) => {
                if content == "rocket" {
                    lock(&self.rockets).insert(id.parse().unwrap_or(0));
                }
                format!("POST reaction {content}")
            }
            ("POST", [_, "reactions"]) => format!("POST reaction {content} (issue)"),
            ("PATCH", ["comments", _]) => "PATCH comment".into(),
            ("GET", [_, "comments"]) => "GET comments".into(),
            ("POST", [_, "comments"]) => "POST comment".into(),
            ("GET", [_, "labels"]) => "GET labels".into(),
            ("POST", [_, "labels"]) => "POST labels".into(),
            ("DELETE", [_, "labels", _]) => "DELETE label".into(),
            ("PATCH", [_]) => "PATCH issue".into(),
            _ => format!("{m} other"),
        }
    }

    /// Serve the kit's fake GitHub on `listener` (lenient: the driver's issues
    /// and comments exist; no call kept), counting into a new tally; call
    /// inside the fakes' runtime. The comments it creates are numbered from
    /// 90,000,001 (the driver's own are 50,000,000 on).
    pub(crate) fn serve(listener: tokio::net::TcpListener) -> Arc<GithubFake> {
        let tally = Arc::new(GithubFake::default());
        let t = tally.clone();
        FakeGithub::serve(
            listener,
            GithubOptions {
                lenient: true,
                record: false,
                observe: Some(Arc::new(move |c: &Call| {
                    let kind = t.kind(c);
                    *lock(&t.calls).entry(kind).or_default() += 1;
                })),
                first_id: 90_000_000,
            },
        );
        tally
    }
}
