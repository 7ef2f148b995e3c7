//! The one entry point for frontends: [`Executor::handle`] does an
//! [`Inbound`] command (a parsed command, who sent it, where from, the dedup
//! key of its delivery).
//!
//! Every command that changes something (run, approve, deny, cancel, retry)
//! claims the delivery's dedup key with its first event, in the same append:
//! a redelivery of the same chat message, comment or trailer finds the claim
//! and gets [`Reply::Duplicate`] (or a duplicate [`Ticket`](super::Ticket)), and nothing is
//! done twice, in this process or after a restart. A frontend keeps no
//! "seen" set of its own for actions.

use std::collections::BTreeMap;

use super::{Executor, Reply};
use crate::error::{Error, Result};
use crate::grammar::{self, Command};
use crate::model::{Actor, DedupKey, Origin, RequestId, RequestRecord, Submission};

/// One command from a frontend.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Inbound {
    /// What to do.
    pub command: Command,
    /// Who asked (a frontend identity; the policy maps it to a principal).
    pub actor: Actor,
    /// Where it came from (channel, issue, commit, ...).
    pub origin: Origin,
    /// The delivery's dedup key: a redelivery with the same key does nothing.
    pub dedup: Option<DedupKey>,
    /// Where the command came from, for the audit log (URLs, delivery ids).
    pub provenance: BTreeMap<String, String>,
    /// For an approval given on a prompt (a chat button): the digest of the
    /// request it showed. The approval counts only for that content.
    pub digest: Option<String>,
}

impl Inbound {
    /// A command from `actor` at `origin`.
    pub fn new(command: Command, actor: Actor, origin: Origin) -> Self {
        Inbound {
            command,
            actor,
            origin,
            dedup: None,
            provenance: BTreeMap::new(),
            digest: None,
        }
    }

    /// Parse command text (a chat message, a comment line, a trailer).
    pub fn parse(text: &str, actor: Actor, origin: Origin) -> Result<Self> {
        Ok(Self::new(grammar::parse(text)?, actor, origin))
    }

    /// Set the delivery's dedup key.
    pub fn dedup(mut self, key: DedupKey) -> Self {
        self.dedup = Some(key);
        self
    }

    /// Add a provenance entry.
    pub fn provenance(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.provenance.insert(key.into(), value.into());
        self
    }

    /// Bind an approval to the digest of the content its prompt showed.
    pub fn digest(mut self, digest: impl Into<String>) -> Self {
        self.digest = Some(digest.into());
        self
    }
}

/// What a decision did: the record after it, or (its dedup key was claimed
/// already) the record as it is, untouched.
pub(super) enum Decided {
    Done(RequestRecord),
    Duplicate(RequestRecord),
}

impl Decided {
    pub(super) fn into_record(self) -> RequestRecord {
        match self {
            Decided::Done(r) | Decided::Duplicate(r) => r,
        }
    }
}

impl Executor {
    /// Do a frontend's command. Every command that changes something (run,
    /// approve, deny, cancel, retry) claims the inbound's dedup key with its
    /// first event: a redelivery gets [`Reply::Duplicate`] (or a duplicate
    /// ticket) and does nothing, in this process or after a restart.
    pub async fn handle(&self, inbound: Inbound) -> Result<Reply> {
        let Inbound {
            command,
            actor,
            origin,
            dedup,
            provenance,
            digest,
        } = inbound;
        let parse_id = |s: &str| -> Result<RequestId> {
            s.parse::<RequestId>()
                .map_err(|_| Error::NotFound(format!("{s} (request ids are 26-character ULIDs)")))
        };
        let decided = |d: Decided| match d {
            Decided::Done(rec) => Reply::Record(rec),
            Decided::Duplicate(rec) => Reply::Duplicate(rec),
        };
        match command {
            Command::Run { op, args, dry_run } => {
                let mut sub = Submission::new(op, actor, origin);
                sub.args = args;
                sub.dry_run = dry_run;
                if let Some(key) = dedup {
                    sub = sub.dedup_with(key);
                }
                sub.provenance = provenance;
                Ok(Reply::Submitted(self.submit(sub).await?))
            }
            Command::Help { op } => Ok(Reply::Help(self.help(&actor, &origin, op.as_deref())?)),
            Command::Status { id } => {
                self.principal_of(&actor)?;
                Ok(Reply::Record(self.get(parse_id(&id)?).await?))
            }
            Command::Approve { id } => {
                let id = parse_id(&id)?;
                let d = self
                    .decide(id, &actor, digest.as_deref(), true, None, dedup.as_ref())
                    .await?;
                Ok(decided(d))
            }
            Command::Deny { id, reason } => {
                let id = parse_id(&id)?;
                let d = self
                    .decide(id, &actor, digest.as_deref(), false, reason, dedup.as_ref())
                    .await?;
                Ok(decided(d))
            }
            Command::Cancel { id } => {
                let d = self
                    .cancel_claiming(parse_id(&id)?, &actor, dedup.as_ref())
                    .await?;
                Ok(decided(d))
            }
            Command::Retry { id } => Ok(Reply::Submitted(
                self.retry(parse_id(&id)?, &actor, origin, dedup).await?,
            )),
        }
    }

    /// The record of the request that claimed `key` already, if any.
    pub(super) async fn claimed(&self, key: Option<&DedupKey>) -> Result<Option<RequestRecord>> {
        let Some(key) = key else {
            return Ok(None);
        };
        match self.inner.store.find_dedup(&key.key).await? {
            Some(owner) => Ok(Some(self.get(owner).await?)),
            None => Ok(None),
        }
    }
}
