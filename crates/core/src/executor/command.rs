//! Commands: parse command text and do what it asks.

use std::collections::BTreeMap;

use super::{Executor, Reply};
use crate::error::{Error, Result};
use crate::grammar::{self, Command};
use crate::model::{Actor, DedupKey, Origin, RequestId, Submission};

impl Executor {
    /// Parse command text (chat message, issue comment line, commit trailer) and do it.
    pub async fn command(
        &self,
        text: &str,
        actor: &Actor,
        origin: &Origin,
        dedup_key: Option<DedupKey>,
    ) -> Result<Reply> {
        let cmd = grammar::parse(text)?;
        self.execute_command(cmd, actor, origin, dedup_key, BTreeMap::new())
            .await
    }

    /// Do a parsed command.
    pub async fn execute_command(
        &self,
        cmd: Command,
        actor: &Actor,
        origin: &Origin,
        dedup_key: Option<DedupKey>,
        provenance: BTreeMap<String, String>,
    ) -> Result<Reply> {
        let parse_id = |s: &str| -> Result<RequestId> {
            s.parse::<RequestId>()
                .map_err(|_| Error::NotFound(format!("{s} (request ids are 26-character ULIDs)")))
        };
        match cmd {
            Command::Run { op, args, dry_run } => {
                let mut sub = Submission::new(op, actor.clone(), origin.clone());
                sub.args = args;
                sub.dry_run = dry_run;
                if let Some(key) = dedup_key {
                    sub = sub.dedup_with(key);
                }
                sub.provenance = provenance;
                Ok(Reply::Submitted(self.submit(sub).await?))
            }
            Command::Help { op } => Ok(Reply::Help(self.help(actor, origin, op.as_deref())?)),
            Command::Status { id } => {
                self.principal_of(actor)?;
                Ok(Reply::Record(self.get(parse_id(&id)?).await?))
            }
            Command::Approve { id } => Ok(Reply::Record(
                self.approve(parse_id(&id)?, actor, None).await?,
            )),
            Command::Deny { id, reason } => Ok(Reply::Record(
                self.deny(parse_id(&id)?, actor, reason).await?,
            )),
            Command::Cancel { id } => Ok(Reply::Record(self.cancel(parse_id(&id)?, actor).await?)),
            Command::Retry { id } => Ok(Reply::Submitted(
                self.retry(parse_id(&id)?, actor, origin.clone(), dedup_key)
                    .await?,
            )),
        }
    }
}
