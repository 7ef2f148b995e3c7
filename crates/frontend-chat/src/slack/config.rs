//! The `[frontends.slack]` config section.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use youops_core::config::{Config, ConfigIssue};
use youops_core::frontend::factory::FrontendSection;
use youops_core::units::HumanDuration;

/// How Slack reaches YouOps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Slack POSTs signed requests to `/slack/commands`, `/slack/events`,
    /// `/slack/interactions` under the daemon's public URL.
    #[default]
    Http,
    /// YouOps opens a websocket to Slack (`apps.connections.open`); no public URL needed.
    Socket,
}

/// A secret string: never printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<empty>"
        } else {
            "<redacted>"
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    signing_secret: Option<Secret>,
    #[serde(default)]
    bot_token: Option<Secret>,
    #[serde(default)]
    app_token: Option<Secret>,
    #[serde(default)]
    transport: Transport,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    approvals_channel: Option<String>,
    #[serde(default)]
    api_base_url: Option<String>,
    #[serde(default)]
    max_messages_per_second_per_channel: Option<f64>,
    #[serde(default)]
    max_delivery_attempts: Option<u32>,
    #[serde(default)]
    retry_backoff: Option<HumanDuration>,
    #[serde(default)]
    request_timeout: Option<HumanDuration>,
    #[serde(default)]
    bot_name: Option<String>,
    #[serde(default)]
    progress_every: Option<HumanDuration>,
    #[serde(default)]
    status_delay: Option<HumanDuration>,
}

/// The validated Slack frontend settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SlackConfig {
    /// Signing secret of the Slack app (checks `X-Slack-Signature`).
    pub signing_secret: Secret,
    /// Bot token (`xoxb-...`) for the Web API.
    pub bot_token: Secret,
    /// App-level token (`xapp-...`) with `connections:write`, for Socket Mode.
    pub app_token: Option<Secret>,
    /// HTTP or Socket Mode.
    pub transport: Transport,
    /// The slash command, with its leading `/` (default `/ops`).
    pub command: String,
    /// Channel id every pending approval is also posted to (any frontend's requests).
    pub approvals_channel: Option<String>,
    /// Web API base URL, ending without `/` (default `https://slack.com/api`).
    pub api_base_url: String,
    /// Pace of posts and updates per channel.
    pub max_messages_per_second_per_channel: f64,
    /// How many times one post or update is tried before it is given up (default 8).
    pub max_delivery_attempts: u32,
    /// First wait after a transient failure (5xx, dropped connection, no answer);
    /// doubles per attempt, capped at 30 s (default `500ms`). A `429` waits its
    /// `Retry-After` instead.
    pub retry_backoff: Duration,
    /// How long one Web API call or `response_url` post may take before it counts
    /// as failed and is retried (default `10s`): a Slack that never answers must
    /// not hold a request's messages, or shutdown, forever.
    pub request_timeout: Duration,
    /// Display name of the app in the manifest (default `YouOps`).
    pub bot_name: String,
    /// How often the status message of a running request is refreshed with its
    /// elapsed time (default `30s`).
    pub progress_every: Duration,
    /// How long a request may run before its status message is posted (default
    /// `1s`; `0s` posts at once). A run that ends sooner gets one status
    /// message, already in its end state, instead of "running" and an update.
    pub status_delay: Duration,
}

impl SlackConfig {
    /// Default Web API base URL.
    pub const DEFAULT_API_BASE_URL: &'static str = "https://slack.com/api/";

    /// Parse and validate; every problem at once (without lines: see
    /// [`SlackConfig::from_section`]).
    pub fn from_table(section: &toml::Table) -> Result<SlackConfig, Vec<String>> {
        let cfg = Config::default();
        Self::from_section(&FrontendSection::new("slack", section, &cfg))
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    /// Parse and validate the section; every problem at once, on its line.
    pub fn from_section(s: &FrontendSection<'_>) -> Result<SlackConfig, Vec<ConfigIssue>> {
        let raw: Raw = match s.parse() {
            Ok(r) => r,
            Err(e) => return Err(vec![e]),
        };
        let errs = &mut Issues {
            s,
            list: Vec::new(),
        };
        let signing_secret = required_secret(raw.signing_secret, "signing_secret", errs);
        let bot_token = required_secret(raw.bot_token, "bot_token", errs);
        if raw.transport == Transport::Socket
            && raw.app_token.as_ref().is_none_or(|t| t.0.trim().is_empty())
        {
            errs.push(
                "app_token",
                "(xapp-..., scope connections:write) is required when transport = \"socket\"",
            );
        }
        let command = raw.command.unwrap_or_else(|| "/ops".into());
        check_command(&command, errs);
        if let Some(c) = &raw.approvals_channel {
            if c.is_empty() || !c.chars().all(|c| c.is_ascii_alphanumeric()) {
                errs.push(
                    "approvals_channel",
                    format!("`{c}` must be a channel id such as `C0123ABCD` (not a #name)"),
                );
            }
        }
        let api_base_url = raw
            .api_base_url
            .unwrap_or_else(|| Self::DEFAULT_API_BASE_URL.into());
        if !(api_base_url.starts_with("https://") || api_base_url.starts_with("http://")) {
            errs.push(
                "api_base_url",
                format!("`{api_base_url}` must be an http(s) URL"),
            );
        }
        let rate = raw.max_messages_per_second_per_channel.unwrap_or(1.0);
        if !(rate.is_finite() && rate > 0.0 && rate <= 100.0) {
            errs.push(
                "max_messages_per_second_per_channel",
                format!("must be in (0, 100], got {rate}"),
            );
        }
        let attempts = raw.max_delivery_attempts.unwrap_or(8);
        if !(1..=30).contains(&attempts) {
            errs.push(
                "max_delivery_attempts",
                format!("must be in 1..=30, got {attempts}"),
            );
        }
        let timings = Timings::check(
            [
                raw.retry_backoff,
                raw.request_timeout,
                raw.progress_every,
                raw.status_delay,
            ],
            errs,
        );
        if !errs.list.is_empty() {
            return Err(std::mem::take(&mut errs.list));
        }
        Ok(SlackConfig {
            signing_secret,
            bot_token,
            app_token: raw.app_token,
            transport: raw.transport,
            command,
            approvals_channel: raw.approvals_channel,
            api_base_url: api_base_url.trim_end_matches('/').to_string(),
            max_messages_per_second_per_channel: rate,
            max_delivery_attempts: attempts,
            retry_backoff: timings.retry_backoff,
            request_timeout: timings.request_timeout,
            bot_name: raw.bot_name.unwrap_or_else(|| "YouOps".into()),
            progress_every: timings.progress_every,
            status_delay: timings.status_delay,
        })
    }

    /// Minimum spacing of messages in one channel.
    pub fn channel_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.max_messages_per_second_per_channel)
    }
}

/// The problems of a section, each on its key's line.
struct Issues<'s, 'a> {
    s: &'s FrontendSection<'a>,
    list: Vec<ConfigIssue>,
}

impl Issues<'_, '_> {
    /// A problem with `key`, said as a sentence about it (`frontends.slack.KEY
    /// is required …`).
    fn push(&mut self, key: &str, rest: impl std::fmt::Display) {
        let message = format!("{} {rest}", self.s.path(key));
        self.list.push(self.s.issue(key, message));
    }
}

/// A secret that must be given and not blank; an error names `key` otherwise.
fn required_secret(v: Option<Secret>, key: &str, errs: &mut Issues<'_, '_>) -> Secret {
    match v {
        Some(s) if !s.0.trim().is_empty() => s,
        _ => {
            errs.push(key, "is required and must not be empty");
            Secret::default()
        }
    }
}

/// The slash command must look like `/ops`.
fn check_command(command: &str, errs: &mut Issues<'_, '_>) {
    if !command.starts_with('/')
        || command.len() < 2
        || command.len() > 32
        || !command[1..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        errs.push(
            "command",
            format!("`{command}` must look like `/ops`: a `/` then up to 31 lowercase letters, digits, `-` or `_`"),
        );
    }
}

/// The validated delivery and rendering timings of the section.
struct Timings {
    retry_backoff: Duration,
    request_timeout: Duration,
    progress_every: Duration,
    status_delay: Duration,
}

impl Timings {
    /// `retry_backoff`, `request_timeout`, `progress_every` and `status_delay`
    /// as given, with defaults for what is not; an error for each value out of
    /// range.
    fn check(given: [Option<HumanDuration>; 4], errs: &mut Issues<'_, '_>) -> Timings {
        let [retry_backoff, request_timeout, progress_every, status_delay] = given;
        let retry_backoff = retry_backoff
            .map(|d| d.0)
            .unwrap_or(Duration::from_millis(500));
        if retry_backoff < Duration::from_millis(10) || retry_backoff > Duration::from_secs(60) {
            errs.push("retry_backoff", "must be between 10ms and 60s");
        }
        let request_timeout = request_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10));
        if request_timeout < Duration::from_millis(100)
            || request_timeout > Duration::from_secs(120)
        {
            errs.push("request_timeout", "must be between 100ms and 120s");
        }
        let progress_every = progress_every
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30));
        if progress_every < Duration::from_secs(1) {
            errs.push("progress_every", "must be at least 1s");
        }
        let status_delay = status_delay.map(|d| d.0).unwrap_or(Duration::from_secs(1));
        if status_delay > Duration::from_secs(60) {
            errs.push("status_delay", "must be at most 60s");
        }
        Timings {
            retry_backoff,
            request_timeout,
            progress_every,
            status_delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use youops_core::frontend::conformance::section_problems;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = SlackConfig::from_table(&table("signing_secret = \"s\"\nbot_token = \"xoxb-1\""))
            .unwrap();
        assert_eq!(c.command, "/ops");
        assert_eq!(c.transport, Transport::Http);
        assert_eq!(c.api_base_url, "https://slack.com/api");
        assert_eq!(c.channel_interval(), Duration::from_secs(1));
        assert_eq!(c.retry_backoff, Duration::from_millis(500));
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.status_delay, Duration::from_secs(1));
        assert_eq!(format!("{:?}", c.bot_token), "<redacted>");
        assert!(!format!("{c:?}").contains("xoxb-1"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = SlackConfig::from_table(&table(
            "transport = \"socket\"\ncommand = \"ops\"\napprovals_channel = \"#ops\"\napi_base_url = \"ftp://x\"\nmax_messages_per_second_per_channel = 0\nretry_backoff = \"1ms\"\nrequest_timeout = \"10m\"\nprogress_every = \"10ms\"\nstatus_delay = \"2m\"",
        ))
        .unwrap_err();
        let all = errs.join("\n");
        for key in [
            "signing_secret",
            "bot_token",
            "app_token",
            "command",
            "approvals_channel",
            "api_base_url",
            "max_messages_per_second_per_channel",
            "retry_backoff",
            "request_timeout",
            "progress_every",
            "status_delay",
        ] {
            assert!(all.contains(key), "{key} missing from {all}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let errs = SlackConfig::from_table(&table(
            "signing_secret = \"s\"\nbot_token = \"b\"\nchanel = \"C1\"",
        ))
        .unwrap_err();
        assert!(errs[0].contains("chanel"), "{errs:?}");
    }

    #[test]
    fn problems_in_a_config_file_carry_their_lines() {
        let text = "[server]\n\n[frontends.slack]\nbot_token = \"\"\ncommand = \"ops\"\n";
        let errs = section_problems(text, "slack", SlackConfig::from_section);
        assert_eq!(
            errs[..2],
            [
                "line 3: frontends.slack.signing_secret is required and must not be empty",
                "line 4: frontends.slack.bot_token is required and must not be empty",
            ],
            "{errs:#?}"
        );
        assert!(errs[2].starts_with("line 5: frontends.slack.command `ops` must look like"));
        let text =
            "[frontends.slack]\nsigning_secret = \"s\"\nbot_token = \"b\"\nchanel = \"C1\"\n";
        let errs = section_problems(text, "slack", SlackConfig::from_section);
        assert!(errs[0].starts_with("line 4: "), "{errs:?}");
    }
}
