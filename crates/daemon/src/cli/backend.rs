//! Where commands go: [`Backend`], implemented by [`Local`] (the store and an
//! executor opened in this process, as the OS user) and [`Remote`] (a running
//! daemon's API, through [`Client`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use youops_core::audit::{ArchiveReport, ArchivesVerdict, StoreError, VerifyReport};
use youops_core::policy::Place;
use youops_core::{
    Actor, AuditEvent, Error, Executor, Origin, RequestId, RequestRecord, State, Submission,
};

use super::failure::{exit, Failure};
use super::output::urlencode;
use super::{load_config, os_user, Cli};
use crate::client::Client;
use crate::gitops::GitHandle;

/// The ops a principal may run from the CLI.
pub(crate) struct OpsListing {
    /// Name and description of each op.
    pub ops: Vec<(String, String)>,
    /// What to say when `ops` is empty (the local store names the principal;
    /// a daemon's empty list says nothing).
    pub empty_note: Option<String>,
}

/// The outcome of `audit verify` on a store.
pub(crate) enum ChainCheck {
    /// The live chain alone.
    Live(VerifyReport),
    /// The archives (this many files), in order, then the live chain, as one chain.
    WithArchives(ArchivesVerdict, usize),
}

/// What `audit archive` did.
pub(crate) struct Archived {
    /// The last sequence number asked for.
    pub through: u64,
    /// `None`: nothing to archive.
    pub report: Option<ArchiveReport>,
}

/// One reconcile pass, as the CLI prints it.
pub(crate) struct ReconcileOutcome {
    /// The plan, diff-like.
    pub text: String,
    /// Whether an entry failed or a kind was in error.
    pub failed: bool,
}

/// The operations the CLI commands need, on the local store or a daemon.
///
/// Not `Send`: the CLI runs on the main task, and `audit export` writes to a
/// locked stdout across awaits.
#[async_trait(?Send)]
pub(crate) trait Backend {
    /// Submit `op` and wait for its end (or for approval).
    async fn run(
        &self,
        op: &str,
        args: Vec<(String, String)>,
        dry_run: bool,
    ) -> Result<RequestRecord, Failure>;
    /// The ops the caller may run from the CLI.
    async fn ops(&self) -> Result<OpsListing, Failure>;
    /// One op's help.
    async fn op_help(&self, op: &str) -> Result<String, Failure>;
    /// Approve; wait for the run it starts.
    async fn approve(&self, id: RequestId) -> Result<RequestRecord, Failure>;
    /// Deny.
    async fn deny(&self, id: RequestId, reason: Option<String>) -> Result<RequestRecord, Failure>;
    /// Cancel.
    async fn cancel(&self, id: RequestId) -> Result<RequestRecord, Failure>;
    /// The record.
    async fn status(&self, id: RequestId) -> Result<RequestRecord, Failure>;
    /// Run again as a new request; wait for its end (or for approval).
    async fn retry(&self, id: RequestId) -> Result<RequestRecord, Failure>;
    /// One request's events, or the latest `limit` events.
    async fn events(
        &self,
        request: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, Failure>;
    /// Walk the hash chain.
    async fn verify(&self) -> Result<ChainCheck, Failure>;
    /// Archive old events (`--keep N` or `--through SEQ`).
    async fn archive(&self, keep: Option<u64>, through: Option<u64>) -> Result<Archived, Failure>;
    /// Every event as JSON lines.
    async fn export(&self, out: &mut dyn Write) -> Result<(), Failure>;
    /// One reconcile pass (`git`: the local config's git frontend).
    async fn reconcile(
        &self,
        git: Option<&GitHandle>,
        dry_run: bool,
    ) -> Result<ReconcileOutcome, Failure>;
    /// Release what was opened (the local store).
    async fn close(&self);
}

/// The backend `cli` asks for: [`Remote`] with `--server`, else [`Local`].
pub(crate) async fn open(cli: &Cli) -> Result<Box<dyn Backend>, Failure> {
    if let Some(url) = &cli.server {
        let token = cli.token.clone().ok_or_else(|| {
            Failure::new(exit::REFUSED, "--server needs --token (or YOUOPS_TOKEN)")
        })?;
        return Ok(Box::new(Remote(Client::new(url, &token)?)));
    }
    Ok(Box::new(Local::open(cli).await?))
}

/// The local store, with an executor in this process.
pub(crate) struct Local {
    exec: Executor,
    /// The store's writing handle (for `audit archive`); the executor gives reads.
    store: Arc<dyn youops_core::audit::AuditStore>,
    actor: Actor,
    /// `[store] archive_dir`.
    archive_dir: PathBuf,
}

impl Local {
    async fn open(cli: &Cli) -> Result<Local, Failure> {
        let cfg = load_config(&cli.config)?;
        let store = crate::store::open(&cfg).await.map_err(|e| match e {
            StoreError::Locked(p) => Failure::new(
                exit::UNAVAILABLE,
                format!("the audit store at {p} is locked by another process — probably `youops serve`. Talk to it instead: youops --server http://ADDR --token TOKEN ..."),
            ),
            other => Failure::from(other),
        })?;
        let mut builder =
            crate::builtins::standard_builtins(Executor::builder(&cfg, store.clone()));
        if matches!(
            crate::store::location(&cfg),
            Ok(crate::store::StoreLocation::Postgres(_))
        ) {
            // A command run beside a cluster's daemons is no node: it never
            // does the leader's work (expiring approvals), and recovers no
            // one's requests (it has no node id, and every cluster request
            // names its node).
            let (_, never) = youops_core::cluster::Leadership::channel();
            builder = builder.leadership(never);
        }
        let exec = builder.build().await?;
        Ok(Local {
            exec,
            store,
            actor: Actor::new("cli", os_user()),
            archive_dir: cfg.archive_dir(),
        })
    }

    /// The principal the OS user maps to.
    fn principal(&self) -> Result<String, Failure> {
        self.exec.resolve(&self.actor).ok_or_else(|| {
            Failure::from(Error::UnknownIdentity {
                frontend: "cli".into(),
                external_id: self.actor.external_id.clone(),
            })
        })
    }

    /// `rec` if it ended or waits for approval, else its end.
    async fn settled(&self, rec: RequestRecord) -> Result<RequestRecord, Failure> {
        if rec.state.is_terminal() || rec.state == State::PendingApproval {
            Ok(rec)
        } else {
            Ok(self.exec.wait(rec.request.id).await?)
        }
    }
}

#[async_trait(?Send)]
impl Backend for Local {
    async fn run(
        &self,
        op: &str,
        args: Vec<(String, String)>,
        dry_run: bool,
    ) -> Result<RequestRecord, Failure> {
        let mut sub = Submission::new(op.to_string(), self.actor.clone(), Origin::new("cli"))
            .dry_run(dry_run);
        sub.args = args;
        let t = self.exec.submit(sub).await?;
        self.settled(t.record).await
    }

    async fn ops(&self) -> Result<OpsListing, Failure> {
        let principal = self.principal()?;
        let loaded = self.exec.loaded();
        let place = Place {
            frontend: "cli",
            location: "",
        };
        let ops = loaded
            .policy
            .visible_ops(&principal, &loaded.catalog, place)
            .into_iter()
            .map(|o| (o.name.clone(), o.description.clone()))
            .collect();
        Ok(OpsListing {
            ops,
            empty_note: Some(format!("`{principal}` may not run any op from the CLI.")),
        })
    }

    async fn op_help(&self, op: &str) -> Result<String, Failure> {
        self.principal()?;
        Ok(self.exec.help(&self.actor, &Origin::new("cli"), Some(op))?)
    }

    async fn approve(&self, id: RequestId) -> Result<RequestRecord, Failure> {
        let r = self.exec.approve(id, &self.actor, None).await?;
        if r.state == State::Approved {
            Ok(self.exec.wait(id).await?)
        } else {
            Ok(r)
        }
    }

    async fn deny(&self, id: RequestId, reason: Option<String>) -> Result<RequestRecord, Failure> {
        Ok(self.exec.deny(id, &self.actor, reason).await?)
    }

    async fn cancel(&self, id: RequestId) -> Result<RequestRecord, Failure> {
        Ok(self.exec.cancel(id, &self.actor).await?)
    }

    async fn status(&self, id: RequestId) -> Result<RequestRecord, Failure> {
        Ok(self.exec.get(id).await?)
    }

    async fn retry(&self, id: RequestId) -> Result<RequestRecord, Failure> {
        let t = self
            .exec
            .retry(id, &self.actor, Origin::new("cli"), None)
            .await?;
        self.settled(t.record).await
    }

    async fn events(
        &self,
        request: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, Failure> {
        if let Some(id) = request {
            return Ok(self.exec.events(id).await?);
        }
        let (head, _) = self.exec.store().head().await?;
        Ok(self
            .exec
            .store()
            .events(head.saturating_sub(limit as u64), limit)
            .await?)
    }

    async fn verify(&self) -> Result<ChainCheck, Failure> {
        let live = self.exec.store().verify().await?;
        let archives = youops_core::audit::archive_files(&self.archive_dir).map_err(|e| {
            Failure::new(
                exit::FAILED,
                format!("cannot list {}: {e}", self.archive_dir.display()),
            )
        })?;
        if live.ok() && !archives.is_empty() {
            let v = self.exec.store().verify_with_archives(&archives).await?;
            return Ok(ChainCheck::WithArchives(v, archives.len()));
        }
        Ok(ChainCheck::Live(live))
    }

    async fn archive(&self, keep: Option<u64>, through: Option<u64>) -> Result<Archived, Failure> {
        let (tip, _) = self.exec.store().head().await?;
        let through = match (keep, through) {
            (_, Some(t)) => t,
            (Some(k), None) => tip.saturating_sub(k),
            (None, None) => {
                return Err(Failure::new(
                    exit::REFUSED,
                    "say how much to keep: --keep N (newest events) or --through SEQ",
                ))
            }
        };
        let report = self.store.archive(through, &self.archive_dir).await?;
        Ok(Archived { through, report })
    }

    async fn export(&self, out: &mut dyn Write) -> Result<(), Failure> {
        let mut after = 0;
        loop {
            let batch = self.exec.store().events(after, 1000).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for e in &batch {
                after = e.seq;
                let _ = writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default());
            }
        }
    }

    async fn reconcile(
        &self,
        git: Option<&GitHandle>,
        dry_run: bool,
    ) -> Result<ReconcileOutcome, Failure> {
        let Some(git) = git else {
            return Err(Failure::new(
                exit::CONFIG,
                "no git frontend to reconcile".to_string(),
            ));
        };
        reconcile_on(&self.exec, git, dry_run).await
    }

    async fn close(&self) {
        let _ = self.exec.shutdown(Duration::from_secs(30)).await;
    }
}

/// One reconcile pass of `git` on `exec`.
#[cfg(feature = "git")]
async fn reconcile_on(
    exec: &Executor,
    git: &GitHandle,
    dry_run: bool,
) -> Result<ReconcileOutcome, Failure> {
    let plan = youops_frontend_git::reconcile_once(exec, git, dry_run)
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("reconcile: {e} ({})", e.code())))?;
    let failed = plan.entries.iter().any(|e| {
        e.state
            .is_some_and(|s| s.is_terminal() && s != State::Succeeded)
    });
    Ok(ReconcileOutcome {
        text: plan.to_string(),
        failed: failed || !plan.kind_errors.is_empty(),
    })
}

/// Without the git frontend there is no `git` to reconcile.
#[cfg(not(feature = "git"))]
async fn reconcile_on(_: &Executor, git: &GitHandle, _: bool) -> Result<ReconcileOutcome, Failure> {
    match *git {}
}

/// A running daemon, through its API.
pub(crate) struct Remote(Client);

impl Remote {
    /// POST to one request's `action` endpoint; the record it answers with.
    async fn act(
        &self,
        id: RequestId,
        action: &str,
        body: serde_json::Value,
    ) -> Result<RequestRecord, Failure> {
        let v = self
            .0
            .post_json(&format!("/api/v1/requests/{id}/{action}"), &body)
            .await?;
        Client::record(&v)
    }

    /// The `field` of an API answer, parsed.
    fn field<T: serde::de::DeserializeOwned>(
        v: &serde_json::Value,
        field: &str,
    ) -> Result<T, Failure> {
        serde_json::from_value(v[field].clone())
            .map_err(|e| Failure::new(exit::FAILED, e.to_string()))
    }
}

#[async_trait(?Send)]
impl Backend for Remote {
    async fn run(
        &self,
        op: &str,
        args: Vec<(String, String)>,
        dry_run: bool,
    ) -> Result<RequestRecord, Failure> {
        self.0.run(op, &args, dry_run).await
    }

    async fn ops(&self) -> Result<OpsListing, Failure> {
        let v = self.0.get_json("/api/v1/ops").await?;
        let ops = v["ops"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|o| {
                (
                    o["name"].as_str().unwrap_or("").to_string(),
                    o["description"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        Ok(OpsListing {
            ops,
            empty_note: None,
        })
    }

    async fn op_help(&self, op: &str) -> Result<String, Failure> {
        let v = self
            .0
            .get_json(&format!("/api/v1/ops/{}", urlencode(op)))
            .await?;
        Ok(v["help"].as_str().unwrap_or("").to_string())
    }

    async fn approve(&self, id: RequestId) -> Result<RequestRecord, Failure> {
        self.0
            .post_json(&format!("/api/v1/requests/{id}/approve"), &json!({}))
            .await?;
        self.0.wait(id).await
    }

    async fn deny(&self, id: RequestId, reason: Option<String>) -> Result<RequestRecord, Failure> {
        self.act(id, "deny", json!({ "reason": reason })).await
    }

    async fn cancel(&self, id: RequestId) -> Result<RequestRecord, Failure> {
        self.act(id, "cancel", json!({})).await
    }

    async fn status(&self, id: RequestId) -> Result<RequestRecord, Failure> {
        Client::record(&self.0.get_json(&format!("/api/v1/requests/{id}")).await?)
    }

    async fn retry(&self, id: RequestId) -> Result<RequestRecord, Failure> {
        let r = self.act(id, "retry", json!({})).await?;
        self.0.wait(r.request.id).await
    }

    async fn events(
        &self,
        request: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, Failure> {
        let path = match request {
            Some(id) => format!("/api/v1/audit?request={id}"),
            None => format!("/api/v1/audit?limit={limit}"),
        };
        Self::field(&self.0.get_json(&path).await?, "events")
    }

    async fn verify(&self) -> Result<ChainCheck, Failure> {
        let v = self.0.get_json_any_status("/api/v1/audit/verify").await?;
        Ok(ChainCheck::Live(Self::field(&v, "report")?))
    }

    async fn archive(
        &self,
        _keep: Option<u64>,
        _through: Option<u64>,
    ) -> Result<Archived, Failure> {
        Err(Failure::new(
            exit::REFUSED,
            "audit archive works on the local store (a daemon archives by itself with [store] retain_events)",
        ))
    }

    async fn export(&self, out: &mut dyn Write) -> Result<(), Failure> {
        let text = self.0.get_text("/api/v1/audit/export").await?;
        let _ = out.write_all(text.as_bytes());
        Ok(())
    }

    /// The plan the daemon computes on its own state.
    async fn reconcile(
        &self,
        _git: Option<&GitHandle>,
        _dry_run: bool,
    ) -> Result<ReconcileOutcome, Failure> {
        let v = self
            .0
            .post_json("/api/v1/reconcile/plan", &json!({}))
            .await?;
        let view: crate::http::api::PlanView = serde_json::from_value(v).map_err(|e| {
            Failure::new(
                exit::FAILED,
                format!("unexpected plan from the server: {e}"),
            )
        })?;
        Ok(ReconcileOutcome {
            text: view.text,
            failed: !view.kind_errors.is_empty(),
        })
    }

    async fn close(&self) {}
}
