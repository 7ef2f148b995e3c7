//! The engine at the bottom of the frontend: its config, kinds and persisted
//! state, the metric handles, and the git and audit chores every layer above shares
//! (blocking git work, signatures, notes, state saves, refusals).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use git2::Oid;
use tokio::sync::Notify;
use youops_core::cluster::Term;
use youops_core::executor::LeaderState;
use youops_core::{Actor, Executor, RequestId, RequestRecord, State};

use crate::config::{GitConfig, Kinds};
use crate::desired::{DesiredError, DesiredState};
use crate::error::GitError;
use crate::load::{self, Parsed};
use crate::metrics::Metrics;
use crate::repo;
use crate::signing;
use crate::state::Persisted;

/// The frontend's name: its config section, the `frontend` of its actors and origins.
pub const NAME: &str = "git";

#[derive(Debug, Default)]
pub(crate) struct Work {
    pub(crate) state: Option<Persisted>,
    pub(crate) parsed: Parsed,
}

#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) cfg: GitConfig,
    pub(crate) kinds: Kinds,
    pub(crate) work: tokio::sync::Mutex<Work>,
    pub(crate) trigger: Notify,
    pub(crate) ready: AtomicBool,
    pub(crate) dirty: AtomicBool,
    pub(crate) metrics: Metrics,
    /// Kinds whose observer is failing, with the error last put on the audit
    /// record (so a lasting failure is recorded once, not on every check).
    pub(crate) observe_failing: std::sync::Mutex<HashMap<String, String>>,
    /// In a cluster, while this node leads: where the state is saved for
    /// the next leader, and the term it is saved under.
    pub(crate) term: std::sync::Mutex<Option<(Arc<dyn LeaderState>, Term)>>,
}

/// Run blocking git work off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, GitError>
where
    F: FnOnce() -> Result<T, String> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GitError::Git(format!("git task failed: {e}")))?
        .map_err(GitError::Git)
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A commit id shortened for messages.
pub(crate) fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Wait until a request ends or waits for approval.
pub(crate) async fn settled(exec: &Executor, id: RequestId) -> Result<RequestRecord, GitError> {
    Ok(exec
        .wait_for(id, |r| {
            r.state.is_terminal() || r.state == State::PendingApproval
        })
        .await?)
}

impl Engine {
    /// An engine from checked parts, with nothing loaded yet, recording into
    /// `metrics`.
    pub(crate) fn new(cfg: GitConfig, kinds: Kinds, metrics: Metrics) -> Engine {
        Engine {
            cfg,
            kinds,
            work: tokio::sync::Mutex::new(Work::default()),
            trigger: Notify::new(),
            ready: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            metrics,
            observe_failing: std::sync::Mutex::new(HashMap::new()),
            term: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn actor(&self, info: &repo::CommitInfo) -> Actor {
        let a = Actor::new(NAME, info.author_email.clone());
        if info.author_name.is_empty() {
            a
        } else {
            a.with_display(info.author_name.clone())
        }
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.retry_base;
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        base.saturating_mul(factor).min(self.cfg.retry_max)
    }

    /// Save the state to the state file and, in a cluster, for the next
    /// leader (under this node's term: refused once it no longer leads).
    pub(crate) async fn save(&self, st: &Persisted) -> Result<(), GitError> {
        self.metrics
            .retries_pending
            .set(st.retries.values().filter(|r| !r.gave_up).count() as f64);
        st.save(&self.cfg.state_dir).map_err(GitError::State)?;
        let term = self.term.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((shared, term)) = term {
            let bytes = serde_json::to_vec(st).map_err(|e| GitError::State(e.to_string()))?;
            shared.save(NAME, &bytes, term).await.map_err(|e| {
                GitError::State(format!("saving the state for the next leader: {e}"))
            })?;
        }
        Ok(())
    }

    /// This node leads (`term`): in a cluster, go on from the state the
    /// last leader saved (this node's own file may be stale, or empty), and
    /// save for the next one from now on.
    pub(crate) async fn begin_term(&self, exec: &Executor, term: Term) -> Result<(), GitError> {
        let Some(shared) = exec.leader_state() else {
            return Ok(());
        };
        let saved = shared
            .load(NAME)
            .await
            .map_err(|e| GitError::State(format!("reading the last leader's state: {e}")))?;
        let mut work = self.work.lock().await;
        if let Some(bytes) = saved {
            let st: Persisted = serde_json::from_slice(&bytes)
                .map_err(|e| GitError::State(format!("the last leader's state: {e}")))?;
            st.save(&self.cfg.state_dir).map_err(GitError::State)?;
            work.state = Some(st);
        }
        *self.term.lock().unwrap_or_else(|p| p.into_inner()) = Some((shared, term));
        Ok(())
    }

    /// This node's term ended.
    pub(crate) fn end_term(&self) {
        *self.term.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn load(&self, work: &mut Work) -> Result<(), GitError> {
        if work.state.is_none() {
            work.state = Some(Persisted::load(&self.cfg.state_dir).map_err(GitError::State)?);
        }
        Ok(())
    }

    pub(crate) async fn commit_info(
        self: &Arc<Self>,
        commit: Oid,
    ) -> Result<repo::CommitInfo, GitError> {
        let me = self.clone();
        blocking(move || {
            let r = repo::open(&me.cfg)?;
            repo::commit_info(&r, commit)
        })
        .await
    }

    /// Verify a commit's signature when `require_signed` is on: `Ok(None)` when
    /// not required, `Ok(Some(description))` when good, `Err(reason)` when refused.
    pub(crate) async fn check_signature(
        self: &Arc<Self>,
        commit: Oid,
        author_email: &str,
    ) -> Result<Result<Option<String>, String>, GitError> {
        if !self.cfg.require_signed {
            return Ok(Ok(None));
        }
        let me = self.clone();
        let email = author_email.to_string();
        blocking(move || {
            let r = repo::open(&me.cfg)?;
            Ok(match repo::signature(&r, commit)? {
                None => Err("the commit is not signed".to_string()),
                Some((sig, payload)) => signing::verify(&me.cfg, &sig, &payload, &email).map(Some),
            })
        })
        .await
    }

    pub(crate) async fn publish_note(
        self: &Arc<Self>,
        exec: &Executor,
        st: &mut Persisted,
        commit: &str,
    ) {
        if let Ok((seq, hash)) = exec.store().head().await {
            st.note(commit, &self.cfg.branch).audit_hash = Some(format!("seq {seq} {hash}"));
        }
        let text = st.note(commit, &self.cfg.branch).render(commit);
        let me = self.clone();
        let commit = commit.to_string();
        let r = blocking(move || {
            let r = repo::open(&me.cfg)?;
            repo::write_note(&r, &commit, &text)?;
            if me.cfg.push_notes {
                repo::push_notes(&r, &me.cfg)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(frontend = NAME, error = %e, "writing the git note failed");
        }
    }

    /// The desired state at `commit` (files parsed once per blob; the state
    /// combined incrementally from the last one).
    pub(crate) async fn desired(
        self: &Arc<Self>,
        work: &mut Work,
        commit: Oid,
    ) -> Result<Arc<DesiredState>, GitError> {
        let me = self.clone();
        let mut parsed = std::mem::take(&mut work.parsed);
        let (result, parsed) = tokio::task::spawn_blocking(move || {
            let r = load::desired_at(&me.cfg, &me.kinds, &mut parsed, commit);
            (r, parsed)
        })
        .await
        .map_err(|e| GitError::Git(format!("git task failed: {e}")))?;
        work.parsed = parsed;
        match result.map_err(GitError::Git)? {
            Ok(d) => Ok(d),
            Err(errors) => Err(GitError::Desired {
                commit: commit.to_string(),
                errors,
            }),
        }
    }

    pub(crate) async fn refuse(
        self: &Arc<Self>,
        exec: &Executor,
        st: &mut Persisted,
        info: &repo::CommitInfo,
        reason: &str,
        consequence: &str,
    ) -> Result<(), GitError> {
        if !st.report_once(format!("refused:{}", info.id)) {
            return Ok(());
        }
        self.metrics.refused_commits.increment(1);
        exec.notice(
            None,
            NAME,
            "commit_refused",
            format!(
                "commit {} by {} on {} refused ({reason}); {consequence}",
                short(&info.id),
                info.author_email,
                self.cfg.branch
            ),
            serde_json::json!({
                "commit": info.id,
                "author": info.author_email,
                "summary": info.summary,
                "branch": self.cfg.branch,
                "location": self.cfg.location,
                "reason": reason,
            }),
        )
        .await?;
        st.note(&info.id, &self.cfg.branch)
            .errors
            .push(format!("refused: {reason}; {consequence}"));
        self.publish_note(exec, st, &info.id).await;
        self.save(st).await
    }

    pub(crate) async fn report_invalid(
        self: &Arc<Self>,
        exec: &Executor,
        st: &mut Persisted,
        commit: &str,
        errors: &[DesiredError],
    ) -> Result<(), GitError> {
        if !st.report_once(format!("invalid:{commit}")) {
            return Ok(());
        }
        self.metrics.invalid_commits.increment(1);
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        exec.notice(
            None,
            NAME,
            "desired_state_invalid",
            format!(
                "commit {} on {}: the desired state has {} error(s), nothing from it was applied: {}",
                short(commit),
                self.cfg.branch,
                lines.len(),
                lines.first().cloned().unwrap_or_default()
            ),
            serde_json::json!({ "commit": commit, "branch": self.cfg.branch, "errors": lines }),
        )
        .await?;
        st.note(commit, &self.cfg.branch).errors = lines;
        self.publish_note(exec, st, commit).await;
        self.save(st).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(extra: &str) -> Engine {
        let section: toml::Table =
            toml::from_str(&format!("repo = \"/nonexistent\"\n{extra}")).unwrap();
        let cfg = GitConfig::parse(&section, std::path::Path::new("/")).unwrap();
        let kinds = Kinds::parse(&[], std::path::Path::new("/")).unwrap();
        Engine::new(cfg, kinds, Metrics::register())
    }

    #[test]
    fn backoff_is_capped_exponential() {
        let e = engine("retry_base = \"1s\"\nretry_max = \"10s\"");
        let d: Vec<u64> = (1..=6).map(|a| e.backoff(a).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(e.backoff(1000).as_secs(), 10);
    }
}
