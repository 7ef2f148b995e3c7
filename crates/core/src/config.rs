//! `youops.toml`: one file for the catalog, the policy, the store and each
//! frontend's section.
//!
//! Loading reports *every* problem at once, each with the line it is on when it
//! can be placed. Unknown keys are errors. `${ENV_VAR}` in any string value is
//! replaced by the variable (`${VAR:-default}` gives a default, `$${` writes a
//! literal `${`), so secrets stay out of
//! the file; expansion happens after TOML parsing, so a value can never change
//! the file's structure.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::catalog::{Catalog, OpSpec};
use crate::policy::{GrantSpec, Policy, PrincipalSpec};
use crate::units::{ByteSize, HumanDuration};

mod lines;
mod url;

pub use url::StoreUrl;

/// `[store]`: where the audit log lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Directory of the audit store (relative to the config file).
    pub path: PathBuf,
    /// Another store instead of the embedded one at `path`, by URL
    /// (`postgres://…` for a cluster's shared store). The daemon's store
    /// factory picks the backend from its scheme; `YOUOPS_STORE_URL`
    /// overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<StoreUrl>,
    /// Retention: keep about this many events in the store; the daemon moves
    /// older ones to JSON-lines archives in `archive_dir` (0: keep everything).
    /// The embedded store moves whole segments, so it keeps up to a segment more.
    pub retain_events: u64,
    /// Where archived events go (relative to the config file).
    pub archive_dir: PathBuf,
    /// How long the claim of a delivery id (a Slack event id, a GitHub delivery
    /// id, an API idempotency key) holds; keys that name an object for its
    /// whole life never expire.
    pub dedup_ttl: HumanDuration,
    /// The embedded store seals its open log segment at this size; retention
    /// moves whole segments.
    pub segment_size: ByteSize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("youops-data"),
            url: None,
            retain_events: 0,
            archive_dir: PathBuf::from("youops-archive"),
            dedup_ttl: HumanDuration(std::time::Duration::from_secs(7 * 86_400)),
            segment_size: ByteSize(64 << 20),
        }
    }
}

/// `[executor]`: defaults for runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ExecutorConfig {
    /// Output cap per request.
    pub output_limit: ByteSize,
    /// Timeout of ops that set none.
    pub default_timeout: HumanDuration,
    /// How long a request waits for approvals before it expires.
    pub approval_ttl: HumanDuration,
    /// Most runs at the same time (others wait).
    pub max_concurrent_runs: usize,
    /// Requests each principal may submit per minute (burst = the same number);
    /// identities that map to no principal share one budget per frontend. 0 disables.
    pub rate_limit_per_minute: u32,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            output_limit: ByteSize(64 << 10),
            default_timeout: HumanDuration(std::time::Duration::from_secs(300)),
            approval_ttl: HumanDuration(std::time::Duration::from_secs(3600)),
            max_concurrent_runs: 64,
            rate_limit_per_minute: 600,
        }
    }
}

/// The whole config file.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Config {
    /// `[server]`, as written (after `${VAR}` expansion) and unchecked: the
    /// daemon's section, which the daemon reads and validates (pass its check
    /// to [`Config::load_with`]); `None` when the file has none.
    pub server: Option<toml::Value>,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[executor]`.
    pub executor: ExecutorConfig,
    /// `[[ops]]`.
    pub ops: Vec<OpSpec>,
    /// `[principals.NAME]`.
    pub principals: BTreeMap<String, PrincipalSpec>,
    /// `[[grants]]`.
    pub grants: Vec<GrantSpec>,
    /// `[frontends.NAME]`: each frontend's own section, checked by that frontend.
    pub frontends: BTreeMap<String, toml::Table>,
    /// `[[kinds]]`: resource kinds for GitOps, checked by the git frontend.
    pub kinds: Vec<toml::Table>,
    /// Directory relative paths are resolved against (the config file's).
    pub base_dir: PathBuf,
    /// Where the config came from.
    pub source: String,
    /// The line of each key of `[server]`, of the frontends' sections and of
    /// `[[kinds]]`.
    lines: lines::KeyLines,
    /// What is accepted but should change (deprecated places), with lines.
    warnings: Vec<ConfigIssue>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// 1-based line, when the problem can be placed.
    pub line: Option<usize>,
    /// Dotted path of the key (`ops[2] (deploy).params`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        // A message that starts with its path (`frontends.slack.bot_token is
        // required …`) reads as a sentence on its own.
        if self.path.is_empty() || self.message.starts_with(&self.path) {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file.
    pub source: String,
    /// The problems, in file order as far as known.
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} problem{}",
            self.source,
            self.issues.len(),
            if self.issues.len() == 1 { "" } else { "s" }
        )?;
        for i in &self.issues {
            writeln!(f, "  {}:{i}", self.source)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Deserialize)]
struct SpannedDoc {
    #[serde(default)]
    server: Option<Spanned<toml::Value>>,
    #[serde(default)]
    store: Option<Spanned<toml::Value>>,
    #[serde(default)]
    executor: Option<Spanned<toml::Value>>,
    #[serde(default)]
    ops: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    #[serde(default)]
    principals: Option<BTreeMap<String, Spanned<toml::Value>>>,
    #[serde(default)]
    grants: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    #[serde(default)]
    // Not spanned: a section that only has sub-tables (`[[frontends.git.kinds]]`
    // without `[frontends.git]`) has no span, which `Spanned` refuses; its line
    // comes from the key lines instead.
    frontends: Option<BTreeMap<String, toml::Value>>,
    #[serde(default)]
    kinds: Option<Spanned<Vec<Spanned<toml::Value>>>>,
}

const TOP_KEYS: [&str; 8] = [
    "server",
    "store",
    "executor",
    "ops",
    "principals",
    "grants",
    "frontends",
    "kinds",
];

struct Ctx<'a> {
    text: &'a str,
    issues: Vec<ConfigIssue>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text
            .get(..offset.min(self.text.len()))
            .map_or(1, |s| s.bytes().filter(|b| *b == b'\n').count() + 1)
    }

    fn issue(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(s.start));
        self.issues.push(ConfigIssue {
            line,
            path: path.into(),
            message: message.into(),
        });
    }

    /// A problem placed on a line rather than a span.
    fn issue_on(
        &mut self,
        line: Option<usize>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.issues.push(ConfigIssue {
            line,
            path: path.into(),
            message: message.into(),
        });
    }

    /// Expand `${VAR}` in every string of `v`.
    fn expand(&mut self, v: &mut toml::Value, line: Option<usize>, path: &str) {
        match v {
            toml::Value::String(s) => match expand_env(s, self.env) {
                Ok(x) => *s = x,
                Err(e) => self.issue_on(line, path, e),
            },
            toml::Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    self.expand(x, line, &format!("{path}[{i}]"));
                }
            }
            toml::Value::Table(t) => {
                for (k, x) in t.iter_mut() {
                    self.expand(x, line, &format!("{path}.{k}"));
                }
            }
            _ => {}
        }
    }

    fn typed<T: DeserializeOwned>(&mut self, v: Spanned<toml::Value>, path: &str) -> Option<T> {
        let line = self.line_of(v.span().start);
        self.typed_on(v.into_inner(), Some(line), path)
    }

    /// [`Ctx::typed`] of a value without a span, placed on `line`.
    fn typed_on<T: DeserializeOwned>(
        &mut self,
        mut value: toml::Value,
        line: Option<usize>,
        path: &str,
    ) -> Option<T> {
        let before = self.issues.len();
        self.expand(&mut value, line, path);
        if self.issues.len() != before {
            return None;
        }
        match value.try_into::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                let msg = e.to_string();
                self.issue_on(line, path, msg.trim().to_string());
                None
            }
        }
    }

    /// Top-level keys this file does not know.
    fn check_top_keys(&mut self, top: &BTreeMap<Spanned<String>, toml::Value>) {
        for key in top.keys() {
            if !TOP_KEYS.contains(&key.get_ref().as_str()) {
                let hint = crate::grammar::suggest(key.get_ref(), TOP_KEYS)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.issue(
                    Some(key.span()),
                    key.get_ref().clone(),
                    format!("unknown key{hint}; known keys are {}", TOP_KEYS.join(", ")),
                );
            }
        }
    }

    /// Read each section into `cfg`, keeping where ops, principals and grants are.
    fn read_sections(&mut self, doc: SpannedDoc, cfg: &mut Config) -> Spans {
        if let Some(v) = doc.server {
            // Only expanded: the daemon checks the section itself.
            cfg.server = self.typed::<toml::Value>(v, "server");
        }
        if let Some(v) = doc.store {
            if let Some(s) = self.typed(v, "store") {
                cfg.store = s;
            }
        }
        if let Some(v) = doc.executor {
            if let Some(s) = self.typed(v, "executor") {
                cfg.executor = s;
            }
        }
        let mut spans = Spans::default();
        if let Some(ops) = doc.ops {
            for (i, v) in ops.into_inner().into_iter().enumerate() {
                let span = v.span();
                let name = v
                    .get_ref()
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                if let Some(op) = self.typed::<OpSpec>(v, &format!("ops[{i}]{name}")) {
                    spans.op_lines.entry(op.name.clone()).or_insert(span);
                    cfg.ops.push(op);
                }
            }
        }
        if let Some(ps) = doc.principals {
            for (name, v) in ps {
                spans.principal_lines.insert(name.clone(), v.span());
                if let Some(p) = self.typed(v, &format!("principals.{name}")) {
                    cfg.principals.insert(name, p);
                }
            }
        }
        if let Some(gs) = doc.grants {
            for (i, v) in gs.into_inner().into_iter().enumerate() {
                spans.grants.push(v.span());
                if let Some(g) = self.typed(v, &format!("grants[{i}]")) {
                    cfg.grants.push(g);
                }
            }
        }
        if let Some(fs) = doc.frontends {
            for (name, v) in fs {
                let path = format!("frontends.{name}");
                let line = cfg.lines.line(&path);
                if let Some(t) = self.typed_on::<toml::Table>(v, line, &path) {
                    cfg.frontends.insert(name, t);
                }
            }
        }
        if let Some(ks) = doc.kinds {
            for (i, v) in ks.into_inner().into_iter().enumerate() {
                if let Some(t) = self.typed::<toml::Table>(v, &format!("kinds[{i}]")) {
                    cfg.kinds.push(t);
                }
            }
        }
        spans
    }

    /// The catalog's and the policy's own checks, placed on their lines.
    fn check_semantics(&mut self, cfg: &Config, spans: &Spans) {
        // Semantics: what serde cannot check.
        if let Err(errs) = Catalog::new(cfg.ops.clone()) {
            for e in errs {
                let span = spans
                    .op_lines
                    .iter()
                    .find(|(n, _)| e.starts_with(&format!("op `{n}`")))
                    .map(|(_, s)| s.clone());
                self.issue(span, "ops", e);
            }
        }
        if let Err(errs) = Policy::new(cfg.principals.clone(), cfg.grants.clone()) {
            for e in errs {
                let span = spans
                    .principal_lines
                    .iter()
                    .find(|(n, _)| e.starts_with(&format!("principals.{n}")))
                    .map(|(_, s)| s.clone())
                    .or_else(|| {
                        e.strip_prefix("grants[")
                            .and_then(|r| r.split(']').next())
                            .and_then(|n| n.parse::<usize>().ok())
                            .and_then(|n| spans.grants.get(n).cloned())
                    });
                self.issue(span, "", e);
            }
        }
    }

    /// Roles nobody holds, approvals nobody can give, the embedder's `extra`
    /// checks, and settings out of range.
    fn check_roles_and_settings(&mut self, cfg: &Config, spans: &Spans, extra: &ExtraCheck<'_>) {
        let known_roles: std::collections::BTreeSet<&String> = cfg
            .principals
            .values()
            .flat_map(|p| p.roles.iter())
            .collect();
        for op in &cfg.ops {
            for r in op.roles.iter().chain(op.approvers.iter()) {
                if !known_roles.contains(r) {
                    let span = spans.op_lines.get(&op.name).cloned();
                    self.issue(
                        span,
                        format!("ops ({})", op.name),
                        format!("role `{r}` is held by no principal"),
                    );
                }
            }
            if op.approvals > 0 && cfg.principals.is_empty() {
                self.issue(
                    spans.op_lines.get(&op.name).cloned(),
                    format!("ops ({})", op.name),
                    "needs approvals but no principal is configured to give them",
                );
            }
        }
        self.issues.extend(extra(cfg));
        if cfg.executor.output_limit.0 < 64 {
            self.issue(None, "executor.output_limit", "must be at least 64 bytes");
        }
        if cfg.executor.max_concurrent_runs == 0 {
            self.issue(None, "executor.max_concurrent_runs", "must be at least 1");
        }
    }
}

/// Checks an embedder adds to loading (the daemon's of `[server]`): run on
/// the config as read, even when it has other problems, so that every problem
/// is reported at once, in line order with the rest.
pub type ExtraCheck<'a> = dyn Fn(&Config) -> Vec<ConfigIssue> + 'a;

/// Where the ops, principals and grants of a file are, to place issues found
/// after parsing.
#[derive(Default)]
struct Spans {
    /// Each op's table, by name (the first, if declared twice).
    op_lines: BTreeMap<String, std::ops::Range<usize>>,
    /// Each principal's table, by name.
    principal_lines: BTreeMap<String, std::ops::Range<usize>>,
    /// Each grant's table, in order.
    grants: Vec<std::ops::Range<usize>>,
}

/// What opens an environment reference, what writes it literally, and what
/// closes it: named so that no lone brace sits in a literal (brace matching in
/// editors and line-counting tools trips on those).
const REF: &str = "${";
const ESCAPED_REF: &str = "$${";
const REF_END: char = '}';

/// Expand `${VAR}` references; `$${` is a literal `${`.
pub fn expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains(REF) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix(ESCAPED_REF) {
            out.push_str(REF);
            rest = after;
        } else if let Some(body) = tail.strip_prefix(REF) {
            let Some(end) = body.find(REF_END) else {
                return Err(format!("unclosed `{REF}` in `{s}`"));
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad environment variable name `{name}`"));
            }
            match (
                env(name).filter(|v| !v.is_empty() || default.is_none()),
                default,
            ) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable `{name}` is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
        Self::load_with(path, &|_| Vec::new())
    }

    /// [`Config::load`] with the embedder's `extra` checks.
    pub fn load_with(
        path: impl AsRef<Path>,
        extra: &ExtraCheck<'_>,
    ) -> Result<Config, ConfigErrors> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source: source.clone(),
            issues: vec![ConfigIssue {
                line: None,
                path: String::new(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
        Self::parse_with(&text, &base, &source, &|k| std::env::var(k).ok(), extra)
    }

    /// Parse and validate config text. `env` looks up `${VAR}` references.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Self::parse_with(text, base_dir, source, env, &|_| Vec::new())
    }

    /// [`Config::parse`] with the embedder's `extra` checks.
    pub fn parse_with(
        text: &str,
        base_dir: &Path,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
        extra: &ExtraCheck<'_>,
    ) -> Result<Config, ConfigErrors> {
        let fail = |issues| ConfigErrors {
            source: source.to_string(),
            issues,
        };
        if text.contains('\0') {
            return Err(fail(vec![ConfigIssue {
                line: None,
                path: String::new(),
                message: "the file contains a NUL byte".into(),
            }]));
        }
        let mut ctx = Ctx {
            text,
            issues: Vec::new(),
            env,
        };
        // Syntax first: nothing else can be said about a file that is not TOML.
        let top: BTreeMap<Spanned<String>, toml::Value> = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                let span = e.span();
                ctx.issue(span, "", format!("not valid TOML: {}", e.message()));
                return Err(fail(ctx.issues));
            }
        };
        ctx.check_top_keys(&top);
        let doc: SpannedDoc = match toml::from_str(text) {
            Ok(d) => d,
            Err(e) => {
                let span = e.span();
                ctx.issue(span, "", e.message().to_string());
                return Err(fail(ctx.issues));
            }
        };
        let mut cfg = Config {
            base_dir: base_dir.to_path_buf(),
            source: source.to_string(),
            ..Default::default()
        };
        cfg.lines = lines::KeyLines::of(text);
        let spans = ctx.read_sections(doc, &mut cfg);
        cfg.warnings = deprecations(&cfg);
        ctx.check_semantics(&cfg, &spans);
        ctx.check_roles_and_settings(&cfg, &spans, extra);
        if ctx.issues.is_empty() {
            Ok(cfg)
        } else {
            ctx.issues.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
            Err(fail(ctx.issues))
        }
    }

    /// The catalog (the config validated it already).
    pub fn catalog(&self) -> Catalog {
        Catalog::new(self.ops.clone()).unwrap_or_default()
    }

    /// The policy (the config validated it already).
    pub fn policy(&self) -> Policy {
        Policy::new(self.principals.clone(), self.grants.clone()).unwrap_or_default()
    }

    /// The store directory, resolved against the config's directory.
    pub fn store_path(&self) -> PathBuf {
        self.resolve(&self.store.path)
    }

    /// The archive directory, resolved against the config's directory.
    pub fn archive_dir(&self) -> PathBuf {
        self.resolve(&self.store.archive_dir)
    }

    /// Resolve a path relative to the config's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A frontend's section, if configured.
    pub fn frontend(&self, name: &str) -> Option<&toml::Table> {
        self.frontends.get(name)
    }

    /// The 1-based line of a key of `[server]`, of a `[frontends.*]` section
    /// or of `[[kinds]]`, by its dotted path (`server.listen`, `frontends.git.repo`,
    /// `frontends.git.kinds[1]`, `kinds[0] (user)`), or of the nearest
    /// enclosing key; `None` for a config that was not parsed from text.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        self.lines.line(path)
    }

    /// What the file does that is accepted but deprecated: printed by
    /// `youops config check` (which still succeeds) and logged at load.
    pub fn warnings(&self) -> &[ConfigIssue] {
        &self.warnings
    }
}

/// The deprecations of a parsed config, each logged once here.
fn deprecations(cfg: &Config) -> Vec<ConfigIssue> {
    let mut out = Vec::new();
    if !cfg.kinds.is_empty() {
        out.push(ConfigIssue {
            line: cfg.line_of("kinds"),
            path: "kinds".into(),
            message: "`[[kinds]]` at the top level is deprecated; declare resource kinds as `[[frontends.git.kinds]]`".into(),
        });
    }
    for w in &out {
        tracing::warn!(source = %cfg.source, "{w}");
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod doc_tests;

#[cfg(test)]
mod prop_tests;
