//! `require_signed`: allowed SSH signatures accepted, others refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use youops_frontend_git::reconcile_once;

use crate::support::*;

fn ssh_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen must be installed (openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

#[tokio::test]
async fn require_signed_accepts_allowed_ssh_signatures_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_key, alice_pub) = ssh_keygen(dir.path(), "alice_key");
    let (mallory_key, _) = ssh_keygen(dir.path(), "mallory_key");
    std::fs::write(
        dir.path().join("allowed_signers"),
        format!("alice@example.com {alice_pub}\n"),
    )
    .unwrap();
    let repo_dir = dir.path().join("repo");
    init_repo(&repo_dir);
    let section = "repo = \"repo\"\npath = \"state\"\nstate_dir = \"gitstate\"\nrequire_signed = true\nallowed_signers = \"allowed_signers\"\n";
    let h = H::with_section(dir, repo_dir.clone(), section, false).await;
    let commit_cli =
        |file: &str, users: &[(&str, &str)], msg: &str, key: Option<&Path>| -> String {
            let p = repo_dir.join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, users_file(users)).unwrap();
            git(&repo_dir, &["add", "-A"]);
            match key {
                Some(k) => git(
                    &repo_dir,
                    &[
                        "-c",
                        "gpg.format=ssh",
                        "-c",
                        &format!("user.signingkey={}", k.display()),
                        "commit",
                        "-q",
                        "-S",
                        "-m",
                        msg,
                    ],
                ),
                None => git(&repo_dir, &["commit", "-q", "-m", msg]),
            };
            git(&repo_dir, &["rev-parse", "HEAD"]).trim().to_string()
        };

    // Signed by alice's allowed key: applied, and the note says by whom.
    let good = commit_cli(
        "state/users.toml",
        &[("alice", "a@x.example")],
        "signed",
        Some(&alice_key),
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.changes().count(), 1);
    assert!(h.world.user("alice").is_some());
    let note = git(&repo_dir, &["notes", "--ref", "youops", "show", &good]);
    assert!(
        note.contains("Signature: Good \"git\" signature for alice@example.com"),
        "{note}"
    );

    // Unsigned: refused, nothing applied, its trailer does not run, audited.
    let unsigned = commit_cli(
        "state/users.toml",
        &[("alice", "a@x.example"), ("eve", "e@x.example")],
        "unsigned\n\nYouops-Run: cache.flush env=unsigned",
        None,
    );
    let err = reconcile_once(&h.exec, &h.git, false).await.unwrap_err();
    assert_eq!(err.code(), "commit_refused");
    assert!(err.to_string().contains("not signed"), "{err}");
    assert!(h.world.user("eve").is_none());
    assert!(!h.world.calls().iter().any(|c| c.contains("unsigned")));
    let n = h.notices("commit_refused").await;
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].1["commit"], unsigned);

    // Signed, but by a key not allowed for the author: refused too.
    let forged = commit_cli(
        "state/users.toml",
        &[("alice", "a@x.example"), ("mallory", "m@x.example")],
        "forged",
        Some(&mallory_key),
    );
    let err = reconcile_once(&h.exec, &h.git, false).await.unwrap_err();
    assert_eq!(err.code(), "commit_refused");
    assert!(h.world.user("mallory").is_none());
    let n = h.notices("commit_refused").await;
    assert_eq!(n.len(), 2);
    assert_eq!(n[1].1["commit"], forged);
    let note = git(&repo_dir, &["notes", "--ref", "youops", "show", &forged]);
    assert!(note.contains("refused: SSH signature not valid"), "{note}");

    // A signed fix applies again.
    commit_cli(
        "state/users.toml",
        &[("alice", "a@x.example"), ("bob", "b@x.example")],
        "signed again",
        Some(&alice_key),
    );
    reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert!(h.world.user("bob").is_some());
    assert!(h.world.user("eve").is_none() && h.world.user("mallory").is_none());
    assert_eq!(h.metrics.counter("youops_git_refused_commits_total"), 2);
}
