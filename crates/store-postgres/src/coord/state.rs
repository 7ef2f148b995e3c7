//! The state of the leader's work between terms (`leader_state`, schema
//! version 4): the leader saves it under its epoch, fenced as every leader
//! write; the next leader loads what the last one saved.

use youops_core::audit::StoreError;

use super::{counter_sql, Coordinator};

impl Coordinator {
    /// The state saved under `name`, if any.
    pub async fn load_state(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let s = &self.inner.shared;
        let what = format!("reading the leader state {name:?}");
        let rows = s
            .lane
            .query(
                &what,
                "SELECT state FROM leader_state WHERE name = $1",
                &[&name],
            )
            .await?;
        // `name` is the primary key: one row at most.
        rows.into_iter()
            .next()
            .map(|r| {
                r.try_get::<_, Vec<u8>>(0)
                    .map_err(|e| StoreError::Corrupt(format!("leader_state.state: {e}")))
            })
            .transpose()
    }

    /// Save `state` under `name` as the leader under `epoch` (refused,
    /// `fenced: …`, once another node leads or the lease expired).
    pub async fn save_state(&self, epoch: u64, name: &str, state: &[u8]) -> Result<(), StoreError> {
        let epoch_sql = counter_sql(epoch, "epoch")?;
        let redact = self.inner.shared.lane.redact().clone();
        self.fenced_write(epoch, async |tx| {
            tx.execute(
                "INSERT INTO leader_state (name, state, epoch, saved_at)
                 VALUES ($1, $2, $3, clock_timestamp())
                 ON CONFLICT (name) DO UPDATE
                 SET state = excluded.state, epoch = excluded.epoch, saved_at = excluded.saved_at",
                &[&name, &state, &epoch_sql],
            )
            .await
            .map_err(|e| redact.io(&format!("saving the leader state {name:?}"), &e))
        })
        .await
        .map(|_| ())
    }
}
