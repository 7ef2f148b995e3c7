//! A `youops` daemon with one extra, third-party frontend registered next to the
//! built-in ones:
//!
//! ```text
//! cargo run -p youops-example-custom-frontend -- path/to/youops.toml
//! ```

use youops_example_custom_frontend::{WebhookFrontend, NAME};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "youops.toml".into());
    let cfg = youops_core::config::Config::load(&path)?;
    // Built-in frontends the config enables; our section is ours to check.
    let mut frontends =
        youops::frontends::build(&cfg, &[NAME]).map_err(|p| anyhow::anyhow!(p.join("\n")))?;
    if let Some(section) = cfg.frontend(NAME) {
        let f = WebhookFrontend::from_config(section).map_err(|p| anyhow::anyhow!(p.join("\n")))?;
        frontends.push(std::sync::Arc::new(f));
    }
    let mut opts = youops::RunOptions::default();
    opts.frontends = frontends;
    youops::run(cfg, opts, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
