//! State shared by the webhook handler, the poller and the feedback worker:
//! the config, the GitHub client, and the bounded memories of what was seen
//! and rendered.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use youops_core::frontend::webhook::SeenSet;
use youops_core::model::RequestId;

use crate::config::GithubConfig;
use crate::github::Api;

/// How many delivery ids / comment ids are remembered in memory.
pub(crate) const RECENT: usize = 20_000;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by the webhook handler, the poller and the feedback worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: Arc<GithubConfig>,
    pub(crate) api: Api,
    pub(crate) ready: AtomicBool,
    pub(crate) deliveries: Mutex<SeenSet<String>>,
    pub(crate) comments: Mutex<SeenSet<u64>>,
    /// (repo key, issue, status key) → status comment id.
    pub(crate) status_comments: Mutex<HashMap<(String, u64, String), u64>>,
    /// Per request: last rendered audit seq, and whether 👀 was given.
    pub(crate) rendered: Mutex<HashMap<RequestId, (u64, bool)>>,
    /// Requests whose status comment is being retried in the background.
    pub(crate) retrying: Mutex<HashSet<RequestId>>,
}

impl Shared {
    /// Fresh state for `cfg`; nothing is contacted yet.
    pub(crate) fn new(cfg: Arc<GithubConfig>) -> Shared {
        Shared {
            api: Api::new(cfg.clone()),
            cfg,
            ready: AtomicBool::new(false),
            deliveries: Mutex::new(SeenSet::new(RECENT)),
            comments: Mutex::new(SeenSet::new(RECENT)),
            status_comments: Mutex::new(HashMap::new()),
            rendered: Mutex::new(HashMap::new()),
            retrying: Mutex::new(HashSet::new()),
        }
    }

    /// Claim a comment for handling; `false` if it is claimed already.
    pub(crate) fn claim_comment(&self, id: u64) -> bool {
        lock(&self.comments).insert(id)
    }
}
