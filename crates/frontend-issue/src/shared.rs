//! State shared by the webhook handler, the poller and the feedback worker:
//! the config, the GitHub client, and the bounded memories of what was seen
//! and rendered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use youops_core::model::RequestId;

use crate::config::GithubConfig;
use crate::github::Api;

/// How many delivery ids / comment ids are remembered in memory.
pub(crate) const RECENT: usize = 20_000;

/// A bounded set of recently seen ids.
#[derive(Debug)]
pub(crate) struct Recent<T: std::hash::Hash + Eq + Clone> {
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T: std::hash::Hash + Eq + Clone> Recent<T> {
    fn new() -> Self {
        Recent {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Insert; `false` if it was there.
    pub(crate) fn insert(&mut self, v: T) -> bool {
        if !self.set.insert(v.clone()) {
            return false;
        }
        self.order.push_back(v);
        if self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    pub(crate) fn remove(&mut self, v: &T) {
        self.set.remove(v);
        self.order.retain(|x| x != v);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by the webhook handler, the poller and the feedback worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: Arc<GithubConfig>,
    pub(crate) api: Api,
    pub(crate) ready: AtomicBool,
    pub(crate) deliveries: Mutex<Recent<String>>,
    pub(crate) comments: Mutex<Recent<u64>>,
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
            deliveries: Mutex::new(Recent::new()),
            comments: Mutex::new(Recent::new()),
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
