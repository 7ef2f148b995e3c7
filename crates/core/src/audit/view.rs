//! [`StoreView`]: the read side of an audit store, which is all that
//! [`Executor::store`](crate::Executor::store) hands out. Frontends and other
//! readers write nothing to the chain themselves: every write goes through the
//! executor (commands through `handle`, facts through `notice`), so that it is
//! ordered, deduplicated and broadcast like the rest. Whoever opened the store
//! (the daemon, an embedder) keeps the writing handle.

use std::path::PathBuf;
use std::sync::Arc;

use super::{verify_with_archives, ArchivesVerdict, AuditStore, StoreError, VerifyReport};
use crate::model::{AuditEvent, RequestFilter, RequestId, RequestRecord};

/// Read-only access to an [`AuditStore`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreView(Arc<dyn AuditStore>);

impl StoreView {
    /// A view of `store`.
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        StoreView(store)
    }

    /// The current record of a request.
    pub async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.0.request(id).await
    }

    /// Every event of a request, in order.
    pub async fn request_events(&self, id: RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        self.0.request_events(id).await
    }

    /// The request that claimed a dedup key (claims that expired are gone).
    pub async fn find_dedup(&self, key: &str) -> Result<Option<RequestId>, StoreError> {
        self.0.find_dedup(key).await
    }

    /// Requests newest first, matching `filter`, older than `before`.
    pub async fn list_requests(
        &self,
        filter: &RequestFilter,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.0.list_requests(filter, before, limit).await
    }

    /// Requests not in a terminal state.
    pub async fn active_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        self.0.active_requests().await
    }

    /// Events with `seq > after`, at most `limit`, in order.
    pub async fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.0.events(after, limit).await
    }

    /// Sequence number and hash of the last event.
    pub async fn head(&self) -> Result<(u64, String), StoreError> {
        self.0.head().await
    }

    /// Walk the whole chain.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.0.verify().await
    }

    /// Verify archive files and then the store as one chain
    /// (see [`verify_with_archives`]).
    pub async fn verify_with_archives(
        &self,
        archives: &[PathBuf],
    ) -> Result<ArchivesVerdict, StoreError> {
        verify_with_archives(self.0.as_ref(), archives).await
    }

    /// Approximate bytes on disk.
    pub async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.0.size_on_disk().await
    }
}
