//! # youops-frontend-issue
//!
//! The IssueOps frontend for GitHub: people request an op by opening an issue
//! from a generated issue form, and act on requests with `/ops …` command lines
//! in comments (`/ops approve ID`, `/ops deny ID why`, `/ops cancel ID`,
//! `/ops status ID`, `/ops retry ID`, `/ops help`, or `/ops OP k=v …`). YouOps
//! answers on the issue: 👀 when a request is accepted, one status comment per
//! request edited in place through its lifecycle, 🚀 or 👎 at the end, and the
//! labels `youops:pending-approval`, `youops:running`, `youops:succeeded`,
//! `youops:failed`.
//!
//! Input comes from the signed webhook (`POST /github/webhook`) and from polling
//! the managed repositories, which share their dedup keys (see `inbound`), so a
//! daemon that was down catches up without running anything twice. Everything
//! goes through the core [`Executor`]; the GitHub REST calls go through
//! `octocrab` (see [`github`]). Setup: `docs/frontends/github-issues.md`.
//!
//! ```
//! use youops_frontend_issue::GithubFrontend;
//! use youops_core::frontend::Frontend;
//!
//! let section: toml::Table = r#"
//! webhook_secret = "s3cret"
//! token = "ghp_example"
//! repos = ["acme/ops-requests"]
//! "#.parse().unwrap();
//! let github = GithubFrontend::from_config(&section).unwrap();
//! assert_eq!(github.name(), "github");
//! assert_eq!(github.http_routes()[0].path, "/github/webhook");
//! ```

pub mod config;
mod error;
pub mod feedback;
pub mod github;
mod inbound;
mod origin;
mod shared;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use youops_core::config::{Config, ConfigIssue};
use youops_core::frontend::factory::{FrontendFactory, FrontendSection};
use youops_core::frontend::{
    simple_response, Frontend, FrontendContext, FrontendError, HttpRequest, HttpResponse, HttpRoute,
};
use youops_core::Executor;

pub use config::GithubConfig;
pub use error::GithubError;
pub use inbound::forms::{issue_forms, parse_issue_form};
pub use inbound::{forms, webhook};

use origin::NAME;
use shared::Shared;

/// The webhook path.
pub const WEBHOOK_PATH: &str = "/github/webhook";

/// The IssueOps frontend (name `github`).
#[derive(Debug, Clone)]
pub struct GithubFrontend {
    shared: Arc<Shared>,
}

impl GithubFrontend {
    /// Build from the `[frontends.github]` section; every problem at once
    /// (without lines: see [`GithubFactory`]). Nothing is contacted yet.
    pub fn from_config(section: &toml::Table) -> Result<GithubFrontend, Vec<String>> {
        let cfg = Config::default();
        Self::from_section(&FrontendSection::new(NAME, section, &cfg))
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    /// Build from the section; every problem at once, on its line.
    pub fn from_section(s: &FrontendSection<'_>) -> Result<GithubFrontend, Vec<ConfigIssue>> {
        let cfg = Arc::new(GithubConfig::from_section(s)?);
        Ok(GithubFrontend {
            shared: Arc::new(Shared::new(cfg)),
        })
    }

    /// The validated config.
    pub fn config(&self) -> &GithubConfig {
        &self.shared.cfg
    }

    /// Poll every managed repository once for issues and comments updated since
    /// `since` (what the background poller does every `poll_interval`).
    pub async fn poll_once(&self, exec: &Executor, since: chrono::DateTime<Utc>) -> Vec<String> {
        let mut errors = Vec::new();
        for repo in self.shared.cfg.repos.values() {
            if let Err(e) = self.shared.poll_repo(exec, repo, since).await {
                tracing::warn!(repo = %repo, error = %e, "polling failed");
                errors.push(format!("{repo}: {e}"));
            }
        }
        errors
    }
}

/// The factory of the GitHub IssueOps frontend, for a
/// [`FrontendRegistry`](youops_core::frontend::factory::FrontendRegistry).
#[derive(Debug, Clone, Copy, Default)]
pub struct GithubFactory;

impl FrontendFactory for GithubFactory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn build(&self, section: &FrontendSection<'_>) -> Result<Arc<dyn Frontend>, Vec<ConfigIssue>> {
        Ok(Arc::new(GithubFrontend::from_section(section)?))
    }
}

#[async_trait]
impl Frontend for GithubFrontend {
    fn name(&self) -> &str {
        NAME
    }

    async fn run(&self, ctx: FrontendContext) -> Result<(), FrontendError> {
        let shared = self.shared.clone();
        // Polling happens once per cluster: on the leader.
        let poller = (!self.shared.cfg.poll_interval.is_zero()).then(|| {
            let (shared, ctx) = (shared.clone(), ctx.clone());
            tokio::spawn(async move {
                ctx.while_leader(|_, lost| {
                    let mut term = ctx.clone();
                    term.shutdown = lost;
                    shared.clone().poll_loop(term)
                })
                .await
            })
        });
        shared.feedback_loop(&ctx).await;
        self.shared.ready.store(false, Ordering::SeqCst);
        if let Some(p) = poller {
            // It returns at its next await point after shutdown; do not wait on GitHub.
            if tokio::time::timeout(Duration::from_secs(2), async {
                while !p.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .is_err()
            {
                p.abort();
            }
        }
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    fn http_routes(&self) -> Vec<HttpRoute> {
        vec![HttpRoute::post(WEBHOOK_PATH)]
    }

    async fn handle_http(&self, ctx: &FrontendContext, req: HttpRequest) -> HttpResponse {
        if req.uri().path() != WEBHOOK_PATH {
            return simple_response(http::StatusCode::NOT_FOUND, "not found");
        }
        self.shared.handle_webhook(ctx, req).await
    }
}
