//! The checks a config passes before a daemon runs it. `youops config check`,
//! `youops serve` and a SIGHUP reload run the same ones, and each reports every
//! problem at once.

use std::path::Path;

use youops_core::config::{Config, ConfigIssue};

/// Load the config at `path` and check it for a daemon that runs the built-in
/// frontends (leaving the `[frontends.*]` sections named in `extra` to its
/// embedder) and has the builtin runners `builtins`. On failure, every problem,
/// one line each, starting with the file.
pub fn load_checked(path: &Path, extra: &[&str], builtins: &[&str]) -> Result<Config, Vec<String>> {
    let cfg = crate::server_config::load(path).map_err(|e| {
        e.issues
            .iter()
            .map(|i| format!("{}:{i}", e.source))
            .collect::<Vec<_>>()
    })?;
    let mut problems = cfg.catalog().unknown_builtins(builtins);
    problems.extend(crate::store::check(&cfg));
    let mut problems: Vec<String> = problems
        .into_iter()
        .map(|p| format!("{}: {p}", path.display()))
        .collect();
    problems.extend(
        crate::frontends::issues(&cfg, extra)
            .iter()
            .map(|i| located(path, i)),
    );
    if problems.is_empty() {
        return Ok(cfg);
    }
    problems.sort();
    Err(problems)
}

/// An issue as core's config errors are printed: `FILE:line N: path: message`
/// (`FILE: path: message` when its line is not known).
fn located(path: &Path, issue: &ConfigIssue) -> String {
    match issue.line {
        Some(_) => format!("{}:{issue}", path.display()),
        None => format!("{}: {issue}", path.display()),
    }
}

/// What the config at `path` does that is accepted but deprecated, one line
/// each as [`load_checked`] prints problems; `config check` prints them and
/// still succeeds.
pub fn warnings(path: &Path, cfg: &Config) -> Vec<String> {
    cfg.warnings().iter().map(|w| located(path, w)).collect()
}

/// The problems as `config check` prints them: how many, then one a line.
pub fn report(path: &Path, problems: &[String]) -> String {
    let mut msg = format!(
        "{}: {} problem{}\n",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        msg.push_str("  ");
        msg.push_str(p);
        msg.push('\n');
    }
    msg
}
