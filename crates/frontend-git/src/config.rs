//! `[frontends.git]` and `[[kinds]]`: parsed with serde (`deny_unknown_fields`),
//! then checked, every problem reported at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use youops_core::catalog::Catalog;
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
fn parse_source(repo: &str, base_dir: &Path, errs: &mut Vec<String>) -> Source {
    if repo.trim().is_empty() {
        errs.push("frontends.git.repo: must not be empty".to_string());
        Source::Local(PathBuf::new())
    } else if is_url(repo) {
        let scheme = repo.split("://").next().unwrap_or("");
        if repo.contains("://") && !["file", "git", "http", "https", "ssh"].contains(&scheme) {
            errs.push(format!(
                "frontends.git.repo: unsupported scheme `{scheme}` (file, git, http, https, ssh)"
            ));
        }
        if has_password(repo) {
            errs.push("frontends.git.repo: do not put credentials in the URL; use `token` (https) or `ssh_key` (ssh)".to_string());
        }
        Source::Remote(repo.to_string())
    } else {
        Source::Local(resolve(base_dir, Path::new(repo)))
    }
}

fn check_branch(branch: &str, errs: &mut Vec<String>) {
    if branch.is_empty()
        || branch.starts_with('-')
        || branch.contains("..")
        || branch
            .chars()
            .any(|c| c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        errs.push(format!(
            "frontends.git.branch: `{branch}` is not a valid branch name"
        ));
    }
}

/// The fetch and drift-check intervals.
fn intervals(raw: &RawSection, errs: &mut Vec<String>) -> (Duration, Duration) {
    let interval = raw.interval.map(|d| d.0).unwrap_or(DEFAULT_INTERVAL);
    if interval < Duration::from_millis(100) {
        errs.push("frontends.git.interval: must be at least 100ms".into());
    }
    let drift_interval = raw
        .drift_interval
        .map(|d| d.0)
        .unwrap_or(DEFAULT_DRIFT_INTERVAL);
    if drift_interval < Duration::from_millis(100) {
        errs.push("frontends.git.drift_interval: must be at least 100ms".into());
    }
    (interval, drift_interval)
}

/// The allowed-signers file, checked with `require_signed`.
fn signers(raw: &RawSection, base_dir: &Path, errs: &mut Vec<String>) -> Option<PathBuf> {
    let allowed_signers = raw.allowed_signers.as_ref().map(|p| resolve(base_dir, p));
    if raw.require_signed && allowed_signers.is_none() && raw.gpg_program.is_none() {
        errs.push("frontends.git.require_signed: needs `allowed_signers` (SSH signatures) or `gpg_program` (OpenPGP)".into());
    }
    if let Some(p) = &allowed_signers {
        check_file("allowed_signers", p, errs);
    }
    allowed_signers
}

fn check_file(key: &str, p: &Path, errs: &mut Vec<String>) {
    if !p.is_file() {
        errs.push(format!(
            "frontends.git.{key}: `{}` is not a file",
            p.display()
        ));
    }
}

fn check_secrets(raw: &RawSection, errs: &mut Vec<String>) {
    for (k, v) in [
        ("webhook_secret", &raw.webhook_secret),
        ("webhook_token", &raw.webhook_token),
        ("token", &raw.token),
    ] {
        if v.as_deref().is_some_and(|s| s.len() < 8) {
            errs.push(format!(
                "frontends.git.{k}: too short (at least 8 characters)"
            ));
        }
    }
}

/// The first and the longest retry delay.
fn retry_delays(raw: &RawSection, errs: &mut Vec<String>) -> (Duration, Duration) {
    let retry_base = raw.retry_base.map(|d| d.0).unwrap_or(DEFAULT_RETRY_BASE);
    let retry_max = raw.retry_max.map(|d| d.0).unwrap_or(DEFAULT_RETRY_MAX);
    if retry_base.is_zero() || retry_max < retry_base {
        errs.push("frontends.git.retry_base/retry_max: need 0 < retry_base <= retry_max".into());
    }
    (retry_base, retry_max)
}

impl GitConfig {
    /// Parse and check a `[frontends.git]` section.
    pub fn parse(section: &toml::Table, base_dir: &Path) -> Result<GitConfig, Vec<String>> {
        let raw: RawSection = toml::Value::Table(section.clone())
            .try_into()
            .map_err(|e: toml::de::Error| vec![format!("frontends.git: {}", e.message().trim())])?;
        let mut errs = Vec::new();
        let source = parse_source(&raw.repo, base_dir, &mut errs);
        let branch = raw.branch.clone().unwrap_or_else(|| "main".into());
        check_branch(&branch, &mut errs);
        let path = raw
            .path
            .clone()
            .unwrap_or_default()
            .trim_matches('/')
            .to_string();
        if path.split('/').any(|c| c == ".." || c == ".") {
            errs.push("frontends.git.path: must be a plain subdirectory (no `.` or `..`)".into());
        }
        let (interval, drift_interval) = intervals(&raw, &mut errs);
        let allowed_signers = signers(&raw, base_dir, &mut errs);
        check_secrets(&raw, &mut errs);
        let ssh_key = raw.ssh_key.as_ref().map(|p| resolve(base_dir, p));
        if let Some(p) = &ssh_key {
            check_file("ssh_key", p, &mut errs);
        }
        if raw.push_notes && matches!(source, Source::Local(_)) {
            errs.push("frontends.git.push_notes: the repo is a local path, notes are written to it directly; give a URL (file:///...) to push".into());
        }
        let (retry_base, retry_max) = retry_delays(&raw, &mut errs);
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
        if !errs.is_empty() {
            return Err(errs);
        }
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

impl Kinds {
    /// Parse and check `[[kinds]]` tables; relative observe programs resolve against `base_dir`.
    pub fn parse(tables: &[toml::Table], base_dir: &Path) -> Result<Kinds, Vec<String>> {
        let mut errs = Vec::new();
        let mut by_name = BTreeMap::new();
        for (i, t) in tables.iter().enumerate() {
            let label = t
                .get("name")
                .and_then(|n| n.as_str())
                .map(|n| format!("kinds[{i}] ({n})"))
                .unwrap_or_else(|| format!("kinds[{i}]"));
            let raw: RawKind = match toml::Value::Table(t.clone()).try_into() {
                Ok(r) => r,
                Err(e) => {
                    let e: toml::de::Error = e;
                    errs.push(format!("{label}: {}", e.message().trim()));
                    continue;
                }
            };
            if !valid_kind_name(&raw.name) {
                errs.push(format!(
                    "{label}: name must be letters, digits, `_`, `-` or `.`"
                ));
            }
            let key = raw.key.unwrap_or_else(|| "name".into());
            if key.is_empty() || key == "kind" {
                errs.push(format!("{label}: key must name a field other than `kind`"));
            }
            for (what, op) in [("apply", Some(&raw.apply)), ("delete", raw.delete.as_ref())] {
                if let Some(op) = op {
                    if !youops_core::grammar::is_valid_op_name(op) {
                        errs.push(format!("{label}: {what} `{op}` is not a valid op name"));
                    }
                }
            }
            let observe = match raw.observe {
                Some(argv) if argv.is_empty() => {
                    errs.push(format!("{label}: observe must name a program"));
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
            let spec = KindSpec {
                name: raw.name.clone(),
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
            };
            if by_name.insert(raw.name.clone(), spec).is_some() {
                errs.push(format!("{label}: kind `{}` is declared twice", raw.name));
            }
        }
        if errs.is_empty() {
            Ok(Kinds { by_name })
        } else {
            Err(errs)
        }
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
        let mut out = Vec::new();
        for k in self.iter() {
            match catalog.get(&k.apply) {
                None => out.push(format!(
                    "kinds ({}): apply op `{}` is not in the catalog",
                    k.name, k.apply
                )),
                Some(op) => {
                    if op.param(&k.key).is_none() {
                        out.push(format!(
                            "kinds ({}): key field `{}` is not a param of `{}`",
                            k.name, k.key, k.apply
                        ));
                    }
                }
            }
            if let Some(d) = &k.delete {
                if catalog.get(d).is_none() {
                    out.push(format!(
                        "kinds ({}): delete op `{d}` is not in the catalog",
                        k.name
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults() {
        let c = GitConfig::parse(&table("repo = \"repo\""), Path::new("/etc/youops")).unwrap();
        assert_eq!(c.source, Source::Local(PathBuf::from("/etc/youops/repo")));
        assert_eq!(c.branch, "main");
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert!(!c.prune && !c.self_heal && !c.push_notes && !c.require_signed);
        assert_eq!(c.state_dir, PathBuf::from("/etc/youops/youops-data/git"));
        assert_eq!(
            c.checkout_dir,
            PathBuf::from("/etc/youops/youops-data/git/checkout")
        );
        assert_eq!(c.tracking_ref(), "refs/heads/main");
    }

    #[test]
    fn urls_are_remotes() {
        for u in [
            "file:///srv/r.git",
            "git://127.0.0.1/r",
            "https://example.com/r.git",
            "ssh://git@h/r",
            "git@github.com:o/r.git",
        ] {
            let c = GitConfig::parse(&table(&format!("repo = {u:?}")), Path::new("/")).unwrap();
            assert_eq!(c.source, Source::Remote(u.to_string()));
            assert_eq!(c.tracking_ref(), "refs/remotes/origin/main");
        }
    }

    #[test]
    fn every_problem_at_once() {
        let e = GitConfig::parse(
            &table("repo = \"ftp://x/y\"\nbranch = \"a b\"\npath = \"../up\"\nrequire_signed = true\nwebhook_secret = \"short\"\ninterval = \"1ms\""),
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(e.len(), 6, "{e:?}");
        let e = GitConfig::parse(&table("repo = \"r\"\nbogus = 1"), Path::new("/")).unwrap_err();
        assert!(e[0].contains("unknown field `bogus`"), "{e:?}");
    }

    #[test]
    fn credentials_in_urls_are_refused_and_stripped() {
        assert_eq!(
            strip_credentials("https://u:p@h.example/r"),
            "https://h.example/r"
        );
        let e = GitConfig::parse(&table("repo = \"https://u:p@h.example/r\""), Path::new("/"))
            .unwrap_err();
        assert!(e[0].contains("credentials"));
    }

    #[test]
    fn kinds_parse_and_check() {
        let k = Kinds::parse(
            &[table("name = \"user\"\napply = \"user.apply\"\ndelete = \"user.delete\"\nobserve = [\"./list\", \"users\"]\nself_heal = true")],
            Path::new("/cfg"),
        )
        .unwrap();
        let u = k.get("user").unwrap();
        assert_eq!(u.key, "name");
        assert_eq!(u.observe.as_ref().unwrap()[0], "/cfg/./list");
        let e = Kinds::parse(
            &[
                table("name = \"a b\"\napply = \"x\"\n"),
                table("name = \"u\"\napply = \"u.a\"\nwat = 1"),
                table("name = \"v\"\napply = \"v.a\"\nkey = \"kind\""),
                table("name = \"v\"\napply = \"v.a\""),
            ],
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
    }
}
