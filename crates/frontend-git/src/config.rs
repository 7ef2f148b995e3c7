//! `[frontends.git]` and `[[kinds]]`: parsed with serde (`deny_unknown_fields`),
//! then checked, every problem reported at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use youops_core::catalog::Catalog;
use youops_core::config::{Config, ConfigIssue};
use youops_core::frontend::factory::{FrontendSection, SectionIssues};
use youops_core::units::HumanDuration;

/// Default fetch interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default drift-check interval.
pub const DEFAULT_DRIFT_INTERVAL: Duration = Duration::from_secs(300);
/// First retry delay of a failed resource.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(10);
/// Longest retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(600);
/// Time limit of an observe runner.
pub const DEFAULT_OBSERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// `[frontends.git]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSection {
    repo: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    interval: Option<HumanDuration>,
    #[serde(default)]
    drift_interval: Option<HumanDuration>,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    self_heal: bool,
    #[serde(default)]
    push_notes: bool,
    #[serde(default)]
    require_signed: bool,
    #[serde(default)]
    allowed_signers: Option<PathBuf>,
    #[serde(default)]
    gpg_program: Option<String>,
    #[serde(default)]
    webhook_secret: Option<String>,
    #[serde(default)]
    webhook_token: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    ssh_key: Option<PathBuf>,
    #[serde(default)]
    ssh_user: Option<String>,
    #[serde(default)]
    checkout_dir: Option<PathBuf>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    retry_base: Option<HumanDuration>,
    #[serde(default)]
    retry_max: Option<HumanDuration>,
    /// `[[frontends.git.kinds]]`, read by [`Kinds::from_section`].
    #[serde(default)]
    #[allow(dead_code)]
    kinds: Option<toml::Value>,
}

/// Where the desired state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A repository on this machine, read (and annotated with notes) in place.
    Local(PathBuf),
    /// A remote fetched into a bare clone under the checkout directory.
    Remote(String),
}

/// The checked `[frontends.git]` section.
#[derive(Clone)]
#[non_exhaustive]
pub struct GitConfig {
    /// The repository.
    pub source: Source,
    /// Branch to follow.
    pub branch: String,
    /// Subdirectory holding desired-state files (empty: the whole tree).
    pub path: String,
    /// Fetch interval.
    pub interval: Duration,
    /// Drift-check interval.
    pub drift_interval: Duration,
    /// Delete resources that are no longer declared.
    pub prune: bool,
    /// Correct drift (kinds may override).
    pub self_heal: bool,
    /// Push `refs/notes/youops` back to the remote.
    pub push_notes: bool,
    /// Refuse commits without a valid signature.
    pub require_signed: bool,
    /// ssh-keygen allowed-signers file.
    pub allowed_signers: Option<PathBuf>,
    /// gpg program for OpenPGP signatures.
    pub gpg_program: Option<String>,
    /// GitHub webhook secret (`X-Hub-Signature-256`).
    pub(crate) webhook_secret: Option<String>,
    /// Bearer token of the plain trigger.
    pub(crate) webhook_token: Option<String>,
    /// https token.
    pub(crate) token: Option<String>,
    /// ssh private key.
    pub ssh_key: Option<PathBuf>,
    /// ssh user (default: from the URL, else `git`).
    pub ssh_user: Option<String>,
    /// Where the clone of a remote lives.
    pub checkout_dir: PathBuf,
    /// Where the frontend's state file lives.
    pub state_dir: PathBuf,
    /// Location of requests for grant limits (default: the repo without credentials).
    pub location: String,
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Directory relative paths resolve against.
    pub base_dir: PathBuf,
    /// Whether `checkout_dir` was given explicitly.
    checkout_explicit: bool,
}

impl std::fmt::Debug for GitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        f.debug_struct("GitConfig")
            .field("source", &self.source)
            .field("branch", &self.branch)
            .field("path", &self.path)
            .field("interval", &self.interval)
            .field("prune", &self.prune)
            .field("self_heal", &self.self_heal)
            .field("require_signed", &self.require_signed)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

fn is_url(repo: &str) -> bool {
    if repo.contains("://") {
        return true;
    }
    // scp-like `user@host:path`
    match (repo.find('@'), repo.find(':')) {
        (Some(a), Some(c)) => a < c && !repo.starts_with('/'),
        _ => false,
    }
}

/// The repo string without credentials (`https://user:pw@host/x` → `https://host/x`).
pub fn strip_credentials(repo: &str) -> String {
    if let Some(i) = repo.find("://") {
        let (scheme, rest) = repo.split_at(i + 3);
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            return format!("{scheme}{}", &rest[at + 1..]);
        }
    }
    repo.to_string()
}

/// Whether a URL carries a password or token (`scheme://user:secret@host`).
fn has_password(repo: &str) -> bool {
    repo.split_once("://").is_some_and(|(_, rest)| {
        let host_end = rest.find('/').unwrap_or(rest.len());
        rest[..host_end]
            .rfind('@')
            .is_some_and(|at| rest[..at].contains(':'))
    })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Where `repo` says the repository is: a URL or a path resolved against `base_dir`.
fn parse_source(repo: &str, base_dir: &Path, errs: &mut SectionIssues<'_, '_>) -> Source {
    if repo.trim().is_empty() {
        errs.push("repo", "must not be empty");
        Source::Local(PathBuf::new())
    } else if is_url(repo) {
        let scheme = repo.split("://").next().unwrap_or("");
        if repo.contains("://") && !["file", "git", "http", "https", "ssh"].contains(&scheme) {
            errs.push(
                "repo",
                format!("unsupported scheme `{scheme}` (file, git, http, https, ssh)"),
            );
        }
        if has_password(repo) {
            errs.push(
                "repo",
                "do not put credentials in the URL; use `token` (https) or `ssh_key` (ssh)",
            );
        }
        Source::Remote(repo.to_string())
    } else {
        Source::Local(resolve(base_dir, Path::new(repo)))
    }
}

fn check_branch(branch: &str, errs: &mut SectionIssues<'_, '_>) {
    if branch.is_empty()
        || branch.starts_with('-')
        || branch.contains("..")
        || branch
            .chars()
            .any(|c| c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        errs.push("branch", format!("`{branch}` is not a valid branch name"));
    }
}

/// The fetch and drift-check intervals.
fn intervals(raw: &RawSection, errs: &mut SectionIssues<'_, '_>) -> (Duration, Duration) {
    let interval = raw.interval.map(|d| d.0).unwrap_or(DEFAULT_INTERVAL);
    if interval < Duration::from_millis(100) {
        errs.push("interval", "must be at least 100ms");
    }
    let drift_interval = raw
        .drift_interval
        .map(|d| d.0)
        .unwrap_or(DEFAULT_DRIFT_INTERVAL);
    if drift_interval < Duration::from_millis(100) {
        errs.push("drift_interval", "must be at least 100ms");
    }
    (interval, drift_interval)
}

/// The allowed-signers file, checked with `require_signed`.
fn signers(raw: &RawSection, base_dir: &Path, errs: &mut SectionIssues<'_, '_>) -> Option<PathBuf> {
    let allowed_signers = raw.allowed_signers.as_ref().map(|p| resolve(base_dir, p));
    if raw.require_signed && allowed_signers.is_none() && raw.gpg_program.is_none() {
        errs.push(
            "require_signed",
            "needs `allowed_signers` (SSH signatures) or `gpg_program` (OpenPGP)",
        );
    }
    if let Some(p) = &allowed_signers {
        check_file("allowed_signers", p, errs);
    }
    allowed_signers
}

fn check_file(key: &str, p: &Path, errs: &mut SectionIssues<'_, '_>) {
    if !p.is_file() {
        errs.push(key, format!("`{}` is not a file", p.display()));
    }
}

fn check_secrets(raw: &RawSection, errs: &mut SectionIssues<'_, '_>) {
    for (k, v) in [
        ("webhook_secret", &raw.webhook_secret),
        ("webhook_token", &raw.webhook_token),
        ("token", &raw.token),
    ] {
        if v.as_deref().is_some_and(|s| s.len() < 8) {
            errs.push(k, "too short (at least 8 characters)");
        }
    }
}

/// The first and the longest retry delay.
fn retry_delays(raw: &RawSection, errs: &mut SectionIssues<'_, '_>) -> (Duration, Duration) {
    let retry_base = raw.retry_base.map(|d| d.0).unwrap_or(DEFAULT_RETRY_BASE);
    let retry_max = raw.retry_max.map(|d| d.0).unwrap_or(DEFAULT_RETRY_MAX);
    if retry_base.is_zero() || retry_max < retry_base {
        errs.push("retry_base/retry_max", "need 0 < retry_base <= retry_max");
    }
    (retry_base, retry_max)
}

impl GitConfig {
    /// Parse and check a `[frontends.git]` section (without lines: see
    /// [`GitConfig::from_section`]).
    pub fn parse(section: &toml::Table, base_dir: &Path) -> Result<GitConfig, Vec<String>> {
        let mut cfg = Config::default();
        cfg.base_dir = base_dir.to_path_buf();
        Self::from_section(&FrontendSection::new(crate::NAME, section, &cfg))
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    /// Parse and check the section, relative paths against the config's
    /// directory; every problem at once, on its line. Its `kinds` are left
    /// to [`Kinds::from_section`].
    pub fn from_section(s: &FrontendSection<'_>) -> Result<GitConfig, Vec<ConfigIssue>> {
        let base_dir = s.config().base_dir.as_path();
        let raw: RawSection = s.parse().map_err(|e| vec![e])?;
        let errs = &mut SectionIssues::new(s);
        let source = parse_source(&raw.repo, base_dir, errs);
        let branch = raw.branch.clone().unwrap_or_else(|| "main".into());
        check_branch(&branch, errs);
        let path = raw
            .path
            .clone()
            .unwrap_or_default()
            .trim_matches('/')
            .to_string();
        if path.split('/').any(|c| c == ".." || c == ".") {
            errs.push("path", "must be a plain subdirectory (no `.` or `..`)");
        }
        let (interval, drift_interval) = intervals(&raw, errs);
        let allowed_signers = signers(&raw, base_dir, errs);
        check_secrets(&raw, errs);
        let ssh_key = raw.ssh_key.as_ref().map(|p| resolve(base_dir, p));
        if let Some(p) = &ssh_key {
            check_file("ssh_key", p, errs);
        }
        if raw.push_notes && matches!(source, Source::Local(_)) {
            errs.push("push_notes", "the repo is a local path, notes are written to it directly; give a URL (file:///...) to push");
        }
        let (retry_base, retry_max) = retry_delays(&raw, errs);
        let state_dir = raw
            .state_dir
            .as_ref()
            .map(|p| resolve(base_dir, p))
            .unwrap_or_else(|| base_dir.join("youops-data").join("git"));
        let checkout_explicit = raw.checkout_dir.is_some();
        let checkout_dir = raw
            .checkout_dir
            .as_ref()
            .map(|p| resolve(base_dir, p))
            .unwrap_or_else(|| state_dir.join("checkout"));
        let location = raw.location.clone().unwrap_or_else(|| match &source {
            Source::Local(p) => p.display().to_string(),
            Source::Remote(u) => strip_credentials(u),
        });
        errs.check()?;
        Ok(GitConfig {
            source,
            branch,
            path,
            interval,
            drift_interval,
            prune: raw.prune,
            self_heal: raw.self_heal,
            push_notes: raw.push_notes,
            require_signed: raw.require_signed,
            allowed_signers,
            gpg_program: raw.gpg_program,
            webhook_secret: raw.webhook_secret,
            webhook_token: raw.webhook_token,
            token: raw.token,
            ssh_key,
            ssh_user: raw.ssh_user,
            checkout_dir,
            state_dir,
            location,
            retry_base,
            retry_max,
            base_dir: base_dir.to_path_buf(),
            checkout_explicit,
        })
    }

    /// Put the state (and, unless configured, the checkout) under `dir`.
    pub fn set_state_dir(&mut self, dir: PathBuf) {
        if !self.checkout_explicit {
            self.checkout_dir = dir.join("checkout");
        }
        self.state_dir = dir;
    }

    /// The ref the desired state is read from.
    pub fn tracking_ref(&self) -> String {
        match self.source {
            Source::Local(_) => format!("refs/heads/{}", self.branch),
            Source::Remote(_) => format!("refs/remotes/origin/{}", self.branch),
        }
    }
}

/// `[[kinds]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKind {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    key: Option<String>,
    apply: String,
    #[serde(default)]
    delete: Option<String>,
    #[serde(default)]
    observe: Option<Vec<String>>,
    #[serde(default)]
    observe_timeout: Option<HumanDuration>,
    #[serde(default)]
    self_heal: Option<bool>,
}

/// One resource kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KindSpec {
    /// Name used in desired-state files (`kind = "user"`).
    pub name: String,
    /// One line for people.
    pub description: String,
    /// The field whose value identifies a resource (default `name`).
    pub key: String,
    /// Op that creates or updates a resource, called with its fields as arguments.
    pub apply: String,
    /// Op that deletes one, called with the resource's fields that are its params.
    pub delete: Option<String>,
    /// Program (argv) printing the actual resources as JSON.
    pub observe: Option<Vec<String>>,
    /// Time limit of `observe`.
    pub observe_timeout: Duration,
    /// Correct drift of this kind (default: the frontend's `self_heal`).
    pub self_heal: Option<bool>,
}

/// The declared kinds, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kinds {
    by_name: BTreeMap<String, KindSpec>,
}

fn valid_kind_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Where kinds are declared and how a problem there is placed.
struct KindsAt<'a> {
    /// `frontends.git.kinds` or (deprecated) `kinds`.
    prefix: &'a str,
    /// The line of a path.
    line_of: &'a dyn Fn(&str) -> Option<usize>,
}

impl KindsAt<'_> {
    /// A problem with the `i`th kind (`name`, when it has one).
    fn issue(&self, i: usize, name: Option<&str>, message: impl Into<String>) -> ConfigIssue {
        let path = match name {
            Some(n) => format!("{}[{i}] ({n})", self.prefix),
            None => format!("{}[{i}]", self.prefix),
        };
        ConfigIssue {
            line: (self.line_of)(&path),
            path,
            message: message.into(),
        }
    }
}

/// The kind tables of a config, and where they are: `[[frontends.git.kinds]]`,
/// or the top-level `[[kinds]]` (deprecated); not both.
fn kind_tables<'a>(
    s: &FrontendSection<'a>,
) -> Result<(std::borrow::Cow<'a, [toml::Table]>, String), Vec<ConfigIssue>> {
    let top = &s.config().kinds;
    let Some(v) = s.table().get("kinds") else {
        return Ok((top.as_slice().into(), "kinds".into()));
    };
    let tables: Option<Vec<toml::Table>> = v
        .as_array()
        .and_then(|a| a.iter().map(|t| t.as_table().cloned()).collect());
    let Some(tables) = tables else {
        return Err(vec![
            s.issue("kinds", "must be tables (`[[frontends.git.kinds]]`)")
        ]);
    };
    if !top.is_empty() && !tables.is_empty() {
        return Err(vec![s.issue(
            "kinds",
            "resource kinds are declared both here and in the top-level `[[kinds]]` (deprecated); keep them all in `[[frontends.git.kinds]]`",
        )]);
    }
    Ok((tables.into(), s.path("kinds")))
}

/// One kind table, checked; `None` if it cannot be read.
fn parse_kind(t: &toml::Table, base_dir: &Path, issue: &mut dyn FnMut(String)) -> Option<KindSpec> {
    let raw: RawKind = match toml::Value::Table(t.clone()).try_into() {
        Ok(r) => r,
        Err(e) => {
            let e: toml::de::Error = e;
            issue(e.message().trim().to_string());
            return None;
        }
    };
    if !valid_kind_name(&raw.name) {
        issue("name must be letters, digits, `_`, `-` or `.`".into());
    }
    let key = raw.key.unwrap_or_else(|| "name".into());
    if key.is_empty() || key == "kind" {
        issue("key must name a field other than `kind`".into());
    }
    for (what, op) in [("apply", Some(&raw.apply)), ("delete", raw.delete.as_ref())] {
        if let Some(op) = op {
            if !youops_core::grammar::is_valid_op_name(op) {
                issue(format!("{what} `{op}` is not a valid op name"));
            }
        }
    }
    let observe = match raw.observe {
        Some(argv) if argv.is_empty() => {
            issue("observe must name a program".into());
            None
        }
        Some(mut argv) => {
            if argv[0].contains('/') && !Path::new(&argv[0]).is_absolute() {
                argv[0] = base_dir.join(&argv[0]).display().to_string();
            }
            Some(argv)
        }
        None => None,
    };
    Some(KindSpec {
        name: raw.name,
        description: raw.description,
        key,
        apply: raw.apply,
        delete: raw.delete,
        observe,
        observe_timeout: raw
            .observe_timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_OBSERVE_TIMEOUT),
        self_heal: raw.self_heal,
    })
}

impl Kinds {
    /// Parse and check `[[kinds]]` tables; relative observe programs resolve
    /// against `base_dir` (without lines: see [`Kinds::from_section`]).
    pub fn parse(tables: &[toml::Table], base_dir: &Path) -> Result<Kinds, Vec<String>> {
        let at = KindsAt {
            prefix: "kinds",
            line_of: &|_| None,
        };
        Self::parse_at(tables, base_dir, &at)
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    /// The kinds of the git section's config: `[[frontends.git.kinds]]`, or
    /// the deprecated top-level `[[kinds]]`; every problem at once, on its line.
    pub fn from_section(s: &FrontendSection<'_>) -> Result<Kinds, Vec<ConfigIssue>> {
        let (tables, prefix) = kind_tables(s)?;
        let cfg = s.config();
        let at = KindsAt {
            prefix: &prefix,
            line_of: &|p| cfg.line_of(p),
        };
        Self::parse_at(&tables, &cfg.base_dir, &at)
    }

    fn parse_at(
        tables: &[toml::Table],
        base_dir: &Path,
        at: &KindsAt<'_>,
    ) -> Result<Kinds, Vec<ConfigIssue>> {
        let mut errs = Vec::new();
        let mut by_name = BTreeMap::new();
        for (i, t) in tables.iter().enumerate() {
            let name = t.get("name").and_then(|n| n.as_str());
            let mut issue = |m: String| errs.push(at.issue(i, name, m));
            let Some(spec) = parse_kind(t, base_dir, &mut issue) else {
                continue;
            };
            let name = spec.name.clone();
            if by_name.insert(name.clone(), spec).is_some() {
                issue(format!("kind `{name}` is declared twice"));
            }
        }
        if errs.is_empty() {
            Ok(Kinds { by_name })
        } else {
            Err(errs)
        }
    }

    /// [`Kinds::check_catalog`], each problem on the line of its kind in the
    /// git section's config.
    pub fn check_catalog_at(&self, s: &FrontendSection<'_>) -> Vec<ConfigIssue> {
        let problems = self.catalog_problems(&s.config().catalog());
        let Ok((tables, prefix)) = kind_tables(s) else {
            return Vec::new();
        };
        problems
            .into_iter()
            .map(|(kind, message)| {
                let i = tables
                    .iter()
                    .position(|t| t.get("name").and_then(|n| n.as_str()) == Some(kind));
                ConfigIssue {
                    line: i.and_then(|i| s.config().line_of(&format!("{prefix}[{i}]"))),
                    path: format!("{prefix} ({kind})"),
                    message,
                }
            })
            .collect()
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&KindSpec> {
        self.by_name.get(name)
    }

    /// Every kind, by name.
    pub fn iter(&self) -> impl Iterator<Item = &KindSpec> {
        self.by_name.values()
    }

    /// Kind names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// Problems of the kinds against a catalog: ops that do not exist, key
    /// fields that are no param of the apply op.
    pub fn check_catalog(&self, catalog: &Catalog) -> Vec<String> {
        self.catalog_problems(catalog)
            .into_iter()
            .map(|(kind, p)| format!("kinds ({kind}): {p}"))
            .collect()
    }

    /// Each problem against a catalog, with the kind it is about.
    fn catalog_problems(&self, catalog: &Catalog) -> Vec<(&str, String)> {
        let mut out = Vec::new();
        for k in self.iter() {
            let name = k.name.as_str();
            match catalog.get(&k.apply) {
                None => out.push((
                    name,
                    format!("apply op `{}` is not in the catalog", k.apply),
                )),
                Some(op) => {
                    if op.param(&k.key).is_none() {
                        out.push((
                            name,
                            format!("key field `{}` is not a param of `{}`", k.key, k.apply),
                        ));
                    }
                }
            }
            if let Some(d) = &k.delete {
                if catalog.get(d).is_none() {
                    out.push((name, format!("delete op `{d}` is not in the catalog")));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
