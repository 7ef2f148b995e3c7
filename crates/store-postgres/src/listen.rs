//! Wake-ups when another store appends to the same database.
//!
//! A group commit sends `pg_notify('youops_appends', <session name>)` in its
//! transaction: PostgreSQL delivers it at COMMIT, and only if the
//! transaction commits. Under load only one group per 10 ms does (the
//! writer's `NOTIFY_GAP`); a follower woken reads everything committed
//! since its last read, the groups that did not notify too.
//!
//! A listener, on a connection of its own, wakes whoever follows the chain
//! ([`crate::PgStore::appended_elsewhere`]) for every notification from
//! another store, so that the nodes of a cluster read each other's events
//! when they are committed, not at their next poll.
//!
//! A notification sent while the listener is not connected is lost: after
//! every (re)connection the listener wakes its follower once, which reads
//! whatever it missed. Followers keep polling besides, as the safety net
//! (and for a group committed after the last notified one of a burst).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};
use youops_core::audit::StoreError;

use crate::conn::Connector;

/// The channel group commits notify.
pub(crate) const CHANNEL: &str = "youops_appends";

/// The first wait before reconnecting; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A running listener; it stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Listener {
    wake: Arc<Notify>,
    _stop: DropGuard,
}

impl Listener {
    /// Listen on connections made by `connector`, waking for every
    /// notification whose payload is not `own` (this store's session name).
    pub(crate) fn start(connector: Arc<Connector>, own: String) -> Listener {
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        tokio::spawn(run(connector, own, Arc::clone(&wake), stop.clone()));
        Listener {
            wake,
            _stop: stop.drop_guard(),
        }
    }

    /// The wake-up: one permit is kept while nobody waits, so a follower
    /// that is busy reading when woken reads again right after.
    pub(crate) fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }
}

async fn run(connector: Arc<Connector>, own: String, wake: Arc<Notify>, stop: CancellationToken) {
    let mut backoff = RECONNECT_MIN;
    loop {
        let listened = tokio::select! {
            _ = stop.cancelled() => return,
            r = listen(&connector, &own, &wake) => r,
        };
        match listened {
            // It listened, then the connection ended (the server restarted,
            // or a network cut): reconnect soon.
            Ok(()) => {
                backoff = RECONNECT_MIN;
                tracing::debug!("PostgreSQL: the append listener's connection ended");
            }
            Err(e) => tracing::debug!(error = %e, "PostgreSQL: the append listener cannot listen"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// One connection's worth of listening: `Ok` when it ended after `LISTEN`.
async fn listen(connector: &Connector, own: &str, wake: &Notify) -> Result<(), StoreError> {
    let (tx, mut notes) = mpsc::channel(64);
    let conn = connector.connect_listening(tx).await?;
    conn.client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| connector.redact.io("LISTEN", &e))?;
    // Whatever was appended while it was not listening.
    wake.notify_one();
    while let Some(n) = notes.recv().await {
        if n.payload() != own {
            wake.notify_one();
        }
    }
    // The driver ended: the connection is gone.
    drop(conn);
    Ok(())
}
