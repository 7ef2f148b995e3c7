//! The commands that need no backend or a config of their own: `config check`,
//! `gen` and `reconcile`.

use std::path::Path;

use super::failure::{exit, CliResult, Failure};
use super::{load_config, Cli, GenCmd};
use crate::gitops::GitHandle;

/// `youops config check`: the checks `youops serve` makes before it starts.
pub fn config_check(path: &Path) -> CliResult {
    let cfg = crate::check::load_checked(path, &[], &crate::builtins::STANDARD_BUILTINS)
        .map_err(|problems| Failure::new(exit::CONFIG, crate::check::report(path, &problems)))?;
    for w in crate::check::warnings(path, &cfg) {
        eprintln!("warning: {w}");
    }
    let policy = cfg.policy();
    for w in policy.lint(&cfg.catalog()) {
        eprintln!("warning: {w}");
    }
    println!(
        "{}: ok — {} ops, {} principals, {} grants, frontends: {}",
        path.display(),
        cfg.ops.len(),
        cfg.principals.len(),
        cfg.grants.len(),
        if cfg.frontends.is_empty() {
            "none (API and CLI only)".to_string()
        } else {
            cfg.frontends.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    );
    Ok(exit::OK)
}

/// `youops gen issue-forms|slack-manifest`.
pub(crate) fn generate(cli: &Cli, cmd: &GenCmd) -> CliResult {
    let cfg = load_config(&cli.config)?;
    #[cfg(not(any(feature = "github", feature = "slack")))]
    let _ = cfg;
    match cmd {
        #[cfg(not(feature = "github"))]
        GenCmd::IssueForms { .. } => Err(not_compiled_in("github")),
        #[cfg(feature = "github")]
        GenCmd::IssueForms { out } => {
            let dir = out.join(".github").join("ISSUE_TEMPLATE");
            std::fs::create_dir_all(&dir).map_err(|e| {
                Failure::new(
                    exit::FAILED,
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
            let forms = youops_frontend_issue::issue_forms(&cfg.catalog());
            for (name, yaml) in &forms {
                let path = dir.join(name);
                std::fs::write(&path, yaml).map_err(|e| {
                    Failure::new(
                        exit::FAILED,
                        format!("cannot write {}: {e}", path.display()),
                    )
                })?;
                println!("wrote {}", path.display());
            }
            for op in cfg.catalog().iter() {
                if let Some(why) = youops_frontend_issue::forms::form_exclusion(op) {
                    eprintln!("no form for `{}`: {why}", op.name);
                }
            }
            Ok(exit::OK)
        }
        #[cfg(not(feature = "slack"))]
        GenCmd::SlackManifest => Err(not_compiled_in("slack")),
        #[cfg(feature = "slack")]
        GenCmd::SlackManifest => {
            let Some(url) = crate::server_config::ServerConfig::of_checked(&cfg).public_url else {
                return Err(Failure::new(
                    exit::CONFIG,
                    "set [server] public_url to the address Slack reaches the daemon at (https://...)",
                ));
            };
            let section = cfg.frontend("slack").cloned().unwrap_or_default();
            println!("{}", youops_frontend_chat::manifest(&url, &section));
            Ok(exit::OK)
        }
    }
}

/// The failure of a command for a frontend this build left out.
#[cfg(not(all(feature = "github", feature = "slack")))]
fn not_compiled_in(name: &str) -> Failure {
    Failure::new(
        exit::CONFIG,
        format!("this build has no {name} frontend (not compiled in; enable the cargo feature `{name}`)"),
    )
}

/// `youops reconcile --once [--dry-run]`: one pass, locally or (a plan only)
/// by the daemon.
pub(crate) async fn reconcile(cli: &Cli, once: bool, dry_run: bool) -> CliResult {
    if !once {
        return Err(Failure::new(
            exit::REFUSED,
            "continuous reconciliation runs in `youops serve`; use `youops reconcile --once [--dry-run]` for one pass",
        ));
    }
    if cli.server.is_some() && !dry_run {
        return Err(Failure::new(
            exit::REFUSED,
            "a running daemon reconciles by itself (POST /git/webhook asks it to pass now); `youops reconcile --once --dry-run` with --server shows the plan it would apply",
        ));
    }
    // Locally, the git frontend of this config; a daemon plans on its own.
    let git = if cli.server.is_some() {
        None
    } else {
        Some(local_git(cli)?)
    };
    let backend = super::backend::open(cli).await?;
    let result = backend.reconcile(git.as_ref(), dry_run).await.map(|done| {
        print!("{}", done.text);
        if done.failed {
            exit::FAILED
        } else {
            exit::OK
        }
    });
    backend.close().await;
    result
}

/// The git frontend of the local config, for `youops reconcile --once`.
#[cfg(feature = "git")]
fn local_git(cli: &Cli) -> Result<GitHandle, Failure> {
    let cfg = load_config(&cli.config)?;
    match crate::frontends::git(&cfg) {
        None => Err(Failure::new(
            exit::CONFIG,
            format!("{}: no [frontends.git] section", cli.config.display()),
        )),
        Some(Err(problems)) => Err(Failure::new(exit::CONFIG, problems.join("\n"))),
        Some(Ok(g)) => Ok(g),
    }
}

/// A build without the git frontend reconciles only through a daemon.
#[cfg(not(feature = "git"))]
fn local_git(_: &Cli) -> Result<GitHandle, Failure> {
    Err(Failure::new(
        exit::UNAVAILABLE,
        crate::gitops::NOT_COMPILED_IN,
    ))
}
