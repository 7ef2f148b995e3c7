//! # youops-doccheck
//!
//! Runs the shell steps of Markdown pages as a reader would, and checks each
//! step's exit code and output against hidden `<!-- doccheck … -->` comments
//! beside it, so the page stays the one source of its commands. CI runs it
//! on the README and the docs (`.ci/run`).
//!
//! ```text
//! doccheck [--checkout] [--keep] FILE.md...
//! ```
//!
//! With `--checkout`, the pages run in a fresh copy of the repository's
//! tracked files (with `target/` shared, so a build is not repeated), as on
//! a fresh clone. The comment syntax is in [`parse`].

pub mod parse;
pub mod run;

use std::path::{Path, PathBuf};

/// Copy the tracked files of the git repository at `root` (as they are in the
/// working tree) into `to`, and link `to/target` to `target` so that builds
/// there reuse the repository's.
pub fn checkout(root: &Path, to: &Path, target: &Path) -> Result<(), String> {
    let out = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("git ls-files: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git ls-files: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = PathBuf::from(String::from_utf8_lossy(name).into_owned());
        let from = root.join(&rel);
        if !from.exists() {
            continue; // deleted in the working tree
        }
        let dest = to.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(&from, &dest).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
    std::os::unix::fs::symlink(target, to.join("target"))
        .map_err(|e| format!("linking target/: {e}"))?;
    Ok(())
}
