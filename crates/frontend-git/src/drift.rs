//! Drift checks: observe the kinds that have an observer, compare with the
//! desired state of the last reconciled commit, record new drift and correct
//! it where `self_heal` says so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use git2::Oid;
use youops_core::{Executor, RequestId, State};

use crate::apply::remember_applied;
use crate::engine::{settled, short, Engine, NAME};
use crate::error::GitError;
use crate::plan::{diff, Actual, PlanEntry};
use crate::state::Persisted;

/// Drift lines kept per note.
const MAX_DRIFT_LINES: usize = 50;

/// What a drift check found and did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DriftReport {
    /// The commit whose desired state was compared.
    pub commit: Option<String>,
    /// Drifted resources (create/update/delete needed to match the declaration).
    pub drifted: Vec<PlanEntry>,
    /// Of those, newly drifted since the last check (these were put on the audit record).
    pub new: Vec<String>,
    /// Self-heal requests and their states.
    pub healed: Vec<(String, RequestId, State)>,
    /// Kinds whose actual state could not be observed.
    pub kind_errors: Vec<String>,
}

impl Engine {
    /// One drift check (see [`crate::check_drift`]).
    pub(crate) async fn drift(self: &Arc<Self>, exec: &Executor) -> Result<DriftReport, GitError> {
        let mut guard = self.work.lock().await;
        let work = &mut *guard;
        self.load(work)?;
        let mut report = DriftReport::default();
        if !self.kinds.iter().any(|k| k.observe.is_some()) {
            return Ok(report);
        }
        let Some(target) = work.state.as_ref().expect("loaded").target.clone() else {
            return Ok(report);
        };
        report.commit = Some(target.clone());
        let oid = Oid::from_str(&target).map_err(|e| GitError::Git(e.to_string()))?;
        let desired = self.desired(work, oid).await?;
        let st = work.state.as_mut().expect("loaded");
        let (actual, errors) = self.observed().await;
        report.kind_errors = self.report_observe(exec, &desired, &actual, errors).await?;
        let drifted: Vec<PlanEntry> = diff(&desired, &actual, &self.kinds, self.cfg.prune)
            .into_iter()
            .filter(|e| e.action.is_change() && !st.retries.contains_key(&e.id()))
            .collect();
        report.new = self.track(st, &drifted, &actual);
        if !report.new.is_empty() {
            self.report_drift(exec, st, &report.new, &drifted, &target)
                .await?;
        }
        let heal: Vec<&PlanEntry> = drifted
            .iter()
            .filter(|e| {
                self.kinds
                    .get(&e.kind)
                    .and_then(|k| k.self_heal)
                    .unwrap_or(self.cfg.self_heal)
            })
            .collect();
        if !heal.is_empty() {
            report.healed = self.heal(exec, st, heal, &target, oid).await?;
        }
        report.drifted = drifted;
        if !report.new.is_empty() || !report.healed.is_empty() {
            let note = st.note(&target, &self.cfg.branch);
            let excess = note.drift.len().saturating_sub(MAX_DRIFT_LINES);
            note.drift.drain(..excess);
            self.publish_note(exec, st, &target).await;
        }
        self.save(st).await?;
        Ok(report)
    }

    /// Update the drifted set with what this check found; returns the newly
    /// drifted resources.
    fn track(
        &self,
        st: &mut Persisted,
        drifted: &[PlanEntry],
        actual: &BTreeMap<String, Actual>,
    ) -> Vec<String> {
        let ids: BTreeSet<String> = drifted.iter().map(|e| e.id()).collect();
        // Kinds that could not be observed keep their previous drift status.
        let observed: BTreeSet<&String> = actual.keys().collect();
        let previous: BTreeSet<String> = st
            .drifted
            .iter()
            .filter(|id| !observed.iter().any(|k| id.starts_with(&format!("{k}/"))))
            .cloned()
            .collect();
        let new = ids.difference(&st.drifted).cloned().collect();
        st.drifted = ids.union(&previous).cloned().collect();
        self.metrics.drifted_now.set(st.drifted.len() as f64);
        new
    }

    /// Put new drift on the audit record and the commit's note.
    async fn report_drift(
        &self,
        exec: &Executor,
        st: &mut Persisted,
        new: &[String],
        drifted: &[PlanEntry],
        target: &str,
    ) -> Result<(), GitError> {
        self.metrics.drift_detected.increment(new.len() as u64);
        let details: Vec<serde_json::Value> = drifted
            .iter()
            .filter(|e| new.contains(&e.id()))
            .map(|e| {
                serde_json::json!({
                    "resource": e.id(),
                    "action": e.action.as_str(),
                    "fields": e.changes.iter().map(|c| c.field.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        exec.notice(
            None,
            NAME,
            "drift",
            format!(
                "drift from commit {} on {}: {} resource(s) differ from the declaration: {}",
                short(target),
                self.cfg.branch,
                new.len(),
                new.join(", ")
            ),
            serde_json::json!({ "commit": target, "branch": self.cfg.branch, "resources": details }),
        )
        .await?;
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        let note = st.note(target, &self.cfg.branch);
        for e in drifted.iter().filter(|e| new.contains(&e.id())) {
            note.drift
                .push(format!("{stamp} drift {} {}", e.action.sign(), e.id()));
        }
        Ok(())
    }

    /// Correct drifted resources; returns the self-heal requests and their states.
    async fn heal(
        self: &Arc<Self>,
        exec: &Executor,
        st: &mut Persisted,
        heal: Vec<&PlanEntry>,
        target: &str,
        oid: Oid,
    ) -> Result<Vec<(String, RequestId, State)>, GitError> {
        let mut healed = Vec::new();
        let info = self.commit_info(oid).await?;
        let actor = self.actor(&info);
        st.heal_seq += 1;
        let seq = st.heal_seq;
        self.save(st).await?;
        let mut pending = Vec::new();
        for e in heal {
            let dedup = format!("git:{target}:{}:{}:heal-{seq}", e.id(), e.action.as_str());
            let Some(sub) = self.submission(
                exec,
                e,
                target,
                &actor,
                dedup,
                &[("reason", "self-heal".to_string())],
            ) else {
                continue;
            };
            let t = exec.submit(sub).await?;
            pending.push((e, t.record.request.id));
        }
        let records =
            futures::future::join_all(pending.iter().map(|(_, id)| settled(exec, *id))).await;
        for ((e, rid), rec) in pending.into_iter().zip(records) {
            let rec = rec?;
            let id = e.id();
            if rec.state == State::Succeeded {
                self.metrics.drift_corrected.increment(1);
                st.drifted.remove(&id);
                remember_applied(st, &id, e, target);
            }
            let note = st.note(target, &self.cfg.branch);
            note.set_request(
                &rid.to_string(),
                rec.state.as_str(),
                &format!("self-heal {} {id} ({})", e.action.as_str(), rec.request.op),
            );
            healed.push((id, rid, rec.state));
        }
        self.metrics.drifted_now.set(st.drifted.len() as f64);
        Ok(healed)
    }
}
