//! Blocking git work on `git2` (run on the blocking pool): open or clone, fetch,
//! read trees, walk new commits, read signatures, write and push notes.

use std::collections::HashSet;
use std::path::Path;

use git2::{
    Cred, CredentialType, FetchOptions, ObjectType, Oid, PushOptions, RemoteCallbacks, Repository,
    Signature, Sort, TreeWalkMode, TreeWalkResult,
};

use crate::config::{GitConfig, Source};

/// The notes ref YouOps writes.
pub const NOTES_REF: &str = "refs/notes/youops";
/// The trailer key of commit-trailer commands.
pub const TRAILER_KEY: &str = "Youops-Run";

pub(crate) fn err(e: git2::Error) -> String {
    e.message().to_string()
}

/// Open the repository (local) or the clone (remote; created on first use).
pub(crate) fn open(cfg: &GitConfig) -> Result<Repository, String> {
    match &cfg.source {
        Source::Local(p) => Repository::open(p).map_err(|e| format!("{}: {}", p.display(), err(e))),
        Source::Remote(_) => {
            let dir = &cfg.checkout_dir;
            if dir.join("HEAD").is_file() {
                Repository::open_bare(dir).map_err(|e| format!("{}: {}", dir.display(), err(e)))
            } else {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                Repository::init_bare(dir).map_err(|e| format!("{}: {}", dir.display(), err(e)))
            }
        }
    }
}

fn callbacks(cfg: &GitConfig) -> RemoteCallbacks<'_> {
    let mut cb = RemoteCallbacks::new();
    let mut tries = 0u32;
    cb.credentials(move |_url, username, allowed| {
        tries += 1;
        if tries > 3 {
            return Err(git2::Error::from_str(
                "authentication failed (check `token` / `ssh_key`)",
            ));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            if let Some(k) = &cfg.ssh_key {
                let user = cfg.ssh_user.as_deref().or(username).unwrap_or("git");
                return Cred::ssh_key(user, None, k, None);
            }
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let Some(t) = &cfg.token {
                return Cred::userpass_plaintext("x-access-token", t);
            }
        }
        Err(git2::Error::from_str(
            "the remote asks for credentials and none are configured (`token` for https, `ssh_key` for ssh)",
        ))
    });
    cb
}

/// Fetch the branch of a remote into `refs/remotes/origin/<branch>` (no-op for local repos).
pub(crate) fn fetch(repo: &Repository, cfg: &GitConfig) -> Result<(), String> {
    let Source::Remote(url) = &cfg.source else {
        return Ok(());
    };
    let mut remote = repo.remote_anonymous(url).map_err(err)?;
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(cfg));
    let spec = format!("+refs/heads/{b}:refs/remotes/origin/{b}", b = cfg.branch);
    remote
        .fetch(&[spec.as_str()], Some(&mut opts), None)
        .map_err(|e| format!("fetch from {}: {}", cfg.location, err(e)))
}

/// The branch head, `None` when the branch does not exist (yet).
pub(crate) fn head(repo: &Repository, cfg: &GitConfig) -> Result<Option<Oid>, String> {
    match repo.refname_to_id(&cfg.tracking_ref()) {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(err(e)),
    }
}

/// What YouOps needs of a commit.
#[derive(Debug, Clone)]
pub(crate) struct CommitInfo {
    pub id: String,
    pub author_name: String,
    pub author_email: String,
    pub summary: String,
    /// `Youops-Run` trailer values, in order.
    pub trailers: Vec<String>,
}

pub(crate) fn commit_info(repo: &Repository, oid: Oid) -> Result<CommitInfo, String> {
    let c = repo.find_commit(oid).map_err(err)?;
    let msg = String::from_utf8_lossy(c.message_bytes()).into_owned();
    let trailers = youops_trailers(&msg);
    let a = c.author();
    Ok(CommitInfo {
        id: oid.to_string(),
        author_name: String::from_utf8_lossy(a.name_bytes()).into_owned(),
        author_email: String::from_utf8_lossy(a.email_bytes()).into_owned(),
        summary: String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned(),
        trailers,
    })
}

/// `Youops-Run:` trailer values of a commit message, in order.
pub fn youops_trailers(message: &str) -> Vec<String> {
    match git2::message_trailers_strs(message) {
        Ok(t) => t
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(TRAILER_KEY))
            .map(|(_, v)| v.trim().to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A rewrite of history already seen.
#[derive(Debug, Clone)]
pub(crate) struct ForcePush {
    pub old: String,
    pub new: String,
    pub base: Option<String>,
    pub dropped: Vec<String>,
    pub skipped_rewritten: Vec<String>,
    pub unknown_old: bool,
}

/// New commits since `last_seen`, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    pub commits: Vec<CommitInfo>,
    pub force_push: Option<ForcePush>,
}

fn identity(repo: &Repository, oid: Oid) -> Option<String> {
    let c = repo.find_commit(oid).ok()?;
    let a = c.author();
    Some(format!(
        "{}\u{0}{}\u{0}{}",
        String::from_utf8_lossy(a.email_bytes()),
        a.when().seconds(),
        String::from_utf8_lossy(c.message_bytes())
    ))
}

fn walk(repo: &Repository, push: Oid, hide: Option<Oid>) -> Result<Vec<Oid>, String> {
    let mut w = repo.revwalk().map_err(err)?;
    w.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)
        .map_err(err)?;
    w.push(push).map_err(err)?;
    if let Some(h) = hide {
        w.hide(h).map_err(err)?;
    }
    w.map(|r| r.map_err(err)).collect()
}

/// Commits new on the branch since `last_seen` (all of them when `None`), oldest
/// first. A head that does not descend from `last_seen` is a force-push: the
/// commits it dropped are reported, and commits of the new history that are
/// rewrites of dropped ones (same author, author time and message) are not new.
pub(crate) fn scan(repo: &Repository, last_seen: Option<&str>, head: Oid) -> Result<Scan, String> {
    let infos = |oids: Vec<Oid>| -> Result<Vec<CommitInfo>, String> {
        oids.into_iter().map(|o| commit_info(repo, o)).collect()
    };
    let Some(old_s) = last_seen else {
        return Ok(Scan {
            commits: infos(walk(repo, head, None)?)?,
            force_push: None,
        });
    };
    let old = Oid::from_str(old_s).map_err(err)?;
    if old == head {
        return Ok(Scan::default());
    }
    let old_exists = repo.find_commit(old).is_ok();
    if old_exists && repo.graph_descendant_of(head, old).map_err(err)? {
        return Ok(Scan {
            commits: infos(walk(repo, head, Some(old))?)?,
            force_push: None,
        });
    }
    // History was rewritten (or rewound).
    let base = if old_exists {
        repo.merge_base(head, old).ok()
    } else {
        None
    };
    let dropped = if old_exists {
        walk(repo, old, Some(head))?
    } else {
        Vec::new()
    };
    let dropped_ids: HashSet<String> = dropped.iter().filter_map(|o| identity(repo, *o)).collect();
    let mut commits = Vec::new();
    let mut skipped = Vec::new();
    if let Some(b) = base {
        for o in walk(repo, head, Some(b))? {
            if identity(repo, o).is_some_and(|i| dropped_ids.contains(&i)) {
                skipped.push(o.to_string());
            } else {
                commits.push(commit_info(repo, o)?);
            }
        }
    }
    Ok(Scan {
        commits,
        force_push: Some(ForcePush {
            old: old.to_string(),
            new: head.to_string(),
            base: base.map(|b| b.to_string()),
            dropped: dropped.iter().map(|o| o.to_string()).collect(),
            skipped_rewritten: skipped,
            unknown_old: !old_exists,
        }),
    })
}

/// `(path from the repository root, blob id)` of every `*.toml` under `subdir`.
pub(crate) fn desired_files(
    repo: &Repository,
    commit: Oid,
    subdir: &str,
) -> Result<Vec<(String, Oid)>, String> {
    let c = repo.find_commit(commit).map_err(err)?;
    let root = c.tree().map_err(err)?;
    let tree = if subdir.is_empty() {
        root
    } else {
        let entry = root
            .get_path(Path::new(subdir))
            .map_err(|_| format!("the subdirectory `{subdir}` does not exist in this commit"))?;
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(format!("`{subdir}` is not a directory in this commit"));
        }
        repo.find_tree(entry.id()).map_err(err)?
    };
    let prefix = if subdir.is_empty() {
        String::new()
    } else {
        format!("{subdir}/")
    };
    let mut out = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(ObjectType::Blob) {
            if let Some(name) = entry.name() {
                if name.ends_with(".toml") {
                    out.push((format!("{prefix}{dir}{name}"), entry.id()));
                }
            }
        }
        TreeWalkResult::Ok
    })
    .map_err(err)?;
    out.sort();
    Ok(out)
}

/// A blob's text; `Err` for non-UTF-8 content.
pub(crate) fn blob_text(repo: &Repository, oid: Oid) -> Result<String, String> {
    let b = repo.find_blob(oid).map_err(err)?;
    if b.size() > crate::desired::MAX_FILE_BYTES {
        return Err(format!(
            "file is larger than {} bytes",
            crate::desired::MAX_FILE_BYTES
        ));
    }
    String::from_utf8(b.content().to_vec()).map_err(|_| "file is not UTF-8".to_string())
}

/// The commit's signature and the signed payload, if it is signed.
pub(crate) fn signature(repo: &Repository, oid: Oid) -> Result<Option<(String, Vec<u8>)>, String> {
    match repo.extract_signature(&oid, None) {
        Ok((sig, data)) => Ok(Some((
            String::from_utf8_lossy(&sig).into_owned(),
            data.to_vec(),
        ))),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(err(e)),
    }
}

fn youops_sig() -> Result<Signature<'static>, String> {
    Signature::now("YouOps", "youops@localhost").map_err(err)
}

/// Write (replace) the note of `commit`.
pub(crate) fn write_note(repo: &Repository, commit: &str, text: &str) -> Result<(), String> {
    let oid = Oid::from_str(commit).map_err(err)?;
    let sig = youops_sig()?;
    repo.note(&sig, &sig, Some(NOTES_REF), oid, text, true)
        .map_err(err)?;
    Ok(())
}

/// The note of `commit`, if any.
pub fn read_note(repo: &Repository, commit: &str) -> Option<String> {
    let oid = Oid::from_str(commit).ok()?;
    repo.find_note(Some(NOTES_REF), oid)
        .ok()
        .and_then(|n| n.message().map(str::to_string))
}

/// Push `refs/notes/youops` to the remote (YouOps owns that ref: it is forced).
pub(crate) fn push_notes(repo: &Repository, cfg: &GitConfig) -> Result<(), String> {
    let Source::Remote(url) = &cfg.source else {
        return Ok(());
    };
    let rejected: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    let mut remote = repo.remote_anonymous(url).map_err(err)?;
    let mut cb = callbacks(cfg);
    cb.push_update_reference(|_name, status| {
        if let Some(s) = status {
            *rejected.borrow_mut() = Some(s.to_string());
        }
        Ok(())
    });
    let mut opts = PushOptions::new();
    opts.remote_callbacks(cb);
    let spec = format!("+{NOTES_REF}:{NOTES_REF}");
    let pushed = remote
        .push(&[spec.as_str()], Some(&mut opts))
        .map_err(|e| format!("push notes to {}: {}", cfg.location, err(e)));
    drop(opts);
    pushed?;
    match rejected.into_inner() {
        Some(s) => Err(format!("push notes to {}: rejected: {s}", cfg.location)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_in_order_case_insensitive() {
        let msg = "Add users\n\nBody text.\n\nYouops-Run: cache.flush env=prod\nSigned-off-by: A <a@x>\nyouops-run: help\n";
        assert_eq!(youops_trailers(msg), vec!["cache.flush env=prod", "help"]);
        assert!(youops_trailers("no trailers\n").is_empty());
        assert!(youops_trailers("").is_empty());
    }
}
