//! The actual state: running the kinds' observers, reporting their failures
//! and recoveries, and the state a pass plans against.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdout};
use youops_core::Executor;

use crate::config::{KindSpec, Kinds};
use crate::desired::DesiredState;
use crate::engine::{Engine, NAME};
use crate::error::GitError;
use crate::plan::{self, Actual, ActualState, Fields};
use crate::state::Applied;

/// Largest observer output read; an observer printing more is stopped.
const MAX_OBSERVE_OUTPUT: usize = 64 << 20;
/// Head of an observer's stderr kept for the error message.
const OBSERVE_STDERR_KEPT: usize = 4096;

/// The actual state a pass plans against: the observers' output for kinds
/// that have one; for the others, what YouOps last applied (exact), read in
/// place from the state rather than copied.
pub(crate) struct Current<'a> {
    observed: &'a BTreeMap<String, Actual>,
    applied: &'a BTreeMap<String, Applied>,
    /// Kinds without an observer.
    recorded: HashSet<&'a str>,
}

impl<'a> Current<'a> {
    pub(crate) fn new(
        kinds: &'a Kinds,
        observed: &'a BTreeMap<String, Actual>,
        applied: &'a BTreeMap<String, Applied>,
    ) -> Current<'a> {
        Current {
            observed,
            applied,
            recorded: kinds
                .iter()
                .filter(|k| k.observe.is_none())
                .map(|k| k.name.as_str())
                .collect(),
        }
    }
}

impl ActualState for Current<'_> {
    fn has(&self, kind: &str) -> bool {
        self.observed.contains_key(kind) || self.recorded.contains(kind)
    }

    fn exact(&self, kind: &str) -> bool {
        match self.observed.get(kind) {
            Some(a) => a.exact,
            None => self.recorded.contains(kind),
        }
    }

    fn by_key(&self, kind: &str) -> Option<&plan::ActualKind> {
        self.observed.by_key(kind)
    }

    fn keyed(&self) -> Box<dyn Iterator<Item = (&str, &plan::ActualKind)> + '_> {
        self.observed.keyed()
    }

    fn by_id(&self) -> Box<dyn Iterator<Item = (&str, &str, &str, &Fields)> + '_> {
        Box::new(
            self.applied
                .iter()
                .filter(|(_, a)| {
                    self.recorded.contains(a.kind.as_str()) && !self.observed.contains_key(&a.kind)
                })
                .map(|(id, a)| (id.as_str(), a.kind.as_str(), a.key.as_str(), &a.fields)),
        )
    }
}

/// How reading an observer's output ended.
enum End {
    Exited(ExitStatus, Vec<u8>),
    TooLarge,
    Failed(String),
}

/// Run `kind`'s observer and parse what it printed. Anything but a clean
/// exit with complete, UTF-8, well-formed JSON within the time limit and the
/// size cap is an error naming the cause; the observer's process group is
/// killed whatever happens, so nothing it started outlives the check.
async fn run_observer(
    base_dir: &Path,
    kind: &KindSpec,
    argv: &[String],
) -> Result<plan::ActualKind, String> {
    let mut child = observer_command(base_dir, kind, argv)
        .spawn()
        .map_err(|e| format!("cannot run observer `{}`: {e}", argv[0]))?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("observer pipes were not set up".into());
    };
    let err_task = keep_stderr_head(stderr);
    let end =
        tokio::time::timeout(kind.observe_timeout, read_output(&mut stdout, &mut child)).await;
    // Whatever happened, nothing the observer started lives on.
    if let Some(pg) = pgid {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pg),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill().await;
    let stderr_head = match tokio::time::timeout(Duration::from_secs(1), err_task).await {
        Ok(Ok(h)) => h,
        _ => Vec::new(),
    };
    let (status, out) = match end {
        Err(_) => {
            return Err(format!(
                "observer did not finish within {} (observe_timeout); it was killed",
                youops_core::units::HumanDuration(kind.observe_timeout)
            ))
        }
        Ok(End::TooLarge) => {
            return Err(format!(
                "observer printed more than {} MiB; it was stopped and its output ignored",
                MAX_OBSERVE_OUTPUT >> 20
            ))
        }
        Ok(End::Failed(e)) => return Err(e),
        Ok(End::Exited(status, out)) => (status, out),
    };
    parse_output(kind, status, out, &stderr_head)
}

/// The observer's command: a clean environment but for a few variables, its
/// own process group, killed when dropped.
fn observer_command(base_dir: &Path, kind: &KindSpec, argv: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(base_dir)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for k in ["PATH", "HOME", "LANG", "TZ"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    cmd.env("YOUOPS_KIND", &kind.name);
    cmd
}

/// stderr: keep the head, drain the rest so a chatty observer cannot block.
fn keep_stderr_head(mut stderr: ChildStderr) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let room = OBSERVE_STDERR_KEPT.saturating_sub(head.len());
            head.extend_from_slice(&buf[..n.min(room)]);
        }
        head
    })
}

/// Read stdout to its end (up to the size cap), then wait for the exit.
async fn read_output(stdout: &mut ChildStdout, child: &mut Child) -> End {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match stdout.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) if out.len() + n > MAX_OBSERVE_OUTPUT => return End::TooLarge,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return End::Failed(format!("cannot read the observer's output: {e}")),
        }
    }
    match child.wait().await {
        Ok(status) => End::Exited(status, out),
        Err(e) => End::Failed(format!("cannot wait for the observer: {e}")),
    }
}

/// The resources an observer that exited printed, or why there are none.
fn parse_output(
    kind: &KindSpec,
    status: ExitStatus,
    out: Vec<u8>,
    stderr_head: &[u8],
) -> Result<plan::ActualKind, String> {
    if !status.success() {
        let err = String::from_utf8_lossy(stderr_head);
        let err: String = err.trim().chars().take(300).collect();
        return Err(format!("observer exited with {status}: {err}"));
    }
    let text = String::from_utf8(out).map_err(|e| {
        format!(
            "observer output is not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    plan::parse_observed(&text, &kind.key)
}

impl Engine {
    /// The actual state of the kinds that have an observer (their observers'
    /// output), and the kinds that could not be observed with why.
    pub(crate) async fn observed(&self) -> (BTreeMap<String, Actual>, Vec<(String, String)>) {
        let mut out = BTreeMap::new();
        let mut errors = Vec::new();
        for k in self.kinds.iter() {
            if let Some(argv) = &k.observe {
                match run_observer(&self.cfg.base_dir, k, argv).await {
                    Ok(resources) => {
                        out.insert(
                            k.name.clone(),
                            Actual {
                                resources,
                                exact: false,
                            },
                        );
                    }
                    Err(e) => errors.push((k.name.clone(), e)),
                }
            }
        }
        (out, errors)
    }

    /// Put observer failures on the audit record (`observe_failed`: the kind,
    /// why, and the declared resources left unchecked) and recoveries
    /// (`observe_recovered`); a failure that lasts with the same error is
    /// recorded once. Returns the errors as plan lines.
    pub(crate) async fn report_observe(
        &self,
        exec: &Executor,
        desired: &DesiredState,
        observed: &BTreeMap<String, Actual>,
        errors: Vec<(String, String)>,
    ) -> Result<Vec<String>, GitError> {
        let (new, recovered) = {
            let mut failing = self
                .observe_failing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let new: Vec<(String, String)> = errors
                .iter()
                .filter(|(k, e)| failing.get(k) != Some(e))
                .cloned()
                .collect();
            let recovered: Vec<String> = failing
                .keys()
                .filter(|k| observed.contains_key(*k))
                .cloned()
                .collect();
            for k in &recovered {
                failing.remove(k);
            }
            for (k, e) in &new {
                failing.insert(k.clone(), e.clone());
            }
            (new, recovered)
        };
        for (kind, error) in &new {
            tracing::warn!(kind = %kind, error = %error, "observer failed; the kind is left unplanned");
            let unchecked: Vec<String> = desired
                .resources
                .values()
                .filter(|r| &r.kind == kind)
                .map(|r| r.id())
                .collect();
            let shown: Vec<&str> = unchecked.iter().take(10).map(String::as_str).collect();
            let more = match unchecked.len().saturating_sub(shown.len()) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            exec.notice(
                None,
                NAME,
                "observe_failed",
                format!(
                    "kind `{kind}`: {error}; its {} declared resource(s) ({}{more}) were not compared, no drift was recorded and nothing was applied for them",
                    unchecked.len(),
                    shown.join(", "),
                ),
                serde_json::json!({
                    "kind": kind,
                    "error": error,
                    "branch": self.cfg.branch,
                    "resources": unchecked,
                }),
            )
            .await?;
        }
        for kind in &recovered {
            exec.notice(
                None,
                NAME,
                "observe_recovered",
                format!(
                    "kind `{kind}`: the observer works again; its resources are compared again"
                ),
                serde_json::json!({ "kind": kind, "branch": self.cfg.branch }),
            )
            .await?;
        }
        Ok(errors
            .into_iter()
            .map(|(k, e)| format!("kind `{k}`: {e}"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired;
    use crate::plan::diff;
    use std::path::Path;

    proptest::proptest! {
        /// Planning against the recorded state (a merge in id order) plans exactly
        /// what looking every resource up does.
        #[test]
        fn merge_plans_like_lookups(
            declared in proptest::collection::btree_map("[a-e]{1,2}", (0u8..3, proptest::bool::ANY), 0..12),
            recorded in proptest::collection::btree_map(("(user|group|gone)", "[a-e]{1,2}"), (0u8..3, proptest::bool::ANY), 0..12),
            prune in proptest::bool::ANY,
        ) {
            let kinds: Vec<toml::Table> = vec![
                toml::from_str("name = \"user\"\napply = \"u.apply\"\ndelete = \"u.delete\"").unwrap(),
                toml::from_str("name = \"group\"\napply = \"g.apply\"").unwrap(),
            ];
            let kinds = Kinds::parse(&kinds, Path::new("/")).unwrap();
            let fields = |key: &str, v: u8, extra: bool| -> BTreeMap<String, String> {
                let mut f = BTreeMap::from([("name".to_string(), key.to_string()), ("v".to_string(), v.to_string())]);
                if extra {
                    f.insert("x".into(), "1".into());
                }
                f
            };
            let text: String = declared
                .iter()
                .enumerate()
                .map(|(i, (key, (v, extra)))| {
                    let kind = if i % 3 == 2 { "group" } else { "user" };
                    let x = if *extra { "x = \"1\"\n" } else { "" };
                    format!("[[resource]]\nkind = \"{kind}\"\nname = \"{key}\"\nv = \"{v}\"\n{x}")
                })
                .collect();
            let desired = desired::parse_files(&[("s.toml".into(), text)], &kinds).unwrap();
            let applied: BTreeMap<String, Applied> = recorded
                .iter()
                .map(|((kind, key), (v, extra))| {
                    (
                        desired::resource_id(kind, key),
                        Applied {
                            kind: kind.clone(),
                            key: key.clone(),
                            fields: fields(key, *v, *extra),
                            commit: "c".into(),
                        },
                    )
                })
                .collect();
            let observed = BTreeMap::new();
            let merged = plan::plan_with(&desired, &Current::new(&kinds, &observed, &applied), &kinds, prune);
            let lookup: BTreeMap<String, Actual> = ["user", "group"]
                .iter()
                .map(|k| {
                    let resources = applied
                        .values()
                        .filter(|a| a.kind == *k)
                        .map(|a| (a.key.clone(), a.fields.clone()))
                        .collect();
                    (k.to_string(), Actual { resources, exact: true })
                })
                .collect();
            let looked_up = diff(&desired, &lookup, &kinds, prune);
            proptest::prop_assert_eq!(merged, looked_up);
        }
    }
}
