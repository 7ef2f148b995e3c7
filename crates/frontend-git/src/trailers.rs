//! Commit-trailer commands: `Youops-Run:` trailers of commits new since the
//! last one seen, run once per commit and trailer, in commit order; and
//! force-push detection.

use std::collections::BTreeMap;
use std::sync::Arc;

use git2::Oid;
use youops_core::{Actor, DedupKey, Executor, Inbound, Origin, Reply};

use crate::engine::{blocking, settled, short, Engine, Work, NAME};
use crate::error::GitError;
use crate::repo;
use crate::state::Persisted;

impl Engine {
    /// Trailers of commits new since the last one seen, in commit order;
    /// force-push detection.
    pub(crate) async fn history(
        self: &Arc<Self>,
        exec: &Executor,
        work: &mut Work,
        head: Oid,
    ) -> Result<(), GitError> {
        let st = work.state.as_mut().expect("loaded");
        let head_s = head.to_string();
        if !st.initialized {
            // The first sync of an existing branch is a baseline: trailers of
            // history written before YouOps watched the branch do not run.
            st.initialized = true;
            st.last_seen = Some(head_s);
            return self.save(st).await;
        }
        if st.last_seen.as_deref() == Some(head_s.as_str()) {
            return Ok(());
        }
        let last = st.last_seen.clone();
        let me = self.clone();
        let scan = blocking(move || {
            let r = repo::open(&me.cfg)?;
            repo::scan(&r, last.as_deref(), head)
        })
        .await?;
        if let Some(fp) = &scan.force_push {
            self.metrics.force_pushes.increment(1);
            let msg = format!(
                "branch {} of {} was rewritten (force-push): {} is no longer in its history, head is now {}; {} seen commit(s) dropped{}; nothing is re-run because of it",
                self.cfg.branch,
                self.cfg.location,
                short(&fp.old),
                short(&fp.new),
                fp.dropped.len(),
                if fp.unknown_old { " (the old head is no longer in the repository)" } else { "" },
            );
            exec.notice(
                None,
                NAME,
                "force_push",
                msg,
                serde_json::json!({
                    "branch": self.cfg.branch,
                    "location": self.cfg.location,
                    "old_head": fp.old,
                    "new_head": fp.new,
                    "merge_base": fp.base,
                    "dropped": fp.dropped,
                    "rewritten_not_rerun": fp.skipped_rewritten,
                }),
            )
            .await?;
        }
        for c in &scan.commits {
            if c.trailers.is_empty() {
                continue;
            }
            self.run_trailers(exec, work, c).await?;
            let st = work.state.as_mut().expect("loaded");
            st.last_seen = Some(c.id.clone());
            self.save(st).await?;
        }
        let st = work.state.as_mut().expect("loaded");
        st.last_seen = Some(head_s);
        self.save(st).await
    }

    async fn run_trailers(
        self: &Arc<Self>,
        exec: &Executor,
        work: &mut Work,
        c: &repo::CommitInfo,
    ) -> Result<(), GitError> {
        let oid = Oid::from_str(&c.id).map_err(|e| GitError::Git(e.to_string()))?;
        if !self.admit(exec, work, c, oid).await? {
            return Ok(());
        }
        let st = work.state.as_mut().expect("loaded");
        let actor = self.actor(c);
        for (i, text) in c.trailers.iter().enumerate() {
            self.run_trailer(exec, st, c, &actor, i, text).await?;
        }
        self.publish_note(exec, st, &c.id).await;
        Ok(())
    }

    /// Whether a commit's trailers may run: its signature (when required) and
    /// its desired state must be good; otherwise the refusal or the errors
    /// are reported and `false` returned.
    async fn admit(
        self: &Arc<Self>,
        exec: &Executor,
        work: &mut Work,
        c: &repo::CommitInfo,
        oid: Oid,
    ) -> Result<bool, GitError> {
        match self.check_signature(oid, &c.author_email).await? {
            Ok(sig) => {
                let st = work.state.as_mut().expect("loaded");
                st.note(&c.id, &self.cfg.branch).signature = sig;
            }
            Err(reason) => {
                let st = work.state.as_mut().expect("loaded");
                self.refuse(exec, st, c, &reason, "its trailer commands did not run")
                    .await?;
                return Ok(false);
            }
        }
        // A broken commit changes nothing: its trailers do not run either.
        if let Err(e) = self.desired(work, oid).await {
            let st = work.state.as_mut().expect("loaded");
            return match e {
                GitError::Desired { commit, errors } => {
                    self.report_invalid(exec, st, &commit, &errors).await?;
                    Ok(false)
                }
                other => Err(other),
            };
        }
        Ok(true)
    }

    /// Run trailer `i` of commit `c` and put its result on the commit's note.
    async fn run_trailer(
        &self,
        exec: &Executor,
        st: &mut Persisted,
        c: &repo::CommitInfo,
        actor: &Actor,
        i: usize,
        text: &str,
    ) -> Result<(), GitError> {
        let origin = Origin::new(NAME)
            .with_location(self.cfg.location.clone())
            .with_ref("commit", c.id.clone())
            .with_ref("trailer", i.to_string());
        let provenance = BTreeMap::from([
            ("commit".to_string(), c.id.clone()),
            ("branch".to_string(), self.cfg.branch.clone()),
            ("trailer".to_string(), i.to_string()),
        ]);
        let what = format!("trailer {i}: {text}");
        let cmd = match youops_core::grammar::parse(text) {
            Ok(cmd) => cmd,
            Err(e) => {
                if st.report_once(format!("trailer:{}:{i}", c.id)) {
                    exec.notice(
                        None,
                        NAME,
                        "trailer_invalid",
                        format!(
                            "commit {} trailer {i} `{text}` does not parse: {e}",
                            short(&c.id)
                        ),
                        serde_json::json!({ "commit": c.id, "trailer": i }),
                    )
                    .await?;
                }
                st.note(&c.id, &self.cfg.branch)
                    .replies
                    .push(format!("{what}: does not parse: {e}"));
                return Ok(());
            }
        };
        // The claim may expire with the dedup window: the branch's
        // `last_seen` commit (the frontend's own durable state) already keeps
        // a trailer from being read twice; the claim covers the crash between
        // submitting it and saving that state.
        let dedup = format!("git:{}:run:{i}", c.id);
        let mut inbound = Inbound::new(cmd, actor.clone(), origin).dedup(DedupKey::delivery(dedup));
        inbound.provenance = provenance;
        match exec.handle(inbound).await {
            Ok(Reply::Submitted(t)) => {
                if !t.duplicate {
                    self.metrics.trailer_commands.increment(1);
                }
                let rec = settled(exec, t.record.request.id).await?;
                st.note(&c.id, &self.cfg.branch).set_request(
                    &rec.request.id.to_string(),
                    rec.state.as_str(),
                    &what,
                );
            }
            Ok(Reply::Help(h)) => {
                let first = h.lines().next().unwrap_or("").to_string();
                st.note(&c.id, &self.cfg.branch)
                    .replies
                    .push(format!("{what}: {first}"));
            }
            Ok(Reply::Record(r)) => st
                .note(&c.id, &self.cfg.branch)
                .replies
                .push(format!("{what}: request {} is {}", r.request.id, r.state)),
            Ok(_) => {}
            Err(e) => st
                .note(&c.id, &self.cfg.branch)
                .replies
                .push(format!("{what}: {e}")),
        }
        Ok(())
    }
}
