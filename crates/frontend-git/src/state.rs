//! What the frontend remembers across restarts, in `<state_dir>/state.json`
//! (written atomically: a temp file renamed over the old one).
//!
//! The executor's dedup keys are the real guard against running anything twice;
//! this file makes restarts cheap and keeps the pieces dedup keys cannot: the last
//! commit seen (for trailers and force-push detection), the last applied state
//! (the actual state of kinds without an observer), retry schedules, and the
//! records the git notes are rendered from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Notes kept in the state file (older ones stay in git, they are just no longer updated).
const MAX_NOTES: usize = 500;
/// Commits remembered as already reported (refused, broken).
const MAX_REPORTED: usize = 2000;

/// A resource as YouOps last applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Applied {
    pub kind: String,
    pub key: String,
    pub fields: BTreeMap<String, String>,
    pub commit: String,
}

/// A change that did not succeed (yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Retry {
    /// The commit the change belongs to; a new commit supersedes it.
    pub commit: String,
    /// `create`, `update`, `delete`.
    pub action: String,
    /// Attempt number the next submission uses (part of its dedup key).
    pub attempt: u32,
    /// When the next attempt is due (unix ms); `None` when not timed.
    pub next_at_ms: Option<i64>,
    /// Waiting for approval: re-checked when its request ends.
    #[serde(default)]
    pub waiting: bool,
    /// Gave up for this commit (denied, invalid, rejected, ...).
    #[serde(default)]
    pub gave_up: bool,
    /// Last request made for it.
    pub request: Option<String>,
    /// Why it did not succeed.
    pub reason: String,
}

/// One request line of a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NoteRequest {
    pub id: String,
    pub state: String,
    pub what: String,
}

/// What the note of one commit shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NoteRecord {
    pub seq: u64,
    pub branch: String,
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default)]
    pub plan: Vec<String>,
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub requests: Vec<NoteRequest>,
    #[serde(default)]
    pub replies: Vec<String>,
    #[serde(default)]
    pub drift: Vec<String>,
    #[serde(default)]
    pub audit_hash: Option<String>,
}

impl NoteRecord {
    pub(crate) fn set_request(&mut self, id: &str, state: &str, what: &str) {
        match self.requests.iter_mut().find(|r| r.id == id) {
            Some(r) => state.clone_into(&mut r.state),
            None => self.requests.push(NoteRequest {
                id: id.to_string(),
                state: state.to_string(),
                what: what.to_string(),
            }),
        }
    }

    /// The note text: plain lines people read with `git notes --ref youops show`.
    pub(crate) fn render(&self, commit: &str) -> String {
        let mut s = format!("YouOps: {commit} on {}\n", self.branch);
        if let Some(sig) = &self.signature {
            s.push_str(&format!("Signature: {sig}\n"));
        }
        if !self.errors.is_empty() {
            s.push_str("\nErrors (nothing from this commit was applied):\n");
            for e in &self.errors {
                s.push_str(&format!("  {e}\n"));
            }
        }
        if !self.plan.is_empty() {
            s.push_str("\nPlan:\n");
            for p in &self.plan {
                s.push_str(&format!("  {p}\n"));
            }
        }
        if !self.requests.is_empty() {
            s.push_str("\nRequests:\n");
            for r in &self.requests {
                s.push_str(&format!("  {} {} {}\n", r.id, r.state, r.what));
            }
        }
        if !self.replies.is_empty() {
            s.push_str("\nReplies:\n");
            for r in &self.replies {
                s.push_str(&format!("  {r}\n"));
            }
        }
        if !self.drift.is_empty() {
            s.push_str("\nDrift:\n");
            for d in &self.drift {
                s.push_str(&format!("  {d}\n"));
            }
        }
        if let Some(h) = &self.audit_hash {
            s.push_str(&format!("\nAudit: {h}\n"));
        }
        s
    }
}

/// Parse `(request id, state)` pairs back out of a rendered note.
pub fn note_request_states(note: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_requests = false;
    for line in note.lines() {
        if line.is_empty() {
            in_requests = false;
            continue;
        }
        if line == "Requests:" {
            in_requests = true;
            continue;
        }
        if in_requests {
            let mut parts = line.split_whitespace();
            if let (Some(id), Some(state)) = (parts.next(), parts.next()) {
                out.push((id.to_string(), state.to_string()));
            }
        }
    }
    out
}

/// The persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Persisted {
    #[serde(default)]
    pub initialized: bool,
    #[serde(default)]
    pub last_seen: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    /// The commit whose changes are being applied, saved before they are
    /// submitted and cleared once the pass saved their results: if the
    /// pass is cut short (a crash, or a new leader), the next pass first
    /// plans that commit again, so the changes it submitted are found by
    /// their dedup keys instead of being submitted again under a newer
    /// commit's.
    #[serde(default)]
    pub applying: Option<String>,
    #[serde(default)]
    pub applied: BTreeMap<String, Applied>,
    #[serde(default)]
    pub retries: BTreeMap<String, Retry>,
    #[serde(default)]
    pub reported: BTreeSet<String>,
    #[serde(default)]
    pub notes: BTreeMap<String, NoteRecord>,
    #[serde(default)]
    pub note_seq: u64,
    #[serde(default)]
    pub heal_seq: u64,
    #[serde(default)]
    pub drifted: BTreeSet<String>,
}

impl Persisted {
    pub(crate) fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub(crate) fn load(dir: &Path) -> Result<Persisted, String> {
        match std::fs::read(Self::path(dir)) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{}: {e}", Self::path(dir).display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
            Err(e) => Err(format!("{}: {e}", Self::path(dir).display())),
        }
    }

    pub(crate) fn save(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let bytes = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| e.to_string())?;
        tmp.as_file().sync_all().map_err(|e| e.to_string())?;
        tmp.persist(Self::path(dir)).map_err(|e| e.to_string())?;
        Ok(())
    }

    pub(crate) fn note(&mut self, commit: &str, branch: &str) -> &mut NoteRecord {
        if !self.notes.contains_key(commit) {
            self.note_seq += 1;
            let seq = self.note_seq;
            if self.notes.len() >= MAX_NOTES {
                if let Some(oldest) = self
                    .notes
                    .iter()
                    .min_by_key(|(_, n)| n.seq)
                    .map(|(k, _)| k.clone())
                {
                    self.notes.remove(&oldest);
                }
            }
            self.notes.insert(
                commit.to_string(),
                NoteRecord {
                    seq,
                    branch: branch.to_string(),
                    ..Default::default()
                },
            );
        }
        self.notes.get_mut(commit).expect("inserted above")
    }

    /// Remember that `what` was reported; `false` if it already was.
    pub(crate) fn report_once(&mut self, what: String) -> bool {
        if self.reported.len() >= MAX_REPORTED {
            self.reported.clear();
        }
        self.reported.insert(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_round_trip() {
        let mut n = NoteRecord {
            branch: "main".into(),
            plan: vec!["+ user/a".into()],
            ..Default::default()
        };
        n.set_request("01ABC", "running", "apply user/a (user.apply)");
        n.set_request("01ABC", "succeeded", "ignored");
        n.set_request("01ABD", "failed", "trailer 0: x");
        n.audit_hash = Some("ff".into());
        let text = n.render("c0ffee");
        assert!(
            text.contains("  01ABC succeeded apply user/a (user.apply)\n"),
            "{text}"
        );
        assert_eq!(
            note_request_states(&text),
            vec![
                ("01ABC".to_string(), "succeeded".to_string()),
                ("01ABD".to_string(), "failed".to_string())
            ]
        );
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Persisted::load(dir.path()).unwrap(), Persisted::default());
        let mut p = Persisted {
            last_seen: Some("abc".into()),
            ..Default::default()
        };
        p.note("abc", "main").plan.push("x".into());
        assert!(p.report_once("a".into()));
        assert!(!p.report_once("a".into()));
        p.save(dir.path()).unwrap();
        assert_eq!(Persisted::load(dir.path()).unwrap(), p);
    }
}
