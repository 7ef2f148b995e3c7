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
    let built =
        youops::frontends::build_parts(&cfg, &[NAME]).map_err(|p| anyhow::anyhow!(p.join("\n")))?;
    let mut opts = youops::RunOptions::default();
    built.into_options(&mut opts);
    if let Some(section) = cfg.frontend(NAME) {
        let f = WebhookFrontend::from_config(section).map_err(|p| anyhow::anyhow!(p.join("\n")))?;
        opts.frontends.push(std::sync::Arc::new(f));
    }
    youops::run(cfg, opts, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
