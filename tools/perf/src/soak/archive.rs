//! Requests archived out of the store (`--archive`): read back from the
//! archive files, so that they still count as stored.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone)]
pub(crate) struct ArchivedReq {
    pub(crate) frontend: String,
    pub(crate) op: String,
    /// The last state a transition moved it to (`received` before any).
    pub(crate) state: String,
    pub(crate) created: Option<chrono::DateTime<chrono::Utc>>,
    /// Time of its last transition.
    pub(crate) updated: Option<chrono::DateTime<chrono::Utc>>,
}

/// The requests of every archive file read so far. Archive files never change
/// once renamed into place, so each is read once.
#[derive(Debug, Default)]
pub(crate) struct Archived {
    pub(crate) files: HashSet<PathBuf>,
    pub(crate) reqs: HashMap<String, ArchivedReq>,
}

impl Archived {
    /// Read the archive files not read yet, in chain order.
    pub(crate) fn refresh(&mut self, dir: &Path) -> Result<(), String> {
        use youops_core::model::{AuditEvent, EventBody};
        let files = youops_core::audit::archive_files(dir)
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for f in files {
            if self.files.contains(&f) {
                continue;
            }
            let text = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            for (i, line) in text.lines().enumerate() {
                let ev: AuditEvent = serde_json::from_str(line)
                    .map_err(|e| format!("{}:{}: {e}", f.display(), i + 1))?;
                let Some(id) = ev.request_id else { continue };
                let r = self.reqs.entry(id.to_string()).or_default();
                match ev.body {
                    EventBody::Received { request } => {
                        r.frontend = request.origin.frontend.clone();
                        r.op = request.op.clone();
                        r.created = Some(request.created_at);
                        if r.state.is_empty() {
                            r.state = "received".into();
                        }
                    }
                    EventBody::Transition(t) => {
                        r.state = t.to.as_str().to_string();
                        r.updated = Some(ev.time);
                    }
                    _ => {}
                }
            }
            self.files.insert(f);
        }
        Ok(())
    }
}
