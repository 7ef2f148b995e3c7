//! Commands by text, for callers that have nothing but the text (the API's
//! `POST /api/v1/commands`): parse it and [`handle`](Executor::handle) it.

use super::{Executor, Inbound, Reply};
use crate::error::Result;
use crate::model::{Actor, DedupKey, Origin};

impl Executor {
    /// Parse command text and do it, as [`handle`](Executor::handle) does.
    pub async fn command(
        &self,
        text: &str,
        actor: &Actor,
        origin: &Origin,
        dedup_key: Option<DedupKey>,
    ) -> Result<Reply> {
        let mut inbound = Inbound::parse(text, actor.clone(), origin.clone())?;
        inbound.dedup = dedup_key;
        self.handle(inbound).await
    }
}
