//! The checks a config passes before a daemon runs it. `youops config check`,
//! `youops serve` and a SIGHUP reload run the same ones, and each reports every
//! problem at once.

use std::path::Path;

use youops_core::config::Config;

/// Load the config at `path` and check it for a daemon that runs the built-in
/// frontends (leaving the `[frontends.*]` sections named in `extra` to its
/// embedder) and has the builtin runners `builtins`. On failure, every problem,
/// one line each, starting with the file.
pub fn load_checked(path: &Path, extra: &[&str], builtins: &[&str]) -> Result<Config, Vec<String>> {
    let cfg = Config::load(path).map_err(|e| {
        e.issues
            .iter()
            .map(|i| format!("{}:{i}", e.source))
            .collect::<Vec<_>>()
    })?;
    let mut problems = crate::frontends::check(&cfg, extra);
    problems.extend(cfg.catalog().unknown_builtins(builtins));
    problems.extend(crate::store::check(&cfg));
    if problems.is_empty() {
        return Ok(cfg);
    }
    problems.sort();
    Err(problems
        .into_iter()
        .map(|p| format!("{}: {p}", path.display()))
        .collect())
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
