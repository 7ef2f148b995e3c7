//! Reconcile passes: fetch, run new commit trailers, plan the branch head
//! against the actual state and apply the changes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use git2::Oid;
use youops_core::Executor;

use crate::desired::DesiredState;
use crate::engine::{blocking, now_ms, Engine, Work, NAME};
use crate::error::GitError;
use crate::observe::Current;
use crate::plan::{self, Plan};
use crate::repo;
use crate::state::Persisted;

impl Engine {
    /// One pass: with `full`, the head is planned even when already reconciled;
    /// a `dry_run` submits nothing and changes nothing. A pass that was cut
    /// short while applying a commit ([`Persisted::applying`]) is first run
    /// again at that commit.
    pub(crate) async fn pass(
        self: &Arc<Self>,
        exec: &Executor,
        dry_run: bool,
        full: bool,
    ) -> Result<Plan, GitError> {
        if !dry_run {
            self.resume(exec).await?;
        }
        self.pass_at(exec, dry_run, full, None).await
    }

    /// Run the pass cut short at its commit again, if there is one: the
    /// changes it submitted find their requests by their dedup keys and are
    /// recorded as applied, not submitted again under the branch's newer
    /// head. A commit that is gone from the repository (a force-push) is
    /// given up; any other failure fails this pass, which is tried again.
    async fn resume(self: &Arc<Self>, exec: &Executor) -> Result<(), GitError> {
        let applying = {
            let mut guard = self.work.lock().await;
            self.load(&mut guard)?;
            guard.state.as_ref().and_then(|s| s.applying.clone())
        };
        let Some(commit) = applying else {
            return Ok(());
        };
        tracing::info!(frontend = NAME, commit = %commit, "resuming a pass cut short");
        // A new leader's own clone may not have the commit yet.
        self.fetch_head().await?;
        let found = match Oid::from_str(&commit) {
            Ok(oid) => self.commit_info(oid).await.ok().map(|_| oid),
            Err(_) => None,
        };
        let Some(oid) = found else {
            tracing::warn!(frontend = NAME, commit = %commit, "the commit of a pass cut short is gone; going on from the head");
            let mut guard = self.work.lock().await;
            let st = guard.state.as_mut().expect("loaded");
            st.applying = None;
            return self.save(st).await;
        };
        self.pass_at(exec, false, true, Some(oid)).await.map(|_| ())
    }

    /// A pass at the branch's head, or at `pinned`.
    async fn pass_at(
        self: &Arc<Self>,
        exec: &Executor,
        dry_run: bool,
        full: bool,
        pinned: Option<Oid>,
    ) -> Result<Plan, GitError> {
        let mut guard = self.work.lock().await;
        let work = &mut *guard;
        self.load(work)?;
        self.metrics.passes.increment(1);
        let head = self.fetch_head().await?;
        let head = pinned.or(head);
        let mut plan = Plan {
            branch: self.cfg.branch.clone(),
            commit: head.map(|h| h.to_string()),
            dry_run,
            ..Default::default()
        };
        let Some(head) = head else {
            let st = work.state.as_mut().expect("loaded");
            if !dry_run && !st.initialized {
                st.initialized = true;
                self.save(st).await?;
            }
            return Ok(plan);
        };
        let head_s = head.to_string();
        // Trailers are the head's business (a resumed commit's were run
        // before it was applied).
        if !dry_run && pinned.is_none() {
            self.history(exec, work, head).await?;
        }
        if !full && self.reconciled(work.state.as_ref().expect("loaded"), &head_s) {
            self.metrics.noop_passes.increment(1);
            plan.unchanged_head = true;
            return Ok(plan);
        }
        let info = self.commit_info(head).await?;
        self.verify_head(exec, work, &info, head, dry_run).await?;
        let desired = self.desired_or_report(exec, work, head, dry_run).await?;
        let st = work.state.as_mut().expect("loaded");
        let (observed, errors) = self.observed().await;
        let actual = Current::new(&self.kinds, &observed, &st.applied);
        plan.entries = plan::plan_with(&desired, &actual, &self.kinds, self.cfg.prune);
        if dry_run {
            plan.kind_errors = errors
                .into_iter()
                .map(|(k, e)| format!("kind `{k}`: {e}"))
                .collect();
            return Ok(plan);
        }
        plan.kind_errors = self
            .report_observe(exec, &desired, &observed, errors)
            .await?;
        self.apply(exec, st, &mut plan, &head_s, &info).await?;
        Ok(plan)
    }

    /// Fetch, and the head of the branch (`None` when the branch is empty).
    async fn fetch_head(self: &Arc<Self>) -> Result<Option<Oid>, GitError> {
        let me = self.clone();
        blocking(move || {
            let r = repo::open(&me.cfg)?;
            repo::fetch(&r, &me.cfg)?;
            repo::head(&r, &me.cfg)
        })
        .await
    }

    /// Whether `head` is reconciled already, with no retry due and nothing
    /// marked to look at again (the mark is cleared).
    fn reconciled(&self, st: &Persisted, head: &str) -> bool {
        let now = now_ms();
        let due = st
            .retries
            .values()
            .any(|r| !r.gave_up && !r.waiting && r.next_at_ms.is_some_and(|t| t <= now));
        st.target.as_deref() == Some(head) && !due && !self.dirty.swap(false, Ordering::SeqCst)
    }

    /// Check the head's signature when required, noting it; a refused head is
    /// reported (unless `dry_run`) and is an error.
    async fn verify_head(
        self: &Arc<Self>,
        exec: &Executor,
        work: &mut Work,
        info: &repo::CommitInfo,
        head: Oid,
        dry_run: bool,
    ) -> Result<(), GitError> {
        match self.check_signature(head, &info.author_email).await? {
            Ok(sig) => {
                if !dry_run {
                    let st = work.state.as_mut().expect("loaded");
                    st.note(&head.to_string(), &self.cfg.branch).signature = sig;
                }
                Ok(())
            }
            Err(reason) => {
                if !dry_run {
                    self.refuse(
                        exec,
                        work.state.as_mut().expect("loaded"),
                        info,
                        &reason,
                        "its desired state was not applied",
                    )
                    .await?;
                }
                Err(GitError::Refused {
                    commit: head.to_string(),
                    reason,
                })
            }
        }
    }

    /// The desired state at `head`; its errors are reported (unless `dry_run`).
    async fn desired_or_report(
        self: &Arc<Self>,
        exec: &Executor,
        work: &mut Work,
        head: Oid,
        dry_run: bool,
    ) -> Result<Arc<DesiredState>, GitError> {
        match self.desired(work, head).await {
            Ok(d) => Ok(d),
            Err(GitError::Desired { commit, errors }) => {
                if !dry_run {
                    let st = work.state.as_mut().expect("loaded");
                    self.report_invalid(exec, st, &commit, &errors).await?;
                }
                Err(GitError::Desired { commit, errors })
            }
            Err(e) => Err(e),
        }
    }
}
