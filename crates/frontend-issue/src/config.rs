//! `[frontends.github]`: the IssueOps frontend's config section.
//!
//! Parsed with `deny_unknown_fields`; [`GithubConfig::from_table`] returns every
//! problem at once (for `youops config check`). `${ENV}` references were already
//! expanded by the core config loader, so `webhook_secret = "${GITHUB_WEBHOOK_SECRET}"`
//! keeps the secret out of the file.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use youops_core::config::{Config, ConfigIssue};
use youops_core::frontend::factory::{FrontendSection, SectionIssues};
use youops_core::units::HumanDuration;

/// The default GitHub REST API base URL.
pub const DEFAULT_API_BASE_URL: &str = "https://api.github.com";

/// How the daemon authenticates to GitHub.
#[derive(Clone)]
pub enum Auth {
    /// A personal access token or fine-grained token.
    Token(String),
    /// A GitHub App installation.
    App {
        /// The App id.
        app_id: u64,
        /// The App's RSA private key (PEM).
        private_key_pem: Vec<u8>,
        /// The installation id on the managed repositories' owner.
        installation_id: u64,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        match self {
            Auth::Token(_) => f.write_str("Token(********)"),
            Auth::App {
                app_id,
                installation_id,
                ..
            } => f
                .debug_struct("App")
                .field("app_id", app_id)
                .field("installation_id", installation_id)
                .finish_non_exhaustive(),
        }
    }
}

/// A managed repository, `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName {
    /// Owner (user or organization).
    pub owner: String,
    /// Repository name.
    pub name: String,
}

impl RepoName {
    /// Parse `owner/name`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 100
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match s.split_once('/') {
            Some((o, n)) if ok(o) && ok(n) => Ok(RepoName {
                owner: o.to_string(),
                name: n.to_string(),
            }),
            _ => Err(format!(
                "`{s}` is not a repository name of the form `owner/repo`"
            )),
        }
    }

    /// `owner/name`, lower-cased (GitHub names are case-insensitive).
    pub fn key(&self) -> String {
        format!("{}/{}", self.owner, self.name).to_ascii_lowercase()
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    webhook_secret: Option<String>,
    token: Option<String>,
    app_id: Option<u64>,
    private_key_path: Option<String>,
    private_key: Option<String>,
    installation_id: Option<u64>,
    api_base_url: Option<String>,
    #[serde(default)]
    repos: Vec<String>,
    poll_interval: Option<HumanDuration>,
    poll_lookback: Option<HumanDuration>,
    command_prefix: Option<String>,
    ack_timeout: Option<HumanDuration>,
    output_limit: Option<usize>,
}

/// The validated `[frontends.github]` section.
#[derive(Clone)]
#[non_exhaustive]
pub struct GithubConfig {
    /// Secret of the webhook (`X-Hub-Signature-256`).
    pub webhook_secret: String,
    /// How to authenticate to the API.
    pub auth: Auth,
    /// REST API base URL (GitHub Enterprise: `https://HOST/api/v3`; tests: the fake).
    pub api_base_url: String,
    /// Managed repositories, keyed by lower-cased `owner/name`.
    pub repos: BTreeMap<String, RepoName>,
    /// How often to poll the managed repositories (`0s` disables polling).
    pub poll_interval: Duration,
    /// How far back the first poll after a start looks.
    pub poll_lookback: Duration,
    /// The word that starts a command line in a comment (`/ops`).
    pub command_prefix: String,
    /// How long a webhook delivery is processed before the answer goes back anyway
    /// (processing continues in the background).
    pub ack_timeout: Duration,
    /// Characters of run output shown in a status comment.
    pub output_limit: usize,
}

impl fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubConfig")
            .field("webhook_secret", &"********")
            .field("auth", &self.auth)
            .field("api_base_url", &self.api_base_url)
            .field("repos", &self.repos.values().collect::<Vec<_>>())
            .field("poll_interval", &self.poll_interval)
            .field("command_prefix", &self.command_prefix)
            .finish_non_exhaustive()
    }
}

impl GithubConfig {
    /// Parse and check a section; every problem at once (without lines: see
    /// [`GithubConfig::from_section`]).
    pub fn from_table(section: &toml::Table) -> Result<Self, Vec<String>> {
        let cfg = Config::default();
        Self::from_section(&FrontendSection::new("github", section, &cfg))
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    /// Parse and check the section; every problem at once, on its line.
    pub fn from_section(s: &FrontendSection<'_>) -> Result<Self, Vec<ConfigIssue>> {
        let raw: Raw = s.parse().map_err(|e| vec![e])?;
        let errors = &mut SectionIssues::new(s);
        let webhook_secret = webhook_secret(raw.webhook_secret, errors);
        let auth = auth(
            raw.token,
            AppKeys {
                app_id: raw.app_id,
                installation_id: raw.installation_id,
                private_key_path: raw.private_key_path,
                private_key: raw.private_key,
            },
            errors,
        );
        let api_base_url = api_base_url(raw.api_base_url, errors);
        let repos = repos(&raw.repos, errors);
        let command_prefix = raw.command_prefix.unwrap_or_else(|| "/ops".into());
        if command_prefix.is_empty()
            || command_prefix.chars().any(char::is_whitespace)
            || command_prefix.contains("<!--")
        {
            errors.say(
                "command_prefix",
                format!("`{command_prefix}` must be one word (like `/ops`)"),
            );
        }
        let ack_timeout = raw
            .ack_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(5));
        if ack_timeout > Duration::from_secs(9) {
            errors.say(
                "ack_timeout",
                "must be at most 9s (GitHub gives up on a webhook after 10 seconds)",
            );
        }
        let output_limit = raw.output_limit.unwrap_or(3000);
        if output_limit > 60_000 {
            errors.say(
                "output_limit",
                "must be at most 60000 (a GitHub comment holds 65536 characters)",
            );
        }
        errors.check()?;
        Ok(GithubConfig {
            webhook_secret,
            auth: auth.expect("checked above"),
            api_base_url,
            repos,
            poll_interval: raw
                .poll_interval
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(60)),
            poll_lookback: raw
                .poll_lookback
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(24 * 3600)),
            command_prefix,
            ack_timeout,
            output_limit,
        })
    }

    /// The managed repository `full_name` names, if it is one.
    pub fn repo(&self, full_name: &str) -> Option<&RepoName> {
        self.repos.get(&full_name.to_ascii_lowercase())
    }
}

/// `webhook_secret`: required and not empty.
fn webhook_secret(secret: Option<String>, errors: &mut SectionIssues<'_, '_>) -> String {
    match secret {
        Some(s) if !s.is_empty() => s,
        Some(_) => {
            errors.say("webhook_secret", "is empty");
            String::new()
        }
        None => {
            errors.say(
                "webhook_secret",
                "is missing (the secret set on the GitHub webhook; use \"${GITHUB_WEBHOOK_SECRET}\")",
            );
            String::new()
        }
    }
}

/// The GitHub App keys of a section, each as given.
struct AppKeys {
    app_id: Option<u64>,
    installation_id: Option<u64>,
    private_key_path: Option<String>,
    private_key: Option<String>,
}

impl AppKeys {
    fn any(&self) -> bool {
        self.app_id.is_some()
            || self.installation_id.is_some()
            || self.private_key_path.is_some()
            || self.private_key.is_some()
    }
}

/// The credentials: a `token`, or the GitHub App keys, never both.
fn auth(token: Option<String>, app: AppKeys, errors: &mut SectionIssues<'_, '_>) -> Option<Auth> {
    match (token, app.any()) {
        (Some(_), true) => {
            errors.push("", "give either `token` or the GitHub App keys (`app_id`, `private_key_path`, `installation_id`), not both");
            None
        }
        (Some(t), false) if t.is_empty() => {
            errors.say("token", "is empty");
            None
        }
        (Some(t), false) => Some(Auth::Token(t)),
        (None, false) => {
            errors.push("", "no credentials; set `token`, or `app_id` + `private_key_path` + `installation_id` for a GitHub App");
            None
        }
        (None, true) => app_auth(app, errors),
    }
}

/// A GitHub App's credentials: every key, and a readable RSA private key.
fn app_auth(app: AppKeys, errors: &mut SectionIssues<'_, '_>) -> Option<Auth> {
    let pem = match (app.private_key_path, app.private_key) {
        (Some(_), Some(_)) => {
            errors.push("", "give `private_key_path` or `private_key`, not both");
            None
        }
        (Some(p), None) => match std::fs::read(&p) {
            Ok(b) => Some(b),
            Err(e) => {
                errors.push("private_key_path", format!("cannot read `{p}`: {e}"));
                None
            }
        },
        (None, Some(k)) => Some(k.into_bytes()),
        (None, None) => {
            errors.push(
                "",
                "a GitHub App needs `private_key_path` (or `private_key`)",
            );
            None
        }
    };
    if let Some(pem) = &pem {
        if octocrab::EncodingKey::from_rsa_pem(pem).is_err() {
            errors.push(
                "",
                "the GitHub App private key is not an RSA private key in PEM format",
            );
        }
    }
    if app.app_id.is_none() {
        errors.push("", "a GitHub App needs `app_id`");
    }
    if app.installation_id.is_none() {
        errors.push("", "a GitHub App needs `installation_id`");
    }
    match (app.app_id, pem, app.installation_id) {
        (Some(app_id), Some(private_key_pem), Some(installation_id)) => Some(Auth::App {
            app_id,
            private_key_pem,
            installation_id,
        }),
        _ => None,
    }
}

/// `api_base_url`, without a trailing `/`; an http(s) URL.
fn api_base_url(url: Option<String>, errors: &mut SectionIssues<'_, '_>) -> String {
    let api_base_url = url
        .unwrap_or_else(|| DEFAULT_API_BASE_URL.to_string())
        .trim_end_matches('/')
        .to_string();
    if !(api_base_url.starts_with("https://") || api_base_url.starts_with("http://"))
        || api_base_url.parse::<http::Uri>().is_err()
    {
        errors.say(
            "api_base_url",
            format!("`{api_base_url}` is not an http(s) URL"),
        );
    }
    api_base_url
}

/// `repos`: at least one, each `owner/repo`, none twice.
fn repos(names: &[String], errors: &mut SectionIssues<'_, '_>) -> BTreeMap<String, RepoName> {
    let mut repos = BTreeMap::new();
    if names.is_empty() {
        errors.say(
            "repos",
            "is empty: list the managed repositories (`repos = [\"owner/repo\"]`)",
        );
    }
    for r in names {
        match RepoName::parse(r) {
            Ok(n) => {
                if repos.insert(n.key(), n).is_some() {
                    errors.push("repos", format!("`{r}` listed twice"));
                }
            }
            Err(e) => errors.push("repos", e),
        }
    }
    repos
}

#[cfg(test)]
mod tests {
    use super::*;
    use youops_core::frontend::conformance::section_problems;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn token_config_parses_with_defaults() {
        let c = GithubConfig::from_table(&table(
            r#"webhook_secret = "s3"
token = "ghp_x"
repos = ["Acme/Ops"]"#,
        ))
        .unwrap();
        assert_eq!(c.api_base_url, DEFAULT_API_BASE_URL);
        assert_eq!(c.command_prefix, "/ops");
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        assert!(c.repo("acme/ops").is_some());
        assert!(matches!(c.auth, Auth::Token(_)));
        assert!(!format!("{c:?}").contains("ghp_x"));
        assert!(!format!("{c:?}").contains("s3\""));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = GithubConfig::from_table(&table(
            r#"token = "t"
app_id = 1
repos = ["nope", "a/b", "a/b"]
api_base_url = "ftp://x"
command_prefix = "two words"
ack_timeout = "30s""#,
        ))
        .unwrap_err();
        let all = errs.join("\n");
        for needle in [
            "webhook_secret is missing",
            "not both",
            "`nope` is not a repository",
            "listed twice",
            "ftp://x",
            "command_prefix",
            "ack_timeout",
        ] {
            assert!(all.contains(needle), "{needle} not in {all}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let errs = GithubConfig::from_table(&table(
            r#"webhook_secret = "s"
token = "t"
repos = ["a/b"]
tokne = "x""#,
        ))
        .unwrap_err();
        assert!(errs[0].contains("tokne"), "{errs:?}");
    }

    #[test]
    fn app_config_needs_all_keys_and_a_valid_key() {
        let errs = GithubConfig::from_table(&table(
            r#"webhook_secret = "s"
app_id = 12
private_key = "not a pem"
repos = ["a/b"]"#,
        ))
        .unwrap_err();
        let all = errs.join("\n");
        assert!(all.contains("installation_id"), "{all}");
        assert!(all.contains("PEM"), "{all}");
    }

    #[test]
    fn problems_in_a_config_file_carry_their_lines() {
        let text = "[frontends.github]\ntoken = \"t\"\nrepos = [\"nope\"]\nack_timeout = \"30s\"\n";
        let errs = section_problems(text, "github", GithubConfig::from_section);
        assert!(
            errs[0].starts_with("line 1: frontends.github.webhook_secret is missing"),
            "{errs:#?}"
        );
        assert!(
            errs[1].starts_with("line 3: frontends.github.repos: `nope` is not"),
            "{errs:#?}"
        );
        assert!(
            errs[2].starts_with("line 4: frontends.github.ack_timeout must be at most 9s"),
            "{errs:#?}"
        );
    }
}
