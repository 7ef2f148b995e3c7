//! Fault injection for tests ([`PgStore::faults`](crate::PgStore::faults),
//! feature `test-util`): what a lost connection does to a COMMIT, a dedup
//! claim made behind the tip lock's back, and an archive cut short by a
//! crash, on demand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use youops_core::model::RequestId;

use crate::conn::Connector;

/// Faults the store's writer injects into its next group commits. All zero
/// (and without the `test-util` feature, unreachable) in production.
#[derive(Debug, Default)]
pub struct Faults {
    lose_commit_ack: AtomicUsize,
    kill_before_commit: AtomicUsize,
    cut_archive: AtomicUsize,
    claim_behind: Mutex<Option<RequestId>>,
}

fn take(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

impl Faults {
    /// The next `n` COMMITs succeed, and the writer acts as if the connection
    /// broke before their answer came: their outcome is unknown to it.
    pub fn lose_commit_acks(&self, n: usize) {
        self.lose_commit_ack.store(n, Ordering::SeqCst);
    }

    /// Just before the next `n` COMMITs, the writer's session is terminated
    /// from another connection (`pg_terminate_backend`): the COMMIT fails
    /// with the connection, and its outcome is unknown to the writer.
    pub fn kill_session_before_commits(&self, n: usize) {
        self.kill_before_commit.store(n, Ordering::SeqCst);
    }

    /// The next group that claims a dedup key finds, once it has read the
    /// claims and before it writes, its first key claimed for `owner` by
    /// another session that did not lock the chain tip (committed). Its
    /// write then conflicts, and the group is decided again.
    pub fn claim_behind_the_tip(&self, owner: RequestId) {
        *self.claim_behind.lock().unwrap_or_else(|p| p.into_inner()) = Some(owner);
    }

    pub(crate) fn take_claim_behind(&self) -> Option<RequestId> {
        self.claim_behind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Claim `key` for `owner` from a new connection, outside any tip lock.
    pub(crate) async fn claim(&self, connector: &Connector, key: &str, owner: RequestId) {
        let Ok(other) = connector.connect().await else {
            return;
        };
        let _ = other
            .client
            .execute(
                "INSERT INTO claims (key, request_id, expires_at) VALUES ($1, $2, NULL)",
                &[&key, &owner.to_string()],
            )
            .await;
    }

    /// The next `n` archives stop right after appending their checkpoint,
    /// with an error, as if the node crashed there: the archive file and
    /// the checkpoint are in place, the events not moved yet.
    pub fn cut_archives_after_checkpoint(&self, n: usize) {
        self.cut_archive.store(n, Ordering::SeqCst);
    }

    pub(crate) fn take_cut_archive(&self) -> bool {
        take(&self.cut_archive)
    }

    pub(crate) fn take_lose_commit_ack(&self) -> bool {
        take(&self.lose_commit_ack)
    }

    pub(crate) fn take_kill_before_commit(&self) -> bool {
        take(&self.kill_before_commit)
    }

    /// Terminate session `pid` from a new connection, and wait until it is
    /// gone (at most a few seconds).
    pub(crate) async fn kill_session(&self, connector: &Connector, pid: i32) {
        let Ok(other) = connector.connect().await else {
            return;
        };
        let _ = other
            .client
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match other
                .client
                .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
            {
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                _ => return,
            }
        }
    }
}
