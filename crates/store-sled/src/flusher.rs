//! The flusher thread, and the answers that wait for an fsync.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use tokio::sync::oneshot;
use youops_core::audit::StoreError;
use youops_core::model::AuditEvent;

use crate::disk::Disk;
use crate::stats::{add, nanos_since, Counters};

pub(crate) type AppendReply = oneshot::Sender<Result<Vec<AuditEvent>, StoreError>>;
pub(crate) type FlushReply = oneshot::Sender<Result<(), StoreError>>;

/// Answers that wait for the next fsync.
#[derive(Default)]
pub(crate) struct Durable {
    pub(crate) appends: Vec<(AppendReply, Vec<AuditEvent>)>,
    pub(crate) flushes: Vec<FlushReply>,
}

impl Durable {
    pub(crate) fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.flushes.is_empty()
    }

    pub(crate) fn answer(self, flushed: &Result<(), StoreError>) {
        for (reply, events) in self.appends {
            let _ = reply.send(match flushed {
                Ok(()) => Ok(events),
                Err(e) => Err(StoreError::Io(e.to_string())),
            });
        }
        for f in self.flushes {
            let _ = f.send(clone_result(flushed));
        }
    }
}

fn clone_result(r: &Result<(), StoreError>) -> Result<(), StoreError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(StoreError::Io(e.to_string())),
    }
}

/// fsyncs for the writer, so the next group is built and applied while the last
/// one is being flushed. Every `Durable` it receives was applied before it calls
/// `Db::flush`, and one flush answers everything that queued up meanwhile.
pub(crate) fn flusher(
    db: Disk,
    counters: Arc<Counters>,
    rx: mpsc::Receiver<Durable>,
    queued: Arc<AtomicUsize>,
) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let flushed = flush_db(&db, &counters);
        // Idle again before anyone is answered: a caller woken by its answer
        // may append at once, and the writer should then fsync it itself.
        queued.fetch_sub(waiting.len(), Ordering::AcqRel);
        for d in waiting {
            d.answer(&flushed);
        }
    }
}

/// The way to the flusher thread, counting what it has not answered yet.
#[derive(Clone)]
pub(crate) struct ToFlusher {
    pub(crate) tx: mpsc::Sender<Durable>,
    pub(crate) queued: Arc<AtomicUsize>,
}

impl ToFlusher {
    /// Queue `d` for the flusher; gives it back if the flusher is gone.
    pub(crate) fn send(&self, d: Durable) -> Result<(), Durable> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(d).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            e.0
        })
    }

    /// Nothing queued or being flushed.
    pub(crate) fn idle(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }
}

pub(crate) fn flush_db(db: &Disk, counters: &Counters) -> Result<(), StoreError> {
    let t = Instant::now();
    let flushed = db.flush();
    add(&counters.flush_nanos, nanos_since(t));
    add(&counters.flushes, 1);
    flushed
}
